package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// The kernel attach: hands negotiated connections to the Linux NBD driver
// over generic netlink (family "nbd", include/uapi/linux/nbd-netlink.h), so
// the export appears as /dev/nbdN.

// ErrNoKernelNBD means the kernel has no NBD driver (the "nbd" generic
// netlink family is unknown); load the nbd module or use a userspace attach.
var ErrNoKernelNBD = errors.New("nbd: the kernel has no NBD driver (modprobe nbd)")

// KernelConfig describes a device for KernelConnect.
type KernelConfig struct {
	// Index is the /dev/nbdN to use; negative lets the kernel pick a free one.
	Index int
	// Size, Flags come from the handshake (ExportInfo).
	Size  uint64
	Flags TransmissionFlags
	// BlockSize is the device's logical block size, 512 to 4096 (default 4096).
	BlockSize uint64
	// Timeout is the per-request timeout (0: the kernel's default).
	Timeout time.Duration
	// DeadConnTimeout is how long the kernel waits for RECONFIGURE with new
	// connections after losing all of them before failing requests.
	DeadConnTimeout time.Duration
	// DisconnectOnClose disconnects the device when the last opener closes it
	// (NBD_CFLAG_DISCONNECT_ON_CLOSE); DestroyOnDisconnect removes the device
	// on disconnect (NBD_CFLAG_DESTROY_ON_DISCONNECT).
	DisconnectOnClose, DestroyOnDisconnect bool
}

// Generic netlink values of the kernel's NBD family.
const (
	nbdFamilyName = "nbd"
	nbdGenlVer    = 1

	nbdCmdConnect     = 1
	nbdCmdDisconnect  = 2
	nbdCmdReconfigure = 3

	nbdAttrIndex           = 1
	nbdAttrSizeBytes       = 2
	nbdAttrBlockSizeBytes  = 3
	nbdAttrTimeout         = 4
	nbdAttrServerFlags     = 5
	nbdAttrClientFlags     = 6
	nbdAttrSockets         = 7
	nbdAttrDeadConnTimeout = 8
	nbdSockItem            = 1
	nbdSockFD              = 1

	nbdCflagDestroyOnDisconnect = 1
	nbdCflagDisconnectOnClose   = 2
)

// Generic netlink controller values (linux/genetlink.h).
const (
	genlIDCtrl            = 0x10
	ctrlCmdGetFamily      = 3
	ctrlAttrFamilyID      = 1
	ctrlAttrFamilyName    = 2
	nlaFNested            = 0x8000
	nlmsgHdrLen           = 16
	genlHdrLen            = 4
	nlmFRequest, nlmFAck  = 1, 4
	nlmsgError, nlmsgDone = 2, 3
)

// KernelConnect hands conns (sockets after Negotiate, not TLS) to the kernel
// as one device and returns its index: the device is /dev/nbd<index>. The
// kernel holds its own reference to each socket; the caller may close conns
// afterwards.
func KernelConnect(cfg KernelConfig, conns ...net.Conn) (int, error) {
	attrs, err := kernelAttrs(cfg, conns)
	if err != nil {
		return -1, err
	}
	reply, err := nbdRequest(nbdCmdConnect, attrs)
	if err != nil {
		return -1, fmt.Errorf("nbd: kernel connect: %w", err)
	}
	idx, ok := findAttr(reply, nbdAttrIndex)
	if !ok || len(idx) < 4 {
		return -1, errors.New("nbd: kernel connect: no device index in the reply")
	}
	return int(binary.NativeEndian.Uint32(idx)), nil
}

// KernelReconfigure gives device index new connections after the old ones
// died (within DeadConnTimeout).
func KernelReconfigure(index int, cfg KernelConfig, conns ...net.Conn) error {
	cfg.Index = index
	attrs, err := kernelAttrs(cfg, conns)
	if err != nil {
		return err
	}
	_, err = nbdRequest(nbdCmdReconfigure, attrs)
	if err != nil {
		return fmt.Errorf("nbd: kernel reconfigure of nbd%d: %w", index, err)
	}
	return nil
}

// KernelResize tells device index, connected and in use, that the export
// now has size bytes (NBD_CMD_RECONFIGURE with NBD_ATTR_SIZE_BYTES and no
// sockets: the connections stay). The kernel sets the new capacity and
// tells the block layer (a KOBJ_CHANGE uevent); blockSize must be the
// device's own (0: 4096), as changing it on a live device is not safe.
// Kernels from 5.3 on honour the size on a reconfigure; older ones ignore
// it, which the caller sees as a device that kept its size.
func KernelResize(index int, size, blockSize uint64) error {
	if blockSize == 0 {
		blockSize = 4096
	}
	if size == 0 || size%blockSize != 0 {
		return fmt.Errorf("nbd: resize of nbd%d to %d bytes: not a multiple of the block size %d", index, size, blockSize)
	}
	b := nlAttrU32(nil, nbdAttrIndex, uint32(index))
	b = nlAttrU64(b, nbdAttrSizeBytes, size)
	b = nlAttrU64(b, nbdAttrBlockSizeBytes, blockSize)
	if _, err := nbdRequest(nbdCmdReconfigure, b); err != nil {
		return fmt.Errorf("nbd: kernel resize of nbd%d to %d bytes: %w", index, size, err)
	}
	return nil
}

// KernelDisconnect disconnects device index (the kernel sends NBD_CMD_DISC).
func KernelDisconnect(index int) error {
	if _, err := nbdRequest(nbdCmdDisconnect, nlAttrU32(nil, nbdAttrIndex, uint32(index))); err != nil {
		return fmt.Errorf("nbd: kernel disconnect of nbd%d: %w", index, err)
	}
	return nil
}

// kernelAttrs encodes cfg and the sockets' descriptors as netlink attributes.
func kernelAttrs(cfg KernelConfig, conns []net.Conn) ([]byte, error) {
	bs := cfg.BlockSize
	if bs == 0 {
		bs = 4096
	}
	if bs < 512 || bs > 4096 || bs&(bs-1) != 0 {
		return nil, fmt.Errorf("nbd: kernel block size %d is not a power of two from 512 to 4096", bs)
	}
	var b []byte
	if cfg.Index >= 0 {
		b = nlAttrU32(b, nbdAttrIndex, uint32(cfg.Index))
	}
	if cfg.Size > 0 {
		b = nlAttrU64(b, nbdAttrSizeBytes, cfg.Size)
		b = nlAttrU64(b, nbdAttrBlockSizeBytes, bs)
		b = nlAttrU64(b, nbdAttrServerFlags, uint64(cfg.Flags))
	}
	if cfg.Timeout > 0 {
		b = nlAttrU64(b, nbdAttrTimeout, uint64(max(cfg.Timeout/time.Second, 1)))
	}
	if cfg.DeadConnTimeout > 0 {
		b = nlAttrU64(b, nbdAttrDeadConnTimeout, uint64(max(cfg.DeadConnTimeout/time.Second, 1)))
	}
	var cflags uint64
	if cfg.DisconnectOnClose {
		cflags |= nbdCflagDisconnectOnClose
	}
	if cfg.DestroyOnDisconnect {
		cflags |= nbdCflagDestroyOnDisconnect
	}
	if cflags != 0 {
		b = nlAttrU64(b, nbdAttrClientFlags, cflags)
	}
	socks, err := socketItems(conns)
	if err != nil {
		return nil, err
	}
	return nlAttr(b, nbdAttrSockets|nlaFNested, socks), nil
}

// socketItems encodes NBD_SOCK_ITEM{NBD_SOCK_FD} for each connection. The
// descriptors stay valid while conns are open, which covers the request.
func socketItems(conns []net.Conn) ([]byte, error) {
	if len(conns) == 0 {
		return nil, errors.New("nbd: kernel attach needs at least one connection")
	}
	var items []byte
	for _, c := range conns {
		fd, err := connFD(c)
		if err != nil {
			return nil, err
		}
		items = nlAttr(items, nbdSockItem|nlaFNested, nlAttrU32(nil, nbdSockFD, uint32(fd)))
	}
	return items, nil
}

func connFD(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("nbd: %T cannot be handed to the kernel (TLS is not supported there)", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// nbdRequest sends one command to the kernel's NBD family and returns the
// attributes of its reply (none for commands answered with an ack only).
func nbdRequest(cmd uint8, attrs []byte) ([]byte, error) {
	s, err := openGenl()
	if err != nil {
		return nil, err
	}
	defer s.close()
	family, err := s.familyID(nbdFamilyName)
	if errors.Is(err, syscall.ENOENT) {
		return nil, ErrNoKernelNBD
	}
	if err != nil {
		return nil, err
	}
	return s.request(family, cmd, nbdGenlVer, attrs)
}

// genlSocket is a generic netlink socket.
type genlSocket struct {
	fd  int
	seq atomic.Uint32
}

func openGenl() (*genlSocket, error) {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.NETLINK_GENERIC)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		syscall.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	return &genlSocket{fd: fd}, nil
}

func (s *genlSocket) close() { syscall.Close(s.fd) }

// familyID resolves a generic netlink family name.
func (s *genlSocket) familyID(name string) (uint16, error) {
	reply, err := s.request(genlIDCtrl, ctrlCmdGetFamily, 1, nlAttr(nil, ctrlAttrFamilyName, append([]byte(name), 0)))
	if err != nil {
		return 0, err
	}
	id, ok := findAttr(reply, ctrlAttrFamilyID)
	if !ok || len(id) < 2 {
		return 0, fmt.Errorf("nbd: no id for generic netlink family %q", name)
	}
	return binary.NativeEndian.Uint16(id), nil
}

// request sends a generic netlink request with an ack asked for, and returns
// the attributes of the reply message, if any, once the ack arrived.
func (s *genlSocket) request(family uint16, cmd, version uint8, attrs []byte) ([]byte, error) {
	seq := s.seq.Add(1)
	msg := genlMessage(family, seq, cmd, version, attrs)
	if err := syscall.Sendto(s.fd, msg, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return nil, os.NewSyscallError("sendto", err)
	}
	var reply []byte
	buf := make([]byte, 64<<10)
	for {
		n, _, err := syscall.Recvfrom(s.fd, buf, 0)
		if err != nil {
			return nil, os.NewSyscallError("recvfrom", err)
		}
		done, err := parseNetlink(buf[:n], seq, &reply)
		if err != nil || done {
			return reply, err
		}
	}
}

// genlMessage builds nlmsghdr + genlmsghdr + attributes.
func genlMessage(family uint16, seq uint32, cmd, version uint8, attrs []byte) []byte {
	n := nlmsgHdrLen + genlHdrLen + len(attrs)
	b := make([]byte, nlmsgHdrLen+genlHdrLen, n)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(n))
	ne.PutUint16(b[4:], family)
	ne.PutUint16(b[6:], nlmFRequest|nlmFAck)
	ne.PutUint32(b[8:], seq)
	b[16], b[17] = cmd, version
	return append(b, attrs...)
}

// parseNetlink walks the messages of one datagram; it stores the attributes
// of a data message in reply and reports done at the ack (or error).
func parseNetlink(b []byte, seq uint32, reply *[]byte) (bool, error) {
	ne := binary.NativeEndian
	for len(b) >= nlmsgHdrLen {
		n := int(ne.Uint32(b))
		if n < nlmsgHdrLen || n > len(b) {
			return true, errors.New("nbd: malformed netlink message")
		}
		typ, mseq, body := ne.Uint16(b[4:]), ne.Uint32(b[8:]), b[nlmsgHdrLen:n]
		b = b[min(nlAlign(n), len(b)):]
		switch {
		case mseq != seq:
			continue
		case typ == nlmsgError:
			if len(body) < 4 {
				return true, errors.New("nbd: short netlink error")
			}
			if e := int32(ne.Uint32(body)); e != 0 {
				return true, syscall.Errno(-e)
			}
			return true, nil
		case typ == nlmsgDone:
			return true, nil
		case len(body) >= genlHdrLen:
			*reply = append([]byte(nil), body[genlHdrLen:]...)
		}
	}
	return false, nil
}

func nlAlign(n int) int { return (n + 3) &^ 3 }

func nlAttr(b []byte, typ uint16, payload []byte) []byte {
	var h [4]byte
	binary.NativeEndian.PutUint16(h[0:], uint16(4+len(payload)))
	binary.NativeEndian.PutUint16(h[2:], typ)
	b = append(append(b, h[:]...), payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func nlAttrU32(b []byte, typ uint16, v uint32) []byte {
	return nlAttr(b, typ, binary.NativeEndian.AppendUint32(nil, v))
}

func nlAttrU64(b []byte, typ uint16, v uint64) []byte {
	return nlAttr(b, typ, binary.NativeEndian.AppendUint64(nil, v))
}

// findAttr returns the payload of the first attribute of type typ.
func findAttr(b []byte, typ uint16) ([]byte, bool) {
	ne := binary.NativeEndian
	for len(b) >= 4 {
		n := int(ne.Uint16(b))
		if n < 4 || n > len(b) {
			return nil, false
		}
		if ne.Uint16(b[2:])&^nlaFNested == typ {
			return b[4:n], true
		}
		b = b[min(nlAlign(n), len(b)):]
	}
	return nil, false
}
