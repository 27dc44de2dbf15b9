package qcow2

import "fmt"

// reservation is a host cluster taken for a guest cluster being written for
// the first time (or copied on write), before its L2 entry is published.
type reservation struct {
	host    uint64
	old     uint64 // the L2 entry being replaced
	fresh   bool   // the host cluster was never used: it reads as zeros
	inPlace bool   // someone else allocated it meanwhile: write in place
	wait    chan struct{}
	done    chan struct{}
}

// allocateAndWrite writes p at byte in of guest cluster gc, which has no host
// cluster of its own yet (or shares one), copying the rest of the cluster from
// where its data lives now.
func (img *Image) allocateAndWrite(gc int64, p []byte, in int64) error {
	for {
		r, err := img.reserve(gc)
		if err != nil {
			return err
		}
		if r.wait != nil {
			<-r.wait
			continue
		}
		if r.inPlace {
			return img.pwrite(p, int64(r.host)+in)
		}
		err = img.fillCluster(gc, r, p, in)
		return img.publish(gc, r, err)
	}
}

func (img *Image) reserve(gc int64) (reservation, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	if ch := img.allocating[gc]; ch != nil {
		return reservation{wait: ch}, nil
	}
	e, _, err := img.entryLocked(gc)
	if err != nil {
		return reservation{}, err
	}
	if img.inPlaceLocked(e) {
		return reservation{host: e & offsetMask, inPlace: true}, nil
	}
	end := uint64(img.rc.end())
	host, err := img.rc.alloc(1)
	if err != nil {
		return reservation{}, err
	}
	r := reservation{host: host, old: e, fresh: host >= end, done: make(chan struct{})}
	img.allocating[gc] = r.done
	return r, nil
}

// fillCluster writes the new cluster's contents: p at byte in, and the old
// contents around it unless they are zeros on a never-used cluster.
func (img *Image) fillCluster(gc int64, r reservation, p []byte, in int64) error {
	if in == 0 && int64(len(p)) == img.clusterSize {
		return img.pwrite(p, int64(r.host))
	}
	if r.fresh && img.oldIsZero(gc, r.old) {
		return img.pwrite(p, int64(r.host)+in)
	}
	buf := make([]byte, img.clusterSize)
	if err := img.readOld(gc, r.old, buf); err != nil {
		return err
	}
	copy(buf[in:], p)
	return img.pwrite(buf, int64(r.host))
}

// oldIsZero reports whether the cluster's current contents are all zeros
// without reading them.
func (img *Image) oldIsZero(gc int64, e uint64) bool {
	switch img.kindOf(e) {
	case kindZero:
		return true
	case kindUnallocated:
		if img.chain != nil {
			r, err := img.resolve(gc)
			return err == nil && r>>resCodeShift == resNone
		}
		return img.backing == nil || gc<<img.clusterBits >= img.backing.Size()
	}
	return false
}

func (img *Image) readOld(gc int64, e uint64, buf []byte) error {
	x := extent{gc: gc, n: 1, kind: img.kindOf(e), entry: e}
	return img.readExtent(x, buf, gc<<img.clusterBits, 0)
}

// publish points the L2 entry at the filled cluster, or gives the cluster back
// if filling it failed. Waiters on the same guest cluster are released.
func (img *Image) publish(gc int64, r reservation, fillErr error) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	defer func() {
		delete(img.allocating, gc)
		close(r.done)
	}()
	if fillErr != nil {
		if _, err := img.rc.decref(r.host); err != nil {
			return fmt.Errorf("%w (and releasing its cluster: %v)", fillErr, err)
		}
		return fillErr
	}
	if err := img.setEntryLocked(gc, r.host|entryCopied); err != nil {
		return err
	}
	img.pending = append(img.pending, img.hostClustersOf(r.old)...)
	return nil
}
