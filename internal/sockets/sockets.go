// Package sockets opens the unix sockets netvol's daemons listen on.
package sockets

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ListenUnix listens on the unix socket path, creating its directory. A
// stale socket file nobody answers on is removed first; one that answers
// belongs to a running process and is an error naming what (the socket's
// role, for the message).
func ListenUnix(path, what string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s %s is in use by another process", what, path)
		}
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return l, nil
}
