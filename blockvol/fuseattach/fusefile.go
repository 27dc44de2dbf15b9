package fuseattach

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/netvol/netvol/nbd"
)

// DiskName is the one file of the FUSE file system: the export.
const DiskName = "disk"

// FUSE settings. Requests of 1 MiB (the kernel's limit) let a loop device's
// large I/O through whole; 128 background requests keep the NBD connection
// busy (async direct I/O from the loop device is all background).
const (
	maxWrite      = 1 << 20
	maxBackground = 128
	attrTimeout   = time.Hour // nothing but this process changes the file
)

// rootNode is the file system's root directory; it holds DiskName.
type rootNode struct {
	fs.Inode
	disk *diskNode
}

var (
	_ fs.NodeOnAdder   = (*rootNode)(nil)
	_ fs.NodeStatfser  = (*rootNode)(nil)
	_ fs.NodeGetattrer = (*diskNode)(nil)
	_ fs.NodeSetattrer = (*diskNode)(nil)
	_ fs.NodeOpener    = (*diskNode)(nil)
	_ fs.NodeReader    = (*diskNode)(nil)
	_ fs.NodeWriter    = (*diskNode)(nil)
	_ fs.NodeFsyncer   = (*diskNode)(nil)
	_ fs.NodeFlusher   = (*diskNode)(nil)
	_ fs.NodeAllocater = (*diskNode)(nil)
)

func (r *rootNode) OnAdd(ctx context.Context) {
	ch := r.NewPersistentInode(ctx, r.disk, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2})
	r.AddChild(DiskName, ch, false)
}

// Statfs gives the loop driver a block size: it takes the discard
// granularity from it.
func (r *rootNode) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize, out.Frsize = 4096, 4096
	out.Blocks = uint64(r.disk.b.Size()) / 4096
	out.NameLen = 255
	return 0
}

// diskNode is the export as a regular file of the export's size; it
// grows with the export (helper.grow), never by a write.
type diskNode struct {
	fs.Inode
	b Backing
}

func (d *diskNode) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.attr(&out.Attr)
	out.SetTimeout(attrTimeout)
	return 0
}

func (d *diskNode) attr(a *fuse.Attr) {
	size := uint64(d.b.Size())
	a.Mode = syscall.S_IFREG | 0o600
	a.Size = size
	a.Blocks = (size + 511) / 512
	a.Blksize = 4096
	a.Nlink = 1
}

// Setattr accepts what leaves the size as it is (times, mode from tools);
// the export's size cannot change from here.
func (d *diskNode) Setattr(_ context.Context, _ fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && int64(sz) != d.b.Size() {
		return syscall.EPERM
	}
	d.attr(&out.Attr)
	out.SetTimeout(attrTimeout)
	return 0
}

// Open keeps the page cache across opens (for buffered readers); the loop
// device opens with O_DIRECT and bypasses it.
func (d *diskNode) Open(context.Context, uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (d *diskNode) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n := clampLen(off, int64(len(dest)), d.b.Size())
	if n <= 0 {
		return fuse.ReadResultData(nil), 0
	}
	if err := d.b.ReadAt(ctx, dest[:n], off); err != nil {
		return nil, errnoOf(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (d *diskNode) Write(ctx context.Context, _ fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if clampLen(off, int64(len(data)), d.b.Size()) != int64(len(data)) {
		return 0, syscall.ENOSPC // the file cannot grow
	}
	if err := d.b.WriteAt(ctx, data, off); err != nil {
		return 0, errnoOf(err)
	}
	return uint32(len(data)), 0
}

// Fsync is where durability is decided: the loop device turns a flush of
// the block device into fsync of this file, and the kernel's FUSE client
// writes back its own dirty pages before sending FUSE_FSYNC. Returning
// ENOSYS would make the kernel stop sending fsyncs for good.
func (d *diskNode) Fsync(ctx context.Context, _ fs.FileHandle, _ uint32) syscall.Errno {
	return errnoOf(d.b.Flush(ctx))
}

// Flush (FUSE_FLUSH, sent at every close) has nothing to do: durability is
// Fsync's.
func (d *diskNode) Flush(context.Context, fs.FileHandle) syscall.Errno { return 0 }

// Allocate serves fallocate(2), which the loop device uses for discard
// (PUNCH_HOLE) and write-zeroes (ZERO_RANGE, or PUNCH_HOLE when the
// blocks may be unmapped). Both must read back as zeroes. Plain allocation
// has nothing to do: the export is as large as it will be.
func (d *diskNode) Allocate(ctx context.Context, _ fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	const known = unix.FALLOC_FL_KEEP_SIZE | unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_ZERO_RANGE
	if mode&^known != 0 {
		return syscall.EOPNOTSUPP
	}
	n := clampLen(int64(off), int64(size), d.b.Size())
	if mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_ZERO_RANGE) == 0 || n <= 0 {
		return 0
	}
	return errnoOf(d.b.Zero(ctx, int64(off), n, mode&unix.FALLOC_FL_PUNCH_HOLE != 0))
}

// clampLen is how many of n bytes at off lie inside a file of size bytes.
func clampLen(off, n, size int64) int64 {
	if off < 0 || off >= size {
		return 0
	}
	return min(n, size-off)
}

// errnoOf maps a Backing error to what the kernel passes on to the loop
// device: an NBD error reply keeps its meaning (ENOSPC, EPERM...), anything
// else (a lost connection past the reconnect window) is EIO.
func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e nbd.Errno
	if errors.As(err, &e) {
		for _, s := range []syscall.Errno{syscall.EPERM, syscall.ENOSPC, syscall.EINVAL, syscall.ENOMEM, syscall.EOPNOTSUPP} {
			if errors.Is(e, s) {
				return s
			}
		}
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, nbd.ErrNoSpace) {
		return syscall.ENOSPC
	}
	return syscall.EIO
}

// mountOptions are the FUSE mount's settings. The writeback cache is left
// off: the loop device does direct I/O and never uses the page cache, and
// for buffered users it would only add a second copy of every page.
func mountOptions() *fs.Options {
	timeout := attrTimeout
	return &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:            "netvol",
			Name:              "netvol",
			DirectMountStrict: true, // mount(2) ourselves: no fusermount on such hosts
			MaxWrite:          maxWrite,
			MaxBackground:     maxBackground,
			// Async direct I/O: the loop device's requests go out many at a
			// time instead of one after another.
			ExtraCapabilities: fuse.CAP_ASYNC_DIO,
			DisableXAttrs:     true,
		},
		EntryTimeout: &timeout,
		AttrTimeout:  &timeout,
	}
}

// mountDisk serves b as <dir>/disk until the returned server is unmounted.
func mountDisk(dir string, b Backing) (*fuse.Server, *diskNode, error) {
	disk := &diskNode{b: b}
	srv, err := fs.Mount(dir, &rootNode{disk: disk}, mountOptions())
	if err != nil {
		return nil, nil, fmt.Errorf("mounting the FUSE file system at %s: %w", dir, err)
	}
	return srv, disk, nil
}

// sizeChanged tells the kernel that the file's attributes (its size) are
// stale: it asks again (Getattr) at the next stat instead of keeping them
// for attrTimeout.
func (d *diskNode) sizeChanged() error {
	if errno := d.NotifyContent(-1, 0); errno != 0 {
		return fmt.Errorf("invalidating the FUSE file's attributes: %w", errno)
	}
	return nil
}
