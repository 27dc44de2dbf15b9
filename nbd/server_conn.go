package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// serverConn is one client connection of a Server.
type serverConn struct {
	srv *Server
	raw net.Conn // as accepted: deadlines and closing
	nc  net.Conn // raw, or its TLS layer after NBD_OPT_STARTTLS
	br  *bufio.Reader

	tls      bool
	noZeroes bool
	exp      *Export // set once the handshake chose an export
	size     uint64
	flags    TransmissionFlags

	mu          sync.Mutex // guards stopping, handshaking and deadline changes
	stopping    bool
	handshaking bool

	wmu      sync.Mutex    // one reply on the wire at a time
	bw       *bufio.Writer // replies, flushed when no other reply waits
	werr     error         // first reply write error; later replies are dropped
	replying atomic.Int32  // replies waiting for or holding wmu

	slots    chan struct{} // bounds requests in flight
	budget   *byteBudget   // bounds their buffers; the export's, shared with its other connections
	inflight sync.WaitGroup
	jobs     chan job // requests for idle workers; closed when transmit ends
	workers  int      // workers started; used by the transmit goroutine only
}

// job is a request ready to run, with its WRITE payload.
type job struct {
	q       request
	payload []byte
}

// byteBudget is a counting semaphore of bytes.
type byteBudget struct {
	mu   sync.Mutex
	cond sync.Cond
	free int
}

func newByteBudget(n int) *byteBudget {
	b := &byteBudget{free: n}
	b.cond.L = &b.mu
	return b
}

// acquire waits until n bytes are free; n must not exceed the total.
func (b *byteBudget) acquire(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.free < n {
		b.cond.Wait()
	}
	b.free -= n
}

func (b *byteBudget) release(n int) {
	b.mu.Lock()
	b.free += n
	b.mu.Unlock()
	b.cond.Broadcast()
}

func newServerConn(s *Server, nc net.Conn) *serverConn {
	return &serverConn{
		srv:   s,
		raw:   nc,
		nc:    nc,
		br:    bufio.NewReaderSize(nc, 64<<10),
		slots: make(chan struct{}, s.maxInFlight()),
		jobs:  make(chan job),
	}
}

func (c *serverConn) remote() string { return c.raw.RemoteAddr().String() }

// serve runs the handshake, which holds one of the server's handshake
// slots, and then the transmission phase.
func (c *serverConn) serve() {
	defer c.srv.connDone(c)
	defer c.raw.Close()
	err := c.timedHandshake()
	c.srv.releaseHandshake()
	if err == nil {
		c.srv.stats.connected(1)
		err = c.transmit()
		close(c.jobs)
		c.inflight.Wait()
		c.srv.stats.connected(-1)
	}
	if c.exp != nil {
		c.exp.detach(c)
	}
	c.logEnd(err)
}

// timedHandshake runs the handshake under one absolute deadline for reads
// and writes alike (and for Exports.Open and TLS through ctx), from accept
// until transmission starts, when it is cleared. A read deadline alone let
// a client that sends options but never reads the replies block the server
// in Write for ever, with the connection's buffers.
func (c *serverConn) timedHandshake() error {
	deadline := time.Now().Add(c.srv.handshakeTimeout())
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	c.setHandshakeDeadline(deadline)
	if err := c.handshake(ctx); err != nil {
		return err
	}
	c.setHandshakeDeadline(time.Time{})
	return nil
}

func (c *serverConn) logEnd(err error) {
	switch {
	case err == nil, errors.Is(err, errAbort), errors.Is(err, io.EOF), c.isStopping():
		c.srv.debugf("nbd: %s: connection closed", c.remote())
	case errors.Is(err, errBadMagic), errors.Is(err, errMalformed), errors.Is(err, errTooLong):
		c.srv.warnf("nbd: %s: protocol error, connection closed: %v", c.remote(), err)
	default:
		c.srv.debugf("nbd: %s: connection closed: %v", c.remote(), err)
	}
}

// attach makes e the export of this connection, sharing e's buffer budget.
func (c *serverConn) attach(e *Export) error {
	budget, err := e.attach(c, c.srv.maxExportConns(), c.srv.maxExportBuffered())
	if err != nil {
		return err
	}
	c.exp, c.size, c.flags = e, uint64(max(e.Backend.Size(), 0)), exportFlags(e)
	c.budget = budget
	return nil
}

// stop makes the connection stop reading requests; those in flight finish.
// A connection still in the handshake stops writing too.
func (c *serverConn) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopping = true
	if c.handshaking {
		_ = c.raw.SetDeadline(time.Unix(1, 0))
		return
	}
	_ = c.raw.SetReadDeadline(time.Unix(1, 0))
}

// abort closes the connection at once.
func (c *serverConn) abort() {
	c.stop()
	c.raw.Close()
}

func (c *serverConn) isStopping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopping
}

// setHandshakeDeadline sets the deadline of the handshake for reads and
// writes; the zero time ends the handshake and clears it.
func (c *serverConn) setHandshakeDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handshaking = !t.IsZero()
	if !c.stopping {
		_ = c.raw.SetDeadline(t)
	}
}

// transmit reads requests until NBD_CMD_DISC, a broken stream or stop, and
// hands each to a worker goroutine; at most MaxInFlight run at once. A nil
// error means a clean end.
func (c *serverConn) transmit() error {
	c.bw = bufio.NewWriterSize(c.nc, 64<<10)
	var hdr [requestLen]byte
	for {
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded) && c.isStopping() {
				return nil
			}
			return err
		}
		var q request
		if err := q.decode(hdr[:]); err != nil {
			return err
		}
		if q.Type == CmdDisc {
			return nil
		}
		c.slots <- struct{}{}
		if err := c.dispatch(q); err != nil {
			return err
		}
	}
}

// dispatch reads the payload of q, answers a request that fails the checks
// at once and starts the others. It holds one slot, and the budget for its
// buffer, released when q ends.
func (c *serverConn) dispatch(q request) error {
	errno := c.check(q)
	if errno != 0 {
		return c.refuse(q, errno)
	}
	c.budget.acquire(bufferedLen(q))
	payload, err := c.readPayload(q, 0)
	if err != nil {
		c.budget.release(bufferedLen(q))
		<-c.slots
		return err
	}
	c.inflight.Add(1)
	c.run(job{q: q, payload: payload})
	return nil
}

// run hands j to an idle worker, starting a new one while fewer than
// MaxInFlight exist. Workers live as long as the connection, so the stack a
// request needs is grown once per worker, not once per request (a goroutine
// per request spent about a tenth of the server's CPU growing stacks). The
// blocking send cannot wait for ever: j holds one of the MaxInFlight slots,
// so at least one worker is not inside handle and comes back for work.
func (c *serverConn) run(j job) {
	select {
	case c.jobs <- j:
		return
	default:
	}
	if c.workers < cap(c.slots) {
		c.workers++
		go c.work(j)
		return
	}
	c.jobs <- j
}

// work runs j, then every job it is handed until the connection ends.
func (c *serverConn) work(j job) {
	for ok := true; ok; j, ok = <-c.jobs {
		c.handle(j.q, j.payload)
	}
}

// refuse answers a request that failed the checks, after dropping its
// payload.
func (c *serverConn) refuse(q request, errno Errno) error {
	defer func() { <-c.slots }()
	if _, err := c.readPayload(q, errno); err != nil {
		return err
	}
	c.srv.stats.record(q.Type, 0, errno, 0)
	c.reply(q.Handle, errno, nil)
	return nil
}

// check validates a request header against the export; non-zero means the
// request is answered with that error without running.
func (c *serverConn) check(q request) Errno {
	allowed := CmdFlagFUA
	switch q.Type {
	case CmdRead, CmdWrite, CmdFlush, CmdTrim, CmdCache:
	case CmdWriteZeroes:
		allowed |= CmdFlagNoHole
	default:
		return EINVAL
	}
	isWrite := q.Type == CmdWrite || q.Type == CmdWriteZeroes || q.Type == CmdTrim
	switch {
	case q.Flags&^allowed != 0:
		return EINVAL
	case (q.Type == CmdRead || q.Type == CmdWrite) && q.Length > MaxPayloadSize:
		return EINVAL
	case isWrite && c.exp.ReadOnly:
		return EPERM
	case q.Type == CmdFlush:
		return 0
	case q.Offset > c.liveSize() || uint64(q.Length) > c.liveSize()-q.Offset:
		if q.Type == CmdWrite || q.Type == CmdWriteZeroes {
			return ENOSPC // as the spec asks for writes past the end
		}
		return EINVAL
	}
	return 0
}

// liveSize is the export's size now: an export that grew serves its new
// range to connections made before, whose client learned the new size
// another way (NBD_OPT_INFO, a new connection, or the kernel told by
// netlink).
func (c *serverConn) liveSize() uint64 { return uint64(max(c.exp.Backend.Size(), 0)) }

// readPayload reads a WRITE's data. The data of a refused write is read and
// dropped to keep the stream in sync, up to maxWriteDiscard; a longer one
// cannot be skipped in reasonable time and ends the connection.
func (c *serverConn) readPayload(q request, errno Errno) ([]byte, error) {
	if q.Type != CmdWrite || q.Length == 0 {
		return nil, nil
	}
	if errno != 0 {
		if q.Length > maxWriteDiscard {
			return nil, fmt.Errorf("%w: write payload of %d bytes", errTooLong, q.Length)
		}
		_, err := io.CopyN(io.Discard, c.br, int64(q.Length))
		return nil, err
	}
	buf := c.srv.buffers.get(int(q.Length))
	if _, err := io.ReadFull(c.br, buf); err != nil {
		c.srv.buffers.put(buf)
		return nil, err
	}
	return buf, nil
}

// bufferedLen is the buffer a valid request needs.
func bufferedLen(q request) int {
	if q.Type == CmdRead || q.Type == CmdWrite {
		return int(q.Length)
	}
	return 0
}

// handle runs one request and sends its reply.
func (c *serverConn) handle(q request, payload []byte) {
	defer c.inflight.Done()
	defer func() { c.budget.release(bufferedLen(q)); <-c.slots }()
	c.srv.stats.inflight.Add(1)
	defer c.srv.stats.inflight.Add(-1)
	start := time.Now()
	var data []byte
	var err error
	switch q.Type {
	case CmdRead:
		data, err = c.cmdRead(q)
	case CmdWrite:
		err = c.cmdWrite(q, payload)
	case CmdFlush:
		err = c.exp.Backend.Flush()
	case CmdTrim:
		err = c.cmdTrim(q)
	case CmdWriteZeroes:
		err = c.cmdWriteZeroes(q)
	case CmdCache:
		// A hint; the Backend has no use for it.
	}
	errno := errnoOf(err)
	c.reply(q.Handle, errno, data)
	c.srv.stats.record(q.Type, q.Length, errno, time.Since(start))
	c.srv.buffers.put(data)
	c.srv.buffers.put(payload)
}

func (c *serverConn) cmdRead(q request) ([]byte, error) {
	buf := c.srv.buffers.get(int(q.Length))
	n, err := c.exp.Backend.ReadAt(buf, int64(q.Offset))
	if n == len(buf) {
		return buf, nil // io.ReaderAt may report io.EOF with a full read
	}
	c.srv.buffers.put(buf)
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return nil, err
}

func (c *serverConn) cmdWrite(q request, payload []byte) error {
	if _, err := c.exp.Backend.WriteAt(payload, int64(q.Offset)); err != nil {
		return err
	}
	return c.fua(q)
}

func (c *serverConn) cmdTrim(q request) error {
	if err := c.exp.Backend.Discard(int64(q.Offset), int64(q.Length)); err != nil {
		return err
	}
	return c.fua(q)
}

// cmdWriteZeroes uses the Backend's ZeroWriter when it has one, else
// Discard, or zero buffers when the client forbade holes (NO_HOLE).
func (c *serverConn) cmdWriteZeroes(q request) error {
	off, n, mayTrim := int64(q.Offset), int64(q.Length), q.Flags&CmdFlagNoHole == 0
	var err error
	if zw, ok := c.exp.Backend.(ZeroWriter); ok {
		err = zw.WriteZeroes(off, n, mayTrim)
	} else if mayTrim {
		err = c.exp.Backend.Discard(off, n)
	} else {
		err = c.writeZeroBuffers(off, n)
	}
	if err != nil {
		return err
	}
	return c.fua(q)
}

func (c *serverConn) writeZeroBuffers(off, n int64) error {
	zeros := c.srv.zeroBuffer()
	for n > 0 {
		chunk := zeros[:min(n, int64(len(zeros)))]
		if _, err := c.exp.Backend.WriteAt(chunk, off); err != nil {
			return err
		}
		off, n = off+int64(len(chunk)), n-int64(len(chunk))
	}
	return nil
}

// fua flushes after a write that carried NBD_CMD_FLAG_FUA, before its reply.
func (c *serverConn) fua(q request) error {
	if q.Flags&CmdFlagFUA == 0 {
		return nil
	}
	return c.exp.Backend.Flush()
}

// reply sends a simple reply; data goes with it only on success. Replies
// are buffered and the buffer is flushed by the last of the replies waiting
// at once, so replies completing together share a system call. A write
// error breaks the stream: the connection is closed and later replies dropped.
// Each reply gets Server.ReplyTimeout to go out (a write deadline): a client
// that stops reading cannot pin the worker, its buffers and the export's
// budget for ever.
func (c *serverConn) reply(handle uint64, errno Errno, data []byte) {
	var hdr [simpleReplyLen]byte
	simpleReply{Errno: errno, Handle: handle}.encode(hdr[:])
	c.replying.Add(1)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	last := c.replying.Add(-1) == 0
	if c.werr != nil {
		return
	}
	if d := c.srv.replyTimeout(); d > 0 {
		_ = c.raw.SetWriteDeadline(time.Now().Add(d))
	}
	_, err := c.bw.Write(hdr[:])
	if err == nil && errno == 0 {
		_, err = c.bw.Write(data)
	}
	if err == nil && last {
		err = c.bw.Flush()
	}
	if err != nil {
		c.werr = err
		c.raw.Close()
	}
}
