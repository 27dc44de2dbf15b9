//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/e2e/node"
)

// leaseTTL is the storage server's lease in this suite: short, so that
// takeovers happen within seconds.
const leaseTTL = 5 * time.Second

// vol is the suite's volume (Docker wants names of two characters or
// more: "-v a:/v" silently mounts nothing).
const vol = "shared"

// TestLeaseAcrossNodes is the one-writer promise of block volumes between
// two hosts: a second host is refused while the first holds the volume; a
// host cut off from the network is taken over once its lease lapses, and
// when it comes back its writes fail and none reaches the image; a host
// that crashes is taken over and every write it had fsynced is there. At
// the end the image and its file system are checked on the storage host.
func TestLeaseAcrossNodes(t *testing.T) {
	t.Parallel()
	node.RequireTools(t, "mkfs.ext4", "qemu-img", "e2fsck", "debugfs")
	srv := node.StartNetvolServer(t, "--lease-ttl", leaseTTL.String())
	bin := node.NetvolBinary(t)
	nodes := node.StartAll(t, node.Options{Name: "h1", MemoryMiB: 1536}, node.Options{Name: "h2", MemoryMiB: 1536})
	h1, h2 := nodes[0], nodes[1]
	done := make(chan struct{})
	go func() { defer close(done); h2.StartDocker(t); h2.StartPlugin(t, bin, srv.PluginArgs()) }()
	h1.StartDocker(t)
	h1.StartPlugin(t, bin, srv.PluginArgs())
	<-done
	defer func() {
		if t.Failed() {
			for _, n := range nodes {
				t.Logf("%s: plugin log and kernel messages:\n%s", n.Name(), tail(n, "tail -n 40 "+node.PluginLog+"; dmesg | tail -n 30"))
			}
			t.Logf("server log:\n%s", srv.LogTail(40))
		}
	}()

	h1.MustRun(t, "docker volume create -d netvol -o type=nbd -o size=64M "+vol+" >/dev/null")
	took := timed(func() { h1.MustRun(t, dockerRun(vol, "true")) })
	base := timed(func() { h1.MustRun(t, "docker run --rm --network none "+node.BusyboxImage+" true") })
	t.Logf("h1: docker run with a new volume (format, clean MMP) %s; without a volume %s", took, base)
	took = timed(func() { h1.MustRun(t, dockerRun(vol, "true")) })
	t.Logf("h1: docker run, volume mounted again after a clean unmount (MMP clean) %s", took)

	// h1 writes and fsyncs line after line, noting "ok N" for each
	// acknowledged one and "fail N" for each refused one in a file of its
	// share, which the host reads (and which outlives the node).
	h1.MustRun(t, writer("w1", "n1", "/v/n1log"))
	h1Acks := filepath.Join(h1.HostShare(), "w1")
	waitLines(t, h1Acks, "ok ", 3)

	t.Run("SecondHostRefused", func(t *testing.T) {
		var out node.Result
		took := timed(func() { out = h2.MustFail(t, dockerRun(vol, "true")) })
		t.Logf("h2 refused after %s: %s", took, strings.TrimSpace(out.Stderr))
		if !strings.Contains(out.Stderr, `"h1"`) || !strings.Contains(out.Stderr, "retry in") {
			t.Fatalf("h2's mount while h1 holds the volume: %+v", out)
		}
	})

	var lastOK int
	t.Run("CutOffHostIsFenced", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := h1.SetLink(ctx, false); err != nil {
			t.Fatal(err)
		}
		cut := time.Now()
		// h2 takes over once h1's lease lapses, and writes as h1 did;
		// its acknowledgements go to the host through the share, which
		// outlives h2.
		h2.MustRun(t, writer("r2", "n2", "/v/n2log"))
		waitLines(t, filepath.Join(h2.HostShare(), "r2"), "ok ", 3)
		t.Logf("h2 took the volume over and wrote %s after h1 was cut off", time.Since(cut).Round(100*time.Millisecond))
		if !strings.Contains(h2.MustRun(t, "cat "+node.PluginLog), "multi-mount protection reset") {
			t.Errorf("h2 did not reset the MMP block h1 left")
		}

		if err := h1.SetLink(ctx, true); err != nil {
			t.Fatal(err)
		}
		back := time.Now()
		waitLines(t, h1Acks, "fail ", 1)
		t.Logf("h1's writes failed %s after its network came back", time.Since(back).Round(100*time.Millisecond))
		log := h1.MustRun(t, "cat "+node.PluginLog)
		if !strings.Contains(log, "device released") {
			t.Errorf("h1's plugin log does not say it released the device")
		}
		st := h1.MustRun(t, "docker volume inspect -f '{{.Status.lease}} {{index .Status \"lease_lost\"}}' "+vol)
		if !strings.HasPrefix(st, "lost ") || !strings.Contains(st, `"h2"`) {
			t.Errorf("h1's status of the volume: %q", st)
		}
		h1.MustFail(t, "echo n1-late > /var/lib/netvol/mounts/"+vol+"/data/late && sync /var/lib/netvol/mounts/"+vol+"/data/late")
		lastOK = lastAcked(t, h1Acks)
		h1.MustRun(t, "docker rm -f w1 >/dev/null")
		if got := h1.MustRun(t, "grep -c ' /var/lib/netvol/mounts/"+vol+" ' /proc/mounts || true; for d in /sys/block/nbd*; do [ -e $d/pid ] && echo $d; done; true"); got != "0\n" {
			t.Fatalf("after h1's unmount, mounts and connected devices: %q", got)
		}
	})

	t.Run("CrashedHostIsTakenOver", func(t *testing.T) {
		r2Acks := filepath.Join(h2.HostShare(), "r2")
		waitLines(t, r2Acks, "ok ", 10)
		h2.Crash()
		crash := time.Now()
		acked, err := os.ReadFile(r2Acks)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(leaseTTL)
		var got string
		took := timed(func() { got = h1.MustRun(t, dockerRun(vol, "cat /v/n2log; echo h1-after > /v/h1 && sync /v/h1")) })
		t.Logf("h1 mounted the volume h2 crashed with in %s (%s after the crash)", took, time.Since(crash).Round(100*time.Millisecond))
		if strings.Count(h1.MustRun(t, "cat "+node.PluginLog), "multi-mount protection reset") != 1 {
			t.Errorf("h1 did not reset the MMP block h2 left (once)")
		}
		for _, n := range ackedLines(string(acked)) {
			if !strings.Contains(got, fmt.Sprintf("n2-%d\n", n)) {
				t.Fatalf("h2's fsynced line %d is missing; h1 read:\n%s", n, got)
			}
		}
	})

	t.Run("ImageIsConsistent", func(t *testing.T) {
		srv.Stop() // the image closed, as a check wants it
		img := filepath.Join(srv.DataDir, "volumes", vol+".qcow2")
		if out, err := exec.Command("qemu-img", "check", img).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img check: %v\n%s", err, out)
		}
		raw := filepath.Join(t.TempDir(), "a.raw")
		if out, err := exec.Command("qemu-img", "convert", "-O", "raw", img, raw).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img convert: %v\n%s", err, out)
		}
		if out, err := exec.Command("e2fsck", "-fn", raw).CombinedOutput(); err != nil {
			t.Fatalf("e2fsck -fn: %v\n%s", err, out)
		}
		n1log := debugfsCat(t, raw, "/data/n1log")
		for i := 1; i <= lastOK; i++ {
			if !strings.Contains(n1log, fmt.Sprintf("n1-%d\n", i)) {
				t.Fatalf("h1's fsynced line %d is missing", i)
			}
		}
		// Only the line in flight when h1 was cut off may have landed
		// unacknowledged; anything later was written after the takeover.
		if strings.Contains(n1log, fmt.Sprintf("n1-%d\n", lastOK+2)) {
			t.Fatalf("h1 acknowledged up to line %d, yet the image holds later lines:\n%s", lastOK, n1log)
		}
		if late := debugfsCat(t, raw, "/data/late"); late != "" {
			t.Fatalf("h1's write after the fence reached the image: %q", late)
		}
		if h1 := debugfsCat(t, raw, "/data/h1"); h1 != "h1-after\n" {
			t.Fatalf("/data/h1 holds %q", h1)
		}
	})
}

// writer is a detached container, name, that appends "<tag>-N" to file
// on the volume vol and fsyncs it, line after line, noting "ok N" or
// "fail N" in the file name of the node's share.
func writer(name, tag, file string) string {
	loop := "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); if echo " + tag + "-$i >> " + file + " && sync " + file +
		"; then echo ok $i; else echo fail $i; fi >> /share/" + name + "; sleep 0.2; done"
	return "docker run -d --name " + name + " --network none -v " + vol + ":/v -v " + node.GuestShare + ":/share " +
		node.BusyboxImage + " sh -c '" + loop + "' >/dev/null"
}

// waitLines waits up to two minutes until file holds count lines that
// start with prefix.
func waitLines(t *testing.T, file, prefix string, count int) {
	t.Helper()
	var got int
	for end := time.Now().Add(2 * time.Minute); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		b, _ := os.ReadFile(file)
		got = 0
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, prefix) {
				got++
			}
		}
		if got >= count {
			return
		}
	}
	b, _ := os.ReadFile(file)
	t.Fatalf("%s: %d lines %q after two minutes, want %d; it holds:\n%s", file, got, prefix, count, b)
}

// ackedLines parses the "ok N" lines of a writer's output.
func ackedLines(out string) []int {
	var ns []int
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ok "); ok {
			if n, err := strconv.Atoi(v); err == nil {
				ns = append(ns, n)
			}
		}
	}
	return ns
}

// lastAcked is the highest N of the "ok N" lines in file; they must run
// 1, 2, ... without a gap.
func lastAcked(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out := string(b)
	ns := ackedLines(out)
	for i, n := range ns {
		if n != i+1 {
			t.Fatalf("acknowledged lines out of order at %d: %v", n, ns)
		}
	}
	if len(ns) == 0 {
		t.Fatalf("no acknowledged line in %q", out)
	}
	return len(ns)
}

// debugfsCat reads a file of the ext4 image raw; "" when it does not exist.
func debugfsCat(t *testing.T, raw, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, raw).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

// tail runs a diagnostic script in n, if n still runs.
func tail(n *node.Node, script string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := n.Run(ctx, script+" 2>&1")
	if err != nil {
		return err.Error()
	}
	return res.Stdout
}

// timed runs fn and returns how long it took.
func timed(fn func()) time.Duration {
	start := time.Now()
	fn()
	return time.Since(start).Round(100 * time.Millisecond)
}
