//go:build e2e

package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netvol/netvol/e2e/node"
)

// TestPluginAcrossNodes is the product's promise: a volume written by a
// container on one host is read by a container on another, for both
// types, through dockerd and the kernel's NBD and NFS clients.
func TestPluginAcrossNodes(t *testing.T) {
	t.Parallel()
	node.RequireTools(t, "mkfs.ext4")
	srv := node.StartNetvolServer(t)
	nfs := node.StartNFSServer(t)
	bin := node.NetvolBinary(t)
	nodes := node.StartAll(t, node.Options{Name: "p1", MemoryMiB: 1536}, node.Options{Name: "p2", MemoryMiB: 1536})
	n1, n2 := nodes[0], nodes[1]
	args := []string{srv.PluginArgs(), "--nfs", node.HostAddr + ":" + nfs.NoSquash,
		"--nfs-port", fmt.Sprint(nfs.Port), "--nfs-mount-port", fmt.Sprint(nfs.MountPort)}
	done := make(chan struct{})
	go func() { defer close(done); n2.StartDocker(t); n2.StartPlugin(t, bin, args...) }()
	n1.StartDocker(t)
	n1.StartPlugin(t, bin, args...)
	<-done
	defer func() {
		if t.Failed() {
			t.Logf("p1 plugin log:\n%s\np2 plugin log:\n%s", n1.PluginLogTail(t), n2.PluginLogTail(t))
		}
	}()

	n1.MustRun(t, "docker volume create -d netvol -o type=nbd -o size=64M blk && docker volume create -d netvol -o type=nfs web")
	n1.MustRun(t, dockerRun("blk", "echo block-data > /v/f && sync")+" && "+dockerRun("web", "echo nfs-data > /v/f"))

	t.Run("SecondHostReads", func(t *testing.T) {
		if got := n2.MustRun(t, dockerRun("blk", "cat /v/f")+" && "+dockerRun("web", "cat /v/f")); got != "block-data\nnfs-data\n" {
			t.Fatalf("p2 read %q", got)
		}
	})
	t.Run("TwoContainersShareOneMount", func(t *testing.T) {
		// docker exec fails in nodes (runc cannot close its fds under the
		// 9p root), so the containers do their part on their own.
		n1.MustRun(t, `docker run -d --name c1 --network none -v blk:/v `+node.BusyboxImage+` sh -c 'echo from-c1 > /v/g; sleep 600' >/dev/null &&
			docker run -d --name c2 --network none -v blk:/v `+node.BusyboxImage+` sh -c 'until [ -s /v/g ]; do sleep 0.1; done; cat /v/g > /v/c2-saw; sleep 600' >/dev/null`)
		if got := n1.MustRun(t, "grep -c ' /var/lib/netvol/mounts/blk ' /proc/mounts"); got != "1\n" {
			t.Fatalf("blk mounted %q times on p1", got)
		}
		if got := n1.MustRun(t, "i=0; until [ -s /var/lib/netvol/mounts/blk/data/c2-saw ] || [ $i -gt 100 ]; do i=$((i+1)); sleep 0.2; done; cat /var/lib/netvol/mounts/blk/data/c2-saw"); got != "from-c1\n" {
			t.Fatalf("c2 saw %q", got)
		}
		out := n1.MustFail(t, "docker volume rm blk")
		if !strings.Contains(out.Stderr+out.Stdout, "in use") {
			t.Fatalf("rm while mounted: %+v", out)
		}
		// p2 may not write it while p1 does.
		out = n2.MustFail(t, dockerRun("blk", "true"))
		if !strings.Contains(out.Stderr, "p1") {
			t.Fatalf("p2's mount while p1 holds it: %+v", out)
		}
	})
	t.Run("PluginRestartWithMountsLive", func(t *testing.T) {
		n1.StopPlugin(t, bin, true) // a crash
		n1.StartPlugin(t, bin, args...)
		n1.MustRun(t, dockerRun("blk", "echo after-restart > /v/h && sync"))
		n1.MustRun(t, "docker rm -f c1 >/dev/null")
		if got := n1.MustRun(t, "grep -c ' /var/lib/netvol/mounts/blk ' /proc/mounts"); got != "1\n" {
			t.Fatalf("blk mounted %q times after the restart", got)
		}
		n1.MustRun(t, "docker rm -f c2 >/dev/null")
		if got := n1.MustRun(t, "grep -c ' /var/lib/netvol/mounts/blk ' /proc/mounts || true"); got != "0\n" {
			t.Fatalf("blk still mounted after the last container: %q", got)
		}
		if got := n1.MustRun(t, "for d in /sys/block/nbd*; do [ -e $d/pid ] && echo $d; done; true"); got != "" {
			t.Fatalf("NBD devices still connected: %q", got)
		}
		if got := n2.MustRun(t, dockerRun("blk", "cat /v/h")); got != "after-restart\n" {
			t.Fatalf("p2 read %q", got)
		}
	})
	t.Run("CloneHoldsData", func(t *testing.T) {
		n2.MustRun(t, "docker volume create -d netvol -o from=blk copy")
		if got := n1.MustRun(t, dockerRun("copy", "cat /v/f")); got != "block-data\n" {
			t.Fatalf("clone read %q", got)
		}
	})
	t.Run("StorageDaemonRestart", func(t *testing.T) {
		// A volume mounted through the kernel's NBD client stays usable
		// across a crash and restart of the storage daemon: the plugin sees
		// the new daemon run at its next renewal and hands the device new
		// connections, well before the kernel would fail its I/O.
		n1.MustRun(t, "docker run -d --name c3 --network none -v copy:/v "+node.BusyboxImage+" sleep 600 >/dev/null")
		srv.Kill()
		srv.Restart(t)
		n1.MustRun(t, `i=0; until grep -q 'device reconnected' `+node.PluginLog+`; do
			i=$((i+1)); [ $i -gt 150 ] && { echo "no reconnect within 30 s" >&2; exit 1; }; sleep 0.2; done`)
		n1.MustRun(t, dockerRun("copy", "echo after-daemon-restart > /v/r && sync"))
		n1.MustRun(t, "docker rm -f c3 >/dev/null")
		if got := n2.MustRun(t, dockerRun("copy", "cat /v/r")); got != "after-daemon-restart\n" {
			t.Fatalf("p2 read %q", got)
		}
	})
	t.Run("GrowWhileMounted", func(t *testing.T) {
		// A running container's volume grows from 256 MiB to 1 GiB through
		// the kernel's NBD driver: df in the container shows it without a
		// restart, it writes past the old size, the chunks it fsynced while
		// the resize ran are all there, and the file system is clean.
		testGrowOnNode(t, n1, n2, srv, bin, "grow", "/dev/nbd")
	})
	t.Run("GrowWhileMountedUserspace", func(t *testing.T) {
		// The same through the userspace attach (FUSE file, loop device,
		// attach helper), which this node's kernel has too and whose root
		// has CAP_SYS_RESOURCE, unlike the build machines': the helper
		// grows the FUSE file, LOOP_SET_CAPACITY the loop device, and the
		// plugin ext4. p2 reads the volume through the kernel's NBD.
		n1.StopPlugin(t, bin, false)
		n1.StartPlugin(t, bin, append(args[:len(args):len(args)], "--attach", "userspace")...)
		defer func() {
			n1.StopPlugin(t, bin, false)
			n1.StartPlugin(t, bin, args...)
		}()
		testGrowOnNode(t, n1, n2, srv, bin, "ugrow", "/dev/loop")
		// Nothing of the attachment is left: no loop device, no helper.
		n1.MustRun(t, `i=0; while cat /sys/block/loop*/loop/backing_file 2>/dev/null | grep -q . || pgrep -f '^@netvol-attach-helper' >/dev/null; do
			i=$((i+1)); [ $i -gt 75 ] && { echo "left: $(cat /sys/block/loop*/loop/backing_file 2>/dev/null) $(pgrep -af '^@netvol-attach-helper')" >&2; exit 1; }; sleep 0.2; done`)
	})
	t.Run("Remove", func(t *testing.T) {
		n1.MustRun(t, "docker volume rm copy && docker volume rm blk web")
		if got := n2.MustRun(t, "docker volume ls -q"); strings.TrimSpace(got) != "" {
			t.Fatalf("p2 still lists %q", got)
		}
	})
}

// testGrowOnNode: a container on n1 fsyncs chunks to volume vol (256 MiB,
// attached as a device whose path starts with devPrefix) while it is
// resized to 1 GiB; df in the container shows the growth without a
// restart, it writes 300 MiB past the old size, e2fsck -fn finds the
// image clean, and every chunk reads back right on n2.
func testGrowOnNode(t *testing.T, n1, n2 *node.Node, srv *node.NetvolServer, bin, vol, devPrefix string) {
	mnt := "/var/lib/netvol/mounts/" + vol
	data := mnt + "/data/"
	n1.MustRun(t, "docker volume create -d netvol -o type=nbd -o size=256M "+vol+" >/dev/null && "+
		"docker run -d --name g1 --network none -v "+vol+":/v "+node.BusyboxImage+" sh -c '"+growWriter+"' >/dev/null")
	n1.MustRun(t, `i=0; until [ -e `+data+`chunk.10 ]; do i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.2; done`)
	dev := strings.TrimSpace(n1.MustRun(t, "awk '$2==\""+mnt+"\"{print $1}' /proc/mounts"))
	if !strings.HasPrefix(dev, devPrefix) {
		t.Fatalf("%s is mounted from %q, want a %s device", vol, dev, devPrefix)
	}
	out := n1.MustRun(t, bin+" volume resize "+vol+" 1G "+srv.PluginArgs())
	if !strings.Contains(out, vol+": 256MiB -> 1GiB (the holder's device and file system too: usable now)") {
		t.Fatalf("resize printed %q", out)
	}
	if got := n1.MustRun(t, "cat /sys/block/"+strings.TrimPrefix(dev, "/dev/")+"/size"); strings.TrimSpace(got) != "2097152" {
		t.Fatalf("%s has %s sectors after the resize, want 2097152", dev, got)
	}
	n1.MustRun(t, "touch "+data+"stop && i=0; until [ -e "+data+"done ]; do i=$((i+1)); [ $i -gt 900 ] && { cat "+data+"past.err; exit 1; }; sleep 0.2; done")
	before, after := kib(t, n1.MustRun(t, "cat "+data+"df-before")), kib(t, n1.MustRun(t, "cat "+data+"df-after"))
	if before > 270000 || after < 900000 {
		t.Fatalf("df in the container: %d KiB before, %d KiB after the resize", before, after)
	}
	if log := n1.MustRun(t, "grep 'grown online' "+node.PluginLog+" || true"); !strings.Contains(log, "device="+dev+" ") {
		t.Fatalf("the plugin did not log the growth of %s:\n%s", dev, log)
	}
	n1.MustRun(t, "docker rm -f g1 >/dev/null")
	e2fsckImage(t, filepath.Join(srv.DataDir, "volumes", vol+".qcow2"))
	if got := n2.MustRun(t, dockerRun(vol, "cd /v && md5sum -c sums | grep -vc OK$; stat -c %s past")); got != "0\n314572800\n" {
		t.Fatalf("on p2 after the growth (failed chunk checks, size of the file past the old end): %q", got)
	}
	n2.MustRun(t, "docker volume rm "+vol+" >/dev/null")
}

// dockerRun is a docker run of busybox with volume vol at /v.
func dockerRun(vol, script string) string {
	return fmt.Sprintf("docker run --rm --network none -v %s:/v %s sh -c '%s'", vol, node.BusyboxImage, script)
}
