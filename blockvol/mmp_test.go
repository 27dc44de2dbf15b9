package blockvol

import (
	"encoding/binary"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/netvol/netvol/volume/backend"
)

// formatted returns a 64 MiB file formatted by the real formatter.
func formatted(t *testing.T) string {
	t.Helper()
	mkfs := needMkfs(t)
	dev := sparseFile(t, 64<<20)
	if err := mkfs.Format(ctxT(t), dev, nil); err != nil {
		t.Fatal(err)
	}
	return dev
}

// storedChecksum is the checksum field of an MMP block as written.
func storedChecksum(m *mmpBlock) uint32 { return binary.LittleEndian.Uint32(m.raw[mmpChecksumOff:]) }

// New file systems have multi-mount protection, clean, with a 5 s
// interval; our checksum is the one mkfs.ext4 wrote.
func TestMkfsEnablesMMP(t *testing.T) {
	dev := formatted(t)
	m, err := readMMP(dev)
	if err != nil || m == nil {
		t.Fatalf("no MMP block: %v", err)
	}
	if m.seq() != mmpSeqClean || m.interval != 5 || m.kernelWait() != 22*time.Second || !m.csum {
		t.Fatalf("MMP block: seq %#x, interval %d, wait %v, csum %v", m.seq(), m.interval, m.kernelWait(), m.csum)
	}
	if got := m.checksum(); got != storedChecksum(m) {
		t.Fatalf("checksum %#x, mkfs wrote %#x", got, storedChecksum(m))
	}
	if m.off%1024 != 0 || m.off < 2048 {
		t.Fatalf("MMP block at byte %d", m.off)
	}
}

// stamp makes dev's MMP block look as a host that mounted it left it.
func stamp(t *testing.T, dev string, seq uint32, node string) {
	t.Helper()
	m, err := readMMP(dev)
	if err != nil || m == nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(m.raw[mmpSeqOff:], seq)
	copy(m.raw[mmpNodenameOff:mmpNodenameOff+mmpNodenameLen], make([]byte, mmpNodenameLen))
	copy(m.raw[mmpNodenameOff:], node)
	binary.LittleEndian.PutUint32(m.raw[mmpChecksumOff:], m.checksum())
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(m.raw[:], m.off); err != nil {
		t.Fatal(err)
	}
}

// debugfsSeq asks e2fsprogs for the MMP sequence; it fails on a bad
// checksum. "" when debugfs is not installed.
func debugfsSeq(t *testing.T, dev string) string {
	t.Helper()
	path, err := exec.LookPath("debugfs")
	if err != nil {
		path = "/usr/sbin/debugfs"
		if _, err := os.Stat(path); err != nil {
			return ""
		}
	}
	out, err := exec.Command(path, "-R", "dump_mmp", dev).CombinedOutput()
	if err != nil || strings.Contains(string(out), "does not match") {
		t.Fatalf("debugfs dump_mmp: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "sequence: "); ok {
			return v
		}
	}
	t.Fatalf("debugfs dump_mmp: no sequence in %s", out)
	return ""
}

// An unclean block is reset only when its last writer is a node the
// attach fenced; e2fsprogs agrees with what we write; a block saying
// e2fsck runs is refused.
func TestCheckMMP(t *testing.T) {
	dev := formatted(t)
	e := newEnv(t, 0)
	b, _ := e.backend("node-2", nil)
	log, hook := logtest.NewNullLogger()
	b.cfg.Log = log

	stamp(t, dev, 0x12345678, "node-1")
	if got := debugfsSeq(t, dev); got != "" && got != "12345678" {
		t.Fatalf("debugfs reads sequence %s", got)
	}
	if err := b.checkMMP(dev, "v", []string{"node-3"}); err != nil {
		t.Fatal(err)
	}
	if m, _ := readMMP(dev); m.seq() != 0x12345678 {
		t.Fatalf("reset for a writer nobody fenced: %#x", m.seq())
	}
	if en := hook.LastEntry(); en == nil || en.Data["last_writer"] != "node-1" || en.Data["wait"] != 22*time.Second {
		t.Fatalf("log: %+v", hook.AllEntries())
	}
	if err := b.checkMMP(dev, "v", []string{"node-3", "node-1"}); err != nil {
		t.Fatal(err)
	}
	m, _ := readMMP(dev)
	if m.seq() != mmpSeqClean || m.node() != "node-1" || storedChecksum(m) != m.checksum() {
		t.Fatalf("after reset: seq %#x node %q", m.seq(), m.node())
	}
	if got := debugfsSeq(t, dev); got != "" && got != "ff4d4d50" {
		t.Fatalf("debugfs reads sequence %s after reset", got)
	}
	if err := b.checkMMP(dev, "v", nil); err != nil {
		t.Fatalf("clean block: %v", err)
	}

	stamp(t, dev, mmpSeqFsck, "node-1")
	err := b.checkMMP(dev, "v", []string{"node-1"})
	if err == nil || !strings.Contains(err.Error(), "e2fsck") || !strings.Contains(err.Error(), `"node-1"`) {
		t.Fatalf("fsck running: %v", err)
	}
}

// A file system without multi-mount protection (made before it was the
// default) mounts as before.
func TestCheckMMPWithoutMMP(t *testing.T) {
	needMkfs(t)
	dev := sparseFile(t, 16<<20)
	if out, err := exec.Command("/usr/sbin/mkfs.ext4", "-q", "-F", "-O", "^mmp", dev).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if m, err := readMMP(dev); m != nil || err != nil {
		t.Fatalf("readMMP: %+v %v", m, err)
	}
	b, _ := newEnv(t, 0).backend("node-1", nil)
	if err := b.checkMMP(dev, "v", nil); err != nil {
		t.Fatal(err)
	}
}

// A volume formatted by Mount has multi-mount protection, clean.
func TestMountFormatsWithMMP(t *testing.T) {
	e := newEnv(t, 0)
	b, _ := e.backend("node-1", needMkfs(t))
	e.create(b, "v")
	ctx := ctxT(t)
	target := t.TempDir()
	m, err := b.Mount(ctx, "v", backend.Options{UID: -1, GID: -1}, target)
	if err != nil {
		t.Fatal(err)
	}
	if mb, err := readMMP(m.Device); err != nil || mb == nil || mb.seq() != mmpSeqClean {
		t.Fatalf("MMP after mount: %+v %v", mb, err)
	}
	if err := b.Unmount(ctx, "v", backend.Options{}, target, m); err != nil {
		t.Fatal(err)
	}
}
