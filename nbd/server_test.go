package nbd

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// raw is a hand-driven client connection for feeding the server bad input.
type raw struct {
	t    *testing.T
	conn net.Conn
}

func dialRaw(t *testing.T, addr string) *raw {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { conn.Close() })
	return &raw{t, conn}
}

func (r *raw) write(b []byte) {
	r.t.Helper()
	if _, err := r.conn.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

// greet reads the greeting and sends client flags.
func (r *raw) greet(flags ClientFlags) {
	r.t.Helper()
	b := make([]byte, greetingLen)
	if _, err := io.ReadFull(r.conn, b); err != nil {
		r.t.Fatal(err)
	}
	r.write(binary.BigEndian.AppendUint32(nil, uint32(flags)))
}

// option sends an option and returns the replies up to the final one.
func (r *raw) option(o Opt, data []byte) []optionReply {
	r.t.Helper()
	r.write(option{Opt: o, Data: data}.encode())
	var out []optionReply
	for {
		rep, err := readOptionReply(r.conn)
		if err != nil {
			r.t.Fatalf("reply to %s: %v", o, err)
		}
		out = append(out, rep)
		if rep.Type == RepAck || rep.Type.IsErr() {
			return out
		}
	}
}

func (r *raw) goExport(name string) {
	r.t.Helper()
	reps := r.option(OptGo, infoRequest{Name: name}.encode())
	if last := reps[len(reps)-1]; last.Type != RepAck {
		r.t.Fatalf("GO: %s", last.Type)
	}
}

// request sends a request header and optional payload.
func (r *raw) request(q request, payload []byte) {
	r.t.Helper()
	b := make([]byte, requestLen)
	q.encode(b)
	r.write(append(b, payload...))
}

// reply reads a simple reply and n bytes of data if it succeeded.
func (r *raw) reply(n int) (simpleReply, []byte) {
	r.t.Helper()
	b := make([]byte, simpleReplyLen)
	if _, err := io.ReadFull(r.conn, b); err != nil {
		r.t.Fatalf("reading reply: %v", err)
	}
	var rep simpleReply
	if err := rep.decode(b); err != nil {
		r.t.Fatal(err)
	}
	if rep.Errno != 0 {
		return rep, nil
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r.conn, data); err != nil {
		r.t.Fatal(err)
	}
	return rep, data
}

// closed reports whether the server closed the connection.
func (r *raw) closed() bool {
	_ = r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := r.conn.Read(make([]byte, 1))
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err)
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

// readWorks checks that a new client can still use the server.
func readWorks(t *testing.T, addr string) {
	t.Helper()
	c := dial(t, "tcp", addr, "disk")
	if err := c.Read(testCtx(t), make([]byte, 512), 0); err != nil {
		t.Fatalf("server unusable afterwards: %v", err)
	}
}

func TestBadHandshake(t *testing.T) {
	_, _, addr := memServer(t, 1<<20, "tcp")
	cases := map[string]func(r *raw){
		"bad option magic": func(r *raw) {
			r.greet(FlagCFixedNewstyle)
			r.write(bytes.Repeat([]byte{0x42}, 16))
		},
		"unknown client flags": func(r *raw) { r.greet(FlagCFixedNewstyle | 1<<7) },
		"truncated flags": func(r *raw) {
			b := make([]byte, greetingLen)
			_, _ = io.ReadFull(r.conn, b)
			r.write([]byte{0, 0})
			r.conn.(*net.TCPConn).CloseWrite()
		},
		"truncated option": func(r *raw) {
			r.greet(FlagCFixedNewstyle)
			r.write(option{Opt: OptGo, Data: make([]byte, 100)}.encode()[:40])
			r.conn.(*net.TCPConn).CloseWrite()
		},
		"absurd option length": func(r *raw) {
			r.greet(FlagCFixedNewstyle)
			b := option{Opt: OptGo}.encode()
			binary.BigEndian.PutUint32(b[12:], 1<<31)
			r.write(b)
		},
		"export name unknown": func(r *raw) {
			r.greet(FlagCFixedNewstyle)
			r.write(option{Opt: OptExportName, Data: []byte("nope")}.encode())
		},
		"abort": func(r *raw) {
			r.greet(FlagCFixedNewstyle)
			if reps := r.option(OptAbort, nil); reps[0].Type != RepAck {
				t.Errorf("ABORT answered %s", reps[0].Type)
			}
		},
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			r := dialRaw(t, addr)
			f(r)
			if !r.closed() {
				t.Fatal("connection not closed")
			}
			readWorks(t, addr)
		})
	}
}

func TestOptionsRecoverable(t *testing.T) {
	_, _, addr := memServer(t, 1<<20, "tcp")
	r := dialRaw(t, addr)
	r.greet(FlagCFixedNewstyle | FlagCNoZeroes)
	for _, tc := range []struct {
		opt  Opt
		data []byte
		want Rep
	}{
		{OptStructuredReply, nil, RepErrUnsup},
		{Opt(1000), []byte("whatever"), RepErrUnsup},
		{OptStartTLS, nil, RepErrPolicy},
		{OptList, []byte{1}, RepErrInvalid},
		{OptGo, []byte{0, 0, 0, 9, 'a'}, RepErrInvalid},
		{OptGo, infoRequest{Name: "nope"}.encode(), RepErrUnknown},
		{OptInfo, infoRequest{Name: "disk", Infos: []Info{InfoName, InfoDescription, 99}}.encode(), RepAck},
		{Opt(77), make([]byte, maxOptionLen+1), RepErrTooBig},
	} {
		reps := r.option(tc.opt, tc.data)
		if got := reps[len(reps)-1].Type; got != tc.want {
			t.Fatalf("%s: %s, want %s", tc.opt, got, tc.want)
		}
		if tc.opt == OptInfo {
			info := ExportInfo{}
			for _, rep := range reps[:len(reps)-1] {
				if err := decodeInfo(rep.Data, &info); err != nil {
					t.Fatal(err)
				}
			}
			if info.Size != 1<<20 || info.Name != "disk" || info.Description != "test disk" || info.MaxPayloadSize != MaxPayloadSize {
				t.Fatalf("INFO: %+v", info)
			}
		}
	}
	r.goExport("disk")
	r.request(request{Type: CmdRead, Handle: 7, Length: 512}, nil)
	if rep, _ := r.reply(512); rep.Errno != 0 || rep.Handle != 7 {
		t.Fatalf("read after options: %+v", rep)
	}
}

func TestExportName(t *testing.T) {
	_, mem, addr := memServer(t, 1<<20, "tcp")
	copy(mem.data, "hello")
	for _, flags := range []ClientFlags{0, FlagCFixedNewstyle, FlagCFixedNewstyle | FlagCNoZeroes} {
		r := dialRaw(t, addr)
		r.greet(flags)
		r.write(option{Opt: OptExportName, Data: []byte("disk")}.encode())
		n := 134
		if flags&FlagCNoZeroes != 0 {
			n = 10
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r.conn, b); err != nil {
			t.Fatal(err)
		}
		if binary.BigEndian.Uint64(b) != 1<<20 {
			t.Fatalf("size %d", binary.BigEndian.Uint64(b))
		}
		r.request(request{Type: CmdRead, Handle: 1, Length: 5}, nil)
		if _, data := r.reply(5); string(data) != "hello" {
			t.Fatalf("read %q", data)
		}
	}
}

func TestBadRequests(t *testing.T) {
	const size = 1 << 20
	_, mem, addr := memServer(t, size, "tcp")
	r := dialRaw(t, addr)
	r.greet(FlagCFixedNewstyle)
	r.goExport("disk")
	for _, tc := range []struct {
		name    string
		q       request
		payload []byte
		want    Errno
	}{
		{"read past end", request{Type: CmdRead, Offset: size - 512, Length: 1024}, nil, EINVAL},
		{"read offset overflow", request{Type: CmdRead, Offset: 1<<64 - 512, Length: 1024}, nil, EINVAL},
		{"write past end", request{Type: CmdWrite, Offset: size, Length: 512}, make([]byte, 512), ENOSPC},
		{"trim past end", request{Type: CmdTrim, Offset: size, Length: 512}, nil, EINVAL},
		{"zeroes past end", request{Type: CmdWriteZeroes, Offset: size, Length: 1}, nil, ENOSPC},
		{"read over max payload", request{Type: CmdRead, Length: MaxPayloadSize + 1}, nil, EINVAL},
		{"write over max payload", request{Type: CmdWrite, Length: MaxPayloadSize + 4096}, make([]byte, MaxPayloadSize+4096), EINVAL},
		{"unknown command", request{Type: CmdBlockStatus, Length: 512}, nil, EINVAL},
		{"unknown flag", request{Type: CmdRead, Flags: 1 << 12, Length: 512}, nil, EINVAL},
		{"NO_HOLE on read", request{Type: CmdRead, Flags: CmdFlagNoHole, Length: 512}, nil, EINVAL},
		{"DF not negotiated", request{Type: CmdRead, Flags: CmdFlagDF, Length: 512}, nil, EINVAL},
		{"FAST_ZERO not advertised", request{Type: CmdWriteZeroes, Flags: CmdFlagFastZero, Length: 512}, nil, EINVAL},
	} {
		tc.q.Handle = 42
		r.request(tc.q, tc.payload)
		rep, _ := r.reply(0)
		if rep.Errno != tc.want || rep.Handle != 42 {
			t.Fatalf("%s: %+v, want %s", tc.name, rep, tc.want)
		}
		// The stream is still in sync: the next request works.
		r.request(request{Type: CmdWrite, Handle: 43, Offset: 4096, Length: 3}, []byte("abc"))
		if rep, _ := r.reply(0); rep.Errno != 0 || rep.Handle != 43 {
			t.Fatalf("after %s: %+v", tc.name, rep)
		}
	}
	if string(mem.bytes(4096, 3)) != "abc" {
		t.Fatal("write after bad requests lost")
	}
	t.Run("absurd write closes", func(t *testing.T) {
		r.request(request{Type: CmdWrite, Handle: 1, Length: 1 << 30}, nil)
		if !r.closed() {
			t.Fatal("connection not closed")
		}
	})
	t.Run("bad request magic closes", func(t *testing.T) {
		r := dialRaw(t, addr)
		r.greet(FlagCFixedNewstyle)
		r.goExport("disk")
		r.write(bytes.Repeat([]byte{0xff}, requestLen))
		if !r.closed() {
			t.Fatal("connection not closed")
		}
	})
	readWorks(t, addr)
}

func TestDiscWaitsForRequests(t *testing.T) {
	_, mem, addr := memServer(t, 1<<20, "tcp")
	mem.delay.Store(int64(50 * time.Millisecond))
	r := dialRaw(t, addr)
	r.greet(FlagCFixedNewstyle)
	r.goExport("disk")
	r.request(request{Type: CmdWrite, Handle: 1, Length: 2}, []byte("hi"))
	r.request(request{Type: CmdDisc, Handle: 2}, nil)
	if rep, _ := r.reply(0); rep.Errno != 0 || rep.Handle != 1 {
		t.Fatalf("write before DISC: %+v", rep)
	}
	if !r.closed() || string(mem.bytes(0, 2)) != "hi" {
		t.Fatal("DISC: connection not closed or write lost")
	}
}

// errBackend fails every operation with err.
type errBackend struct {
	*memBackend
	err error
}

func (b errBackend) WriteAt([]byte, int64) (int, error) { return 0, b.err }
func (b errBackend) ReadAt([]byte, int64) (int, error)  { return 0, b.err }
func (b errBackend) Flush() error                       { return b.err }

func TestBackendErrors(t *testing.T) {
	var exports ExportMap
	srv := &Server{Exports: &exports}
	addr := serve(t, srv, "unix")
	for _, tc := range []struct {
		err  error
		want Errno
	}{
		{io.ErrUnexpectedEOF, EIO},
		{ErrNoSpace, ENOSPC},
		{&net.OpError{Err: errnoErr(28)}, ENOSPC},
		{EOVERFLOW, EOVERFLOW},
	} {
		exports.Add(&Export{Name: "e", Backend: errBackend{newMem(1 << 20), tc.err}})
		c := dial(t, "unix", addr, "e")
		ctx := testCtx(t)
		for _, err := range []error{c.Read(ctx, make([]byte, 512), 0), c.Write(ctx, make([]byte, 512), 0, 0), c.Flush(ctx)} {
			if !errors.Is(err, tc.want) {
				t.Errorf("backend error %v: got %v, want %s", tc.err, err, tc.want)
			}
		}
	}
}

func TestSeveralClientsOneExport(t *testing.T) {
	srv, mem, addr := memServer(t, 4<<20, "unix")
	var clients []*Client
	for range 4 {
		clients = append(clients, dial(t, "unix", addr, "disk"))
	}
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			for j := range 16 {
				off := int64((i*16 + j) * 4096)
				if err := c.Write(testCtx(t), pattern(4096, byte(i+j)), off, 0); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	// Every write was answered, so a flush on any connection covers them.
	if err := clients[0].Flush(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		for j := range 16 {
			got := make([]byte, 4096)
			if err := clients[(i+1)%4].Read(testCtx(t), got, int64((i*16+j)*4096)); err != nil || !bytes.Equal(got, pattern(4096, byte(i+j))) {
				t.Fatalf("block %d/%d: %v", i, j, err)
			}
		}
	}
	st := srv.Stats()
	if st.Connections != 4 || st.Commands[CmdWrite].Requests != 64 || st.Commands[CmdWrite].Bytes != 64*4096 ||
		st.Commands[CmdFlush].Requests != 1 || mem.flushes.Load() != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRevoke(t *testing.T) {
	mem := newMem(1 << 20)
	var exports ExportMap
	exp := &Export{Name: "disk", Backend: mem}
	exports.Add(exp)
	addr := serve(t, &Server{Exports: &exports}, "tcp")
	c := dial(t, "tcp", addr, "disk")
	mem.delay.Store(int64(100 * time.Millisecond))
	writeDone := make(chan error, 1)
	go func() { writeDone <- c.Write(testCtx(t), []byte("old"), 0, 0) }()
	time.Sleep(20 * time.Millisecond) // the write is in flight
	exp.Revoke()
	// Revoke returned: the in-flight write has returned from the backend.
	if got := mem.bytes(0, 3); string(got) != "old" {
		t.Fatalf("in-flight write not finished when Revoke returned: %q", got)
	}
	<-writeDone // success or a lost connection, both fine
	if err := c.Read(testCtx(t), make([]byte, 512), 0); err == nil {
		t.Fatal("revoked connection still serves")
	}
	if _, err := Dial(testCtx(t), "tcp", addr, ClientOptions{ExportName: "disk"}); err == nil {
		t.Fatal("revoked export still served")
	}
}

func TestShutdownFinishesRequests(t *testing.T) {
	mem := newMem(1 << 20)
	mem.delay.Store(int64(100 * time.Millisecond))
	var exports ExportMap
	exports.Add(&Export{Name: "disk", Backend: mem})
	srv := &Server{Exports: &exports}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	c := dial(t, "tcp", l.Addr().String(), "disk")
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = c.Write(testCtx(t), pattern(4096, byte(i)), int64(i)*4096, 0) })
	}
	time.Sleep(30 * time.Millisecond)
	if err := srv.Shutdown(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("write %d in flight during Shutdown: %v", i, err)
		}
		if !bytes.Equal(mem.bytes(i*4096, 4096), pattern(4096, byte(i))) {
			t.Errorf("write %d lost", i)
		}
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	if _, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
}

func TestShutdownDeadline(t *testing.T) {
	mem := newMem(1 << 20)
	mem.delay.Store(int64(time.Second))
	var exports ExportMap
	exports.Add(&Export{Name: "disk", Backend: mem})
	srv := &Server{Exports: &exports}
	l, _ := net.Listen("unix", t.TempDir()+"/s")
	go srv.Serve(l)
	c := dial(t, "unix", l.Addr().String(), "disk")
	go c.Write(context.Background(), []byte("x"), 0, 0)
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want deadline exceeded", err)
	}
}

func selfSigned(t *testing.T) (*tls.Config, *tls.Config) {
	server, client, _ := selfSignedPEM(t)
	return server, client
}

// selfSignedPEM makes a self-signed certificate for nbd.test and 127.0.0.1;
// it also returns the certificate in PEM for other clients.
func selfSignedPEM(t *testing.T) (*tls.Config, *tls.Config, []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"nbd.test"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, Subject: pkix.Name{CommonName: "nbd.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return server, &tls.Config{RootCAs: pool, ServerName: "nbd.test"}, pemCert
}

func TestTLS(t *testing.T) {
	serverTLS, clientTLS := selfSigned(t)
	for _, required := range []bool{false, true} {
		mem := newMem(suiteSize)
		var exports ExportMap
		exports.Add(&Export{Name: "disk", Backend: mem})
		srv := &Server{Exports: &exports, TLSConfig: serverTLS, TLSRequired: required}
		addr := serve(t, srv, "tcp")
		c, err := Dial(testCtx(t), "tcp", addr, ClientOptions{ExportName: "disk", TLSConfig: clientTLS})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := c.Conn().(*tls.Conn); !ok {
			t.Fatal("not a TLS connection")
		}
		if err := c.Write(testCtx(t), []byte("secret"), 0, CmdFlagFUA); err != nil || string(mem.bytes(0, 6)) != "secret" {
			t.Fatalf("write over TLS: %v", err)
		}
		c.Close()
		_, err = Dial(testCtx(t), "tcp", addr, ClientOptions{ExportName: "disk"})
		var oe *OptionError
		if required != (errors.As(err, &oe) && oe.Reply == RepErrTLSReqd) {
			t.Fatalf("plain client, TLSRequired=%v: %v", required, err)
		}
	}
}

func errnoErr(n int) error { return syscallErrno(n) }

// recLogger records what the server logs.
type recLogger struct {
	mu    sync.Mutex
	warns []string
}

func (l *recLogger) Debugf(string, ...any) {}
func (l *recLogger) Warnf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.warns = append(l.warns, fmt.Sprintf(format, args...))
}

func TestLoggerGetsProtocolErrors(t *testing.T) {
	log := &recLogger{}
	var exports ExportMap
	exports.Add(&Export{Name: "disk", Backend: newMem(1 << 20)})
	addr := serve(t, &Server{Exports: &exports, Logger: log}, "tcp")
	r := dialRaw(t, addr)
	r.greet(FlagCFixedNewstyle)
	r.goExport("disk")
	r.write(make([]byte, requestLen))
	if !r.closed() {
		t.Fatal("not closed")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		log.mu.Lock()
		n := len(log.warns)
		log.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("warnings: %q", log.warns)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBufferBudget sends more big writes than the buffer budget holds; they
// all complete (the reader waits for buffers instead of allocating more).
func TestBufferBudget(t *testing.T) {
	_, mem, addr := memServer(t, 4*MaxPayloadSize, "unix")
	mem.delay.Store(int64(20 * time.Millisecond))
	c := dial(t, "unix", addr, "disk")
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			if err := c.Write(testCtx(t), make([]byte, MaxPayloadSize/2), int64(i)*MaxPayloadSize/2, 0); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

func TestNoExports(t *testing.T) {
	addr := serve(t, &Server{ListExports: true}, "tcp")
	if _, err := Dial(testCtx(t), "tcp", addr, ClientOptions{ExportName: "x"}); err == nil {
		t.Fatal("export served without Exports")
	}
}

// TestFUAAndFlush checks that FUA and FLUSH reach the Backend before their
// replies, and that plain writes do not flush.
func TestFUAAndFlush(t *testing.T) {
	_, mem, addr := memServer(t, 1<<20, "unix")
	c := dial(t, "unix", addr, "disk")
	ctx := testCtx(t)
	steps := []struct {
		do   func() error
		want int64
	}{
		{func() error { return c.Write(ctx, []byte("a"), 0, 0) }, 0},
		{func() error { return c.Write(ctx, []byte("b"), 1, CmdFlagFUA) }, 1},
		{func() error { return c.WriteZeroes(ctx, 2, 10, CmdFlagFUA|CmdFlagNoHole) }, 2},
		{func() error { return c.Trim(ctx, 20, 10, CmdFlagFUA) }, 3},
		{func() error { return c.Flush(ctx) }, 4},
	}
	for i, s := range steps {
		if err := s.do(); err != nil {
			t.Fatal(err)
		}
		if got := mem.flushes.Load(); got != s.want {
			t.Fatalf("step %d: %d flushes, want %d", i, got, s.want)
		}
	}
}

// An export that grows serves its new range on a connection made before,
// whose client learned the new size some other way (the kernel, told over
// netlink; a userspace client that dialed again to ask).
func TestGrownExportOnOldConnection(t *testing.T) {
	const size = 1 << 20
	_, mem, addr := memServer(t, size, "tcp")
	c := dial(t, "tcp", addr, "disk")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, []byte("late"), size, 0); !errors.Is(err, ENOSPC) {
		t.Fatalf("write past the end before growing = %v, want ENOSPC", err)
	}
	mem.grow(size)
	if err := c.Write(ctx, []byte("late"), size, 0); err != nil {
		t.Fatalf("write into the grown range on the old connection: %v", err)
	}
	got := make([]byte, 4)
	if err := c.Read(ctx, got, size); err != nil || string(got) != "late" {
		t.Fatalf("read back %q, %v", got, err)
	}
	if err := c.Read(ctx, got, 2*size); !errors.Is(err, EINVAL) {
		t.Fatalf("read past the new end = %v, want EINVAL", err)
	}
	if n := dial(t, "tcp", addr, "disk").Size(); n != 2*size {
		t.Fatalf("a new connection is told %d bytes, want %d", n, 2*size)
	}
}
