package server

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netvol/netvol/server/api"

	"github.com/netvol/netvol/nbd"
)

// The crash tests run the storage daemon's service in a child process (this
// test binary again, with crashChildEnv set), write over NBD, SIGKILL it and
// open the same data directory again, as a restarted `netvol server` would.
const (
	crashChildEnv = "NETVOL_DAEMON_CRASH_CHILD"
	crashBootEnv  = "NETVOL_DAEMON_CRASH_BOOT"
	crashBoot     = "boot-of-the-crashed-daemon"
)

var (
	flushedData   = bytes.Repeat([]byte{0xaa}, 256<<10) // at 1 MiB, flushed
	unflushedData = bytes.Repeat([]byte{0xbb}, 64<<10)  // at 4 MiB, acknowledged only
)

// TestCrashChild is the child: it writes, reports the export name and
// waits to be killed. It does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("only runs as the child of the crash tests")
	}
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "child: %s: %v\n", what, err)
		os.Exit(2)
	}
	s, err := Open(Config{DataDir: dir, BootID: os.Getenv(crashBootEnv)})
	if err != nil {
		fail("open", err)
	}
	ctx := context.Background()
	if _, err := s.CreateVolume(ctx, api.CreateRequest{Name: "vol", Size: 16 << 20}); err != nil {
		fail("create", err)
	}
	g, err := s.Attach(ctx, "vol", api.AttachRequest{Node: "n1", Mode: "rw"})
	if err != nil {
		fail("attach", err)
	}
	_, sock := serveNBD(t, s)
	cl, err := nbd.Dial(ctx, "unix", sock, nbd.ClientOptions{ExportName: g.Export})
	if err != nil {
		fail("dial", err)
	}
	steps := []error{
		cl.Write(ctx, flushedData, 1<<20, 0),
		cl.Flush(ctx),
		cl.Write(ctx, unflushedData, 4<<20, 0),
	}
	for i, err := range steps {
		if err != nil {
			fail(fmt.Sprintf("step %d", i), err)
		}
	}
	fmt.Printf("export %s\n", g.Export)
	time.Sleep(time.Minute) // the parent kills us
	os.Exit(3)
}

// crashedDaemon runs the child in a new data directory, SIGKILLs it once it
// has written, and returns the directory and the export name.
func crashedDaemon(t *testing.T) (dir, export string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	cmd := exec.Command(exe, "-test.run", "^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashBootEnv+"="+crashBoot)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	got := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if name, ok := strings.CutPrefix(sc.Text(), "export "); ok {
				got <- name
				return
			}
		}
		close(got)
	}()
	select {
	case export = <-got:
	case <-time.After(30 * time.Second):
	}
	if export == "" {
		t.Fatalf("the child reported no export: %s", stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	return dir, export
}

func reopen(t *testing.T, dir, boot string) (*Service, string) {
	t.Helper()
	s, err := Open(Config{DataDir: dir, BootID: boot})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	_, sock := serveNBD(t, s)
	return s, sock
}

func readBack(t *testing.T, cl *nbd.Client, want []byte, off int64) {
	t.Helper()
	got := make([]byte, len(want))
	if err := cl.Read(context.Background(), got, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%d bytes at %d: got %#x..., want %#x...", len(want), off, got[:8], want[:8])
	}
}

// A write the daemon acknowledged survives a SIGKILL of the daemon without a
// flush: the restarted daemon serves it under the same export name, and
// flushes succeed.
func TestAcknowledgedWriteSurvivesDaemonKill(t *testing.T) {
	dir, export := crashedDaemon(t)
	_, sock := reopen(t, dir, crashBoot)
	ctx := context.Background()
	cl, err := nbd.Dial(ctx, "unix", sock, nbd.ClientOptions{ExportName: export})
	if err != nil {
		t.Fatalf("the same export after the restart: %v", err)
	}
	defer cl.Close()
	readBack(t, cl, flushedData, 1<<20)
	readBack(t, cl, unflushedData, 4<<20)
	if err := cl.Flush(ctx); err != nil {
		t.Fatalf("flush after the restart: %v", err)
	}
}

// After a power cut (the daemon restarts on another boot) the attachment
// that wrote may have lost what it had not flushed: its flushes and FUA
// writes fail, reads still work, the API and renewals say so, and a fresh
// attachment flushes again.
func TestLostWritesFailFlushesAfterPowerCut(t *testing.T) {
	dir, export := crashedDaemon(t)
	s, sock := reopen(t, dir, "a-later-boot")
	ctx := context.Background()
	cl, err := nbd.Dial(ctx, "unix", sock, nbd.ClientOptions{ExportName: export})
	if err != nil {
		t.Fatalf("the same export after the restart: %v", err)
	}
	defer cl.Close()
	readBack(t, cl, flushedData, 1<<20)
	if err := cl.Flush(ctx); err == nil {
		t.Fatal("flush succeeded over writes a power cut may have lost")
	}
	if err := cl.Write(ctx, []byte("after"), 8<<20, nbd.CmdFlagFUA); err == nil {
		t.Fatal("FUA write succeeded over writes a power cut may have lost")
	}
	if err := cl.Write(ctx, []byte("after"), 8<<20, 0); err != nil {
		t.Fatalf("plain write: %v", err)
	}
	if err := cl.Flush(ctx); err == nil {
		t.Fatal("second flush succeeded")
	}
	v, err := s.GetVolume(ctx, "vol")
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Attachments) != 1 || !v.Attachments[0].LostWrites {
		t.Fatalf("attachments %+v, want n1 with lost_writes", v.Attachments)
	}
	l, err := s.Renew(ctx, "vol", "n1")
	if err != nil || !l.LostWrites {
		t.Fatalf("renew = %+v, %v; want lost_writes", l, err)
	}

	// The mark outlives another restart of the daemon.
	cl.Close()
	s.Close()
	s, sock = reopen(t, dir, "yet-another-boot")
	cl, err = nbd.Dial(ctx, "unix", sock, nbd.ClientOptions{ExportName: export})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Flush(ctx); err == nil {
		t.Fatal("flush succeeded after a second restart")
	}
	cl.Close()

	// Detach and attach again: a new attachment starts clean.
	if err := s.Detach(ctx, "vol", "n1"); err != nil {
		t.Fatal(err)
	}
	g, err := s.Attach(ctx, "vol", api.AttachRequest{Node: "n1", Mode: "rw"})
	if err != nil {
		t.Fatal(err)
	}
	cl, err = nbd.Dial(ctx, "unix", sock, nbd.ClientOptions{ExportName: g.Export})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	readBack(t, cl, flushedData, 1<<20)
	if err := cl.Flush(ctx); err != nil {
		t.Fatalf("flush of a fresh attachment: %v", err)
	}
}
