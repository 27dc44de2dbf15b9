package blockvol

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/netvol/netvol/internal/mount"
	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume/backend"
)

// Subdir is the directory inside the file system that Docker gets: a fresh
// ext4 root holds lost+found, which would stop Docker from copying image
// content into the volume.
const Subdir = "data"

// undoTimeout bounds the clean-up after a failed mount. It runs past the
// caller's deadline (often the reason for the failure): an attachment left
// behind would keep other nodes out until its lease lapsed.
const undoTimeout = 30 * time.Second

// Mount attaches the volume read-write, formats it when blank, mounts it at
// target and keeps its lease renewed until Unmount.
func (b *Backend) Mount(ctx context.Context, name string, o backend.Options, target string) (backend.Mounted, error) {
	if err := checkOptions(o); err != nil {
		return backend.Mounted{}, fmt.Errorf("mount volume %q: %w", name, err)
	}
	loc := located{m: b.pool.members[0]} // one server: its attach says whether the volume is there
	if !b.pool.single() {
		var err error
		if loc, err = b.pool.locate(ctx, name, o.Location); err != nil {
			return backend.Mounted{}, fmt.Errorf("mount volume %q: %w", name, b.mapErr(loc.m, err))
		}
	}
	addr, err := b.nbdAddr(ctx, loc.m)
	if err != nil {
		return backend.Mounted{}, fmt.Errorf("mount volume %q: finding the NBD server of %s: %w", name, loc.m.name, err)
	}
	op := &mountOp{b: b, m: loc.m, name: name, o: o, target: target, addr: addr}
	m, err := op.run(ctx)
	if err != nil {
		err = fmt.Errorf("mount volume %q: %w", name, err)
		if uerr := op.undo(ctx); uerr != nil {
			err = fmt.Errorf("%w; undoing it: %w", err, uerr)
		}
		return backend.Mounted{}, err
	}
	return m, nil
}

// mountOp is one Mount in progress, with what to undo should it fail.
type mountOp struct {
	b      *Backend
	m      *member // the storage server holding the volume
	name   string
	o      backend.Options
	target string
	addr   string
	undos  []func(context.Context) error // in the order done
}

func (op *mountOp) run(ctx context.Context) (backend.Mounted, error) {
	b := op.b
	g, err := b.attachRW(ctx, op.m, op.name)
	if err != nil {
		return backend.Mounted{}, err
	}
	op.undos = append(op.undos, func(ctx context.Context) error { return b.detach(ctx, op.m, op.name) })
	// Renew from now on: formatting and mounting may outlast the lease.
	l := b.startRenewal(op.m, op.name, api.Lease{Expires: g.Expires, ExpiresInMS: g.ExpiresInMS, Instance: g.Instance}, Device{})
	l.setExport(g.Export)
	op.undos = append(op.undos, func(context.Context) error { b.stopRenewal(op.name); return nil })
	dev, err := b.attachDevice(ctx, op.name, op.addr, g.Export)
	if err != nil {
		return backend.Mounted{}, fmt.Errorf("attaching the NBD export as a block device: %w", err)
	}
	op.undos = append(op.undos, func(ctx context.Context) error { return b.cfg.Attacher.Detach(ctx, dev) })
	if !l.setDevice(dev) {
		return backend.Mounted{}, fmt.Errorf("lease lost while attaching: %s", l.lostWhy())
	}
	if err := b.prepare(ctx, dev.Path, op.o.MkfsOpts); err != nil {
		return backend.Mounted{}, err
	}
	if err := b.checkMMP(ctx, dev.Path, op.name, g.Fenced); err != nil {
		return backend.Mounted{}, err
	}
	if err := op.mountFS(dev.Path); err != nil {
		return backend.Mounted{}, err
	}
	b.growAtMount(ctx, l, dev, op.target)
	return backend.Mounted{Device: dev.Path, Method: dev.Method, Export: g.Export,
		Generation: g.Generation, Subdir: Subdir}, nil
}

// mountFS mounts the device at the target and makes the data directory.
func (op *mountOp) mountFS(device string) error {
	mnt := mount.Mount{Source: device, Target: op.target, Type: "ext4", Options: mountOptions(op.o.MountOpts)}
	if err := op.b.cfg.Mounter.Mount(mnt); err != nil {
		return fmt.Errorf("mounting %s: %w", device, err)
	}
	op.undos = append(op.undos, func(context.Context) error { return op.b.cfg.Mounter.Unmount(op.target) })
	if err := ensureData(op.target, op.o); err != nil {
		return fmt.Errorf("preparing the %s directory: %w", Subdir, err)
	}
	return nil
}

// undo reverts what run did, last step first.
func (op *mountOp) undo(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	var errs []error
	for i := len(op.undos) - 1; i >= 0; i-- {
		errs = append(errs, op.undos[i](ctx))
	}
	return errors.Join(errs...)
}

// detach ends this node's attachment; one already gone is fine.
func (b *Backend) detach(ctx context.Context, m *member, name string) error {
	err := m.api.Detach(ctx, name, b.cfg.Node)
	if err != nil && !errors.Is(err, api.ErrNotFound) {
		return fmt.Errorf("detaching on the storage server: %w", b.mapErr(m, err))
	}
	return nil
}

// holder is the member a mounted volume is attached on: its lease's, else
// (after a restart) where the pool finds it.
func (b *Backend) holder(ctx context.Context, name, hint string) (*member, error) {
	if l := b.lease(name); l != nil && l.m != nil {
		return l.m, nil
	}
	loc, err := b.pool.locate(ctx, name, hint)
	if err != nil {
		return nil, b.mapErr(loc.m, err)
	}
	return loc.m, nil
}

// ensureData makes <target>/data with o's mode and owner when it is
// missing, and otherwise leaves it as the volume's users made it. It
// refuses anything but a directory there (a symlink would lead Docker
// outside the volume).
func ensureData(target string, o backend.Options) error {
	dir := filepath.Join(target, Subdir)
	err := os.Mkdir(dir, 0o700)
	if errors.Is(err, fs.ErrExist) {
		st, err := os.Lstat(dir)
		if err == nil && !st.IsDir() {
			err = fmt.Errorf("%s is a %v, not a directory", dir, st.Mode().Type())
		}
		return err
	}
	if err != nil {
		return err
	}
	mode := o.Mode & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	if mode == 0 {
		mode = 0o755
	}
	// Mkdir's mode is cut by the umask; Chmod is exact.
	if err := os.Chmod(dir, mode); err != nil {
		return err
	}
	if o.UID >= 0 || o.GID >= 0 {
		return os.Lchown(dir, o.UID, o.GID)
	}
	return nil
}

// Unmount unmounts target, then stops the lease renewal, releases the
// device and detaches. The renewal stops only once the file system is
// unmounted: a volume still mounted must keep its lease.
func (b *Backend) Unmount(ctx context.Context, name string, o backend.Options, target string, m backend.Mounted) error {
	if target != "" {
		if err := b.cfg.Mounter.Unmount(target); err != nil {
			return fmt.Errorf("unmount volume %q: %w", name, err)
		}
	}
	srv, herr := b.holder(ctx, name, o.Location)
	b.stopRenewal(name)
	var errs []error
	if m.Device != "" {
		if err := b.cfg.Attacher.Detach(ctx, Device{Path: m.Device, Method: m.Method}); err != nil {
			errs = append(errs, fmt.Errorf("releasing %s: %w", m.Device, err))
		}
	}
	// Detach even when the device would not go: the server then closes its
	// connections, and the volume is free for other nodes.
	if herr != nil {
		errs = append(errs, fmt.Errorf("detaching: %w", herr))
	} else {
		errs = append(errs, b.detach(ctx, srv, name))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("unmount volume %q: %w", name, err)
	}
	return nil
}

// Resume renews the lease of a volume found mounted when the plugin
// starts (and grows its device and file system should the volume have
// grown meanwhile: see grow.go). When the server shows this node no longer holds the attachment
// of m's generation, the lease is lost: it is marked so (Fenced) and not
// renewed. Otherwise renewal goes on in the background, also when this
// first renewal failed (its error is returned).
func (b *Backend) Resume(ctx context.Context, name string, o backend.Options, target string, m backend.Mounted) error {
	srv, held, err := b.heldGeneration(ctx, name, o.Location)
	switch {
	case errors.Is(err, backend.ErrUnavailable):
		// Cannot tell: renew, and keep trying.
	case err != nil && !errors.Is(err, backend.ErrNotFound):
		return fmt.Errorf("resume volume %q: %w", name, err)
	case err != nil || held == 0 || m.Generation != 0 && held != m.Generation:
		return b.resumeFenced(ctx, name, m)
	}
	if srv == nil {
		// Where it is cannot be told now (its server does not answer):
		// renew where it was last seen, and keep trying.
		if srv = b.pool.member(o.Location); srv == nil {
			return fmt.Errorf("resume volume %q: %w", name, err)
		}
	}
	l, rerr := srv.api.Renew(ctx, name, b.cfg.Node)
	if rerr != nil {
		l = api.Lease{Expires: b.cfg.Now()} // unknown: retry soon
		rerr = fmt.Errorf("resume volume %q: renewing the lease: %w", name, b.mapErr(srv, rerr))
	}
	rl := b.startRenewal(srv, name, l, Device{Path: m.Device, Method: m.Method})
	rl.setExport(m.Export)
	// The size of device and file system is unknown: the first renewal
	// checks them (in the background: the device may be stalled).
	rl.setTarget(target)
	if err != nil {
		return fmt.Errorf("resume volume %q: %w", name, err)
	}
	return rerr
}

// resumeFenced handles a mount found at start whose attachment the server
// no longer holds: the lease is marked lost, and the device released so
// that I/O on it fails at once (as fence does while running).
func (b *Backend) resumeFenced(ctx context.Context, name string, m backend.Mounted) error {
	why := fmt.Sprintf("node %q holds no attachment of generation %d any more", b.cfg.Node, m.Generation)
	b.markLost(name, why)
	err := fmt.Errorf("resume volume %q: lease lost: %s", name, why)
	if m.Device == "" {
		return err
	}
	if derr := b.cfg.Attacher.Detach(ctx, Device{Path: m.Device, Method: m.Method}); derr != nil {
		return fmt.Errorf("%w; releasing %s: %w", err, m.Device, derr)
	}
	return fmt.Errorf("%w; %s released", err, m.Device)
}

// heldGeneration is the generation of this node's attachment of name, 0
// when it holds none.
func (b *Backend) heldGeneration(ctx context.Context, name, hint string) (*member, uint64, error) {
	loc, err := b.pool.locate(ctx, name, hint)
	if err != nil {
		return loc.m, 0, b.mapErr(loc.m, err)
	}
	for _, a := range loc.v.Attachments {
		if a.Node == b.cfg.Node {
			return loc.m, a.Generation, nil
		}
	}
	return loc.m, 0, nil
}
