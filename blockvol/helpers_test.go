package blockvol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/internal/mount"
	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/server"
	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume/backend"
)

const (
	testToken = "blockvol-test-token"
	volSize   = 16 << 20
)

// testEnv is a real storage daemon in process: the control API over
// httptest and the NBD server on a loopback listener (or a unix socket).
type testEnv struct {
	t      *testing.T
	svc    *server.Service
	api    *httptest.Server
	client *api.Client
	nbdL   net.Listener
}

func newEnv(t *testing.T, ttl time.Duration) *testEnv { return newEnvOn(t, ttl, "tcp") }

func newEnvOn(t *testing.T, ttl time.Duration, network string) *testEnv {
	t.Helper()
	svc, err := server.Open(server.Config{DataDir: t.TempDir(), MaxVolumeSize: 1 << 30, LeaseTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	l := listen(t, network)
	srv := &nbd.Server{Exports: svc}
	go srv.Serve(l)
	hs := httptest.NewServer(server.NewAPI(svc, testToken, quietLog(), server.WithNBDAddr(l.Addr())))
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
		svc.Close()
	})
	c, err := api.New(hs.URL, testToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &testEnv{t: t, svc: svc, api: hs, client: c, nbdL: l}
}

func listen(t *testing.T, network string) net.Listener {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		dir, err := os.MkdirTemp("", "bv") // short: sun_path is 108 bytes
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		addr = filepath.Join(dir, "s")
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func quietLog() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// fakes are the injected parts of one test backend.
type fakes struct {
	att *copyAttacher
	mnt *fakeMounter
	fmt *countingFormatter
}

// backend returns a Backend of node on e with fakes; the formatter is the
// real mkfs.ext4 when the test needs one (needMkfs).
func (e *testEnv) backend(node string, f Formatter) (*Backend, *fakes) {
	e.t.Helper()
	fk := &fakes{att: newCopyAttacher(e.t), mnt: &fakeMounter{}, fmt: &countingFormatter{inner: f}}
	b, err := New(Config{API: e.client, Node: node, Attacher: fk.att, Mounter: fk.mnt, Formatter: fk.fmt, Log: quietLog()})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { b.Close() })
	return b, fk
}

// attachments of volume as the daemon records them.
func (e *testEnv) attachments(name string) []api.Attachment {
	e.t.Helper()
	v, err := e.client.GetVolume(ctxT(e.t), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return v.Attachments
}

func (e *testEnv) create(b *Backend, name string) {
	e.t.Helper()
	if err := b.Create(ctxT(e.t), name, backend.Options{Size: volSize}); err != nil {
		e.t.Fatal(err)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func needMkfs(t *testing.T) Formatter {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/mkfs.ext4"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mkfs.ext4 is required under CI=true: %v", err)
		}
		t.Skip("mkfs.ext4 not installed (apt-get install e2fsprogs)")
	}
	return Mkfs{Path: "/usr/sbin/mkfs.ext4"}
}

// copyAttacher is a userspace attacher for tests: it reads the whole
// export over the connection it is given into a file (the "device") and
// writes the file back at Detach, so what is formatted reaches the server.
type copyAttacher struct {
	t    *testing.T
	dir  string
	fail error // Attach fails with it

	mu           sync.Mutex
	n            int
	open         map[string]*nbd.Client // by device path
	conns        int                    // dialed
	grows        int                    // Grow calls
	writeBackErr error
}

func newCopyAttacher(t *testing.T) *copyAttacher {
	return &copyAttacher{t: t, dir: t.TempDir(), open: map[string]*nbd.Client{}}
}

func (a *copyAttacher) Attach(ctx context.Context, t Target) (Device, error) {
	dial := t.Dial
	if a.fail != nil {
		return Device{}, a.fail
	}
	conn, info, err := dial(ctx)
	if err != nil {
		return Device{}, err
	}
	cl := nbd.NewClient(conn, info)
	buf := make([]byte, info.Size)
	if err := cl.Read(ctx, buf, 0); err != nil {
		cl.Close()
		return Device{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n++
	a.conns++
	path := filepath.Join(a.dir, fmt.Sprintf("dev%d", a.n))
	if err := os.WriteFile(path, buf, 0o600); err != nil {
		cl.Close()
		return Device{}, err
	}
	a.open[path] = cl
	return Device{Path: path, Method: "copy"}, nil
}

func (a *copyAttacher) Detach(ctx context.Context, d Device) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	cl := a.open[d.Path]
	if cl == nil {
		return nil
	}
	delete(a.open, d.Path)
	defer cl.Close()
	data, err := os.ReadFile(d.Path)
	if err == nil {
		err = cl.Write(ctx, data, 0, 0)
	}
	if err == nil {
		err = cl.Flush(ctx)
	}
	// A revoked export cannot take the data back, as a fenced kernel
	// device could not; tests that care look at writeBackErr.
	a.writeBackErr = errors.Join(a.writeBackErr, err)
	return os.Remove(d.Path)
}

func (a *copyAttacher) attached() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.open)
}

// fakeMounter records mounts.
type fakeMounter struct {
	mu       sync.Mutex
	fail     error
	mounts   []mount.Mount
	unmounts []string
}

func (m *fakeMounter) Mount(mt mount.Mount) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.mounts = append(m.mounts, mt)
	return nil
}

func (m *fakeMounter) Unmount(target string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unmounts = append(m.unmounts, target)
	return nil
}

// countingFormatter counts calls and runs inner (when not nil).
type countingFormatter struct {
	mu    sync.Mutex
	inner Formatter
	fail  error
	hook  func() // runs in Format
	calls int
}

func (f *countingFormatter) Format(ctx context.Context, device string, opts []string) error {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	if f.hook != nil {
		f.hook()
	}
	if f.fail != nil {
		return f.fail
	}
	if f.inner == nil {
		return nil
	}
	return f.inner.Format(ctx, device, opts)
}

func (f *countingFormatter) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// eventually polls cond for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("after %v: %s", d, what)
}

func newClient(addr string) (*api.Client, error) { return api.New(addr, testToken, nil) }

// flakyAPI fails renewals while set, as an unreachable server would.
type flakyAPI struct {
	*api.Client
	mu   sync.Mutex
	down bool
}

func (f *flakyAPI) set(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

func (f *flakyAPI) Renew(ctx context.Context, volume, node string) (api.Lease, error) {
	f.mu.Lock()
	down := f.down
	f.mu.Unlock()
	if down {
		return api.Lease{}, fmt.Errorf("%w: test says so", api.ErrUnavailable)
	}
	return f.Client.Renew(ctx, volume, node)
}

// useAPI makes b talk to a (a wrapper of its server's client) from now on.
func useAPI(b *Backend, a API) {
	p, err := newPool([]API{a})
	if err != nil {
		panic(err)
	}
	b.cfg.API, b.pool = a, p
}

var _ Grower = (*copyAttacher)(nil)

// Grow implements Grower for the copy attacher: the "device" file takes
// the export's size, as the server tells a new connection.
func (a *copyAttacher) Grow(ctx context.Context, d Device, dial Dialer) (int64, error) {
	conn, info, err := dial(ctx)
	if err != nil {
		return 0, err
	}
	conn.Close()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.grows++
	if err := os.Truncate(d.Path, int64(info.Size)); err != nil {
		return 0, err
	}
	return int64(info.Size), nil
}

// fakeFSGrower records growths; the file system "spans" the device.
type fakeFSGrower struct {
	mu    sync.Mutex
	fail  error
	calls []string // target:device size
}

func (g *fakeFSGrower) GrowFS(_ context.Context, device, target string) (int64, error) {
	n, err := deviceSize(device)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, fmt.Sprintf("%s:%d", target, n))
	if g.fail != nil {
		return 0, g.fail
	}
	return n, err
}

func (g *fakeFSGrower) grown() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.calls...)
}
