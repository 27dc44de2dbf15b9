package qcow2

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// zeroModel runs writes, discards, write-zeroes, flushes and reopens against
// an image and an in-memory copy of what the disk must read as, and checks
// them byte for byte.
type zeroModel struct {
	t     testing.TB
	path  string
	img   *Image
	model []byte
}

// newZeroModel makes an image of size bytes with clusters of cs bytes. With
// a backing file, it is an overlay of a qcow2 base of baseSize bytes whose
// first part holds random data.
func newZeroModel(t testing.TB, r *rand.Rand, size, cs int64, baseSize int64) *zeroModel {
	t.Helper()
	dir := t.TempDir()
	z := &zeroModel{t: t, path: filepath.Join(dir, "img.qcow2"), model: make([]byte, size)}
	opts := &CreateOptions{ClusterSize: cs}
	if baseSize > 0 {
		base, err := Create(filepath.Join(dir, "base.qcow2"), baseSize, &CreateOptions{ClusterSize: cs})
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, baseSize)
		r.Read(data[:r.Int63n(baseSize+1)])
		if _, err := base.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		if err := base.Close(); err != nil {
			t.Fatal(err)
		}
		copy(z.model, data)
		opts.BackingFile = "base.qcow2"
	}
	img, err := Create(z.path, size, opts)
	if err != nil {
		t.Fatal(err)
	}
	z.img = img
	t.Cleanup(func() {
		if z.img != nil {
			z.img.Close()
		}
	})
	return z
}

type zeroOpKind uint8

const (
	opWrite zeroOpKind = iota
	opDiscard
	opZeroTrim   // WriteZeroes, mayTrim
	opZeroNoHole // WriteZeroes, !mayTrim (NBD_CMD_FLAG_NO_HOLE)
	opFlush
	opReopen
	numZeroOps
)

func (k zeroOpKind) String() string {
	return [...]string{"WriteAt", "Discard", "WriteZeroes(mayTrim)", "WriteZeroes(noHole)", "Flush", "reopen"}[k]
}

type zeroOp struct {
	kind   zeroOpKind
	off, n int64
	fill   byte // WriteAt: the data is fill+i
}

func (op zeroOp) String() string {
	return fmt.Sprintf("%v(%d bytes at %d)", op.kind, op.n, op.off)
}

// apply runs op on the image and the model and checks the bytes around it.
func (z *zeroModel) apply(op zeroOp) {
	t := z.t
	t.Helper()
	var owned map[int64]uint64
	var err error
	switch op.kind {
	case opWrite:
		p := make([]byte, op.n)
		for i := range p {
			p[i] = op.fill + byte(i)
		}
		_, err = z.img.WriteAt(p, op.off)
		copy(z.model[op.off:], p)
	case opDiscard:
		err = z.img.Discard(op.off, op.n)
		clear(z.model[op.off : op.off+op.n])
	case opZeroTrim, opZeroNoHole:
		owned = z.ownedClusters(op.off, op.n)
		err = z.img.WriteZeroes(op.off, op.n, op.kind == opZeroTrim)
		clear(z.model[op.off : op.off+op.n])
	case opFlush:
		err = z.img.Flush()
	case opReopen:
		if err = z.img.Close(); err == nil {
			z.img, err = Open(z.path, nil)
		}
	}
	if err != nil {
		t.Fatalf("%v: %v", op, err)
	}
	// A margin of two clusters either side catches damage to neighbours.
	cs := z.img.ClusterSize()
	z.compare(max(0, op.off-2*cs), min(int64(len(z.model)), op.off+op.n+2*cs), op)
	if op.kind == opZeroNoHole {
		z.checkStillOwned(owned, op)
	}
	if op.kind == opZeroTrim || op.kind == opDiscard {
		z.checkUnmapped(op)
	}
}

// compare checks the image reads as the model over [lo, hi).
func (z *zeroModel) compare(lo, hi int64, after fmt.Stringer) {
	z.t.Helper()
	got := make([]byte, hi-lo)
	if _, err := z.img.ReadAt(got, lo); err != nil {
		z.t.Fatalf("after %v: ReadAt(%d bytes at %d): %v", after, hi-lo, lo, err)
	}
	if i := firstDiff(got, z.model[lo:hi]); i >= 0 {
		z.t.Fatalf("after %v: byte %d reads %#x, want %#x (disk of %d bytes, %d-byte clusters)",
			after, lo+int64(i), got[i], z.model[lo+int64(i)], len(z.model), z.img.ClusterSize())
	}
}

// ownedClusters maps the clusters in the range the image owns alone (those a
// write would go straight into) to their entries.
func (z *zeroModel) ownedClusters(off, n int64) map[int64]uint64 {
	img := z.img
	img.mu.Lock()
	defer img.mu.Unlock()
	owned := map[int64]uint64{}
	for gc := off >> img.clusterBits; gc<<img.clusterBits < off+n; gc++ {
		e, _, err := img.entryLocked(gc)
		if err != nil {
			z.t.Fatal(err)
		}
		if img.inPlaceLocked(e) {
			owned[gc] = e
		}
	}
	return owned
}

// checkStillOwned asserts a no-hole write-zeroes gave up no cluster.
func (z *zeroModel) checkStillOwned(before map[int64]uint64, op zeroOp) {
	z.t.Helper()
	after := z.ownedClusters(op.off, op.n)
	for gc, e := range before {
		if after[gc] != e {
			z.t.Fatalf("after %v: guest cluster %d was owned at %#x, now the entry is %#x", op, gc, e, after[gc])
		}
	}
}

// checkUnmapped asserts the clusters a trimming zero covers whole hold no
// data any more (the disk's last cluster is whole when covered to the end).
func (z *zeroModel) checkUnmapped(op zeroOp) {
	img := z.img
	cs, size := img.clusterSize, img.Size()
	img.mu.Lock()
	defer img.mu.Unlock()
	for gc := (op.off + cs - 1) >> img.clusterBits; gc<<img.clusterBits < size; gc++ {
		if min((gc+1)<<img.clusterBits, size) > op.off+op.n {
			break
		}
		e, _, err := img.entryLocked(gc)
		if err != nil {
			z.t.Fatal(err)
		}
		if k := img.kindOf(e); k == kindNormal || k == kindCompressed {
			z.t.Fatalf("after %v: guest cluster %d still maps host data (entry %#x)", op, gc, e)
		}
	}
}

// finish checks the whole disk, closes the image, and has qemu-img check it
// and compare it with the model.
func (z *zeroModel) finish() {
	z.t.Helper()
	z.close()
	checkClean(z.t, z.path)
	raw := z.path + ".raw"
	if err := os.WriteFile(raw, z.model, 0o600); err != nil {
		z.t.Fatal(err)
	}
	if out, code := run(z.t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", z.path, raw); code != 0 {
		z.t.Fatalf("qemu-img compare with the model: exit %d: %s", code, out)
	}
}

// close checks the whole disk and closes the image.
func (z *zeroModel) close() {
	z.t.Helper()
	z.compare(0, int64(len(z.model)), zeroOp{kind: opReopen})
	if err := z.img.Close(); err != nil {
		z.t.Fatal(err)
	}
	z.img = nil
}

// randomZeroOp picks an operation, its ranges biased to cluster boundaries
// and the disk end, where the rounding goes wrong.
func randomZeroOp(r *rand.Rand, size, cs int64) zeroOp {
	op := zeroOp{fill: byte(r.Intn(256))}
	switch x := r.Intn(100); {
	case x < 30:
		op.kind = opWrite
	case x < 50:
		op.kind = opDiscard
	case x < 70:
		op.kind = opZeroTrim
	case x < 90:
		op.kind = opZeroNoHole
	case x < 97:
		op.kind = opFlush
		return op
	default:
		op.kind = opReopen
		return op
	}
	point := func() int64 {
		var p int64
		switch r.Intn(5) {
		case 0: // anywhere
			p = r.Int63n(size + 1)
		case 1: // near a cluster boundary
			p = r.Int63n(size/cs+1)*cs + int64(r.Intn(5)-2)*512
		case 2: // near the end
			p = size - int64(r.Intn(4))*512 - int64(r.Intn(2))*cs
		case 3: // in the last cluster
			last := (size - 1) &^ (cs - 1)
			p = last + r.Int63n(size-last+1)
		default: // any byte near a boundary
			p = r.Int63n(size/cs+1)*cs + int64(r.Intn(1025)-512)
		}
		return min(max(p, 0), size)
	}
	a, b := point(), point()
	if r.Intn(8) == 0 {
		b = a // zero length
	}
	if r.Intn(6) == 0 {
		b = size // to the end
	}
	op.off, op.n = min(a, b), max(a, b)-min(a, b)
	if op.kind == opWrite && op.n > 4*cs {
		op.n = 4 * cs
	}
	return op
}

// randomDiskSize is a multiple of 512 that is not a multiple of cs (when cs
// is larger than 512), of 2 to 40 clusters.
func randomDiskSize(r *rand.Rand, cs int64) int64 {
	size := int64(2+r.Intn(39)) * cs
	if cs > 512 {
		size += int64(1+r.Intn(int(cs/512-1))) * 512
	}
	return size
}

func runZeroModel(t *testing.T, seed int64) {
	r := rand.New(rand.NewSource(seed))
	cs := []int64{512, 1 << 10, 4 << 10, 4 << 10, 64 << 10, 64 << 10}[r.Intn(6)]
	size := randomDiskSize(r, cs)
	var baseSize int64
	if r.Intn(2) == 0 {
		// A base smaller than, equal to or larger than the overlay.
		baseSize = max(512, size+int64(r.Intn(5)-2)*cs/2&^511)
	}
	z := newZeroModel(t, r, size, cs, baseSize)
	for i := 0; i < 60; i++ {
		z.apply(randomZeroOp(r, size, cs))
	}
	z.finish()
}

// Discard and WriteZeroes (both ways) change exactly the bytes asked for, on
// any size and alignment, with and without a backing file; the image stays
// clean by qemu-img's check and equal to the model by qemu-img compare.
func TestZeroingMatchesModel(t *testing.T) {
	needTool(t, "qemu-img")
	for seed := int64(1); seed <= 40; seed++ {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) { runZeroModel(t, seed) })
	}
}

// The same where the file system lacks FALLOC_FL_ZERO_RANGE, so no-hole
// zeroing of owned clusters writes zero buffers. Not parallel: it swaps a
// package variable.
func TestZeroingMatchesModelWithoutZeroRange(t *testing.T) {
	needTool(t, "qemu-img")
	saved := fallocZeroRange
	defer func() { fallocZeroRange = saved }()
	calls := 0
	fallocZeroRange = func(int, int64, int64) error { calls++; return unix.EOPNOTSUPP }
	for seed := int64(101); seed <= 110; seed++ {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) { runZeroModel(t, seed) })
	}
	if calls == 0 {
		t.Fatal("no operation zeroed an owned cluster in place; the fallback went untested")
	}
}

// A no-hole WriteZeroes of a written cluster keeps it allocated as data
// (qemu-img map), and a trimming one unmaps it.
func TestWriteZeroesAllocation(t *testing.T) {
	const cs = 64 << 10
	z := newZeroModel(t, rand.New(rand.NewSource(1)), 1<<20+512, cs, 0)
	for _, op := range []zeroOp{
		{kind: opWrite, off: 0, n: 1 << 20, fill: 7},
		{kind: opWrite, off: 1 << 20, n: 512, fill: 8},
		{kind: opFlush},
		{kind: opZeroNoHole, off: 0, n: 4 * cs},
		{kind: opZeroTrim, off: 8 * cs, n: 4 * cs},
		{kind: opZeroNoHole, off: 1 << 20, n: 512}, // the last cluster, whole to the end
	} {
		z.apply(op)
	}
	z.finish()
	var mapped []struct {
		Start, Length int64
		Data          bool
	}
	if err := json.Unmarshal([]byte(mustRun(t, "qemu-img", "map", "--output=json", z.path)), &mapped); err != nil {
		t.Fatal(err)
	}
	for _, e := range mapped {
		over := func(lo, hi int64) bool { return e.Start < hi && e.Start+e.Length > lo }
		switch {
		case (over(0, 4*cs) || over(1<<20, 1<<20+512)) && !e.Data:
			t.Errorf("no-hole zeroing unmapped %+v", e)
		case over(8*cs, 12*cs) && e.Data:
			t.Errorf("trimming zeroing left %+v mapped", e)
		}
	}
}

// FuzzZeroing runs the model on operation sequences the fuzzer makes (no
// qemu-img, for speed). data[0]: cluster size and backing file; data[1:3]:
// disk size; then 5 bytes an operation.
func FuzzZeroing(f *testing.F) {
	f.Add([]byte{0x01, 3, 1, 0, 0, 0, 0x30, 0x00, 1, 0x11, 0x50, 0x00, 0x10, 0x00})
	f.Add([]byte{0x82, 5, 7, 0, 0, 0, 0xff, 0xff, 3, 0x2c, 0x00, 0xff, 0xff, 4, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 3 || len(data) > 3+5*64 {
			return
		}
		cs := int64(512) << (data[0] & 3)
		size := int64(1+data[1]%16)*cs + int64(data[2])%(cs/512)*512
		var baseSize int64
		if data[0]&0x80 != 0 {
			baseSize = size - cs/2&^511 + int64(data[0]>>2&3)*512
		}
		z := newZeroModel(t, rand.New(rand.NewSource(int64(data[1]))), size, cs, baseSize)
		for b := data[3:]; len(b) >= 5; b = b[5:] {
			op := zeroOp{kind: zeroOpKind(b[0] % uint8(numZeroOps)), fill: b[0]}
			op.off = int64(b[1])<<8 | int64(b[2])
			op.off = min(op.off, size)
			op.n = min(int64(b[3])<<8|int64(b[4]), size-op.off)
			z.apply(op)
		}
		z.close()
	})
}
