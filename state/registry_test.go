package state

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

func TestCreateGetVolume(t *testing.T) {
	r := openRegistry(t)
	v := Volume{Name: "data", Size: 10 << 30, File: "images/data.qcow2", Created: t0,
		Labels: map[string]string{"team": "db"}}
	must(t, r.CreateVolume(v))
	got, err := r.GetVolume("data")
	must(t, err)
	if !reflect.DeepEqual(got, v) {
		t.Fatalf("got %+v, want %+v", got, v)
	}
	err = r.CreateVolume(Volume{Name: "data", Size: 1})
	wantErr(t, err, ErrExists)
	if err.Error() != `volume "data": already exists` {
		t.Fatalf("error text %q", err)
	}
	_, err = r.GetVolume("nope")
	wantErr(t, err, ErrNotFound)
}

func TestCreateVolumeRefusesBadInput(t *testing.T) {
	r := openRegistry(t)
	wantErr(t, r.CreateVolume(Volume{Name: ""}), ErrInvalid)
	wantErr(t, r.CreateVolume(Volume{Name: "x", Size: -1}), ErrInvalid)
	err := r.CloneVolume(Volume{Name: "clone", Parent: "missing", FromSnapshot: "s"})
	wantErr(t, err, ErrNotFound)
	if _, err := r.GetVolume("clone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("volume with a missing parent was recorded: %v", err)
	}
	_, err = r.GetVolume("")
	wantErr(t, err, ErrInvalid)
}

func TestNamesWithSlashesStayApart(t *testing.T) {
	r := openRegistry(t)
	for i, name := range []string{"a", "a/b", "a/b/c", "/", "attachments", "record", "a\x00b"} {
		must(t, r.CreateVolume(Volume{Name: name, Size: int64(i + 1)}))
	}
	vs, err := r.ListVolumes()
	must(t, err)
	if len(vs) != 7 {
		t.Fatalf("%d volumes, want 7: %+v", len(vs), vs)
	}
	v, err := r.GetVolume("a/b")
	must(t, err)
	if v.Size != 2 {
		t.Fatalf("a/b has size %d, want 2", v.Size)
	}
	_, err = r.DeleteVolume("a", t0)
	must(t, err)
	if _, err := r.GetVolume("a/b"); err != nil {
		t.Fatalf("deleting a touched a/b: %v", err)
	}
}

func TestListVolumesSortedWithAttachments(t *testing.T) {
	r := openRegistry(t)
	vs, err := r.ListVolumes()
	must(t, err)
	if len(vs) != 0 {
		t.Fatalf("fresh registry lists %v", vs)
	}
	for _, n := range []string{"c", "a", "b"} {
		must(t, r.CreateVolume(Volume{Name: n, Size: 1}))
	}
	_, _, err = r.AddAttachment("b", att("n1", ModeRW, "e1"), t0)
	must(t, err)
	vs, err = r.ListVolumes()
	must(t, err)
	var names []string
	for _, v := range vs {
		names = append(names, fmt.Sprintf("%s:%d", v.Name, len(v.Attachments)))
	}
	if fmt.Sprint(names) != "[a:0 b:1 c:0]" {
		t.Fatalf("list %v", names)
	}
}

func TestUpdateVolumeSize(t *testing.T) {
	r := openRegistry(t)
	must(t, r.CreateVolume(Volume{Name: "v", Size: 100, File: "v.qcow2", Labels: map[string]string{"k": "v"}}))
	v, err := r.UpdateVolumeSize("v", 200)
	must(t, err)
	if v.Size != 200 || v.File != "v.qcow2" || v.Labels["k"] != "v" {
		t.Fatalf("after grow: %+v", v)
	}
	_, err = r.UpdateVolumeSize("v", 200)
	must(t, err)
	_, err = r.UpdateVolumeSize("v", 100)
	wantErr(t, err, ErrInvalid)
	got, _ := r.GetVolume("v")
	if got.Size != 200 {
		t.Fatalf("refused shrink changed size to %d", got.Size)
	}
	_, err = r.UpdateVolumeSize("nope", 1)
	wantErr(t, err, ErrNotFound)
}

func TestChildrenAndDeleteOrder(t *testing.T) {
	r := openRegistry(t)
	must(t, r.CreateVolume(Volume{Name: "base", Template: true, File: "base.qcow2"}))
	_, err := r.CreateSnapshot(Snapshot{Name: "s", Volume: "base"}, "base.1.qcow2", nil)
	must(t, err)
	for _, c := range []string{"c2", "c1"} {
		must(t, r.CloneVolume(Volume{Name: c, Parent: "base", FromSnapshot: "s"}))
	}
	kids, err := r.Children("base")
	must(t, err)
	if fmt.Sprint(kids) != "[c1 c2]" {
		t.Fatalf("children %v", kids)
	}
	_, err = r.Children("nope")
	wantErr(t, err, ErrNotFound)

	_, err = r.DeleteVolume("base", t0)
	wantErr(t, err, ErrInUse)
	var inUse *InUseError
	if !errors.As(err, &inUse) || fmt.Sprint(inUse.Children) != "[c1 c2]" {
		t.Fatalf("error %#v does not name the clones", err)
	}
	if err.Error() != `volume "base" is in use: parent of "c1", "c2"` {
		t.Fatalf("error text %q", err)
	}
	for _, c := range []string{"c1", "c2"} {
		v, err := r.DeleteVolume(c, t0)
		must(t, err)
		if v.Parent != "base" {
			t.Fatalf("deleted %+v", v)
		}
	}
	kids, _ = r.Children("base")
	if len(kids) != 0 {
		t.Fatalf("children after deleting clones: %v", kids)
	}
	v, err := r.DeleteVolume("base", t0)
	must(t, err)
	if !v.Template || len(v.Snapshots) != 1 || v.Snapshots[0].File != "base.qcow2" {
		t.Fatalf("deleted %+v", v)
	}
	_, err = r.DeleteVolume("base", t0)
	wantErr(t, err, ErrNotFound)
}

func TestDeleteRefusedWhileAttached(t *testing.T) {
	r := openRegistry(t)
	must(t, r.CreateVolume(Volume{Name: "v"}))
	a, _, err := r.AddAttachment("v", att("n1", ModeRO, "e1"), t0)
	must(t, err)
	_, _, err = r.AddAttachment("v", att("n2", ModeRO, "e2"), t0)
	must(t, err)

	_, err = r.DeleteVolume("v", t0)
	var inUse *InUseError
	if !errors.As(err, &inUse) || fmt.Sprint(inUse.Nodes) != "[n1 n2]" || !errors.Is(err, ErrInUse) {
		t.Fatalf("error %v, want in use by n1, n2", err)
	}
	if atts, _ := r.ListAttachments("v"); len(atts) != 2 {
		t.Fatalf("refused delete changed attachments: %v", atts)
	}

	// Once the leases have lapsed the volume goes, and its exports with it.
	later := a.Expires.Add(time.Second)
	v, err := r.DeleteVolume("v", later)
	must(t, err)
	if len(v.Attachments) != 2 {
		t.Fatalf("deleted volume reports attachments %v", v.Attachments)
	}
	_, err = r.FindAttachmentByExport("e1")
	wantErr(t, err, ErrNotFound)
	_, err = r.FindAttachmentByToken(HashToken("token-e2"))
	wantErr(t, err, ErrNotFound)
	// A new volume of the same name can reuse the export names.
	must(t, r.CreateVolume(Volume{Name: "v"}))
	_, _, err = r.AddAttachment("v", att("n1", ModeRW, "e1"), later)
	must(t, err)
}
