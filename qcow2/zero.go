package qcow2

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// WriteZeroes makes n bytes at off read as zeros and changes no byte outside
// them; it is what NBD_CMD_WRITE_ZEROES needs (nbd.ZeroWriter). The pieces of
// clusters the range covers in part are written with zeros unless they read as
// zeros already. Clusters it covers whole (the disk's last cluster counts as
// whole when the range reaches the disk end) are handled without data writes:
//
//   - mayTrim: unmapped, as Discard does: the zero flag where a backing file
//     would show through, otherwise no entry; their host clusters are freed
//     after the next Flush.
//   - !mayTrim (the client asked for no holes): nothing this image owns is
//     given up, so a later write to the range needs no allocation. A cluster
//     owned alone is zeroed in place with fallocate(FALLOC_FL_ZERO_RANGE),
//     which keeps its blocks allocated and writes no data (zero buffers where
//     the file system lacks it); one that reads as zeros already is left
//     alone; any other (backing data, compressed or shared) gets the zero
//     flag (or no entry without a backing file), as QEMU does, since a write
//     to it would copy it anyway.
func (img *Image) WriteZeroes(off, n int64, mayTrim bool) error {
	if err := img.checkWrite(off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	img.ioGate.RLock()
	defer img.ioGate.RUnlock()
	end := off + n
	cs := img.clusterSize
	first := (off + cs - 1) >> img.clusterBits // first cluster starting at or after off
	stop := end >> img.clusterBits             // clusters before it end at or before end
	if end == img.Size() {
		stop = (end + cs - 1) >> img.clusterBits
	}
	if first >= stop {
		return img.zeroPieces(off, end)
	}
	if err := img.zeroPieces(off, first<<img.clusterBits); err != nil {
		return err
	}
	if err := img.zeroClusters(first, stop, mayTrim); err != nil {
		return err
	}
	return img.zeroPieces(min(stop<<img.clusterBits, end), end)
}

// zeroPieces writes zeros over [lo, hi), which covers no cluster whole,
// skipping clusters that read as zeros already.
func (img *Image) zeroPieces(lo, hi int64) error {
	for lo < hi {
		gc := lo >> img.clusterBits
		m := min(hi, (gc+1)<<img.clusterBits) - lo
		zero, err := img.readsAsZero(gc)
		if err != nil {
			return err
		}
		if !zero {
			if err := img.writeRange(make([]byte, m), lo); err != nil {
				return err
			}
		}
		lo += m
	}
	return nil
}

// readsAsZero reports whether guest cluster gc is known to read as zeros
// without reading it (false while it is being allocated).
func (img *Image) readsAsZero(gc int64) (bool, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.allocating[gc] != nil {
		return false, nil
	}
	e, _, err := img.entryLocked(gc)
	if err != nil {
		return false, err
	}
	return img.oldIsZero(gc, e), nil
}

// zeroClusters zeroes the whole guest clusters from gc up to last
// (exclusive) as WriteZeroes describes.
func (img *Image) zeroClusters(gc, last int64, mayTrim bool) error {
	for gc < last {
		next, err := img.unmapClusters(gc, last, !mayTrim)
		if err != nil {
			return err
		}
		if next == gc && !mayTrim {
			// Stopped at a cluster owned alone (or after waiting for one
			// being allocated): zero the run of them in place.
			x, err := img.lookupRun(gc, last-1, true)
			if err != nil {
				return err
			}
			if x.inPlace {
				if err := img.zeroHost(int64(x.entry&offsetMask), x.n<<img.clusterBits); err != nil {
					return err
				}
				next = gc + x.n
			}
		}
		gc = next
	}
	return nil
}

// fallocZeroRange is fallocate(FALLOC_FL_ZERO_RANGE); tests replace it to
// exercise the fallback.
var fallocZeroRange = func(fd int, off, n int64) error {
	return unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, off, n)
}

// zeroHost zeroes n bytes of the host file at off and keeps them allocated.
func (img *Image) zeroHost(off, n int64) error {
	err := fallocZeroRange(int(img.f.Fd()), off, n)
	if err == nil {
		img.extendTo(off + n)
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("qcow2: %s: zeroing: %w", img.path, err)
	}
	zeros := make([]byte, min(n, 1<<20))
	for n > 0 {
		m := min(n, int64(len(zeros)))
		if err := img.pwrite(zeros[:m], off); err != nil {
			return err
		}
		off, n = off+m, n-m
	}
	return nil
}
