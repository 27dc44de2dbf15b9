package state

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// The first claim of a name wins; a second learns it; switches are
// compare-and-swap; a release must name the holder.
func TestClaims(t *testing.T) {
	r := openRegistry(t)
	c, created, err := r.ClaimName("v", "a:1", t0)
	must(t, err)
	if !created || c.Server != "a:1" {
		t.Fatalf("first claim: %+v %v", c, created)
	}
	c, created, err = r.ClaimName("v", "b:1", t0.Add(time.Second))
	must(t, err)
	if created || c.Server != "a:1" || !c.Created.Equal(t0) {
		t.Fatalf("second claim: %+v %v", c, created)
	}
	_, err = r.SwitchClaim("v", "b:1", "c:1")
	wantErr(t, err, ErrInvalid)
	c, err = r.SwitchClaim("v", "a:1", "c:1")
	must(t, err)
	if got, err := r.GetClaim("v"); err != nil || got.Server != "c:1" || c.Server != "c:1" {
		t.Fatalf("after switch: %+v %+v %v", c, got, err)
	}
	wantErr(t, r.ReleaseClaim("v", "a:1"), ErrInvalid)
	must(t, r.ReleaseClaim("v", "c:1"))
	_, err = r.GetClaim("v")
	wantErr(t, err, ErrNotFound)
	_, err = r.SwitchClaim("v", "c:1", "a:1")
	wantErr(t, err, ErrNotFound)
	_, _, err = r.ClaimName("w", "", t0)
	wantErr(t, err, ErrInvalid)
}

func TestSetLabels(t *testing.T) {
	r := openRegistry(t)
	must(t, r.CreateVolume(Volume{Name: "v", Size: 1 << 20, File: "v.qcow2", Created: t0, Labels: map[string]string{"a": "1", "b": "2"}}))
	v, err := r.SetLabels("v", map[string]string{"c": "3"}, []string{"a"})
	must(t, err)
	if len(v.Labels) != 2 || v.Labels["b"] != "2" || v.Labels["c"] != "3" {
		t.Fatalf("labels %v", v.Labels)
	}
	_, err = r.SetLabels("nope", nil, nil)
	wantErr(t, err, ErrNotFound)
}

// A move deletes its source while holding it; another node's live
// attachment still refuses.
func TestDeleteVolumeHeldBy(t *testing.T) {
	r := openRegistry(t)
	for _, n := range []string{"v", "w"} {
		must(t, r.CreateVolume(Volume{Name: n, Size: 1 << 20, File: n + ".qcow2", Created: t0}))
	}
	_, _, err := r.AddAttachment("v", Attachment{Node: "mover", Mode: ModeRW, Expires: t0.Add(time.Hour), Export: "v.x", TokenHash: HashToken("tv")}, t0)
	must(t, err)
	_, err = r.DeleteVolume("v", t0)
	wantErr(t, err, ErrInUse)
	_, err = r.DeleteVolumeHeldBy("v", "mover", t0)
	must(t, err)
	if _, err := r.FindAttachmentByExport("v.x"); err == nil {
		t.Fatal("the mover's export index outlived the volume")
	}
	_, _, err = r.AddAttachment("w", Attachment{Node: "other", Mode: ModeRW, Expires: t0.Add(time.Hour), Export: "w.x", TokenHash: HashToken("tw")}, t0)
	must(t, err)
	_, err = r.DeleteVolumeHeldBy("w", "mover", t0)
	wantErr(t, err, ErrInUse)
}

// A move does not carry snapshots: the delete of its source refuses a
// volume with snapshots (one taken while the copy ran), naming them; a
// hidden snapshot (the layer of a clone) is the clone's business, which
// checkUnused refuses as a child.
func TestDeleteVolumeHeldByRefusesSnapshots(t *testing.T) {
	r := openRegistry(t)
	must(t, r.CreateVolume(Volume{Name: "v", Size: 1 << 20, File: "v.qcow2", Created: t0}))
	_, err := r.CreateSnapshot(Snapshot{Name: "s1", Volume: "v", Created: t0}, "v.1.qcow2", nil)
	must(t, err)
	_, err = r.DeleteVolumeHeldBy("v", "mover", t0)
	wantErr(t, err, ErrInUse)
	if err == nil || !strings.Contains(err.Error(), "s1") {
		t.Fatalf("the refusal does not name the snapshot: %v", err)
	}
	clone := Volume{Name: "c", Parent: "v", File: "c.qcow2", Created: t0}
	_, err = r.CreateSnapshot(Snapshot{Name: "h", Volume: "v", Created: t0, Hidden: true}, "v.2.qcow2", &clone)
	must(t, err)
	_, err = r.DeleteSnapshot("v", "s1")
	must(t, err)
	_, err = r.DeleteVolumeHeldBy("v", "mover", t0)
	var iu *InUseError
	if !errors.As(err, &iu) || len(iu.Children) != 1 || iu.Children[0] != "c" {
		t.Fatalf("a volume with a clone of it as it was: %v", err)
	}
}
