package state

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// A clone makes its parent immutable in its own transaction: refused while
// a read-write attachment is live, lapsed ones removed with their export
// names and returned, read-only ones kept.
func TestCloneVolumeFencesWriters(t *testing.T) {
	r := attachedVolume(t) // "v"
	w, _, err := r.AddAttachment("v", att("n1", ModeRW, "e1"), t0)
	must(t, err)

	_, err = r.CloneVolume(Volume{Name: "c", Parent: "v"}, t0.Add(lease-time.Second))
	var inUse *InUseError
	if !errors.As(err, &inUse) || fmt.Sprint(inUse.Nodes) != "[n1]" || inUse.Volume != "v" {
		t.Fatalf("clone beside a live writer: %v", err)
	}
	if _, err := r.GetVolume("c"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("refused clone was recorded: %v", err)
	}
	if kids, _ := r.Children("v"); len(kids) != 0 {
		t.Fatalf("refused clone linked as a child: %v", kids)
	}

	later := w.Expires.Add(time.Second)
	revoked, err := r.CloneVolume(Volume{Name: "c", Parent: "v", Size: 1 << 20}, later)
	must(t, err)
	if len(revoked) != 1 || revoked[0].Node != "n1" || revoked[0].Export != "e1" || revoked[0].Mode != ModeRW {
		t.Fatalf("revoked %+v", revoked)
	}
	if atts, _ := r.ListAttachments("v"); len(atts) != 0 {
		t.Fatalf("parent keeps attachments %+v", atts)
	}
	_, err = r.FindAttachmentByExport("e1")
	wantErr(t, err, ErrNotFound)
	_, err = r.FindAttachmentByToken(HashToken("token-e1"))
	wantErr(t, err, ErrNotFound)
	_, err = r.RenewAttachment("v", "n1", later.Add(lease))
	wantErr(t, err, ErrNotFound)
	if kids, _ := r.Children("v"); fmt.Sprint(kids) != "[c]" {
		t.Fatalf("children %v", kids)
	}

	// Readers stay; a second clone has nothing to fence.
	_, _, err = r.AddAttachment("v", att("n2", ModeRO, "e2"), later)
	must(t, err)
	revoked, err = r.CloneVolume(Volume{Name: "c2", Parent: "v"}, later)
	if err != nil || len(revoked) != 0 {
		t.Fatalf("second clone: revoked %v, %v", revoked, err)
	}
	if atts, _ := r.ListAttachments("v"); len(atts) != 1 || atts[0].Node != "n2" {
		t.Fatalf("reader not kept: %+v", atts)
	}
	if _, err := r.RenewAttachment("v", "n2", later.Add(lease)); err != nil {
		t.Fatalf("renew of a reader of a clone source: %v", err)
	}
}

// A failed clone changes nothing, lapsed writers included.
func TestCloneVolumeRefusals(t *testing.T) {
	r := attachedVolume(t)
	_, _, err := r.AddAttachment("v", att("n1", ModeRW, "e1"), t0)
	must(t, err)
	later := t0.Add(2 * lease)
	must(t, r.CreateVolume(Volume{Name: "taken"}))
	for _, c := range []struct {
		v    Volume
		want error
	}{
		{Volume{Name: "taken", Parent: "v"}, ErrExists},
		{Volume{Name: "c", Parent: "nope"}, ErrNotFound},
		{Volume{Name: "c"}, ErrInvalid},
		{Volume{Name: "", Parent: "v"}, ErrInvalid},
		{Volume{Name: "c", Parent: "v", Size: -1}, ErrInvalid},
	} {
		revoked, err := r.CloneVolume(c.v, later)
		if !errors.Is(err, c.want) || revoked != nil {
			t.Errorf("CloneVolume(%+v): %v %v, want %v", c.v, revoked, err, c.want)
		}
	}
	wantErr(t, r.CreateVolume(Volume{Name: "c", Parent: "v"}), ErrInvalid)
	if atts, _ := r.ListAttachments("v"); len(atts) != 1 {
		t.Fatalf("refused clones changed the attachments: %+v", atts)
	}
}

// A read-write attachment of a volume with clones (recorded before
// cloning removed such attachments) is not renewed.
func TestRenewRefusedForWriterOfCloneSource(t *testing.T) {
	r := attachedVolume(t)
	_, err := r.CloneVolume(Volume{Name: "c", Parent: "v"}, t0)
	must(t, err)
	_, _, err = r.AddAttachment("v", att("n1", ModeRW, "e1"), t0)
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
	_, err = r.DeleteVolume("c", t0)
	must(t, err)
	_, err = r.RenewAttachment("v", "n1", t0.Add(2*lease))
	must(t, err)
}
