package server

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/server/backup"
)

// The daemon killed (SIGKILL) during a backup: a child process (this test
// binary again) takes a first backup, writes more (acknowledged, not
// flushed), and is killed in its second backup at one step: in the middle
// of storing chunks ("upload"), or at each step the service names
// (Config.AtStep). The parent opens the data directory again, as a
// restarted daemon would, and checks that the backups listed are complete
// ones, that the volume holds every acknowledged write, that one base
// snapshot is left and no stray file, and that the next backup works and
// restores the volume byte for byte.
const (
	bkCrashDirEnv = "NETVOL_BACKUP_CRASH_DIR"
	bkCrashAtEnv  = "NETVOL_BACKUP_CRASH_AT"
	bkCrashBoot   = "boot-of-the-backup-crash"
	bkCrashUpload = "upload"
)

// killingTarget kills the process at its nth chunk put when armed.
type killingTarget struct {
	backup.Target
	armed atomic.Bool
	puts  atomic.Int32
	at    int32
}

func (k *killingTarget) Put(ctx context.Context, key string, data []byte) error {
	if k.armed.Load() && strings.HasPrefix(key, "chunks/") && k.puts.Add(1) == k.at {
		fmt.Println("step " + bkCrashUpload)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	return k.Target.Put(ctx, key, data)
}

// bkCrashWrites is what the child writes: 4 MiB before the first backup
// (flushed), then 40 clusters after it (acknowledged, never flushed).
func bkCrashWrites() (first, second []byte) {
	r := rand.New(rand.NewSource(11))
	first = make([]byte, bvSize)
	r.Read(first[:4<<20])
	second = bytes.Clone(first)
	for i := range 40 {
		off := int64(i) * 700 << 10
		r.Read(second[off : off+64<<10])
	}
	return first, second
}

func TestBackupCrashChild(t *testing.T) {
	dir := os.Getenv(bkCrashDirEnv)
	if dir == "" {
		t.Skip("only runs as the child of TestKillDuringBackup")
	}
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "child: %s: %v\n", what, err)
		os.Exit(2)
	}
	killAt, armed := os.Getenv(bkCrashAtEnv), false
	tg, err := backup.OpenDir(filepath.Join(dir, "target"))
	if err != nil {
		fail("target", err)
	}
	kt := &killingTarget{Target: tg, at: 20}
	s, err := Open(Config{DataDir: filepath.Join(dir, "data"), BootID: bkCrashBoot,
		Backups: backup.NewEngine(kt, backup.EngineOptions{Workers: 2, GCGrace: -1}),
		AtStep: func(step string) {
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
	cl := bkCrashSetup(ctx, s, fail)
	armed = true
	kt.armed.Store(killAt == bkCrashUpload)
	if _, err := s.CreateBackup(ctx, "vol"); err != nil {
		fail("backup", err)
	}
	fmt.Println("done")
	time.Sleep(time.Minute) // the parent kills us
	cl.Close()
	os.Exit(3)
}

func bkCrashSetup(ctx context.Context, s *Service, fail func(string, error)) *nbd.Client {
	if _, err := s.CreateVolume(ctx, api.CreateRequest{Name: "vol", Size: bvSize}); err != nil {
		fail("create", err)
	}
	g, err := s.Attach(ctx, "vol", api.AttachRequest{Node: "n1", Mode: "rw"})
	if err != nil {
		fail("attach", err)
	}
	sockDir, err := os.MkdirTemp("", "nvb")
	if err != nil {
		fail("socket dir", err)
	}
	l, err := netListenUnix(filepath.Join(sockDir, "s"))
	if err != nil {
		fail("listen", err)
	}
	go (&nbd.Server{Exports: s}).Serve(l)
	cl, err := nbd.Dial(ctx, "unix", filepath.Join(sockDir, "s"), nbd.ClientOptions{ExportName: g.Export})
	if err != nil {
		fail("dial", err)
	}
	first, second := bkCrashWrites()
	if err := cl.Write(ctx, first[:4<<20], 0, 0); err != nil {
		fail("write", err)
	}
	if err := cl.Flush(ctx); err != nil {
		fail("flush", err)
	}
	if _, err := s.CreateBackup(ctx, "vol"); err != nil {
		fail("first backup", err)
	}
	for i := range 40 {
		off := int64(i) * 700 << 10
		if err := cl.Write(ctx, second[off:off+64<<10], off, 0); err != nil {
			fail("write", err)
		}
	}
	return cl
}

func runBackupChild(t *testing.T, dir, step string) (steps []string, done bool) {
	t.Helper()
	return runKilledChild(t, "TestBackupCrashChild", bkCrashDirEnv+"="+dir, bkCrashAtEnv+"="+step)
}

func TestKillDuringBackup(t *testing.T) {
	needTool(t, "qemu-img")
	steps, done := runBackupChild(t, t.TempDir(), "")
	if !done || len(steps) < 5 {
		t.Fatalf("dry run: done %v, steps %v", done, steps)
	}
	t.Logf("steps: %v", steps)
	for _, step := range append([]string{bkCrashUpload}, steps...) {
		t.Run(step, func(t *testing.T) {
			dir := t.TempDir()
			got, done := runBackupChild(t, dir, step)
			if done || !slices.Contains(got, step) {
				t.Fatalf("the child was not killed at %s (steps %v)", step, got)
			}
			checkAfterBackupCrash(t, dir, step)
		})
	}
}

func checkAfterBackupCrash(t *testing.T, dir, step string) {
	tg, err := backup.OpenDir(filepath.Join(dir, "target"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(Config{DataDir: filepath.Join(dir, "data"), BootID: bkCrashBoot,
		Backups: backup.NewEngine(tg, backup.EngineOptions{GCGrace: -1})})
	if err != nil {
		t.Fatalf("reopen after a kill at %s: %v", step, err)
	}
	defer s.Close()
	first, second := bkCrashWrites()
	list, err := s.ListBackups(bg, "vol")
	if err != nil {
		t.Fatal(err)
	}
	manifestWritten := strings.HasPrefix(step, "backup/") && step != "backup/frozen"
	if want := map[bool]int{false: 1, true: 2}[manifestWritten]; len(list) != want {
		t.Fatalf("%d backups listed after a kill at %s, want %d", len(list), step, want)
	}
	for _, b := range list {
		if _, err := s.VerifyBackup(bg, b.ID); err != nil {
			t.Fatalf("listed backup %s does not verify: %v", b.ID, err)
		}
	}
	if got := readImage(t, s, "vol"); !bytes.Equal(got, second) {
		t.Fatalf("the volume lost acknowledged writes after a kill at %s", step)
	}
	v, _ := s.reg.GetVolume("vol")
	if len(v.Snapshots) != 1 {
		t.Fatalf("%d snapshots left after a kill at %s, want the base: %+v", len(v.Snapshots), step, v.Snapshots)
	}
	checkAllImages(t, filepath.Join(dir, "data"))
	// the next backup works and restores the volume
	b, err := s.CreateBackup(bg, "vol")
	if err != nil {
		t.Fatalf("the next backup after a kill at %s: %v", step, err)
	}
	if b.Parent == "" || b.StoredBytes > 80*64<<10+64<<10 { // 40 writes over 2 clusters each
		t.Fatalf("the next backup after a kill at %s: parent %q, stored %d (want incremental)", step, b.Parent, b.StoredBytes)
	}
	restoreAndCompare(t, s, b.ID, "r", second)
	restoreAndCompare(t, s, list[0].ID, "r0", first)
	if files, _ := filepath.Glob(filepath.Join(s.dir, "*"+imageExt)); len(files) != 4 { // vol, its base, r, r0
		t.Fatalf("files: %v", files)
	}
}
