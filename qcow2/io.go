package qcow2

import (
	"errors"
	"fmt"
	"io"
)

// extent is a run of guest clusters handled the same way by one I/O.
type extent struct {
	gc    int64 // first guest cluster
	n     int64 // clusters in the run
	kind  clusterKind
	entry uint64 // L2 entry of the first cluster
	// inPlace: normal clusters this image owns alone (writes go straight in).
	inPlace bool
}

// maxRun bounds how many clusters one lookup batches under the lock.
const maxRun = 256

// lookupRun classifies the clusters from gc on, batching consecutive clusters
// whose host data is contiguous (normal) or that are handled alike.
func (img *Image) lookupRun(gc, last int64, forWrite bool) (extent, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	e, _, err := img.entryLocked(gc)
	if err != nil {
		return extent{}, err
	}
	x := extent{gc: gc, n: 1, kind: img.kindOf(e), entry: e}
	if forWrite {
		x.inPlace = img.inPlaceLocked(e)
		if !x.inPlace || img.allocating[gc] != nil {
			x.inPlace = false
			return x, nil // every allocation is one cluster at a time
		}
	}
	for next := gc + 1; next <= last && x.n < maxRun; next++ {
		ne, _, err := img.entryLocked(next)
		if err != nil {
			return extent{}, err
		}
		if !img.continues(x, ne) || (forWrite && (!img.inPlaceLocked(ne) || img.allocating[next] != nil)) {
			break
		}
		x.n++
	}
	return x, nil
}

// continues reports whether entry ne extends extent x.
func (img *Image) continues(x extent, ne uint64) bool {
	k := img.kindOf(ne)
	if k != x.kind {
		return false
	}
	switch k {
	case kindNormal:
		return ne&offsetMask == x.entry&offsetMask+uint64(x.n)<<img.clusterBits
	case kindCompressed:
		return false
	}
	return true
}

func (img *Image) inPlaceLocked(e uint64) bool {
	return img.rc != nil && img.kindOf(e) == kindNormal && e&entryCopied != 0 &&
		img.rc.get(int64(e&offsetMask>>img.clusterBits)) == 1
}

// ReadAt reads len(p) bytes at guest offset off. Reads past the end of the
// disk return io.EOF as io.ReaderAt requires.
func (img *Image) ReadAt(p []byte, off int64) (int, error) {
	if img.closed.Load() {
		return 0, ErrClosed
	}
	size := img.Size()
	if off < 0 {
		return 0, fmt.Errorf("qcow2: negative offset %d", off)
	}
	if off >= size {
		return 0, io.EOF
	}
	n := len(p)
	if int64(n) > size-off {
		n = int(size - off)
	}
	img.ioGate.RLock()
	err := img.readRange(p[:n], off)
	img.ioGate.RUnlock()
	if err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (img *Image) readRange(p []byte, off int64) error {
	last := (off + int64(len(p)) - 1) >> img.clusterBits
	for len(p) > 0 {
		x, err := img.lookupRun(off>>img.clusterBits, last, false)
		if err != nil {
			return err
		}
		in := off & (img.clusterSize - 1)
		n := min(int64(len(p)), x.n<<img.clusterBits-in)
		if err := img.readExtent(x, p[:n], off, in); err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// readExtent fills p (guest offset off, in bytes into the extent's first
// cluster) from extent x.
func (img *Image) readExtent(x extent, p []byte, off, in int64) error {
	switch x.kind {
	case kindNormal:
		return img.preadFull(p, int64(x.entry&offsetMask)+in)
	case kindZero:
		clear(p)
		return nil
	case kindCompressed:
		buf, err := img.decompress(x.entry)
		if err != nil {
			return err
		}
		copy(p, buf[in:])
		return nil
	}
	return img.readBacking(p, off)
}

// readBacking reads guest data the image does not hold: from the backing
// chain, zeros past its end or without one.
func (img *Image) readBacking(p []byte, off int64) error {
	if img.chain != nil {
		return img.readChain(p, off)
	}
	clear(p)
	if img.backing == nil {
		return nil
	}
	bsize := img.backing.Size()
	if off >= bsize {
		return nil
	}
	n := min(int64(len(p)), bsize-off)
	if _, err := img.backing.ReadAt(p[:n], off); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("qcow2: %s: reading backing file: %w", img.path, err)
	}
	return nil
}

// preadFull reads from the host file; bytes past its end read as zeros (a
// freshly allocated cluster may not have been extended to yet).
func (img *Image) preadFull(p []byte, off int64) error {
	n, err := img.f.ReadAt(p, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("qcow2: %s: %w", img.path, err)
	}
	clear(p[n:])
	return nil
}

// WriteAt writes p at guest offset off. Writes past the end of the disk fail
// with ErrOutOfRange and write nothing.
func (img *Image) WriteAt(p []byte, off int64) (int, error) {
	if err := img.checkWrite(off, int64(len(p))); err != nil {
		return 0, err
	}
	img.ioGate.RLock()
	err := img.writeRange(p, off)
	img.ioGate.RUnlock()
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (img *Image) checkWrite(off, n int64) error {
	switch {
	case img.closed.Load():
		return ErrClosed
	case img.readOnly:
		return ErrReadOnly
	case off < 0 || n < 0 || off+n > img.Size() || off+n < off:
		return fmt.Errorf("%w: %d bytes at %d, disk size %d", ErrOutOfRange, n, off, img.Size())
	}
	if p := img.syncErr.Load(); p != nil {
		return *p
	}
	img.mu.Lock()
	err := img.flushErr
	img.mu.Unlock()
	return err
}

func (img *Image) writeRange(p []byte, off int64) error {
	last := (off + int64(len(p)) - 1) >> img.clusterBits
	for len(p) > 0 {
		gc := off >> img.clusterBits
		x, err := img.lookupRun(gc, last, true)
		if err != nil {
			return err
		}
		in := off & (img.clusterSize - 1)
		n := min(int64(len(p)), x.n<<img.clusterBits-in)
		if x.inPlace {
			err = img.pwrite(p[:n], int64(x.entry&offsetMask)+in)
		} else {
			err = img.allocateAndWrite(gc, p[:n], in)
		}
		if err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

func (img *Image) pwrite(p []byte, off int64) error {
	if _, err := img.f.WriteAt(p, off); err != nil {
		return fmt.Errorf("qcow2: %s: %w", img.path, err)
	}
	img.extendTo(off + int64(len(p)))
	return nil
}

// extendTo records that the host file spans at least end bytes.
func (img *Image) extendTo(end int64) {
	for {
		cur := img.fileSize.Load()
		if end <= cur || img.fileSize.CompareAndSwap(cur, end) {
			return
		}
	}
}
