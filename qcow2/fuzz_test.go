package qcow2

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// fuzzSeeds makes small valid images: written by this package (several
// cluster sizes, with writes, a discard and a growth) and, when qemu-img is
// available, compressed with zlib and zstd.
func fuzzSeeds(f *testing.F) [][]byte {
	dir := f.TempDir()
	var seeds [][]byte
	add := func(path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	r := rand.New(rand.NewSource(1))
	for i, cs := range []int64{512, 1024, 4096} {
		path := filepath.Join(dir, "seed"+string(rune('a'+i))+".qcow2")
		img, err := Create(path, 1<<20, &CreateOptions{ClusterSize: cs})
		if err != nil {
			f.Fatal(err)
		}
		for j := 0; j < 6; j++ {
			p := make([]byte, 1+r.Intn(3000))
			r.Read(p)
			if _, err := img.WriteAt(p, r.Int63n(1<<20-int64(len(p)))); err != nil {
				f.Fatal(err)
			}
		}
		if err := img.Discard(0, 2*cs); err != nil {
			f.Fatal(err)
		}
		if i == 2 {
			if err := img.Resize(3 << 20); err != nil {
				f.Fatal(err)
			}
		}
		if err := img.Close(); err != nil {
			f.Fatal(err)
		}
		add(path)
	}
	if _, err := exec.LookPath("qemu-img"); err == nil {
		raw := filepath.Join(dir, "seed.raw")
		data := make([]byte, 64<<10)
		r.Read(data[:2048])
		copy(data[20<<10:], bytes.Repeat([]byte("compressible "), 2000))
		if err := os.WriteFile(raw, data, 0o600); err != nil {
			f.Fatal(err)
		}
		for _, ct := range []string{"zlib", "zstd"} {
			out := filepath.Join(dir, "seed-"+ct+".qcow2")
			cmd := exec.Command("qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2",
				"-o", "cluster_size=4096,compression_type="+ct, raw, out)
			if b, err := cmd.CombinedOutput(); err != nil {
				f.Logf("qemu-img convert -c (%s): %v: %s", ct, err, b)
				continue
			}
			add(out)
		}
		// A version 2 image with a raw backing file name (which will not
		// resolve in the fuzzer's directory).
		v2 := filepath.Join(dir, "seed-v2.qcow2")
		cmd := exec.Command("qemu-img", "create", "-q", "-u", "-f", "qcow2", "-o", "compat=0.10,cluster_size=512",
			"-b", "missing.raw", "-F", "raw", v2, "64K")
		if b, err := cmd.CombinedOutput(); err == nil {
			add(v2)
		} else {
			f.Logf("qemu-img create v2: %v: %s", err, b)
		}
	}
	return seeds
}

var fuzzDir string

// FuzzOpen opens mutated images read-only and reads them whole, then opens
// them read-write (which repairs a dirty image), writes and closes. Errors are
// fine; panics, hangs and unbounded allocations are not.
func FuzzOpen(f *testing.F) {
	// Inputs go to tmpfs when there is one: a writable Open syncs the file.
	fuzzDir = os.TempDir()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "qcow2fuzz"); err == nil {
			fuzzDir = d
			f.Cleanup(func() { os.RemoveAll(d) })
		}
	}
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The fuzzer does not notice hangs; crash (saving the input) instead.
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				buf := make([]byte, 1<<20)
				panic("FuzzOpen input took over 10s:\n" + string(buf[:runtime.Stack(buf, true)]))
			}
		}()
		fw, err := os.CreateTemp(fuzzDir, "fuzz-*.qcow2")
		if err != nil {
			t.Fatal(err)
		}
		path := fw.Name()
		defer os.Remove(path)
		_, err = fw.Write(data)
		if cerr := fw.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		img, err := Open(path, &OpenOptions{ReadOnly: true})
		if err != nil {
			return
		}
		fuzzRead(img)
		if err := img.Close(); err != nil {
			t.Fatalf("Close of a read-only image: %v", err)
		}

		img, err = Open(path, &OpenOptions{L2CacheTables: 2})
		if err != nil {
			return
		}
		if img.Size() > 0 {
			p := bytes.Repeat([]byte{0x5a}, int(min(img.Size(), 3000)))
			if _, err := img.WriteAt(p, img.Size()/2-int64(len(p))/2); err == nil {
				img.Flush()
			}
			_ = img.Discard(0, min(img.Size(), 8<<10))
		}
		fuzzRead(img)
		img.Close()
	})
}

// fuzzRead reads the whole disk, or its first and last MiB when it is large.
func fuzzRead(img *Image) {
	const chunk = 1 << 20
	size := img.Size()
	buf := make([]byte, chunk)
	read := func(off int64) bool {
		_, err := img.ReadAt(buf, off)
		return err == nil || errors.Is(err, io.EOF)
	}
	if size > 64<<20 {
		read(0)
		read(size - chunk)
		return
	}
	for off := int64(0); off < size; off += chunk {
		if !read(off) {
			return
		}
	}
}
