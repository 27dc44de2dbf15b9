package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
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
	// (default 32); their READ and WRITE buffers are bounded to 64 MiB.
	MaxInFlight int
	// HandshakeTimeout bounds the handshake phase (default 30 s).
	HandshakeTimeout time.Duration
	// Logger, when set, receives connection-level events.
	Logger Logger

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
		nc, err := l.Accept()
		if err != nil {
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
func (s *Server) ServeConn(nc net.Conn) {
	c := s.newConn(nc)
	if c == nil {
		return
	}
	c.serve()
}

func (s *Server) startConn(nc net.Conn) {
	if c := s.newConn(nc); c != nil {
		go c.serve()
	}
}

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
	s.closing = true
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
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()
	s.closeAll()
	return nil
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
