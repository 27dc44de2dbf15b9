package fuseattach

import (
	"context"

	"github.com/netvol/netvol/qcow2"
)

// Backing is what the FUSE file serves: the NBD export (Session), or for the
// benchmark's reference a local qcow2 image (ImageBacking). Calls come from
// many goroutines at once.
type Backing interface {
	// Size is the file's size in bytes; it only grows (Session.Refresh).
	Size() int64
	ReadAt(ctx context.Context, p []byte, off int64) error
	WriteAt(ctx context.Context, p []byte, off int64) error
	// Flush makes every write that returned before it durable.
	Flush(ctx context.Context) error
	// Zero makes n bytes at off read as zeroes; mayUnmap lets the storage
	// deallocate them.
	Zero(ctx context.Context, off, n int64, mayUnmap bool) error
}

// ImageBacking serves a qcow2 image opened in this process: the reference
// the benchmark sets beside the NBD path (the same FUSE file and loop
// device, without the network hop and the storage daemon).
type ImageBacking struct{ Image *qcow2.Image }

var _ Backing = ImageBacking{}

// Size implements Backing.
func (b ImageBacking) Size() int64 { return b.Image.Size() }

// ReadAt implements Backing.
func (b ImageBacking) ReadAt(_ context.Context, p []byte, off int64) error {
	_, err := b.Image.ReadAt(p, off)
	return err
}

// WriteAt implements Backing.
func (b ImageBacking) WriteAt(_ context.Context, p []byte, off int64) error {
	_, err := b.Image.WriteAt(p, off)
	return err
}

// Flush implements Backing.
func (b ImageBacking) Flush(context.Context) error { return b.Image.Flush() }

// Zero implements Backing: a discarded qcow2 range reads as zeroes.
func (b ImageBacking) Zero(_ context.Context, off, n int64, _ bool) error {
	return b.Image.Discard(off, n)
}
