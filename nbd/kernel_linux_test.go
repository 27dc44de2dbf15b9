package nbd

import (
	"errors"
	"net"
	"os"
	"testing"
)

// The NBD driver is missing on the build machines (TESTING.md), so these
// tests check the generic netlink plumbing against the controller family,
// which every kernel has, and the encoding of our requests. The attach itself
// needs a guest with the nbd module: it was checked there by hand with the
// e2e node harness (two sockets from Negotiate, KernelConnect, mkfs.ext4,
// mount, write, sync, umount; the server shut down, KernelReconfigure with
// two sockets to a new server, the file read back, a new write;
// KernelDisconnect); an e2e test should keep it checked.

// needGenl opens a generic netlink socket, or skips where the machine has
// none; CI machines have it, so there it is a failure.
func needGenl(t *testing.T) *genlSocket {
	t.Helper()
	s, err := openGenl()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("generic netlink is required under CI=true: %v", err)
		}
		t.Skipf("no generic netlink here: %v", err)
	}
	return s
}

func TestGenlControllerFamily(t *testing.T) {
	s := needGenl(t)
	defer s.close()
	id, err := s.familyID("nlctrl")
	if err != nil || id != genlIDCtrl {
		t.Fatalf("nlctrl family id = %#x, %v", id, err)
	}
	if _, err := s.familyID("no-such-family-xyz"); err == nil {
		t.Fatal("unknown family resolved")
	}
}

func TestKernelConnectWithoutDriver(t *testing.T) {
	s := needGenl(t)
	_, err := s.familyID(nbdFamilyName)
	s.close()
	if err == nil {
		t.Skip("this kernel has the NBD driver; the attach is tested in the e2e suites")
	}
	a, b := socketPair(t)
	defer a.Close()
	defer b.Close()
	if _, err := KernelConnect(KernelConfig{Index: -1, Size: 1 << 20}, a); !errors.Is(err, ErrNoKernelNBD) {
		t.Fatalf("KernelConnect = %v, want ErrNoKernelNBD", err)
	}
}

func socketPair(t *testing.T) (net.Conn, net.Conn) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

func TestKernelAttrs(t *testing.T) {
	a, b := socketPair(t)
	defer a.Close()
	defer b.Close()
	fd, err := connFD(a)
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := kernelAttrs(KernelConfig{Index: 3, Size: 1 << 30, Flags: FlagHasFlags | FlagSendFlush,
		DeadConnTimeout: 30e9, DisconnectOnClose: true}, []net.Conn{a})
	if err != nil {
		t.Fatal(err)
	}
	u64 := func(typ uint16) uint64 {
		v, ok := findAttr(attrs, typ)
		if !ok || len(v) != 8 {
			t.Fatalf("attribute %d missing", typ)
		}
		return uint64(v[0]) | uint64(v[1])<<8 | uint64(v[2])<<16 | uint64(v[3])<<24 | uint64(v[4])<<32
	}
	if idx, _ := findAttr(attrs, nbdAttrIndex); len(idx) != 4 || idx[0] != 3 {
		t.Fatalf("index %v", idx)
	}
	if u64(nbdAttrSizeBytes) != 1<<30 || u64(nbdAttrBlockSizeBytes) != 4096 ||
		u64(nbdAttrServerFlags) != uint64(FlagHasFlags|FlagSendFlush) ||
		u64(nbdAttrDeadConnTimeout) != 30 || u64(nbdAttrClientFlags) != nbdCflagDisconnectOnClose {
		t.Fatal("attribute values")
	}
	socks, _ := findAttr(attrs, nbdAttrSockets)
	item, ok := findAttr(socks, nbdSockItem)
	if !ok {
		t.Fatal("no socket item")
	}
	if v, ok := findAttr(item, nbdSockFD); !ok || int(v[0])|int(v[1])<<8 != fd {
		t.Fatalf("socket fd %v, want %d", v, fd)
	}
	if _, err := kernelAttrs(KernelConfig{BlockSize: 1000}, []net.Conn{a}); err == nil {
		t.Fatal("block size 1000 accepted")
	}
	if _, err := kernelAttrs(KernelConfig{}, nil); err == nil {
		t.Fatal("no connections accepted")
	}
}

func TestParseNetlink(t *testing.T) {
	// An error message for our sequence number carries -errno.
	msg := genlMessage(nlmsgError, 7, 0, 0, nil)
	msg = append(msg[:nlmsgHdrLen], 0xfe, 0xff, 0xff, 0xff) // -2: ENOENT
	msg[0] = byte(len(msg))
	var reply []byte
	done, err := parseNetlink(msg, 7, &reply)
	if !done || err == nil || err.Error() != "no such file or directory" {
		t.Fatalf("done=%v err=%v", done, err)
	}
	if done, _ := parseNetlink(msg, 8, &reply); done {
		t.Fatal("message of another sequence number taken")
	}
	if _, err := parseNetlink([]byte{200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 1, &reply); err == nil {
		t.Fatal("malformed length accepted")
	}
}
