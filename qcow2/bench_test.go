package qcow2

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// Benchmarks of the image library on the workloads of qemu-img bench, so
// bench/qcow2-vs-qemu.sh can run both on the same requests:
//
//	go test ./qcow2 -run '^$' -bench . -benchtime 2s
//
// A workload sends requests of size bytes; request i (from 0) goes to guest
// offset (i*step) mod region, as qemu-img bench's -s, -S and -o 0 do on an
// image of region bytes. g goroutines take the next request as soon as one
// ends, like qemu-img bench's -d. Opening the image and the Close (with its
// flush) at the end are not timed; qemu-img bench times neither. Images live
// in TMPDIR, which must be a disk file system (not tmpfs).

// benchWorkload is one request pattern.
type benchWorkload struct {
	size, step int64
	write      bool
	// prefill: the requests go to a region of benchRegion bytes written
	// beforehand; else to a fresh image of b.N*step bytes (each request to
	// data never written, for 4 KiB steps of 64 KiB a fresh cluster).
	prefill bool
}

const (
	benchRegion = 256 << 20
	// benchScatter spreads requests over the region: an odd number of 4 KiB
	// blocks, so (i*step) mod region visits every block of a power-of-two
	// region once per pass, in an order without locality.
	benchScatter = 40503 * 4096
	benchPattern = 0xa5 // qemu-img bench --pattern=165
)

var benchGoroutines = []int{1, 4, 16}

func BenchmarkWrite1MSeq(b *testing.B) {
	runWorkload(b, benchWorkload{size: 1 << 20, step: 1 << 20, write: true})
}

func BenchmarkRead1MSeq(b *testing.B) {
	runWorkload(b, benchWorkload{size: 1 << 20, step: 1 << 20, prefill: true})
}

func BenchmarkWrite4KFresh(b *testing.B) {
	runWorkload(b, benchWorkload{size: 4096, step: defaultClusterSize, write: true})
}

func BenchmarkWrite4KOverwrite(b *testing.B) {
	runWorkload(b, benchWorkload{size: 4096, step: benchScatter, write: true, prefill: true})
}

func BenchmarkRead4KRandom(b *testing.B) {
	runWorkload(b, benchWorkload{size: 4096, step: benchScatter, prefill: true})
}

// runWorkload runs w at every goroutine count. A prefilled image is made
// once and shared by the counts.
func runWorkload(b *testing.B, w benchWorkload) {
	dir := benchDir(b)
	var prefilled string
	if w.prefill {
		prefilled = filepath.Join(dir, "prefilled.qcow2")
		prefillImage(b, prefilled, benchRegion)
	}
	for _, g := range benchGoroutines {
		b.Run(fmt.Sprintf("g=%d", g), func(b *testing.B) {
			var img *Image
			var region int64
			var err error
			if w.prefill {
				img, err = Open(prefilled, nil)
				region = benchRegion
			} else {
				region = int64(b.N) * w.step
				img, err = Create(filepath.Join(b.TempDir(), "fresh.qcow2"), region, nil)
			}
			if err != nil {
				b.Fatal(err)
			}
			runRequests(b, img, w, region, g)
			b.StopTimer()
			if err := img.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// runRequests sends b.N requests of w over region from g goroutines.
func runRequests(b *testing.B, img *Image, w benchWorkload, region int64, g int) {
	b.SetBytes(w.size)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range g {
		wg.Go(func() {
			buf := make([]byte, w.size)
			if w.write {
				for i := range buf {
					buf[i] = benchPattern
				}
			}
			for i := next.Add(1) - 1; i < int64(b.N); i = next.Add(1) - 1 {
				off := i * w.step % region
				var err error
				if w.write {
					_, err = img.WriteAt(buf, off)
				} else {
					_, err = img.ReadAt(buf, off)
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// prefillImage creates an image of size bytes, all written, and closes it.
func prefillImage(b *testing.B, path string, size int64) {
	img, err := Create(path, size, nil)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = benchPattern
	}
	for off := int64(0); off < size; off += int64(len(buf)) {
		if _, err := img.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := img.Close(); err != nil {
		b.Fatal(err)
	}
}

// benchDir is a temporary directory on a disk file system: on tmpfs there
// is no file system work to measure and fdatasync is free.
func benchDir(b *testing.B) string {
	dir := b.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		b.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		b.Fatalf("%s is on tmpfs; set TMPDIR to a directory on a disk file system", dir)
	}
	return dir
}

// Reads and writes of a volume with snapshots against one without: the
// same data, written the same way, once into one image and once spread
// over a chain of depth layers (a snapshot after every 1/depth of the
// writes), as the storage daemon's snapshots leave it. Reads go to random
// 4 KiB blocks of the region (most of them held by some layer below the
// top); writes go to random 4 KiB blocks the top already holds (the steady
// state: the first write to a cluster after a snapshot copies it once,
// see BenchmarkChainFirstWrite4K). Compare depth=0 with depth=20:
//
//	go test ./qcow2 -run '^$' -bench 'Chain' -count 5
func BenchmarkChainRead4K(b *testing.B) {
	for _, depth := range []int{0, 20} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			img := benchChain(b, depth, false)
			benchRandom(b, img, false)
		})
	}
}

func BenchmarkChainWrite4K(b *testing.B) {
	for _, depth := range []int{0, 20} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			img := benchChain(b, depth, true)
			benchRandom(b, img, true)
		})
	}
}

// BenchmarkChainFirstWrite4K is the one-time cost of the first write to a
// cluster after a snapshot: it copies the cluster up from its layer.
func BenchmarkChainFirstWrite4K(b *testing.B) {
	for _, depth := range []int{0, 20} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			img := benchChain(b, depth, false)
			p := bytes.Repeat([]byte{1}, 4096)
			clusters := int64(chainRegion / defaultClusterSize)
			b.ResetTimer()
			for i := range b.N {
				gc := (int64(i) * 40503) % clusters
				if i > 0 && int64(i)%clusters == 0 {
					b.StopTimer()
					img = benchChain(b, depth, false)
					b.StartTimer()
				}
				if _, err := img.WriteAt(p, gc*defaultClusterSize+4096); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

const chainRegion = 64 << 20

// benchChain writes chainRegion bytes in 64 KiB pieces, freezing a layer
// after every 1/depth of them; touchTop rewrites the region's first 4 KiB
// of every cluster in the top at the end.
func benchChain(b *testing.B, depth int, touchTop bool) *Image {
	b.Helper()
	dir := b.TempDir()
	path := filepath.Join(dir, "l0.qcow2")
	img, err := Create(path, chainRegion, nil)
	if err != nil {
		b.Fatal(err)
	}
	clusters := int64(chainRegion / defaultClusterSize)
	p := bytes.Repeat([]byte{benchPattern}, defaultClusterSize)
	for i := range clusters {
		gc := (i * 40503) % clusters
		if depth > 0 && i > 0 && i%(clusters/int64(depth)) == 0 && len(img.Chain()) <= depth {
			if err := img.Close(); err != nil {
				b.Fatal(err)
			}
			next := filepath.Join(dir, fmt.Sprintf("l%d.qcow2", len(img.Chain())))
			if img, err = Create(next, 0, &CreateOptions{BackingFile: filepath.Base(path)}); err != nil {
				b.Fatal(err)
			}
			path = next
		}
		if _, err := img.WriteAt(p, gc*defaultClusterSize); err != nil {
			b.Fatal(err)
		}
	}
	if touchTop {
		for gc := range clusters {
			if _, err := img.WriteAt(p[:4096], gc*defaultClusterSize); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := img.Flush(); err != nil {
		b.Fatal(err)
	}
	if got := len(img.Chain()) - 1; got != depth {
		b.Fatalf("chain of %d layers, want %d", got, depth)
	}
	b.Cleanup(func() { img.Close() })
	return img
}

func benchRandom(b *testing.B, img *Image, write bool) {
	p := make([]byte, 4096)
	blocks := int64(chainRegion / 4096)
	b.SetBytes(4096)
	b.ResetTimer()
	for i := range b.N {
		off := ((int64(i) * 40503) % blocks) * 4096
		var err error
		if write {
			_, err = img.WriteAt(p, off)
		} else {
			_, err = img.ReadAt(p, off)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}
