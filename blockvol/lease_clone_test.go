package blockvol

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume/backend"
)

// A clone of a mounted volume leaves its host alone: the clone freezes a
// layer the writer is no longer on, so the device stays attached and the
// lease keeps being renewed.
func TestCloneLeavesWriterAttached(t *testing.T) {
	e := newEnv(t, time.Second)
	b, fk := e.backend("node-1", nil)
	e.create(b, "v")
	ctx := ctxT(t)
	target := t.TempDir()
	m, err := b.Mount(ctx, "v", backend.Options{UID: -1, GID: -1}, target)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.CreateVolume(ctx, api.CreateRequest{Name: "c", From: "v"}); err != nil {
		t.Fatalf("clone of a mounted volume: %v", err)
	}
	time.Sleep(1500 * time.Millisecond) // past the lease: renewals must have gone on
	v, err := b.Get(ctx, "v", backend.Options{})
	if err != nil || b.Fenced("v") || fk.att.attached() != 1 || v.Status["lease"] == "lost" {
		t.Fatalf("after the clone: fenced %v, attached %d, status %v, %v", b.Fenced("v"), fk.att.attached(), v.Status, err)
	}
	if err := b.Unmount(ctx, "v", backend.Options{}, target, m); err != nil {
		t.Fatal(err)
	}
}

// inUseRenewAPI answers every renewal as the daemon answers one of a
// read-write attachment of a volume that has clones.
type inUseRenewAPI struct{ *api.Client }

func (inUseRenewAPI) Renew(context.Context, string, string) (api.Lease, error) {
	return api.Lease{}, &api.Error{Status: 409, Code: api.CodeInUse,
		Message: `read-write lease of node "node-1" not renewed: volume "v" is in use: parent of "c"`}
}

// A renewal refused with in_use will never succeed: the lease is lost at
// once and the device released, instead of retrying to the end of the term
// and on.
func TestLeaseLostWhenRenewRefusedInUse(t *testing.T) {
	e := newEnv(t, time.Second)
	b, fk := e.backend("node-1", nil)
	useAPI(b, inUseRenewAPI{e.client})
	e.create(b, "v")
	ctx := ctxT(t)
	target := t.TempDir()
	m, err := b.Mount(ctx, "v", backend.Options{UID: -1, GID: -1}, target)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "device not released", func() bool { return fk.att.attached() == 0 && b.Fenced("v") })
	if v, err := b.Get(ctx, "v", backend.Options{}); err != nil || !strings.Contains(v.Status["lease_lost"], `will not renew this node's attachment: read-write lease of node "node-1" not renewed`) {
		t.Fatalf("status %v, %v", v.Status, err)
	}
	if err := b.Unmount(ctx, "v", backend.Options{}, target, m); err != nil {
		t.Fatal(err)
	}
}
