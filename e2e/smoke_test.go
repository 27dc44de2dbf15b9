//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netvol/netvol/e2e/node"
)

// TestSmoke is the canary for the e2e environment: if it fails, the
// machine, not netvol, is the first suspect. It proves what netvol's own
// suites rely on: the kernel NBD and NFS clients in a node against servers
// on the host, root squashing, a node's disk across reboot and crash,
// network cuts, and containers writing through both kinds of mount.
func TestSmoke(t *testing.T) {
	t.Parallel()
	// Programs the nodes run from the host's root.
	node.RequireTools(t, "nbd-client", "mount.nfs", "mkfs.ext4", "bash")
	nfs := node.StartNFSServer(t)
	nbdReboot := node.StartNBDServer(t, "qcow2", 256)
	nbdDocker := node.StartNBDServer(t, "qcow2", 256)
	nodes := node.StartAll(t, node.Options{Name: "n1"}, node.Options{Name: "n2"})
	n1, n2 := nodes[0], nodes[1]

	// Two nodes, two independent chains, run side by side.
	t.Run("group", func(t *testing.T) {
		t.Run("NBDAcrossRebootAndCrash", func(t *testing.T) {
			t.Parallel()
			testNBDAcrossReboot(t, n1, nbdReboot)
			testPartition(t, n1, nbdReboot.Port)
			testCrashKeepsDisk(t, n1)
		})
		t.Run("NFSAndDocker", func(t *testing.T) {
			t.Parallel()
			testNetvolBinary(t, n2)
			testNFSSquash(t, n2, nfs)
			testDockerWritesThrough(t, n2, nfs, nbdDocker)
		})
	})
}

func testNBDAcrossReboot(t *testing.T, n *node.Node, srv *node.NBDServer) {
	n.MustRun(t, srv.AttachCommand("/dev/nbd0")+` &&
		mkfs.ext4 -q -E lazy_itable_init=1,lazy_journal_init=1 /dev/nbd0 &&
		mkdir -p /mnt/nbd && mount /dev/nbd0 /mnt/nbd &&
		echo before-reboot > /mnt/nbd/hello.txt &&
		echo node-state > `+node.GuestStateDir+`/marker && sync`)

	reboot(t, n)

	if got := n.MustRun(t, "cat "+node.GuestStateDir+"/marker"); got != "node-state\n" {
		t.Fatalf("state disk after reboot: marker = %q", got)
	}
	got := n.MustRun(t, srv.AttachCommand("/dev/nbd0")+` &&
		mkdir -p /mnt/nbd && mount /dev/nbd0 /mnt/nbd && cat /mnt/nbd/hello.txt &&
		umount /mnt/nbd && nbd-client -d /dev/nbd0 >/dev/null`)
	if got != "before-reboot\n" {
		t.Fatalf("NBD volume after reboot: hello.txt = %q", got)
	}
	if b := srv.ReadExt4File(t, "/hello.txt"); string(b) != "before-reboot\n" {
		t.Fatalf("host read of the NBD image: hello.txt = %q", b)
	}
}

func reboot(t *testing.T, n *node.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	if err := n.Reboot(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s rebooted in %s", n.Name(), time.Since(start).Round(100*time.Millisecond))
}

// testPartition cuts the node's link and checks that the host is unreachable
// while the node itself still answers, then restores it.
func testPartition(t *testing.T, n *node.Node, port int) {
	probe := "timeout 5 bash -c 'echo > /dev/tcp/" + node.HostAddr + "/" + itoa(port) + "'"
	n.MustRun(t, probe)
	setLink(t, n, false)
	n.MustFail(t, probe)
	setLink(t, n, true)
	n.MustRun(t, probe)
}

func setLink(t *testing.T, n *node.Node, up bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.SetLink(ctx, up); err != nil {
		t.Fatal(err)
	}
}

func testCrashKeepsDisk(t *testing.T, n *node.Node) {
	n.MustRun(t, "echo after-crash > "+node.GuestStateDir+"/crash && sync")
	n.Crash()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := n.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	if got := n.MustRun(t, "cat "+node.GuestStateDir+"/crash"); got != "after-crash\n" {
		t.Fatalf("state disk after crash: %q", got)
	}
}

// testNetvolBinary checks that the node runs the binary `make build` just
// produced, at the host's path.
func testNetvolBinary(t *testing.T, n *node.Node) {
	bin := node.NetvolBinary(t)
	want, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("%s version on the host: %v", bin, err)
	}
	if got := n.MustRun(t, bin+" version"); got != string(want) {
		t.Fatalf("netvol version in the node = %q, on the host %q", got, want)
	}
}

// testNFSSquash mounts both exports with NFSv4.1 and NFSv3 and checks who
// owns what root creates: root on the no_root_squash export, nobody (65534)
// on the squashed one, where a root-owned 0755 directory refuses root.
func testNFSSquash(t *testing.T, n *node.Node, nfs *node.NFSServer) {
	if err := os.Mkdir(filepath.Join(nfs.Squashed, "rootonly"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, vers := range []string{"4.1", "3"} {
		v := strings.ReplaceAll(vers, ".", "")
		sq, ns := "/mnt/sq"+v, "/mnt/ns"+v
		n.MustRun(t, nfs.MountCommand(nfs.Squashed, vers, sq)+" && "+nfs.MountCommand(nfs.NoSquash, vers, ns))
		if got := n.MustRun(t, "grep ' "+ns+" ' /proc/mounts"); !strings.Contains(got, "vers="+vers+",") {
			t.Fatalf("%s is not mounted with vers=%s: %s", ns, vers, got)
		}
		n.MustRun(t, "echo v"+v+" > "+ns+"/root-v"+v+" && echo v"+v+" > "+sq+"/root-v"+v)
		assertOwner(t, filepath.Join(nfs.NoSquash, "root-v"+v), 0)
		assertOwner(t, filepath.Join(nfs.Squashed, "root-v"+v), 65534)
		res := n.MustFail(t, "touch "+sq+"/rootonly/f")
		if !strings.Contains(res.Stderr, "Permission denied") {
			t.Fatalf("NFSv%s squashed root writing in a root-owned 0755 directory: want EACCES, got %q", vers, res.Stderr)
		}
	}
}

func assertOwner(t *testing.T, path string, uid uint32) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatalf("on the host: %v", err)
	}
	if got := st.Sys().(*syscall.Stat_t).Uid; got != uid {
		t.Fatalf("%s is owned by uid %d, want %d", path, got, uid)
	}
}

// testDockerWritesThrough runs containers in the node that write into bind
// mounts of an NBD-backed ext4 and of an NFS mount; the host must see the
// bytes in qemu-nbd's image and in the exported directory.
func testDockerWritesThrough(t *testing.T, n *node.Node, nfs *node.NFSServer, srv *node.NBDServer) {
	n.StartDocker(t)
	n.MustRun(t, srv.AttachCommand("/dev/nbd1")+` &&
		mkfs.ext4 -q -E lazy_itable_init=1,lazy_journal_init=1 /dev/nbd1 &&
		mkdir -p /mnt/dnbd && mount /dev/nbd1 /mnt/dnbd`)
	run := "docker run --rm --network none -v %s:/data " + node.BusyboxImage + " sh -c 'echo %s > /data/%s'"
	n.MustRun(t, sprintf(run, "/mnt/dnbd", "container-nbd", "c.txt")+" && "+
		sprintf(run, "/mnt/ns41", "container-nfs", "c-nfs.txt"))
	n.MustRun(t, "sync && umount /mnt/dnbd && nbd-client -d /dev/nbd1 >/dev/null")

	if b := srv.ReadExt4File(t, "/c.txt"); string(b) != "container-nbd\n" {
		t.Fatalf("host read of the container's NBD write: %q", b)
	}
	b, err := os.ReadFile(filepath.Join(nfs.NoSquash, "c-nfs.txt"))
	if err != nil || string(b) != "container-nfs\n" {
		t.Fatalf("host read of the container's NFS write: %q, %v", b, err)
	}
}
