package blockvol

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/volume/backend"
)

// nbdAddr is where the NBD server listens: Config.NBDAddr, or what the
// daemon reports, asked each time so a restarted daemon may move.
func (b *Backend) nbdAddr(ctx context.Context, m *member) (string, error) {
	if b.cfg.NBDAddr != "" {
		return b.cfg.NBDAddr, nil
	}
	h, err := m.api.Health(ctx)
	if err != nil {
		return "", b.mapErr(m, err)
	}
	return DeriveNBDAddr(m.name, h.NBD)
}

// DeriveNBDAddr is where the plugin dials NBD: it combines the API's host with the NBD port the daemon
// reports: the daemon knows its listening address (often 0.0.0.0 or a
// loopback one), the plugin knows the name it reached the daemon by. A unix
// socket is used as it is.
func DeriveNBDAddr(apiServer, reported string) (string, error) {
	if reported == "" {
		return "", errors.New("the storage server does not report its NBD address (an older netvol server?): configure the NBD address")
	}
	if strings.HasPrefix(reported, "unix:") {
		return reported, checkNBDAddr(reported)
	}
	_, port, err := net.SplitHostPort(reported)
	if err != nil || port == "" {
		return "", fmt.Errorf("the storage server reports the NBD address %q: want host:port or unix:/path", reported)
	}
	host := apiServer
	if h, _, err := net.SplitHostPort(apiServer); err == nil {
		host = h
	}
	return net.JoinHostPort(host, port), nil
}

// dialer dials addr and negotiates export, read-write. The export name is a
// credential: errors say which server, never which name.
func (b *Backend) dialer(addr, export string) Dialer {
	return func(ctx context.Context) (net.Conn, nbd.ExportInfo, error) {
		conn, err := dialNBD(ctx, addr)
		if err != nil {
			return nil, nbd.ExportInfo{}, fmt.Errorf("NBD server %s: %w: %w", addr, backend.ErrUnavailable, err)
		}
		nc, info, err := nbd.Negotiate(ctx, conn, nbd.ClientOptions{ExportName: export})
		if err != nil {
			conn.Close()
			return nil, nbd.ExportInfo{}, fmt.Errorf("NBD handshake with %s: %w", addr, err)
		}
		if info.Flags&nbd.FlagReadOnly != 0 {
			nc.Close()
			return nil, nbd.ExportInfo{}, fmt.Errorf("NBD server %s serves the export read-only", addr)
		}
		return nc, info, nil
	}
}

// dialNBD connects to host:port over TCP without Nagle's delay (requests
// are small and latency-bound), or to unix:/path.
func dialNBD(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return d.DialContext(ctx, "unix", path)
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		if err := tc.SetNoDelay(true); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return conn, nil
}
