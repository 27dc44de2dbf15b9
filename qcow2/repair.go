package qcow2

import (
	"encoding/binary"
	"fmt"
)

// repair rebuilds every refcount from the tables that reference clusters. It
// runs when an image was not closed cleanly; the ordered write-back means the
// stored counts can only be too high (leaks), and this brings them back.
func (img *Image) repair() error {
	rc := img.rc
	counts := make([]uint16, len(rc.counts))
	// Nothing durable points past the end of the file; a corrupt table that
	// does must not make us count (and extend the file to) such clusters.
	// Compressed data may run a little past the end, hence only the start
	// is checked (the L1 and refcount tables were bounded at Open; L2 tables
	// and data span at most two clusters).
	fileSize := uint64(img.fileSize.Load())
	inc := func(off uint64, n int64) error {
		if off >= fileSize {
			return img.corrupt("L2 table", "reference to %#x beyond the end of the file (%d bytes)", off, fileSize)
		}
		for c := int64(off >> img.clusterBits); c <= int64((off+uint64(n)-1)>>img.clusterBits); c++ {
			if c >= int64(len(counts)) {
				counts = append(counts, make([]uint16, c+1-int64(len(counts)))...)
			}
			if counts[c] == 0xffff {
				return img.corrupt("refcounts", "cluster %#x referenced more than 65535 times", c<<img.clusterBits)
			}
			counts[c]++
		}
		return nil
	}
	cs := img.clusterSize
	if err := inc(0, cs); err != nil {
		return err
	}
	if err := inc(img.l1Offset, int64(len(img.l1))*8); err != nil {
		return err
	}
	if err := inc(rc.tableOffset, int64(rc.tableCls)*cs); err != nil {
		return err
	}
	for _, b := range rc.table {
		if b != 0 {
			if err := inc(b, cs); err != nil {
				return err
			}
		}
	}
	if err := img.countL2References(inc); err != nil {
		return err
	}
	rc.counts = counts
	rc.freeHint = 0
	for b := int64(0); b*rc.perBlock < int64(len(counts)); b++ {
		rc.dirtyBlocks[b] = struct{}{}
		for c := b * rc.perBlock; c < min((b+1)*rc.perBlock, int64(len(counts))); c++ {
			if counts[c] != 0 {
				if err := rc.ensureBlock(b); err != nil {
					return err
				}
				break
			}
		}
	}
	return img.writeBackLocked()
}

func (img *Image) countL2References(inc func(uint64, int64) error) error {
	buf := make([]byte, img.clusterSize)
	for i, l1e := range img.l1 {
		off := l1e & offsetMask
		if off == 0 {
			continue
		}
		if err := inc(off, img.clusterSize); err != nil {
			return err
		}
		if err := img.readMeta(buf, int64(off)); err != nil {
			return fmt.Errorf("L2 table %d: %w", i, err)
		}
		for j := 0; j < len(buf); j += 8 {
			for _, h := range img.hostClustersOf(binary.BigEndian.Uint64(buf[j:])) {
				if err := inc(h, 1); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
