package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("nbd: server closed")

// Server serves exports over NBD (fixed newstyle handshake, simple replies).
// Set the fields before the first Serve; they must not change afterwards.
type Server struct {
	// Exports resolves export names; required.
	Exports Exports
	// TLSConfig enables NBD_OPT_STARTTLS.
	TLSConfig *tls.Config
	// TLSRequired makes the server FORCEDTLS: every option but STARTTLS and
	// ABORT is answered NBD_REP_ERR_TLS_REQD until TLS is up.
	TLSRequired bool
	// ListExports makes NBD_OPT_LIST answer Exports.List; otherwise the list
	// is empty.
	ListExports bool
	// MaxInFlight bounds the requests one connection has in progress at once
	// (default 32).
	MaxInFlight int
	// MaxExportBuffered bounds the READ and WRITE buffers the requests in
	// flight of all connections to one export hold together (default
	// 64 MiB, at least MaxPayloadSize): more connections do not get more
	// memory. An Export served by several Servers keeps the budget of the
	// first that attached it.
	MaxExportBuffered int
	// HandshakeTimeout bounds the handshake phase (default 30 s): one
	// deadline for reads and writes alike, from accept until transmission
	// starts.
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds the connections in the handshake at once (default
	// 64). Serve stops accepting while that many are in it, so further
	// clients wait in the listen queue (no memory of this process) until a
	// handshake ends, at the latest after HandshakeTimeout.
	MaxHandshakes int
	// MaxExportConns bounds the connections serving one export at once
	// (default 16; the kernel client uses a few per device). NBD_OPT_GO of
	// one more is answered NBD_REP_ERR_POLICY; NBD_OPT_EXPORT_NAME, which
	// cannot carry an error, closes the connection.
	MaxExportConns int
	// ReplyTimeout bounds the time one transmission reply may take to go
	// out (default 2 minutes; negative: no bound). A client that stops
	// reading replies loses the connection then, instead of pinning its
	// requests, their buffers and the export's budget for ever.
	ReplyTimeout time.Duration
	// Logger, when set, receives connection-level events.
	Logger Logger

	initOnce   sync.Once
	handshakes chan struct{} // a slot per connection in the handshake
	done       chan struct{} // closed when the server starts shutting down
	lastFull   atomic.Int64  // unix nanoseconds of the last "handshakes full" warning

	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	conns     map[*serverConn]struct{}
	connWG    sync.WaitGroup

	stats    stats
	buffers  bufferPool
	zeroOnce sync.Once
	zeros    []byte
}

// Serve accepts connections on l and serves each in its own goroutine until
// l fails or the server shuts down (then it returns ErrServerClosed). TCP
// connections get TCP_NODELAY.
func (s *Server) Serve(l net.Listener) error {
	if !s.trackListener(l, true) {
		return ErrServerClosed
	}
	defer s.trackListener(l, false)
	var backoff time.Duration
	for {
		// Take the handshake slot before accepting: while all are taken,
		// clients queue in the kernel's backlog, not in this process.
		if !s.acquireHandshake() {
			return ErrServerClosed
		}
		nc, err := l.Accept()
		if err != nil {
			s.releaseHandshake()
			if s.isClosing() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		s.startConn(nc)
	}
}

// ServeConn serves one already accepted connection and returns when it ends.
// It waits for a handshake slot (see MaxHandshakes) first.
func (s *Server) ServeConn(nc net.Conn) {
	if !s.acquireHandshake() {
		nc.Close()
		return
	}
	c := s.newConn(nc)
	if c == nil {
		s.releaseHandshake()
		return
	}
	c.serve()
}

// startConn serves nc, which holds a handshake slot, in its own goroutine.
func (s *Server) startConn(nc net.Conn) {
	if c := s.newConn(nc); c != nil {
		go c.serve()
		return
	}
	s.releaseHandshake()
}

func (s *Server) lazyInit() {
	s.initOnce.Do(func() {
		s.handshakes = make(chan struct{}, s.maxHandshakes())
		s.done = make(chan struct{})
	})
}

// acquireHandshake takes a handshake slot, waiting while all are taken;
// false once the server shuts down. A full server is reported at most once
// a minute.
func (s *Server) acquireHandshake() bool {
	s.lazyInit()
	select {
	case s.handshakes <- struct{}{}:
		return true
	default:
	}
	if now := time.Now().UnixNano(); now-s.lastFull.Load() > int64(time.Minute) {
		s.lastFull.Store(now)
		s.warnf("nbd: %d connections are in the handshake (the most allowed); new connections wait", cap(s.handshakes))
	}
	select {
	case s.handshakes <- struct{}{}:
		return true
	case <-s.done:
		return false
	}
}

func (s *Server) releaseHandshake() { <-s.handshakes }

// newConn registers a connection; nil (and the connection closed) when the
// server is shutting down.
func (s *Server) newConn(nc net.Conn) *serverConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		nc.Close()
		return nil
	}
	if s.conns == nil {
		s.conns = make(map[*serverConn]struct{})
	}
	c := newServerConn(s, nc)
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	return c
}

func (s *Server) connDone(c *serverConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.connWG.Done()
}

func (s *Server) trackListener(l net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.listeners, l)
		return true
	}
	if s.closing {
		return false
	}
	if s.listeners == nil {
		s.listeners = make(map[net.Listener]struct{})
	}
	s.listeners[l] = struct{}{}
	return true
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// Shutdown stops accepting, stops reading new requests, lets every request in
// flight finish and its reply go out, then closes the connections and
// returns. Connections still in the handshake are closed. When ctx ends
// first, the remaining connections are closed at once and ctx's error is
// returned (requests then still running finish in the background). The
// daemon flushes and closes its Backends after Shutdown returns.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.setClosing()
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.stop()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.connWG.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.closeAll()
		return ctx.Err()
	}
}

// Close closes listeners and connections at once without waiting for
// requests in flight.
func (s *Server) Close() error {
	s.mu.Lock()
	s.setClosing()
	for l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()
	s.closeAll()
	return nil
}

// setClosing marks the server closing and wakes Serve and ServeConn
// waiting for a handshake slot; s.mu is held.
func (s *Server) setClosing() {
	s.lazyInit()
	if !s.closing {
		close(s.done)
	}
	s.closing = true
}

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.abort()
	}
}

// Stats returns a snapshot of the request counters of all connections.
func (s *Server) Stats() Stats { return s.stats.snapshot() }

func (s *Server) maxInFlight() int {
	if s.MaxInFlight > 0 {
		return s.MaxInFlight
	}
	return 32
}

func (s *Server) handshakeTimeout() time.Duration {
	if s.HandshakeTimeout > 0 {
		return s.HandshakeTimeout
	}
	return 30 * time.Second
}

func (s *Server) maxHandshakes() int {
	if s.MaxHandshakes > 0 {
		return s.MaxHandshakes
	}
	return 64
}

func (s *Server) maxExportConns() int {
	if s.MaxExportConns > 0 {
		return s.MaxExportConns
	}
	return 16
}

func (s *Server) maxExportBuffered() int {
	if s.MaxExportBuffered > 0 {
		return max(s.MaxExportBuffered, MaxPayloadSize)
	}
	return 2 * MaxPayloadSize
}

func (s *Server) replyTimeout() time.Duration {
	if s.ReplyTimeout != 0 {
		return s.ReplyTimeout
	}
	return 2 * time.Minute
}

// zeroBuffer is a shared, never written buffer of zeros for WRITE_ZEROES
// with NBD_CMD_FLAG_NO_HOLE on Backends without ZeroWriter.
func (s *Server) zeroBuffer() []byte {
	s.zeroOnce.Do(func() { s.zeros = make([]byte, 1<<20) })
	return s.zeros
}

func (s *Server) debugf(format string, args ...any) {
	if s.Logger != nil {
		s.Logger.Debugf(format, args...)
	}
}

func (s *Server) warnf(format string, args ...any) {
	if s.Logger != nil {
		s.Logger.Warnf(format, args...)
	}
}
