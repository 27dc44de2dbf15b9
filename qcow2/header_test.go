package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// cleanImage makes a small closed image of 64 KiB clusters with some data.
func cleanImage(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "h.qcow2")
	img, err := Create(path, 8<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(bytes.Repeat([]byte{0xab}, 100<<10), 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func patchImage(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// wantUnsupported opens path read-write and read-only, expects both to fail
// with an UnsupportedError mentioning feature, and the file to be untouched.
func wantUnsupported(t *testing.T, path, feature string) {
	t.Helper()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, ro := range []bool{false, true} {
		img, err := Open(path, &OpenOptions{ReadOnly: ro})
		if err == nil {
			img.Close()
			t.Fatalf("Open(ReadOnly=%v) succeeded; want an error naming %q", ro, feature)
		}
		var ue *UnsupportedError
		if !errors.As(err, &ue) {
			t.Errorf("Open(ReadOnly=%v): %v (%T), want *UnsupportedError", ro, err, err)
		}
		if !strings.Contains(err.Error(), feature) {
			t.Errorf("Open(ReadOnly=%v): %q does not mention %q", ro, err, feature)
		}
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("a refused Open modified the image")
	}
}

func TestUnknownIncompatibleBit(t *testing.T) {
	t.Run("netvol", func(t *testing.T) {
		path := cleanImage(t)
		patchImage(t, path, offIncompatible, be64(1<<10))
		wantUnsupported(t, path, "unknown incompatible feature bit 10")
	})
	t.Run("qemu-img", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "q.qcow2")
		mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", path, "1M")
		patchImage(t, path, offIncompatible, be64(1<<63))
		wantUnsupported(t, path, "unknown incompatible feature bit 63")
	})
}

func TestCorruptBitRefused(t *testing.T) {
	path := cleanImage(t)
	patchImage(t, path, offIncompatible, be64(incompatCorrupt))
	wantUnsupported(t, path, "corrupt")
}

func TestEncryptionRefused(t *testing.T) {
	for _, format := range []string{"luks", "aes"} {
		t.Run(format, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "enc.qcow2")
			// A short iter-time: LUKS's PBKDF benchmark can fail with
			// "Unable to get accurate CPU usage" on a busy or virtual CPU.
			opts := "encrypt.format=" + format + ",encrypt.key-secret=s0"
			if format == "luks" {
				opts += ",encrypt.iter-time=10"
			}
			var out string
			var code int
			for try := 0; try < 3; try++ {
				os.Remove(path)
				if out, code = run(t, "qemu-img", "create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=x", "-o", opts, path, "1M"); code == 0 {
					break
				}
			}
			if code != 0 {
				t.Fatalf("qemu-img create %s: exit %d: %s", opts, code, out)
			}
			wantUnsupported(t, path, "encryption")
		})
	}
}

func TestExternalDataFileRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ext.qcow2")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, "d.raw"), path, "1M")
	wantUnsupported(t, path, "external data file")
}

func TestExtendedL2Refused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub.qcow2")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", path, "1M")
	wantUnsupported(t, path, "extended L2")
}

func TestVersion2ReadOnly(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "v2.raw")
	data := bytes.Repeat([]byte("version two "), 100000)
	if err := os.WriteFile(raw, data, 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "v2.qcow2")
	mustRun(t, "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "compat=0.10", raw, path)
	before, _ := os.ReadFile(path)

	img, err := Open(path, nil)
	if err == nil {
		img.Close()
		t.Fatal("read-write Open of a version 2 image succeeded")
	}
	var ue *UnsupportedError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("read-write Open of a version 2 image: %v (%T), want an UnsupportedError about version 2", err, err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("refused read-write Open modified the version 2 image")
	}

	img, err = Open(path, &OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only Open of a version 2 image: %v", err)
	}
	defer img.Close()
	got := make([]byte, img.Size())
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(data)], data) || len(bytes.Trim(got[len(data):], "\x00")) != 0 {
		t.Fatal("version 2 image reads back wrong")
	}
	if _, err := img.WriteAt([]byte{1}, 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write to read-only image: %v, want ErrReadOnly", err)
	}
}

// TestHeaderErrors patches one header field at a time and checks Open names it.
func TestHeaderErrors(t *testing.T) {
	const cs = 64 << 10
	tests := []struct {
		name  string
		off   int64
		patch []byte
		field string
	}{
		{"bad magic", 0, []byte("QFI\x00"), "magic"},
		{"version 1", 4, be32(1), "version"},
		{"version 4", 4, be32(4), "version"},
		{"cluster_bits 8", 20, be32(8), "cluster_bits"},
		{"cluster_bits 22", 20, be32(22), "cluster_bits"},
		{"size too large", 24, be64(1 << 60), "size"},
		{"l1_size too small", 36, be32(0), "l1_size"},
		{"l1 table beyond EOF", 40, be64(1 << 30), "l1_table_offset"},
		{"l1 table misaligned", 40, be64(3 * cs / 2), "l1_table_offset"},
		{"refcount table misaligned", 48, be64(cs + 512), "refcount_table_offset"},
		{"refcount table beyond EOF", 48, be64(1 << 40), "refcount_table_offset"},
		{"refcount_table_clusters 0", 56, be32(0), "refcount_table_clusters"},
		{"refcount_order 7", 96, be32(7), "refcount_order"},
		{"header_length odd", 100, be32(105), "header_length"},
		{"header_length short", 100, be32(96), "header_length"},
		{"extension overrun", 112, append(be32(0x12345678), be32(1<<20)...), "header extension"},
		{"backing name too long", 8, append(be64(512), be32(1024)...), "backing_file_size"},
		{"backing name outside header", 8, append(be64(cs-10), be32(100)...), "backing_file_offset"},
		{"backing name far outside", 8, append(be64(3<<20), be32(100)...), "backing_file_offset"},
		{"compression type without bit", 104, []byte{1}, "compression_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := cleanImage(t)
			patchImage(t, path, tt.off, tt.patch)
			for _, ro := range []bool{true, false} {
				img, err := Open(path, &OpenOptions{ReadOnly: ro})
				if err == nil {
					img.Close()
					t.Fatalf("Open(ReadOnly=%v) succeeded", ro)
				}
				var fe *FormatError
				if !errors.As(err, &fe) {
					t.Fatalf("Open(ReadOnly=%v): %v (%T), want *FormatError", ro, err, err)
				}
				if fe.Field != tt.field || !strings.Contains(err.Error(), tt.field) {
					t.Fatalf("Open(ReadOnly=%v): %v: field %q, want %q", ro, err, fe.Field, tt.field)
				}
			}
		})
	}
}

func TestTruncatedHeader(t *testing.T) {
	path := cleanImage(t)
	for _, n := range []int64{0, 10, 71, 100} {
		if err := os.Truncate(path, n); err != nil {
			t.Fatal(err)
		}
		img, err := Open(path, &OpenOptions{ReadOnly: true})
		if err == nil {
			img.Close()
			t.Fatalf("Open of a %d byte file succeeded", n)
		}
		var fe *FormatError
		if !errors.As(err, &fe) {
			t.Fatalf("Open of a %d byte file: %v (%T), want *FormatError", n, err, err)
		}
	}
}

// TestRepairRejectsReferencesBeyondEOF: repairing a dirty image must not
// trust L2 entries that point past the end of the file (a corrupt table could
// otherwise make repair allocate counts for, and extend the file to, any
// offset up to 2^56).
func TestRepairRejectsReferencesBeyondEOF(t *testing.T) {
	for _, tc := range []struct {
		name  string
		entry uint64
	}{
		{"normal", entryCopied | 1<<40},
		{"compressed", entryCompressed | 1<<40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := cleanImage(t)
			img, err := Open(path, &OpenOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			l2 := img.l1[0] & offsetMask
			img.Close()
			// Guest cluster 48 (3 MiB) was written by cleanImage.
			patchImage(t, path, int64(l2)+48*8, be64(tc.entry))
			patchImage(t, path, offIncompatible, be64(incompatDirty))
			st0, _ := os.Stat(path)
			img, err = Open(path, nil)
			if err == nil {
				img.Close()
			}
			st1, _ := os.Stat(path)
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Errorf("Open of a dirty image with an L2 entry %#x: %v, want a FormatError", tc.entry, err)
			}
			if st1.Size() != st0.Size() {
				t.Errorf("repair changed the file size from %d to %d", st0.Size(), st1.Size())
			}
		})
	}
}

// TestRefcountTableEntryFarBeyondEOF: a refcount table entry for clusters far
// past the end of the file must not make a writable Open allocate counts for
// all of them (entry 8191 of a 64 KiB-cluster table covers 16 TiB).
func TestRefcountTableEntryFarBeyondEOF(t *testing.T) {
	path := cleanImage(t)
	const cs = 64 << 10
	// cleanImage's refcount table is cluster 1 and its first block cluster 2.
	patchImage(t, path, cs+8191*8, be64(2*cs))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	img, err := Open(path, nil)
	runtime.ReadMemStats(&after)
	if err == nil {
		img.Close()
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Fatalf("Open allocated %d MiB for a %d KiB image", grew>>20, 8<<10)
	}
}
