package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// ErrClientClosed is returned by requests on a closed Client.
var ErrClientClosed = errors.New("nbd: client closed")

// Client is the transmission phase of an NBD connection. It is safe for
// concurrent use: requests from many goroutines are in flight at once and
// replies are matched to them by handle.
type Client struct {
	conn net.Conn
	info ExportInfo

	wmu sync.Mutex // one request on the wire at a time

	mu      sync.Mutex
	next    uint64
	pending map[uint64]*call
	orphans map[uint64]int // handles whose caller gave up: read payload length
	err     error          // set once the connection is unusable
	closing bool
	active  sync.WaitGroup // requests not yet answered

	readerDone chan struct{}
	closeOnce  sync.Once
}

type call struct {
	buf  []byte     // where a READ's data goes
	done chan error // gets the outcome once
}

// Dial connects to address ("tcp" or "unix"), negotiates with o and returns
// a Client for the export.
func Dial(ctx context.Context, network, address string, o ClientOptions) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	nc, info, err := Negotiate(ctx, conn, o)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return NewClient(nc, info), nil
}

// NewClient starts the transmission phase on a connection Negotiate returned.
func NewClient(conn net.Conn, info ExportInfo) *Client {
	c := &Client{
		conn:       conn,
		info:       info,
		pending:    make(map[uint64]*call),
		orphans:    make(map[uint64]int),
		readerDone: make(chan struct{}),
	}
	go c.readReplies()
	return c
}

// Info is what the server said about the export.
func (c *Client) Info() ExportInfo { return c.info }

// Size is the export size in bytes.
func (c *Client) Size() int64 { return int64(c.info.Size) }

// Conn is the negotiated connection (for a later hand-over to the kernel).
func (c *Client) Conn() net.Conn { return c.conn }

// Read fills p from offset off.
func (c *Client) Read(ctx context.Context, p []byte, off int64) error {
	return c.chunked(len(p), off, func(lo, hi int) error {
		return c.do(ctx, request{Type: CmdRead, Offset: uint64(off) + uint64(lo), Length: uint32(hi - lo)}, nil, p[lo:hi])
	})
}

// Write writes p at offset off; flags may hold CmdFlagFUA.
func (c *Client) Write(ctx context.Context, p []byte, off int64, flags CmdFlags) error {
	return c.chunked(len(p), off, func(lo, hi int) error {
		q := request{Type: CmdWrite, Flags: flags, Offset: uint64(off) + uint64(lo), Length: uint32(hi - lo)}
		return c.do(ctx, q, p[lo:hi], nil)
	})
}

// Flush asks the server to make every answered write durable.
func (c *Client) Flush(ctx context.Context) error {
	return c.do(ctx, request{Type: CmdFlush}, nil, nil)
}

// Trim discards n bytes at off; flags may hold CmdFlagFUA.
func (c *Client) Trim(ctx context.Context, off, n int64, flags CmdFlags) error {
	return c.ranged(ctx, CmdTrim, off, n, flags)
}

// WriteZeroes zeroes n bytes at off; flags may hold CmdFlagFUA and
// CmdFlagNoHole.
func (c *Client) WriteZeroes(ctx context.Context, off, n int64, flags CmdFlags) error {
	return c.ranged(ctx, CmdWriteZeroes, off, n, flags)
}

// Cache hints that n bytes at off will be read soon.
func (c *Client) Cache(ctx context.Context, off, n int64) error {
	return c.ranged(ctx, CmdCache, off, n, 0)
}

// ReadAt implements io.ReaderAt.
func (c *Client) ReadAt(p []byte, off int64) (int, error) {
	if err := c.Read(context.Background(), p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteAt implements io.WriterAt.
func (c *Client) WriteAt(p []byte, off int64) (int, error) {
	if err := c.Write(context.Background(), p, off, 0); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ranged runs a payload-less command over a range of any length.
func (c *Client) ranged(ctx context.Context, cmd Cmd, off, n int64, flags CmdFlags) error {
	if off < 0 || n < 0 {
		return fmt.Errorf("nbd: %s: negative range: %w", cmd, EINVAL)
	}
	const step = 1 << 30
	for done := int64(0); done < n || n == 0; done += step {
		q := request{Type: cmd, Flags: flags, Offset: uint64(off + done), Length: uint32(min(step, n-done))}
		if err := c.do(ctx, q, nil, nil); err != nil || n == 0 {
			return err
		}
	}
	return nil
}

// chunked splits [0, n) into pieces no larger than the server's maximum
// payload and runs f on each, after checking alignment.
func (c *Client) chunked(n int, off int64, f func(lo, hi int) error) error {
	align := int64(max(c.info.MinBlockSize, 1))
	if off < 0 || off%align != 0 || int64(n)%align != 0 {
		return fmt.Errorf("nbd: request at %d of %d bytes not aligned to %d: %w", off, n, align, EINVAL)
	}
	step := int(min(c.info.MaxPayloadSize, MaxPayloadSize))
	step -= step % int(align)
	for lo := 0; lo < n || n == 0; lo += step {
		if err := f(lo, min(lo+step, n)); err != nil || n == 0 {
			return err
		}
	}
	return nil
}

// do sends one request and waits for its reply.
func (c *Client) do(ctx context.Context, q request, payload, readBuf []byte) error {
	cl := &call{buf: readBuf, done: make(chan error, 1)}
	if err := c.register(&q, cl); err != nil {
		return err
	}
	defer c.active.Done()
	if err := c.send(q, payload); err != nil {
		return err
	}
	select {
	case err := <-cl.done:
		return wrapReplyErr(q, err)
	case <-ctx.Done():
		if c.abandon(q.Handle, len(readBuf)) {
			return ctx.Err()
		}
		return wrapReplyErr(q, <-cl.done)
	}
}

func wrapReplyErr(q request, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("nbd: %s at %d (%d bytes): %w", q.Type, q.Offset, q.Length, err)
}

// register gives q a fresh handle and records its call.
func (c *Client) register(q *request, cl *call) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closing:
		return ErrClientClosed
	case c.err != nil:
		return c.err
	}
	c.next++
	q.Handle = c.next
	c.pending[q.Handle] = cl
	c.active.Add(1)
	return nil
}

// abandon forgets a call whose caller gave up; false when its reply is being
// read already (the caller must then wait for it).
func (c *Client) abandon(handle uint64, readLen int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.pending[handle]; !ok {
		return false
	}
	delete(c.pending, handle)
	c.orphans[handle] = readLen
	return true
}

func (c *Client) send(q request, payload []byte) error {
	hdr := make([]byte, requestLen)
	q.encode(hdr)
	bufs := net.Buffers{hdr}
	if len(payload) > 0 {
		bufs = append(bufs, payload)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := bufs.WriteTo(c.conn); err != nil {
		c.fail(fmt.Errorf("nbd: sending request: %w", err))
		return err
	}
	return nil
}

// readReplies matches replies to calls until the connection ends.
func (c *Client) readReplies() {
	defer close(c.readerDone)
	var hdr [simpleReplyLen]byte
	for {
		if _, err := io.ReadFull(c.conn, hdr[:]); err != nil {
			c.fail(fmt.Errorf("nbd: connection lost: %w", err))
			return
		}
		if err := c.readReply(hdr[:]); err != nil {
			c.fail(err)
			return
		}
	}
}

func (c *Client) readReply(hdr []byte) error {
	var r simpleReply
	if err := r.decode(hdr); err != nil {
		return err
	}
	c.mu.Lock()
	cl, ok := c.pending[r.Handle]
	delete(c.pending, r.Handle)
	orphanLen, orphan := c.orphans[r.Handle]
	delete(c.orphans, r.Handle)
	c.mu.Unlock()
	switch {
	case ok && r.Errno == 0 && len(cl.buf) > 0:
		if _, err := io.ReadFull(c.conn, cl.buf); err != nil {
			cl.done <- err
			return err
		}
	case orphan && r.Errno == 0:
		if _, err := io.CopyN(io.Discard, c.conn, int64(orphanLen)); err != nil {
			return err
		}
	case !ok && !orphan:
		return fmt.Errorf("%w: reply for unknown handle %d", errMalformed, r.Handle)
	}
	if ok {
		if r.Errno != 0 {
			cl.done <- r.Errno
		} else {
			cl.done <- nil
		}
	}
	return nil
}

// fail makes the connection unusable: pending calls get err, later ones too.
func (c *Client) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
	for h, cl := range c.pending {
		cl.done <- c.err
		delete(c.pending, h)
	}
	c.conn.Close()
}

// Close waits for the requests in flight, sends NBD_CMD_DISC and closes the
// connection.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		c.mu.Unlock()
		c.active.Wait()
		hdr := make([]byte, requestLen)
		request{Type: CmdDisc}.encode(hdr)
		c.wmu.Lock()
		_, _ = c.conn.Write(hdr)
		c.wmu.Unlock()
		c.conn.Close()
		<-c.readerDone
	})
	return nil
}
