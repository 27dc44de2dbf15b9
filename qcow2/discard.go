package qcow2

// Discard makes the range read as zeros and changes no byte outside it.
// Clusters the range covers whole are unmapped (marked zero where a backing
// file would otherwise show through) and their host clusters freed after the
// next Flush; the pieces of clusters it covers in part are written with zeros,
// unless they read as zeros already. The last cluster of a disk whose size is
// not a multiple of the cluster size counts as whole when the range covers
// all of it up to the disk end. It is WriteZeroes with mayTrim.
func (img *Image) Discard(off, n int64) error {
	return img.WriteZeroes(off, n, true)
}

// unmapClusters unmaps guest clusters from gc up to last (exclusive), at most
// maxRun*16 under one hold of the lock, and returns where it stopped. With
// keepOwned (no holes wanted) it leaves alone clusters that read as zeros
// already and stops at the first cluster the image owns alone, for the caller
// to zero in place.
func (img *Image) unmapClusters(gc, last int64, keepOwned bool) (int64, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	var newEntry uint64
	if img.backing != nil {
		newEntry = entryZero
	}
	perTable := int64(1) << img.l2Bits
	for stop := min(last, gc+maxRun*16); gc < stop; gc++ {
		if ch := img.allocating[gc]; ch != nil {
			img.mu.Unlock()
			<-ch
			img.mu.Lock()
			return gc, nil
		}
		if newEntry == 0 && img.l1[gc>>img.l2Bits]&offsetMask == 0 {
			gc = (gc/perTable+1)*perTable - 1 // no table: already unmapped
			continue
		}
		e, _, err := img.entryLocked(gc)
		if err != nil {
			return gc, err
		}
		if keepOwned && img.inPlaceLocked(e) {
			return gc, nil
		}
		if e == newEntry || keepOwned && img.oldIsZero(gc, e) {
			continue
		}
		if err := img.setEntryLocked(gc, newEntry); err != nil {
			return gc, err
		}
		img.pending = append(img.pending, img.hostClustersOf(e)...)
	}
	return min(gc, last), nil
}
