package mount

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseInfo(t *testing.T) {
	in := `22 1 0:21 / /proc rw,nosuid - proc proc rw
96 29 43:0 / /var/lib/netvol/mounts/my\040vol rw,relatime shared:52 - ext4 /dev/nbd0 rw
`
	infos, err := ParseInfo(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 {
		t.Fatalf("%d entries, want 2", len(infos))
	}
	i, ok := Find(infos, "/var/lib/netvol/mounts/my vol")
	if !ok || i.Source != "/dev/nbd0" || i.Type != "ext4" || i.Major != 43 || i.ID != 96 {
		t.Fatalf("Find = %+v, %v", i, ok)
	}
	if _, err := ParseInfo(strings.NewReader("1 2 3\n")); err == nil {
		t.Fatal("a short line was accepted")
	}
}

func TestFlagsAndData(t *testing.T) {
	f, d := Mount{Options: []string{"ro", "noatime", "vers=4.1", "addr=10.0.0.1"}}.FlagsAndData()
	if f == 0 || d != "vers=4.1,addr=10.0.0.1" {
		t.Fatalf("flags %#x data %q", f, d)
	}
}

// TestSystemTmpfs mounts for real: needs root.
func TestSystemTmpfs(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	var s System
	if err := s.Mount(Mount{Source: "netvol-test", Target: dir, Type: "tmpfs", Options: []string{"nosuid", "size=1m"}}); err != nil {
		t.Fatal(err)
	}
	ok, err := Mounted(dir)
	if err != nil || !ok {
		t.Fatalf("Mounted after mount = %v, %v", ok, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Unmount(dir); err != nil {
		t.Fatal(err)
	}
	if ok, _ := Mounted(dir); ok {
		t.Fatal("still mounted")
	}
	if err := s.Unmount(dir); err != nil {
		t.Fatalf("second unmount: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "f")); !os.IsNotExist(err) {
		t.Fatalf("file of the tmpfs visible after unmount: %v", err)
	}
}

func TestHostUnderAndUsage(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	dir := filepath.Join(root, "vol")
	os.Mkdir(dir, 0o700)
	var s System
	if err := s.Mount(Mount{Source: "netvol-test", Target: dir, Type: "tmpfs", Options: []string{"size=4m"}}); err != nil {
		t.Fatal(err)
	}
	defer s.Unmount(dir)
	var h Host
	under, err := h.MountsUnder(root)
	if err != nil || len(under) != 1 || under[0] != dir {
		t.Fatalf("MountsUnder = %v, %v", under, err)
	}
	if ok, _ := h.Mounted(root); ok {
		t.Fatal("the root reported mounted")
	}
	_, size, err := h.Usage(dir)
	if err != nil || size != 4<<20 {
		t.Fatalf("Usage size = %d, %v; want 4 MiB", size, err)
	}
}

// needRoot skips unless root; CI runs as root, so there it is a failure.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("mount(2) needs root, and CI runs as root")
		}
		t.Skip("mount(2) needs root")
	}
}
