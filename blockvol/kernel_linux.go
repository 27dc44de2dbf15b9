package blockvol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/volume/backend"
	"golang.org/x/sys/unix"
)

// MethodKernel is the Device.Method of KernelAttacher.
const MethodKernel = "kernel"

// Defaults of KernelAttacher.
const (
	DefaultKernelConnections     = 2
	DefaultKernelTimeout         = 30 * time.Second
	DefaultKernelDeadConnTimeout = 60 * time.Second
)

// KernelAttacher attaches exports with the kernel's NBD driver over
// generic netlink: the device is /dev/nbdN. The zero value uses the
// defaults.
type KernelAttacher struct {
	// Connections is the number of sockets per device when the server
	// allows several (NBD_FLAG_CAN_MULTI_CONN); one otherwise. 0 means
	// DefaultKernelConnections.
	Connections int
	// Timeout is the kernel's per-request timeout; 0 means
	// DefaultKernelTimeout.
	Timeout time.Duration
	// DeadConnTimeout is how long the kernel holds requests after losing
	// every connection, waiting for new ones; 0 means
	// DefaultKernelDeadConnTimeout.
	DeadConnTimeout time.Duration
}

var _ Attacher = KernelAttacher{}

// Attach dials the export (more than once when the server allows it) and
// hands the sockets to the kernel, which keeps its own references to them.
func (k KernelAttacher) Attach(ctx context.Context, t Target) (Device, error) {
	conns, info, err := k.dial(ctx, t.Dial)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if err != nil {
		return Device{}, err
	}
	idx, err := nbd.KernelConnect(k.config(info), conns...)
	if err != nil {
		return Device{}, err
	}
	return Device{Path: "/dev/nbd" + strconv.Itoa(idx), Method: MethodKernel}, nil
}

var _ Reconnector = KernelAttacher{}

// Reconnect hands the device d new connections (NBD_CMD_RECONFIGURE): the
// kernel puts them in place of the dead ones and requeues what waited.
func (k KernelAttacher) Reconnect(ctx context.Context, d Device, dial Dialer) error {
	idx, err := nbdIndex(d.Path)
	if err != nil {
		return err
	}
	conns, info, err := k.dial(ctx, dial)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if err != nil {
		return err
	}
	cfg := k.config(info)
	cfg.Index = idx
	return nbd.KernelReconfigure(idx, cfg, conns...)
}

var _ Grower = KernelAttacher{}

// Grow gives the device d, in use, its export's new size: it asks the
// server (one connection, closed again), then tells the kernel over
// netlink (nbd.KernelResize), keeping the device's block size. The
// connections stay; the server serves the grown range on them.
func (k KernelAttacher) Grow(ctx context.Context, d Device, dial Dialer) (int64, error) {
	idx, err := nbdIndex(d.Path)
	if err != nil {
		return 0, err
	}
	conn, info, err := dial(ctx)
	if err != nil {
		return 0, fmt.Errorf("asking the server for the export's size: %w", err)
	}
	conn.Close()
	bs, cur, err := blockDeviceGeometry(d.Path)
	if err != nil {
		return 0, err
	}
	want := int64(info.Size) / bs * bs
	if want <= cur {
		return cur, nil
	}
	if err := nbd.KernelResize(idx, uint64(want), uint64(bs)); err != nil {
		return 0, err
	}
	_, now, err := blockDeviceGeometry(d.Path)
	if err == nil && now < want {
		err = fmt.Errorf("the kernel kept %s at %d bytes after the resize to %d (its NBD driver predates resizing over netlink, Linux 5.3)", d.Path, now, want)
	}
	return now, err
}

// blockDeviceGeometry returns a block device's logical block size and size.
func blockDeviceGeometry(path string) (blockSize, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	bs, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
	if err != nil {
		return 0, 0, fmt.Errorf("block size of %s: %w", path, err)
	}
	size, err = f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, 0, fmt.Errorf("size of %s: %w", path, err)
	}
	return int64(bs), size, nil
}

// dial opens the connections; on error, those returned are still to close.
func (k KernelAttacher) dial(ctx context.Context, dial Dialer) ([]net.Conn, nbd.ExportInfo, error) {
	c, info, err := dial(ctx)
	if err != nil {
		return nil, info, err
	}
	conns := []net.Conn{c}
	want := 1
	if info.Flags&nbd.FlagCanMultiConn != 0 {
		want = orDefault(k.Connections, DefaultKernelConnections)
	}
	for len(conns) < want {
		c, _, err := dial(ctx)
		if err != nil {
			return conns, info, err
		}
		conns = append(conns, c)
	}
	return conns, info, nil
}

// config describes the device: the size and transmission flags from the
// handshake (without SEND_FLUSH the kernel would send no flushes), 4096-byte
// blocks when the size allows it.
func (k KernelAttacher) config(info nbd.ExportInfo) nbd.KernelConfig {
	bs := uint64(4096)
	if info.Size%bs != 0 {
		bs = 512 // the daemon only asks sizes to be multiples of 512
	}
	return nbd.KernelConfig{Index: -1, Size: info.Size, Flags: info.Flags, BlockSize: bs,
		Timeout: orDefault(k.Timeout, DefaultKernelTimeout), DeadConnTimeout: orDefault(k.DeadConnTimeout, DefaultKernelDeadConnTimeout)}
}

// orDefault returns v, or def when v is zero.
func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Detach disconnects the device. A device that does not exist (EINVAL from
// the driver) or a kernel without the driver means there is nothing to do.
func (KernelAttacher) Detach(_ context.Context, d Device) error {
	if d.Method != "" && d.Method != MethodKernel {
		return fmt.Errorf("device %s was attached by %q, not by the kernel attacher: %w", d.Path, d.Method, backend.ErrInvalid)
	}
	idx, err := nbdIndex(d.Path)
	if err != nil {
		return err
	}
	err = nbd.KernelDisconnect(idx)
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, nbd.ErrNoKernelNBD) {
		return nil
	}
	return err
}

// nbdIndex parses /dev/nbdN.
func nbdIndex(path string) (int, error) {
	s, ok := strings.CutPrefix(path, "/dev/nbd")
	n, err := strconv.Atoi(s)
	if !ok || err != nil || n < 0 || strconv.Itoa(n) != s {
		return 0, fmt.Errorf("device %q is not /dev/nbdN: %w", path, backend.ErrInvalid)
	}
	return n, nil
}
