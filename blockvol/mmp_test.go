package blockvol

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
	if err := b.checkMMP(ctxT(t), dev, "v", []string{"node-3"}); err != nil {
		t.Fatal(err)
	}
	if m, _ := readMMP(dev); m.seq() != 0x12345678 {
		t.Fatalf("reset for a writer nobody fenced: %#x", m.seq())
	}
	if en := hook.LastEntry(); en == nil || en.Data["last_writer"] != "node-1" || en.Data["wait"] != 22*time.Second {
		t.Fatalf("log: %+v", hook.AllEntries())
	}
	if err := b.checkMMP(ctxT(t), dev, "v", []string{"node-3", "node-1"}); err != nil {
		t.Fatal(err)
	}
	m, _ := readMMP(dev)
	if m.seq() != mmpSeqClean || m.node() != "node-1" || storedChecksum(m) != m.checksum() {
		t.Fatalf("after reset: seq %#x node %q", m.seq(), m.node())
	}
	if got := debugfsSeq(t, dev); got != "" && got != "ff4d4d50" {
		t.Fatalf("debugfs reads sequence %s after reset", got)
	}
	if err := b.checkMMP(ctxT(t), dev, "v", nil); err != nil {
		t.Fatalf("clean block: %v", err)
	}

	stamp(t, dev, mmpSeqFsck, "node-1")
	err := b.checkMMP(ctxT(t), dev, "v", []string{"node-1"})
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
	if err := b.checkMMP(ctxT(t), dev, "v", nil); err != nil {
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

// fakeExt4Mounts makes selfWriterGone see one mounted ext4 file system, on
// a device named loop7 whose content is dev's (nil: a device that fails
// every read, as one whose attach helper died).
func fakeExt4Mounts(t *testing.T, dev []byte) {
	t.Helper()
	sys, devs := t.TempDir(), t.TempDir()
	if err := os.Mkdir(filepath.Join(sys, "loop7"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(sys, "features"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(devs, "loop7"), dev, 0o600); err != nil {
		t.Fatal(err)
	}
	oldSys, oldDev := ext4SysDir, devDir
	ext4SysDir, devDir = sys, devs
	t.Cleanup(func() { ext4SysDir, devDir = oldSys, oldDev })
}

// A block this host left unclean is reset at once when no file system
// mounted on this host is that one on a device that still answers (the
// writer died with its attach helper): the host holds the volume's lease
// and its own writer is gone, so the kernel's wait would guard nothing.
// While such a mount answers, the kernel's check runs as before.
func TestCheckMMPOwnDeadWriter(t *testing.T) {
	dev := formatted(t)
	b, _ := newEnv(t, 0).backend("node-1", nil)
	b.cfg.HostName = "host-a"
	log, hook := logtest.NewNullLogger()
	b.cfg.Log = log

	// This host's mount of the volume is still there, its device answers.
	live, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	fakeExt4Mounts(t, live[:8192])
	stamp(t, dev, 0x1234, "host-a")
	if err := b.checkMMP(ctxT(t), dev, "v", nil); err != nil {
		t.Fatal(err)
	}
	if m, _ := readMMP(dev); m.seq() != 0x1234 {
		t.Fatalf("reset while this host's mount of it answers: %#x", m.seq())
	}
	if en := hook.LastEntry(); en == nil || en.Data["wait"] != 22*time.Second || !strings.Contains(fmt.Sprint(en.Data["why"]), "loop7") {
		t.Fatalf("log: %+v", hook.AllEntries())
	}

	// Another file system mounted here, and one whose device fails.
	other := formatted(t)
	raw, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	for _, content := range [][]byte{raw[:8192], nil} {
		fakeExt4Mounts(t, content)
		stamp(t, dev, 0x1234, "host-a")
		if err := b.checkMMP(ctxT(t), dev, "v", nil); err != nil {
			t.Fatal(err)
		}
		if m, _ := readMMP(dev); m.seq() != mmpSeqClean || m.checksum() != storedChecksum(m) {
			t.Fatalf("own dead writer: seq %#x", m.seq())
		}
		if got := debugfsSeq(t, dev); got != "" && got != "ff4d4d50" {
			t.Fatalf("debugfs reads sequence %s after reset", got)
		}
	}

	// Another host's block is not this host's to judge.
	stamp(t, dev, 0x1234, "host-b")
	if err := b.checkMMP(ctxT(t), dev, "v", nil); err != nil {
		t.Fatal(err)
	}
	if m, _ := readMMP(dev); m.seq() != 0x1234 {
		t.Fatalf("reset another host's block: %#x", m.seq())
	}
	// Nor is a block naming nobody, on a host without a name.
	b.cfg.HostName = ""
	b.cfg.Log = quietLog()
	stamp(t, dev, 0x1234, "")
	if err := b.checkMMP(ctxT(t), dev, "v", nil); err != nil {
		t.Fatal(err)
	}
	if m, _ := readMMP(dev); m.seq() != 0x1234 {
		t.Fatalf("reset a nameless block: %#x", m.seq())
	}
}

// When the kernel's check would outlast the call, Mount checks the block
// itself in half the time: a block still stamped refuses the mount, one
// that stays the same is reset; when even that does not fit, the mount
// fails at once, naming the host.
func TestCheckMMPWithinDeadline(t *testing.T) {
	oldSecond, oldMargin := mmpSecond, mmpMargin
	mmpSecond, mmpMargin = 100*time.Millisecond, 0 // kernel's wait 2.2 s, ours 1.1 s
	t.Cleanup(func() { mmpSecond, mmpMargin = oldSecond, oldMargin })
	dev := formatted(t)
	b, _ := newEnv(t, 0).backend("node-1", nil)
	b.cfg.HostName = "host-a"
	withDeadline := func(d time.Duration) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		t.Cleanup(cancel)
		return ctx
	}

	stamp(t, dev, 0x1234, "host-b")
	start := time.Now()
	err := b.checkMMP(withDeadline(500*time.Millisecond), dev, "v", nil)
	if err == nil || !strings.Contains(err.Error(), `"host-b"`) || time.Since(start) > 200*time.Millisecond {
		t.Fatalf("no time to check: %v after %s", err, time.Since(start))
	}

	// host-b still writes: it stamps during the watch.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for seq := uint32(0x2000); ; seq++ {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				stamp(t, dev, seq, "host-b")
			}
		}
	}()
	err = b.checkMMP(withDeadline(1800*time.Millisecond), dev, "v", nil)
	close(stop)
	<-done
	if err == nil || !strings.Contains(err.Error(), `host "host-b" is writing`) {
		t.Fatalf("a writer stamping the block: %v", err)
	}

	// host-b is gone: nothing changes during the watch.
	stamp(t, dev, 0x1234, "host-b")
	start = time.Now()
	if err := b.checkMMP(withDeadline(1800*time.Millisecond), dev, "v", nil); err != nil {
		t.Fatal(err)
	}
	if m, _ := readMMP(dev); m.seq() != mmpSeqClean || time.Since(start) < 1100*time.Millisecond {
		t.Fatalf("after the watch: seq %#x after %s", m.seq(), time.Since(start))
	}
}
