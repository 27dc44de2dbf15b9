package qcow2

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The crash test runs a write workload in a child process (this test binary,
// re-executed with crashChildEnv set), kills it with SIGKILL at a random point
// and checks what a crash may and may not do to the image.
//
// Protocol on the child's stdout, one line per event, written unbuffered:
//
//	S g i            writer g is starting its operation i
//	D g i            writer g's operation i returned (was acknowledged)
//	F c0 c1 ... cN   a Flush succeeded; writer g had completed c_g operations
//	                 before that Flush began
//
// Every writer owns its own byte range of the disk (ranges share clusters at
// their edges) and draws its operations from its own seeded generator, so the
// parent can replay them. Read without the intent log (read-only, or by
// qemu), operations [c_g, last started] of writer g may or may not have
// reached the image; the bytes they touch are not checked. Opened for
// writing on the same boot, the image replays its intent log, and then every
// acknowledged operation must be there.
const (
	crashChildEnv = "QCOW2_CRASH_CHILD"
	crashSeedEnv  = "QCOW2_CRASH_SEED"
	crashCSEnv    = "QCOW2_CRASH_CLUSTER"

	crashWriters  = 4
	crashRegion   = 6<<20 + 12345 // deliberately not cluster aligned
	crashDiskSize = 32 << 20
	crashMaxOp    = 96 << 10
)

// crashOp is one operation of one writer: a write of deterministic data or a
// discard, relative to the writer's region.
type crashOp struct {
	discard bool
	off, n  int64
	seed    int64
}

// crashOps generates writer g's operations for seed, in order.
type crashOps struct{ r *rand.Rand }

func newCrashOps(seed int64, g int) *crashOps {
	return &crashOps{r: rand.New(rand.NewSource(seed*1000 + int64(g)))}
}

func (c *crashOps) next() crashOp {
	var op crashOp
	op.discard = c.r.Intn(10) == 0
	if c.r.Intn(3) == 0 {
		op.n = 1 + c.r.Int63n(crashMaxOp) // any size, any alignment
	} else {
		op.n = int64(1+c.r.Intn(8)) * 4096 // block-sized
	}
	op.off = c.r.Int63n(crashRegion - op.n + 1)
	if op.n%4096 == 0 {
		op.off &^= 4095
	}
	op.seed = c.r.Int63()
	return op
}

func (op crashOp) data() []byte {
	p := make([]byte, op.n)
	rand.New(rand.NewSource(op.seed)).Read(p)
	return p
}

func regionBase(g int) int64 { return int64(g) * crashRegion }

// TestCrashChild is the child's workload; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashChildEnv)
	if path == "" {
		t.Skip("only runs as the child of TestCrashSafety")
	}
	seed, _ := strconv.ParseInt(os.Getenv(crashSeedEnv), 10, 64)
	// A small L2 cache makes evictions write metadata back mid-workload.
	img, err := Open(path, &OpenOptions{L2CacheTables: 3})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(2)
	}
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		if _, err := fmt.Fprintf(os.Stdout, format+"\n", args...); err != nil {
			os.Exit(2)
		}
	}
	var completed [crashWriters]atomic.Int64
	flush := func() {
		var counts [crashWriters]int64
		for g := range counts {
			counts[g] = completed[g].Load()
		}
		if err := img.Flush(); err != nil {
			fmt.Fprintln(os.Stderr, "child flush:", err)
			os.Exit(2)
		}
		s := make([]string, len(counts))
		for g, c := range counts {
			s[g] = strconv.FormatInt(c, 10)
		}
		say("F %s", strings.Join(s, " "))
	}
	deadline := time.Now().Add(30 * time.Second) // the parent kills us long before
	var wg sync.WaitGroup
	for g := 0; g < crashWriters; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ops := newCrashOps(seed, g)
			r := rand.New(rand.NewSource(seed + 77*int64(g)))
			for i := int64(0); time.Now().Before(deadline); i++ {
				op := ops.next()
				say("S %d %d", g, i)
				var err error
				if op.discard {
					err = img.Discard(regionBase(g)+op.off, op.n)
				} else {
					_, err = img.WriteAt(op.data(), regionBase(g)+op.off)
				}
				if err != nil {
					fmt.Fprintf(os.Stderr, "child writer %d op %d: %v\n", g, i, err)
					os.Exit(2)
				}
				completed[g].Store(i + 1)
				say("D %d %d", g, i)
				if r.Intn(40) == 0 {
					flush()
				}
			}
		}()
	}
	go func() {
		for time.Now().Before(deadline) {
			time.Sleep(time.Duration(rand.Intn(5)) * time.Millisecond)
			flush()
		}
	}()
	wg.Wait()
	os.Exit(0)
}

func TestCrashSafety(t *testing.T) {
	if os.Getenv(crashChildEnv) != "" {
		t.Skip("in the child")
	}
	needTool(t, "qemu-img")
	if testing.Short() {
		t.Skip("spawns processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now().UnixNano()
	clusterSizes := []int64{4 << 10, 64 << 10, 512}
	for round, cs := range clusterSizes {
		seed := base + int64(round)
		t.Run(fmt.Sprintf("round%d-cs%d", round, cs), func(t *testing.T) {
			crashRound(t, exe, seed, cs)
		})
	}
}

func crashRound(t *testing.T, exe string, seed, cs int64) {
	t.Logf("seed %d", seed)
	dir := t.TempDir()
	path := filepath.Join(dir, "crash.qcow2")
	img, err := Create(path, crashDiskSize, &CreateOptions{ClusterSize: cs})
	if err != nil {
		t.Fatal(err)
	}
	// Some data from before the workload, written and closed cleanly.
	pre := make([]byte, crashDiskSize)
	rand.New(rand.NewSource(seed)).Read(pre[:4<<20])
	if _, err := img.WriteAt(pre[:4<<20], 0); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(exe, "-test.run", "^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path, crashSeedEnv+"="+strconv.FormatInt(seed, 10))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	flushed := make(chan struct{})
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		seen := false
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if !seen && strings.HasPrefix(sc.Text(), "F ") {
				seen = true
				close(flushed)
			}
		}
	}()
	select {
	case <-flushed:
	case <-readDone:
		cmd.Wait()
		t.Fatalf("child ended before its first flush: %s", stderr.String())
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("no flush reported in 20s: %s", stderr.String())
	}
	kr := rand.New(rand.NewSource(seed ^ 0x5eed))
	time.Sleep(time.Duration(50+kr.Intn(550)) * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-readDone
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("child was not killed (%v): %s", err, stderr.String())
	}
	if strings.Contains(stderr.String(), "DATA RACE") || strings.Contains(stderr.String(), "panic") {
		t.Fatalf("child failed:\n%s", stderr.String())
	}

	// Parse what the child reported.
	var flushedN, doneN, started [crashWriters]int64
	for g := range started {
		started[g] = -1
	}
	nFlush := 0
	for _, l := range lines {
		f := strings.Fields(l)
		switch {
		case len(f) == 3 && f[0] == "S":
			g, _ := strconv.Atoi(f[1])
			i, _ := strconv.ParseInt(f[2], 10, 64)
			started[g] = max(started[g], i)
		case len(f) == 3 && f[0] == "D":
			g, _ := strconv.Atoi(f[1])
			i, _ := strconv.ParseInt(f[2], 10, 64)
			doneN[g] = max(doneN[g], i+1)
		case len(f) == crashWriters+1 && f[0] == "F":
			nFlush++
			for g := range flushedN {
				c, _ := strconv.ParseInt(f[g+1], 10, 64)
				flushedN[g] = max(flushedN[g], c)
			}
		}
	}
	t.Logf("killed after %d flushes; ops flushed %v, acknowledged %v, last started %v", nFlush, flushedN, doneN, started)

	// Expected contents when every operation before sure[g] is in, and
	// which bytes are uncertain.
	model := func(sure [crashWriters]int64) (want []byte, unsure []bool) {
		want = bytes.Clone(pre)
		unsure = make([]bool, crashDiskSize)
		for g := 0; g < crashWriters; g++ {
			ops := newCrashOps(seed, g)
			b := regionBase(g)
			for i := int64(0); i <= started[g]; i++ {
				op := ops.next()
				if i >= sure[g] {
					for j := b + op.off; j < b+op.off+op.n; j++ {
						unsure[j] = true
					}
					continue
				}
				if op.discard {
					clear(want[b+op.off : b+op.off+op.n])
				} else {
					copy(want[b+op.off:], op.data())
				}
			}
		}
		return want, unsure
	}
	want, unsure := model(flushedN)

	out, code := run(t, "qemu-img", "check", "-f", "qcow2", path)
	if code != 0 && code != 3 {
		t.Fatalf("qemu-img check after the crash: exit %d (0 or 3 = leaks expected):\n%s", code, out)
	}
	t.Logf("qemu-img check after crash: exit %d", code)

	check := func(what string, got []byte) {
		t.Helper()
		bad := 0
		for blk := 0; blk < len(want); blk += 4096 {
			if bytes.Equal(got[blk:blk+4096], want[blk:blk+4096]) {
				continue
			}
			for j := blk; j < blk+4096; j++ {
				if !unsure[j] && got[j] != want[j] {
					if bad < 5 {
						t.Errorf("%s: byte %d (writer %d) = %#x, want %#x", what, j, int64(j)/crashRegion, got[j], want[j])
					}
					bad++
				}
			}
		}
		if bad > 0 {
			t.Fatalf("%s: %d bytes differ from the flushed writes", what, bad)
		}
	}
	readAll := func(opts *OpenOptions) []byte {
		t.Helper()
		img, err := Open(path, opts)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, crashDiskSize)
		if _, err := img.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		return got
	}
	check("netvol read-only after crash", readAll(&OpenOptions{ReadOnly: true}))
	want, unsure = model(doneN)
	check("netvol read-write (repair, intent log replayed) after crash", readAll(nil))
	checkClean(t, path)
	rawPath := filepath.Join(dir, "crash.raw")
	mustRun(t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", path, rawPath)
	got, err := os.ReadFile(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(got)) != crashDiskSize {
		t.Fatalf("converted raw is %d bytes", len(got))
	}
	check("qemu-img convert after repair", got)
}
