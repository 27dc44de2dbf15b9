package server

import (
	"bytes"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netvol/netvol/internal/s3test"
	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/server/backup"
	"github.com/netvol/netvol/state"
)

const bvSize = 32 << 20 // the test volume

// backupTargets returns a target URL and S3 settings of each kind: a
// directory and a bucket of a real S3 server (versitygw).
func backupTargets(t *testing.T) map[string]func() backup.Target {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "backups")
	srv := s3test.Start(t, "bkt")
	srv.SetEnv(t)
	open := func(url string, cfg backup.S3Config) func() backup.Target {
		return func() backup.Target {
			tg, err := backup.OpenTarget(url, cfg)
			if err != nil {
				t.Fatal(err)
			}
			return tg
		}
	}
	return map[string]func() backup.Target{
		"dir": open("file://"+dir, backup.S3Config{}),
		"s3":  open("s3://bkt/netvol", backup.S3Config{Endpoint: srv.Endpoint, Region: s3test.Region}),
	}
}

// backupService opens a storage daemon's service on its own data
// directory with a backup target.
func backupService(t *testing.T, tg backup.Target, dir string) *Service {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := Open(Config{DataDir: dir, MaxVolumeSize: 1 << 30, BootID: "backup-test",
		Backups: backup.NewEngine(tg, backup.EngineOptions{GCGrace: -1})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// writer writes a volume over NBD and mirrors what it reads.
type writer struct {
	t    *testing.T
	cl   *nbd.Client
	want []byte
	r    *rand.Rand
}

func attachWriter(t *testing.T, s *Service, volume string) *writer {
	t.Helper()
	_, sock := serveNBD(t, s)
	g := mustAttach(t, s, volume, "n1", "rw")
	return &writer{t: t, cl: dialExport(t, sock, g.Export), want: make([]byte, bvSize), r: rand.New(rand.NewSource(7))}
}

func (w *writer) write(off int64, n int) {
	w.t.Helper()
	p := make([]byte, n)
	w.r.Read(p)
	if err := w.cl.Write(bg, p, off, 0); err != nil {
		w.t.Fatal(err)
	}
	copy(w.want[off:], p)
}

// scatter writes n random 4 KiB blocks at random places.
func (w *writer) scatter(n int) {
	for range n {
		w.write(int64(w.r.Intn(bvSize/4096))*4096, 4096)
	}
}

// readImage reads a volume's whole image as its exports read it (opened
// by the service, its intent log replayed).
func readImage(t *testing.T, s *Service, volume string) []byte {
	t.Helper()
	v, err := s.reg.GetVolume(volume)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.acquire(bg); err != nil {
		t.Fatal(err)
	}
	lv, err := s.image(v)
	s.release()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, lv.Size())
	if _, err := lv.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	return buf
}

func restoreAndCompare(t *testing.T, s *Service, id, name string, want []byte) {
	t.Helper()
	v, err := s.CreateVolume(bg, api.CreateRequest{Name: name, FromBackup: id})
	if err != nil {
		t.Fatalf("restore %s: %v", id, err)
	}
	if v.Size != int64(len(want)) {
		t.Fatalf("restored %s: size %d, want %d", name, v.Size, len(want))
	}
	if got := readImage(t, s, name); !bytes.Equal(got, want) {
		t.Fatalf("restored %s differs from the volume as it was at backup %s", name, id)
	}
}

// The sequence: a full backup and incrementals of a volume in use
// (one after a user's snapshot between two backups), each restored on a
// second daemon with its own data directory and compared byte for byte;
// incrementals store about what changed; the volume keeps one base layer.
func TestBackupFullIncrementalRestoreElsewhere(t *testing.T) {
	for name, target := range backupTargets(t) {
		t.Run(name, func(t *testing.T) {
			a := backupService(t, target(), "")
			mustCreate(t, a, "db", bvSize, "")
			w := attachWriter(t, a, "db")
			w.write(0, 8<<20) // 8 MiB of data
			var ids []string
			var states [][]byte
			take := func(wantParent string) api.Backup {
				b, err := a.CreateBackup(bg, "db")
				if err != nil {
					t.Fatal(err)
				}
				if b.Parent != wantParent || b.Volume != "db" || b.Size != bvSize || !strings.HasPrefix(b.Snapshot, "@backup.") {
					t.Fatalf("backup %+v, want parent %q", b, wantParent)
				}
				ids, states = append(ids, b.ID), append(states, bytes.Clone(w.want))
				return b
			}
			full := take("")
			if full.StoredBytes < 8<<20 || full.StoredBytes > 9<<20 {
				t.Fatalf("full backup stored %d bytes for 8 MiB of data", full.StoredBytes)
			}
			w.scatter(5) // at most 5 clusters
			inc := take(full.ID)
			if inc.StoredBytes > 5*64<<10+64<<10 {
				t.Fatalf("incremental stored %d bytes after 5 changed clusters", inc.StoredBytes)
			}
			// the previous base was committed down: the volume's first file
			// is the new base's layer, and no third file is left
			if v, _ := a.reg.GetVolume("db"); len(v.Snapshots) != 1 || v.Snapshots[0].File != filepath.Join(volumesDir, "db.qcow2") {
				t.Fatalf("after the incremental: snapshots %+v", v.Snapshots)
			}
			if files, _ := filepath.Glob(filepath.Join(a.dir, "*"+imageExt)); len(files) != 2 {
				t.Fatalf("files after the incremental: %v", files)
			}
			if _, err := a.CreateSnapshot(bg, "db", "user"); err != nil {
				t.Fatal(err)
			}
			w.scatter(3)
			take(inc.ID) // the previous base is merged (a snapshot sits between)
			w.scatter(3)
			last := take(ids[2])
			if last.StoredBytes > 4*64<<10 {
				t.Fatalf("incremental stored %d bytes after 3 changed clusters", last.StoredBytes)
			}
			// what the volume holds: its image, the user's snapshot, one base
			v, _ := a.reg.GetVolume("db")
			if len(v.Snapshots) != 2 {
				t.Fatalf("volume keeps %d snapshots, want the user's and one backup base: %+v", len(v.Snapshots), v.Snapshots)
			}
			if got := readImage(t, a, "db"); !bytes.Equal(got, w.want) {
				t.Fatal("the volume reads differently after the backups")
			}
			checkAllImages(t, a.cfg.DataDir)
			list, err := a.ListBackups(bg, "db")
			if err != nil || len(list) != 4 {
				t.Fatalf("ListBackups: %d, %v", len(list), err)
			}
			b := backupService(t, target(), "")
			for i, id := range ids {
				restoreAndCompare(t, b, id, "r"+string(rune('0'+i)), states[i])
			}
			if _, err := b.CreateVolume(bg, api.CreateRequest{Name: "r0", FromBackup: ids[0]}); !errors.Is(err, state.ErrExists) {
				t.Fatalf("restore over an existing volume: %v", err)
			}
		})
	}
}

// A backup taken while a writer writes block after block holds a prefix
// of the writes: every block acknowledged before the snapshot, none after
// one that is missing (crash-consistent).
func TestBackupWhileWritten(t *testing.T) {
	tg := backupTargets(t)["dir"]()
	a := backupService(t, tg, "")
	mustCreate(t, a, "db", bvSize, "")
	w := attachWriter(t, a, "db")
	const blocks = 2000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range blocks {
			if err := w.cl.Write(bg, fill(byte(i%250)+1, 4096), int64(i)*4096, 0); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	bk, err := a.CreateBackup(bg, "db")
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	restoreAndCheckPrefix(t, backupService(t, tg, ""), bk.ID, blocks)
}

func restoreAndCheckPrefix(t *testing.T, s *Service, id string, blocks int) {
	t.Helper()
	if _, err := s.CreateVolume(bg, api.CreateRequest{Name: "r", FromBackup: id}); err != nil {
		t.Fatal(err)
	}
	got := readImage(t, s, "r")
	k := 0
	for k < blocks && got[k*4096] == byte(k%250)+1 {
		if !bytes.Equal(got[k*4096:(k+1)*4096], fill(byte(k%250)+1, 4096)) {
			t.Fatalf("block %d torn", k)
		}
		k++
	}
	for i := k; i < blocks; i++ {
		if !bytes.Equal(got[i*4096:(i+1)*4096], make([]byte, 4096)) {
			t.Fatalf("block %d is in the backup but block %d is not", i, k)
		}
	}
	t.Logf("the backup holds the first %d of %d blocks", k, blocks)
}

// A corrupted chunk fails verify and restore naming it, and the failed
// restore leaves no volume.
func TestBackupCorruptChunk(t *testing.T) {
	root := filepath.Join(t.TempDir(), "backups")
	tg, err := backup.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	a := backupService(t, tg, "")
	mustCreate(t, a, "db", bvSize, "")
	w := attachWriter(t, a, "db")
	w.write(1<<20, 64<<10)
	bk, err := a.CreateBackup(bg, "db")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.VerifyBackup(bg, bk.ID); err != nil {
		t.Fatal(err)
	}
	chunks, _ := filepath.Glob(filepath.Join(root, "chunks", "*", "*"))
	if len(chunks) != 1 {
		t.Fatalf("%d chunks", len(chunks))
	}
	data, _ := os.ReadFile(chunks[0])
	data[100] ^= 1
	os.WriteFile(chunks[0], data, 0o600)
	_, err = a.VerifyBackup(bg, bk.ID)
	if !errors.Is(err, api.ErrCorrupt) || !strings.Contains(err.Error(), "chunk 16 ") {
		t.Fatalf("verify of a corrupted chunk: %v", err)
	}
	_, err = a.CreateVolume(bg, api.CreateRequest{Name: "r", FromBackup: bk.ID})
	if !errors.Is(err, api.ErrCorrupt) || !strings.Contains(err.Error(), "chunk 16 ") {
		t.Fatalf("restore of a corrupted chunk: %v", err)
	}
	if _, err := a.GetVolume(bg, "r"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("a failed restore left a volume: %v", err)
	}
	if files, _ := filepath.Glob(filepath.Join(a.dir, "*"+imageExt)); len(files) != 2 { // db's image and its base
		t.Fatalf("files after a failed restore: %v", files)
	}
}

// Removing backups: any may go, the others still restore; the chunks no
// backup lists are collected; without a target the calls are refused.
func TestBackupRemove(t *testing.T) {
	root := filepath.Join(t.TempDir(), "backups")
	tg, _ := backup.OpenDir(root)
	a := backupService(t, tg, "")
	mustCreate(t, a, "db", bvSize, "")
	w := attachWriter(t, a, "db")
	w.write(0, 1<<20)
	b1, err := a.CreateBackup(bg, "db")
	if err != nil {
		t.Fatal(err)
	}
	w.write(2<<20, 64<<10)
	b2, err := a.CreateBackup(bg, "db")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteBackup(bg, b1.ID); err != nil {
		t.Fatal(err)
	}
	restoreAndCompare(t, a, b2.ID, "r", w.want)
	if err := a.DeleteBackup(bg, b1.ID); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("removing twice: %v", err)
	}
	if err := a.DeleteBackup(bg, b2.ID); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(root, "chunks", "*", "*")); len(left) != 0 {
		t.Fatalf("%d chunks left", len(left))
	}
	plain, _ := newService(t)
	mustCreate(t, plain, "x", 1<<20, "")
	if _, err := plain.CreateBackup(bg, "x"); !errors.Is(err, state.ErrInvalid) || !strings.Contains(err.Error(), "--backup-target") {
		t.Fatalf("backup without a target: %v", err)
	}
	if _, err := a.CreateBackup(bg, "nope"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("backup of a missing volume: %v", err)
	}
}

// The schedule backs up the volumes whose labels ask for it when due,
// remembers across a restart when it last did, and keeps the newest
// backups (retention); the others still restore.
func TestBackupScheduleAndRetention(t *testing.T) {
	tg := backupTargets(t)["dir"]()
	dir := t.TempDir()
	a := backupService(t, tg, dir)
	if _, err := a.CreateVolume(bg, api.CreateRequest{Name: "db", Size: bvSize,
		Labels: map[string]string{LabelBackupEvery: "1ns", LabelBackupKeep: "2"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateVolume(bg, api.CreateRequest{Name: "hourly", Size: bvSize,
		Labels: map[string]string{LabelBackupEvery: "1h"}}); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, a, "never", bvSize, "")
	w := attachWriter(t, a, "db")
	var states [][]byte
	for i := range 4 {
		w.write(int64(i)<<20, 4096)
		a.runDueBackups(bg, Schedule{})
		states = append(states, bytes.Clone(w.want))
	}
	list, err := a.ListBackups(bg, "")
	if err != nil {
		t.Fatal(err)
	}
	var db, hourly int
	for _, b := range list {
		switch b.Volume {
		case "db":
			db++
		case "hourly":
			hourly++
		default:
			t.Fatalf("backup of %s, which has no schedule", b.Volume)
		}
	}
	if db != 2 || hourly != 1 {
		t.Fatalf("%d backups of db (keep 2), %d of hourly (one per hour); want 2 and 1", db, hourly)
	}
	dbs, _ := a.ListBackups(bg, "db")
	restoreAndCompare(t, a, dbs[0].ID, "r2", states[2])
	restoreAndCompare(t, a, dbs[1].ID, "r3", states[3])
	a.Close()
	// a restart: hourly is not due again; the daemon default schedules "never"
	b := backupService(t, tg, dir)
	b.runDueBackups(bg, Schedule{Every: time.Hour})
	list, _ = b.ListBackups(bg, "hourly")
	nev, _ := b.ListBackups(bg, "never")
	if len(list) != 1 || len(nev) != 1 {
		t.Fatalf("after a restart: %d backups of hourly (want 1: not due), %d of never (want 1: the default)", len(list), len(nev))
	}
	if _, err := scheduleOf(map[string]string{LabelBackupEvery: "soon"}, Schedule{}); err == nil {
		t.Fatal("a bad schedule label accepted")
	}
}
