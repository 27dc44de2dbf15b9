package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
)

// Create makes a new version 3 image of size bytes at path, which must not
// exist, and opens it read-write. With opts.BackingFile the image is an
// overlay of that file; a size of 0 then means the backing file's size.
func Create(path string, size int64, opts *CreateOptions) (*Image, error) {
	if opts == nil {
		opts = &CreateOptions{}
	}
	cs := opts.ClusterSize
	if cs == 0 {
		cs = defaultClusterSize
	}
	if cs < 1<<minClusterBits || cs > 1<<maxClusterBits || cs&(cs-1) != 0 {
		return nil, fmt.Errorf("qcow2: cluster size %d: must be a power of two from %d to %d", cs, 1<<minClusterBits, 1<<maxClusterBits)
	}
	if size < 0 || size > maxVirtualSize {
		return nil, fmt.Errorf("qcow2: size %d: must be 0 to %d bytes", size, maxVirtualSize)
	}
	h := &header{clusterBits: uint32(bits.TrailingZeros64(uint64(cs))), backingFile: opts.BackingFile}
	if opts.BackingFile != "" {
		bsize, format, err := probeBacking(path, opts.BackingFile, opts.BackingFormat)
		if err != nil {
			return nil, err
		}
		h.backingFormat = format
		if size == 0 {
			size = bsize
		}
	}
	h.size = uint64(size)
	if err := writeNewImage(path, h); err != nil {
		return nil, err
	}
	return Open(path, nil)
}

func probeBacking(path, backing, format string) (int64, string, error) {
	full := backing
	if !filepath.IsAbs(full) {
		full = filepath.Join(filepath.Dir(path), full)
	}
	if format == "" {
		var err error
		if format, err = probeFormat(full); err != nil {
			return 0, "", fmt.Errorf("qcow2: backing file: %w", err)
		}
	}
	b, err := openBackingStore(full, format, 1)
	if err != nil {
		return 0, "", fmt.Errorf("qcow2: backing file %s: %w", backing, err)
	}
	defer b.Close()
	return b.Size(), format, nil
}

// writeNewImage lays out header, refcount table, refcount blocks and L1 table
// in that order and syncs the file and its directory.
func writeNewImage(path string, h *header) (err error) {
	cs := h.clusterSize()
	perBlock := cs / 2
	l1Entries := int64(l1EntriesFor(h.size, h.clusterBits))
	l1Cls := max(1, (l1Entries*8+cs-1)/cs)
	// Size the refcount table for the image fully written (data plus L2
	// tables) with slack, so it rarely has to move.
	expected := int64(h.size)/cs + l1Entries + l1Cls + 16
	rtEntries := expected/perBlock + expected/perBlock/4 + 4
	rtCls := (rtEntries*8 + cs - 1) / cs
	blocks := int64(1)
	for (1+rtCls+blocks+l1Cls+perBlock-1)/perBlock > blocks {
		blocks++
	}
	used := 1 + rtCls + blocks + l1Cls
	h.refcountTableOffset = uint64(cs)
	h.refcountTableCls = uint32(rtCls)
	h.l1TableOffset = uint64((1 + rtCls + blocks) * cs)
	h.l1Size = uint32(l1Entries)

	hdr, err := h.encode()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("qcow2: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	buf := make([]byte, used*cs)
	copy(buf, hdr)
	be := binary.BigEndian
	for b := int64(0); b < blocks; b++ {
		be.PutUint64(buf[cs+b*8:], uint64((1+rtCls+b)*cs))
	}
	for c := int64(0); c < used; c++ {
		be.PutUint16(buf[(1+rtCls)*cs+c*2:], 1)
	}
	if _, err := f.WriteAt(buf, 0); err != nil {
		return fmt.Errorf("qcow2: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("qcow2: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}
