package nbd

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Benchmarks: our client over a unix socket against our server (in-memory
// and file backends) and against qemu-nbd on the same kind of file, so the
// two servers can be compared with one client:
//
//	go test ./nbd -run '^$' -bench . -benchtime 2s

const benchSize = 256 << 20

// benchDepth runs b.N operations of size bytes from depth goroutines.
func benchDepth(b *testing.B, c *Client, size, depth int, write, sequential bool) {
	b.SetBytes(int64(size))
	blocks := int64(benchSize / size)
	var next atomic.Int64
	var wg sync.WaitGroup
	ctx := context.Background()
	b.ResetTimer()
	for w := range depth {
		wg.Go(func() {
			buf := pattern(size, byte(w))
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				blk := rng.Int64N(blocks)
				if sequential {
					blk = i % blocks
				}
				var err error
				if write {
					err = c.Write(ctx, buf, blk*int64(size), 0)
				} else {
					err = c.Read(ctx, buf, blk*int64(size))
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

func benchSuite(b *testing.B, c *Client) {
	b.Run("read-4k-qd32", func(b *testing.B) { benchDepth(b, c, 4096, 32, false, false) })
	b.Run("write-4k-qd32", func(b *testing.B) { benchDepth(b, c, 4096, 32, true, false) })
	b.Run("read-1m-seq", func(b *testing.B) { benchDepth(b, c, 1<<20, 1, false, true) })
	b.Run("write-1m-seq", func(b *testing.B) { benchDepth(b, c, 1<<20, 1, true, true) })
}

func BenchmarkServerMem(b *testing.B) {
	_, _, addr := memServer(b, benchSize, "unix")
	benchSuite(b, dial(b, "unix", addr, "disk"))
}

func BenchmarkServerFile(b *testing.B) {
	path := newFile(b, benchSize)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var exports ExportMap
	exports.Add(&Export{Name: "disk", Backend: &fileBackend{f: f, size: benchSize}})
	addr := serve(b, &Server{Exports: &exports}, "unix")
	benchSuite(b, dial(b, "unix", addr, "disk"))
}

func BenchmarkQemuNBDFile(b *testing.B) {
	qemuNBD := needTool(b, "qemu-nbd")
	path := newFile(b, benchSize)
	sock := filepath.Join(b.TempDir(), "q.sock")
	cmd := exec.Command(qemuNBD, "-f", "raw", "-x", "disk", "-t", "--cache=writeback", "--socket", sock, path)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := Dial(context.Background(), "unix", sock, ClientOptions{ExportName: "disk"})
		if err == nil {
			defer c.Close()
			benchSuite(b, c)
			return
		}
		if time.Now().After(deadline) {
			b.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestQemuImgBench compares our server with qemu-nbd using one client we did
// not write, qemu-img bench, on the same kind of file, over unix sockets and
// TCP. It runs only with NBD_BENCH=1 (it takes a while and measures, not
// checks):
//
//	NBD_BENCH=1 go test ./nbd -run TestQemuImgBench -v
func TestQemuImgBench(t *testing.T) {
	if os.Getenv("NBD_BENCH") != "1" {
		t.Skip("set NBD_BENCH=1 to run")
	}
	qemuImg, qemuNBD := needTool(t, "qemu-img"), needTool(t, "qemu-nbd")
	f, err := os.OpenFile(newFile(t, benchSize), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var exports ExportMap
	exports.Add(&Export{Name: "disk", Backend: &fileBackend{f: f, size: benchSize}})
	srv := &Server{Exports: &exports}
	urls := map[string]string{
		"netvol unix": nbdURL("unix", serve(t, srv, "unix"), "disk"),
		"netvol tcp":  nbdURL("tcp", serve(t, srv, "tcp"), "disk"),
	}
	sock, tcp := filepath.Join(t.TempDir(), "q.sock"), freePort(t)
	_, port, _ := net.SplitHostPort(tcp)
	for _, args := range [][]string{{"--socket", sock}, {"-b", "127.0.0.1", "-p", port}} {
		args = append([]string{"-f", "raw", "-x", "disk", "-t"}, append(args, newFile(t, benchSize))...)
		cmd := exec.Command(qemuNBD, args...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
	}
	time.Sleep(500 * time.Millisecond)
	urls["qemu-nbd unix"], urls["qemu-nbd tcp"] = nbdURL("unix", sock, "disk"), nbdURL("tcp", tcp, "disk")
	// qemu-nbd 7.2 over TCP stalls at depth 32 (Nagle and delayed ACK, a few
	// hundred requests a second), so it gets fewer requests there.
	for _, tc := range []struct {
		count, tcpQemuCount int
		size                int
		args                []string
	}{
		{50000, 2000, 4096, []string{"-d", "32", "-s", "4k"}},
		{50000, 2000, 4096, []string{"-d", "32", "-s", "4k", "-w"}},
		{2000, 2000, 1 << 20, []string{"-d", "1", "-s", "1M"}},
		{2000, 2000, 1 << 20, []string{"-d", "1", "-s", "1M", "-w"}},
	} {
		for _, name := range []string{"netvol unix", "qemu-nbd unix", "netvol tcp", "qemu-nbd tcp"} {
			count := tc.count
			if name == "qemu-nbd tcp" {
				count = tc.tcpQemuCount
			}
			args := append([]string{"bench", "-f", "raw", "-c", fmt.Sprint(count)}, tc.args...)
			start := time.Now()
			run(t, qemuImg, append(args, urls[name])...)
			secs := time.Since(start).Seconds()
			t.Logf("%-13s %v: %8.0f requests/s %7.1f MB/s", name, tc.args,
				float64(count)/secs, float64(count*tc.size)/secs/1e6)
		}
	}
}
