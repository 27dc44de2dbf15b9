package blockvol

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume/backend"
)

// A holder that stopped renewing (a dead host): Mount waits for its lease
// to lapse, takes the volume over, and says once in the log that it waits.
func TestMountWaitsForLapsedLease(t *testing.T) {
	e := newEnv(t, time.Second)
	b, _ := e.backend("node-1", nil)
	log, hook := logtest.NewNullLogger()
	b.cfg.Log = log
	e.create(b, "v")
	ctx := ctxT(t)
	if _, err := e.client.Attach(ctx, "v", "dead-node", api.ModeRW); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	m, err := b.Mount(ctx, "v", backend.Options{UID: -1, GID: -1}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 800*time.Millisecond || took > 5*time.Second || m.Generation != 2 {
		t.Fatalf("mounted %+v after %v", m, took)
	}
	if a := e.attachments("v"); len(a) != 1 || a[0].Node != "node-1" {
		t.Fatalf("attachments %+v", a)
	}
	var waits int
	for _, en := range hook.AllEntries() {
		if strings.Contains(en.Message, "waiting for its lease") && en.Data["holder"] == "dead-node" && en.Data["volume"] == "v" {
			waits++
		}
	}
	if waits != 1 {
		t.Fatalf("log: %d wait entries in %+v", waits, hook.AllEntries())
	}
}

// A holder that detaches is seen within a poll, long before its lease
// would have lapsed.
func TestMountSeesDetachEarly(t *testing.T) {
	e := newEnv(t, 0) // 15 s leases
	b, _ := e.backend("node-1", nil)
	e.create(b, "v")
	ctx := ctxT(t)
	if _, err := e.client.Attach(ctx, "v", "leaving-node", api.ModeRW); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(1500 * time.Millisecond)
		e.client.Detach(context.Background(), "v", "leaving-node")
	}()
	start := time.Now()
	if _, err := b.Mount(ctx, "v", backend.Options{UID: -1, GID: -1}, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < time.Second || took > 4*time.Second {
		t.Fatalf("mounted after %v", took)
	}
}

// A live holder keeps renewing: Mount waits while the lease could still
// lapse in time, then gives up naming the holder, well before its own
// deadline.
func TestMountGivesUpOnLiveHolder(t *testing.T) {
	e := newEnv(t, 2*time.Second)
	holder, _ := e.backend("node-0", nil)
	b, _ := e.backend("node-1", nil)
	e.create(b, "v")
	ctx := ctxT(t)
	if _, err := holder.Mount(ctx, "v", backend.Options{UID: -1, GID: -1}, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := b.Mount(short, "v", backend.Options{UID: -1, GID: -1}, t.TempDir())
	took := time.Since(start)
	wantErr(t, err, backend.ErrInUse, `"node-0"`, "retry in 2 s")
	var held *HeldError
	if !errors.As(err, &held) || held.RetryIn <= time.Second || held.RetryIn > 2*time.Second || took < time.Second || took > 6*time.Second {
		t.Fatalf("gave up after %v with %#v", took, err)
	}
	if a := e.attachments("v"); len(a) != 1 || a[0].Node != "node-0" {
		t.Fatalf("attachments %+v", a)
	}
}

// Without a deadline there is nothing to wait within: refused at once.
func TestMountWithoutDeadlineDoesNotWait(t *testing.T) {
	e := newEnv(t, time.Second)
	b, _ := e.backend("node-1", nil)
	e.create(b, "v")
	if _, err := e.client.Attach(ctxT(t), "v", "node-0", api.ModeRO); err != nil {
		t.Fatal(err)
	}
	_, err := b.Mount(context.Background(), "v", backend.Options{}, t.TempDir())
	wantErr(t, err, backend.ErrInUse, `"node-0"`, "read-only")
}

// Taken over while mounted (renewal failed past the lease, another node
// attached): once the server answers again, the volume is fenced for
// good: the device is released at once, the log and Get say why and who
// holds it, renewal stops, and Unmount cleans up without error.
func TestFenceReleasesDevice(t *testing.T) {
	e := newEnv(t, time.Second)
	b, fk := e.backend("node-1", nil)
	flaky := &flakyAPI{Client: e.client}
	useAPI(b, flaky)
	log, hook := logtest.NewNullLogger()
	b.cfg.Log = log
	e.create(b, "v")
	ctx := ctxT(t)
	target := t.TempDir()
	m, err := b.Mount(ctx, "v", backend.Options{UID: -1, GID: -1}, target)
	if err != nil {
		t.Fatal(err)
	}
	flaky.set(true)
	eventually(t, 3*time.Second, "lease not lost past expiry", func() bool { return b.Fenced("v") })
	if fk.att.attached() != 1 {
		t.Fatal("device released while the server might still hold the attachment")
	}
	g, err := e.client.Attach(ctx, "v", "node-2", api.ModeRW)
	if err != nil || len(g.Fenced) != 1 || g.Fenced[0] != "node-1" {
		t.Fatalf("takeover: %+v %v", g, err)
	}
	l := b.lease("v")
	flaky.set(false)
	select {
	case <-l.done: // renewal ends once it has fenced the volume
	case <-time.After(3 * time.Second):
		t.Fatal("renewal goes on after the attachment is gone")
	}
	if fk.att.attached() != 0 || !b.Fenced("v") {
		t.Fatalf("after the fence: %d devices, fenced %v", fk.att.attached(), b.Fenced("v"))
	}
	v, err := b.Get(ctx, "v", backend.Options{})
	if err != nil || v.Status["lease"] != "lost" || !strings.Contains(v.Status["lease_lost"], `node "node-2" holds it now`) {
		t.Fatalf("status %v %v", v.Status, err)
	}
	var fenced *logrus.Entry
	for _, en := range hook.AllEntries() {
		if en.Level == logrus.ErrorLevel && strings.Contains(en.Message, "device released") {
			fenced = en
		}
	}
	if fenced == nil || fenced.Data["device"] != m.Device || fenced.Data["volume"] != "v" || fenced.Data["node"] != "node-1" {
		t.Fatalf("log: %+v", hook.AllEntries())
	}
	if err := b.Unmount(ctx, "v", backend.Options{}, target, m); err != nil {
		t.Fatal(err)
	}
	if b.Fenced("v") || len(fk.mnt.unmounts) != 1 {
		t.Fatalf("after unmount: fenced %v, unmounts %v", b.Fenced("v"), fk.mnt.unmounts)
	}
	if a := e.attachments("v"); len(a) != 1 || a[0].Node != "node-2" {
		t.Fatalf("node-1's unmount touched node-2's attachment: %+v", a)
	}
}

// A mount found at start whose attachment is gone: Resume releases its
// device and says so.
func TestResumeReleasesFencedDevice(t *testing.T) {
	e := newEnv(t, time.Second)
	b1, fk := e.backend("node-1", nil)
	e.create(b1, "v")
	ctx := ctxT(t)
	o := backend.Options{UID: -1, GID: -1}
	target := t.TempDir()
	m, err := b1.Mount(ctx, "v", o, target)
	if err != nil {
		t.Fatal(err)
	}
	b1.Close()
	if err := e.client.Detach(ctx, "v", "node-1"); err != nil {
		t.Fatal(err)
	}
	b2, err := New(b1.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	err = b2.Resume(ctx, "v", o, target, m)
	if err == nil || !strings.Contains(err.Error(), "lease lost") || !strings.Contains(err.Error(), m.Device+" released") ||
		fk.att.attached() != 0 || !b2.Fenced("v") {
		t.Fatalf("resume: %v, %d devices, fenced %v", err, fk.att.attached(), b2.Fenced("v"))
	}
	if err := b2.Unmount(ctx, "v", o, target, m); err != nil {
		t.Fatal(err)
	}
}

// Get marks a lease lapsed when the server says so, whatever this host's
// clock reads.
func TestStatusMarksLapsedByServer(t *testing.T) {
	e := newEnv(t, time.Second)
	b, _ := e.backend("node-1", nil)
	e.create(b, "v")
	ctx := ctxT(t)
	if _, err := e.client.Attach(ctx, "v", "node-0", api.ModeRO); err != nil {
		t.Fatal(err)
	}
	b.cfg.Now = func() time.Time { return time.Now().Add(time.Hour) } // a clock far ahead changes nothing
	if v, err := b.Get(ctx, "v", backend.Options{}); err != nil || v.Status["attached"] != "node-0(ro)" {
		t.Fatalf("live: %v %v", v.Status, err)
	}
	time.Sleep(1100 * time.Millisecond)
	if v, err := b.Get(ctx, "v", backend.Options{}); err != nil || v.Status["attached"] != "node-0(ro, lapsed)" {
		t.Fatalf("lapsed: %v %v", v.Status, err)
	}
}
