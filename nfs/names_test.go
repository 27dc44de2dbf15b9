package nfs

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netvol/netvol/volume/backend"
)

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"a", "data", "A1", "0", "db_1.backup-2", strings.Repeat("x", 128), "a..b"} {
		if err := checkName(ok); err != nil {
			t.Errorf("checkName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "../x", "a/b", "/abs", ".hidden", archiveDir, "-x", "_x",
		"a b", "a\x00", "é", strings.Repeat("x", 129), "x/..", "a\\b"} {
		if err := checkName(bad); !errors.Is(err, backend.ErrInvalid) {
			t.Errorf("checkName(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestTargetFor(t *testing.T) {
	b, err := New(Config{Server: "nas", Export: "/srv/vols", Port: 2050, MountPort: 20048})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		o    backend.Options
		want target
	}{
		{backend.Options{}, target{"nas", "/srv/vols", 2050, 20048}},
		{backend.Options{Export: "/srv/other"}, target{"nas", "/srv/other", 2050, 20048}},
		// Another server: the configured ports are the default server's.
		{backend.Options{Server: "nas2"}, target{"nas2", "/srv/vols", 0, 0}},
		{backend.Options{Server: "[fd00::1]", Export: "/x"}, target{"fd00::1", "/x", 0, 0}},
		{backend.Options{Server: "nas"}, target{"nas", "/srv/vols", 2050, 20048}},
	}
	for _, c := range cases {
		got, err := b.targetFor("v", c.o)
		if err != nil || got != c.want {
			t.Errorf("targetFor(%+v) = %+v, %v; want %+v", c.o, got, err, c.want)
		}
	}
	for _, o := range []backend.Options{
		{Export: "rel"}, {Export: "/a/../b"}, {Export: "/a/"}, {Export: "/.."},
		{Server: "nas:111"}, {Server: "a b"}, {Server: "nas,port=1"},
	} {
		if _, err := b.targetFor("v", o); !errors.Is(err, backend.ErrInvalid) {
			t.Errorf("targetFor(%+v) = %v, want ErrInvalid", o, err)
		}
	}
}

func TestSource(t *testing.T) {
	for _, c := range []struct {
		t    target
		want string
	}{
		{target{server: "nas", export: "/srv/vols"}, "nas:/srv/vols/v"},
		{target{server: "10.0.0.5", export: "/"}, "10.0.0.5:/v"},
		{target{server: "fd00::5", export: "/e"}, "[fd00::5]:/e/v"},
	} {
		if got := c.t.source("v"); got != c.want {
			t.Errorf("source = %q, want %q", got, c.want)
		}
	}
}

// TestRefusalsTouchNothing: bad names and options are refused before any
// connection to the server.
func TestRefusalsTouchNothing(t *testing.T) {
	port, conns := countingListener(t)
	b, err := New(Config{Server: "127.0.0.1", Export: "/srv", Port: port, MountPort: port, Mounter: &fakeMounter{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ok := backend.Options{UID: -1, GID: -1}
	calls := map[string]func(string, backend.Options) error{
		"Create": func(n string, o backend.Options) error { return b.Create(ctx, n, o) },
		"Remove": func(n string, o backend.Options) error { return b.Remove(ctx, n, o) },
		"Get":    func(n string, o backend.Options) error { _, err := b.Get(ctx, n, o); return err },
		"Mount":  func(n string, o backend.Options) error { _, err := b.Mount(ctx, n, o, "/mnt/x"); return err },
	}
	for op, call := range calls {
		for _, name := range []string{"", ".", "..", "../etc", "a/b", ".netvol-archive"} {
			if err := call(name, ok); !errors.Is(err, backend.ErrInvalid) {
				t.Errorf("%s(%q) = %v, want ErrInvalid", op, name, err)
			}
		}
		for _, o := range []backend.Options{{Export: "/srv/../etc"}, {Server: "x:1"}} {
			if err := call("v", o); !errors.Is(err, backend.ErrInvalid) {
				t.Errorf("%s with %+v = %v, want ErrInvalid", op, o, err)
			}
		}
	}
	_, mountErr := b.Mount(ctx, "v", backend.Options{MountOpts: []string{"port=1"}}, "/mnt/x")
	for op, err := range map[string]error{
		"Create uid -2":   b.Create(ctx, "v", backend.Options{UID: -2, GID: -1}),
		"Create gid 2^32": b.Create(ctx, "v", backend.Options{UID: -1, GID: 1 << 32}),
		"Remove shred":    b.Remove(ctx, "v", backend.Options{OnRemove: "shred"}),
		"Mount port=1":    mountErr,
	} {
		if !errors.Is(err, backend.ErrInvalid) {
			t.Errorf("%s = %v, want ErrInvalid", op, err)
		}
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("%d connections to the server for refused requests", n)
	}
}

// countingListener counts the connections it accepts and answers none.
func countingListener(t *testing.T) (int, *atomic.Int32) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port, &n
}
