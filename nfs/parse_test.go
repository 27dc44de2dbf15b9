package nfs

import (
	"errors"
	"strings"
	"testing"

	"github.com/netvol/netvol/volume/backend"
)

func TestParseExport(t *testing.T) {
	for in, want := range map[string][2]string{
		"nas:/srv/vols":            {"nas", "/srv/vols"},
		"10.0.0.5:/":               {"10.0.0.5", "/"},
		"[fd00::5]:/srv/nfs":       {"fd00::5", "/srv/nfs"},
		"[::1]:/x":                 {"::1", "/x"},
		"nas.example.com:/a:b/c":   {"nas.example.com", "/a:b/c"},
		"[fe80::1%eth0]:/srv/vols": {"fe80::1%eth0", "/srv/vols"},
	} {
		host, path, err := ParseExport(in)
		if err != nil || host != want[0] || path != want[1] {
			t.Errorf("ParseExport(%q) = %q, %q, %v; want %q, %q", in, host, path, err, want[0], want[1])
		}
	}
	for _, in := range []string{"", "nas", "nas:", "nas:srv", ":/srv", "[fd00::5]/srv", "[fd00::5:/srv", "[]:/srv", "[nas]:/srv", "fd00::5:/srv", "a b:/srv"} {
		if _, _, err := ParseExport(in); !errors.Is(err, backend.ErrInvalid) {
			t.Errorf("ParseExport(%q) = %v, want ErrInvalid", in, err)
		}
	}
}

func FuzzParseExport(f *testing.F) {
	for _, s := range []string{"nas:/srv", "[fd00::5]:/srv", "nas", "[::1]:/", ":/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		host, path, err := ParseExport(spec)
		if err != nil {
			if !errors.Is(err, backend.ErrInvalid) {
				t.Fatalf("%q: error %v is not ErrInvalid", spec, err)
			}
			return
		}
		if host == "" || !strings.HasPrefix(path, "/") || strings.ContainsAny(host, "/[] \t") {
			t.Fatalf("%q accepted as host %q path %q", spec, host, path)
		}
	})
}
