package fuseattach

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The loop device: the FUSE file made a block device with the loop
// driver's ioctls (LOOP_CONFIGURE, else LOOP_SET_FD and friends on kernels
// before 5.8), without losetup.

// loopAttempts bounds the retries when another process takes the free
// device LOOP_CTL_GET_FREE named before we could configure it.
const loopAttempts = 20

// loopDevice is a configured loop device, held open.
type loopDevice struct {
	Index int
	Path  string // /dev/loopN
	DIO   bool   // the driver does direct I/O on the backing file
	f     *os.File
}

// attachLoop makes a loop device of backing with the given logical block
// size. The device is marked autoclear: when the last opener (this
// process, or the file system mounted on it) lets go, the driver detaches
// it, so a crashed helper leaves no device behind once the file system is
// unmounted.
func attachLoop(backing *os.File, blockSize uint32) (*loopDevice, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop devices: %w", err)
	}
	defer ctl.Close()
	for range loopAttempts {
		idx, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("finding a free loop device: %w", err)
		}
		dev, err := openLoop(idx)
		if err != nil {
			return nil, err
		}
		err = configureLoop(dev, backing, blockSize)
		if errors.Is(err, unix.EBUSY) {
			dev.Close() // taken in between: ask again
			continue
		}
		if err != nil {
			dev.Close()
			return nil, fmt.Errorf("configuring %s: %w", dev.Name(), err)
		}
		l := &loopDevice{Index: idx, Path: dev.Name(), f: dev}
		l.DIO = readSys(loopSysPath(idx, "loop/dio")) == "1"
		return l, nil
	}
	return nil, fmt.Errorf("no free loop device after %d attempts (others kept taking them)", loopAttempts)
}

// openLoop opens /dev/loopN, making the node when /dev lacks it (a /dev
// that is not devtmpfs, as in some containers).
func openLoop(idx int) (*os.File, error) {
	path := "/dev/loop" + strconv.Itoa(idx)
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		if err := unix.Mknod(path, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(idx)))); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("making %s: %w", path, err)
		}
		f, err = os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return f, nil
}

// configureLoop binds backing to dev in one step (LOOP_CONFIGURE), or in
// the older steps where the kernel lacks it.
func configureLoop(dev, backing *os.File, blockSize uint32) error {
	var cfg unix.LoopConfig
	cfg.Fd = uint32(backing.Fd())
	cfg.Size = blockSize
	cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR | unix.LO_FLAGS_DIRECT_IO
	copy(cfg.Info.File_name[:unix.LO_NAME_SIZE-1], backing.Name())
	err := unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
		return err
	}
	return configureLoopOld(dev, backing, &cfg)
}

// configureLoopOld is LOOP_CONFIGURE for kernels before 5.8.
func configureLoopOld(dev, backing *os.File, cfg *unix.LoopConfig) error {
	fd := int(dev.Fd())
	if err := unix.IoctlSetInt(fd, unix.LOOP_SET_FD, int(backing.Fd())); err != nil {
		return err
	}
	cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
	err := unix.IoctlLoopSetStatus64(fd, &cfg.Info)
	if err == nil {
		err = unix.IoctlSetInt(fd, unix.LOOP_SET_BLOCK_SIZE, int(cfg.Size))
	}
	if err != nil {
		_ = unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0)
		return err
	}
	_ = unix.IoctlSetInt(fd, unix.LOOP_SET_DIRECT_IO, 1) // a speed-up only
	return nil
}

// detach clears the device and closes it. The driver lets go of the
// backing file once no one else holds the device; release waits for that.
func (l *loopDevice) detach() error {
	err := unix.IoctlSetInt(int(l.f.Fd()), unix.LOOP_CLR_FD, 0)
	cerr := l.f.Close()
	if err != nil && !errors.Is(err, unix.ENXIO) { // ENXIO: not bound any more
		return fmt.Errorf("detaching %s: %w", l.Path, err)
	}
	return cerr
}

// setCapacity makes the device take its backing file's size again
// (LOOP_SET_CAPACITY), after the file grew, and returns the device's size.
func (l *loopDevice) setCapacity() (int64, error) {
	if err := unix.IoctlSetInt(int(l.f.Fd()), unix.LOOP_SET_CAPACITY, 0); err != nil {
		return 0, fmt.Errorf("LOOP_SET_CAPACITY on %s: %w", l.Path, err)
	}
	n, err := l.f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", l.Path, err)
	}
	return n, nil
}

// loopBacking is the path of the file /dev/loopN is bound to, "" when the
// device does not exist or is not bound.
func loopBacking(device string) string {
	idx, ok := loopIndex(device)
	if !ok {
		return ""
	}
	return strings.TrimSuffix(readSys(loopSysPath(idx, "loop/backing_file")), " (deleted)")
}

// waitUnbound waits until /dev/loopN no longer holds a backing file.
func waitUnbound(device string, d time.Duration) bool {
	for end := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if loopBacking(device) == "" {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

// loopIndex parses /dev/loopN.
func loopIndex(device string) (int, bool) {
	s, ok := strings.CutPrefix(device, "/dev/loop")
	n, err := strconv.Atoi(s)
	if !ok || err != nil || n < 0 || strconv.Itoa(n) != s {
		return 0, false
	}
	return n, true
}

// clearLoop unbinds /dev/loopN (autoclear when it is still open), for the
// clean-up of a helper that died.
func clearLoop(device string) error {
	f, err := os.OpenFile(device, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
	if errors.Is(err, unix.ENXIO) {
		return nil
	}
	return err
}

func loopSysPath(idx int, name string) string {
	return filepath.Join("/sys/block", "loop"+strconv.Itoa(idx), name)
}

func readSys(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
