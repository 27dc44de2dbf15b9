package blockvol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A host that finds its own name as the last writer of an unclean MMP
// block (its mount of the volume ended without unmounting: the attach
// helper died with a managed plugin's container, a kernel NBD device was
// released under the file system) need not wait for the kernel's check
// when it can see that writer is gone. It can: ext4 lists every file
// system mounted on this host, in any mount namespace, under /sys/fs/ext4
// by device. A mount of this file system that could still stamp the block
// is one whose device answers with this file system's superblock; a device
// that fails (its connection or helper gone) stamps nothing. Other hosts'
// writers are the storage server's to fence: this host holds the volume's
// read-write attachment, so any earlier attachment's export is revoked.
//
// Linked clones share their origin's UUID, so a mounted clone looks like a
// live writer here; the check then falls back to the kernel's (or
// watchMMP), which is slower but sound.

// Where the live ext4 mounts and their devices are; tests change them.
var (
	ext4SysDir = "/sys/fs/ext4"
	devDir     = "/dev"
)

// probeTimeout bounds the read of one mounted file system's superblock: a
// device waiting for a lost connection may hang.
const probeTimeout = 2 * time.Second

// selfWriterGone reports whether no file system mounted on this host is
// the one with uuid on a device that still answers. When it may be, why
// says which device.
func selfWriterGone(uuid [16]byte) (gone bool, why string) {
	entries, err := os.ReadDir(ext4SysDir)
	if err != nil {
		return false, fmt.Sprintf("cannot list this host's ext4 mounts: %v", err)
	}
	for _, e := range entries {
		if !e.IsDir() || e.Name() == "features" {
			continue
		}
		// sysfs names a device /dev/a/b "a!b".
		dev := filepath.Join(devDir, strings.ReplaceAll(e.Name(), "!", "/"))
		live, err := probeUUID(dev, uuid)
		switch {
		case err != nil:
			return false, fmt.Sprintf("mounted %s: %v", dev, err)
		case live:
			return false, fmt.Sprintf("mounted %s holds this file system and answers", dev)
		}
	}
	return true, ""
}

// errProbeTimeout: a device did not answer within probeTimeout.
var errProbeTimeout = errors.New("no answer to a read within " + probeTimeout.String())

// probeUUID reports whether dev answers a read of its superblock with an
// ext file system of uuid. A device that fails the read, or holds another
// file system, does not; one that cannot be opened, or does not answer in
// time, is an error (it might).
func probeUUID(dev string, uuid [16]byte) (bool, error) {
	type result struct {
		live bool
		err  error
	}
	if _, err := os.Stat(dev); err != nil {
		return false, err
	}
	ch := make(chan result, 1)
	go func() {
		sb := make([]byte, sbSize)
		if err := readDirect(dev, sb, sbOffset); err != nil {
			ch <- result{} // fails: stamps nothing
			return
		}
		ch <- result{live: binary.LittleEndian.Uint16(sb[0x38:]) == 0xEF53 && bytes.Equal(sb[sbUUID:sbUUID+16], uuid[:])}
	}()
	select {
	case r := <-ch:
		return r.live, r.err
	case <-time.After(probeTimeout):
		return false, errProbeTimeout
	}
}

// directAlign is the alignment of direct reads: the largest logical block
// size of the devices involved.
const directAlign = 4096

// readDirect fills p from path at off, bypassing the page cache (O_DIRECT)
// where path allows it; past the end of path is an error.
func readDirect(path string, p []byte, off int64) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if errors.Is(err, unix.EINVAL) { // a file system without direct I/O
		f, err = os.Open(path)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	start := off &^ (directAlign - 1)
	n := (off + int64(len(p)) - start + directAlign - 1) &^ (directAlign - 1)
	buf := alignedBuf(int(n))
	if _, err := f.ReadAt(buf, start); err != nil {
		if err == io.EOF {
			return fmt.Errorf("%s ends before byte %d", path, off+int64(len(p)))
		}
		return err
	}
	copy(p, buf[off-start:])
	return nil
}

// alignedBuf is n bytes at an address that is a multiple of directAlign.
func alignedBuf(n int) []byte {
	b := make([]byte, n+directAlign)
	skip := int(uintptr(unsafe.Pointer(&b[0])) & (directAlign - 1))
	if skip != 0 {
		skip = directAlign - skip
	}
	return b[skip : skip+n : skip+n]
}
