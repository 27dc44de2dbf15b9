package nbd

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// memBackend is an in-memory Backend.
type memBackend struct {
	mu      sync.RWMutex
	data    []byte
	flushes atomic.Int64
	delay   atomic.Int64 // nanoseconds added to every write, to keep requests in flight
}

func newMem(size int) *memBackend { return &memBackend{data: make([]byte, size)} }

func (m *memBackend) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return copy(p, m.data[off:]), nil
}

func (m *memBackend) WriteAt(p []byte, off int64) (int, error) {
	time.Sleep(time.Duration(m.delay.Load()))
	m.mu.Lock()
	defer m.mu.Unlock()
	if off+int64(len(p)) > int64(len(m.data)) {
		return 0, syscall.ENOSPC
	}
	return copy(m.data[off:], p), nil
}

func (m *memBackend) Size() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return int64(len(m.data))
}

func (m *memBackend) Flush() error { m.flushes.Add(1); return nil }

// grow adds n zero bytes at the end, as a resized image does.
func (m *memBackend) grow(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data = append(m.data, make([]byte, n)...)
}

func (m *memBackend) Discard(off, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.data[off : off+n])
	return nil
}

func (m *memBackend) bytes(off, n int) []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return bytes.Clone(m.data[off : off+n])
}

// fileBackend serves a file (for benchmarks); Flush is fdatasync.
type fileBackend struct {
	f    *os.File
	size int64
}

func (b *fileBackend) ReadAt(p []byte, off int64) (int, error)  { return b.f.ReadAt(p, off) }
func (b *fileBackend) WriteAt(p []byte, off int64) (int, error) { return b.f.WriteAt(p, off) }
func (b *fileBackend) Size() int64                              { return b.size }
func (b *fileBackend) Flush() error                             { return syscall.Fdatasync(int(b.f.Fd())) }
func (b *fileBackend) Discard(off, n int64) error {
	const punchHole, keepSize = 0x02, 0x01
	return syscall.Fallocate(int(b.f.Fd()), punchHole|keepSize, off, n)
}

// newFile makes a sparse file of size bytes.
func newFile(t testing.TB, size int64) string {
	path := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return path
}

// needTool returns the path of an external program, skipping the test when
// it is missing unless CI=true, where that is a failure.
func needTool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI=true: %v", name, err)
		}
		t.Skipf("%s not installed (apt-get install qemu-utils libnbd-bin); skipping", name)
	}
	return path
}

// serve starts srv on network ("tcp" or "unix") and returns the address;
// the server is shut down when the test ends.
func serve(t testing.TB, srv *Server, network string) string {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		dir, err := os.MkdirTemp("", "nbd") // short path: sun_path is 108 bytes
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
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		<-done
	})
	return l.Addr().String()
}

// memServer serves one in-memory export "disk" of size bytes.
func memServer(t testing.TB, size int, network string) (*Server, *memBackend, string) {
	t.Helper()
	mem := newMem(size)
	var exports ExportMap
	exports.Add(&Export{Name: "disk", Description: "test disk", Backend: mem})
	srv := &Server{Exports: &exports}
	return srv, mem, serve(t, srv, network)
}

func dial(t testing.TB, network, addr, name string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, network, addr, ClientOptions{ExportName: name})
	if err != nil {
		t.Fatalf("Dial %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
