package qcow2

import "fmt"

// Resize grows the virtual disk to newSize bytes. The new space reads as zeros
// (or from the backing file, as QEMU does). Shrinking is refused.
func (img *Image) Resize(newSize int64) error {
	switch {
	case img.closed.Load():
		return ErrClosed
	case img.readOnly:
		return ErrReadOnly
	case newSize < img.Size():
		return fmt.Errorf("%w: %d bytes is smaller than the current %d", ErrShrink, newSize, img.Size())
	case newSize > maxVirtualSize:
		return fmt.Errorf("qcow2: size %d exceeds the maximum of %d bytes", newSize, maxVirtualSize)
	}
	img.ioGate.Lock()
	defer img.ioGate.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	need := int64(l1EntriesFor(uint64(newSize), img.clusterBits))
	if uint64(need)*8 > maxTableBytes {
		return fmt.Errorf("qcow2: size %d needs an L1 table over %d bytes", newSize, maxTableBytes)
	}
	if err := img.growL1Locked(need); err != nil {
		return err
	}
	old := img.size.Swap(newSize)
	if err := img.writeHeaderFields(); err != nil {
		img.size.Store(old)
		img.flushErr = fmt.Errorf("qcow2: %s: resize failed, image needs reopening: %w", img.path, err)
		return img.flushErr
	}
	img.hdr.size = uint64(newSize)
	return nil
}

// growL1Locked makes the L1 table hold need entries, moving it to new
// clusters when it outgrows its own, and makes the result durable.
func (img *Image) growL1Locked(need int64) error {
	have := int64(len(img.l1))
	if need <= have {
		return nil
	}
	perCluster := img.clusterSize / 8
	oldCls := (have + perCluster - 1) / perCluster
	if need <= oldCls*perCluster {
		img.l1 = append(img.l1, make([]uint64, need-have)...)
		img.l1Dirty = true
		return img.flushMetadataLocked()
	}
	if err := img.flushMetadataLocked(); err != nil {
		return err
	}
	newCls := (need + perCluster - 1) / perCluster
	off, err := img.rc.alloc(newCls)
	if err != nil {
		return err
	}
	old := hostExtent{off: img.l1Offset, n: oldCls}
	img.l1 = append(img.l1, make([]uint64, need-have)...)
	img.l1Offset = off
	img.l1Dirty = true
	if err := img.flushMetadataLocked(); err != nil {
		return err
	}
	// The header switch (by the caller) makes the old table unreferenced.
	img.pending = append(img.pending, clustersOf(old, img.clusterBits)...)
	return nil
}
