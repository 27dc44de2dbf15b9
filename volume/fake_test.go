package volume

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/netvol/netvol/internal/names"
	"github.com/netvol/netvol/state"
	"github.com/netvol/netvol/volume/backend"
)

// fakeBackend keeps volumes in memory and "mounts" by recording targets.
type fakeBackend struct {
	mu        sync.Mutex
	vols      map[string]backend.Options
	stored    map[string]map[string]string // what Get reports as Stored
	mountedAs map[string]backend.Options   // the options of the last Mount
	removedAs map[string]backend.Options   // the options of Remove
	mounted   map[string]string            // name -> target
	host      *fakeHost
	mounts    int
	unmounts  int
	resumed   []string
	down      bool // every call fails with ErrUnavailable
	// A pool: the server of each volume, and the servers that are down
	// (their volumes fail, List answers with a PartialError).
	serverOf    map[string]string
	serversDown []string
	mountDelay  time.Duration // Mount sleeps this long, ignoring ctx
	failMount   error
}

func newFakeBackend(h *fakeHost) *fakeBackend {
	return &fakeBackend{vols: map[string]backend.Options{}, stored: map[string]map[string]string{},
		mountedAs: map[string]backend.Options{}, removedAs: map[string]backend.Options{}, mounted: map[string]string{}, host: h}
}

func (f *fakeBackend) check() error {
	if f.down {
		return fmt.Errorf("fake server: %w", backend.ErrUnavailable)
	}
	return nil
}

func (f *fakeBackend) Create(_ context.Context, name string, o backend.Options) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(); err != nil {
		return err
	}
	if err := names.CheckVolume(name); err != nil {
		return err
	}
	if err := o.CheckOwner(); err != nil {
		return err
	}
	for _, opt := range o.MountOpts {
		if !slices.Contains(fakeMountOpts, opt) {
			return fmt.Errorf("fake: mount option %q: %w", opt, backend.ErrInvalid)
		}
	}
	if _, ok := f.vols[name]; ok {
		return backend.ErrExists
	}
	f.vols[name] = o
	f.stored[name] = o.Stored()
	return nil
}

// fakeMountOpts is the fake's allowlist of mount options.
var fakeMountOpts = []string{"noatime", "nodiratime", "ro"}

func (f *fakeBackend) Remove(_ context.Context, name string, o backend.Options) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(); err != nil {
		return err
	}
	if _, ok := f.vols[name]; !ok {
		return backend.ErrNotFound
	}
	delete(f.vols, name)
	delete(f.stored, name)
	f.removedAs[name] = o
	return nil
}

func (f *fakeBackend) Get(_ context.Context, name string, _ backend.Options) (backend.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(); err != nil {
		return backend.Volume{}, err
	}
	o, ok := f.vols[name]
	if !ok {
		return backend.Volume{}, backend.ErrNotFound
	}
	if slices.Contains(f.serversDown, f.serverOf[name]) {
		return backend.Volume{}, fmt.Errorf("server %s: %w", f.serverOf[name], backend.ErrUnavailable)
	}
	return backend.Volume{Name: name, Status: map[string]string{"size": fmt.Sprint(o.Size)}, Stored: f.stored[name], Server: f.serverOf[name]}, nil
}

func (f *fakeBackend) List(context.Context) ([]backend.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(); err != nil {
		return nil, err
	}
	var out []backend.Volume
	for name, o := range f.vols {
		if slices.Contains(f.serversDown, f.serverOf[name]) {
			continue
		}
		out = append(out, backend.Volume{Name: name, Status: map[string]string{"size": fmt.Sprint(o.Size)}, Server: f.serverOf[name]})
	}
	if len(f.serversDown) > 0 {
		return out, &backend.PartialError{Servers: f.serversDown, Err: backend.ErrUnavailable}
	}
	return out, nil
}

func (f *fakeBackend) Mount(_ context.Context, name string, o backend.Options, target string) (backend.Mounted, error) {
	f.mu.Lock()
	delay := f.mountDelay
	f.mu.Unlock()
	time.Sleep(delay)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(); err != nil {
		return backend.Mounted{}, err
	}
	if f.failMount != nil {
		return backend.Mounted{}, f.failMount
	}
	if _, ok := f.vols[name]; !ok {
		return backend.Mounted{}, backend.ErrNotFound
	}
	if _, ok := f.mounted[name]; ok {
		return backend.Mounted{}, fmt.Errorf("fake: %s mounted twice", name)
	}
	f.mounted[name] = target
	f.mountedAs[name] = o
	f.host.set(target, true)
	f.mounts++
	return backend.Mounted{Device: "/dev/fake0", Method: "fake", Subdir: "data"}, nil
}

func (f *fakeBackend) Unmount(_ context.Context, name string, _ backend.Options, target string, _ backend.Mounted) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.mounted, name)
	f.host.set(target, false)
	f.unmounts++
	return nil
}

func (f *fakeBackend) Resume(_ context.Context, name string, _ backend.Options, _ string, _ backend.Mounted) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resumed = append(f.resumed, name)
	return nil
}

func (f *fakeBackend) setDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mountDelay = d
}

func (f *fakeBackend) count() (mounts, unmounts int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mounts, f.unmounts
}

// fakeHost is a mount table.
type fakeHost struct {
	mu     sync.Mutex
	points map[string]bool
}

func (h *fakeHost) set(path string, on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if on {
		h.points[path] = true
	} else {
		delete(h.points, path)
	}
}

func (h *fakeHost) Mounted(path string) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.points[path], nil
}

func (h *fakeHost) MountsUnder(root string) ([]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for p := range h.points {
		if filepath.Dir(p) == root {
			out = append(out, p)
		}
	}
	return out, nil
}

func (h *fakeHost) Usage(string) (int64, int64, error) { return 1, 2, nil }

type rig struct {
	d          *Driver
	store      *state.NodeStore
	nbd, nfs   *fakeBackend
	host       *fakeHost
	root, path string
}

func newRig(t *testing.T, timeout time.Duration) *rig {
	t.Helper()
	dir := t.TempDir()
	store, err := state.OpenNodeStore(filepath.Join(dir, "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	h := &fakeHost{points: map[string]bool{}}
	r := &rig{store: store, host: h, nbd: newFakeBackend(h), nfs: newFakeBackend(h), root: filepath.Join(dir, "mnt"), path: filepath.Join(dir, "node.db")}
	r.d = r.driver(t, timeout)
	return r
}

// otherHost makes the driver of another host: its own node store and
// mount root, the rig's backends (the same storage).
func (r *rig) otherHost(t *testing.T) *Driver {
	t.Helper()
	dir := t.TempDir()
	store, err := state.OpenNodeStore(filepath.Join(dir, "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	h := &fakeHost{points: map[string]bool{}}
	d, err := New(Config{Store: store, Host: h, MountRoot: filepath.Join(dir, "mnt"), DefaultType: "nbd", DefaultSize: 1 << 30,
		Timeout: time.Second, Kinds: map[string]Kind{"nbd": {Backend: r.nbd}, "nfs": {Backend: r.nfs}}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// driver makes a driver over the rig's store and backends (a "restart").
func (r *rig) driver(t *testing.T, timeout time.Duration) *Driver {
	d, err := New(Config{Store: r.store, Host: r.host, MountRoot: r.root, DefaultType: "nbd", DefaultSize: 1 << 30,
		Timeout: timeout, Kinds: map[string]Kind{"nbd": {Backend: r.nbd}, "nfs": {Backend: r.nfs}}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}
