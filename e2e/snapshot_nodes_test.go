//go:build e2e

package e2e

import (
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

// TestSnapshotsAcrossNodes: a container on p1 writes and fsyncs without a
// pause to a kernel-attached block volume while snapshots are taken and
// clones made (of a snapshot, and of the volume as it is); the writer goes
// on without an error; each clone is mounted by a container on p2, which
// sees a file system it can read, and once unmounted e2fsck -fn finds the
// clone's ext4 clean.
func TestSnapshotsAcrossNodes(t *testing.T) {
	t.Parallel()
	node.RequireTools(t, "mkfs.ext4", "e2fsck", "qemu-img")
	srv := node.StartNetvolServer(t)
	bin := node.NetvolBinary(t)
	nodes := node.StartAll(t, node.Options{Name: "s1", MemoryMiB: 1536}, node.Options{Name: "s2", MemoryMiB: 1536})
	n1, n2 := nodes[0], nodes[1]
	done := make(chan struct{})
	go func() { defer close(done); n2.StartDocker(t); n2.StartPlugin(t, bin, srv.PluginArgs()) }()
	n1.StartDocker(t)
	n1.StartPlugin(t, bin, srv.PluginArgs())
	<-done
	defer func() {
		if t.Failed() {
			t.Logf("s1 plugin log:\n%s\ns2 plugin log:\n%s\nserver:\n%s", n1.PluginLogTail(t), n2.PluginLogTail(t), srv.LogTail(40))
		}
	}()
	op := operator{bin: bin, env: append(os.Environ(),
		fmt.Sprintf("NETVOL_SERVER=127.0.0.1:%d", srv.APIPort), "NETVOL_TOKEN_FILE="+srv.TokenFile)}

	n1.MustRun(t, "docker volume create -d netvol -o size=128M db >/dev/null")
	n1.MustRun(t, `docker run -d --name writer --network none -v db:/v `+node.BusyboxImage+` sh -c '
		i=0; while :; do dd if=/dev/urandom of=/v/f$((i%16)) bs=64k count=4 conv=fsync 2>/dev/null || exit 1
		echo $i > /v/n.tmp && sync && mv /v/n.tmp /v/n && sync; i=$((i+1)); done' >/dev/null`)
	count := func() int {
		out := n1.MustRun(t, "cat /var/lib/netvol/mounts/db/data/n 2>/dev/null || echo -1")
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		return n
	}
	waitFor(t, time.Minute, "the writer's first rounds", func() bool { return count() >= 3 })
	for i := 1; i <= 3; i++ {
		start := time.Now()
		op.must(t, "volume", "snapshot", "create", "db", fmt.Sprintf("s%d", i))
		t.Logf("snapshot s%d took %s (writer at round %d)", i, time.Since(start).Round(time.Millisecond), count())
		time.Sleep(2 * time.Second)
	}
	op.must(t, "volume", "clone", "db", "at-s2", "--snapshot", "s2")
	op.must(t, "volume", "clone", "db", "now")
	before := count()
	waitFor(t, time.Minute, "the writer going on after the snapshots and clones", func() bool { return count() >= before+3 })
	if got := n1.MustRun(t, "docker inspect -f '{{.State.Running}} {{.State.ExitCode}}' writer"); got != "true 0\n" {
		t.Fatalf("the writer stopped: %q", got)
	}

	for _, vol := range []string{"at-s2", "now"} {
		out := n2.MustRun(t, dockerRun(vol, "cat /v/n && ls /v | grep -c ^f"))
		f := strings.Fields(out)
		if len(f) != 2 {
			t.Fatalf("clone %s on s2: %q", vol, out)
		}
		if n, err := strconv.Atoi(f[0]); err != nil || n < 0 || f[1] == "0" {
			t.Fatalf("clone %s on s2: round %q, %s data files", vol, f[0], f[1])
		}
		raw := filepath.Join(t.TempDir(), vol+".raw")
		if out, err := exec.Command("qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw",
			filepath.Join(srv.DataDir, "volumes", vol+".qcow2"), raw).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img convert %s: %v\n%s", vol, err, out)
		}
		if out, err := exec.Command("e2fsck", "-fn", raw).CombinedOutput(); err != nil {
			t.Fatalf("e2fsck -fn of clone %s: %v\n%s", vol, err, out)
		}
		t.Logf("clone %s: mounted on s2, round %s; e2fsck -fn clean", vol, strings.Fields(out)[0])
	}
	n1.MustRun(t, "docker rm -f writer >/dev/null")
	n1.MustRun(t, "docker volume rm at-s2 now >/dev/null && docker volume rm db >/dev/null")
	if files, _ := filepath.Glob(filepath.Join(srv.DataDir, "volumes", "*")); len(files) != 0 {
		t.Fatalf("files left: %v", files)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
