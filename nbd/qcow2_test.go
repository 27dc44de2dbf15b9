package nbd

import (
	"bytes"
	"context"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/qcow2"
)

// *qcow2.Image is what the storage daemon serves, WRITE_ZEROES included.
var (
	_ Backend    = (*qcow2.Image)(nil)
	_ ZeroWriter = (*qcow2.Image)(nil)
)

// serveImages serves each image under its map key and returns the address.
func serveImages(t *testing.T, images map[string]*qcow2.Image) (*Server, string) {
	t.Helper()
	var exports ExportMap
	for name, img := range images {
		exports.Add(&Export{Name: name, Backend: img})
	}
	srv := &Server{Exports: &exports}
	dir, err := os.MkdirTemp("", "nbd") // short path: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	return srv, l.Addr().String()
}

func shutdown(t *testing.T, srv *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// Real clients (qemu-io, nbdcopy) write through our server into a qcow2
// image; afterwards qemu-img finds it clean and byte-identical to the source.
func TestQcow2OverNBD(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vol.qcow2")
	img, err := qcow2.Create(path, 32<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "src.raw")
	data := make([]byte, 32<<20)
	rand.New(rand.NewSource(1)).Read(data[:20<<20])
	os.WriteFile(src, data, 0o600)

	srv, addr := serveImages(t, map[string]*qcow2.Image{"vol": img})
	url := nbdURL("unix", addr, "vol")
	run(t, "nbdcopy", src, url)
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x42 21M 1M", "-c", "flush",
		"-c", "discard 4M 4M", "-c", "write -z 10M 64k", "-c", "read -P 0x42 21M 1M", url)
	copy(data[21<<20:22<<20], bytes.Repeat([]byte{0x42}, 1<<20))
	clear(data[4<<20 : 8<<20])
	clear(data[10<<20 : 10<<20+64<<10])
	os.WriteFile(src, data, 0o600)
	out := filepath.Join(dir, "out.raw")
	run(t, "nbdcopy", url, out)
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, data) {
		t.Fatal("data read over NBD differs from what was written")
	}
	shutdown(t, srv)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	run(t, "qemu-img", "check", "-f", "qcow2", path)
	run(t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", path, src)
}

// A template is written, clones of it are written independently over NBD,
// and every image reads back exactly what was written to it.
func TestTemplateClonesOverNBD(t *testing.T) {
	dir := t.TempDir()
	tplPath := filepath.Join(dir, "template.qcow2")
	tpl, err := qcow2.Create(tplPath, 8<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	tpl.WriteAt(bytes.Repeat([]byte{0x10}, 8<<20), 0)
	if err := tpl.Close(); err != nil {
		t.Fatal(err)
	}
	images := map[string]*qcow2.Image{}
	for _, name := range []string{"c1", "c2", "c3"} {
		img, err := qcow2.Create(filepath.Join(dir, name+".qcow2"), 0, &qcow2.CreateOptions{BackingFile: "template.qcow2"})
		if err != nil {
			t.Fatal(err)
		}
		images[name] = img
	}
	srv, addr := serveImages(t, images)
	for i, name := range []string{"c1", "c2", "c3"} {
		pat := []string{"0x21", "0x22", "0x23"}[i]
		off := []string{"0", "1M", "7M"}[i]
		run(t, "qemu-io", "-f", "raw", "-c", "write -P "+pat+" "+off+" 12k", nbdURL("unix", addr, name))
	}
	for i, name := range []string{"c1", "c2", "c3"} {
		pat := []string{"0x21", "0x22", "0x23"}[i]
		off := []string{"0", "1M", "7M"}[i]
		run(t, "qemu-io", "-f", "raw", "-c", "read -P "+pat+" "+off+" 12k",
			"-c", "read -P 0x10 3M 1M", nbdURL("unix", addr, name))
	}
	shutdown(t, srv)
	for name, img := range images {
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		run(t, "qemu-img", "check", "-f", "qcow2", filepath.Join(dir, name+".qcow2"))
	}
	run(t, "qemu-io", "-f", "qcow2", "-r", "-c", "read -P 0x10 0 8M", tplPath)
}

// Issue 12: qemu-io's discard and write -z (with and without -u, which it
// sends as WRITE_ZEROES without and with NO_HOLE) at the end of a disk of
// 64 MiB + 8 KiB change only the bytes asked for.
func TestQcow2ZeroingNearEndOverNBD(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vol.qcow2")
	img, err := qcow2.Create(path, 64<<20+8<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, addr := serveImages(t, map[string]*qcow2.Image{"vol": img})
	url := nbdURL("unix", addr, "vol")
	// 67108864 = 64M, 67112960 = 64M+4K.
	for _, cmd := range []string{"discard 67112960 4k", "write -z -u 67112960 4k", "write -z 67112960 4k"} {
		t.Run(cmd, func(t *testing.T) {
			out := run(t, "qemu-io", "-f", "raw", url,
				"-c", "write -P 0xaa 64M 8k", "-c", "flush", "-c", cmd,
				"-c", "read -P 0xaa 64M 4k", "-c", "read -P 0 67112960 4k")
			if strings.Contains(out, "fail") || strings.Contains(out, "error") {
				t.Errorf("%s changed other bytes:\n%s", cmd, out)
			}
		})
	}
	shutdown(t, srv)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	run(t, "qemu-img", "check", "-f", "qcow2", path)
	run(t, "qemu-io", "-f", "qcow2", "-r", "-c", "read -P 0xaa 64M 4k", "-c", "read -P 0 67112960 4k", path)
}
