package qcow2

import (
	"encoding/binary"
	"fmt"
)

// clusterKind classifies an L2 entry.
type clusterKind uint8

const (
	kindUnallocated clusterKind = iota // read through to the backing file, or zeros
	kindZero                           // reads as zeros (v3 zero flag)
	kindNormal                         // data in a host cluster
	kindCompressed                     // compressed data somewhere in the file
)

func (img *Image) kindOf(e uint64) clusterKind {
	switch {
	case e&entryCompressed != 0:
		return kindCompressed
	case img.zeroFlag && e&entryZero != 0:
		return kindZero
	case e&offsetMask != 0:
		return kindNormal
	}
	return kindUnallocated
}

// compressedRange decodes a compressed cluster descriptor into the host
// offset of the data and the number of bytes it may span.
func (img *Image) compressedRange(e uint64) (off uint64, n int64) {
	x := 62 - (img.clusterBits - 8)
	off = e & (uint64(1)<<x - 1)
	sectors := (e>>x)&(uint64(1)<<(62-x)-1) + 1
	return off, int64(sectors*512) - int64(off&511)
}

// hostClustersOf lists the host clusters an entry references: none, one, or
// for compressed data every cluster the data touches (as refcounts count it).
func (img *Image) hostClustersOf(e uint64) []uint64 {
	switch img.kindOf(e) {
	case kindNormal:
		return []uint64{e & offsetMask}
	case kindZero:
		if e&offsetMask != 0 {
			return []uint64{e & offsetMask}
		}
	case kindCompressed:
		off, n := img.compressedRange(e)
		start := (off &^ 511) >> img.clusterBits
		end := ((off &^ 511) + uint64(n+int64(off&511)) - 1) >> img.clusterBits
		var out []uint64
		for c := start; c <= end; c++ {
			out = append(out, c<<img.clusterBits)
		}
		return out
	}
	return nil
}

// l2TableLocked returns the L2 table at host offset off, loading it (and
// evicting another) as needed. Caller holds mu.
func (img *Image) l2TableLocked(off uint64) (*l2Table, error) {
	if t := img.l2.get(off); t != nil {
		return t, nil
	}
	if off%uint64(img.clusterSize) != 0 {
		return nil, img.corrupt("L1 table", "L2 table offset %#x is not cluster aligned", off)
	}
	if v := img.l2.victim(); v != nil {
		if v.dirty {
			if err := img.flushMetadataLocked(); err != nil {
				return nil, err
			}
		}
		img.l2.remove(v)
	}
	buf := make([]byte, img.clusterSize)
	if err := img.readMeta(buf, int64(off)); err != nil {
		return nil, fmt.Errorf("qcow2: %s: reading L2 table: %w", img.path, err)
	}
	t := &l2Table{off: off, entries: make([]uint64, len(buf)/8)}
	for i := range t.entries {
		t.entries[i] = binary.BigEndian.Uint64(buf[i*8:])
	}
	img.l2.add(t)
	return t, nil
}

// entryLocked returns the L2 entry for guest cluster gc and the table holding
// it (nil if the L1 entry is empty). Caller holds mu.
func (img *Image) entryLocked(gc int64) (uint64, *l2Table, error) {
	l1i := gc >> img.l2Bits
	if l1i >= int64(len(img.l1)) {
		return 0, nil, nil
	}
	l2off := img.l1[l1i] & offsetMask
	if l2off == 0 {
		return 0, nil, nil
	}
	t, err := img.l2TableLocked(l2off)
	if err != nil {
		return 0, nil, err
	}
	return t.entries[gc&(int64(1)<<img.l2Bits-1)], t, nil
}

// tableForWriteLocked returns the L2 table for gc, allocating an empty one
// (and pointing the L1 entry at it) if there is none. Caller holds mu.
func (img *Image) tableForWriteLocked(gc int64) (*l2Table, error) {
	l1i := gc >> img.l2Bits
	if l1i >= int64(len(img.l1)) {
		return nil, ErrOutOfRange
	}
	if l2off := img.l1[l1i] & offsetMask; l2off != 0 {
		return img.l2TableLocked(l2off)
	}
	off, err := img.rc.alloc(1)
	if err != nil {
		return nil, err
	}
	if v := img.l2.victim(); v != nil {
		if v.dirty {
			if err := img.flushMetadataLocked(); err != nil {
				return nil, err
			}
		}
		img.l2.remove(v)
	}
	t := &l2Table{off: off, entries: make([]uint64, int64(1)<<img.l2Bits), dirty: true}
	img.l2.add(t)
	img.l1[l1i] = off | entryCopied
	img.l1Dirty = true
	return t, nil
}

// setEntryLocked stores e for gc, allocating the L2 table if needed, and
// records the change in the intent log. The record comes after the table
// lookup, whose eviction may write back (and so empty the log), and before
// the entry changes, so the log never misses a change the tables lack.
func (img *Image) setEntryLocked(gc int64, e uint64) error {
	t, err := img.tableForWriteLocked(gc)
	if err != nil {
		return err
	}
	if err := img.logEntryLocked(gc, e); err != nil {
		return err
	}
	t.entries[gc&(int64(1)<<img.l2Bits-1)] = e
	t.dirty = true
	return nil
}
