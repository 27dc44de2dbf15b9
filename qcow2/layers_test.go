package qcow2

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// layered is a chain of images built as the storage daemon's snapshots
// build it: each layer is closed and becomes the backing file of the next
// (same directory, relative names), and want mirrors what the top reads.
type layered struct {
	dir   string
	files []string // bottom first; the last is the open top
	top   *Image
	want  []byte
}

func newLayered(t *testing.T, size int64) *layered {
	t.Helper()
	l := &layered{dir: t.TempDir(), want: make([]byte, size)}
	l.files = []string{filepath.Join(l.dir, "l0.qcow2")}
	img, err := Create(l.files[0], size, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.top = img
	t.Cleanup(func() { l.top.Close() })
	return l
}

// freeze closes the top and opens a new empty overlay of it, of size.
func (l *layered) freeze(t *testing.T, size int64) {
	t.Helper()
	if err := l.top.Close(); err != nil {
		t.Fatal(err)
	}
	next := filepath.Join(l.dir, fmt.Sprintf("l%d.qcow2", len(l.files)))
	img, err := Create(next, size, &CreateOptions{BackingFile: filepath.Base(l.files[len(l.files)-1])})
	if err != nil {
		t.Fatal(err)
	}
	l.files, l.top = append(l.files, next), img
	if int64(len(l.want)) < size {
		l.want = append(l.want, make([]byte, size-int64(len(l.want)))...)
	}
}

func (l *layered) write(t *testing.T, p []byte, off int64) {
	t.Helper()
	if _, err := l.top.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
	copy(l.want[off:], p)
}

func (l *layered) zero(t *testing.T, off, n int64) {
	t.Helper()
	if err := l.top.Discard(off, n); err != nil {
		t.Fatal(err)
	}
	clear(l.want[off : off+n])
}

func (l *layered) check(t *testing.T, img *Image) {
	t.Helper()
	got := make([]byte, len(l.want))
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(got, l.want); i >= 0 {
		t.Fatalf("%s: byte %d (cluster %d) reads %#x, want %#x", img.path, i, i/defaultClusterSize, got[i], l.want[i])
	}
}

// randomLayers writes random runs, zeroes and partial clusters into each
// of n layers.
func randomLayers(t *testing.T, r *rand.Rand, l *layered, n int) {
	t.Helper()
	size := int64(len(l.want))
	for i := range n {
		for range 12 {
			off := r.Int63n(size/512) * 512
			m := min(size-off, (1+r.Int63n(200))*512)
			if r.Intn(5) == 0 {
				l.zero(t, off&^(defaultClusterSize-1), min(size-off&^(defaultClusterSize-1), defaultClusterSize))
				continue
			}
			l.write(t, randomData(r, int(m)), off)
		}
		if i < n-1 {
			l.freeze(t, size)
		}
	}
}

// A top image reads its chain of layers exactly as qemu does, through the
// flattened lookup, with layers of growing sizes (bytes past a smaller
// layer read as zeros even where a deeper one holds data).
func TestChainReadsMatchQemu(t *testing.T) {
	r := rand.New(rand.NewSource(14))
	l := newLayered(t, 4<<20)
	l.write(t, bytes.Repeat([]byte{0x11}, 4<<20), 0)
	l.freeze(t, 6<<20)
	l.write(t, bytes.Repeat([]byte{0x22}, 64<<10), 5<<20)
	randomLayers(t, r, l, 6)
	l.freeze(t, 8<<20)
	l.write(t, []byte("top"), 7<<20)
	if l.top.chain == nil || len(l.top.chain.layers) != len(l.files)-1 {
		t.Fatalf("the top's chain is not flattened: %+v", l.top.chain)
	}
	l.check(t, l.top)
	if err := l.top.Flush(); err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(l.dir, "want.raw")
	if err := os.WriteFile(raw, l.want, 0o600); err != nil {
		t.Fatal(err)
	}
	compareRaw(t, l.files[len(l.files)-1], raw)
}

// StreamBacking removes the top's backing layer from the chain without
// changing a byte the top reads, also while a client writes; the result is
// clean for qemu-img and qemu-img info shows the shorter chain.
func TestStreamBackingKeepsContents(t *testing.T) {
	r := rand.New(rand.NewSource(12))
	l := newLayered(t, 8<<20)
	randomLayers(t, r, l, 3) // l0 ← l1 ← l2 (top)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 64 {
			off := int64(i%8)<<20 + int64(i)*4096
			l.write(t, bytes.Repeat([]byte{byte(0x80 + i)}, 4096), off)
		}
	})
	if err := l.top.StreamBacking(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	l.check(t, l.top)
	if got := l.top.BackingFile(); got != "l0.qcow2" {
		t.Fatalf("backing file %q after streaming l1, want l0.qcow2", got)
	}
	top := l.files[2]
	if err := l.top.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(l.files[1]); err != nil { // the layer is not needed any more
		t.Fatal(err)
	}
	checkClean(t, top)
	out := mustRun(t, "qemu-img", "info", "--backing-chain", top)
	if !strings.Contains(out, "backing file: l0.qcow2") || strings.Contains(out, "l1.qcow2") {
		t.Fatalf("qemu-img info --backing-chain:\n%s", out)
	}
	img, err := Open(top, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.top = img
	l.check(t, img)

	// Streaming the last layer leaves a standalone image.
	if err := img.StreamBacking(); err != nil {
		t.Fatal(err)
	}
	if img.BackingFile() != "" {
		t.Fatalf("backing file %q, want none", img.BackingFile())
	}
	img.Close()
	os.Remove(l.files[0])
	checkClean(t, top)
	img, err = Open(top, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.top = img
	l.check(t, img)
}

// SetBackingFile switches between names of any length, back and forth,
// without touching the header's extensions.
func TestSetBackingFileSlots(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"a.qcow2", "b.qcow2", strings.Repeat("c", 200) + ".qcow2"} {
		img, err := Create(filepath.Join(dir, n), 1<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		img.Close()
	}
	top := filepath.Join(dir, "top.qcow2")
	img, err := Create(top, 1<<20, &CreateOptions{BackingFile: "a.qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"b.qcow2", strings.Repeat("c", 200) + ".qcow2", "a.qcow2", "b.qcow2"} {
		if err := img.SetBackingFile(n, "qcow2"); err != nil {
			t.Fatal(err)
		}
		got, err := ReadBackingFile(top)
		if err != nil || got != n {
			t.Fatalf("ReadBackingFile = %q, %v; want %q", got, err, n)
		}
		out := mustRun(t, "qemu-img", "info", "-U", top)
		if !strings.Contains(out, "backing file: "+n) || !strings.Contains(out, "backing file format: qcow2") {
			t.Fatalf("qemu-img info after switching to %s:\n%s", n, out)
		}
	}
	if err := img.SetBackingFile("x.raw", "raw"); err == nil {
		t.Error("the backing format changed in place")
	}
	img.Close()
	checkClean(t, top)
}
