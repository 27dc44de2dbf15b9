package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// Layers: the operations the storage daemon's snapshots are built of (see
// "Snapshots as external layers" in the package doc).

// ReadBackingFile returns the backing file name recorded in the header of
// the image at path ("" for none) without opening its chain.
func ReadBackingFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("qcow2: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("qcow2: %w", err)
	}
	buf := make([]byte, min(st.Size(), 1<<maxClusterBits))
	if _, err := f.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("qcow2: reading the header of %s: %w", path, err)
	}
	h, err := parseHeader(path, buf, st.Size())
	if err != nil {
		return "", err
	}
	return h.backingFile, nil
}

// backingImage returns the backing file as a qcow2 image, or an error
// naming what it is instead.
func (img *Image) backingImage() (*Image, error) {
	b, ok := img.backing.(*Image)
	if !ok {
		return nil, fmt.Errorf("qcow2: %s: the backing file is not a qcow2 image (or there is none)", img.path)
	}
	return b, nil
}

// StreamBacking pulls into this image every cluster that its backing
// image holds itself (not through its own backing file) and this image
// does not, then records the backing image's backing file as this
// image's own: the backing image leaves the chain, and no byte of this
// image reads differently at any step. It is safe while the image serves
// reads and writes: a cluster a client writes meanwhile is never
// overwritten with the older data. The order makes it crash safe: the
// copies are flushed (durable, in tables) before the header names the new
// backing file, in one sector-sized write.
//
// The image keeps reading through its current backing handle until it is
// reopened; the backing file must therefore not change (it is an immutable
// layer) but may be deleted once this returns.
func (img *Image) StreamBacking() error {
	if err := img.PullBacking(); err != nil {
		return err
	}
	return img.DropBacking()
}

// PullBacking is StreamBacking's first half: it copies the clusters and
// flushes them, and the image still names its backing file.
func (img *Image) PullBacking() error {
	if err := img.checkWrite(0, 0); err != nil {
		return err
	}
	b, err := img.backingImage()
	if err != nil {
		return err
	}
	if b.backing != nil && b.backing.Size() > b.Size() {
		return fmt.Errorf("qcow2: %s: its backing file's backing file is larger than it; streaming would expose data past its end", img.path)
	}
	buf := make([]byte, img.clusterSize)
	end := min(img.Size(), b.Size())
	last := (end + img.clusterSize - 1) >> img.clusterBits
	for l1i := range int64(len(b.l1)) {
		first := l1i << b.l2Bits
		if first >= last || b.l1[l1i]&offsetMask == 0 {
			continue
		}
		for gc := first; gc < min(first+int64(1)<<b.l2Bits, last); gc++ {
			if err := img.pullCluster(b, gc, end, buf); err != nil {
				return err
			}
		}
	}
	return img.Flush()
}

// DropBacking is StreamBacking's second half: the image names its backing
// file's backing file (or none) from then on. Only after PullBacking.
func (img *Image) DropBacking() error {
	b, err := img.backingImage()
	if err != nil {
		return err
	}
	return img.SetBackingFile(b.hdr.backingFile, b.hdr.backingFormat)
}

// pullCluster copies guest cluster gc from b (which holds it itself) into
// img unless img holds it or a client is writing it.
func (img *Image) pullCluster(b *Image, gc, end int64, buf []byte) error {
	b.mu.Lock()
	e, _, err := b.entryLocked(gc)
	b.mu.Unlock()
	if err != nil {
		return err
	}
	kind := b.kindOf(e)
	if kind == kindUnallocated {
		return nil
	}
	img.ioGate.RLock()
	defer img.ioGate.RUnlock()
	if kind == kindZero {
		return img.pullZero(gc)
	}
	off := gc << img.clusterBits
	n := min(img.clusterSize, end-off)
	clear(buf)
	x := extent{gc: gc, n: 1, kind: kind, entry: e}
	if err := b.readExtent(x, buf[:n], off, 0); err != nil {
		return err
	}
	r, err := img.reserve(gc)
	if err != nil || r.wait != nil || r.inPlace {
		// A client's write owns the cluster now (or is making it): its
		// data is newer than the backing file's.
		return err
	}
	if img.kindOf(r.old) != kindUnallocated {
		// The cluster is this image's (zero flag, compressed or shared):
		// the backing file does not show through it.
		return img.publishUnchanged(gc, r)
	}
	return img.publish(gc, r, img.pwrite(buf, int64(r.host)))
}

// publishUnchanged gives back a reservation without changing the entry.
func (img *Image) publishUnchanged(gc int64, r reservation) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	delete(img.allocating, gc)
	close(r.done)
	_, err := img.rc.decref(r.host)
	return err
}

// pullZero gives gc the zero flag where the image does not hold it.
func (img *Image) pullZero(gc int64) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.allocating[gc] != nil {
		return nil
	}
	e, _, err := img.entryLocked(gc)
	if err != nil || img.kindOf(e) != kindUnallocated {
		return err
	}
	return img.setEntryLocked(gc, entryZero)
}

// SetBackingFile records name (format "qcow2" or "raw"; "" for none) as
// the image's backing file in place. The name goes to a free slot of the
// header cluster first, synced, then its offset and length change in one
// write of 12 bytes inside the first sector, synced: a crash leaves the
// old name or the new one, never a mix. The format may not change (the
// backing format extension is not rewritten). The open image keeps its
// current backing handle: the caller guarantees the new backing file
// reads the same.
func (img *Image) SetBackingFile(name, format string) error {
	if err := img.checkWrite(0, 0); err != nil {
		return err
	}
	if name != "" && img.hdr.backingFormat != "" && format != img.hdr.backingFormat {
		return fmt.Errorf("qcow2: %s: backing format %q cannot change to %q in place", img.path, img.hdr.backingFormat, format)
	}
	if len(name) > maxBackingNameLen {
		return fmt.Errorf("qcow2: backing file name of %d bytes is too long (at most %d)", len(name), maxBackingNameLen)
	}
	var field [12]byte
	if name != "" {
		slot, err := img.freeNameSlot(len(name))
		if err != nil {
			return err
		}
		if _, err := img.f.WriteAt([]byte(name), slot); err != nil {
			return fmt.Errorf("qcow2: %s: writing the header: %w", img.path, err)
		}
		if err := img.sync(); err != nil {
			return err
		}
		binary.BigEndian.PutUint64(field[0:], uint64(slot))
		binary.BigEndian.PutUint32(field[8:], uint32(len(name)))
	}
	if _, err := img.f.WriteAt(field[:], 8); err != nil {
		return fmt.Errorf("qcow2: %s: writing the header: %w", img.path, err)
	}
	if err := img.sync(); err != nil {
		return err
	}
	img.hdr.backingFile = name
	img.hdr.backingFileOffset = binary.BigEndian.Uint64(field[0:])
	img.hdr.backingFileSize = binary.BigEndian.Uint32(field[8:])
	return nil
}

// freeNameSlot returns where in the header cluster a backing file name of
// n bytes may go without touching the header, its extensions or the
// current name: right after the extensions, or one maximal name further.
func (img *Image) freeNameSlot(n int) (int64, error) {
	buf := make([]byte, img.clusterSize)
	if err := img.readMeta(buf, 0); err != nil {
		return 0, err
	}
	extEndOff := img.extensionsEnd(buf)
	cur, curEnd := int64(img.hdr.backingFileOffset), int64(img.hdr.backingFileOffset)+int64(img.hdr.backingFileSize)
	for _, slot := range []int64{extEndOff, extEndOff + maxBackingNameLen + 1} {
		end := slot + int64(n)
		if end > img.clusterSize {
			break
		}
		if img.hdr.backingFileOffset == 0 || end <= cur || slot >= curEnd {
			return slot, nil
		}
	}
	return 0, fmt.Errorf("qcow2: %s: no room in the header cluster for a backing file name of %d bytes", img.path, n)
}

// extensionsEnd is the offset just past the end-of-extensions marker.
func (img *Image) extensionsEnd(buf []byte) int64 {
	be := binary.BigEndian
	off := int64(img.hdr.headerLength)
	for off+8 <= int64(len(buf)) {
		typ, n := be.Uint32(buf[off:]), int64(be.Uint32(buf[off+4:]))
		off += 8
		if typ == extEnd {
			break
		}
		off += (n + 7) &^ 7
	}
	return off
}

// Chain returns the paths of the image and of every qcow2 image in its
// backing chain, top first.
func (img *Image) Chain() []string {
	var out []string
	for cur := img; cur != nil; {
		out = append(out, cur.path)
		cur, _ = cur.backing.(*Image)
	}
	return out
}
