package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// test is one measurement on a mounted file system; run returns its
// figure (MB/s or operations per second).
type test struct {
	name string
	unit string
	run  func(dir string) (float64, error)
}

const (
	mib       = 1 << 20
	smallSize = 4096
	seqName   = "seq.dat"
)

// tests: sequential 1 MiB writes (with the closing fsync) and reads, 4 KiB
// random writes (with the closing fsync) and reads with qd requests in
// flight, all O_DIRECT; and 4 KiB write+fdatasync pairs one at a time (a
// database's commits), the latency of the whole flush chain.
func tests(c config) []test {
	size := int64(c.fileMiB) * mib
	return []test{
		{"seq write 1MiB +fsync", "MB/s", func(dir string) (float64, error) { return seqWrite(dir, size) }},
		{"seq read 1MiB", "MB/s", func(dir string) (float64, error) { return seqRead(dir, size) }},
		{fmt.Sprintf("rand write 4KiB qd%d +fsync", c.qd), "IOPS", func(dir string) (float64, error) {
			return randIO(dir, size, c.qd, c.randOps, true)
		}},
		{fmt.Sprintf("rand read 4KiB qd%d", c.qd), "IOPS", func(dir string) (float64, error) {
			return randIO(dir, size, c.qd, c.randOps, false)
		}},
		{"write 4KiB+fdatasync qd1", "ops/s", func(dir string) (float64, error) { return syncWrites(dir, c.fsyncOps) }},
	}
}

// alignedBuf is a buffer O_DIRECT accepts (page aligned).
func alignedBuf(n int) ([]byte, error) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, err
	}
	for i := range b {
		b[i] = byte(i*7 + 1) // not zeroes: no layer may skip them
	}
	return b, nil
}

func seqWrite(dir string, size int64) (float64, error) {
	buf, err := alignedBuf(mib)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(buf)
	f, err := os.OpenFile(filepath.Join(dir, seqName), os.O_CREATE|os.O_WRONLY|unix.O_DIRECT, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	start := time.Now()
	for off := int64(0); off < size; off += mib {
		if _, err := f.WriteAt(buf, off); err != nil {
			return 0, err
		}
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return float64(size) / 1e6 / time.Since(start).Seconds(), nil
}

func seqRead(dir string, size int64) (float64, error) {
	buf, err := alignedBuf(mib)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(buf)
	f, err := os.OpenFile(filepath.Join(dir, seqName), os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	start := time.Now()
	for off := int64(0); off < size; off += mib {
		if _, err := f.ReadAt(buf, off); err != nil {
			return 0, err
		}
	}
	return float64(size) / 1e6 / time.Since(start).Seconds(), nil
}

// randIO does ops 4 KiB requests at random offsets of the sequential
// test's file from qd goroutines; writes end with an fsync.
func randIO(dir string, size int64, qd, ops int, write bool) (float64, error) {
	flags := os.O_RDONLY
	if write {
		flags = os.O_WRONLY
	}
	f, err := os.OpenFile(filepath.Join(dir, seqName), flags|unix.O_DIRECT, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, qd)
	for w := range qd {
		wg.Go(func() { errs <- randWorker(f, size, ops/qd, write, uint64(w)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return 0, err
		}
	}
	if write {
		if err := f.Sync(); err != nil {
			return 0, err
		}
	}
	return float64(ops/qd*qd) / time.Since(start).Seconds(), nil
}

func randWorker(f *os.File, size int64, n int, write bool, seed uint64) error {
	buf, err := alignedBuf(smallSize)
	if err != nil {
		return err
	}
	defer unix.Munmap(buf)
	rng := rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
	blocks := size / smallSize
	for range n {
		off := rng.Int64N(blocks) * smallSize
		if write {
			_, err = f.WriteAt(buf, off)
		} else {
			_, err = f.ReadAt(buf, off)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// syncWrites appends 4 KiB and fdatasyncs, n times, one at a time.
func syncWrites(dir string, n int) (float64, error) {
	f, err := os.OpenFile(filepath.Join(dir, "sync.dat"), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, smallSize)
	start := time.Now()
	for i := range n {
		if _, err := f.WriteAt(buf, int64(i)*smallSize); err != nil {
			return 0, err
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
