//go:build e2e

package node

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// NBDServer is qemu-nbd serving one image on the host's loopback: the
// reference server the kernel client in a node attaches to.
type NBDServer struct {
	Port   int
	Export string
	Image  string // host path of the image
	Format string // "qcow2" or "raw"
	*Daemon
}

// StartNBDServer creates a sizeMiB image of the given format ("qcow2" when
// empty) and serves it with qemu-nbd until the test ends. Several clients
// may connect, one after another or at once.
func StartNBDServer(t testing.TB, format string, sizeMiB int) *NBDServer {
	t.Helper()
	RequireTools(t, "qemu-nbd", "qemu-img")
	if format == "" {
		format = "qcow2"
	}
	dir := t.TempDir()
	s := &NBDServer{Port: FreePort(t), Export: "e2e", Image: filepath.Join(dir, "disk."+format), Format: format}
	out, err := command("qemu-img", "create", "-q", "-f", format, s.Image, strconv.Itoa(sizeMiB)+"M").CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	s.Daemon = StartDaemon(t, filepath.Join(dir, "qemu-nbd.log"), "qemu-nbd",
		"--persistent", "--shared=8", "--format="+format, "--export-name="+s.Export,
		"--bind=127.0.0.1", "--port="+strconv.Itoa(s.Port), "--cache=writeback", s.Image)
	waitReady(t, s.Daemon, s.Port)
	return s
}

// AttachCommand is the shell command that attaches the export to device (say
// /dev/nbd0) with the kernel's NBD client inside a node.
func (s *NBDServer) AttachCommand(device string) string {
	return fmt.Sprintf("nbd-client %s %d %s -N %s >/dev/null", HostAddr, s.Port, device, s.Export)
}

// ReadExt4File reads path from the ext4 filesystem in the server's image, on
// the host, whose kernel has no NBD client: the image is copied to raw and
// read with debugfs. Flush or detach in the node first; the copy sees what
// reached qemu-nbd.
func (s *NBDServer) ReadExt4File(t testing.TB, path string) []byte {
	t.Helper()
	RequireTools(t, "debugfs")
	if strings.ContainsAny(path, " \"'\\\n") {
		t.Fatalf("ReadExt4File: path %q must not need quoting for debugfs", path)
	}
	dir := t.TempDir()
	raw := filepath.Join(dir, "image.raw")
	// -U: qemu-nbd holds the image's lock; reading a consistent copy is safe
	// once the node has flushed.
	out, err := command("qemu-img", "convert", "-U", "-f", s.Format, "-O", "raw", s.Image, raw).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	dst := filepath.Join(dir, "file")
	out, err = command("debugfs", "-R", "dump "+path+" "+dst, raw).CombinedOutput()
	data, rerr := os.ReadFile(dst)
	if err != nil || rerr != nil {
		t.Fatalf("debugfs dump %s from %s: %v %v: %s", path, s.Image, err, rerr, out)
	}
	return data
}
