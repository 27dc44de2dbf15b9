package server

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/qcow2"
	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/state"
)

// The kill-at-each-step test: a child process (this test binary again)
// sets a volume up with two snapshots and a write it never flushed, then
// runs one snapshot operation with Config.AtStep killing it (SIGKILL) at
// one named step. A dry run first lists the steps each operation passes.
// The parent opens the data directory again, as a restarted daemon would,
// and checks that every volume and snapshot is as before the operation or
// as after it, with every acknowledged write, that no file is left the
// registry does not know, and that qemu-img check is clean on every file.
const (
	snapCrashDirEnv = "NETVOL_SNAP_CRASH_DIR"
	snapCrashOpEnv  = "NETVOL_SNAP_CRASH_OP"
	snapCrashAtEnv  = "NETVOL_SNAP_CRASH_AT"
	snapCrashBoot   = "boot-of-the-snapshot-crash"
)

// What the setup writes: A (flushed) before s1, B (flushed) before s2, C
// after s2, acknowledged and never flushed.
const (
	crashA, crashB, crashC = 0xa1, 0xb2, 0xc3
	offA, offB, offC       = 0, 1 << 20, 2 << 20
)

// The operations under test.
var snapOps = map[string]func(ctx context.Context, s *Service) error{
	"snapshot": func(ctx context.Context, s *Service) error {
		_, err := s.CreateSnapshot(ctx, "vol", "s3")
		return err
	},
	"clone-live": func(ctx context.Context, s *Service) error {
		_, err := s.CreateVolume(ctx, api.CreateRequest{Name: "c", From: "vol"})
		return err
	},
	"clone-snapshot": func(ctx context.Context, s *Service) error {
		_, err := s.CreateVolume(ctx, api.CreateRequest{Name: "c", From: "vol", FromSnapshot: "s1"})
		return err
	},
	// s1's layer is read by s2's layer: merged into a layer.
	"delete-under-layer": func(ctx context.Context, s *Service) error { return s.DeleteSnapshot(ctx, "vol", "s1") },
	// s2's layer is read by the volume's image, which is attached.
	"delete-under-image": func(ctx context.Context, s *Service) error { return s.DeleteSnapshot(ctx, "vol", "s2") },
	"rollback": func(ctx context.Context, s *Service) error {
		if err := s.Detach(ctx, "vol", "n1"); err != nil {
			return err
		}
		_, err := s.Rollback(ctx, "vol", "s1")
		return err
	},
}

func TestSnapshotCrashChild(t *testing.T) {
	dir := os.Getenv(snapCrashDirEnv)
	if dir == "" {
		t.Skip("only runs as the child of TestKillAtEachSnapshotStep")
	}
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "child: %s: %v\n", what, err)
		os.Exit(2)
	}
	killAt, armed := os.Getenv(snapCrashAtEnv), false
	s, err := Open(Config{DataDir: dir, BootID: snapCrashBoot, AtStep: func(step string) {
		if !armed {
			return
		}
		fmt.Printf("step %s\n", step)
		if step == killAt {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}})
	if err != nil {
		fail("open", err)
	}
	ctx := context.Background()
	cl := crashSetup(ctx, s, fail)
	armed = true
	if err := snapOps[os.Getenv(snapCrashOpEnv)](ctx, s); err != nil {
		fail("operation", err)
	}
	fmt.Println("done")
	time.Sleep(time.Minute) // the parent kills us
	cl.Close()
	os.Exit(3)
}

func crashSetup(ctx context.Context, s *Service, fail func(string, error)) *nbd.Client {
	if _, err := s.CreateVolume(ctx, api.CreateRequest{Name: "vol", Size: 16 << 20}); err != nil {
		fail("create", err)
	}
	g, err := s.Attach(ctx, "vol", api.AttachRequest{Node: "n1", Mode: "rw"})
	if err != nil {
		fail("attach", err)
	}
	dir, err := os.MkdirTemp("", "nvc")
	if err != nil {
		fail("socket dir", err)
	}
	sock := filepath.Join(dir, "s")
	l, err := netListenUnix(sock)
	if err != nil {
		fail("listen", err)
	}
	go (&nbd.Server{Exports: s}).Serve(l)
	cl, err := nbd.Dial(ctx, "unix", sock, nbd.ClientOptions{ExportName: g.Export})
	if err != nil {
		fail("dial", err)
	}
	steps := []func() error{
		func() error { return cl.Write(ctx, fill(crashA, 64<<10), offA, 0) },
		func() error { return cl.Flush(ctx) },
		func() error { _, err := s.CreateSnapshot(ctx, "vol", "s1"); return err },
		func() error { return cl.Write(ctx, fill(crashB, 64<<10), offB, 0) },
		func() error { return cl.Flush(ctx) },
		func() error { _, err := s.CreateSnapshot(ctx, "vol", "s2"); return err },
		func() error { return cl.Write(ctx, fill(crashC, 64<<10), offC, 0) }, // never flushed
	}
	for i, step := range steps {
		if err := step(); err != nil {
			fail(fmt.Sprintf("setup step %d", i), err)
		}
	}
	return cl
}

// runSnapChild runs the child for op, killing it at step ("" for none),
// and returns the steps it printed and whether it finished.
func runSnapChild(t *testing.T, dir, op, step string) (steps []string, done bool) {
	t.Helper()
	return runKilledChild(t, "TestSnapshotCrashChild", snapCrashDirEnv+"="+dir, snapCrashOpEnv+"="+op, snapCrashAtEnv+"="+step)
}

func TestKillAtEachSnapshotStep(t *testing.T) {
	needTool(t, "qemu-img")
	for _, op := range []string{"snapshot", "clone-live", "clone-snapshot", "delete-under-layer", "delete-under-image", "rollback"} {
		t.Run(op, func(t *testing.T) {
			steps, done := runSnapChild(t, t.TempDir(), op, "")
			if !done || len(steps) == 0 {
				t.Fatalf("dry run: done %v, steps %v", done, steps)
			}
			t.Logf("steps: %v", steps)
			for _, step := range append(steps, "") { // "": killed after the operation returned
				t.Run(strings.ReplaceAll(step+"-after", "/", "-"), func(t *testing.T) {
					dir := t.TempDir()
					seen, done := runSnapChild(t, dir, op, step)
					if step != "" && (done || len(seen) == 0 || seen[len(seen)-1] != step) {
						t.Fatalf("not killed at %s: steps %v, done %v", step, seen, done)
					}
					checkAfterCrash(t, dir, op)
				})
			}
		})
	}
}

// want is what a volume or a snapshot reads at offA, offB and offC.
type want [3]byte

var (
	wantS1    = want{crashA, 0, 0}
	wantS2    = want{crashA, crashB, 0}
	wantAll   = want{crashA, crashB, crashC}
	offsets   = [3]int64{offA, offB, offC}
	crashSnap = map[string]want{"s1": wantS1, "s2": wantS2, "s3": wantAll}
)

func checkAfterCrash(t *testing.T, dir, op string) {
	t.Helper()
	s, err := Open(Config{DataDir: dir, BootID: snapCrashBoot})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	vols, err := s.reg.ListVolumes()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]state.Volume{}
	for _, v := range vols {
		byName[v.Name] = v
	}
	vol := byName["vol"]
	snaps := map[string]state.Snapshot{}
	for _, sn := range vol.Snapshots {
		snaps[sn.Name] = sn
	}
	got := readVolume(t, s, vol)
	switch {
	case got == wantAll:
	case op == "rollback" && got == wantS1:
	default:
		t.Errorf("vol reads %x at A, B, C; want %x (or for a rollback %x)", got, wantAll, wantS1)
	}
	for name, sn := range snaps {
		w, ok := crashSnap[name]
		if sn.Hidden {
			w, ok = wantAll, true
		}
		if !ok {
			t.Errorf("unexpected snapshot %+v", sn)
			continue
		}
		if g := readLayer(t, s, sn.File); g != w {
			t.Errorf("snapshot %s reads %x, want %x", name, g, w)
		}
	}
	wantSnaps := map[string][]string{
		"snapshot": {"s1 s2", "s1 s2 s3"}, "clone-live": {"s1 s2", "s1 s2 +"}, "clone-snapshot": {"s1 s2"},
		"delete-under-layer": {"s1 s2", "s2"}, "delete-under-image": {"s1 s2", "s1"}, "rollback": {"s1 s2"},
	}[op]
	var names []string
	for _, sn := range vol.Snapshots {
		if sn.Hidden {
			names = append(names, "+")
		} else {
			names = append(names, sn.Name)
		}
	}
	if g := strings.Join(names, " "); !contains(wantSnaps, g) {
		t.Errorf("snapshots %q, want one of %q", g, wantSnaps)
	}
	if c, ok := byName["c"]; ok {
		w := wantAll
		if op == "clone-snapshot" {
			w = wantS1
		}
		if g := readVolume(t, s, c); g != w {
			t.Errorf("clone reads %x, want %x", g, w)
		}
		if op == "clone-live" && !strings.HasSuffix(strings.Join(names, " "), "+") {
			t.Error("the clone of the volume as it was has no hidden snapshot")
		}
	} else if op == "clone-live" && strings.HasSuffix(strings.Join(names, " "), "+") {
		t.Error("a hidden snapshot without its clone")
	}
	known := map[string]bool{}
	for _, v := range vols {
		known[filepath.Base(v.File)] = true
		for _, sn := range v.Snapshots {
			known[filepath.Base(sn.File)] = true
		}
	}
	s.Close()
	entries, _ := os.ReadDir(filepath.Join(dir, volumesDir))
	for _, e := range entries {
		if !known[e.Name()] {
			t.Errorf("file %s left that the registry does not know", e.Name())
			continue
		}
		mustRun(t, "qemu-img", "check", "-f", "qcow2", filepath.Join(dir, volumesDir, e.Name()))
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func readVolume(t *testing.T, s *Service, v state.Volume) want {
	t.Helper()
	lv, err := s.image(v)
	if err != nil {
		t.Fatal(err)
	}
	return readWant(t, lv)
}

func readLayer(t *testing.T, s *Service, file string) want {
	t.Helper()
	img, err := qcow2.Open(s.path(file), &qcow2.OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	return readWant(t, img)
}

func readWant(t *testing.T, r interface {
	ReadAt([]byte, int64) (int, error)
}) want {
	t.Helper()
	var w want
	buf := make([]byte, 64<<10)
	for i, off := range offsets {
		if _, err := r.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		w[i] = buf[0]
		if !bytes.Equal(buf, fill(buf[0], len(buf))) {
			t.Fatalf("64 KiB at %d are not uniform", off)
		}
	}
	return w
}

func netListenUnix(path string) (*net.UnixListener, error) {
	return net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
}
