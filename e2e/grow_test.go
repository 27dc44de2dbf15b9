//go:build e2e

package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/blockvol"
	"github.com/netvol/netvol/e2e/node"
	"github.com/netvol/netvol/internal/mount"
)

// The growth of a mounted volume (issue 18), shared by the suites that
// run it: TestPluginAcrossNodes (kernel NBD attach in a node VM) and
// TestUserspaceAttach (userspace attach through the host's dockerd).

// growWriter is a container script on a 256 MiB volume at /v: it writes
// 256 KiB chunks with fsync, about 20 a second, until /v/stop appears (the
// resize runs meanwhile), 400 (100 MiB) at most, and records their
// checksums (renamed into place complete: the test waits for the name),
// waits until df shows the file
// system grown past 900 MiB and records that, then writes 300 MiB more,
// which a 256 MiB file system cannot hold, and says WROTE.
const growWriter = `df -k /v | awk "NR==2{print \$2}" > /v/df-before
n=0; while [ ! -e /v/stop ] && [ $n -lt 400 ]; do dd if=/dev/urandom of=/v/chunk.$n bs=256k count=1 conv=fsync 2>/dev/null; n=$((n+1)); sleep 0.05; done
cd /v && md5sum chunk.* > /v/sums.tmp && sync && mv /v/sums.tmp /v/sums && sync
until [ "$(df -k /v | awk "NR==2{print \$2}")" -gt 900000 ]; do sleep 0.2; done
df -k /v | awk "NR==2{print \$2}" > /v/df-after
dd if=/dev/zero of=/v/past bs=1M count=300 conv=fsync 2>/v/past.err && echo WROTE > /v/done
exec sleep 3600`

// e2fsckImage checks the ext4 file system in a qcow2 image read-only
// (e2fsck -fn): it must be clean, not just repairable.
func e2fsckImage(t *testing.T, image string) {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "raw")
	if out, err := exec.Command("qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	out, err := exec.Command("e2fsck", "-fn", raw).CombinedOutput()
	var ee *exec.ExitError
	if err != nil {
		if errors.As(err, &ee) {
			t.Fatalf("e2fsck -fn of the grown volume: exit %d\n%s", ee.ExitCode(), out)
		}
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "blocks") {
		t.Fatalf("e2fsck -fn said nothing of blocks:\n%s", out)
	}
}

// kib parses a number of KiB that a container wrote to a file.
func kib(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		t.Fatalf("df gave %q: %v", s, err)
	}
	return n
}

// testGrowUserspace: a running container's volume, attached in userspace
// (FUSE file, loop device) through the host's dockerd, grows from 256 MiB
// to 1 GiB while the container fsyncs chunks. The loop device always
// grows. The file system grows online where the plugin has
// CAP_SYS_RESOURCE (df in the container shows it, and it writes past the
// old size); the build machines drop that capability from every process,
// and there the resize must say so. Either way nothing written during the
// resize is lost and e2fsck -fn finds the file system clean.
func testGrowUserspace(t *testing.T, docker *node.HostDocker) {
	srv := node.StartNetvolServer(t)
	state := t.TempDir()
	cleanupAttachments(t, state)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	plugin := startHostPlugin(t, state, "host-g", "--server", srv.URL(""), "--token-file", srv.TokenFile, "--attach", "userspace")
	d := &dockerCLI{t: t, ctx: ctx, docker: docker, logs: []*node.Daemon{plugin, srv.Daemon}}
	t.Cleanup(func() { _, _ = docker.Docker(context.Background(), "rm", "-f", "g1") })
	data := filepath.Join(state, "mounts", "hg", "data")
	d.run("volume", "create", "-d", "netvol", "-o", "type=nbd", "-o", "size=256M", "hg")
	d.run("run", "-d", "--name", "g1", "--network", "none", "-v", "hg:/v", node.BusyboxImage, "sh", "-c", growWriter)
	waitFile(t, filepath.Join(data, "chunk.10"), time.Minute)

	op := operator{bin: node.NetvolBinary(t), env: []string{"PATH=" + os.Getenv("PATH")}}
	args := []string{"volume", "resize", "hg", "1G", "--server", srv.URL(""), "--token-file", srv.TokenFile}
	canGrowFS := blockvol.HasCapSysResource()
	if canGrowFS {
		if out := op.must(t, args...); !strings.Contains(out, "usable now") {
			t.Fatalf("resize printed %q", out)
		}
	} else {
		op.refused(t, args, "the image has grown to 1GiB", `node "host-g" could not grow`, "lacks CAP_SYS_RESOURCE")
	}
	if got := deviceSectors(t, filepath.Join(state, "mounts", "hg")); got != 2097152 {
		t.Fatalf("the loop device has %d sectors after the resize, want 2097152", got)
	}
	must(t, os.WriteFile(filepath.Join(data, "stop"), nil, 0o644))
	if canGrowFS {
		waitFile(t, filepath.Join(data, "done"), 3*time.Minute)
		if after := kib(t, readFile(t, filepath.Join(data, "df-after"))); after < 900000 {
			t.Fatalf("df in the container after the resize: %d KiB", after)
		}
	} else {
		waitFile(t, filepath.Join(data, "sums"), time.Minute)
	}
	d.run("rm", "-f", "g1")
	e2fsckImage(t, filepath.Join(srv.DataDir, "volumes", "hg.qcow2"))
	if out := d.run("run", "--rm", "--network", "none", "-v", "hg:/v", node.BusyboxImage, "sh", "-c",
		"cd /v && md5sum -c sums | grep -vc OK$; true"); out != "0\n" {
		t.Fatalf("chunks fsynced during the resize that read back wrong: %q", out)
	}
	d.run("volume", "rm", "hg")
	assertNoAttachmentLeft(t, state)
}

// deviceSectors is the size, in 512-byte sectors, of the block device
// mounted at target.
func deviceSectors(t *testing.T, target string) int64 {
	t.Helper()
	infos, err := mount.ReadInfo()
	must(t, err)
	for _, i := range infos {
		if i.Target == target {
			return kib(t, readFile(t, filepath.Join("/sys/class/block", filepath.Base(i.Source), "size")))
		}
	}
	t.Fatalf("nothing mounted at %s", target)
	return 0
}

func waitFile(t *testing.T, path string, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
	}
	t.Fatalf("%s did not appear within %v", path, d)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	return string(b)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
