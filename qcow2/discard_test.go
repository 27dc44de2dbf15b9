package qcow2

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// wantBytes asserts the image reads as want at off.
func wantBytes(t *testing.T, img *Image, off int64, want []byte, what string) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := img.ReadAt(got, off); err != nil {
		t.Fatalf("%s: ReadAt(%d bytes at %d): %v", what, len(got), off, err)
	}
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("%s: byte %d (of %d at %d) reads %#x, want %#x", what, off+int64(i), len(want), off, got[i], want[i])
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// Issue 12: a discard that ends at the disk end, on a disk whose size is not
// a multiple of the cluster size, used to unmap the whole last cluster,
// including the bytes before the requested offset. A zero-length discard at
// offset == size lost the last partial cluster outright.
func TestDiscardNearDiskEnd(t *testing.T) {
	const k, m = 1 << 10, 1 << 20
	cases := []struct {
		size, cs int64
		backing  bool
	}{
		{64*m + 8*k, 64 * k, false}, // the reported case
		{64*m + 8*k, 64 * k, true},
		{1000000000, 64 * k, false}, // size=1000000000
		{4*m + 512, 4 * k, false},
		{4*m + 3584, 4 * k, true},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("size=%d,cluster=%d,backing=%v", c.size, c.cs, c.backing), func(t *testing.T) {
			tail := c.size % c.cs // the last, partial cluster
			for _, op := range []struct {
				name   string
				off, n int64 // relative to the disk end
			}{
				{"second half of the last cluster", -tail / 2, tail / 2},
				{"last 512 bytes", -512, 512},
				{"zero length at the end", 0, 0},
				{"zero length before the end", -tail / 2, 0},
				{"spanning into the last cluster", -tail - 512, tail/2 + 512},
			} {
				t.Run(op.name, func(t *testing.T) {
					testDiscardNearEnd(t, c.size, c.cs, c.backing, c.size+op.off, op.n)
				})
			}
		})
	}
}

func testDiscardNearEnd(t *testing.T, size, cs int64, backing bool, off, n int64) {
	dir := t.TempDir()
	path := filepath.Join(dir, "img.qcow2")
	opts := &CreateOptions{ClusterSize: cs}
	fill := byte(0)
	if backing {
		base := filepath.Join(dir, "base.raw")
		if err := os.WriteFile(base, bytes.Repeat([]byte{0xbb}, int(size)), 0o600); err != nil {
			t.Fatal(err)
		}
		opts.BackingFile, opts.BackingFormat = "base.raw", "raw"
		fill = 0xbb
	}
	img, err := Create(path, size, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if img != nil {
			img.Close()
		}
	}()
	// 0xaa over the last two clusters' worth (or what there is of them).
	lo := max(0, size-cs-size%cs)
	if _, err := img.WriteAt(bytes.Repeat([]byte{0xaa}, int(size-lo)), lo); err != nil {
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := img.Discard(off, n); err != nil {
		t.Fatalf("Discard(%d, %d): %v", off, n, err)
	}
	want := bytes.Repeat([]byte{0xaa}, int(size-lo))
	clear(want[off-lo : off-lo+n])
	check := func(what string) {
		wantBytes(t, img, lo, want, what)
		wantBytes(t, img, lo-4096, bytes.Repeat([]byte{fill}, 4096), what+", before the written range")
	}
	check("after Discard")
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	check("after Flush")
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	img = nil
	checkClean(t, path)
	if img, err = Open(path, nil); err != nil {
		t.Fatal(err)
	}
	check("after reopening")
}
