package nfs

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netvol/netvol/internal/mount"
	"github.com/netvol/netvol/volume/backend"
)

func TestCheckMountOptions(t *testing.T) {
	good := []string{"ro", "rw", "noatime", "nodiratime", "relatime", "nosuid", "nodev", "noexec", "hard", "soft",
		"ac", "noac", "timeo=600", "retrans=0", "rsize=1048576", "wsize=65536", "actimeo=0", "acregmin=3",
		"acregmax=60", "acdirmin=30", "acdirmax=60", "lookupcache=pos", "lookupcache=none", "nconnect=16", "proto=tcp"}
	if err := CheckMountOptions(good); err != nil {
		t.Fatal(err)
	}
	if err := CheckMountOptions(nil); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "suid", "dev", "exec", "port=2049", "addr=10.0.0.1", "vers=3", "sec=none",
		"clientaddr=1.2.3.4", "mountport=1", "proto=udp", "proto=rdma", "timeo=0", "timeo=6001", "timeo=",
		"timeo=+5", "timeo=-1", "timeo=1e3", "nconnect=17", "nconnect=0", "lookupcache=maybe", "ro=1", "hard=1",
		"rsize=1", "noatime,port=1", "local_lock=all", "fsc", "x-mount.mkdir"} {
		err := CheckMountOptions([]string{"ro", bad})
		if !errors.Is(err, backend.ErrInvalid) {
			t.Errorf("CheckMountOptions(%q) = %v, want ErrInvalid", bad, err)
			continue
		}
		if !strings.Contains(err.Error(), "accepted: ro, rw,") || !strings.Contains(err.Error(), "nconnect=1..16") {
			t.Errorf("CheckMountOptions(%q) = %q, want the accepted options listed", bad, err)
		}
	}
}

func TestMountSpec(t *testing.T) {
	base := mountParams{Source: "nas:/srv/vols/v", Target: "/mnt/v", Addr: net.ParseIP("10.0.0.5")}
	cases := []struct {
		name string
		edit func(*mountParams)
		want mount.Mount
	}{
		{"v4.1, kernel's port", func(p *mountParams) { p.Version = "4.1" }, mount.Mount{Type: "nfs4",
			Options: []string{"vers=4.1", "addr=10.0.0.5", "proto=tcp", "hard", "timeo=600", "retrans=2"}}},
		{"v4.0, own port", func(p *mountParams) { p.Version, p.Port = "4", 2050 }, mount.Mount{Type: "nfs4",
			Options: []string{"vers=4.0", "addr=10.0.0.5", "proto=tcp", "port=2050", "hard", "timeo=600", "retrans=2"}}},
		{"v3", func(p *mountParams) { p.Version, p.Port, p.MountPort = "3", 2049, 20048 }, mount.Mount{Type: "nfs",
			Options: []string{"vers=3", "addr=10.0.0.5", "proto=tcp", "port=2049", "hard", "timeo=600", "retrans=2",
				"mountport=20048", "mountproto=tcp", "mountvers=3", "nolock"}}},
		{"user options replace defaults", func(p *mountParams) {
			p.Version, p.User = "4.1", []string{"soft", "timeo=30", "ro", "nconnect=4", "rw", "noac"}
		}, mount.Mount{Type: "nfs4",
			Options: []string{"vers=4.1", "addr=10.0.0.5", "proto=tcp", "soft", "timeo=30", "retrans=2", "rw", "nconnect=4", "noac"}}},
		{"IPv6", func(p *mountParams) { p.Version, p.Addr, p.Source = "4.1", net.ParseIP("fd00::5"), "[fd00::5]:/e/v" },
			mount.Mount{Source: "[fd00::5]:/e/v", Type: "nfs4",
				Options: []string{"vers=4.1", "addr=fd00::5", "proto=tcp", "hard", "timeo=600", "retrans=2"}}},
	}
	for _, c := range cases {
		p := base
		c.edit(&p)
		want := c.want
		if want.Source == "" {
			want.Source = base.Source
		}
		want.Target = base.Target
		if got := mountSpec(p); !mountEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, want)
		}
	}
}

func mountEqual(a, b mount.Mount) bool {
	return a.Source == b.Source && a.Target == b.Target && a.Type == b.Type && slices.Equal(a.Options, b.Options)
}

// fakeMounter records calls; block, when set, holds Mount until closed.
type fakeMounter struct {
	mu       sync.Mutex
	mounts   []mount.Mount
	unmounts []string
	block    chan struct{}
	err      error
}

func (f *fakeMounter) Mount(m mount.Mount) error {
	if f.block != nil {
		<-f.block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mounts = append(f.mounts, m)
	return f.err
}

func (f *fakeMounter) Unmount(target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unmounts = append(f.unmounts, target)
	return nil
}

func (f *fakeMounter) calls() ([]mount.Mount, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.mounts), slices.Clone(f.unmounts)
}

// TestMountAndUnmount needs no network: an IP server and a v4 mount with a
// configured port need no lookups.
func TestMountAndUnmount(t *testing.T) {
	fm := &fakeMounter{}
	b, err := New(Config{Server: "10.0.0.5", Export: "/srv/vols", Port: 2050, Mounter: fm})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	o := backend.Options{UID: -1, GID: -1, MountOpts: []string{"noatime"}}
	m, err := b.Mount(ctx, "v", o, "/mnt/v")
	if err != nil {
		t.Fatal(err)
	}
	if m != (backend.Mounted{Export: "10.0.0.5:/srv/vols/v", Method: "nfs"}) {
		t.Fatalf("Mounted = %+v", m)
	}
	want := mount.Mount{Source: "10.0.0.5:/srv/vols/v", Target: "/mnt/v", Type: "nfs4",
		Options: []string{"vers=4.1", "addr=10.0.0.5", "proto=tcp", "port=2050", "hard", "timeo=600", "retrans=2", "noatime"}}
	if mounts, _ := fm.calls(); len(mounts) != 1 || !mountEqual(mounts[0], want) {
		t.Fatalf("mounted %+v, want %+v", mounts, want)
	}
	if err := b.Unmount(ctx, "v", o, "/mnt/v", m); err != nil {
		t.Fatal(err)
	}
	if _, unmounts := fm.calls(); !slices.Equal(unmounts, []string{"/mnt/v"}) {
		t.Fatalf("unmounted %v", unmounts)
	}
	fm.err = errors.New("boom")
	if _, err := b.Mount(ctx, "v", o, "/mnt/v"); err == nil || !strings.Contains(err.Error(), "10.0.0.5:/srv/vols/v") {
		t.Fatalf("failed mount: %v", err)
	}
}

// TestMountDeadline: a mount(2) that hangs is given up at the deadline,
// and undone when it succeeds after all.
func TestMountDeadline(t *testing.T) {
	fm := &fakeMounter{block: make(chan struct{})}
	b, err := New(Config{Server: "10.0.0.5", Export: "/srv/vols", Mounter: fm})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = b.Mount(ctx, "v", backend.Options{}, "/mnt/v")
	if !errors.Is(err, backend.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung mount: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("hung mount returned after %s", d)
	}
	close(fm.block)
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, unmounts := fm.calls(); slices.Equal(unmounts, []string{"/mnt/v"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the late mount was not undone")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
