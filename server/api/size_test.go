package api

import (
	"errors"
	"strconv"
	"testing"

	"github.com/netvol/netvol/errdefs"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1":     1,
		"4096":  4096,
		"1K":    1 << 10,
		"512M":  512 << 20,
		"1G":    1 << 30,
		"10GiB": 10 << 30,
		"1T":    1 << 40,
		"2TiB":  2 << 40,
		"3KiB":  3 << 10,
		"1P":    1 << 50,
		"0010M": 10 << 20,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "0G", "-1", "-1G", "+1G", "1.5G", " 1G", "1G ", "1g", "1GB",
		"G", "GiB", "1X", "1 G", "0x10", "9223372036854775808", "8192P", "1e9", "1iB", "１G"} {
		if got, err := ParseSize(in); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ParseSize(%q) = %d, %v; want ErrInvalid", in, got, err)
		}
	}
}

func TestSizeJSON(t *testing.T) {
	for in, want := range map[string]Size{`"1G"`: 1 << 30, `1048576`: 1 << 20, `"4096"`: 4096} {
		var z Size
		if err := z.UnmarshalJSON([]byte(in)); err != nil || z != want {
			t.Errorf("%s: %d, %v", in, z, err)
		}
	}
	for _, in := range []string{`0`, `-5`, `1.5`, `1e6`, `"x"`, `null`, `true`, `"1G`} {
		var z Size
		if err := z.UnmarshalJSON([]byte(in)); err == nil {
			t.Errorf("%s accepted as %d", in, z)
		}
	}
}

// FuzzParseSize: ParseSize never panics, accepts only positive sizes, and
// plain numbers parse to themselves.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1", "1G", "512M", "10GiB", "-1", "0", "9223372036854775807", "8191P", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("ParseSize(%q): %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		if n <= 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		if p, perr := strconv.ParseInt(s, 10, 64); perr == nil && s[0] != '+' && s[0] != '-' && p != n {
			t.Fatalf("ParseSize(%q) = %d, want %d", s, n, p)
		}
	})
}
