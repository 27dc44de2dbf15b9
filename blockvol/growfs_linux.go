package blockvol

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Ext4Grower grows a mounted ext4 file system to its device's size with
// the kernel's online resize (the EXT4_IOC_RESIZE_FS ioctl on the mount,
// as resize2fs does for a mounted file system): no program is run. It
// leaves a file system that spans its device already alone, so the
// kernel logs nothing then.
type Ext4Grower struct{}

var _ FSGrower = Ext4Grower{}

// ext4IocResizeFS is EXT4_IOC_RESIZE_FS, _IOW('f', 16, __u64).
const ext4IocResizeFS = 0x40086610

// More superblock fields (mmp.go has the others), little endian.
const (
	sbBlocksCountLo = 0x04
	sbMagic         = 0x38
	sbBlocksCountHi = 0x150
	incompat64Bit   = 0x80
)

// GrowFS implements FSGrower. The superblock is read through the device's
// page cache, which the mounted file system's own buffers share, so it is
// the live one; its block count only ever lags the kernel's, which at
// worst costs an ioctl that finds nothing to do.
func (Ext4Grower) GrowFS(_ context.Context, device, target string) (int64, error) {
	size, blocks, bs, err := readExtGeometry(device)
	if err != nil {
		return 0, err
	}
	want := uint64(size) / bs
	if want <= blocks {
		return size, nil
	}
	d, err := os.OpenFile(target, os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, d.Fd(), ext4IocResizeFS, uintptr(unsafe.Pointer(&want))); errno != 0 {
		why := ""
		if errno == unix.EPERM && !HasCapSysResource() {
			why = " (the plugin lacks CAP_SYS_RESOURCE, which the kernel's online resize needs: " +
				"give it to the plugin's process or container)"
		}
		return 0, fmt.Errorf("growing the ext4 file system at %s from %d to %d blocks of %d bytes (EXT4_IOC_RESIZE_FS): %w%s",
			target, blocks, want, bs, errno, why)
	}
	return size, nil
}

// capSysResource is CAP_SYS_RESOURCE's bit in the capability sets.
const capSysResource = 24

// HasCapSysResource reports whether this process may grow a mounted ext4
// file system: the kernel's online resize needs CAP_SYS_RESOURCE (so does
// resize2fs on a mounted file system).
func HasCapSysResource() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<capSysResource) != 0
		}
	}
	return false
}

// readExtGeometry reads device's size, and its ext file system's block
// count and block size.
func readExtGeometry(device string) (size int64, blocks, blockSize uint64, err error) {
	f, err := os.Open(device)
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	if size, err = f.Seek(0, io.SeekEnd); err != nil {
		return 0, 0, 0, fmt.Errorf("size of %s: %w", device, err)
	}
	sb := make([]byte, sbSize)
	if _, err := f.ReadAt(sb, sbOffset); err != nil {
		return 0, 0, 0, fmt.Errorf("reading the superblock of %s: %w", device, err)
	}
	blocks, blockSize, err = parseExtSuperblock(sb)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("%s: %w", device, err)
	}
	return size, blocks, blockSize, nil
}

// parseExtSuperblock returns an ext superblock's block count and size.
func parseExtSuperblock(sb []byte) (blocks, blockSize uint64, err error) {
	le := binary.LittleEndian
	if len(sb) < sbBlocksCountHi+4 || le.Uint16(sb[sbMagic:]) != extMagic {
		return 0, 0, fmt.Errorf("no ext4 superblock")
	}
	logBS := le.Uint32(sb[sbLogBlockSize:])
	if logBS > 6 {
		return 0, 0, fmt.Errorf("ext4 superblock: block size 2^%d KiB", logBS)
	}
	blocks = uint64(le.Uint32(sb[sbBlocksCountLo:]))
	if le.Uint32(sb[sbFeatureIncompat:])&incompat64Bit != 0 {
		blocks |= uint64(le.Uint32(sb[sbBlocksCountHi:])) << 32
	}
	return blocks, 1024 << logBS, nil
}
