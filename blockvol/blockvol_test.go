package blockvol

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/volume/backend"
)

func wantErr(t *testing.T, err, kind error, mention ...string) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("error %v, want %v", err, kind)
	}
	for _, m := range mention {
		if !strings.Contains(err.Error(), m) {
			t.Fatalf("error %q does not mention %q", err, m)
		}
	}
}

func TestNew(t *testing.T) {
	e := newEnv(t, 0)
	ok := Config{API: e.client, Node: "node-1", Attacher: newCopyAttacher(t), Mounter: &fakeMounter{}, Formatter: &countingFormatter{}}
	for name, mod := range map[string]func(*Config){
		"no API":       func(c *Config) { c.API = nil },
		"no attacher":  func(c *Config) { c.Attacher = nil },
		"no mounter":   func(c *Config) { c.Mounter = nil },
		"no formatter": func(c *Config) { c.Formatter = nil },
		"no node":      func(c *Config) { c.Node = "" },
		"bad node":     func(c *Config) { c.Node = "a/b" },
		"bad NBD":      func(c *Config) { c.NBDAddr = "storage" },
		"relative":     func(c *Config) { c.NBDAddr = "unix:nbd.sock" },
	} {
		cfg := ok
		mod(&cfg)
		if _, err := New(cfg); !errors.Is(err, backend.ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, addr := range []string{"", "10.0.0.1:10809", "unix:/run/netvol/nbd.sock", "[::1]:1"} {
		cfg := ok
		cfg.NBDAddr = addr
		if b, err := New(cfg); err != nil {
			t.Errorf("NBDAddr %q: %v", addr, err)
		} else {
			b.Close()
		}
	}
}

func TestCreateGetListRemove(t *testing.T) {
	e := newEnv(t, 0)
	b, _ := e.backend("node-1", nil)
	ctx := ctxT(t)
	e.create(b, "v1")
	wantErr(t, b.Create(ctx, "v1", backend.Options{Size: volSize}), backend.ErrExists, `"v1"`)
	wantErr(t, b.Create(ctx, "v2", backend.Options{}), backend.ErrInvalid, `"v2"`, "size")
	wantErr(t, b.Create(ctx, "v2", backend.Options{Size: volSize, From: "nope"}), backend.ErrNotFound, `"v2"`, "nope")
	wantErr(t, b.Create(ctx, "v2", backend.Options{Size: volSize, FS: "xfs"}), backend.ErrInvalid, "xfs")
	wantErr(t, b.Create(ctx, "v2", backend.Options{Size: volSize, MkfsOpts: []string{"-E", "x"}}), backend.ErrInvalid, "-E")
	wantErr(t, b.Create(ctx, "v2", backend.Options{Size: volSize, MountOpts: []string{"barrier=0"}}), backend.ErrInvalid, "barrier=0")
	wantErr(t, b.Create(ctx, "v2", backend.Options{Size: volSize, Server: "elsewhere:1"}), backend.ErrInvalid, "elsewhere")
	wantErr(t, b.Create(ctx, "bad/name", backend.Options{Size: volSize}), backend.ErrInvalid, "bad/name")
	_, err := b.Get(ctx, "v2", backend.Options{})
	wantErr(t, err, backend.ErrNotFound, `"v2"`)

	if err := b.Create(ctx, "c1", backend.Options{Size: 3 << 23, From: "v1"}); err != nil {
		t.Fatal(err)
	}
	v, err := b.Get(ctx, "c1", backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := v.Status
	if v.Name != "c1" || v.CreatedAt.IsZero() || st["type"] != "nbd" || st["server"] != e.client.Server() ||
		st["size"] != "25165824" || st["size_human"] != "24MiB" || st["from"] != "v1" || st["attached"] != "" ||
		st["created"] != v.CreatedAt.UTC().Format(time.RFC3339) || st["allocated"] == "" || st["lease"] != "" {
		t.Fatalf("get: %+v", v)
	}
	list, err := b.List(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "c1" || list[1].Name != "v1" || list[1].Status["from"] != "" {
		t.Fatalf("list: %+v %v", list, err)
	}
	wantErr(t, b.Remove(ctx, "v1", backend.Options{}), backend.ErrInUse, `"v1"`, `"c1"`)
	for _, name := range []string{"c1", "v1"} {
		if err := b.Remove(ctx, name, backend.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	wantErr(t, b.Remove(ctx, "v1", backend.Options{}), backend.ErrNotFound, `"v1"`)
	if list, err := b.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("list after remove: %+v %v", list, err)
	}
}

// A stopped daemon, and one that never answers, are ErrUnavailable naming
// the server; deadlines are honoured.
func TestUnavailable(t *testing.T) {
	e := newEnv(t, 0)
	b, fk := e.backend("node-1", nil)
	e.create(b, "v")
	e.api.Close()
	ctx := ctxT(t)
	server := e.client.Server()
	wantErr(t, b.Create(ctx, "w", backend.Options{Size: volSize}), backend.ErrUnavailable, `"w"`, server)
	_, err := b.Get(ctx, "v", backend.Options{})
	wantErr(t, err, backend.ErrUnavailable, `"v"`, server)
	_, err = b.List(ctx)
	wantErr(t, err, backend.ErrUnavailable, server)
	wantErr(t, b.Remove(ctx, "v", backend.Options{}), backend.ErrUnavailable, `"v"`, server)
	_, err = b.Mount(ctx, "v", backend.Options{}, t.TempDir())
	wantErr(t, err, backend.ErrUnavailable, `"v"`, server, "NBD server")

	// An API that accepts connections and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	cfg := b.cfg
	cfg.API, err = newClient(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cfg.NBDAddr = e.nbdL.Addr().String()
	silent, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	for name, call := range map[string]func(context.Context) error{
		"get":    func(ctx context.Context) error { _, err := silent.Get(ctx, "v", backend.Options{}); return err },
		"create": func(ctx context.Context) error { return silent.Create(ctx, "w", backend.Options{Size: volSize}) },
		"mount": func(ctx context.Context) error {
			_, err := silent.Mount(ctx, "v", backend.Options{}, t.TempDir())
			return err
		},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		start := time.Now()
		err := call(ctx)
		cancel()
		if !errors.Is(err, backend.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) ||
			!strings.Contains(err.Error(), l.Addr().String()) || time.Since(start) > 5*time.Second {
			t.Errorf("%s against a silent server: %v after %v", name, err, time.Since(start))
		}
	}
	if fk.att.attached() != 0 {
		t.Fatal("a device is left attached")
	}
}

func TestDeriveNBDAddr(t *testing.T) {
	for _, tc := range []struct{ api, reported, want string }{
		{"10.0.0.5:10810", "0.0.0.0:10809", "10.0.0.5:10809"},
		{"storage-1:10810", "127.0.0.1:9000", "storage-1:9000"},
		{"[fd00::1]:10810", "[::]:10809", "[fd00::1]:10809"},
		{"storage-1", "[::]:10809", "storage-1:10809"},
		{"10.0.0.5:10810", "unix:/run/netvol/nbd.sock", "unix:/run/netvol/nbd.sock"},
	} {
		if got, err := DeriveNBDAddr(tc.api, tc.reported); err != nil || got != tc.want {
			t.Errorf("DeriveNBDAddr(%q, %q) = %q, %v; want %q", tc.api, tc.reported, got, err, tc.want)
		}
	}
	for _, reported := range []string{"", "garbage", "unix:relative", "host:"} {
		if got, err := DeriveNBDAddr("h:1", reported); err == nil {
			t.Errorf("DeriveNBDAddr(%q) = %q", reported, got)
		}
	}
}

// A clone of a snapshot (-o from=v1 -o from-snapshot=s1); inspect's Status
// lists the volume's snapshots with their times; a volume removed with
// snapshots takes them along, refused while a clone depends on one.
func TestSnapshotsInStatusAndCloneFromSnapshot(t *testing.T) {
	e := newEnv(t, 0)
	b, _ := e.backend("node-1", nil)
	ctx := ctxT(t)
	e.create(b, "v1")
	s1, err := e.client.CreateSnapshot(ctx, "v1", "s1")
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, b.Create(ctx, "c1", backend.Options{Size: volSize, From: "v1", FromSnapshot: "nope"}), backend.ErrNotFound, "nope")
	if err := b.Create(ctx, "c1", backend.Options{Size: volSize, From: "v1", FromSnapshot: "s1"}); err != nil {
		t.Fatal(err)
	}
	v, err := b.Get(ctx, "v1", backend.Options{})
	if want := "s1 (" + s1.CreatedAt.UTC().Format(time.RFC3339) + ")"; err != nil || v.Status["snapshots"] != want {
		t.Fatalf("status %v, want snapshots %q (%v)", v.Status, want, err)
	}
	c, err := b.Get(ctx, "c1", backend.Options{})
	if err != nil || c.Status["from"] != "v1" || c.Status["from_snapshot"] != "s1" {
		t.Fatalf("clone status %v (%v)", c.Status, err)
	}
	wantErr(t, b.Remove(ctx, "v1", backend.Options{}), backend.ErrInUse, `"v1"`, `"c1"`)
	for _, name := range []string{"c1", "v1"} {
		if err := b.Remove(ctx, name, backend.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.client.ListSnapshots(ctx, "v1"); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("snapshots of a removed volume: %v", err)
	}
}
