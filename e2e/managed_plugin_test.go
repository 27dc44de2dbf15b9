//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/e2e/node"
)

// TestManagedPlugin installs netvol as Docker installs plugins (docker
// plugin create/set/enable, from the directory `make plugin` builds), runs
// containers on both volume types, then upgrades the plugin (disable,
// replace, enable) and finds every volume and its data.
func TestManagedPlugin(t *testing.T) {
	t.Parallel()
	srv := node.StartNetvolServer(t)
	nfs := node.StartNFSServer(t)
	dir := node.PluginDir(t)
	n := node.Start(t, node.Options{Name: "m1", MemoryMiB: 1536})
	n.StartDocker(t)
	defer func() {
		if t.Failed() {
			t.Logf("plugin log:\n%s", n.MustRun(t, "tail -n 30 /var/log/dockerd.log"))
		}
	}()
	settings := fmt.Sprintf("NETVOL_SERVER=%s NETVOL_TOKEN=%s NETVOL_NFS=%s:%s NETVOL_NFS_PORT=%d NETVOL_NFS_MOUNT_PORT=%d NETVOL_NODE=m1",
		srv.URL(node.HostAddr), srv.Token, node.HostAddr, nfs.NoSquash, nfs.Port, nfs.MountPort)
	install := fmt.Sprintf(`docker plugin create netvol:dev %s >/dev/null &&
		docker plugin set netvol:dev %s && docker plugin enable netvol:dev >/dev/null`, dir, settings)
	n.MustRun(t, "modprobe nbd nbds_max=16 && modprobe nfsv4 && modprobe nfsv3 && "+install)
	n.MustRun(t, `docker volume create -d netvol:dev -o type=nbd -o size=64M mblk >/dev/null &&
		docker volume create -d netvol:dev -o type=nfs -o mode=0770 mnfs >/dev/null`)
	n.MustRun(t, dockerRun("mblk", "echo managed-block > /v/f && sync")+" && "+dockerRun("mnfs", "echo managed-nfs > /v/f"))
	caps := pluginCapabilities(t, dir)
	if got, want := n.MustRun(t, "docker plugin inspect -f '{{.Enabled}} {{.Config.Linux.Capabilities}}' netvol:dev"), "true ["+strings.Join(caps, " ")+"]\n"; got != want {
		t.Fatalf("plugin inspect: %q, want %q", got, want)
	}

	// A resize while a container holds the volume: the image grows, and so
	// do the device and ext4 if the plugin's container may grow a mounted
	// file system (CAP_SYS_RESOURCE); if not, the resize says so.
	n.MustRun(t, "docker run -d --name mc --network none -v mblk:/v "+node.BusyboxImage+" sleep 600 >/dev/null")
	res, err := n.Run(context.Background(), node.NetvolBinary(t)+" volume resize mblk 128M "+srv.PluginArgs())
	if err != nil {
		t.Fatal(err)
	}
	res.Stderr = strings.ReplaceAll(res.Stderr, `\"`, `"`) // logrus quotes the error
	if slices.Contains(caps, "CAP_SYS_RESOURCE") {
		if res.ExitCode != 0 || !strings.Contains(res.Stdout, "usable now") {
			t.Fatalf("resize of a mounted volume (the plugin has CAP_SYS_RESOURCE): %+v", res)
		}
	} else {
		for _, want := range []string{"the image has grown to 128MiB", `node "m1" could not grow`, "lacks CAP_SYS_RESOURCE"} {
			if res.ExitCode == 0 || !strings.Contains(res.Stderr, want) {
				t.Fatalf("resize of a mounted volume (the plugin lacks CAP_SYS_RESOURCE) does not say %q: %+v", want, res)
			}
		}
	}
	t.Logf("resize while mounted: exit %d\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	n.MustRun(t, "docker rm -f mc >/dev/null")

	// Upgrade: the new plugin is the same directory, as a release would be a
	// new one; the state lives outside the rootfs.
	n.MustRun(t, "docker plugin disable -f netvol:dev >/dev/null && docker plugin rm -f netvol:dev >/dev/null && "+install)
	if got := n.MustRun(t, dockerRun("mblk", "cat /v/f")+" && "+dockerRun("mnfs", "cat /v/f")); got != "managed-block\nmanaged-nfs\n" {
		t.Fatalf("after the upgrade: %q", got)
	}
	if got := n.MustRun(t, "docker volume ls -q | sort | tr '\\n' ' '"); got != "mblk mnfs " {
		t.Fatalf("volume ls after the upgrade: %q", got)
	}
	n.MustRun(t, "docker volume rm mblk mnfs >/dev/null")
	if ls := n.MustRun(t, "docker volume ls -q"); strings.TrimSpace(ls) != "" {
		t.Fatalf("left: %q", ls)
	}
}

// TestManagedPluginRestartUserspace is an upgrade of the managed plugin on
// a host without the NBD driver (this one), block volumes attached in
// userspace: a container writes and fsyncs lines to a block volume, the
// plugin is disabled with -f and enabled again (as an upgrade does), which
// kills the attach helpers with the plugin's container (the container's
// volume fails from then on, as documented). The next container on that
// volume must mount it at the first try, in under 5 s, with every line
// fsynced before the restart: the host takes back its own volume without
// waiting out the multi-mount protection interval for its own dead writer.
func TestManagedPluginRestartUserspace(t *testing.T) {
	t.Parallel()
	requireUserspaceAttach(t)
	srv := node.StartNetvolServer(t)
	docker := node.StartHostDocker(t)
	// The managed plugin runs in dockerd's network namespace.
	docker.ForwardLoopback(t, srv.APIPort, srv.NBDPort)
	docker.ImportBusybox(t)
	state := t.TempDir()
	cleanupAttachments(t, state)
	dir := hostPluginDir(t, state)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	d := &dockerCLI{t: t, ctx: ctx, docker: docker, logs: []*node.Daemon{docker.Daemon, srv.Daemon}}
	t.Cleanup(func() {
		bg := context.Background()
		_, _ = docker.Docker(bg, "rm", "-f", "writer")
		_, _ = docker.Docker(bg, "plugin", "disable", "-f", "netvol:dev")
	})
	step := stepTimer(t)

	d.run("plugin", "create", "netvol:dev", dir)
	d.run("plugin", "set", "netvol:dev", "NETVOL_SERVER="+srv.URL(""), "NETVOL_TOKEN="+srv.Token, "NETVOL_ATTACH=userspace")
	d.run("plugin", "enable", "netvol:dev")
	d.run("volume", "create", "-d", "netvol:dev", "-o", "type=nbd", "-o", "size=64M", "blk")
	// Each line is fsynced before the container reports it.
	d.run("run", "-d", "--name", "writer", "--network", "none", "-v", "blk:/v", node.BusyboxImage, "sh", "-c",
		`i=1; while echo line-$i >> /v/lines && sync /v/lines; do echo synced $i; i=$((i+1)); sleep 0.1; done; echo STOPPED; exec sleep 3600`)
	waitLog(t, d, "writer", "synced 20")
	step("plugin enabled, a container writing lines to a block volume")

	d.run("plugin", "disable", "-f", "netvol:dev")
	synced := lastSynced(d.run("logs", "writer"))
	d.run("plugin", "enable", "netvol:dev")
	step(fmt.Sprintf("plugin disabled and enabled (%d lines fsynced before)", synced))

	start := time.Now()
	out, err := docker.Docker(ctx, "run", "--rm", "--network", "none", "-v", "blk:/v", node.BusyboxImage, "cat", "/v/lines")
	took := time.Since(start)
	t.Logf("docker run with the volume after the restart: %s (err %v)", took.Round(10*time.Millisecond), err)
	if err != nil {
		t.Fatalf("the first docker run after the restart failed after %s: %v\ndockerd and plugin:\n%s", took, err, docker.LogTail(40))
	}
	lines := strings.Split(out, "\n")
	if len(lines) < synced {
		t.Fatalf("%d lines after the restart, %d were fsynced before it:\n%s", len(lines), synced, out)
	}
	for i := range synced {
		if want := fmt.Sprintf("line-%d", i+1); lines[i] != want {
			t.Fatalf("line %d after the restart is %q, want %q", i+1, lines[i], want)
		}
	}
	if took > 5*time.Second {
		t.Fatalf("docker run took %s after the plugin's restart, want under 5 s\n%s", took, docker.LogTail(40))
	}
	step("a new container mounted the volume with every fsynced line")
	for _, line := range strings.Split(docker.LogTail(200), "\n") {
		if strings.Contains(line, "multi-mount protection") {
			t.Logf("plugin: %.400s", line)
		}
	}

	d.run("rm", "-f", "writer")
	d.run("volume", "rm", "blk")
	assertNoAttachmentLeft(t, state)
}

// hostPluginDir is a copy of the managed-plugin directory whose node state
// lives in state instead of the host's /var/lib/netvol, so that the test
// touches nothing of a plugin the machine may run.
func hostPluginDir(t *testing.T, state string) string {
	t.Helper()
	src := node.PluginDir(t)
	dst := t.TempDir()
	if out, err := exec.Command("cp", "-a", src+"/.", dst).CombinedOutput(); err != nil {
		t.Fatalf("copying the plugin directory: %v: %s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(dst, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range cfg["mounts"].([]any) {
		if m := m.(map[string]any); m["name"] == "state" {
			m["source"], found = state, true
		}
	}
	if !found {
		t.Fatal("config.json has no state mount")
	}
	if raw, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, "config.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// pluginCapabilities is the capabilities list of the plugin's config.json
// in dir.
func pluginCapabilities(t *testing.T, dir string) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Linux struct{ Capabilities []string }
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.Linux.Capabilities
}

// waitLog waits until a container's output holds want.
func waitLog(t *testing.T, d *dockerCLI, container, want string) {
	t.Helper()
	for end := time.Now().Add(2 * time.Minute); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if strings.Contains(d.run("logs", container), want) {
			return
		}
	}
	t.Fatalf("%s did not print %q:\n%s", container, want, d.run("logs", container))
}

// lastSynced is the last N of the "synced N" lines in out.
func lastSynced(out string) int {
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "synced "); ok {
			if i, err := strconv.Atoi(v); err == nil {
				n = i
			}
		}
	}
	return n
}
