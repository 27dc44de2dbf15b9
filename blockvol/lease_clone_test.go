package blockvol

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume/backend"
)

// A host that could not renew while someone cloned its volume does not
// get the lease back when renewal works again: the clone fenced its
// attachment, so the device is released and the lease stays lost.
func TestLeaseLostWhenClonedWhileLapsed(t *testing.T) {
	e := newEnv(t, time.Second)
	b, fk := e.backend("node-1", nil)
	flaky := &flakyAPI{Client: e.client}
	useAPI(b, flaky)
	e.create(b, "v")
	ctx := ctxT(t)
	target := t.TempDir()
	m, err := b.Mount(ctx, "v", backend.Options{UID: -1, GID: -1}, target)
	if err != nil {
		t.Fatal(err)
	}
	flaky.set(true)
	eventually(t, 3*time.Second, "lease not lost past expiry", func() bool { return b.Fenced("v") })
	eventually(t, 3*time.Second, "clone refused", func() bool {
		_, err := e.client.CreateVolume(ctx, api.CreateRequest{Name: "c", From: "v"})
		return err == nil
	})
	flaky.set(false)
	eventually(t, 3*time.Second, "device not released after the clone", func() bool { return fk.att.attached() == 0 })
	time.Sleep(300 * time.Millisecond) // a renewal or two more
	v, err := b.Get(ctx, "v", backend.Options{})
	if err != nil || !b.Fenced("v") || v.Status["lease"] != "lost" || !strings.Contains(v.Status["lease_lost"], "no longer holds") {
		t.Fatalf("after the clone: fenced %v, status %v, %v", b.Fenced("v"), v.Status, err)
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
