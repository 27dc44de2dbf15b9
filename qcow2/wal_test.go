package qcow2

import (
	"bytes"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// abandon drops an open image the way a killed process does: descriptors
// closed, nothing flushed, the dirty bit left set.
func abandon(img *Image) {
	img.closed.Store(true)
	img.log.close()
	img.closeBacking()
	img.f.Close()
}

// walWorkload writes, overwrites and discards without a final flush, after
// one flush part way, and returns the bytes every acknowledged operation
// left (want), those the flush covered (flushed) and which bytes changed
// after it (later).
func walWorkload(t *testing.T, img *Image, size int64, seed int64) (want, flushed []byte, later []bool) {
	t.Helper()
	r := rand.New(rand.NewSource(seed))
	want = make([]byte, size)
	later = make([]bool, size)
	if _, err := img.ReadAt(want, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		if i == 150 {
			if err := img.Flush(); err != nil {
				t.Fatal(err)
			}
			flushed = bytes.Clone(want)
		}
		n := int64(1 + r.Intn(3*int(img.clusterSize)))
		off := r.Int63n(size - n)
		if flushed != nil {
			for j := off; j < off+n; j++ {
				later[j] = true
			}
		}
		if r.Intn(6) == 0 {
			if err := img.Discard(off, n); err != nil {
				t.Fatal(err)
			}
			clear(want[off : off+n])
			continue
		}
		p := make([]byte, n)
		r.Read(p)
		if _, err := img.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	return want, flushed, later
}

func readWhole(t *testing.T, path string, opts *OpenOptions) ([]byte, *Image) {
	t.Helper()
	img, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, img.Size())
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	return got, img
}

// A process that dies without flushing loses none of the writes it
// acknowledged: the next Open on the same boot replays the intent log.
func TestIntentLogReplaysAfterProcessCrash(t *testing.T) {
	for _, cs := range []int64{512, 4096, 64 << 10} {
		t.Run(sizeName(cs), func(t *testing.T) {
			const size = 3<<20 + 512
			path := filepath.Join(t.TempDir(), "a.qcow2")
			img, err := Create(path, size, &CreateOptions{ClusterSize: cs})
			if err != nil {
				t.Fatal(err)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			// A small cache makes evictions write back (and empty the log) mid-run.
			img, err = Open(path, &OpenOptions{L2CacheTables: 2, BootID: "boot-1"})
			if err != nil {
				t.Fatal(err)
			}
			want, _, _ := walWorkload(t, img, size, cs)
			abandon(img)

			got, img2 := readWhole(t, path, &OpenOptions{BootID: "boot-1"})
			if img2.LostWrites() {
				t.Error("LostWrites after a process crash on the same boot")
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("after replay %d bytes differ from the acknowledged writes", countDiff(got, want))
			}
			if err := img2.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(WALPath(path)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("intent log left after a clean close: %v", err)
			}
			checkClean(t, path)
			got, img3 := readWhole(t, path, &OpenOptions{ReadOnly: true})
			img3.Close()
			if !bytes.Equal(got, want) {
				t.Fatalf("after replay and close %d bytes differ", countDiff(got, want))
			}
		})
	}
}

// Without the replay (the state after a power cut) the image holds what was
// flushed, and says it may have lost the rest.
func TestIntentLogIgnoredOnAnotherBoot(t *testing.T) {
	const size = 2 << 20
	path := filepath.Join(t.TempDir(), "a.qcow2")
	img, err := Create(path, size, &CreateOptions{ClusterSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	img.Close()
	img, err = Open(path, &OpenOptions{BootID: "boot-1"})
	if err != nil {
		t.Fatal(err)
	}
	_, flushed, later := walWorkload(t, img, size, 7)
	abandon(img)

	if lost, err := CheckLostWrites(path, "boot-1"); err != nil || lost {
		t.Fatalf("CheckLostWrites on the same boot = %v, %v; want false", lost, err)
	}
	if lost, err := CheckLostWrites(path, "boot-2"); err != nil || !lost {
		t.Fatalf("CheckLostWrites on another boot = %v, %v; want true", lost, err)
	}
	got, img2 := readWhole(t, path, &OpenOptions{BootID: "boot-2"})
	if !img2.LostWrites() {
		t.Error("LostWrites = false after an unclean close on another boot")
	}
	for i := range got {
		if !later[i] && got[i] != flushed[i] {
			t.Fatalf("byte %d = %#x, flushed %#x and not written since", i, got[i], flushed[i])
		}
	}
	if err := img2.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, path)
	if lost, err := CheckLostWrites(path, "boot-3"); err != nil || lost {
		t.Fatalf("CheckLostWrites after a clean close = %v, %v; want false", lost, err)
	}
}

// Linux reports a failed writeback once; the image must keep failing
// flushes (and writes) afterwards instead of acknowledging lost data.
func TestFailedSyncIsSticky(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.qcow2")
	img, err := Create(path, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	img.Close()
	img, err = Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Data only, so the flush takes the path without metadata.
	if _, err := img.WriteAt([]byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt([]byte("y"), 0); err != nil {
		t.Fatal(err)
	}
	fails := 1
	img.fdatasync = func(fd int) error {
		if fails > 0 {
			fails--
			return syscall.EIO
		}
		return syscall.Fdatasync(fd)
	}
	if err := img.Flush(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("first flush = %v, want EIO", err)
	}
	if err := img.Flush(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("second flush = %v, want the remembered EIO", err)
	}
	if _, err := img.WriteAt([]byte("z"), 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("write after a failed sync = %v, want EIO", err)
	}
	img.Close()
	img, err = Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		t.Fatalf("flush after reopening: %v", err)
	}
	img.Close()
}

func countDiff(a, b []byte) int {
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

// The intent log is read from disk after a crash: whatever it holds, the
// reader returns whole records only and never panics, and an image opened
// over it replays only records that fit the image.
func FuzzReadWAL(f *testing.F) {
	var rec [walRecordSize]byte
	walRecord{gc: 3, entry: 0x50000 | entryCopied}.encode(rec[:])
	hdr := make([]byte, walHeaderSize)
	copy(hdr, walMagic)
	copy(hdr[len(walMagic):], "boot-1")
	f.Add(append(append([]byte{}, hdr...), rec[:]...))
	f.Add(append(append([]byte{}, hdr...), rec[:10]...))
	f.Add([]byte(walMagic))
	f.Add([]byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "fuzz.wal")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		boot, recs, err := readWAL(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs)*walRecordSize > max(len(data)-walHeaderSize, 0) {
			t.Fatalf("%d records from %d bytes", len(recs), len(data))
		}
		if len(boot) > walBootIDMax {
			t.Fatalf("boot id of %d bytes", len(boot))
		}
	})
}

// A log whose records point outside the image is not replayed blindly:
// Open succeeds, reports lost writes and leaves a clean image.
func TestIntentLogBadRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.qcow2")
	img, err := Create(path, 1<<20, &CreateOptions{ClusterSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	img.Close()
	hdr := make([]byte, walHeaderSize)
	copy(hdr, walMagic)
	copy(hdr[len(walMagic):], "boot-1")
	var rec [walRecordSize]byte
	walRecord{gc: 1 << 40, entry: 0x10000 | entryCopied}.encode(rec[:]) // far past the disk
	if err := os.WriteFile(WALPath(path), append(hdr, rec[:]...), 0o600); err != nil {
		t.Fatal(err)
	}
	img, err = Open(path, &OpenOptions{BootID: "boot-1"})
	if err != nil {
		t.Fatal(err)
	}
	if !img.LostWrites() {
		t.Error("a record outside the disk was not reported as lost writes")
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, path)
}
