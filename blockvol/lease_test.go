package blockvol

import (
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume/backend"
)

// An attachment the server dropped is a lost lease: Fenced, "lost" in
// Get, one error logged with the volume and node.
func TestLeaseLostWhenDetachedByServer(t *testing.T) {
	e := newEnv(t, time.Second)
	b, _ := e.backend("node-1", nil)
	log, hook := logtest.NewNullLogger()
	b.cfg.Log = log
	e.create(b, "v")
	ctx := ctxT(t)
	target := t.TempDir()
	m, err := b.Mount(ctx, "v", backend.Options{UID: -1, GID: -1}, target)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.client.Detach(ctx, "v", "node-1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "lease not lost", func() bool { return b.Fenced("v") })
	if v, err := b.Get(ctx, "v", backend.Options{}); err != nil || v.Status["lease"] != "lost" {
		t.Fatalf("status %v %v", v.Status, err)
	}
	var lost *logrus.Entry
	for _, en := range hook.AllEntries() {
		if en.Level == logrus.ErrorLevel {
			lost = en
		}
	}
	if lost == nil || lost.Data["volume"] != "v" || lost.Data["node"] != "node-1" || !strings.Contains(lost.Message, "lost") {
		t.Fatalf("log: %+v", hook.AllEntries())
	}
	if err := b.Unmount(ctx, "v", backend.Options{}, target, m); err != nil {
		t.Fatal(err)
	}
	if b.Fenced("v") {
		t.Fatal("still fenced after unmount")
	}
}

// Renewal that fails past the expiry marks the lease lost; renewal that
// works again (nobody took the volume) makes it ok again.
func TestLeaseLostAndRegained(t *testing.T) {
	e := newEnv(t, time.Second)
	b, _ := e.backend("node-1", nil)
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
	time.Sleep(500 * time.Millisecond)
	if b.Fenced("v") {
		t.Fatal("fenced before the lease expired")
	}
	eventually(t, 3*time.Second, "lease not lost past expiry", func() bool { return b.Fenced("v") })
	flaky.set(false)
	eventually(t, 3*time.Second, "lease not regained", func() bool { return !b.Fenced("v") })
	if err := b.Unmount(ctx, "v", backend.Options{}, target, m); err != nil {
		t.Fatal(err)
	}
}

// After a restart (Close, a new Backend), Resume renews the mount's lease;
// a mount whose attachment is gone or of another generation is lost.
func TestResume(t *testing.T) {
	e := newEnv(t, time.Second)
	b1, fk := e.backend("node-1", nil)
	e.create(b1, "v")
	ctx := ctxT(t)
	target := t.TempDir()
	o := backend.Options{UID: -1, GID: -1}
	m, err := b1.Mount(ctx, "v", o, target)
	if err != nil {
		t.Fatal(err)
	}
	b1.Close()
	b2, err := New(b1.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if err := b2.Resume(ctx, "v", o, target, m); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	if a := e.attachments("v"); len(a) != 1 || !a[0].Expires.After(time.Now()) || b2.Fenced("v") {
		t.Fatalf("resumed lease: %+v, fenced %v", a, b2.Fenced("v"))
	}

	stale := m
	stale.Generation++
	b3, _ := New(b1.cfg)
	defer b3.Close()
	if err := b3.Resume(ctx, "v", o, target, stale); err == nil || !strings.Contains(err.Error(), "lease lost") || !b3.Fenced("v") {
		t.Fatalf("resume of another generation: %v, fenced %v", err, b3.Fenced("v"))
	}
	if err := b2.Unmount(ctx, "v", o, target, m); err != nil || fk.att.attached() != 0 {
		t.Fatalf("unmount %v, %d devices", err, fk.att.attached())
	}
	if err := b3.Resume(ctx, "v", o, target, m); err == nil || !b3.Fenced("v") {
		t.Fatalf("resume of a detached volume: %v", err)
	}
	if err := b3.Unmount(ctx, "v", o, target, m); err != nil || b3.Fenced("v") {
		t.Fatalf("unmount of a lost lease: %v, fenced %v", err, b3.Fenced("v"))
	}
}

func TestLeaseTiming(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) api.Lease { return api.Lease{Expires: now.Add(d)} }
	l := &lease{}
	if l.wait(true) != 5*time.Second {
		t.Fatalf("wait without a lease: %v", l.wait(true))
	}
	l.update(now, at(15*time.Second))
	if l.wait(true) != 5*time.Second || l.wait(false) != 2500*time.Millisecond || l.callTimeout() != 5*time.Second {
		t.Fatalf("15s lease: %v %v %v", l.wait(true), l.wait(false), l.callTimeout())
	}
	l.update(now, at(-time.Second)) // a skewed clock: keep the last length
	if l.wait(true) != 5*time.Second {
		t.Fatalf("after a negative lease: %v", l.wait(true))
	}
	l.update(now, at(60*time.Millisecond))
	if l.wait(true) != minRenewWait || l.callTimeout() != time.Second {
		t.Fatalf("tiny lease: %v %v", l.wait(true), l.callTimeout())
	}
	l.update(now, at(time.Second))
	if l.failed(now.Add(500*time.Millisecond), false, "") || l.state() != "ok" {
		t.Fatal("lost before expiry")
	}
	if !l.failed(now.Add(time.Second), false, "why") || l.failed(now.Add(2*time.Second), false, "") ||
		l.state() != "lost" || l.lostWhy() != "why" {
		t.Fatal("not lost exactly once at expiry")
	}
	if !l.update(now, at(time.Second)) || l.state() != "ok" || l.lostWhy() != "" {
		t.Fatal("not regained")
	}
	if !l.failed(now, true, "gone") {
		t.Fatal("not lost when the server forgot the attachment")
	}
}

// The time left that the server reports decides, not its clock: a server
// clock an hour ahead or behind changes nothing.
func TestLeaseTimingIgnoresServerClock(t *testing.T) {
	now := time.Now()
	for _, skew := range []time.Duration{time.Hour, -time.Hour} {
		l := &lease{}
		l.update(now, api.Lease{Expires: now.Add(skew + 15*time.Second), ExpiresInMS: 15000})
		if l.wait(true) != 5*time.Second {
			t.Fatalf("skew %v: wait %v", skew, l.wait(true))
		}
		if l.failed(now.Add(14*time.Second), false, "") || !l.failed(now.Add(15*time.Second), false, "") {
			t.Fatalf("skew %v: lost at the wrong time", skew)
		}
	}
}
