package state

import (
	"errors"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// snapVolume is a registry with volume "v" (image v.qcow2) and a snapshot
// "s" of it (v's image becomes v.1.qcow2).
func snapVolume(t *testing.T) *Registry {
	t.Helper()
	r := openRegistry(t)
	must(t, r.CreateVolume(Volume{Name: "v", Size: 1 << 20, File: "v.qcow2"}))
	_, err := r.CreateSnapshot(Snapshot{Name: "s", Volume: "v", Created: t0}, "v.1.qcow2", nil)
	must(t, err)
	return r
}

// A snapshot freezes the volume's image as its layer and gives the volume
// the new image, in one transaction; a live writer stays attached (it
// writes the new image from then on).
func TestCreateSnapshot(t *testing.T) {
	r := snapVolume(t)
	_, _, err := r.AddAttachment("v", att("n1", ModeRW, "e1"), t0)
	must(t, err)
	v, err := r.CreateSnapshot(Snapshot{Name: "s2", Volume: "v", Created: t0.Add(time.Second), Hidden: true}, "v.2.qcow2", nil)
	must(t, err)
	if v.File != "v.2.qcow2" || len(v.Attachments) != 1 {
		t.Fatalf("volume after the snapshot: %+v", v)
	}
	got, err := r.GetVolume("v")
	must(t, err)
	if len(got.Snapshots) != 2 || got.Snapshots[0].Name != "s" || got.Snapshots[0].File != "v.qcow2" ||
		got.Snapshots[1].File != "v.1.qcow2" || !got.Snapshots[1].Hidden || got.Snapshots[1].Size != 1<<20 {
		t.Fatalf("snapshots %+v", got.Snapshots)
	}
	if _, err := r.RenewAttachment("v", "n1", t0.Add(lease)); err != nil {
		t.Fatalf("the writer's lease after a snapshot: %v", err)
	}
	for _, c := range []struct {
		s    Snapshot
		file string
		want error
	}{
		{Snapshot{Name: "s", Volume: "v"}, "x", ErrExists},
		{Snapshot{Name: "x", Volume: "nope"}, "x", ErrNotFound},
		{Snapshot{Name: "", Volume: "v"}, "x", ErrInvalid},
		{Snapshot{Name: "x", Volume: "v"}, "", ErrInvalid},
	} {
		if _, err := r.CreateSnapshot(c.s, c.file, nil); !errors.Is(err, c.want) {
			t.Errorf("CreateSnapshot(%+v, %q): %v, want %v", c.s, c.file, err, c.want)
		}
	}
	if v, _ := r.GetVolume("v"); v.File != "v.2.qcow2" || len(v.Snapshots) != 2 {
		t.Fatalf("refused snapshots changed the volume: %+v", v)
	}
}

// A clone of the volume as it is: the snapshot and the clone in one
// transaction, or neither.
func TestCreateSnapshotWithClone(t *testing.T) {
	r := snapVolume(t)
	must(t, r.CreateVolume(Volume{Name: "taken"}))
	_, err := r.CreateSnapshot(Snapshot{Name: "h", Volume: "v", Hidden: true}, "v.2.qcow2", &Volume{Name: "taken", File: "t.qcow2"})
	wantErr(t, err, ErrExists)
	if v, _ := r.GetVolume("v"); v.File != "v.1.qcow2" || len(v.Snapshots) != 1 {
		t.Fatalf("a refused clone left the snapshot: %+v", v)
	}
	_, err = r.CreateSnapshot(Snapshot{Name: "h", Volume: "v", Hidden: true}, "v.2.qcow2", &Volume{Name: "c", File: "c.qcow2", Size: 1 << 20})
	must(t, err)
	c, err := r.GetVolume("c")
	must(t, err)
	if c.Parent != "v" || c.FromSnapshot != "h" {
		t.Fatalf("clone %+v", c)
	}
	if cl, _ := r.Clones("v"); fmt.Sprint(cl) != "[{c h}]" {
		t.Fatalf("clones %v", cl)
	}
}

func TestCloneVolumeFromSnapshot(t *testing.T) {
	r := snapVolume(t)
	must(t, r.CreateVolume(Volume{Name: "taken"}))
	for _, c := range []struct {
		v    Volume
		want error
	}{
		{Volume{Name: "taken", Parent: "v", FromSnapshot: "s"}, ErrExists},
		{Volume{Name: "c", Parent: "nope", FromSnapshot: "s"}, ErrNotFound},
		{Volume{Name: "c", Parent: "v", FromSnapshot: "nope"}, ErrNotFound},
		{Volume{Name: "c", Parent: "v"}, ErrInvalid},
		{Volume{Name: "", Parent: "v", FromSnapshot: "s"}, ErrInvalid},
		{Volume{Name: "c", Parent: "v", FromSnapshot: "s", Size: -1}, ErrInvalid},
	} {
		if err := r.CloneVolume(c.v); !errors.Is(err, c.want) {
			t.Errorf("CloneVolume(%+v): %v, want %v", c.v, err, c.want)
		}
	}
	wantErr(t, r.CreateVolume(Volume{Name: "c", Parent: "v"}), ErrInvalid)
	must(t, r.CloneVolume(Volume{Name: "c", Parent: "v", FromSnapshot: "s"}))
	// The parent stays writable: a clone reads the snapshot's layer.
	_, _, err := r.AddAttachment("v", att("n1", ModeRW, "e1"), t0)
	must(t, err)
	_, err = r.RenewAttachment("v", "n1", t0.Add(lease))
	must(t, err)

	// A snapshot with a clone is kept, naming it; the parent too.
	_, err = r.DeleteSnapshot("v", "s")
	var inUse *InUseError
	if !errors.As(err, &inUse) || fmt.Sprint(inUse.Children) != "[c]" || inUse.Snapshot != "s" {
		t.Fatalf("delete of a snapshot with a clone: %v", err)
	}
	if want := `snapshot "s" of volume "v" is in use: parent of "c"`; err.Error() != want {
		t.Fatalf("error text %q, want %q", err, want)
	}
	_, err = r.DeleteVolume("v", t0.Add(2*lease))
	if !errors.As(err, &inUse) || fmt.Sprint(inUse.Children) != "[c]" {
		t.Fatalf("delete of the parent: %v", err)
	}
	_, err = r.DeleteVolume("c", t0)
	must(t, err)
	s, err := r.DeleteSnapshot("v", "s")
	must(t, err)
	if s.File != "v.qcow2" {
		t.Fatalf("deleted %+v", s)
	}
	_, err = r.GetSnapshot("v", "s")
	wantErr(t, err, ErrNotFound)
	_, err = r.DeleteSnapshot("v", "s")
	wantErr(t, err, ErrNotFound)
}

// Rollback: refused while attached; lapsed attachments go with it.
func TestRollback(t *testing.T) {
	r := snapVolume(t)
	w, _, err := r.AddAttachment("v", att("n1", ModeRW, "e1"), t0)
	must(t, err)
	_, _, err = r.Rollback("v", "s", "v.2.qcow2", t0)
	var inUse *InUseError
	if !errors.As(err, &inUse) || fmt.Sprint(inUse.Nodes) != "[n1]" {
		t.Fatalf("rollback while attached: %v", err)
	}
	_, _, err = r.Rollback("v", "nope", "v.2.qcow2", t0)
	wantErr(t, err, ErrNotFound)
	later := w.Expires.Add(time.Second)
	old, gone, err := r.Rollback("v", "s", "v.2.qcow2", later)
	must(t, err)
	if old.File != "v.1.qcow2" || len(gone) != 1 || gone[0].Export != "e1" {
		t.Fatalf("rollback returned %+v, %+v", old, gone)
	}
	v, _ := r.GetVolume("v")
	if v.File != "v.2.qcow2" || len(v.Attachments) != 0 || len(v.Snapshots) != 1 {
		t.Fatalf("after the rollback: %+v", v)
	}
	_, err = r.FindAttachmentByExport("e1")
	wantErr(t, err, ErrNotFound)
}

// legacyClone records a clone as registries before snapshots did: it
// reads its parent's own image.
func legacyClone(t *testing.T, r *Registry, name, parent string) {
	t.Helper()
	must(t, r.s.update(func(root *bolt.Bucket) error {
		return createVolume(root.Bucket(keyVolumes), []byte(name), Volume{Name: name, Parent: parent})
	}))
}

// A read-write attachment of a volume with clones made before snapshots
// is not renewed; a snapshot, which freezes the image those clones read,
// makes the volume writable again and points them at it.
func TestLegacyClonesKeepParentImmutableUntilSnapshot(t *testing.T) {
	r := attachedVolume(t)
	legacyClone(t, r, "c", "v")
	_, _, err := r.AddAttachment("v", att("n1", ModeRW, "e1"), t0)
	must(t, err)
	_, err = r.RenewAttachment("v", "n1", t0.Add(2*lease))
	var inUse *InUseError
	if !errors.As(err, &inUse) || fmt.Sprint(inUse.Children) != "[c]" {
		t.Fatalf("renew: %v", err)
	}
	if want := `read-write lease of node "n1" not renewed: volume "v" is in use: parent of "c"`; err.Error() != want {
		t.Fatalf("error text %q, want %q", err, want)
	}
	if a, _ := r.FindAttachmentByExport("e1"); !a.Expires.Equal(t0.Add(lease)) {
		t.Fatalf("refused renew changed the expiry to %v", a.Expires)
	}
	_, _, err = r.Rollback("v", "s", "x", t0.Add(2*lease))
	wantErr(t, err, ErrNotFound)
	_, err = r.CreateSnapshot(Snapshot{Name: "s", Volume: "v"}, "v.1.qcow2", nil)
	must(t, err)
	if cl, _ := r.Clones("v"); fmt.Sprint(cl) != "[{c s}]" {
		t.Fatalf("clones after the snapshot: %v", cl)
	}
	_, err = r.RenewAttachment("v", "n1", t0.Add(2*lease))
	must(t, err)
}
