package qcow2

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"
)

// Reading through a backing chain. A guest cluster the top image does not
// hold is read from the first image down the chain that holds it. Going
// down one level at a time (each image's ReadAt asking its own backing
// file) costs a table lookup, a lock and a buffer clear per level, which a
// volume with twenty snapshots pays on every read of old data. So an
// image whose backing files are all read-only qcow2 images (or a raw file
// at the bottom) with its cluster size resolves each cluster once, walking
// the layers' tables, and remembers which layer holds it and where: the
// layers never change, so the answer never goes stale (the top's own
// entries are always consulted first). A cluster resolved to a data
// cluster is then read with one pread, without a lock.
//
// The memory is 8 bytes per guest cluster of the ranges read, in chunks
// of one L2 table's span, lock-free to read; at most maxChainChunks chunks
// (16 MiB, 128 GiB of disk at 64 KiB clusters) are kept, past which
// clusters are resolved by walking every time.

// A resolution is code<<56 | host: code is 0 (not resolved yet), 1 + the
// index of the layer that holds the cluster, resBase or resNone; host is
// the layer's data cluster when it is a plain one (0: read it through the
// layer's own tables: zero flag, compressed).
const (
	resUnknown = 0   // not resolved yet
	resBase    = 254 // the raw file at the bottom of the chain
	resNone    = 255 // no layer holds it: zeros

	resCodeShift   = 56
	maxChainChunks = 256
)

// chain is the top image's flattened view of its backing files.
type chain struct {
	layers []*Image // backing images, nearest first
	// limits[k] is the smallest size of layers[0..k]: bytes past it read
	// as zeros through layer k, as they would level by level.
	limits []int64
	base   backingStore // a raw file below the last layer, or nil

	chunks   []atomic.Pointer[[]atomic.Uint64] // by gc >> chunkBits
	nchunks  atomic.Int32
	clusterB uint32
	chunkB   uint32
}

// newChain flattens img's backing chain; nil when it cannot be (another
// cluster size, or nothing to flatten).
func newChain(img *Image) *chain {
	c := &chain{clusterB: img.clusterBits, chunkB: img.l2Bits}
	limit := int64(1<<63 - 1)
	var cur backingStore = img.backing
	for cur != nil {
		l, ok := cur.(*Image)
		if !ok {
			c.base = cur
			break
		}
		if l.clusterBits != img.clusterBits || !l.readOnly {
			return nil
		}
		limit = min(limit, l.Size())
		c.layers = append(c.layers, l)
		c.limits = append(c.limits, limit)
		cur = l.backing
	}
	if len(c.layers) == 0 {
		return nil
	}
	span := int64(1) << (c.clusterB + c.chunkB)
	c.chunks = make([]atomic.Pointer[[]atomic.Uint64], (limit+span-1)/span)
	return c
}

// resolve returns the resolution of guest cluster gc.
func (img *Image) resolve(gc int64) (uint64, error) {
	c := img.chain
	i, j := gc>>c.chunkB, gc&(1<<c.chunkB-1)
	var chunk *[]atomic.Uint64
	if i < int64(len(c.chunks)) {
		if chunk = c.chunks[i].Load(); chunk != nil {
			if r := (*chunk)[j].Load(); r != resUnknown {
				return r, nil
			}
		}
	}
	r, err := img.walkChain(gc)
	if err != nil || i >= int64(len(c.chunks)) {
		return r, err
	}
	if chunk == nil {
		if c.nchunks.Load() >= maxChainChunks {
			return r, nil
		}
		fresh := make([]atomic.Uint64, 1<<c.chunkB)
		if c.chunks[i].CompareAndSwap(nil, &fresh) {
			c.nchunks.Add(1)
		}
		chunk = c.chunks[i].Load()
	}
	(*chunk)[j].Store(r)
	return r, nil
}

// walkChain finds the layer holding gc by looking at each layer's tables.
func (img *Image) walkChain(gc int64) (uint64, error) {
	c := img.chain
	off := gc << img.clusterBits
	for k, l := range c.layers {
		if off >= c.limits[k] {
			return resNone << resCodeShift, nil
		}
		l.mu.Lock()
		e, _, err := l.entryLocked(gc)
		l.mu.Unlock()
		if err != nil {
			return 0, err
		}
		switch l.kindOf(e) {
		case kindUnallocated:
			continue
		case kindNormal:
			return uint64(k+1)<<resCodeShift | e&offsetMask, nil
		}
		return uint64(k+1) << resCodeShift, nil
	}
	if c.base != nil {
		return resBase << resCodeShift, nil
	}
	return resNone << resCodeShift, nil
}

// readChain fills p with guest data at off from the backing chain,
// reading each run of clusters from the layer that holds it.
func (img *Image) readChain(p []byte, off int64) error {
	for len(p) > 0 {
		gc := off >> img.clusterBits
		r, err := img.resolve(gc)
		if err != nil {
			return err
		}
		n := min(int64(len(p)), (gc+1)<<img.clusterBits-off)
		// Extend the run while the next clusters come from the same layer
		// (and, for plain data, from the next host cluster).
		for n < int64(len(p)) {
			next, err := img.resolve((off + n) >> img.clusterBits)
			if err != nil {
				return err
			}
			if !img.continuesRun(r, next, n+off&(img.clusterSize-1)) {
				break
			}
			n = min(int64(len(p)), n+img.clusterSize)
		}
		if err := img.readResolved(r, p[:n], off); err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// continuesRun reports whether resolution next, at bytes past the start
// of the run's first cluster, belongs to the run that starts with r.
func (img *Image) continuesRun(r, next uint64, bytes int64) bool {
	if r>>resCodeShift != next>>resCodeShift {
		return false
	}
	host := r & (1<<resCodeShift - 1)
	if host == 0 {
		return next&(1<<resCodeShift-1) == 0
	}
	return next&(1<<resCodeShift-1) == host+uint64(bytes&^(img.clusterSize-1))
}

// readResolved reads p at off from what resolution r names, zeros past
// its limit.
func (img *Image) readResolved(r uint64, p []byte, off int64) error {
	c := img.chain
	code, host := r>>resCodeShift, int64(r&(1<<resCodeShift-1))
	var limit int64
	switch code {
	case resNone:
		clear(p)
		return nil
	case resBase:
		limit = min(c.limits[len(c.limits)-1], c.base.Size())
	default:
		limit = c.limits[code-1]
	}
	n := max(0, min(int64(len(p)), limit-off))
	clear(p[n:])
	if n == 0 {
		return nil
	}
	var err error
	switch {
	case code == resBase:
		if _, err = c.base.ReadAt(p[:n], off); errors.Is(err, io.EOF) {
			err = nil
		}
	case host != 0:
		err = c.layers[code-1].preadFull(p[:n], host+off&(img.clusterSize-1))
	default:
		err = c.layers[code-1].readRange(p[:n], off)
	}
	if err != nil {
		return fmt.Errorf("qcow2: %s: reading backing file: %w", img.path, err)
	}
	return nil
}
