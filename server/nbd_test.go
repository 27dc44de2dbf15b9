package server

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/server/api"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/nbd"
)

func needTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI=true: %v", name, err)
		}
		t.Skipf("%s not installed (apt-get install qemu-utils); skipping", name)
	}
	return path
}

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, needTool(t, name), args...).CombinedOutput()
	return string(out), err
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// serveNBD serves s on a unix socket and returns the socket path.
func serveNBD(t *testing.T, s *Service) (*nbd.Server, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "nvd") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &nbd.Server{Exports: s}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return srv, sock
}

func nbdURL(sock, export string) string { return "nbd+unix:///" + export + "?socket=" + sock }

// Attach over the API, then write and read the export with qemu-io and our
// client; wrong, detached and taken-over names are refused and detaching
// closes the connections. The image is clean after shutdown.
func TestNBDRoundTrip(t *testing.T) {
	needTool(t, "qemu-io")
	c, s, clk := newAPI(t)
	srv, sock := serveNBD(t, s)
	c.must(201, "POST", "/v1/volumes", `{"name":"vol","size":"16M"}`, nil)
	var g api.Grant
	c.must(200, "POST", "/v1/volumes/vol/attachments", `{"node":"n1","mode":"rw"}`, &g)

	mustRun(t, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 256k", "-c", "flush", nbdURL(sock, g.Export))
	out := mustRun(t, "qemu-io", "-f", "raw", "-c", "read -P 0x5a 1M 256k", "-c", "read -P 0 0 1M", nbdURL(sock, g.Export))
	if !strings.Contains(out, "read 262144/262144") {
		t.Fatalf("qemu-io read:\n%s", out)
	}

	// Wrong names look exactly like unknown ones.
	for _, name := range []string{"vol", "vol." + strings.Repeat("A", 43), g.Export + "x", ""} {
		if out, err := run(t, "qemu-io", "-f", "raw", "-c", "read 0 4k", nbdURL(sock, name)); err == nil {
			t.Fatalf("export %q was served:\n%s", name, out)
		}
	}
	msg := c.refused(409, api.CodeConflict, "POST", "/v1/volumes/vol/attachments", `{"node":"n2","mode":"rw"}`)
	if !strings.Contains(msg, `"n1"`) {
		t.Fatalf("conflict does not name the holder: %q", msg)
	}

	// Our client: a connection is closed when its attachment is detached,
	// and the name is refused afterwards.
	ctx := context.Background()
	cl, err := nbd.Dial(ctx, "unix", sock, nbd.ClientOptions{ExportName: g.Export})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	buf := make([]byte, 4096)
	if err := cl.Read(ctx, buf, 1<<20); err != nil || buf[0] != 0x5a {
		t.Fatalf("read: %v %x", err, buf[0])
	}
	c.must(204, "DELETE", "/v1/volumes/vol/attachments/n1", "", nil)
	if err := cl.Read(ctx, buf, 0); err == nil {
		t.Fatal("a connection of a detached attachment still reads")
	}
	if _, err := nbd.Dial(ctx, "unix", sock, nbd.ClientOptions{ExportName: g.Export}); err == nil {
		t.Fatal("a detached export name was served")
	}

	// Read-only attachment: reads, writes refused.
	var ro api.Grant
	c.must(200, "POST", "/v1/volumes/vol/attachments", `{"node":"n2","mode":"ro"}`, &ro)
	rc, err := nbd.Dial(ctx, "unix", sock, nbd.ClientOptions{ExportName: ro.Export})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := rc.Write(ctx, buf, 0, 0); !errors.Is(err, nbd.EPERM) {
		t.Fatalf("write to a read-only export: %v", err)
	}
	if err := rc.Read(ctx, buf, 1<<20); err != nil || buf[0] != 0x5a {
		t.Fatalf("ro read: %v", err)
	}

	// Lease lapses, another node takes over: the old connection is fenced.
	clk.Add(20 * time.Second)
	c.must(200, "POST", "/v1/volumes/vol/attachments", `{"node":"n3","mode":"rw"}`, &g)
	if err := rc.Read(ctx, buf, 0); err == nil {
		t.Fatal("a taken-over connection still reads")
	}
	mustRun(t, "qemu-io", "-f", "raw", "-c", "write -P 0x77 0 64k", "-c", "read -P 0x5a 1M 256k", nbdURL(sock, g.Export))

	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(s.dir, "vol.qcow2")
	mustRun(t, "qemu-img", "check", "-f", "qcow2", img)
	mustRun(t, "qemu-io", "-f", "qcow2", "-r", "-c", "read -P 0x77 0 64k", "-c", "read -P 0x5a 1M 256k", img)
}

// A clone reads its source's data and writes only to itself.
func TestNBDClone(t *testing.T) {
	needTool(t, "qemu-io")
	c, s, _ := newAPI(t)
	_, sock := serveNBD(t, s)
	c.must(201, "POST", "/v1/volumes", `{"name":"base","size":"8M"}`, nil)
	var g api.Grant
	c.must(200, "POST", "/v1/volumes/base/attachments", `{"node":"n1","mode":"rw"}`, &g)
	mustRun(t, "qemu-io", "-f", "raw", "-c", "write -P 0x11 0 1M", nbdURL(sock, g.Export))
	c.must(204, "DELETE", "/v1/volumes/base/attachments/n1", "", nil)
	c.must(201, "POST", "/v1/volumes", `{"name":"clone","from":"base"}`, nil)
	c.must(200, "POST", "/v1/volumes/clone/attachments", `{"node":"n1","mode":"rw"}`, &g)
	mustRun(t, "qemu-io", "-f", "raw", "-c", "read -P 0x11 0 1M", "-c", "write -P 0x22 0 64k", nbdURL(sock, g.Export))
	c.must(200, "POST", "/v1/volumes/base/attachments", `{"node":"n2","mode":"ro"}`, &g)
	out := mustRun(t, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0x11 0 1M", nbdURL(sock, g.Export))
	if !bytes.Contains([]byte(out), []byte("read 1048576/1048576")) {
		t.Fatalf("base after the clone was written:\n%s", out)
	}
}

// When Open fails (here: the service is closed), the NBD server's debug
// log says so without the export name's token (a credential).
func TestOpenFailureLogRedacted(t *testing.T) {
	s, _ := newService(t)
	mustCreate(t, s, "vol", 1<<20, "")
	g := mustAttach(t, s, "vol", "n1", "rw")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	log := logrus.New()
	log.SetOutput(&out)
	log.SetLevel(logrus.DebugLevel)
	dir, err := os.MkdirTemp("", "nvd")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	l, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &nbd.Server{Exports: s, Logger: log}
	go srv.Serve(l)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := nbd.Dial(ctx, "unix", l.Addr().String(), nbd.ClientOptions{ExportName: g.Export}); err == nil {
		c.Close()
		t.Fatal("served a volume whose image is gone")
	}
	srv.Shutdown(ctx)
	token := g.Export[strings.LastIndexByte(g.Export, '.')+1:]
	if strings.Contains(out.String(), token) {
		t.Fatalf("the export token is in the log:\n%s", out.String())
	}
	if !strings.Contains(out.String(), `vol.<redacted`) || !strings.Contains(out.String(), "refused") {
		t.Fatalf("no refusal naming the volume in the log:\n%s", out.String())
	}
}
