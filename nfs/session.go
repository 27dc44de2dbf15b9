package nfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/netvol/netvol/volume/backend"
)

// session is one operation's connection to the NFS service of an export,
// with the export's root handle. Everything it touches is found by handle
// from root, one checked name at a time.
type session struct {
	t    target
	nfs  *rpcConn
	root []byte
}

// open asks the portmapper for the ports not configured, MOUNT for the
// export's root handle, and connects to NFS.
func (b *Backend) open(ctx context.Context, t target) (*session, error) {
	port, mountPort, err := b.ports(ctx, t)
	if err != nil {
		return nil, err
	}
	root, err := b.exportRoot(ctx, t, mountPort)
	if err != nil {
		return nil, err
	}
	c, err := dialRPC(ctx, "NFS", t.server, port, b.auth, &b.cfg, b.reserved)
	if err != nil {
		return nil, err
	}
	return &session{t: t, nfs: c, root: root}, nil
}

func (s *session) close() { s.nfs.close() }

// ports returns t's NFS and MOUNT ports (v3, TCP), asking the portmapper
// for those not configured.
func (b *Backend) ports(ctx context.Context, t target) (port, mountPort int, err error) {
	if t.port != 0 && t.mountPort != 0 {
		return t.port, t.mountPort, nil
	}
	c, err := dialRPC(ctx, "portmapper", t.server, rpc.PmapPort, rpc.AuthNull, &b.cfg, false)
	if err != nil {
		return 0, 0, err
	}
	defer c.close()
	port, mountPort = t.port, t.mountPort
	if port == 0 {
		port, err = c.registered(ctx, nfs.Nfs3Prog, "NFSv3")
	}
	if mountPort == 0 && err == nil {
		mountPort, err = c.registered(ctx, nfs.MountProg, "MOUNT v3")
	}
	return port, mountPort, err
}

// registered asks the portmapper for a program's TCP port; a program not
// registered is a server that is down (or serves no NFSv3).
func (c *rpcConn) registered(ctx context.Context, prog uint32, name string) (int, error) {
	p, err := c.getport(ctx, prog, 3)
	if err == nil && p == 0 {
		err = fmt.Errorf("%s over TCP is not registered with the portmapper at %s (is the NFS server running, with NFSv3?): %w",
			name, c.addr, backend.ErrUnavailable)
	}
	return p, err
}

func (b *Backend) exportRoot(ctx context.Context, t target, port int) ([]byte, error) {
	c, err := dialRPC(ctx, "MOUNT", t.server, port, b.auth, &b.cfg, b.reserved)
	if err != nil {
		return nil, err
	}
	defer c.close()
	fh, err := c.mnt(ctx, t.export)
	var refused *mountError
	if errors.As(err, &refused) {
		return nil, fmt.Errorf("MOUNT of %s refused: %w", t.export, err)
	}
	return fh, err
}

// volume looks up a volume's directory. Anything else under that name (a
// file, a symbolic link) is not a volume, and is reported as not found.
func (s *session) volume(ctx context.Context, name string) ([]byte, nfs.Fattr, error) {
	fh, attr, err := s.nfs.lookup(ctx, s.root, name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, attr, backend.ErrNotFound
	case err != nil:
		return nil, attr, fmt.Errorf("LOOKUP: %w", err)
	case attr.Type != nfs.NF3Dir:
		return nil, attr, fmt.Errorf("%s is %s, not a volume directory: %w", s.t.source(name), typeName(attr.Type), backend.ErrNotFound)
	case bytes.Equal(fh, s.root):
		// The name leads back to the export's root (a server-side bind
		// mount, say): never hand that out for removal.
		return nil, attr, fmt.Errorf("%s is the export's root, not a volume: %w", s.t.source(name), backend.ErrInvalid)
	}
	return fh, attr, nil
}

func typeName(t uint32) string {
	switch t {
	case nfs.NF3Reg:
		return "a file"
	case nfs.NF3Lnk:
		return "a symbolic link"
	case nfs.NF3Dir:
		return "a directory"
	}
	return fmt.Sprintf("a special file (NFS type %d)", t)
}
