package state

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestReopenKeepsState(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "registry.db")
	r, err := OpenRegistry(path)
	must(t, err)
	must(t, r.CreateVolume(Volume{Name: "data", Size: 1 << 30, File: "data.qcow2", Created: t0}))
	a, _, err := r.AddAttachment("data", att("n1", ModeRW, "e1"), t0)
	must(t, err)
	must(t, r.Close())

	r, err = OpenRegistry(path)
	must(t, err)
	defer r.Close()
	if r.Path() != path {
		t.Fatalf("path %q, want %q", r.Path(), path)
	}
	v, err := r.GetVolume("data")
	must(t, err)
	if v.Size != 1<<30 || v.File != "data.qcow2" || !v.Created.Equal(t0) {
		t.Fatalf("volume after reopen: %+v", v)
	}
	if len(v.Attachments) != 1 || v.Attachments[0] != a {
		t.Fatalf("attachments after reopen: %+v, want %+v", v.Attachments, a)
	}
	b, _, err := r.AddAttachment("data", att("n1", ModeRW, "e2"), t0)
	must(t, err)
	if b.Generation != a.Generation+1 {
		t.Fatalf("generation after reopen %d, want %d", b.Generation, a.Generation+1)
	}
}

func TestNodeReopenKeepsState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	n, err := OpenNodeStore(path)
	must(t, err)
	must(t, n.CreateVolume(NodeVolume{Name: "v", Type: "nfs"}))
	must(t, n.PutMount(Mount{Name: "v", Mountpoint: "/m/v", IDs: map[string]int{"a": 2}}))
	must(t, n.Close())
	n, err = OpenNodeStore(path)
	must(t, err)
	defer n.Close()
	m, err := n.GetMount("v")
	must(t, err)
	if m.Total() != 2 || m.Mountpoint != "/m/v" {
		t.Fatalf("mount after reopen: %+v", m)
	}
	if _, err := n.GetVolume("v"); err != nil {
		t.Fatal(err)
	}
}

func TestOpenTimesOutWhenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	r, err := OpenRegistry(path)
	must(t, err)
	defer r.Close()

	start := time.Now()
	_, err = OpenRegistry(path, WithTimeout(50*time.Millisecond))
	wantErr(t, err, ErrLocked)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("open took %s, want to give up after about 50ms", d)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("error %q does not name the file and the lock", err)
	}
	// The lock is checked before the kind of the file.
	_, err = OpenNodeStore(path, WithTimeout(10*time.Millisecond))
	wantErr(t, err, ErrLocked)
	// A plain bbolt handle, as another process would use, fails too.
	_, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: 10 * time.Millisecond})
	if err == nil {
		t.Fatal("second bolt.Open on a held file succeeded")
	}
}

func TestOpenAfterCloseSucceeds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	r, err := OpenRegistry(path)
	must(t, err)
	must(t, r.Close())
	r, err = OpenRegistry(path, WithTimeout(10*time.Millisecond))
	must(t, err)
	must(t, r.Close())
}

func TestOpenRefusesOtherKind(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	n, err := OpenNodeStore(path)
	must(t, err)
	must(t, n.Close())
	_, err = OpenRegistry(path)
	wantErr(t, err, ErrSchema)
	if !strings.Contains(err.Error(), `"node"`) {
		t.Fatalf("error %q does not say what the file holds", err)
	}
}

func TestOpenRefusesForeignFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	db, err := bolt.Open(path, 0o600, nil)
	must(t, err)
	must(t, db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("something"))
		return err
	}))
	must(t, db.Close())
	_, err = OpenNodeStore(path)
	wantErr(t, err, ErrSchema)
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	r, err := OpenRegistry(path)
	must(t, err)
	must(t, r.s.update(func(root *bolt.Bucket) error {
		return root.Put(keyVersion, encodeUint(uint64(latest(registrySchema())+1)))
	}))
	must(t, r.Close())
	_, err = OpenRegistry(path)
	wantErr(t, err, ErrSchema)
	if !strings.Contains(err.Error(), "downgrade") {
		t.Fatalf("error %q does not hint at a downgrade", err)
	}
}

func TestOpenRefusesNonBoltFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	must(t, os.WriteFile(path, bytes.Repeat([]byte("not a database\n"), 1000), 0o600))
	_, err := OpenRegistry(path)
	wantErr(t, err, ErrSchema)
}

func TestOpenBadPath(t *testing.T) {
	_, err := OpenRegistry(filepath.Join(t.TempDir(), "missing", "dir", "r.db"))
	if err == nil || errors.Is(err, ErrLocked) {
		t.Fatalf("error %v, want an open error", err)
	}
}

func TestKeyRefusesEmptyAndHuge(t *testing.T) {
	_, err := key("volume", "")
	wantErr(t, err, ErrInvalid)
	_, err = key("volume", strings.Repeat("x", bolt.MaxKeySize+1))
	wantErr(t, err, ErrInvalid)
	k, err := key("volume", "a/b")
	must(t, err)
	if string(k) != "a/b" {
		t.Fatalf("key %q", k)
	}
}
