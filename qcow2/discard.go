package qcow2

// Discard makes the range read as zeros. Whole clusters are unmapped (marked
// zero where a backing file would otherwise show through) and their host
// clusters freed after the next Flush; partial clusters are written with zeros.
func (img *Image) Discard(off, n int64) error {
	if err := img.checkWrite(off, n); err != nil {
		return err
	}
	img.ioGate.RLock()
	defer img.ioGate.RUnlock()
	cs := img.clusterSize
	end := off + n
	if end == img.Size() {
		end = (end + cs - 1) &^ (cs - 1) // the disk's last partial cluster is whole
	}
	if head := off & (cs - 1); head != 0 && n > 0 {
		m := min(cs-head, n)
		if err := img.writeRange(make([]byte, m), off); err != nil {
			return err
		}
		off += m
	}
	if off >= end {
		return nil
	}
	if tail := end &^ (cs - 1); tail < end && tail >= off {
		if err := img.writeRange(make([]byte, min(end, img.Size())-tail), tail); err != nil {
			return err
		}
		end = tail
	}
	for gc := off >> img.clusterBits; gc < end>>img.clusterBits; {
		next, err := img.discardClusters(gc, end>>img.clusterBits)
		if err != nil {
			return err
		}
		gc = next
	}
	return nil
}

// discardClusters unmaps clusters from gc up to last (exclusive), at most
// maxRun under one hold of the lock, and returns where it stopped.
func (img *Image) discardClusters(gc, last int64) (int64, error) {
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
		if e == newEntry {
			continue
		}
		if err := img.setEntryLocked(gc, newEntry); err != nil {
			return gc, err
		}
		img.pending = append(img.pending, img.hostClustersOf(e)...)
	}
	return min(gc, last), nil
}
