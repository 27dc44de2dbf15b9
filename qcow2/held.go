package qcow2

import "fmt"

// Held clusters: which guest clusters an image holds itself, for the
// storage daemon's changed-block tracking (a snapshot layer holds exactly
// the clusters written while it was the volume's image) and for skipping
// what no layer holds.

// Bitmap is a set of guest cluster numbers.
type Bitmap []uint64

// NewBitmap returns an empty set of n clusters.
func NewBitmap(n int64) Bitmap { return make(Bitmap, (n+63)/64) }

// Has reports whether cluster gc is in the set.
func (b Bitmap) Has(gc int64) bool {
	i := gc >> 6
	return gc >= 0 && i < int64(len(b)) && b[i]&(1<<(gc&63)) != 0
}

// Set adds cluster gc (inside the set's size) to the set.
func (b Bitmap) Set(gc int64) { b[gc>>6] |= 1 << (gc & 63) }

// Count is the number of clusters in the set.
func (b Bitmap) Count() int64 {
	var n int64
	for _, w := range b {
		for ; w != 0; w &= w - 1 {
			n++
		}
	}
	return n
}

// Held returns the guest clusters that the top depth images of the
// chain hold themselves (the image first, then its backing files; 0 or
// less means the whole chain): clusters with data, compressed data or the
// zero flag, so that everything else reads through to a lower layer (or
// as zeros). The set spans the image's size. A raw backing file counts as
// holding every cluster it covers.
func (img *Image) Held(depth int) (Bitmap, error) {
	n := (img.Size() + img.clusterSize - 1) >> img.clusterBits
	out := NewBitmap(n)
	var cur backingStore = img
	for level := 0; cur != nil && (depth <= 0 || level < depth); level++ {
		l, ok := cur.(*Image)
		if !ok {
			if err := img.heldRaw(out, cur.Size(), n); err != nil {
				return nil, err
			}
			break
		}
		if l.clusterBits != img.clusterBits {
			return nil, fmt.Errorf("qcow2: %s: backing file %s has another cluster size", img.path, l.path)
		}
		if err := l.heldOwn(out, n); err != nil {
			return nil, err
		}
		cur = l.backing
	}
	return out, nil
}

// heldRaw adds the clusters a raw backing file of size bytes covers.
func (img *Image) heldRaw(out Bitmap, size, n int64) error {
	last := min(n, (size+img.clusterSize-1)>>img.clusterBits)
	for gc := range last {
		out.Set(gc)
	}
	return nil
}

// heldOwn adds the clusters below n this image holds itself.
func (img *Image) heldOwn(out Bitmap, n int64) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	per := int64(1) << img.l2Bits
	for l1i := range int64(len(img.l1)) {
		first := l1i * per
		if first >= n || img.l1[l1i]&offsetMask == 0 {
			continue
		}
		for gc := first; gc < min(first+per, n); gc++ {
			e, _, err := img.entryLocked(gc)
			if err != nil {
				return err
			}
			if img.kindOf(e) != kindUnallocated || img.allocating[gc] != nil {
				out.Set(gc)
			}
		}
	}
	return nil
}
