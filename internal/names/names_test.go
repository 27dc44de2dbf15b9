package names

import (
	"errors"
	"strings"
	"testing"

	"github.com/netvol/netvol/errdefs"
)

func TestVolumeNames(t *testing.T) {
	for _, ok := range []string{"a", "db-1", "x.y_z", "0" + strings.Repeat("a", 127)} {
		if err := CheckVolume(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", ".hidden", "a/b", "../x", "-a", "a b", "é", "a\x00", strings.Repeat("a", 129)} {
		err := CheckVolume(bad)
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "want a letter or digit") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestNodeNames(t *testing.T) {
	for _, ok := range []string{"host1", "node-0.example.com", "h:1"} {
		if err := CheckNode(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "/x", ".h", "a b", strings.Repeat("a", 254)} {
		if err := CheckNode(bad); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
