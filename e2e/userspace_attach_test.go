//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netvol/netvol/e2e/node"
	"github.com/netvol/netvol/internal/mount"
)

// TestUserspaceAttach runs block volumes through the real dockerd on this
// host, whose kernel has no NBD driver: the plugin attaches them in
// userspace (FUSE file and loop device, a helper process per volume).
func TestUserspaceAttach(t *testing.T) {
	t.Parallel()
	node.LockPluginSocket(t)
	requireUserspaceAttach(t)
	docker := node.StartHostDocker(t)
	docker.ImportBusybox(t)
	t.Run("VolumeMovesToAnotherHost", func(t *testing.T) { testVolumeMovesToAnotherHost(t, docker) })
	t.Run("NetvolRun", func(t *testing.T) { testNetvolRunUserspace(t, docker) })
	t.Run("GrowWhileMounted", func(t *testing.T) { testGrowUserspace(t, docker) })
}

func requireUserspaceAttach(t *testing.T) {
	node.RequireRoot(t)
	node.RequireTools(t, "mkfs.ext4", "qemu-img", "e2fsck", "debugfs", "tune2fs")
	for _, dev := range []string{"/dev/fuse", "/dev/loop-control"} {
		if _, err := os.Stat(dev); err != nil {
			node.Unavailable(t, "no %s: the userspace attach needs FUSE and loop devices", dev)
		}
	}
}

// testVolumeMovesToAnotherHost: a container writes and fsyncs; the storage
// daemon is killed right after and the image holds the data; the daemon
// comes back and the mounted volume goes on; the plugin crashes and a new
// one adopts the attachment; the container goes and nothing is left; a
// second plugin (another state directory and node name, as another host
// would run) serves the volume with its data to a new container.
func testVolumeMovesToAnotherHost(t *testing.T, docker *node.HostDocker) {
	// A lease longer than the daemon's pause below, on a loaded machine.
	srv := node.StartNetvolServer(t, "--lease-ttl", "1m")
	stateA, stateB := t.TempDir(), t.TempDir()
	cleanupAttachments(t, stateA, stateB)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pluginA := startHostPlugin(t, stateA, "host-a", "--server", srv.URL(""), "--token-file", srv.TokenFile, "--attach", "userspace")
	d := &dockerCLI{t: t, ctx: ctx, docker: docker, logs: []*node.Daemon{pluginA, srv.Daemon}}
	t.Cleanup(func() { _, _ = docker.Docker(context.Background(), "rm", "-f", "writer") }) // after a failure
	step := stepTimer(t)

	d.run("volume", "create", "-d", "netvol", "-o", "type=nbd", "-o", "size=256M", "blk")
	d.run("run", "-d", "--name", "writer", "--network", "none", "-v", "blk:/v", node.BusyboxImage, "sh", "-c",
		"echo hello > /v/hello && dd if=/dev/urandom of=/v/big bs=1M count=8 conv=fsync 2>/dev/null && md5sum /v/big && echo SYNCED && exec sleep 3600")
	sum := waitSynced(t, d)
	step("a container formatted, wrote and fsynced")

	// The fsync returned: the flush reached the server. Kill it at once,
	// copy the image as it is on disk, bring the server back (the mounted
	// volume waits for it), then read the copy.
	srv.Kill()
	copied := filepath.Join(t.TempDir(), "blk.qcow2")
	if out, err := exec.Command("cp", "--sparse=always", filepath.Join(srv.DataDir, "volumes", "blk.qcow2"), copied).CombinedOutput(); err != nil {
		t.Fatalf("copying the image: %v\n%s", err, out)
	}
	srv.Restart(t)
	step("server killed, image copied, server restarted")
	if got := md5Field(imageFileContent(t, copied, "/data/big")); got != sum {
		t.Fatalf("fsynced file in the image after SIGKILL of the server: md5 %q, want %q", got, sum)
	}
	step("the image holds the fsynced file")
	if out := d.run("exec", "writer", "sh", "-c", "md5sum /v/big && echo after > /v/after && sync && cat /v/hello"); !strings.Contains(out, sum) || !strings.HasSuffix(out, "hello\n") {
		t.Fatalf("the mounted volume after the server's restart: %q", out)
	}
	if logs := helperLogs(t, stateA); !strings.Contains(logs, "NBD connection back") {
		t.Fatalf("the attach helper did not report a reconnect:\n%s", logs)
	}
	step("the mounted volume works after the restart (the helper reconnected)")

	// The plugin crashes; the attachment lives on and a new plugin adopts it.
	pluginA.Kill()
	d.run("exec", "writer", "sh", "-c", "echo during > /v/during && sync")
	pluginA = startHostPlugin(t, stateA, "host-a", "--server", srv.URL(""), "--token-file", srv.TokenFile, "--attach", "userspace")
	d.logs[0] = pluginA
	if !strings.Contains(pluginA.LogTail(50), "adopted") {
		t.Fatalf("the restarted plugin did not adopt the attachment:\n%s", pluginA.LogTail(30))
	}
	step("plugin killed and restarted, attachment adopted")
	d.run("rm", "-f", "writer") // Unmount through the new plugin: a device of the earlier run
	assertNoAttachmentLeft(t, stateA)
	pluginA.Stop()
	step("container removed, nothing left")

	pluginB := startHostPlugin(t, stateB, "host-b", "--server", srv.URL(""), "--token-file", srv.TokenFile, "--attach", "userspace")
	d.logs[0] = pluginB
	out := d.run("run", "--rm", "--network", "none", "-v", "blk:/v", node.BusyboxImage, "sh", "-c", "cat /v/hello /v/after /v/during && md5sum /v/big")
	if want := "hello\nafter\nduring\n" + sum; !strings.HasPrefix(out, want) {
		t.Fatalf("on the second host: %q, want %q...", out, want)
	}
	step("second host read the data")
	d.run("volume", "rm", "blk")
	assertNoAttachmentLeft(t, stateB)
}

// stepTimer returns a func that logs how long each step took.
func stepTimer(t *testing.T) func(string) {
	last := time.Now()
	return func(what string) {
		t.Logf("%-60s %s", what, time.Since(last).Round(100*time.Millisecond))
		last = time.Now()
	}
}

// testNetvolRunUserspace is the README's first command, `netvol run` (the
// storage daemon and the plugin in one process, attach auto), then a
// container writing to a block volume.
func testNetvolRunUserspace(t *testing.T, docker *node.HostDocker) {
	state := t.TempDir()
	cleanupAttachments(t, state)
	args := []string{"run", "--state-dir", state}
	if !portFree(10809) || !portFree(10810) {
		// Another suite of this host has them: keep the command, move the ports.
		args = append(args, "--nbd-listen", fmt.Sprintf("127.0.0.1:%d", node.FreePort(t)), "--api-listen", fmt.Sprintf("127.0.0.1:%d", node.FreePort(t)))
		t.Logf("ports 10809/10810 in use; netvol %v", args)
	}
	run := node.StartDaemon(t, filepath.Join(state, "run.log"), append([]string{node.NetvolBinary(t)}, args...)...)
	waitPlugin(t, run)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	d := &dockerCLI{t: t, ctx: ctx, docker: docker, logs: []*node.Daemon{run}}
	if log := run.LogTail(50); !strings.Contains(log, "attach=userspace") {
		t.Fatalf("netvol run did not choose the userspace attach on this kernel:\n%s", log)
	}
	d.run("volume", "create", "-d", "netvol", "rv")
	if out := d.run("run", "--rm", "--network", "none", "-v", "rv:/v", node.BusyboxImage, "sh", "-c",
		"echo from-netvol-run > /v/f && sync && cat /v/f"); out != "from-netvol-run\n" {
		t.Fatalf("container on a block volume under netvol run: %q", out)
	}
	d.run("volume", "rm", "rv")
	assertNoAttachmentLeft(t, state)
}

// dockerCLI runs docker commands, failing the test with the daemons' logs.
type dockerCLI struct {
	t      *testing.T
	ctx    context.Context
	docker *node.HostDocker
	logs   []*node.Daemon
}

func (d *dockerCLI) run(args ...string) string {
	d.t.Helper()
	out, err := d.docker.Docker(d.ctx, args...)
	if err != nil {
		var logs []string
		for _, l := range d.logs {
			logs = append(logs, l.Name+":\n"+l.LogTail(25))
		}
		d.t.Fatalf("%v\n%s", err, strings.Join(logs, "\n"))
	}
	return out
}

// startHostPlugin runs `netvol plugin` on the host on PluginSocket.
func startHostPlugin(t *testing.T, state, name string, args ...string) *node.Daemon {
	t.Helper()
	argv := append([]string{node.NetvolBinary(t), "plugin", "--socket", node.PluginSocket, "--state-dir", state, "--node", name}, args...)
	p := node.StartDaemon(t, filepath.Join(state, "plugin.log"), argv...)
	waitPlugin(t, p)
	return p
}

// waitPlugin waits until PluginSocket accepts connections (a socket file
// left by a killed plugin does not).
func waitPlugin(t *testing.T, p *node.Daemon) {
	t.Helper()
	for end := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if c, err := net.Dial("unix", node.PluginSocket); err == nil {
			c.Close()
			return
		}
		if time.Now().After(end) {
			t.Fatalf("the plugin did not listen on %s within a minute\n%s", node.PluginSocket, p.LogTail(30))
		}
	}
}

// waitSynced waits for the writer container's SYNCED and returns the md5
// it printed.
func waitSynced(t *testing.T, d *dockerCLI) string {
	t.Helper()
	for end := time.Now().Add(3 * time.Minute); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if out := d.run("logs", "writer"); strings.Contains(out, "SYNCED") {
			return md5Field(out)
		}
	}
	t.Fatalf("the writer did not finish\n%s", d.run("logs", "writer"))
	return ""
}

// helperLogs is what the attach helpers of a plugin's state directory
// logged.
func helperLogs(t *testing.T, state string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(state, "attach", "*.log"))
	var all []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, string(b))
	}
	return strings.Join(all, "\n")
}

// md5Field is the first field of md5sum's output.
func md5Field(out string) string {
	if f := strings.Fields(out); len(f) > 0 {
		return f[0]
	}
	return ""
}

// imageFileContent reads a file of the ext4 file system in a qcow2 image
// as it is on disk: it is converted to raw, the journal replayed by
// e2fsck, and the file read with debugfs.
func imageFileContent(t *testing.T, image, path string) string {
	t.Helper()
	dir := t.TempDir()
	raw := filepath.Join(dir, "raw")
	if out, err := exec.Command("qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	// The copy is nobody's: reset its multi-mount protection block, or
	// e2fsck would wait out the MMP interval of a live mount.
	if out, err := exec.Command("tune2fs", "-f", "-E", "clear_mmp", raw).CombinedOutput(); err != nil {
		t.Fatalf("tune2fs -E clear_mmp: %v\n%s", err, out)
	}
	out, err := exec.Command("e2fsck", "-fy", raw).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) { // 1: errors corrected (the journal)
		t.Fatalf("e2fsck: %v\n%s", err, out)
	}
	b, err := exec.Command("debugfs", "-R", "dump "+path+" "+filepath.Join(dir, "out"), raw).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs: %v\n%s", err, b)
	}
	sum, err := exec.Command("md5sum", filepath.Join(dir, "out")).Output()
	if err != nil {
		t.Fatalf("md5sum of %s from the image: %v (debugfs: %s)", path, err, b)
	}
	return string(sum)
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// assertNoAttachmentLeft checks that a plugin whose volumes are all
// unmounted left nothing under its state directory: no mount (ext4 or
// FUSE), no loop device bound to a file there, no helper process.
func assertNoAttachmentLeft(t *testing.T, state string) {
	t.Helper()
	var left []string
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if left = attachmentsLeft(state); len(left) == 0 {
			return
		}
	}
	t.Fatalf("left behind under %s:\n%s", state, strings.Join(left, "\n"))
}

func attachmentsLeft(state string) []string {
	var left []string
	infos, _ := mount.ReadInfo()
	for _, i := range infos {
		if strings.HasPrefix(i.Target, state+"/") {
			left = append(left, "mount "+i.Target+" ("+i.Type+")")
		}
	}
	for _, l := range loopsUnder(state) {
		left = append(left, "loop device "+l)
	}
	for _, pid := range helpersUnder(state) {
		left = append(left, fmt.Sprintf("helper process %d", pid))
	}
	return left
}

// loopsUnder lists the loop devices bound to files under dir.
func loopsUnder(dir string) []string {
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []string
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && strings.HasPrefix(string(b), dir+"/") {
			out = append(out, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(f))))
		}
	}
	return out
}

// helpersUnder lists the processes whose command line names dir (attach
// helpers of a plugin with that state directory).
func helpersUnder(dir string) []int {
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []int
	for _, c := range cmdlines {
		b, err := os.ReadFile(c)
		if err != nil || !strings.Contains(string(b), "\x00"+dir+"/attach/") {
			continue
		}
		var pid int
		if _, err := fmt.Sscanf(c, "/proc/%d/cmdline", &pid); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cleanupAttachments undoes, when the test ends, whatever a failure left
// under the state directories: helpers, mounts, loop devices.
func cleanupAttachments(t *testing.T, states ...string) {
	t.Cleanup(func() {
		for _, state := range states {
			for _, pid := range helpersUnder(state) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			infos, _ := mount.ReadInfo()
			for i := len(infos) - 1; i >= 0; i-- {
				if strings.HasPrefix(infos[i].Target, state+"/") {
					_ = syscall.Unmount(infos[i].Target, syscall.MNT_DETACH)
				}
			}
			for _, l := range loopsUnder(state) {
				_ = exec.Command("losetup", "-d", l).Run()
			}
		}
	})
}
