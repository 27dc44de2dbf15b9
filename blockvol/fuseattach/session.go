package fuseattach

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/nbd"
)

// Defaults of SessionConfig.
const (
	DefaultReconnectTimeout = 60 * time.Second
	DefaultRequestTimeout   = 60 * time.Second
	DefaultReplayLimit      = 64 << 20
	DefaultConnections      = 2
)

const (
	dialTimeout = 15 * time.Second
	minBackoff  = 50 * time.Millisecond
	maxBackoff  = 5 * time.Second
	zeroChunk   = 1 << 20
)

// ErrDown is returned (wrapped) by requests while the NBD server has been
// unreachable for longer than the reconnect timeout; the FUSE file answers
// them with EIO.
var ErrDown = errors.New("NBD server unreachable past the reconnect timeout")

var (
	errClosed  = errors.New("session closed")
	errTimeout = errors.New("NBD request unanswered past the request timeout")
)

// DialFunc opens a new connection to the export, negotiated (the same
// address and export name each time).
type DialFunc func(ctx context.Context) (*nbd.Client, error)

// SessionConfig tunes a Session; zero values take the defaults.
type SessionConfig struct {
	// ReconnectTimeout is how long requests wait for a new connection
	// after the old one broke before they fail with EIO.
	ReconnectTimeout time.Duration
	// RequestTimeout is how long a request may go unanswered before its
	// connection counts as dead (a flush gets three times as long).
	RequestTimeout time.Duration
	// ReplayLimit is how many bytes of acknowledged, unflushed writes the
	// session keeps for replay before it flushes on its own.
	ReplayLimit int64
	// Connections is how many connections to open when the server allows
	// several (NBD_FLAG_CAN_MULTI_CONN): large requests then travel side by
	// side instead of one after another on one socket.
	Connections int
	Log         logrus.FieldLogger
}

func (c SessionConfig) withDefaults() SessionConfig {
	if c.ReconnectTimeout <= 0 {
		c.ReconnectTimeout = DefaultReconnectTimeout
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.ReplayLimit <= 0 {
		c.ReplayLimit = DefaultReplayLimit
	}
	if c.Connections <= 0 {
		c.Connections = DefaultConnections
	}
	if c.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		c.Log = l
	}
	return c
}

// Connection states of a Session.
const (
	StateUp           = "up"
	StateReconnecting = "reconnecting"
	StateDown         = "down" // past the reconnect timeout: requests fail, dialing goes on
	StateClosed       = "closed"
)

// Session is an NBD export that survives lost connections: requests wait
// while it dials again and negotiates the same export, are sent again on the
// new connection, and fail with ErrDown only once the server has been gone
// for ReconnectTimeout. Writes the server acknowledged but no flush has
// covered yet are replayed first (see replayLog), so a flush after a
// reconnect is as good as one before. It implements Backing.
type Session struct {
	dial DialFunc
	cfg  SessionConfig
	info nbd.ExportInfo
	size atomic.Int64 // the export's size: info's, or larger once Refresh saw it grow

	mu         sync.Mutex
	conns      *connSet
	gen        uint64 // generation of conns; bumped by every reconnect
	state      string
	since      time.Time
	lastErr    error
	reconnects int
	changed    chan struct{} // closed at every change of state
	log        replayLog
	flushing   bool // a flush started by the replay limit runs
	done       chan struct{}
	wg         sync.WaitGroup
}

var _ Backing = (*Session)(nil)

// NewSession dials the export (an error is returned as it is) and serves
// it from then on.
func NewSession(ctx context.Context, dial DialFunc, cfg SessionConfig) (*Session, error) {
	s := &Session{dial: dial, cfg: cfg.withDefaults(), gen: 1, state: StateUp, since: time.Now(),
		changed: make(chan struct{}), done: make(chan struct{})}
	set, err := s.dialSet(ctx)
	if err != nil {
		return nil, err
	}
	s.conns, s.info = set, set.cs[0].Info()
	s.size.Store(int64(s.info.Size))
	return s, nil
}

// connSet is the connections to the export, used in turn. With
// NBD_FLAG_CAN_MULTI_CONN a flush on one covers the writes answered on all.
type connSet struct {
	cs   []*nbd.Client
	next atomic.Uint32
}

func (c *connSet) pick() *nbd.Client { return c.cs[int(c.next.Add(1)%uint32(len(c.cs)))] }

// close disconnects; not graceful: at once, failing what waits.
func (c *connSet) close(graceful bool) {
	for _, cl := range c.cs {
		if !graceful {
			cl.Conn().Close()
		}
		cl.Close()
	}
}

// dialSet opens one connection, and more when the server allows it.
func (s *Session) dialSet(ctx context.Context) (*connSet, error) {
	c, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	set := &connSet{cs: []*nbd.Client{c}}
	for c.Info().Flags&nbd.FlagCanMultiConn != 0 && len(set.cs) < s.cfg.Connections {
		more, err := s.dial(ctx)
		if err != nil {
			set.close(false)
			return nil, err
		}
		set.cs = append(set.cs, more)
	}
	return set, nil
}

// Size implements Backing: the size at the first connection, or the one
// Refresh saw last.
func (s *Session) Size() int64 { return s.size.Load() }

// Refresh asks the server for the export's size on a connection of its
// own (closed again) and takes it when it grew: the server serves the
// grown range on the connections already open. It returns the size. A
// smaller size is an error and changes nothing.
func (s *Session) Refresh(ctx context.Context) (int64, error) {
	c, err := s.dial(ctx)
	if err != nil {
		return 0, fmt.Errorf("asking the server for the export's size: %w", err)
	}
	n := int64(c.Info().Size)
	c.Close()
	for {
		cur := s.size.Load()
		switch {
		case n < cur:
			return cur, fmt.Errorf("the export shrank from %d to %d bytes", cur, n)
		case n == cur || s.size.CompareAndSwap(cur, n):
			if n > cur {
				s.cfg.Log.WithFields(logrus.Fields{"from": cur, "size": n}).Info("the export grew")
			}
			return n, nil
		}
	}
}

// Info is what the server said about the export at the first connection.
func (s *Session) Info() nbd.ExportInfo { return s.info }

// ReadAt implements Backing.
func (s *Session) ReadAt(ctx context.Context, p []byte, off int64) error {
	_, err := s.do(ctx, s.cfg.RequestTimeout, func(c *nbd.Client) error { return c.Read(ctx, p, off) })
	return err
}

// WriteAt implements Backing.
func (s *Session) WriteAt(ctx context.Context, p []byte, off int64) error {
	e := logEntry{off: off, n: int64(len(p)), data: bytes.Clone(p)}
	return s.mutate(ctx, e, func(c *nbd.Client) error { return c.Write(ctx, p, off, 0) })
}

// Zero implements Backing with NBD_CMD_WRITE_ZEROES (NO_HOLE unless
// mayUnmap), or written zeroes where the server lacks the command. TRIM is
// never used: the spec lets trimmed blocks read back as anything.
func (s *Session) Zero(ctx context.Context, off, n int64, mayUnmap bool) error {
	e := logEntry{off: off, n: n, mayUnmap: mayUnmap}
	return s.mutate(ctx, e, func(c *nbd.Client) error { return apply(ctx, c, e) })
}

// Flush implements Backing: NBD_CMD_FLUSH. The log forgets what it covers.
func (s *Session) Flush(ctx context.Context) error {
	s.mu.Lock()
	mark := s.log.next()
	s.mu.Unlock()
	if _, err := s.do(ctx, 3*s.cfg.RequestTimeout, func(c *nbd.Client) error { return c.Flush(ctx) }); err != nil {
		return err
	}
	s.mu.Lock()
	s.log.drop(mark)
	s.mu.Unlock()
	return nil
}

// apply sends one change on c.
func apply(ctx context.Context, c *nbd.Client, e logEntry) error {
	if e.data != nil {
		return c.Write(ctx, e.data, e.off, 0)
	}
	if c.Info().Flags&nbd.FlagSendWriteZeroes != 0 {
		var fl nbd.CmdFlags
		if !e.mayUnmap {
			fl = nbd.CmdFlagNoHole
		}
		return c.WriteZeroes(ctx, e.off, e.n, fl)
	}
	buf := make([]byte, min(e.n, zeroChunk))
	for off, end := e.off, e.off+e.n; off < end; off += int64(len(buf)) {
		if err := c.Write(ctx, buf[:min(int64(len(buf)), end-off)], off, 0); err != nil {
			return err
		}
	}
	return nil
}

// mutate runs a change and logs it for replay once acknowledged.
func (s *Session) mutate(ctx context.Context, e logEntry, op func(*nbd.Client) error) error {
	for {
		gen, err := s.do(ctx, s.cfg.RequestTimeout, op)
		if err != nil {
			return err
		}
		if s.record(gen, e) {
			break
		}
		// Acknowledged on a connection already replaced, after its log
		// was replayed: the new server may not have it. Send it again.
	}
	return s.limitLog(ctx)
}

// record logs e, acknowledged on connection gen; false when gen is no
// longer the current connection.
func (s *Session) record(gen uint64, e logEntry) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen {
		return false
	}
	s.log.add(e)
	return true
}

// limitLog keeps the log near ReplayLimit: past it a background flush
// empties it; past twice the limit writers wait for a flush themselves.
func (s *Session) limitLog(ctx context.Context) error {
	s.mu.Lock()
	held := s.log.bytes
	start := held > s.cfg.ReplayLimit && !s.flushing && s.state != StateClosed
	if start {
		s.flushing = true
		s.wg.Add(1)
	}
	s.mu.Unlock()
	if start {
		go s.backgroundFlush()
	}
	if held > 2*s.cfg.ReplayLimit {
		return s.Flush(ctx)
	}
	return nil
}

func (s *Session) backgroundFlush() {
	defer s.wg.Done()
	ctx, cancel := s.doneContext()
	defer cancel()
	if err := s.Flush(ctx); err != nil && !errors.Is(err, errClosed) {
		s.cfg.Log.WithError(err).Warn("flush for the replay limit failed")
	}
	s.mu.Lock()
	s.flushing = false
	s.mu.Unlock()
}

// doneContext is a context that ends when the session closes.
func (s *Session) doneContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// do runs op on the current connection until it succeeds, fails with an
// answer from the server, or the session is down. A request on a broken
// connection starts a reconnect and waits for it. It returns the
// generation of the connection op succeeded on.
func (s *Session) do(ctx context.Context, timeout time.Duration, op func(*nbd.Client) error) (uint64, error) {
	var firstLost time.Time
	for {
		c, gen, err := s.conn(ctx)
		if err != nil {
			return 0, err
		}
		// A connection that stops answering (a partition, a hung server)
		// gives no error of its own: the watchdog breaks it.
		t := time.AfterFunc(timeout, func() { s.lost(gen, errTimeout) })
		err = op(c)
		t.Stop()
		if !connLost(err) {
			return gen, err
		}
		s.lost(gen, err)
		if firstLost.IsZero() {
			firstLost = time.Now()
		} else if time.Since(firstLost) > s.cfg.ReconnectTimeout {
			// Connections come back but die at once: give up as if down.
			return 0, fmt.Errorf("%w: %w", ErrDown, err)
		}
	}
}

// connLost tells a broken connection from the server's answer.
func connLost(err error) bool {
	var e nbd.Errno
	switch {
	case err == nil, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.As(err, &e):
		return e == nbd.ESHUTDOWN // the server is going away: dial again
	}
	return true
}

// conn returns the connection to use, waiting while a reconnect runs.
func (s *Session) conn(ctx context.Context) (*nbd.Client, uint64, error) {
	for {
		s.mu.Lock()
		state, set, gen, changed, last := s.state, s.conns, s.gen, s.changed, s.lastErr
		s.mu.Unlock()
		switch state {
		case StateUp:
			return set.pick(), gen, nil
		case StateDown:
			return nil, 0, fmt.Errorf("%w: %w", ErrDown, last)
		case StateClosed:
			return nil, 0, errClosed
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
}

// setState changes the state and wakes the requests waiting for it. Call
// with s.mu held.
func (s *Session) setState(state string, err error) {
	s.state, s.lastErr, s.since = state, err, time.Now()
	close(s.changed)
	s.changed = make(chan struct{})
}

// lost starts a reconnect unless one runs or connection gen was replaced.
func (s *Session) lost(gen uint64, cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen || s.state != StateUp {
		return
	}
	s.setState(StateReconnecting, cause)
	old := s.conns
	s.wg.Add(1)
	go s.reconnect(old, cause)
}

// reconnect dials until a connection is back, with backoff; past the
// reconnect timeout it marks the session down and keeps trying.
func (s *Session) reconnect(old *connSet, cause error) {
	defer s.wg.Done()
	old.close(false) // fails the requests still waiting on it
	log := s.cfg.Log.WithField("reconnect_timeout", s.cfg.ReconnectTimeout)
	log.WithError(cause).Warn("NBD connection lost; dialing again")
	deadline := time.Now().Add(s.cfg.ReconnectTimeout)
	for backoff, attempt := minBackoff, 1; ; backoff, attempt = min(2*backoff, maxBackoff), attempt+1 {
		err := s.tryReconnect()
		if err == nil {
			log.WithField("attempts", attempt).Info("NBD connection back")
			return
		}
		if errors.Is(err, errClosed) {
			return
		}
		if time.Now().After(deadline) {
			s.markDown(err)
		}
		select {
		case <-s.done:
			return
		case <-time.After(backoff):
		}
	}
}

// markDown fails the waiting requests and those to come with ErrDown.
func (s *Session) markDown(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == StateReconnecting {
		s.cfg.Log.WithError(err).Error("NBD server unreachable past the reconnect timeout: I/O fails with EIO until it is back")
		s.setState(StateDown, err)
	} else if s.state == StateDown {
		s.lastErr = err
	}
}

// tryReconnect dials once, replays the log and makes the new connection
// current.
func (s *Session) tryReconnect() error {
	ctx, cancel := s.doneContext()
	defer cancel()
	dctx, dcancel := context.WithTimeout(ctx, dialTimeout)
	set, err := s.dialSet(dctx)
	dcancel()
	if err != nil {
		return err
	}
	if err = s.checkInfo(set.cs[0].Info()); err == nil {
		rctx, rcancel := context.WithTimeout(ctx, 3*s.cfg.RequestTimeout)
		err = s.replayAndInstall(rctx, set)
		rcancel()
	}
	if err != nil {
		set.close(false)
	}
	return err
}

// checkInfo refuses a server that now serves the export differently.
func (s *Session) checkInfo(info nbd.ExportInfo) error {
	switch {
	case info.Flags&nbd.FlagReadOnly != 0:
		return errors.New("the server now serves the export read-only")
	case int64(info.Size) < s.Size():
		return fmt.Errorf("the export shrank from %d to %d bytes", s.Size(), info.Size)
	}
	return nil
}

// replayAndInstall sends the log on c, oldest first (entries may overlap),
// and makes c current once nothing is left to send; entries logged from
// the old connection meanwhile are sent too.
func (s *Session) replayAndInstall(ctx context.Context, set *connSet) error {
	var from uint64
	for {
		s.mu.Lock()
		pending := s.log.since(from)
		if len(pending) == 0 {
			defer s.mu.Unlock()
			if s.state == StateClosed {
				return errClosed
			}
			s.conns, s.gen = set, s.gen+1
			s.reconnects++
			s.setState(StateUp, nil)
			return nil
		}
		from = s.log.next()
		s.mu.Unlock()
		for _, e := range pending {
			if err := apply(ctx, set.cs[0], e); err != nil {
				return fmt.Errorf("replaying %d unflushed changes: %w", len(pending), err)
			}
		}
	}
}

// Status is a Session's state for the control socket and the logs.
type Status struct {
	State      string    `json:"state"`
	Since      time.Time `json:"since"`
	Error      string    `json:"error,omitempty"`
	Reconnects int       `json:"reconnects"`
	Unflushed  int64     `json:"unflushed_bytes"` // held for replay
}

// Status reports the connection state.
func (s *Session) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{State: s.state, Since: s.since, Reconnects: s.reconnects, Unflushed: s.log.bytes}
	if s.lastErr != nil {
		st.Error = s.lastErr.Error()
	}
	return st
}

// Close flushes (a failure is returned, the session closes anyway) and
// disconnects.
func (s *Session) Close(ctx context.Context) error {
	err := s.Flush(ctx)
	s.shutdown(true)
	return err
}

// Abort closes without a flush: requests in flight and to come fail. For
// a device released while still in use (fenced).
func (s *Session) Abort() { s.shutdown(false) }

func (s *Session) shutdown(graceful bool) {
	s.mu.Lock()
	if s.state == StateClosed {
		s.mu.Unlock()
		return
	}
	set, up := s.conns, s.state == StateUp
	s.setState(StateClosed, nil)
	close(s.done)
	s.mu.Unlock()
	if up {
		set.close(graceful) // NBD_CMD_DISC when graceful
	}
	s.wg.Wait()
}
