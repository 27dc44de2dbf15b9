package api

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestParseServers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"a:10810", []string{"a:10810"}},
		{"a:10810,b:10810, c:1", []string{"a:10810", "b:10810", "c:1"}},
		{"http://a:1,https://b:2", []string{"http://a:1", "https://b:2"}},
		{"[::1]:10810,127.0.0.1:10810", []string{"[::1]:10810", "127.0.0.1:10810"}},
	} {
		got, err := ParseServers(tc.in)
		if err != nil || strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("ParseServers(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", " ", "a:1,", ",a:1", "a:1,,b:2", "a:1,a:1", "a:1,http://a:1", "a", "a:1,ftp://b:2",
		"a:1,http://b:2/path", strings.Repeat("a:1,", MaxServers) + "z:1"} {
		if got, err := ParseServers(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseServers(%q) = %q, %v; want ErrInvalid", in, got, err)
		}
	}
}

// FuzzParseServers: whatever the input, a list is accepted only when every
// member is a client address New takes, with distinct hosts.
func FuzzParseServers(f *testing.F) {
	for _, s := range []string{"a:10810,b:10810", "https://x:1, http://y:2", "a:1,a:1", ",", "[::1]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseServers(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseServers(%q): error %v is not ErrInvalid", s, err)
			}
			return
		}
		if len(got) == 0 || len(got) > MaxServers {
			t.Fatalf("ParseServers(%q) = %d members", s, len(got))
		}
		hosts := map[string]bool{}
		for _, m := range got {
			c, err := New(m, "", nil)
			if err != nil {
				t.Fatalf("ParseServers(%q) accepted %q, which New refuses: %v", s, m, err)
			}
			u, _ := url.Parse(c.URL())
			if hosts[u.Host] {
				t.Fatalf("ParseServers(%q) accepted %s twice", s, u.Host)
			}
			hosts[u.Host] = true
		}
	})
}
