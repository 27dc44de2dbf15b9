package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// connCount is the number of connections the server holds, in the
// handshake or in transmission.
func (s *Server) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// waitConns waits until the server holds at most n connections; false when
// it still holds more at the deadline.
func waitConns(srv *Server, n int, deadline time.Time) bool {
	for srv.connCount() > n {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// dialMute connects and sends b without ever reading: the greeting and
// every reply stay unread. The connection is closed when the test ends.
func dialMute(t *testing.T, addr string, b []byte) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.(*net.TCPConn).SetReadBuffer(16 << 10) // the unread replies pile up in the server
	_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(b); err != nil {
		t.Fatal(err)
	}
	return conn
}

// clientFlags is what a client sends after the greeting.
func clientFlags() []byte {
	return binary.BigEndian.AppendUint32(nil, uint32(FlagCFixedNewstyle|FlagCNoZeroes))
}

// TestHandshakeDeadlineClosesNonReaders: clients that send options with
// large replies (NBD_OPT_LIST of many exports with long descriptions) and
// never read them are all closed within HandshakeTimeout. With a read
// deadline only, the server sat in Write for ever on each of them.
func TestHandshakeDeadlineClosesNonReaders(t *testing.T) {
	var exports ExportMap
	desc := strings.Repeat("d", MaxStringLen-100)
	for i := range 64 {
		exports.Add(&Export{Name: "disk" + strconv.Itoa(i), Description: desc, Backend: newMem(4096)})
	}
	const timeout = 1500 * time.Millisecond
	srv := &Server{Exports: &exports, ListExports: true, HandshakeTimeout: timeout}
	addr := serve(t, srv, "tcp")
	// 32 lists of 64 entries of 4 KB: 8 MB of replies per client, more than
	// the socket buffers of both ends hold.
	b := clientFlags()
	for range 32 {
		b = append(b, option{Opt: OptList}.encode()...)
	}
	const clients = 50
	start := time.Now()
	for range clients {
		dialMute(t, addr, b)
	}
	// Wait until the server blocks on them: all accepted, none closed yet.
	for srv.connCount() < clients && time.Since(start) < timeout/2 {
		time.Sleep(10 * time.Millisecond)
	}
	if n := srv.connCount(); n != clients {
		t.Logf("%d of %d connections open %s after the first dial", n, clients, time.Since(start))
	}
	if !waitConns(srv, 0, start.Add(timeout+2*time.Second)) {
		t.Fatalf("%d of %d non-reading connections still open %s after the first dial (handshake timeout %s)",
			srv.connCount(), clients, time.Since(start).Round(time.Millisecond), timeout)
	}
	t.Logf("all %d closed after %s", clients, time.Since(start).Round(time.Millisecond))
	readWorksExport(t, addr, "disk0")
}

// readWorksExport checks that a new client can still use the export.
func readWorksExport(t *testing.T, addr, name string) {
	t.Helper()
	c := dial(t, "tcp", addr, name)
	if err := c.Read(testCtx(t), make([]byte, 512), 0); err != nil {
		t.Fatalf("server unusable afterwards: %v", err)
	}
}

// vmRSS is the resident set of this process in bytes (/proc/self/status).
func vmRSS(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

func heapInuse() int64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// TestHandshakeFloodMemoryBounded floods the server with clients that each
// send 60 KiB of a 64 KiB option and stop: each such connection holds
// about 128 KiB of this process (its 64 KiB read buffer, filled, and the
// option's data) until the handshake deadline. 400 of them held ~50 MiB
// (more under -race); with MaxHandshakes 8 only 8 are accepted at once and
// the others wait in the kernel's listen queue, so the resident set grows
// by a few MiB at most. The bound, 24 MiB, is under half of what the flood
// holds without the cap.
func TestHandshakeFloodMemoryBounded(t *testing.T) {
	const maxHandshakes, clients = 8, 400
	srv := &Server{Exports: &ExportMap{}, HandshakeTimeout: 20 * time.Second, MaxHandshakes: maxHandshakes}
	addr := serve(t, srv, "tcp")
	b := clientFlags()
	b = append(b, option{Opt: OptInfo, Data: make([]byte, maxOptionLen)}.encode()...)
	b = b[:len(b)-4<<10] // the option is never complete
	// Warm up: the runtime, the listener and the test's own allocations.
	dialMute(t, addr, b).Close()
	waitConns(srv, 0, time.Now().Add(5*time.Second))
	runtime.GC()
	debug.FreeOSMemory()
	rss0, heap0 := vmRSS(t), heapInuse()
	conns := make([]net.Conn, 0, clients)
	for range clients {
		conns = append(conns, dialMute(t, addr, b))
	}
	// Let the server take in what it will: its connection count settles.
	last, stable := -1, time.Now()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && time.Since(stable) < 500*time.Millisecond; {
		if n := srv.connCount(); n != last {
			last, stable = n, time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	rss1, heap1 := vmRSS(t), heapInuse()
	const mib = 1 << 20
	t.Logf("%d clients: server holds %d connections; VmRSS %.1f -> %.1f MiB (+%.1f), HeapInuse %.1f -> %.1f MiB (+%.1f)",
		clients, last, float64(rss0)/mib, float64(rss1)/mib, float64(rss1-rss0)/mib,
		float64(heap0)/mib, float64(heap1)/mib, float64(heap1-heap0)/mib)
	if last > maxHandshakes {
		t.Errorf("%d connections in the handshake at once, want at most MaxHandshakes (%d)", last, maxHandshakes)
	}
	if grew := rss1 - rss0; grew > 24*mib {
		t.Errorf("the resident set grew by %.1f MiB under a flood of %d stalled handshakes, want at most 24 MiB", float64(grew)/mib, clients)
	}
	for _, c := range conns {
		c.Close()
	}
	if !waitConns(srv, 0, time.Now().Add(10*time.Second)) {
		t.Fatalf("%d connections left after the clients closed", srv.connCount())
	}
}

// TestHandshakeLimit: with MaxHandshakes connections in the handshake, the
// next client gets no greeting until one of them ends; then it is served.
func TestHandshakeLimit(t *testing.T) {
	mem := newMem(1 << 20)
	var exports ExportMap
	exports.Add(&Export{Name: "disk", Backend: mem})
	srv := &Server{Exports: &exports, MaxHandshakes: 2, HandshakeTimeout: 20 * time.Second}
	addr := serve(t, srv, "tcp")
	first := dialRaw(t, addr)
	first.greet(FlagCFixedNewstyle)
	second := dialRaw(t, addr)
	second.greet(FlagCFixedNewstyle)

	third, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	_ = third.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	g := make([]byte, greetingLen)
	if _, err := io.ReadFull(third, g); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a third connection got its greeting with 2 in the handshake and MaxHandshakes 2 (err %v)", err)
	}
	first.conn.Close()
	_ = third.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(third, g); err != nil {
		t.Fatalf("no greeting after a handshake slot freed: %v", err)
	}
	// A finished handshake frees its slot too.
	second.goExport("disk")
	readWorks(t, addr)
}

// TestExportConnLimit: one connection more than MaxExportConns is refused
// in NBD_OPT_GO with NBD_REP_ERR_POLICY (and closed after
// NBD_OPT_EXPORT_NAME); once one ends, a new one is served.
func TestExportConnLimit(t *testing.T) {
	var exports ExportMap
	exports.Add(&Export{Name: "disk", Backend: newMem(1 << 20)})
	exports.Add(&Export{Name: "other", Backend: newMem(1 << 20)})
	srv := &Server{Exports: &exports, MaxExportConns: 2}
	addr := serve(t, srv, "tcp")
	c1 := dial(t, "tcp", addr, "disk")
	dial(t, "tcp", addr, "disk")

	r := dialRaw(t, addr)
	r.greet(FlagCFixedNewstyle | FlagCNoZeroes)
	reps := r.option(OptGo, infoRequest{Name: "disk"}.encode())
	if last := reps[len(reps)-1]; last.Type != RepErrPolicy {
		t.Fatalf("third NBD_OPT_GO answered %s, want %s", last.Type, RepErrPolicy)
	}
	// The connection is still in the handshake and may pick another export.
	r.goExport("other")

	old := dialRaw(t, addr)
	old.greet(FlagCFixedNewstyle | FlagCNoZeroes)
	old.write(option{Opt: OptExportName, Data: []byte("disk")}.encode())
	if !old.closed() {
		t.Fatal("NBD_OPT_EXPORT_NAME past MaxExportConns was not closed")
	}

	c1.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := Dial(testCtx(t), "tcp", addr, ClientOptions{ExportName: "disk"})
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection to the export after one of %d ended: %v", 2, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestExportBufferBudgetShared: the connections of one export share one
// buffer budget (the export's), not one each.
func TestExportBufferBudgetShared(t *testing.T) {
	var exports ExportMap
	e := &Export{Name: "disk", Backend: newMem(1 << 20)}
	exports.Add(e)
	srv := &Server{Exports: &exports, MaxExportBuffered: 40 << 20}
	addr := serve(t, srv, "unix")
	dial(t, "unix", addr, "disk")
	dial(t, "unix", addr, "disk")
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.conns) != 2 {
		t.Fatalf("%d connections attached, want 2", len(e.conns))
	}
	for c := range e.conns {
		if c.budget != e.budget || e.budget.free != 40<<20 {
			t.Fatalf("connection budget %p (free %d), export budget %p", c.budget, c.budget.free, e.budget)
		}
	}
}

// TestReplyTimeout: a client that sends READs and never reads the replies
// loses the connection after ReplyTimeout instead of pinning its workers
// and their buffers.
func TestReplyTimeout(t *testing.T) {
	var exports ExportMap
	exports.Add(&Export{Name: "disk", Backend: newMem(8 << 20)})
	srv := &Server{Exports: &exports, ReplyTimeout: 500 * time.Millisecond}
	addr := serve(t, srv, "tcp")
	r := dialRaw(t, addr)
	_ = r.conn.(*net.TCPConn).SetReadBuffer(16 << 10)
	r.greet(FlagCFixedNewstyle | FlagCNoZeroes)
	r.goExport("disk")
	w := bufio.NewWriter(r.conn)
	for i := range 64 { // 64 MiB of replies
		b := make([]byte, requestLen)
		request{Type: CmdRead, Handle: uint64(i), Offset: 0, Length: 1 << 20}.encode(b)
		w.Write(b)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if !waitConns(srv, 0, time.Now().Add(5*time.Second)) {
		t.Fatal("a client not reading its replies still holds the connection 5 s later (ReplyTimeout 500 ms)")
	}
}

// logLines records every line the server logs.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Debugf(format string, args ...any) { l.add("DEBUG "+format, args...) }
func (l *logLines) Warnf(format string, args ...any)  { l.add("WARN "+format, args...) }
func (l *logLines) add(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// failingExports fails every Open with an error that quotes the name, as a
// careless Exports might.
type failingExports struct{}

func (failingExports) Open(_ context.Context, name string) (*Export, error) {
	return nil, fmt.Errorf("opening the image of %s: input/output error", name)
}

func (failingExports) List(context.Context) ([]ExportInfo, error) { return nil, nil }

// TestExportNameNotLogged: export names are "<volume>.<token>" with the
// token a credential; neither the server's log lines nor the client's
// errors carry the token, whatever path refuses the name.
func TestExportNameNotLogged(t *testing.T) {
	const token = "s3cr3tT0k3nXYZ"
	log := &logLines{}
	srv := &Server{Exports: failingExports{}, Logger: log}
	addr := serve(t, srv, "tcp")

	r := dialRaw(t, addr)
	r.greet(FlagCFixedNewstyle | FlagCNoZeroes)
	if reps := r.option(OptGo, infoRequest{Name: "vol1." + token}.encode()); reps[len(reps)-1].Type != RepErrUnknown {
		t.Fatalf("GO answered %s", reps[len(reps)-1].Type)
	}
	r.write(option{Opt: OptExportName, Data: []byte("vol2." + token)}.encode())
	if !r.closed() {
		t.Fatal("refused NBD_OPT_EXPORT_NAME not closed")
	}
	// The client's own error when the server drops NBD_OPT_EXPORT_NAME.
	client, server := net.Pipe()
	defer client.Close()
	go func() {
		defer server.Close()
		server.Write(greeting{Flags: FlagFixedNewstyle | FlagNoZeroes}.encode())
		br := bufio.NewReader(server)
		io.ReadFull(br, make([]byte, 4))
		o, _ := readOption(br)
		server.Write(optionReply{Opt: o.Opt, Type: RepErrUnsup}.encode())
		readOption(br)
	}()
	_, _, err := Negotiate(testCtx(t), client, ClientOptions{ExportName: "vol3." + token})
	if err == nil || strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "vol3.") {
		t.Errorf("client error %q: want one naming the volume (vol3.) but not the token", err)
	}

	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(log.String(), "vol2.") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	out := log.String()
	if strings.Contains(out, token) {
		t.Fatalf("the token is in the log:\n%s", out)
	}
	for _, want := range []string{"vol1.<redacted ", "vol2.<redacted "} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the log:\n%s", want, out)
		}
	}
}
