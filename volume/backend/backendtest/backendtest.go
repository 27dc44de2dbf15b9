// Package backendtest is the conformance suite of the backend contract
// (package volume/backend): one set of tests that every implementation
// passes, the driver's in-memory fake as well as the nfs and nbd backends,
// so that the fake cannot drift from the real ones (containerd's
// snapshots/testsuite is the model).
//
//	backendtest.Run(t, func(t *testing.T) backend.Backend { return newBackend(t) }, backendtest.Caps{...})
package backendtest

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/netvol/netvol/volume/backend"
)

// Caps says what an implementation needs and can do where the suite runs.
type Caps struct {
	// Base are the options of every volume the suite creates; the
	// suite's own are added to them (an nbd volume needs a Size). UID and
	// GID of -1 leave the owner, as the driver's parsing does.
	Base backend.Options
	// Mount: Mount and Unmount work here (the fake; the nbd backend with
	// fake attacher and mounter; a real backend in a node VM). When
	// false, MountReason says why the mount cases are skipped.
	Mount       bool
	MountReason string
	// MountMissingReason, when set, skips the check that Mount of a
	// missing volume fails with ErrNotFound, and says why.
	MountMissingReason string
}

// Run runs the suite. newBackend returns a backend with no volumes, or
// none the suite's names could meet (every test uses names of its own).
func Run(t *testing.T, newBackend func(t *testing.T) backend.Backend, caps Caps) {
	s := suite{new: newBackend, caps: caps}
	t.Run("CreateGetList", s.createGetList)
	t.Run("CreateExisting", s.createExisting)
	t.Run("Missing", s.missing)
	t.Run("InvalidName", s.invalidName)
	t.Run("InvalidOptions", s.invalidOptions)
	t.Run("RemoveThenGone", s.removeThenGone)
	t.Run("StoredOptions", s.storedOptions)
	t.Run("MountUnmount", s.mountUnmount)
	t.Run("MountMissing", s.mountMissing)
}

type suite struct {
	new  func(t *testing.T) backend.Backend
	caps Caps
}

// opts is the base options with edit applied.
func (s suite) opts(edit func(*backend.Options)) backend.Options {
	o := s.caps.Base
	o.MkfsOpts = slices.Clone(o.MkfsOpts)
	o.MountOpts = slices.Clone(o.MountOpts)
	if edit != nil {
		edit(&o)
	}
	return o
}

func ctxOf(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func wantKind(t *testing.T, what string, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("%s: error %v, want one wrapping %v", what, err, kind)
	}
}

func mustCreate(t *testing.T, b backend.Backend, name string, o backend.Options) {
	t.Helper()
	if err := b.Create(ctxOf(t), name, o); err != nil {
		t.Fatalf("Create %s: %v", name, err)
	}
}

func listed(t *testing.T, b backend.Backend, name string) bool {
	t.Helper()
	vols, err := b.List(ctxOf(t))
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return slices.ContainsFunc(vols, func(v backend.Volume) bool { return v.Name == name })
}

// createGetList: a new volume is reported by Get and List.
func (s suite) createGetList(t *testing.T) {
	b := s.new(t)
	mustCreate(t, b, "cf-new", s.opts(nil))
	v, err := b.Get(ctxOf(t), "cf-new", s.opts(nil))
	if err != nil {
		t.Fatalf("Get of a new volume: %v", err)
	}
	if v.Name != "cf-new" {
		t.Fatalf("Get reports name %q, want cf-new", v.Name)
	}
	if !listed(t, b, "cf-new") {
		t.Fatal("List does not report a new volume")
	}
}

// createExisting: Create of a name taken fails with ErrExists and changes
// nothing, not even the options stored.
func (s suite) createExisting(t *testing.T) {
	b := s.new(t)
	first := s.opts(func(o *backend.Options) { o.UID = 1234 })
	mustCreate(t, b, "cf-twice", first)
	err := b.Create(ctxOf(t), "cf-twice", s.opts(func(o *backend.Options) { o.UID = 4321 }))
	wantKind(t, "Create of an existing volume", err, backend.ErrExists)
	v, err := b.Get(ctxOf(t), "cf-twice", s.opts(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(v.Stored, first.Stored()) {
		t.Fatalf("a refused Create changed the stored options to %v, want %v", v.Stored, first.Stored())
	}
}

// missing: Get and Remove of a volume that does not exist fail with
// ErrNotFound.
func (s suite) missing(t *testing.T) {
	b := s.new(t)
	_, err := b.Get(ctxOf(t), "cf-missing", s.opts(nil))
	wantKind(t, "Get of a missing volume", err, backend.ErrNotFound)
	wantKind(t, "Remove of a missing volume", b.Remove(ctxOf(t), "cf-missing", s.opts(nil)), backend.ErrNotFound)
}

// invalidName: the driver checks names, yet a backend refuses a name that
// is not one (names.CheckVolume) all the same, and makes nothing.
func (s suite) invalidName(t *testing.T) {
	b := s.new(t)
	for _, name := range []string{"", ".", "..", ".hidden", "a/b", "../up", "-dash"} {
		wantKind(t, "Create "+name, b.Create(ctxOf(t), name, s.opts(nil)), backend.ErrInvalid)
		if name != "" && listed(t, b, name) {
			t.Fatalf("a refused Create of %q left a volume", name)
		}
	}
}

// invalidOptions: options no backend can honour are refused with
// ErrInvalid at Create, before anything is made.
func (s suite) invalidOptions(t *testing.T) {
	b := s.new(t)
	bad := map[string]func(*backend.Options){
		"uid -2":           func(o *backend.Options) { o.UID = -2 },
		"gid 2^32":         func(o *backend.Options) { o.GID = 1 << 32 },
		"unknown mount":    func(o *backend.Options) { o.MountOpts = []string{"no-such-option"} },
		"mode beyond bits": func(o *backend.Options) { o.Mode = os.ModeSymlink | 0o755 },
	}
	for _, what := range slices.Sorted(maps.Keys(bad)) {
		err := b.Create(ctxOf(t), "cf-bad", s.opts(bad[what]))
		wantKind(t, "Create with "+what, err, backend.ErrInvalid)
		if listed(t, b, "cf-bad") {
			t.Fatalf("a Create refused for %s left a volume", what)
		}
	}
}

// removeThenGone: a removed volume is gone from Get and List, and its name
// can be taken again, with none of the old volume's options.
func (s suite) removeThenGone(t *testing.T) {
	b := s.new(t)
	mustCreate(t, b, "cf-gone", s.opts(func(o *backend.Options) { o.UID, o.MountOpts = 1234, []string{"noatime"} }))
	if err := b.Remove(ctxOf(t), "cf-gone", s.opts(nil)); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	_, err := b.Get(ctxOf(t), "cf-gone", s.opts(nil))
	wantKind(t, "Get of a removed volume", err, backend.ErrNotFound)
	if listed(t, b, "cf-gone") {
		t.Fatal("List reports a removed volume")
	}
	again := s.opts(nil)
	mustCreate(t, b, "cf-gone", again)
	v, err := b.Get(ctxOf(t), "cf-gone", s.opts(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(v.Stored, again.Stored()) {
		t.Fatalf("a volume made again under a removed one's name stores %v, want %v", v.Stored, again.Stored())
	}
}

// storedOptions: what Create was given comes back from Get as
// Options.Stored, also through another instance of the backend (another
// host).
func (s suite) storedOptions(t *testing.T) {
	b := s.new(t)
	o := s.opts(func(o *backend.Options) {
		o.UID, o.GID, o.Mode, o.MountOpts = 1234, 2345, 0o700, []string{"noatime"}
	})
	mustCreate(t, b, "cf-opts", o)
	want := o.Stored()
	for _, k := range []string{"uid", "gid", "mode", "mount-opts"} {
		if want[k] == "" {
			t.Fatalf("Options.Stored() = %v lacks %s", want, k)
		}
	}
	v, err := b.Get(ctxOf(t), "cf-opts", s.opts(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(v.Stored, want) {
		t.Fatalf("Get reports stored options %v, want %v", v.Stored, want)
	}
	mustCreate(t, b, "cf-plain", s.opts(nil))
	if v, err = b.Get(ctxOf(t), "cf-plain", s.opts(nil)); err != nil || !maps.Equal(v.Stored, s.opts(nil).Stored()) {
		t.Fatalf("Get of a volume made with the base options: %v stored, %v; want %v", v.Stored, err, s.opts(nil).Stored())
	}
}

// mountUnmount: Mount gives a Mounted that Unmount takes back; Unmount
// succeeds again when there is nothing left to undo, and also for a volume
// never mounted (the clean-up after a crash).
func (s suite) mountUnmount(t *testing.T) {
	if !s.caps.Mount {
		t.Skip(s.caps.MountReason)
	}
	b := s.new(t)
	mustCreate(t, b, "cf-mount", s.opts(nil))
	target := filepath.Join(t.TempDir(), "cf-mount")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	m, err := b.Mount(ctxOf(t), "cf-mount", s.opts(nil), target)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	for i := range 2 {
		if err := b.Unmount(ctxOf(t), "cf-mount", s.opts(nil), target, m); err != nil {
			t.Fatalf("Unmount #%d: %v", i+1, err)
		}
	}
	mustCreate(t, b, "cf-never", s.opts(nil))
	if err := b.Unmount(ctxOf(t), "cf-never", s.opts(nil), target, backend.Mounted{}); err != nil {
		t.Fatalf("Unmount of a volume never mounted: %v", err)
	}
	// Mounted again after all that: nothing was left behind.
	m, err = b.Mount(ctxOf(t), "cf-mount", s.opts(nil), target)
	if err != nil {
		t.Fatalf("Mount after Unmount: %v", err)
	}
	if err := b.Unmount(ctxOf(t), "cf-mount", s.opts(nil), target, m); err != nil {
		t.Fatal(err)
	}
}

// mountMissing: Mount of a volume that does not exist fails with
// ErrNotFound.
func (s suite) mountMissing(t *testing.T) {
	if !s.caps.Mount {
		t.Skip(s.caps.MountReason)
	}
	if s.caps.MountMissingReason != "" {
		t.Skip(s.caps.MountMissingReason)
	}
	b := s.new(t)
	target := t.TempDir()
	_, err := b.Mount(ctxOf(t), "cf-nowhere", s.opts(nil), target)
	wantKind(t, "Mount of a missing volume", err, backend.ErrNotFound)
}
