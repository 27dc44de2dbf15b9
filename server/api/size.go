package api

import (
	"encoding/json"
	"fmt"

	"github.com/netvol/netvol/errdefs"
	"github.com/netvol/netvol/internal/units"
)

// ParseSize parses a volume size as units.ParseSize does; its errors also
// wrap errdefs.ErrInvalid, which the API answers as "invalid".
func ParseSize(s string) (int64, error) {
	n, err := units.ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("%w (%w)", err, errdefs.ErrInvalid)
	}
	return n, nil
}

// Size is a size in a JSON request: a string ParseSize accepts, or a
// positive integer number of bytes. It is sent as a number of bytes.
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
