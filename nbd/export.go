package nbd

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
)

// This file holds the contracts of the server side: what an export serves
// (Backend), how the server finds exports (Exports), and the Export the daemon
// hands out and later revokes. Read it first.

// Backend is what an export serves; *qcow2.Image will satisfy it. Several
// connections to one export share one Backend and call it concurrently.
// Errors are answered as NBD errors (see Errno); wrap ErrNoSpace or
// syscall.ENOSPC when out of space.
type Backend interface {
	io.ReaderAt // a short read is an error (answered NBD_EIO)
	io.WriterAt
	// Size is the export size in bytes: told to a client when it
	// connects, and read again for every request's range check, so that
	// an export that grows serves the new range on connections made
	// before (their clients learn the size anew by other means).
	Size() int64
	// Flush makes every write that returned before it durable when it returns.
	Flush() error
	// Discard lets go of a range; it reads as zeros afterwards.
	Discard(off, n int64) error
}

// ZeroWriter is an optional Backend extension for NBD_CMD_WRITE_ZEROES.
// Without it the server discards the range, or writes zero buffers when the
// client set NBD_CMD_FLAG_NO_HOLE. mayTrim false means the range must stay
// allocated.
type ZeroWriter interface {
	WriteZeroes(off, n int64, mayTrim bool) error
}

// ErrUnknownExport is what Exports.Open returns (wrapped) for a name it does
// not serve. The server answers every Open error the same way
// (NBD_REP_ERR_UNKNOWN), so a refused name looks exactly like an unknown one.
var ErrUnknownExport = errors.New("nbd: unknown export")

// Exports resolves export names for the server. The storage daemon implements
// it over its attachments; ExportMap is a simple in-memory one.
type Exports interface {
	// Open returns the export a client names in NBD_OPT_GO, NBD_OPT_INFO or
	// NBD_OPT_EXPORT_NAME. It may be called for NBD_OPT_INFO without the
	// export being served afterwards, so it must have no side effects that
	// need undoing. ctx ends when the connection's handshake does.
	Open(ctx context.Context, name string) (*Export, error)
	// List answers NBD_OPT_LIST; only Name and Description are sent. It is
	// called only when Server.ListExports is set.
	List(ctx context.Context) ([]ExportInfo, error)
}

// Export is one served volume. Fill the exported fields, hand the same
// pointer out from Exports.Open for as long as the attachment is valid, and
// call Revoke to fence it. An Export must not be copied.
type Export struct {
	Name        string
	Description string // NBD_INFO_DESCRIPTION, NBD_OPT_LIST
	Backend     Backend
	ReadOnly    bool // NBD_FLAG_READ_ONLY; writes are answered NBD_EPERM

	mu      sync.Mutex
	revoked bool
	conns   map[*serverConn]struct{}
	active  sync.WaitGroup // connections in transmission, until their last request ended
	budget  *byteBudget    // bounds the buffers of all its connections' requests in flight
}

// Why Export.attach refuses a connection.
var (
	errRevoked      = errors.New("nbd: export revoked")
	errTooManyConns = errors.New("nbd: too many connections to the export")
)

// Revoke fences the export: it closes every connection serving it, waits
// until the requests those connections had in flight have returned from the
// Backend, and makes the server refuse the export from then on (even if
// Exports.Open still returns it). After Revoke returns no request of an old
// connection touches the Backend again.
func (e *Export) Revoke() {
	e.mu.Lock()
	e.revoked = true
	for c := range e.conns {
		c.abort()
	}
	e.mu.Unlock()
	e.active.Wait()
}

// Revoked reports whether Revoke was called.
func (e *Export) Revoked() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.revoked
}

// attach registers c as serving e and returns the buffer budget its
// connections share (of buffered bytes, made by the first attach); an error
// once e is revoked or while maxConns connections serve it.
func (e *Export) attach(c *serverConn, maxConns, buffered int) (*byteBudget, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.revoked:
		return nil, errRevoked
	case len(e.conns) >= maxConns:
		return nil, errTooManyConns
	}
	if e.conns == nil {
		e.conns = make(map[*serverConn]struct{})
	}
	if e.budget == nil {
		e.budget = newByteBudget(buffered)
	}
	e.conns[c] = struct{}{}
	e.active.Add(1)
	return e.budget, nil
}

// detach undoes attach once c has finished its last request.
func (e *Export) detach(c *serverConn) {
	e.mu.Lock()
	delete(e.conns, c)
	e.mu.Unlock()
	e.active.Done()
}

// ExportInfo describes an export as a client sees it after the handshake.
type ExportInfo struct {
	Name               string
	Description        string
	Size               uint64
	Flags              TransmissionFlags
	MinBlockSize       uint32 // 1 when the server sent no NBD_INFO_BLOCK_SIZE
	PreferredBlockSize uint32 // 4096 by default
	MaxPayloadSize     uint32 // 32 MiB by default
}

// Logger receives connection-level events of the server (a client that broke
// the protocol, a failed TLS handshake). logrus.FieldLogger satisfies it.
type Logger interface {
	Debugf(format string, args ...any)
	Warnf(format string, args ...any)
}

// ExportMap is a goroutine-safe Exports over a map, for tests and simple
// servers. The zero value is empty and ready to use.
type ExportMap struct {
	mu sync.RWMutex
	m  map[string]*Export
}

// Add serves e under e.Name, replacing any export of that name.
func (m *ExportMap) Add(e *Export) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		m.m = make(map[string]*Export)
	}
	m.m[e.Name] = e
}

// Remove stops resolving name and returns the export it named, if any; call
// Revoke on it to close its connections.
func (m *ExportMap) Remove(name string) *Export {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.m[name]
	delete(m.m, name)
	return e
}

// Open implements Exports.
func (m *ExportMap) Open(_ context.Context, name string) (*Export, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if e, ok := m.m[name]; ok {
		return e, nil
	}
	return nil, ErrUnknownExport
}

// List implements Exports, sorted by name.
func (m *ExportMap) List(context.Context) ([]ExportInfo, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	list := make([]ExportInfo, 0, len(m.m))
	for _, e := range m.m {
		list = append(list, ExportInfo{Name: e.Name, Description: e.Description})
	}
	slices.SortFunc(list, func(a, b ExportInfo) int { return strings.Compare(a.Name, b.Name) })
	return list, nil
}
