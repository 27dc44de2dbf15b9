package blockvol

import (
	"context"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"

	dockervolume "github.com/docker/go-plugins-helpers/volume"

	"github.com/netvol/netvol/internal/mount"
	"github.com/netvol/netvol/state"
	"github.com/netvol/netvol/volume"
	"github.com/netvol/netvol/volume/backend"
)

// host is one Docker host of a test: the driver with its own node store,
// node name and mount root, over an nbd backend of its own.
type host struct {
	d    *volume.Driver
	fk   *fakes
	mkfs *optsFormatter
	root string
}

func newHost(t *testing.T, e *testEnv, node string, f Formatter) *host {
	t.Helper()
	dir := t.TempDir()
	store, err := state.OpenNodeStore(filepath.Join(dir, "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	mkfs := &optsFormatter{inner: f}
	b, fk := e.backend(node, mkfs)
	h := &host{fk: fk, mkfs: mkfs, root: filepath.Join(dir, "mnt")}
	h.d, err = volume.New(volume.Config{Store: store, Host: noMounts{}, MountRoot: h.root, DefaultType: backend.TypeNBD,
		DefaultSize: volSize, Kinds: map[string]volume.Kind{backend.TypeNBD: {Backend: b,
			CheckMountOpts: CheckMountOptions, CheckMkfsOpts: CheckMkfsOptions}}})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// noMounts is a host where nothing is mounted yet.
type noMounts struct{}

func (noMounts) Mounted(string) (bool, error)         { return false, nil }
func (noMounts) MountsUnder(string) ([]string, error) { return nil, nil }
func (noMounts) Usage(string) (int64, int64, error)   { return 0, 0, nil }

// optsFormatter records the mkfs options it was given.
type optsFormatter struct {
	inner Formatter
	mu    sync.Mutex
	opts  [][]string
}

func (f *optsFormatter) Format(ctx context.Context, device string, opts []string) error {
	f.mu.Lock()
	f.opts = append(f.opts, slices.Clone(opts))
	f.mu.Unlock()
	return f.inner.Format(ctx, device, opts)
}

// TestOptionsTravelToAnotherHost: a volume created through one host's
// plugin with an owner, a mode, mount and mkfs options is formatted,
// mounted and given its owner and mode by another host's plugin (its own
// node store and node name) with the creator's options, not its own
// defaults. One real storage daemon keeps them in the volume's labels.
func TestOptionsTravelToAnotherHost(t *testing.T) {
	f := needMkfs(t)
	e := newEnv(t, 0)
	a, b := newHost(t, e, "host-a", f), newHost(t, e, "host-b", f)
	err := a.d.Create(&dockervolume.CreateRequest{Name: "shared", Options: map[string]string{
		"type": "nbd", "size": "16M", "uid": "1234", "gid": "2345", "mode": "0700",
		"mount-opts": "noatime", "mkfs-opts": "-L shared"}})
	if err != nil {
		t.Fatal(err)
	}
	labels, err := e.client.GetVolume(ctxT(t), "shared")
	if err != nil || labels.Labels["netvol.uid"] != "1234" || labels.Labels["netvol.mount-opts"] != "noatime" {
		t.Fatalf("labels on the daemon: %v, %v", labels.Labels, err)
	}

	res, err := b.d.Mount(&dockervolume.MountRequest{Name: "shared", ID: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(b.root, "shared")
	if res.Mountpoint != filepath.Join(target, Subdir) {
		t.Fatalf("mountpoint %s", res.Mountpoint)
	}
	if len(b.fk.mnt.mounts) != 1 {
		t.Fatalf("host b mounted %+v", b.fk.mnt.mounts)
	}
	m := b.fk.mnt.mounts[0]
	want := mount.Mount{Source: m.Source, Target: target, Type: "ext4", Options: []string{"errors=remount-ro", "noatime"}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("host b mounted %+v, want %+v", m, want)
	}
	if !reflect.DeepEqual(b.mkfs.opts, [][]string{{"-L", "shared"}}) {
		t.Fatalf("host b formatted with %q, want the creator's -L shared", b.mkfs.opts)
	}
	checkDir(t, filepath.Join(target, Subdir), 0o700, 1234, 2345)
	if err := b.d.Unmount(&dockervolume.UnmountRequest{Name: "shared", ID: "c1"}); err != nil {
		t.Fatal(err)
	}
}
