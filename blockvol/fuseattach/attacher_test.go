package fuseattach

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/netvol/netvol/blockvol"
	"github.com/netvol/netvol/internal/mount"
)

// helperArg makes the test binary run as an attach helper, as netvol
// attach-helper does.
const helperArg = "fuseattach-test-helper"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == helperArg {
		os.Exit(runTestHelper(os.Args[2:]))
	}
	os.Exit(m.Run())
}

func runTestHelper(args []string) int {
	fs := flag.NewFlagSet(helperArg, flag.ContinueOnError)
	dir := fs.String("dir", "", "")
	_ = fs.String("log-level", "", "")
	if fs.Parse(args) != nil {
		return 2
	}
	log := logrus.New()
	log.SetLevel(logrus.DebugLevel)
	if err := RunHelper(context.Background(), *dir, os.Stdin, os.NewFile(3, "status"), log); err != nil {
		return 1
	}
	return 0
}

// needAttach skips unless this host can make FUSE mounts and loop devices.
func needAttach(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOutsideCI(t, "needs root (FUSE mount, loop devices)")
	}
	for _, dev := range []string{"/dev/fuse", "/dev/loop-control"} {
		if _, err := os.Stat(dev); err != nil {
			skipOutsideCI(t, "no "+dev)
		}
	}
}

// skipOutsideCI skips for a reason the machine gives; CI machines have
// what these tests need, so there it is a failure.
func skipOutsideCI(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why + " (required under CI=true)")
	}
	t.Skip(why)
}

func newTestAttacher(t *testing.T) *Attacher {
	a := &Attacher{Dir: filepath.Join(t.TempDir(), "attach"), Command: []string{os.Args[0], helperArg},
		Session: SessionConfig{ReconnectTimeout: 20 * time.Second}}
	t.Cleanup(func() { cleanupAll(t, a) })
	return a
}

// cleanupAll stops whatever a failed test left.
func cleanupAll(t *testing.T, a *Attacher) {
	entries, _ := os.ReadDir(a.Dir)
	for _, e := range entries {
		if e.IsDir() {
			dir := filepath.Join(a.Dir, e.Name())
			if err := a.stop(context.Background(), dir); err != nil {
				t.Logf("cleanup of %s: %v", dir, err)
			}
		}
	}
}

func attachT(t *testing.T, a *Attacher, s *crashServer) blockvol.Device {
	t.Helper()
	d, err := a.Attach(ctxT(t), blockvol.Target{Volume: "v", Addr: s.addr, Export: testExport})
	if err != nil {
		t.Fatal(err)
	}
	if d.Method != MethodUserspace || !strings.HasPrefix(d.Path, "/dev/loop") {
		t.Fatalf("device %+v", d)
	}
	return d
}

// alignedBuf is a buffer O_DIRECT accepts.
func alignedBuf(t *testing.T, n int, v byte) []byte {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Munmap(b) })
	for i := range b {
		b[i] = v
	}
	return b
}

// writeSync writes p at off on the device with O_DIRECT and fsyncs it.
func writeSync(t *testing.T, device string, p []byte, off int64) error {
	f, err := os.OpenFile(device, os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(p, off); err != nil {
		return err
	}
	return f.Sync()
}

// The whole chain: a write and fsync on the loop device reach the server
// as a write and a FLUSH before fsync returns (the test's server keeps
// writes in memory until a flush); after the server crashed and came back,
// the next fsync covers the writes it had lost. Detach leaves nothing.
func TestAttachFsyncReachesServer(t *testing.T) {
	needAttach(t)
	s := newCrashServer(t, 64<<20)
	a := newTestAttacher(t)
	d := attachT(t, a, s)
	must(t, writeSync(t, d.Path, alignedBuf(t, 1<<20, 7), 4096))
	if got := s.b.durableBytes(4096, 1<<20); !bytes.Equal(got, fill(1<<20, 7)) {
		t.Fatal("fsync on the device returned before the server made the write durable")
	}
	f, err := os.OpenFile(d.Path, os.O_RDWR|unix.O_DIRECT, 0)
	must(t, err)
	_, err = f.WriteAt(alignedBuf(t, 8192, 8), 2<<20) // acknowledged, not flushed
	must(t, err)
	f.Close()
	s.crash(true)
	must(t, writeSync(t, d.Path, alignedBuf(t, 4096, 9), 4<<20))
	if !bytes.Equal(s.b.durableBytes(2<<20, 8192), fill(8192, 8)) || !bytes.Equal(s.b.durableBytes(4<<20, 4096), fill(4096, 9)) {
		t.Fatal("after the crash the server lacks writes acknowledged before it")
	}
	dir := a.dirOf(d.Path)
	must(t, a.Detach(ctxT(t), d))
	assertGone(t, a, d, dir)
}

// A new plugin adopts a helper whose device is mounted and stops one whose
// device nothing uses; a helper that died is cleaned up after.
func TestAttachAdopt(t *testing.T) {
	needAttach(t)
	mkfs := needMkfs(t)
	s := newCrashServer(t, 64<<20)
	a := newTestAttacher(t)
	used, unused, dead := attachT(t, a, s), attachT(t, a, s), attachT(t, a, s)
	mnt := t.TempDir()
	must(t, exec.Command(mkfs, "-q", "-F", used.Path).Run())
	must(t, mount.System{}.Mount(mount.Mount{Source: used.Path, Target: mnt, Type: "ext4"}))
	defer mount.System{}.Unmount(mnt)
	usedDir, unusedDir, deadDir := a.dirOf(used.Path), a.dirOf(unused.Path), a.dirOf(dead.Path)
	killHelper(t, a, dead)

	again := &Attacher{Dir: a.Dir, Command: a.Command} // the plugin restarted
	must(t, again.Adopt(ctxT(t)))
	assertGone(t, again, unused, unusedDir)
	assertGone(t, again, dead, deadDir)
	if a.dirOf(used.Path) != usedDir {
		t.Fatal("the helper of a mounted device was not kept")
	}
	must(t, os.WriteFile(filepath.Join(mnt, "f"), []byte("after adoption"), 0o600))
	must(t, mount.System{}.Unmount(mnt))
	must(t, again.Detach(ctxT(t), used))
	assertGone(t, again, used, usedDir)
}

// Detach of a device still mounted (a fenced volume) releases it: its I/O
// fails from then on, and the device goes once the file system is
// unmounted.
func TestAttachDetachWhileMounted(t *testing.T) {
	needAttach(t)
	mkfs := needMkfs(t)
	s := newCrashServer(t, 64<<20)
	a := newTestAttacher(t)
	d := attachT(t, a, s)
	mnt := t.TempDir()
	must(t, exec.Command(mkfs, "-q", "-F", d.Path).Run())
	must(t, mount.System{}.Mount(mount.Mount{Source: d.Path, Target: mnt, Type: "ext4"}))
	dir := a.dirOf(d.Path)
	must(t, a.Detach(ctxT(t), d))
	f, err := os.Create(filepath.Join(mnt, "g"))
	if err == nil {
		_, err = f.Write(make([]byte, 1<<20))
		if err == nil {
			err = f.Sync()
		}
		f.Close()
	}
	if err == nil {
		t.Fatal("a write and fsync on a released device succeeded")
	}
	must(t, mount.System{}.Unmount(mnt))
	assertGone(t, a, d, dir)
}

func needMkfs(t *testing.T) string {
	for _, p := range []string{"/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	skipOutsideCI(t, "mkfs.ext4 not installed")
	return ""
}

// killHelper ends the helper of d with SIGKILL, as a crash would.
func killHelper(t *testing.T, a *Attacher, d blockvol.Device) {
	t.Helper()
	r, err := call(ctxT(t), a.dirOf(d.Path), cmdStatus)
	must(t, err)
	must(t, syscall.Kill(r.PID, syscall.SIGKILL))
	a.waitGone(r.PID)
}

// assertGone checks a detached device left nothing: no loop device bound
// to our file, no FUSE mount, no directory (dir is the one it had).
func assertGone(t *testing.T, a *Attacher, d blockvol.Device, dir string) {
	t.Helper()
	eventually(t, 10*time.Second, d.Path+" unbound", func() bool {
		return !strings.HasPrefix(loopBacking(d.Path), dir+"/")
	})
	infos, err := mount.ReadInfo()
	must(t, err)
	for _, i := range infos {
		if strings.HasPrefix(i.Target, dir+"/") {
			t.Fatalf("still mounted: %s (%s)", i.Target, i.Type)
		}
	}
	for _, p := range []string{dir, dir + ".log"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left behind: %v", p, err)
		}
	}
	if err := a.Detach(ctxT(t), d); err != nil {
		t.Fatalf("a second Detach: %v", err)
	}
}

// An export the server refuses fails the attach with the server's word
// and leaves nothing behind; the export name appears nowhere.
func TestAttachRefusedExport(t *testing.T) {
	needAttach(t)
	s := newCrashServer(t, 1<<20)
	a := newTestAttacher(t)
	_, err := a.Attach(ctxT(t), blockvol.Target{Volume: "v", Addr: s.addr, Export: "v.wrong-secret"})
	if err == nil || !strings.Contains(err.Error(), "refused the export") || strings.Contains(err.Error(), "wrong-secret") {
		t.Fatalf("attach of a refused export = %v", err)
	}
	if entries, _ := os.ReadDir(a.Dir); len(entries) != 0 {
		t.Fatalf("left in %s: %v", a.Dir, entries)
	}
}
