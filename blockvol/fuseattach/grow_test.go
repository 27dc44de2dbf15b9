package fuseattach

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/netvol/netvol/blockvol"
	"github.com/netvol/netvol/internal/mount"
)

// The whole growth on this host's kernel: the export grows under a
// mounted ext4; Grow makes the helper take the new size (FUSE file, loop
// device), Ext4Grower grows the file system online, and a file larger
// than the old file system is written and read back.
func TestGrowMounted(t *testing.T) {
	needAttach(t)
	mkfs := needMkfs(t)
	const old, grown = 64 << 20, 256 << 20
	s := newCrashServer(t, old)
	a := newTestAttacher(t)
	d := attachT(t, a, s)
	mnt := t.TempDir()
	must(t, exec.Command(mkfs, "-q", "-F", d.Path).Run())
	must(t, mount.System{}.Mount(mount.Mount{Source: d.Path, Target: mnt, Type: "ext4"}))
	defer mount.System{}.Unmount(mnt)
	before := fsBytes(t, mnt)

	s.b.grow(grown - old)
	n, err := a.Grow(ctxT(t), d, nil)
	if err != nil || n != grown {
		t.Fatalf("Grow = %d, %v; want %d", n, err, grown)
	}
	if dev := deviceBytes(t, d.Path); dev != grown {
		t.Fatalf("the loop device has %d bytes after Grow, want %d", dev, grown)
	}
	if !blockvol.HasCapSysResource() {
		// These build machines drop CAP_SYS_RESOURCE from every process:
		// no online resize can run (resize2fs neither). The node VMs
		// check the file system's growth; here, that the refusal says why.
		_, err := (blockvol.Ext4Grower{}).GrowFS(ctxT(t), d.Path, mnt)
		if err == nil || !strings.Contains(err.Error(), "lacks CAP_SYS_RESOURCE") {
			t.Fatalf("GrowFS without CAP_SYS_RESOURCE = %v, want an error naming it", err)
		}
		t.Skip("device grown; the file system cannot grow without CAP_SYS_RESOURCE (e2e node suites check it)")
	}
	if n, err := (blockvol.Ext4Grower{}).GrowFS(ctxT(t), d.Path, mnt); err != nil || n != grown {
		t.Fatalf("GrowFS = %d, %v", n, err)
	}
	after := fsBytes(t, mnt)
	if after < before+(grown-old)*9/10 {
		t.Fatalf("file system has %d bytes after growing, %d before", after, before)
	}
	big := make([]byte, 100<<20) // more than the old file system held
	for i := range big {
		big[i] = byte(i / 4096)
	}
	f := filepath.Join(mnt, "big")
	must(t, os.WriteFile(f, big, 0o600))
	unix.Sync()
	// Growing again with nothing new changes nothing.
	if n, err := a.Grow(ctxT(t), d, nil); err != nil || n != grown {
		t.Fatalf("second Grow = %d, %v", n, err)
	}
	if n, err := (blockvol.Ext4Grower{}).GrowFS(ctxT(t), d.Path, mnt); err != nil || n != grown {
		t.Fatalf("second GrowFS = %d, %v", n, err)
	}
	got, err := os.ReadFile(f)
	must(t, err)
	if string(got) != string(big) {
		t.Fatal("the file written past the old size reads back different")
	}
}

func deviceBytes(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	must(t, err)
	return n
}

func fsBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	must(t, unix.Statfs(dir, &st))
	return int64(st.Blocks) * st.Bsize
}
