package qcow2

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// Flush makes every write that completed before it durable, and writes back
// the metadata in crash-safe order.
func (img *Image) Flush() error {
	if img.closed.Load() {
		return ErrClosed
	}
	if img.readOnly {
		return nil
	}
	return img.flush()
}

func (img *Image) flush() error {
	img.mu.Lock()
	dirty := img.metadataDirtyLocked()
	var err error
	if dirty {
		err = img.flushMetadataLocked()
	}
	free := len(img.freeable) > 0
	img.mu.Unlock()
	if err != nil {
		return err
	}
	if !dirty {
		// Only data to sync: no need to hold up other I/O for it.
		if err := img.sync(); err != nil {
			return err
		}
	}
	if free {
		return img.releaseFreeable()
	}
	return nil
}

func (img *Image) metadataDirtyLocked() bool {
	if img.l1Dirty || len(img.pending) > 0 || img.rc.dirty() || img.rc.tableMoved {
		return true
	}
	return len(img.l2.dirtyTables()) > 0
}

// flushMetadataLocked writes back dirty metadata; a failure leaves the image
// refusing further writes, since the on-disk state is no longer known.
func (img *Image) flushMetadataLocked() error {
	if img.flushErr != nil {
		return img.flushErr
	}
	if err := img.writeBackLocked(); err != nil {
		img.flushErr = fmt.Errorf("qcow2: %s: metadata write failed, image needs reopening: %w", img.path, err)
		return img.flushErr
	}
	// Every change the log holds is in durable tables now. A log that
	// cannot be emptied would replay stale entries after a crash.
	if img.log != nil {
		if err := img.log.reset(); err != nil {
			img.flushErr = fmt.Errorf("qcow2: %s: image needs reopening: %w", img.path, err)
			return img.flushErr
		}
	}
	return nil
}

// writeBackLocked is the ordered write-back described in the package doc.
func (img *Image) writeBackLocked() error {
	if err := img.writeRefcountsLocked(); err != nil {
		return err
	}
	if err := img.sync(); err != nil {
		return err
	}
	if img.rc.tableMoved {
		if err := img.writeHeaderFields(); err != nil {
			return err
		}
		img.rc.tableMoved = false
		for _, t := range img.rc.oldTables {
			img.freeable = append(img.freeable, clustersOf(t, img.clusterBits)...)
		}
		img.rc.oldTables = nil
	}
	if err := img.writeL2TablesLocked(); err != nil {
		return err
	}
	if img.l1Dirty {
		if err := img.writeL1Locked(); err != nil {
			return err
		}
		img.l1Dirty = false
	}
	img.freeable = append(img.freeable, img.pending...)
	img.pending = nil
	return nil
}

func clustersOf(x hostExtent, clusterBits uint32) []uint64 {
	out := make([]uint64, x.n)
	for i := range out {
		out[i] = x.off + uint64(i)<<clusterBits
	}
	return out
}

func (img *Image) writeRefcountsLocked() error {
	rc := img.rc
	if end := rc.end(); end > img.fileSize.Load() {
		if err := img.f.Truncate(end); err != nil {
			return err
		}
		img.fileSize.Store(end)
	}
	block := make([]byte, img.clusterSize)
	for b := range rc.dirtyBlocks {
		if b < int64(len(rc.table)) && rc.table[b] != 0 {
			rc.encodeBlock(b, block)
			if _, err := img.f.WriteAt(block, int64(rc.table[b])); err != nil {
				return err
			}
		}
		delete(rc.dirtyBlocks, b)
	}
	if rc.tableDirty {
		if _, err := img.f.WriteAt(rc.encodeTable(), int64(rc.tableOffset)); err != nil {
			return err
		}
		rc.tableDirty = false
	}
	return nil
}

func (img *Image) writeL2TablesLocked() error {
	tables := img.l2.dirtyTables()
	if len(tables) == 0 {
		return nil
	}
	buf := make([]byte, img.clusterSize)
	for _, t := range tables {
		for i, e := range t.entries {
			binary.BigEndian.PutUint64(buf[i*8:], e)
		}
		if _, err := img.f.WriteAt(buf, int64(t.off)); err != nil {
			return err
		}
	}
	if err := img.sync(); err != nil {
		return err
	}
	for _, t := range tables {
		t.dirty = false
	}
	return nil
}

func (img *Image) writeL1Locked() error {
	buf := make([]byte, len(img.l1)*8)
	for i, e := range img.l1 {
		binary.BigEndian.PutUint64(buf[i*8:], e)
	}
	if _, err := img.f.WriteAt(buf, int64(img.l1Offset)); err != nil {
		return err
	}
	return img.sync()
}

// writeHeaderFields rewrites the header fields that change after creation
// (size, L1 and refcount table location) in one sector-sized write, then
// syncs: the header is the commit point of a relocation.
func (img *Image) writeHeaderFields() error {
	var b [40]byte // header bytes 24..63
	be := binary.BigEndian
	be.PutUint64(b[0:], uint64(img.size.Load()))
	be.PutUint32(b[12:], uint32(len(img.l1)))
	be.PutUint64(b[16:], img.l1Offset)
	be.PutUint64(b[24:], img.rc.tableOffset)
	be.PutUint32(b[32:], img.rc.tableCls)
	if _, err := img.f.WriteAt(b[:], 24); err != nil {
		return err
	}
	img.hdr.l1Size = uint32(len(img.l1))
	img.hdr.l1TableOffset = img.l1Offset
	img.hdr.refcountTableOffset = img.rc.tableOffset
	img.hdr.refcountTableCls = img.rc.tableCls
	return img.sync()
}

// releaseFreeable drops the last references to clusters no durable table
// points at any more, once no I/O that may still use them is in flight.
func (img *Image) releaseFreeable() error {
	img.ioGate.Lock()
	defer img.ioGate.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	for _, off := range img.freeable {
		freed, err := img.rc.decref(off)
		if err != nil {
			img.flushErr = fmt.Errorf("qcow2: %s: %w", img.path, err)
			return img.flushErr
		}
		if freed {
			// Best effort: a file system without hole punching keeps the bytes.
			_ = unix.Fallocate(int(img.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(off), img.clusterSize)
		}
	}
	img.freeable = nil
	return nil
}
