package qcow2

import (
	"encoding/binary"
	"fmt"
)

// refcounts holds the reference count of every host cluster in memory (16
// bits each: 640 KiB for a 20 GiB image of 64 KiB clusters) and remembers
// which refcount blocks and whether the refcount table must be written back.
// It is only used for writable images and only under Image.mu.
type refcounts struct {
	clusterBits uint32
	perBlock    int64 // refcount entries in one block

	counts      []uint16 // by host cluster index
	table       []uint64 // refcount table: block offsets
	tableOffset uint64
	tableCls    uint32

	dirtyBlocks map[int64]struct{}
	tableDirty  bool // table contents changed
	tableMoved  bool // table relocated: the header must be rewritten
	freeHint    int64
	oldTables   []hostExtent // relocated tables, freed once the header is durable
}

// hostExtent is a run of host clusters.
type hostExtent struct {
	off uint64
	n   int64
}

func newRefcounts(clusterBits uint32) *refcounts {
	return &refcounts{
		clusterBits: clusterBits,
		perBlock:    int64(1) << (clusterBits - 1),
		dirtyBlocks: map[int64]struct{}{},
	}
}

func (r *refcounts) clusterSize() int64 { return 1 << r.clusterBits }

// load reads the refcount table and every block it names.
func (r *refcounts) load(img *Image, tableOffset uint64, tableCls uint32, fileSize int64) error {
	cs := r.clusterSize()
	buf := make([]byte, int64(tableCls)*cs)
	if err := img.readMeta(buf, int64(tableOffset)); err != nil {
		return fmt.Errorf("reading the refcount table: %w", err)
	}
	r.tableOffset, r.tableCls = tableOffset, tableCls
	r.table = make([]uint64, len(buf)/8)
	r.counts = make([]uint16, (fileSize+cs-1)/cs)
	block := make([]byte, cs)
	for i := range r.table {
		e := binary.BigEndian.Uint64(buf[i*8:])
		r.table[i] = e &^ 0x1ff
		if r.table[i] == 0 {
			continue
		}
		if r.table[i]%uint64(cs) != 0 || int64(r.table[i])+cs > fileSize {
			return img.corrupt("refcount table", "entry %d points at %#x, outside the file or unaligned", i, r.table[i])
		}
		if err := img.readMeta(block, int64(r.table[i])); err != nil {
			return fmt.Errorf("reading refcount block %d: %w", i, err)
		}
		r.decodeBlock(int64(i), block, (fileSize+cs-1)/cs)
	}
	return nil
}

// decodeBlock loads the counts of refcount block b. Counts of clusters at or
// past limit (beyond the end of the file) are dropped: they can only be leaks,
// and a corrupt table must not make us allocate a count for every cluster up
// to wherever its last entry points.
func (r *refcounts) decodeBlock(b int64, block []byte, limit int64) {
	first := b * r.perBlock
	for j := int64(0); j < r.perBlock && first+j < limit; j++ {
		v := binary.BigEndian.Uint16(block[j*2:])
		if v == 0 {
			continue
		}
		r.grow(first + j + 1)
		r.counts[first+j] = v
	}
}

func (r *refcounts) encodeBlock(b int64, block []byte) {
	first := b * r.perBlock
	for j := int64(0); j < r.perBlock; j++ {
		var v uint16
		if c := first + j; c < int64(len(r.counts)) {
			v = r.counts[c]
		}
		binary.BigEndian.PutUint16(block[j*2:], v)
	}
}

func (r *refcounts) encodeTable() []byte {
	buf := make([]byte, int64(r.tableCls)*r.clusterSize())
	for i, off := range r.table {
		binary.BigEndian.PutUint64(buf[i*8:], off)
	}
	return buf
}

func (r *refcounts) grow(n int64) {
	if n > int64(len(r.counts)) {
		if n <= int64(cap(r.counts)) {
			r.counts = r.counts[:n]
			return
		}
		c := make([]uint16, n, n+n/4+64)
		copy(c, r.counts)
		r.counts = c
	}
}

// end is the host offset just past the last cluster the counts know of.
func (r *refcounts) end() int64 { return int64(len(r.counts)) << r.clusterBits }

func (r *refcounts) get(c int64) uint16 {
	if c < 0 || c >= int64(len(r.counts)) {
		return 0
	}
	return r.counts[c]
}

// set changes one count and makes sure its refcount block exists.
func (r *refcounts) set(c int64, v uint16) error {
	r.grow(c + 1)
	r.counts[c] = v
	b := c / r.perBlock
	r.dirtyBlocks[b] = struct{}{}
	if v == 0 {
		if c < r.freeHint {
			r.freeHint = c
		}
		return nil
	}
	return r.ensureBlock(b)
}

// ensureBlock gives block b a host cluster if it has none. The new cluster's
// own count may fall into another block without a cluster, hence recursion;
// it ends because a new cluster is taken near the end of the file.
func (r *refcounts) ensureBlock(b int64) error {
	if b >= int64(len(r.table)) {
		if err := r.growTable(b + 1); err != nil {
			return err
		}
	}
	if r.table[b] != 0 {
		return nil
	}
	c := r.findFree(1)
	r.grow(c + 1)
	r.counts[c] = 1
	r.table[b] = uint64(c) << r.clusterBits
	r.tableDirty = true
	r.dirtyBlocks[b] = struct{}{}
	r.dirtyBlocks[c/r.perBlock] = struct{}{}
	return r.ensureBlock(c / r.perBlock)
}

// growTable relocates the refcount table to the end of the file with room for
// at least minEntries blocks (and half as many again).
func (r *refcounts) growTable(minEntries int64) error {
	cs := r.clusterSize()
	entries := minEntries + minEntries/2 + 8
	cls := (entries*8 + cs - 1) / cs
	if uint64(cls*cs) > maxTableBytes {
		return fmt.Errorf("qcow2: refcount table would exceed %d bytes", maxTableBytes)
	}
	entries = cls * cs / 8
	old := hostExtent{off: r.tableOffset, n: int64(r.tableCls)}
	table := make([]uint64, entries)
	copy(table, r.table)
	r.table = table
	start := int64(len(r.counts))
	for c := start; c < start+cls; c++ {
		r.grow(c + 1)
		r.counts[c] = 1
		r.dirtyBlocks[c/r.perBlock] = struct{}{}
	}
	r.tableOffset = uint64(start) << r.clusterBits
	r.tableCls = uint32(cls)
	r.tableDirty, r.tableMoved = true, true
	if old.n > 0 {
		r.oldTables = append(r.oldTables, old)
	}
	for c := start; c < start+cls; c++ {
		if err := r.ensureBlock(c / r.perBlock); err != nil {
			return err
		}
	}
	return nil
}

// findFree returns the first run of n free clusters at or after the hint;
// runs longer than one cluster are taken at the end of the file.
func (r *refcounts) findFree(n int64) int64 {
	if n == 1 {
		for c := r.freeHint; c < int64(len(r.counts)); c++ {
			if r.counts[c] == 0 {
				r.freeHint = c + 1
				return c
			}
		}
		r.freeHint = int64(len(r.counts)) + 1
	}
	return int64(len(r.counts))
}

// alloc takes n contiguous free clusters, sets their counts to 1 and returns
// the host offset of the first.
func (r *refcounts) alloc(n int64) (uint64, error) {
	c := r.findFree(n)
	for i := c; i < c+n; i++ {
		if err := r.set(i, 1); err != nil {
			return 0, err
		}
	}
	return uint64(c) << r.clusterBits, nil
}

// decref drops one reference to the host cluster at off and reports whether
// the cluster became free.
func (r *refcounts) decref(off uint64) (bool, error) {
	c := int64(off >> r.clusterBits)
	v := r.get(c)
	if v == 0 {
		return false, fmt.Errorf("qcow2: refcount of cluster %#x would drop below zero", off)
	}
	return v == 1, r.set(c, v-1)
}

func (r *refcounts) dirty() bool {
	return len(r.dirtyBlocks) > 0 || r.tableDirty
}
