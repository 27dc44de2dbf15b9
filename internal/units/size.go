// Package units parses and formats sizes the way netvol's users write them.
package units

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrInvalid is wrapped by every parse error.
var ErrInvalid = errors.New("invalid size")

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
// with an error wrapping ErrInvalid.
func ParseSize(s string) (int64, error) {
	digits, shift := s, uint(0)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			digits, shift = strings.TrimSuffix(s, u.suffix), u.shift
			break
		}
	}
	if digits == "" || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, fmt.Errorf("size %q: want bytes or a number with K, M, G, T, P (or KiB...PiB): %w", s, ErrInvalid)
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("size %q is too large: %w", s, ErrInvalid)
	}
	if n == 0 {
		return 0, fmt.Errorf("size %q: must be more than zero: %w", s, ErrInvalid)
	}
	return n << shift, nil
}

// FormatSize writes n bytes with the largest binary unit that divides it
// exactly ("20GiB", "1536MiB", or plain "4097"), so ParseSize reads it back.
func FormatSize(n int64) string {
	for i := 4; i >= 0 && n > 0; i-- {
		u := sizeUnits[i]
		if n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// HumanSize writes n bytes for people, with a binary unit and at most one
// decimal: 512B, 1GiB, 1.5GiB.
func HumanSize(n int64) string {
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	if n < 1024 {
		return fmt.Sprintf("%dB", n)
	}
	f, i := float64(n)/1024, 0
	for f >= 1024 && i < len(units)-1 {
		f, i = f/1024, i+1
	}
	if f == math.Trunc(f) {
		return fmt.Sprintf("%.0f%s", f, units[i])
	}
	return fmt.Sprintf("%.1f%s", f, units[i])
}
