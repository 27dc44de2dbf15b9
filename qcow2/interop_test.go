package qcow2

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// mirror applies the same writes to an image and a raw file.
type mirror struct {
	img *Image
	raw *os.File
}

func newMirror(t *testing.T, size int64, opts *CreateOptions) (*mirror, string, string) {
	t.Helper()
	dir := t.TempDir()
	path, rawPath := filepath.Join(dir, "img.qcow2"), filepath.Join(dir, "img.raw")
	img, err := Create(path, size, opts)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.Create(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Truncate(size); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return &mirror{img: img, raw: raw}, path, rawPath
}

func (m *mirror) write(t *testing.T, p []byte, off int64) {
	t.Helper()
	if _, err := m.img.WriteAt(p, off); err != nil {
		t.Fatalf("WriteAt(%d bytes at %d): %v", len(p), off, err)
	}
	if _, err := m.raw.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
}

func (m *mirror) discard(t *testing.T, off, n int64) {
	t.Helper()
	if err := m.img.Discard(off, n); err != nil {
		t.Fatalf("Discard(%d, %d): %v", off, n, err)
	}
	if _, err := m.raw.WriteAt(make([]byte, n), off); err != nil {
		t.Fatal(err)
	}
}

func randomData(r *rand.Rand, n int) []byte {
	p := make([]byte, n)
	r.Read(p)
	return p
}

func TestRandomWritesMatchQemu(t *testing.T) {
	for _, cs := range []int64{4 << 10, 64 << 10, 2 << 20} {
		t.Run(sizeName(cs), func(t *testing.T) {
			const size = 48 << 20
			m, path, rawPath := newMirror(t, size, &CreateOptions{ClusterSize: cs})
			r := rand.New(rand.NewSource(cs))
			for i := 0; i < 300; i++ {
				off := r.Int63n(size)
				n := min(int64(1+r.Intn(300<<10)), size-off)
				switch r.Intn(10) {
				case 0:
					m.discard(t, off, n)
				case 1:
					if err := m.img.Flush(); err != nil {
						t.Fatal(err)
					}
				default:
					m.write(t, randomData(r, int(n)), off)
				}
			}
			verifyReads(t, m, r, size)
			if err := m.img.Close(); err != nil {
				t.Fatal(err)
			}
			checkClean(t, path)
			compareRaw(t, path, rawPath)
		})
	}
}

// verifyReads reads random ranges back through the image and the raw file.
func verifyReads(t *testing.T, m *mirror, r *rand.Rand, size int64) {
	t.Helper()
	for i := 0; i < 200; i++ {
		off := r.Int63n(size)
		n := min(int64(1+r.Intn(256<<10)), size-off)
		got, want := make([]byte, n), make([]byte, n)
		if _, err := m.img.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		m.raw.ReadAt(want, off)
		if !bytes.Equal(got, want) {
			t.Fatalf("read of %d bytes at %d differs from the raw mirror", n, off)
		}
	}
}

func sizeName(n int64) string {
	if n >= 1<<20 {
		return strings.TrimSuffix(strings.TrimSuffix(string(rune('0'+n>>20)), "\x00"), "") + "M"
	}
	return string(rune('0'+n>>10/10)) + string(rune('0'+n>>10%10)) + "K"
}

func TestConcurrentWritersMatchQemu(t *testing.T) {
	const size = 64 << 20
	m, path, rawPath := newMirror(t, size, nil)
	var wg sync.WaitGroup
	const workers = 16
	region := int64(size / workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(w)))
			base := int64(w) * region
			for i := 0; i < 100; i++ {
				off := base + r.Int63n(region-64<<10)
				p := randomData(r, 1+r.Intn(64<<10))
				if _, err := m.img.WriteAt(p, off); err != nil {
					t.Error(err)
					return
				}
				m.raw.WriteAt(p, off)
				if i%25 == 0 {
					if err := m.img.Flush(); err != nil {
						t.Error(err)
					}
				}
			}
		}(w)
	}
	// Concurrent readers of the whole disk must never fail.
	for rd := 0; rd < 4; rd++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<20)
			for off := int64(0); off < size; off += int64(len(buf)) {
				if _, err := m.img.ReadAt(buf, off); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := m.img.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, path)
	compareRaw(t, path, rawPath)
}

// Concurrent writes into the same fresh clusters must all land.
func TestConcurrentWritesSameCluster(t *testing.T) {
	m, path, rawPath := newMirror(t, 1<<20, nil)
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p := bytes.Repeat([]byte{byte(i + 1)}, 4096)
			off := int64(i%16)*4096 + int64(i/16)*64<<10
			if _, err := m.img.WriteAt(p, off); err != nil {
				t.Error(err)
			}
			m.raw.WriteAt(p, off)
		}(i)
	}
	wg.Wait()
	if err := m.img.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, path)
	compareRaw(t, path, rawPath)
}

func TestQemuWritesNetvolReads(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "q.qcow2")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", path, "16M")
	mustRun(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0xab 100k 300k", "-c", "write -z 200k 64k", "-c", "write -P 0x11 15M 1M", path)
	img, err := Open(path, &OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	expect := func(off, n int64, b byte) {
		t.Helper()
		got := make([]byte, n)
		if _, err := img.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, bytes.Repeat([]byte{b}, int(n))) {
			t.Fatalf("at %d: want %#x", off, b)
		}
	}
	expect(0, 100<<10, 0)
	expect(100<<10, 100<<10, 0xab)
	expect(200<<10, 64<<10, 0)
	expect(264<<10, 136<<10, 0xab)
	expect(15<<20, 1<<20, 0x11)
}

func TestNetvolWritesQemuReads(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "n.qcow2")
	img, err := Create(path, 16<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	img.WriteAt(bytes.Repeat([]byte{0x5a}, 200<<10), 1000)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 1000 200k", "-c", "read -P 0 0 1000", path)
	checkClean(t, path)
}

func TestReadsQemuImageVariants(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "src.raw")
	r := rand.New(rand.NewSource(7))
	data := make([]byte, 8<<20)
	for off := 0; off < len(data); off += 256 << 10 {
		if r.Intn(3) > 0 { // leave some holes, make some compressible
			if r.Intn(2) == 0 {
				r.Read(data[off : off+100<<10])
			} else {
				copy(data[off:off+100<<10], bytes.Repeat([]byte("netvol "), 100<<10/7))
			}
		}
	}
	os.WriteFile(raw, data, 0o600)
	variants := map[string][]string{
		"v2":          {"-o", "compat=0.10"},
		"v3-4k":       {"-o", "cluster_size=4k"},
		"v3-2m":       {"-o", "cluster_size=2M"},
		"deflate":     {"-c"},
		"deflate-v2":  {"-c", "-o", "compat=0.10"},
		"zstd":        {"-c", "-o", "compression_type=zstd"},
		"deflate-512": {"-c", "-o", "cluster_size=512"},
	}
	for name, args := range variants {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name+".qcow2")
			mustRun(t, "qemu-img", append(append([]string{"convert", "-f", "raw", "-O", "qcow2"}, args...), raw, path)...)
			img, err := Open(path, &OpenOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			got := make([]byte, len(data))
			if _, err := img.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("contents differ from the source")
			}
		})
	}
}

func TestZeroClustersFromQemu(t *testing.T) {
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "4M")
	mustRun(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x77 0 4M", base)
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
	mustRun(t, "qemu-io", "-f", "qcow2", "-c", "write -z 1M 1M", top)
	img, err := Open(top, &OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	got := make([]byte, 4<<20)
	img.ReadAt(got, 0)
	want := bytes.Repeat([]byte{0x77}, 4<<20)
	clear(want[1<<20 : 2<<20])
	if !bytes.Equal(got, want) {
		t.Fatal("zero clusters over a backing file did not read as zeros")
	}
}

func TestBackingChainDeep(t *testing.T) {
	dir := t.TempDir()
	// raw base shorter than the chain, then three qcow2 levels, each writing.
	base := filepath.Join(dir, "base.raw")
	os.WriteFile(base, bytes.Repeat([]byte{1}, 1<<20), 0o600)
	want := make([]byte, 8<<20)
	copy(want, bytes.Repeat([]byte{1}, 1<<20))
	prev, prevFmt := base, "raw"
	for i := 0; i < 3; i++ {
		p := filepath.Join(dir, "l"+string(rune('0'+i))+".qcow2")
		mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", filepath.Base(prev), "-F", prevFmt, p, "8M")
		off := int64(i+1) << 20
		mustRun(t, "qemu-io", "-f", "qcow2", "-c", "write -P "+string(rune('2'+i))+" "+itoa(off)+" 512k", p)
		copy(want[off:off+512<<10], bytes.Repeat([]byte{byte(2 + i)}, 512<<10))
		prev, prevFmt = p, "qcow2"
	}
	img, err := Open(prev, &OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8<<20)
	img.ReadAt(got, 0)
	img.Close()
	if !bytes.Equal(got, want) {
		t.Fatal("backing chain read differs")
	}
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestLinkedCloneCopyOnWrite(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "template.qcow2")
	tpl, err := Create(base, 8<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	tpl.WriteAt(bytes.Repeat([]byte{0xee}, 8<<20), 0)
	if err := tpl.Close(); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(base)
	clone := filepath.Join(dir, "clone.qcow2")
	img, err := Create(clone, 0, &CreateOptions{BackingFile: "template.qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	if img.Size() != 8<<20 {
		t.Fatalf("clone size %d, want the template's", img.Size())
	}
	img.WriteAt([]byte("hello"), 70000) // partial cluster: copy-on-write
	if err := img.Discard(1<<20, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(base)
	if !bytes.Equal(before, after) {
		t.Fatal("the backing file was modified")
	}
	out := mustRun(t, "qemu-img", "info", "--backing-chain", clone)
	if !strings.Contains(out, "template.qcow2") {
		t.Fatalf("qemu-img info does not show the backing file:\n%s", out)
	}
	checkClean(t, clone)
	mustRun(t, "qemu-io", "-f", "qcow2", "-c", "read -P 0xee 65536 4464", "-c", "read -P 0xee 70005 60000",
		"-c", "read -P 0 1M 1M", "-c", "read -P 0xee 2M 6M", clone)
	got := mustRun(t, "qemu-io", "-f", "qcow2", "-c", "read -v 70000 5", clone)
	if !strings.Contains(got, "hello") {
		t.Fatalf("written bytes missing:\n%s", got)
	}
}

func TestDiscardFreesClusters(t *testing.T) {
	m, path, rawPath := newMirror(t, 16<<20, nil)
	m.write(t, bytes.Repeat([]byte{9}, 16<<20), 0)
	if err := m.img.Flush(); err != nil {
		t.Fatal(err)
	}
	full, _ := m.img.Allocated()
	m.discard(t, 4<<20, 8<<20)
	m.discard(t, 100, 1000) // partial: zeros written
	if err := m.img.Flush(); err != nil {
		t.Fatal(err)
	}
	after, _ := m.img.Allocated()
	if after > full-7<<20 {
		t.Fatalf("allocated %d after discarding 8 MiB of %d", after, full)
	}
	if err := m.img.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, path)
	compareRaw(t, path, rawPath)
	var mapped []struct {
		Start, Length int64
		Data, Zero    bool
	}
	json.Unmarshal([]byte(mustRun(t, "qemu-img", "map", "--output=json", path)), &mapped)
	for _, e := range mapped {
		if e.Start < 12<<20 && e.Start+e.Length > 4<<20 && e.Data {
			t.Fatalf("discarded range still mapped: %+v", e)
		}
	}
}

func TestResizeGrows(t *testing.T) {
	m, path, rawPath := newMirror(t, 1<<20, &CreateOptions{ClusterSize: 4096})
	m.write(t, bytes.Repeat([]byte{3}, 1<<20), 0)
	// 4 KiB clusters map 2 MiB per L2 table, 1 MiB per L1 cluster entry set:
	// growing to 3 GiB moves the L1 table.
	for _, size := range []int64{2 << 20, 3 << 30} {
		if err := m.img.Resize(size); err != nil {
			t.Fatal(err)
		}
		m.raw.Truncate(size)
	}
	if err := m.img.Resize(1 << 20); err == nil {
		t.Fatal("shrink was accepted")
	}
	m.write(t, bytes.Repeat([]byte{4}, 8192), 3<<30-8192)
	if err := m.img.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, path)
	compareRaw(t, path, rawPath)
	img, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.Size() != 3<<30 {
		t.Fatalf("size after reopen %d", img.Size())
	}
	img.Close()
}

func TestManyClustersGrowRefcountTable(t *testing.T) {
	// 512-byte clusters: a refcount block covers 128 KiB, the table one
	// cluster 64 blocks, so writing 16 MiB forces the table to move.
	m, path, rawPath := newMirror(t, 16<<20, &CreateOptions{ClusterSize: 512})
	m.img.Resize(64 << 20)
	m.raw.Truncate(64 << 20)
	r := rand.New(rand.NewSource(1))
	for off := int64(0); off < 40<<20; off += 1 << 20 {
		m.write(t, randomData(r, 1<<20), off)
	}
	if err := m.img.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, path)
	compareRaw(t, path, rawPath)
}
