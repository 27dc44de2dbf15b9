package fuseattach

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netvol/netvol/nbd"
)

// volatileBackend models the storage daemon's promise: writes are held in
// memory until a flush, and a crash loses what no flush covered.
type volatileBackend struct {
	mu      sync.Mutex
	cur     []byte
	durable []byte
	flushes atomic.Int64
}

func newVolatile(size int) *volatileBackend {
	return &volatileBackend{cur: make([]byte, size), durable: make([]byte, size)}
}

func (b *volatileBackend) ReadAt(p []byte, off int64) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return copy(p, b.cur[off:]), nil
}

func (b *volatileBackend) WriteAt(p []byte, off int64) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return copy(b.cur[off:], p), nil
}

func (b *volatileBackend) Size() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return int64(len(b.cur))
}

// grow adds n zero bytes, as a resized image does.
func (b *volatileBackend) grow(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cur = append(b.cur, make([]byte, n)...)
	b.durable = append(b.durable, make([]byte, n)...)
}

func (b *volatileBackend) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	copy(b.durable, b.cur)
	b.flushes.Add(1)
	return nil
}

func (b *volatileBackend) Discard(off, n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.cur[off : off+n])
	return nil
}

// crash drops what no flush covered.
func (b *volatileBackend) crash() {
	b.mu.Lock()
	defer b.mu.Unlock()
	copy(b.cur, b.durable)
}

func (b *volatileBackend) durableBytes(off, n int) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.durable[off : off+n])
}

// crashServer is an NBD server of one export that can crash and come back
// on the same address.
type crashServer struct {
	t    *testing.T
	addr string
	b    *volatileBackend

	mu  sync.Mutex
	srv *nbd.Server
}

const testExport = "vol.secret-token"

func newCrashServer(t *testing.T, size int) *crashServer {
	s := &crashServer{t: t, b: newVolatile(size)}
	s.start("127.0.0.1:0")
	t.Cleanup(s.stop)
	return s
}

func (s *crashServer) start(addr string) {
	s.t.Helper()
	var l net.Listener
	var err error
	for range 100 { // the old socket may linger for a moment
		if l, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatal(err)
	}
	var m nbd.ExportMap
	m.Add(&nbd.Export{Name: testExport, Backend: s.b})
	srv := &nbd.Server{Exports: &m}
	go srv.Serve(l)
	s.mu.Lock()
	s.addr, s.srv = l.Addr().String(), srv
	s.mu.Unlock()
}

func (s *crashServer) stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// crash stops the server, loses the unflushed writes and, when back is
// set, starts it again.
func (s *crashServer) crash(back bool) {
	s.stop()
	s.b.crash()
	if back {
		s.start(s.addr)
	}
}

func testSession(t *testing.T, s *crashServer, cfg SessionConfig) *Session {
	t.Helper()
	sess, err := NewSession(ctxT(t), Dialer(s.addr, testExport), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sess.Close(context.Background()) })
	return sess
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func fill(n int, v byte) []byte { return bytes.Repeat([]byte{v}, n) }

// An acknowledged write the crashed server lost is replayed on the new
// connection, so the flush after the reconnect covers it.
func TestSessionReplaysUnflushedWritesAfterCrash(t *testing.T) {
	s := newCrashServer(t, 1<<20)
	sess := testSession(t, s, SessionConfig{})
	ctx := ctxT(t)
	must(t, sess.WriteAt(ctx, fill(4096, 1), 0))
	must(t, sess.Flush(ctx))
	must(t, sess.WriteAt(ctx, fill(4096, 2), 4096))
	must(t, sess.Zero(ctx, 0, 512, true))
	s.crash(true)
	must(t, sess.WriteAt(ctx, fill(4096, 3), 8192)) // finds the connection dead, reconnects
	must(t, sess.Flush(ctx))
	want := append(append(append(fill(512, 0), fill(4096-512, 1)...), fill(4096, 2)...), fill(4096, 3)...)
	if got := s.b.durableBytes(0, 3*4096); !bytes.Equal(got, want) {
		t.Fatalf("after crash, reconnect and flush the server holds %v..., want %v...", got[:8], want[:8])
	}
	if st := sess.Status(); st.State != StateUp || st.Reconnects != 1 || st.Unflushed != 0 {
		t.Fatalf("status = %+v", st)
	}
}

// Requests wait for the server while it is away, then go through.
func TestSessionWaitsForServer(t *testing.T) {
	s := newCrashServer(t, 1<<20)
	sess := testSession(t, s, SessionConfig{})
	ctx := ctxT(t)
	s.crash(false)
	go func() {
		time.Sleep(300 * time.Millisecond)
		s.start(s.addr)
	}()
	p := make([]byte, 4096)
	start := time.Now()
	must(t, sess.ReadAt(ctx, p, 0))
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("read returned after %v, before the server was back", d)
	}
}

// Past the reconnect timeout requests fail with ErrDown (EIO to the
// kernel) instead of hanging; once the server is back they work again.
func TestSessionDownFailsThenRecovers(t *testing.T) {
	s := newCrashServer(t, 1<<20)
	sess := testSession(t, s, SessionConfig{ReconnectTimeout: 200 * time.Millisecond})
	ctx := ctxT(t)
	must(t, sess.WriteAt(ctx, fill(4096, 5), 0))
	s.crash(false)
	start := time.Now()
	err := sess.Flush(ctx)
	if !errors.Is(err, ErrDown) || errnoOf(err) != 5 {
		t.Fatalf("flush with the server gone = %v, want ErrDown (EIO)", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("failing took %v", d)
	}
	if err := sess.ReadAt(ctx, make([]byte, 512), 0); !errors.Is(err, ErrDown) {
		t.Fatalf("read while down = %v", err)
	}
	s.start(s.addr)
	eventually(t, 15*time.Second, "the session to come back", func() bool { return sess.Status().State == StateUp })
	must(t, sess.Flush(ctx))
	if got := s.b.durableBytes(0, 4096); !bytes.Equal(got, fill(4096, 5)) {
		t.Fatal("the write acknowledged before the crash was not replayed")
	}
}

// A server that stops answering without closing the connection is given
// up on after the request timeout, and the request goes to a new one.
func TestSessionRequestTimeout(t *testing.T) {
	s := newCrashServer(t, 1<<20)
	p := newFreezeProxy(t, s.addr)
	sess, err := NewSession(ctxT(t), Dialer(p.addr(), testExport), SessionConfig{RequestTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close(context.Background())
	p.freeze()
	start := time.Now()
	must(t, sess.ReadAt(ctxT(t), make([]byte, 4096), 0))
	if d := time.Since(start); d < 250*time.Millisecond || d > 10*time.Second {
		t.Fatalf("read through a frozen connection took %v", d)
	}
	if st := sess.Status(); st.Reconnects != 1 {
		t.Fatalf("status = %+v, want one reconnect", st)
	}
}

// Past the replay limit the session flushes by itself, so the log stays
// bounded.
func TestSessionReplayLimit(t *testing.T) {
	s := newCrashServer(t, 4<<20)
	sess := testSession(t, s, SessionConfig{ReplayLimit: 256 << 10})
	ctx := ctxT(t)
	for i := range 32 {
		must(t, sess.WriteAt(ctx, fill(64<<10, byte(i)), int64(i)*64<<10))
	}
	eventually(t, 5*time.Second, "a flush", func() bool { return s.b.flushes.Load() > 0 })
	if u := sess.Status().Unflushed; u > 2*(256<<10)+64<<10+32*entryOverhead {
		t.Fatalf("%d bytes held for replay, limit 256 KiB", u)
	}
}

// Many writers while the server crashes again and again: after the last
// flush the server holds every last write.
func TestSessionConcurrentCrashes(t *testing.T) {
	const writers, rounds, block = 8, 40, 4096
	s := newCrashServer(t, writers*block)
	sess := testSession(t, s, SessionConfig{})
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for r := range rounds {
				if err := sess.WriteAt(ctx, fill(block, byte(r+1)), int64(w*block)); err != nil {
					errs <- fmt.Errorf("writer %d round %d: %w", w, r, err)
					return
				}
				if r%7 == 0 {
					if err := sess.Flush(ctx); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	for range 5 {
		time.Sleep(10 * time.Millisecond)
		s.crash(true)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	must(t, sess.Flush(ctx))
	for w := range writers {
		if got := s.b.durableBytes(w*block, block); !bytes.Equal(got, fill(block, rounds)) {
			t.Fatalf("writer %d: server holds %d, want %d", w, got[0], rounds)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("after %v: still waiting for %s", d, what)
}

// freezeProxy forwards TCP connections to a server; freeze makes the
// connections open at that moment stop forwarding without closing, as a
// partition would. Connections made later are forwarded.
type freezeProxy struct {
	l      net.Listener
	target string
	epoch  atomic.Int64
	done   chan struct{}
}

func newFreezeProxy(t *testing.T, target string) *freezeProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{l: l, target: target, done: make(chan struct{})}
	t.Cleanup(func() { l.Close(); close(p.done) })
	go p.serve()
	return p
}

func (p *freezeProxy) addr() string { return p.l.Addr().String() }

func (p *freezeProxy) freeze() { p.epoch.Add(1) }

func (p *freezeProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		go p.pipe(c, p.epoch.Load())
	}
}

func (p *freezeProxy) pipe(c net.Conn, epoch int64) {
	defer c.Close()
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer up.Close()
	frozen := func() bool { return p.epoch.Load() != epoch }
	go p.copyUntil(up, c, frozen)
	p.copyUntil(c, up, frozen)
}

// copyUntil copies src to dst until an error; once frozen it stops
// forwarding and holds both ends open until the test ends.
func (p *freezeProxy) copyUntil(dst, src net.Conn, frozen func() bool) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if frozen() {
			<-p.done
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}
