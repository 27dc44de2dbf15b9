package nfs

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/internal/mount"
	"github.com/netvol/netvol/volume/backend"
)

func validConfig() Config {
	return Config{Server: "nas.example.com", Export: "/srv/nfs/vols"}
}

func TestNewDefaults(t *testing.T) {
	b, err := New(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	c := b.cfg
	if c.Version != "4.1" || c.UID != 0 || c.GID != 0 || c.Machine == "" || c.Now == nil ||
		c.DialTimeout != 10*time.Second || c.CallTimeout != 30*time.Second {
		t.Fatalf("defaults: %+v", c)
	}
	if _, ok := c.Mounter.(mount.System); !ok {
		t.Fatalf("default Mounter is %T, want mount.System", c.Mounter)
	}
}

func TestNewAccepts(t *testing.T) {
	for _, edit := range []func(*Config){
		func(c *Config) { c.Server = "10.0.0.5" },
		func(c *Config) { c.Server = "fd00::5" },
		func(c *Config) { c.Server = "[fd00::5]" },
		func(c *Config) { c.Server = "nas-1" },
		func(c *Config) { c.Export = "/" },
		func(c *Config) { c.Export = "/srv/a..b" },
		func(c *Config) { c.Version = "4" },
		func(c *Config) { c.Version = "3" },
		func(c *Config) { c.Port, c.MountPort = 2049, 20048 },
		func(c *Config) { c.UID, c.GID = 1000, 4294967294 },
	} {
		c := validConfig()
		edit(&c)
		if _, err := New(c); err != nil {
			t.Errorf("New(%+v): %v", c, err)
		}
	}
}

// TestNewRefuses wants each bad field named in the error, with what is
// accepted instead.
func TestNewRefuses(t *testing.T) {
	cases := []struct {
		edit func(*Config)
		want []string
	}{
		{func(c *Config) { c.Server = "" }, []string{"Config.Server", "host name or an IP"}},
		{func(c *Config) { c.Server = "nas:2049" }, []string{"Config.Server", "without a port"}},
		{func(c *Config) { c.Server = "nas,addr=1.2.3.4" }, []string{"Config.Server"}},
		{func(c *Config) { c.Server = "-nas" }, []string{"Config.Server"}},
		{func(c *Config) { c.Server = "nas..example" }, []string{"Config.Server"}},
		{func(c *Config) { c.Export = "" }, []string{"Config.Export", "empty", "absolute path"}},
		{func(c *Config) { c.Export = "srv/nfs" }, []string{"Config.Export", "not absolute"}},
		{func(c *Config) { c.Export = "/srv/../etc" }, []string{"Config.Export", "not clean"}},
		{func(c *Config) { c.Export = "/srv/nfs/" }, []string{"Config.Export", "not clean"}},
		{func(c *Config) { c.Export = "/srv\n" }, []string{"Config.Export", "control"}},
		{func(c *Config) { c.Export = "/" + strings.Repeat("a", 1024) }, []string{"Config.Export", "longer than 1024"}},
		{func(c *Config) { c.Version = "4.2" }, []string{"Config.Version", "4.1 (the default), 4 and 3"}},
		{func(c *Config) { c.Version = "v3" }, []string{"Config.Version"}},
		{func(c *Config) { c.Port = 70000 }, []string{"Config.Port", "1 to 65535"}},
		{func(c *Config) { c.MountPort = -1 }, []string{"Config.MountPort"}},
		{func(c *Config) { c.UID = -1 }, []string{"Config.UID", "0 to 4294967294"}},
		{func(c *Config) { c.GID = 1<<32 - 1 }, []string{"Config.GID"}},
		{func(c *Config) { c.DialTimeout = -time.Second }, []string{"Config.DialTimeout"}},
		{func(c *Config) { c.CallTimeout = -time.Second }, []string{"Config.CallTimeout"}},
		{func(c *Config) { c.Machine = strings.Repeat("m", 256) }, []string{"Config.Machine"}},
	}
	for _, tc := range cases {
		c := validConfig()
		tc.edit(&c)
		_, err := New(c)
		if !errors.Is(err, backend.ErrInvalid) {
			t.Errorf("New(%+v) = %v, want ErrInvalid", c, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("New(%+v) = %q, want it to mention %q", c, err, w)
			}
		}
	}
}
