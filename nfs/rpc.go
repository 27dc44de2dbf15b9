package nfs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"

	xdr2 "github.com/rasky/go-xdr/xdr2"
	"github.com/willscott/go-nfs-client/nfs/rpc"
	"github.com/willscott/go-nfs-client/nfs/xdr"

	"github.com/netvol/netvol/volume/backend"
)

// ONC RPC (RFC 5531) values the library does not name.
const (
	msgCall         = 0
	msgReply        = 1
	rejectAuthError = 1
	authTooWeak     = 5
	authSysFlavor   = 1
	lastFragment    = 1 << 31
	// maxRecord bounds a reply; the largest we ask for, READDIRPLUS, is
	// 32 KiB.
	maxRecord = 1 << 20
	// Reserved source ports, the range Linux's own client uses.
	minReservedPort = 665
	reservedPorts   = 1024 - minReservedPort
)

// authSys builds AUTH_SYS credentials with no supplementary groups. The
// library's rpc.NewAuthUnix sends group 0 as one, which would give the
// caller root's group on the server.
func authSys(machine string, uid, gid, stamp uint32) rpc.Auth {
	body := struct {
		Stamp   uint32
		Machine string
		UID     uint32
		GID     uint32
		GIDs    []uint32
	}{Stamp: stamp, Machine: machine, UID: uid, GID: gid}
	var b bytes.Buffer
	_ = xdr.Write(&b, body) // a bytes.Buffer never fails a write
	return rpc.Auth{Flavor: authSysFlavor, Body: b.Bytes()}
}

// rpcConn is one TCP connection to one RPC service, used by one operation
// at a time. Calls are sequential, so a reply is matched by its xid with no
// reader goroutine, and the socket's deadline bounds each call.
type rpcConn struct {
	conn    net.Conn
	r       *bufio.Reader
	service string // "NFS", "MOUNT" or "portmapper", for errors
	addr    string
	auth    rpc.Auth
	timeout time.Duration
	xid     uint32
	// ctxDeadline: the socket's deadline is ctx's, so a timeout on the
	// socket is ctx's deadline passing, maybe a moment before ctx says so.
	ctxDeadline bool
}

// dialRPC connects to service at host:port. reserved binds a source port
// below 1024, which Linux's nfsd and mountd demand by default (the export
// option "secure"); only root can.
func dialRPC(ctx context.Context, service, host string, port int, auth rpc.Auth, cfg *Config, reserved bool) (*rpcConn, error) {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	conn, err := dialTCP(ctx, addr, cfg.DialTimeout, reserved)
	if err != nil {
		return nil, fmt.Errorf("%s service at %s: %w: %w", service, addr, backend.ErrUnavailable, err)
	}
	return &rpcConn{conn: conn, r: bufio.NewReader(conn), service: service, addr: addr,
		auth: auth, timeout: cfg.CallTimeout, xid: rand.Uint32()}, nil
}

func dialTCP(ctx context.Context, addr string, timeout time.Duration, reserved bool) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if !reserved {
		return d.DialContext(ctx, "tcp", addr)
	}
	start := rand.IntN(reservedPorts)
	var err error
	for i := range 32 {
		d.LocalAddr = &net.TCPAddr{Port: minReservedPort + (start+i)%reservedPorts}
		var c net.Conn
		c, err = d.DialContext(ctx, "tcp", addr)
		// A port in use, or in TIME_WAIT towards this server: the next.
		if !errors.Is(err, syscall.EADDRINUSE) && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			return c, err
		}
	}
	return nil, fmt.Errorf("no free reserved source port: %w", err)
}

func (c *rpcConn) close() { _ = c.conn.Close() }

// call sends one call and returns the reader positioned at its results.
func (c *rpcConn) call(ctx context.Context, prog, vers, proc uint32, args any) (*bytes.Reader, error) {
	c.xid++
	msg, err := c.encode(prog, vers, proc, args)
	if err != nil {
		return nil, err
	}
	stop := c.bound(ctx)
	defer stop()
	if _, err := c.conn.Write(msg); err != nil {
		return nil, c.unavailable(ctx, err)
	}
	for {
		rec, err := readRecord(c.r)
		if err != nil {
			return nil, c.unavailable(ctx, err)
		}
		res, err := parseReply(rec, c.xid)
		if errors.Is(err, errOtherXID) {
			continue // not ours: a duplicate reply to an earlier call
		}
		if err != nil {
			return nil, fmt.Errorf("%s service at %s: %w", c.service, c.addr, err)
		}
		return res, nil
	}
}

// bound puts ctx's deadline, or the call timeout when that is sooner, on
// the socket, and makes cancelling ctx interrupt a blocked read or write.
func (c *rpcConn) bound(ctx context.Context) (stop func() bool) {
	d := time.Now().Add(c.timeout)
	cd, ok := ctx.Deadline()
	c.ctxDeadline = ok && cd.Before(d)
	if c.ctxDeadline {
		d = cd
	}
	_ = c.conn.SetDeadline(d)
	return context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Unix(1, 0)) })
}

// unavailable wraps a transport failure: the server did not answer.
func (c *rpcConn) unavailable(ctx context.Context, err error) error {
	ctxErr := ctx.Err()
	if ctxErr == nil && c.ctxDeadline && errors.Is(err, os.ErrDeadlineExceeded) {
		ctxErr = context.DeadlineExceeded
	}
	if ctxErr != nil && !errors.Is(err, ctxErr) {
		err = fmt.Errorf("%w: %w", ctxErr, err)
	}
	return fmt.Errorf("%s service at %s: %w: %w", c.service, c.addr, backend.ErrUnavailable, err)
}

// encode builds one record: the record mark, the call header, the args.
func (c *rpcConn) encode(prog, vers, proc uint32, args any) ([]byte, error) {
	hdr := struct {
		Xid, Type uint32
		Call      rpc.Header
	}{c.xid, msgCall, rpc.Header{Rpcvers: 2, Prog: prog, Vers: vers, Proc: proc, Cred: c.auth, Verf: rpc.AuthNull}}
	var b bytes.Buffer
	b.Write(make([]byte, 4)) // the record mark, set below
	if err := xdr.Write(&b, hdr); err != nil {
		return nil, fmt.Errorf("encoding an RPC call: %w", err)
	}
	if args != nil {
		if err := xdr.Write(&b, args); err != nil {
			return nil, fmt.Errorf("encoding an RPC call: %w", err)
		}
	}
	msg := b.Bytes()
	binary.BigEndian.PutUint32(msg, lastFragment|uint32(len(msg)-4))
	return msg, nil
}

// readRecord reads the fragments of one record (RFC 5531, section 11).
func readRecord(r io.Reader) ([]byte, error) {
	var rec []byte
	for {
		var mark [4]byte
		if _, err := io.ReadFull(r, mark[:]); err != nil {
			return nil, err
		}
		m := binary.BigEndian.Uint32(mark[:])
		n := int(m &^ lastFragment)
		if len(rec)+n > maxRecord {
			return nil, fmt.Errorf("RPC record longer than %d bytes", maxRecord)
		}
		rec = slices.Grow(rec, n)[:len(rec)+n]
		if _, err := io.ReadFull(r, rec[len(rec)-n:]); err != nil {
			return nil, err
		}
		if m&lastFragment != 0 {
			return rec, nil
		}
	}
}

var errOtherXID = errors.New("reply to another call")

// parseReply checks a reply's header and returns the reader at its
// results.
func parseReply(rec []byte, xid uint32) (*bytes.Reader, error) {
	r := bytes.NewReader(rec)
	var h struct{ Xid, Type, Stat uint32 }
	if err := decode(r, &h); err != nil {
		return nil, err
	}
	if h.Xid != xid {
		return nil, errOtherXID
	}
	if h.Type != msgReply {
		return nil, fmt.Errorf("RPC message type %d where a reply was due", h.Type)
	}
	if h.Stat != rpc.MsgAccepted {
		return nil, denied(r)
	}
	var a struct {
		Verf rpc.Auth
		Stat uint32
	}
	if err := decode(r, &a); err != nil {
		return nil, err
	}
	if a.Stat != rpc.Success {
		return nil, notAccepted(r, a.Stat)
	}
	return r, nil
}

func denied(r *bytes.Reader) error {
	var d struct{ Stat, Detail uint32 }
	if err := decode(r, &d); err != nil {
		return err
	}
	switch {
	case d.Stat != rejectAuthError:
		return errors.New("RPC call denied: RPC_MISMATCH, the server speaks no RPC version 2")
	case d.Detail == authTooWeak:
		return errors.New("RPC call denied: AUTH_TOOWEAK, the server wants a reserved source port (run as root) or a stronger flavour than AUTH_SYS")
	}
	return fmt.Errorf("RPC call denied: authentication error %d (RFC 5531 auth_stat)", d.Detail)
}

func notAccepted(r *bytes.Reader, stat uint32) error {
	switch stat {
	case rpc.ProgUnavail:
		return errors.New("PROG_UNAVAIL: the server does not serve this program")
	case rpc.ProgMismatch:
		var v struct{ Low, High uint32 }
		if err := decode(r, &v); err != nil {
			return err
		}
		return fmt.Errorf("PROG_MISMATCH: the server serves versions %d to %d only", v.Low, v.High)
	case rpc.ProcUnavail:
		return errors.New("PROC_UNAVAIL: the server does not know the procedure")
	case rpc.GarbageArgs:
		return errors.New("GARBAGE_ARGS: the server could not decode the call")
	}
	return fmt.Errorf("RPC call not accepted: status %d", stat)
}

// decode reads one XDR value from r. The library's xdr.Read allocates
// whatever length a reply claims, up to 2 GiB; here no length may exceed
// what is left of the record.
func decode(r *bytes.Reader, v any) error {
	if _, err := xdr2.UnmarshalLimited(r, v, uint(r.Len())); err != nil {
		return fmt.Errorf("malformed RPC reply: %w", err)
	}
	return nil
}
