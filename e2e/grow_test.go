//go:build e2e

package e2e

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The growth of a mounted volume (issue 18), shared by the suites that
// run it: TestPluginAcrossNodes (kernel NBD attach in a node VM) and
// TestUserspaceAttach (userspace attach through the host's dockerd).

// growWriter is a container script on a 256 MiB volume at /v: it writes
// 256 KiB chunks with fsync until /v/stop appears (the resize runs
// meanwhile) and records their checksums, waits until df shows the file
// system grown past 900 MiB and records that, then writes 300 MiB more,
// which a 256 MiB file system cannot hold, and says WROTE.
const growWriter = `df -k /v | awk "NR==2{print \$2}" > /v/df-before
n=0; while [ ! -e /v/stop ]; do dd if=/dev/urandom of=/v/chunk.$n bs=256k count=1 conv=fsync 2>/dev/null; n=$((n+1)); done
cd /v && md5sum chunk.* > /v/sums && sync
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
