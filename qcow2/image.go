package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// OpenOptions tune Open. The zero value opens read-write with defaults.
type OpenOptions struct {
	ReadOnly bool
	// L2CacheTables is how many L2 tables to keep in memory; 0 means enough to
	// map 8 GiB of the virtual disk.
	L2CacheTables int
	// BootID names the running boot of the machine; empty reads
	// /proc/sys/kernel/random/boot_id. The intent log is replayed only on
	// the boot that wrote it (tests set this to act out a power cut).
	BootID string
}

// CreateOptions tune Create. The zero value makes a standalone image of 64 KiB
// clusters.
type CreateOptions struct {
	ClusterSize int64 // power of two, 512 B to 2 MiB; default 64 KiB
	// BackingFile makes the new image an overlay (linked clone) of this file. A
	// relative name is resolved against the new image's directory, as QEMU does.
	BackingFile string
	// BackingFormat is "qcow2" or "raw"; empty means probe the backing file.
	BackingFormat string
}

const defaultClusterSize = 64 << 10

// backingStore is what an overlay reads through: a qcow2 *Image or a raw file.
type backingStore interface {
	io.ReaderAt
	Size() int64
	Close() error
}

// Image is an open qcow2 image. See the package documentation for its
// concurrency and crash-safety rules.
type Image struct {
	path        string
	f           *os.File
	readOnly    bool
	hdr         *header
	clusterBits uint32
	clusterSize int64
	l2Bits      uint32 // log2 of entries per L2 table
	backing     backingStore
	chain       *chain // the backing chain flattened for reads (chain.go); nil if none
	zeroFlag    bool   // version 3: L2 entries may carry the zero flag

	size     atomic.Int64
	fileSize atomic.Int64 // bytes the host file is known to span
	closed   atomic.Bool

	// ioGate is held shared by every data operation and exclusively while
	// clusters freed by Discard are released, so no write that looked up a
	// cluster before it was freed can land in it after it is reused.
	ioGate sync.RWMutex

	mu         sync.Mutex // guards everything below
	l1         []uint64
	l1Offset   uint64
	l1Dirty    bool
	l2         *l2Cache
	rc         *refcounts // nil when read-only
	allocating map[int64]chan struct{}
	pending    []uint64 // host clusters to free once the tables are durable
	freeable   []uint64 // host clusters whose last reference is durably gone
	flushErr   error    // a failed metadata write poisons the image
	log        *intentLog
	// lostWrites: the image was open for writing in an earlier boot and
	// not closed; what was acknowledged but not flushed then may be gone.
	lostWrites bool

	// syncErr is the first failed fdatasync: Linux reports a writeback error
	// once, so every later flush must fail too until the image is reopened.
	syncErr   atomic.Pointer[error]
	fdatasync func(fd int) error
}

// Open opens an existing image and its backing chain.
func Open(path string, opts *OpenOptions) (*Image, error) {
	return openDepth(path, opts, 0)
}

func openDepth(path string, opts *OpenOptions, depth int) (*Image, error) {
	if opts == nil {
		opts = &OpenOptions{}
	}
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("qcow2: %w", err)
	}
	img, err := newImage(path, f, opts, depth)
	if err != nil {
		f.Close()
		return nil, err
	}
	return img, nil
}

func newImage(path string, f *os.File, opts *OpenOptions, depth int) (*Image, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("qcow2: %w", err)
	}
	buf := make([]byte, min(st.Size(), 1<<maxClusterBits))
	if _, err := f.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("qcow2: reading the header of %s: %w", path, err)
	}
	h, err := parseHeader(path, buf, st.Size())
	if err != nil {
		return nil, err
	}
	img := &Image{
		path: path, f: f, readOnly: opts.ReadOnly, hdr: h,
		clusterBits: h.clusterBits, clusterSize: h.clusterSize(),
		l2Bits: h.clusterBits - 3, zeroFlag: h.version >= 3,
		allocating: map[int64]chan struct{}{}, fdatasync: unix.Fdatasync,
	}
	img.size.Store(int64(h.size))
	img.fileSize.Store(st.Size())
	tables := opts.L2CacheTables
	if tables <= 0 {
		tables = defaultL2CacheTables(h.clusterBits)
	}
	img.l2 = newL2Cache(tables)
	if err := img.loadL1(); err != nil {
		return nil, err
	}
	if err := img.openBacking(depth); err != nil {
		return nil, err
	}
	img.chain = newChain(img)
	if !opts.ReadOnly {
		if err := img.openForWriting(st.Size(), opts.BootID); err != nil {
			img.closeBacking()
			return nil, err
		}
	}
	return img, nil
}

func (img *Image) loadL1() error {
	h := img.hdr
	buf := make([]byte, int64(h.l1Size)*8)
	if err := img.readMeta(buf, int64(h.l1TableOffset)); err != nil {
		return fmt.Errorf("qcow2: %s: reading the L1 table: %w", img.path, err)
	}
	img.l1 = make([]uint64, h.l1Size)
	img.l1Offset = h.l1TableOffset
	for i := range img.l1 {
		img.l1[i] = binary.BigEndian.Uint64(buf[i*8:])
	}
	return nil
}

// openForWriting checks the image is one this package may write, repairs it
// if its last writer did not close it, replays its intent log, and marks it
// dirty.
func (img *Image) openForWriting(fileSize int64, bootID string) error {
	h := img.hdr
	switch {
	case h.version < 3:
		return &UnsupportedError{Path: img.path, Feature: "writing version 2 (compat=0.10) images; open read-only or convert with qemu-img amend -o compat=1.1"}
	case h.refcountOrder != 4:
		return &UnsupportedError{Path: img.path, Feature: fmt.Sprintf("writing images with %d-bit refcounts (only 16)", 1<<h.refcountOrder)}
	case h.nbSnapshots != 0:
		return &UnsupportedError{Path: img.path, Feature: "writing images with internal snapshots"}
	}
	img.rc = newRefcounts(img.clusterBits)
	if err := img.rc.load(img, h.refcountTableOffset, h.refcountTableCls, fileSize); err != nil {
		return err
	}
	if h.incompatible&incompatDirty != 0 {
		if err := img.repair(); err != nil {
			return fmt.Errorf("qcow2: %s: repairing after an unclean shutdown: %w", img.path, err)
		}
	}
	if err := img.recoverWAL(bootID); err != nil {
		return err
	}
	return img.setDirtyBit(true)
}

// setDirtyBit writes the incompatible features field and syncs it.
func (img *Image) setDirtyBit(on bool) error {
	if on {
		img.hdr.incompatible |= incompatDirty
	} else {
		img.hdr.incompatible &^= incompatDirty
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], img.hdr.incompatible)
	if _, err := img.f.WriteAt(b[:], offIncompatible); err != nil {
		return fmt.Errorf("qcow2: %s: writing the header: %w", img.path, err)
	}
	return img.sync()
}

func (img *Image) openBacking(depth int) error {
	h := img.hdr
	if h.backingFile == "" {
		return nil
	}
	if depth >= maxBackingDepth {
		return &FormatError{Path: img.path, Field: "backing file", Reason: fmt.Sprintf("backing chain deeper than %d images (a loop?)", maxBackingDepth)}
	}
	path := h.backingFile
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(img.path), path)
	}
	b, err := openBackingStore(path, h.backingFormat, depth+1)
	if err != nil {
		return fmt.Errorf("qcow2: %s: opening backing file: %w", img.path, err)
	}
	img.backing = b
	return nil
}

// openBackingStore opens a backing file read-only as qcow2 or raw.
func openBackingStore(path, format string, depth int) (backingStore, error) {
	if format == "" {
		var err error
		if format, err = probeFormat(path); err != nil {
			return nil, err
		}
	}
	switch format {
	case "qcow2":
		return openDepth(path, &OpenOptions{ReadOnly: true}, depth)
	case "raw":
		return openRaw(path)
	}
	return nil, fmt.Errorf("backing format %q is not supported (supported: qcow2, raw)", format)
}

func probeFormat(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var b [4]byte
	if _, err := io.ReadFull(f, b[:]); err == nil && binary.BigEndian.Uint32(b[:]) == magic {
		return "qcow2", nil
	}
	return "raw", nil
}

// rawFile is a raw backing file.
type rawFile struct {
	f    *os.File
	size int64
}

func openRaw(path string) (*rawFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &rawFile{f: f, size: st.Size()}, nil
}

func (r *rawFile) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(p, off) }
func (r *rawFile) Size() int64                             { return r.size }
func (r *rawFile) Close() error                            { return r.f.Close() }

// Size is the virtual disk size in bytes.
func (img *Image) Size() int64 { return img.size.Load() }

// ClusterSize is the image's cluster size in bytes.
func (img *Image) ClusterSize() int64 { return img.clusterSize }

// BackingFile is the backing file name as recorded in the header ("" if none).
func (img *Image) BackingFile() string { return img.hdr.backingFile }

// Allocated is the number of bytes the host file occupies on disk.
func (img *Image) Allocated() (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(img.f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("qcow2: %s: %w", img.path, err)
	}
	return st.Blocks * 512, nil
}

// Close flushes everything, clears the dirty bit and closes the image and its
// backing chain. The image is unusable afterwards.
func (img *Image) Close() error {
	if img.closed.Swap(true) {
		return ErrClosed
	}
	var err error
	if !img.readOnly {
		// The second flush writes the refcounts of clusters the first released.
		err = img.flush()
		if err == nil {
			err = img.flush()
		}
		// The log goes before the dirty bit: a crash in between leaves a
		// dirty image without a log, which Open repairs, never a clean
		// image with a log that names this boot.
		if err == nil {
			err = img.log.remove()
		} else {
			img.log.close() // keep it: the next Open replays it
		}
		if err == nil {
			err = img.setDirtyBit(false)
		}
	}
	img.closeBacking()
	if cerr := img.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("qcow2: %s: %w", img.path, cerr)
	}
	return err
}

func (img *Image) closeBacking() {
	if img.backing != nil {
		img.backing.Close()
	}
}

// readMeta reads metadata that must lie entirely inside the file.
func (img *Image) readMeta(buf []byte, off int64) error {
	if off < 0 || off+int64(len(buf)) > img.fileSize.Load() {
		return img.corrupt("metadata", "%d bytes at %#x lie beyond the end of the file", len(buf), off)
	}
	_, err := img.f.ReadAt(buf, off)
	return err
}

func (img *Image) corrupt(field, format string, args ...any) error {
	return &FormatError{Path: img.path, Field: field, Reason: fmt.Sprintf(format, args...)}
}

func (img *Image) sync() error {
	if p := img.syncErr.Load(); p != nil {
		return *p
	}
	if err := img.fdatasync(int(img.f.Fd())); err != nil {
		err = fmt.Errorf("qcow2: %s: fdatasync failed, writes since the last flush may be lost; the image needs reopening: %w", img.path, err)
		img.syncErr.CompareAndSwap(nil, &err)
		return *img.syncErr.Load()
	}
	return nil
}

// LostWrites reports that the image was open for writing during an earlier
// boot of the machine and never closed (a power cut, a kernel crash): writes
// acknowledged then but not flushed may be gone, though everything flushed
// is intact. Clients that wrote then must not be told their data is durable.
func (img *Image) LostWrites() bool { return img.lostWrites }
