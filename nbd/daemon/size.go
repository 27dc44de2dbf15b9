package daemon

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/netvol/netvol/state"
)

// sizeUnits are the accepted suffixes; all are binary (1G = 1GiB = 2^30).
var sizeUnits = []struct {
	suffix string
	shift  uint
}{
	{"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"TiB", 40}, {"PiB", 50},
	{"K", 10}, {"M", 20}, {"G", 30}, {"T", 40}, {"P", 50},
}

// ParseSize parses a volume size: plain bytes ("1073741824") or decimal
// digits followed by K, M, G, T or P, or KiB, MiB, GiB, TiB or PiB; every
// unit is binary (1G and 1GiB are both 2^30 bytes). Signs, spaces,
// fractions, other units, zero and sizes that overflow int64 are refused
// with an error wrapping state.ErrInvalid.
func ParseSize(s string) (int64, error) {
	digits, shift := s, uint(0)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			digits, shift = strings.TrimSuffix(s, u.suffix), u.shift
			break
		}
	}
	if digits == "" || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, fmt.Errorf("size %q: want bytes or a number with K, M, G, T, P (or KiB...PiB): %w", s, state.ErrInvalid)
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("size %q is too large: %w", s, state.ErrInvalid)
	}
	if n == 0 {
		return 0, fmt.Errorf("size %q: must be more than zero: %w", s, state.ErrInvalid)
	}
	return n << shift, nil
}

// Size is a size in a JSON request: a string ParseSize accepts, or a
// positive integer number of bytes.
type Size int64

// UnmarshalJSON implements json.Unmarshaler.
func (z *Size) UnmarshalJSON(b []byte) error {
	var s string
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	} else {
		s = string(b)
	}
	n, err := ParseSize(s)
	if err != nil {
		return err
	}
	*z = Size(n)
	return nil
}
