package blockvol

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume/backend"
)

// restartingAPI reports the daemon run it is told to, as a restarted daemon
// would report a new one.
type restartingAPI struct {
	*api.Client
	mu       sync.Mutex
	instance string
}

func (r *restartingAPI) set(id string) {
	r.mu.Lock()
	r.instance = id
	r.mu.Unlock()
}

func (r *restartingAPI) Renew(ctx context.Context, volume, node string) (api.Lease, error) {
	l, err := r.Client.Renew(ctx, volume, node)
	r.mu.Lock()
	if r.instance != "" {
		l.Instance = r.instance
	}
	r.mu.Unlock()
	return l, err
}

// reconnectingAttacher counts reconnects and checks that the dialer it is
// given still reaches the export.
type reconnectingAttacher struct {
	*copyAttacher
	mu         sync.Mutex
	reconnects int
	dialErr    error
}

func (a *reconnectingAttacher) Reconnect(ctx context.Context, d Device, dial Dialer) error {
	c, _, err := dial(ctx)
	if err == nil {
		c.Close()
	}
	a.mu.Lock()
	a.reconnects++
	a.dialErr = err
	a.mu.Unlock()
	return err
}

func (a *reconnectingAttacher) count() (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reconnects, a.dialErr
}

// TestReconnectAfterDaemonRestart: when a renewal shows a new daemon run,
// the device gets new connections to the same export, once per restart.
func TestReconnectAfterDaemonRestart(t *testing.T) {
	e := newEnv(t, 600*time.Millisecond)
	api := &restartingAPI{Client: e.client}
	att := &reconnectingAttacher{copyAttacher: newCopyAttacher(t)}
	b, err := New(Config{API: api, Node: "n1", Attacher: att, Mounter: &fakeMounter{}, Formatter: &countingFormatter{inner: needMkfs(t)}, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	e.create(b, "v")
	target := t.TempDir()
	m, err := b.Mount(ctxT(t), "v", backend.Options{UID: -1, GID: -1}, target)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // renewals of the same run
	if n, _ := att.count(); n != 0 {
		t.Fatalf("%d reconnects without a restart", n)
	}
	api.set("after-restart")
	eventually(t, 5*time.Second, "a reconnect", func() bool { n, _ := att.count(); return n == 1 })
	if _, err := att.count(); err != nil {
		t.Fatalf("the reconnect's dialer failed: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	if n, _ := att.count(); n != 1 {
		t.Fatalf("%d reconnects for one restart", n)
	}
	if err := b.Unmount(ctxT(t), "v", backend.Options{}, target, m); err != nil {
		t.Fatal(err)
	}
}
