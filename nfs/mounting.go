package nfs

import (
	"context"
	"fmt"
	"net"

	"github.com/netvol/netvol/volume/backend"
)

// Mount mounts the volume's directory at dir with mount(2).
func (b *Backend) Mount(ctx context.Context, name string, o backend.Options, dir string) (backend.Mounted, error) {
	t, err := b.targetFor(name, o)
	if err != nil {
		return backend.Mounted{}, fmt.Errorf("nfs: %w", err)
	}
	if err := CheckMountOptions(o.MountOpts); err != nil {
		return backend.Mounted{}, fmt.Errorf("nfs: volume %q: %w", name, err)
	}
	p, err := b.mountParams(ctx, t, name, dir, o.MountOpts)
	if err != nil {
		return backend.Mounted{}, fmt.Errorf("nfs: volume %q on %s: %w", name, t, err)
	}
	m := mountSpec(p)
	mounter := b.cfg.Mounter
	err = bounded(ctx, func() error { return mounter.Mount(m) }, func() { _ = mounter.Unmount(m.Target) })
	if err != nil {
		return backend.Mounted{}, fmt.Errorf("nfs: volume %q: mounting %s at %s: %w", name, m.Source, dir, err)
	}
	return backend.Mounted{Export: m.Source, Method: "nfs"}, nil
}

// mountParams resolves what the kernel cannot: the server's address and,
// for NFSv3, the NFS and MOUNT ports.
func (b *Backend) mountParams(ctx context.Context, t target, name, dir string, user []string) (mountParams, error) {
	ip, err := resolve(ctx, t.server)
	if err != nil {
		return mountParams{}, err
	}
	p := mountParams{Source: t.source(name), Target: dir, Version: b.cfg.Version, Addr: ip, Port: t.port, User: user}
	if p.Version == Version3 {
		p.Port, p.MountPort, err = b.ports(ctx, t)
	}
	return p, err
}

// resolve returns host's address, IPv4 first: the kernel does no DNS.
func resolve(ctx context.Context, host string) (net.IP, error) {
	if ip := net.ParseIP(host); ip != nil {
		return ip, nil
	}
	ips, err := net.DefaultResolver.LookupIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w: %w", host, backend.ErrUnavailable, err)
	}
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip, nil
		}
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("resolving %s: no address: %w", host, backend.ErrUnavailable)
	}
	return ips[0], nil
}

// Unmount unmounts dir; it succeeds when nothing is mounted there.
func (b *Backend) Unmount(ctx context.Context, name string, o backend.Options, dir string, m backend.Mounted) error {
	mounter := b.cfg.Mounter
	if err := bounded(ctx, func() error { return mounter.Unmount(dir) }, nil); err != nil {
		return fmt.Errorf("nfs: volume %q: unmounting %s: %w", name, dir, err)
	}
	return nil
}

// bounded runs f, a system call that can block for long on a dead server
// (mount(2) and umount(2) of a hard NFS mount do), and stops waiting at
// ctx.Done. undo, when set, reverts a success that comes after that, which
// nobody would know of otherwise.
func bounded(ctx context.Context, f func() error, undo func()) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		if undo != nil {
			go func() {
				if <-done == nil {
					undo()
				}
			}()
		}
		return fmt.Errorf("no answer from the server in time: %w: %w", backend.ErrUnavailable, ctx.Err())
	}
}
