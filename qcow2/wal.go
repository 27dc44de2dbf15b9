package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// The intent log keeps acknowledged writes across a crash of the process
// (see "Crash safety" in the package doc). It lives beside the image as
// <image>.wal:
//
//	header  64 bytes: walMagic, the boot id of the machine that opened the
//	        image for writing (NUL padded), reserved
//	records 24 bytes each: guest cluster (8), new L2 entry (8), CRC-32C of
//	        the first 16 bytes (4), reserved (4)
//
// Records are written to the page cache only, never synced: they only have
// to outlive the process, not the machine. After a machine crash the boot id
// differs, the records are ignored and the image reports LostWrites.
const (
	walSuffix     = ".wal"
	walMagic      = "NVQ2WAL1"
	walHeaderSize = 64
	walBootIDMax  = 48
	walRecordSize = 24
	// walMaxBytes bounds the log: past it the metadata is written back
	// (which empties the log) before the next record.
	walMaxBytes = 8 << 20
)

var walCRC = crc32.MakeTable(crc32.Castagnoli)

// walRecord is one L2 entry change.
type walRecord struct {
	gc    uint64
	entry uint64
}

func (r walRecord) encode(b []byte) {
	binary.BigEndian.PutUint64(b[0:], r.gc)
	binary.BigEndian.PutUint64(b[8:], r.entry)
	binary.BigEndian.PutUint32(b[16:], crc32.Checksum(b[:16], walCRC))
	clear(b[20:walRecordSize])
}

// intentLog is the open log of a writable image. Guarded by Image.mu.
type intentLog struct {
	f   *os.File
	end int64 // offset of the next record
	buf [walRecordSize]byte
}

// WALPath is the intent log file that belongs to the image at path. It
// exists while the image is open for writing; a daemon that deletes an
// image deletes it too.
func WALPath(imagePath string) string { return imagePath + walSuffix }

// readBootID names this boot of the machine.
func readBootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("qcow2: reading the boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// readWAL reads the log at path. No file is boot "" and no records; a
// header that is not ours is treated the same (it was never synced, so no
// write was acknowledged under it). Records end at the first one whose
// checksum fails (a record torn by the crash).
func readWAL(path string) (boot string, recs []walRecord, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil, nil
	}
	if err != nil {
		return "", nil, fmt.Errorf("qcow2: reading the intent log: %w", err)
	}
	if len(data) < walHeaderSize || string(data[:len(walMagic)]) != walMagic {
		return "", nil, nil
	}
	id := data[len(walMagic) : len(walMagic)+walBootIDMax]
	if i := bytes.IndexByte(id, 0); i >= 0 {
		id = id[:i]
	}
	for b := data[walHeaderSize:]; len(b) >= walRecordSize; b = b[walRecordSize:] {
		if binary.BigEndian.Uint32(b[16:]) != crc32.Checksum(b[:16], walCRC) {
			break
		}
		recs = append(recs, walRecord{gc: binary.BigEndian.Uint64(b[0:]), entry: binary.BigEndian.Uint64(b[8:])})
	}
	return string(id), recs, nil
}

// CheckLostWrites reports, without opening it, whether the image at path
// was open for writing during another boot of this machine than bootID ("":
// the current one) and never closed: writes acknowledged then without a
// flush may be gone. The storage daemon asks at start, before any client
// reconnects.
func CheckLostWrites(imagePath, bootID string) (bool, error) {
	if bootID == "" {
		var err error
		if bootID, err = readBootID(); err != nil {
			return false, err
		}
	}
	boot, _, err := readWAL(WALPath(imagePath))
	if err != nil {
		return false, err
	}
	return boot != "" && boot != bootID, nil
}

// createWAL starts an empty log for this boot and makes the file durable,
// so that after a power cut the next Open knows the image was in use.
func createWAL(path, bootID string) (*intentLog, error) {
	if len(bootID) > walBootIDMax {
		return nil, fmt.Errorf("qcow2: boot id %q is longer than %d bytes", bootID, walBootIDMax)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("qcow2: creating the intent log: %w", err)
	}
	hdr := make([]byte, walHeaderSize)
	copy(hdr, walMagic)
	copy(hdr[len(walMagic):], bootID)
	if _, err := f.WriteAt(hdr, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("qcow2: writing the intent log: %w", err)
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		f.Close()
		return nil, fmt.Errorf("qcow2: syncing the intent log: %w", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		f.Close()
		return nil, fmt.Errorf("qcow2: syncing the intent log's directory: %w", err)
	}
	return &intentLog{f: f, end: walHeaderSize}, nil
}

// append writes one record to the page cache.
func (l *intentLog) append(r walRecord) error {
	r.encode(l.buf[:])
	if _, err := l.f.WriteAt(l.buf[:], l.end); err != nil {
		return fmt.Errorf("qcow2: writing the intent log: %w", err)
	}
	l.end += walRecordSize
	return nil
}

// reset empties the log once every change it records is in durable tables.
func (l *intentLog) reset() error {
	if l.end == walHeaderSize {
		return nil
	}
	if err := l.f.Truncate(walHeaderSize); err != nil {
		return fmt.Errorf("qcow2: truncating the intent log: %w", err)
	}
	l.end = walHeaderSize
	return nil
}

// remove deletes the log after a clean close.
func (l *intentLog) remove() error {
	if l == nil {
		return nil
	}
	name := l.f.Name()
	err := l.f.Close()
	if rerr := os.Remove(name); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
		err = rerr
	}
	return err
}

func (l *intentLog) close() {
	if l != nil {
		l.f.Close()
	}
}

// logEntryLocked records that gc's L2 entry becomes e. Caller holds mu.
func (img *Image) logEntryLocked(gc int64, e uint64) error {
	if img.log == nil {
		return nil
	}
	if img.log.end >= walMaxBytes {
		if err := img.flushMetadataLocked(); err != nil {
			return err
		}
	}
	return img.log.append(walRecord{gc: uint64(gc), entry: e})
}

// recoverWAL replays the intent log a crashed process left on this boot, or
// notes that one left on another boot may stand for lost writes, then starts
// a fresh log.
func (img *Image) recoverWAL(bootID string) error {
	if bootID == "" {
		var err error
		if bootID, err = readBootID(); err != nil {
			return err
		}
	}
	path := WALPath(img.path)
	boot, recs, err := readWAL(path)
	if err != nil {
		return err
	}
	switch {
	case boot == "":
	case boot != bootID:
		img.lostWrites = true
	case len(recs) > 0:
		if err := img.replay(recs); err != nil {
			return fmt.Errorf("qcow2: %s: replaying the intent log: %w", img.path, err)
		}
	}
	img.log, err = createWAL(path, bootID)
	return err
}

// replay applies the logged entry changes on top of the durable tables,
// writes them back and recounts every reference. A record that cannot be
// right (outside the disk or the file) ends the replay and marks the image
// as having lost writes.
func (img *Image) replay(recs []walRecord) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	clusters := uint64(len(img.l1)) << img.l2Bits
	fileSize := uint64(img.fileSize.Load())
	for i, r := range recs {
		if r.gc >= clusters || !img.hostClustersWithin(r.entry, fileSize) {
			img.lostWrites = true
			recs = recs[:i]
			break
		}
	}
	// The records' host clusters were taken after the durable refcounts
	// were written: keep the allocator (new L2 tables) off them.
	for _, r := range recs {
		for _, h := range img.hostClustersOf(r.entry) {
			if c := int64(h >> img.clusterBits); img.rc.get(c) == 0 {
				if err := img.rc.set(c, 1); err != nil {
					return err
				}
			}
		}
	}
	for _, r := range recs {
		if err := img.setEntryLocked(int64(r.gc), r.entry); err != nil {
			return err
		}
	}
	if err := img.writeBackLocked(); err != nil {
		return err
	}
	return img.repair()
}

func (img *Image) hostClustersWithin(e uint64, fileSize uint64) bool {
	for _, h := range img.hostClustersOf(e) {
		if h >= fileSize {
			return false
		}
	}
	return true
}
