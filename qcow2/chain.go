package qcow2

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// Reading through a backing chain. A guest cluster the top image does not
// hold is read from the first image down the chain that holds it. Going
// down one level at a time (each image's ReadAt asking its own backing
// file) costs a table lookup, a lock and a buffer clear per level, which a
// volume with twenty snapshots pays on every read of old data. So an
// image whose backing files are all read-only qcow2 images (or a raw file
// at the bottom) with its cluster size resolves each cluster once, walking
// the layers' tables, and remembers which layer holds it: the layers never
// change, so the answer never goes stale (the top's own entries are
// always consulted first). The memory is one byte per guest cluster of
// the ranges read, in chunks of one L2 table's span.

// Resolution codes of a guest cluster: 1 + the index of the layer that
// holds it, or one of these.
const (
	resUnknown = 0   // not resolved yet
	resBase    = 254 // the raw file at the bottom of the chain
	resNone    = 255 // no layer holds it: zeros
)

// chain is the top image's flattened view of its backing files.
type chain struct {
	layers []*Image // backing images, nearest first
	// limits[k] is the smallest size of layers[0..k]: bytes past it read
	// as zeros through layer k, as they would level by level.
	limits []int64
	base   backingStore // a raw file below the last layer, or nil

	mu     sync.Mutex
	chunks map[int64][]uint8 // by gc >> chunkBits
}

// newChain flattens img's backing chain; nil when it cannot be (another
// cluster size, or nothing to flatten).
func newChain(img *Image) *chain {
	c := &chain{chunks: map[int64][]uint8{}}
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
	return c
}

// chunkBits is the log2 of the clusters one resolution chunk covers.
func (img *Image) chunkBits() uint32 { return img.l2Bits }

// resolve returns the resolution code of guest cluster gc.
func (img *Image) resolve(gc int64) (uint8, error) {
	c := img.chain
	bits := img.chunkBits()
	c.mu.Lock()
	chunk := c.chunks[gc>>bits]
	if chunk != nil {
		if r := chunk[gc&(1<<bits-1)]; r != resUnknown {
			c.mu.Unlock()
			return r, nil
		}
	}
	c.mu.Unlock()
	r, err := img.walkChain(gc)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	if chunk = c.chunks[gc>>bits]; chunk == nil {
		chunk = make([]uint8, 1<<bits)
		c.chunks[gc>>bits] = chunk
	}
	chunk[gc&(1<<bits-1)] = r
	c.mu.Unlock()
	return r, nil
}

// walkChain finds the layer holding gc by looking at each layer's tables.
func (img *Image) walkChain(gc int64) (uint8, error) {
	c := img.chain
	off := gc << img.clusterBits
	for k, l := range c.layers {
		if off >= c.limits[k] {
			return resNone, nil
		}
		l.mu.Lock()
		e, _, err := l.entryLocked(gc)
		l.mu.Unlock()
		if err != nil {
			return 0, err
		}
		if l.kindOf(e) != kindUnallocated {
			return uint8(k + 1), nil
		}
	}
	if c.base != nil {
		return resBase, nil
	}
	return resNone, nil
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
		// Extend the run while the next clusters resolve alike.
		for n < int64(len(p)) {
			next, err := img.resolve((off + n) >> img.clusterBits)
			if err != nil {
				return err
			}
			if next != r {
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

// readResolved reads p at off from what code r names, zeros past its
// limit.
func (img *Image) readResolved(r uint8, p []byte, off int64) error {
	c := img.chain
	clear(p)
	var src io.ReaderAt
	var limit int64
	switch r {
	case resNone:
		return nil
	case resBase:
		src, limit = c.base, min(c.limits[len(c.limits)-1], c.base.Size())
	default:
		src, limit = readerFunc(c.layers[r-1].readRange), c.limits[r-1]
	}
	if off >= limit {
		return nil
	}
	n := min(int64(len(p)), limit-off)
	if _, err := src.ReadAt(p[:n], off); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("qcow2: %s: reading backing file: %w", img.path, err)
	}
	return nil
}

// readerFunc adapts a layer's readRange (which reads whole ranges inside
// its size) to io.ReaderAt.
type readerFunc func(p []byte, off int64) error

func (f readerFunc) ReadAt(p []byte, off int64) (int, error) {
	if err := f(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}
