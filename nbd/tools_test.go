package nbd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The tests in this file drive our server with clients we did not write:
// qemu-io, qemu-img, nbdinfo and nbdcopy.

// nbdURL is the NBD URI of export name on addr.
func nbdURL(network, addr, name string) string {
	if network == "unix" {
		return "nbd+unix:///" + name + "?socket=" + addr
	}
	_, port, _ := net.SplitHostPort(addr)
	return "nbd://127.0.0.1:" + port + "/" + name
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, needTool(t, name), args...)
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestQemuIO(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			_, mem, addr := memServer(t, 4<<20, network)
			out := run(t, "qemu-io", "-f", "raw", nbdURL(network, addr, "disk"),
				"-c", "write -P 0xab 0 64k",
				"-c", "write -P 0xcd -f 64k 64k", // -f: FUA
				"-c", "flush",
				"-c", "read -P 0xab 0 64k",
				"-c", "read -P 0xcd 64k 64k",
				"-c", "write -P 0x11 1M 128k",
				"-c", "discard 1M 64k",
				"-c", "read -P 0 1M 64k",
				"-c", "write -z 1088k 64k",
				"-c", "read -P 0 1088k 64k",
				"-c", "write -P 0x22 2M 64k",
				"-c", "write -z -u 2M 32k", // -u: may unmap
			)
			if strings.Contains(out, "fail") || strings.Contains(out, "error") {
				t.Fatalf("qemu-io reported a failure:\n%s", out)
			}
			if !bytes.Equal(mem.bytes(0, 65536), bytes.Repeat([]byte{0xab}, 65536)) ||
				!bytes.Equal(mem.bytes(2<<20, 32768), make([]byte, 32768)) ||
				!bytes.Equal(mem.bytes(2<<20+32768, 32768), bytes.Repeat([]byte{0x22}, 32768)) {
				t.Fatal("backend content differs from what qemu-io wrote")
			}
			if mem.flushes.Load() < 2 {
				t.Fatalf("flushes = %d, want flush and FUA to reach the backend", mem.flushes.Load())
			}
		})
	}
}

// TestReadOnlyExport checks a read-only export with qemu-io, nbdinfo and our
// client (writes are answered NBD_EPERM).
func TestReadOnlyExport(t *testing.T) {
	var exports ExportMap
	exports.Add(&Export{Name: "ro", Backend: newMem(1 << 20), ReadOnly: true})
	srv := &Server{Exports: &exports}
	addr := serve(t, srv, "tcp")
	url := nbdURL("tcp", addr, "ro")
	if out := run(t, "qemu-io", "-r", "-f", "raw", url, "-c", "read -P 0 0 4k"); !strings.Contains(out, "read 4096/4096") {
		t.Fatalf("qemu-io -r:\n%s", out)
	}
	if out := run(t, "nbdinfo", "--json", url); !strings.Contains(out, `"is_read_only": true`) {
		t.Fatalf("nbdinfo:\n%s", out)
	}
	c := dial(t, "tcp", addr, "ro")
	if c.Info().Flags&FlagReadOnly == 0 {
		t.Fatalf("flags %s lack NBD_FLAG_READ_ONLY", c.Info().Flags)
	}
	ctx := testCtx(t)
	for name, err := range map[string]error{
		"write":        c.Write(ctx, make([]byte, 4096), 0, 0),
		"trim":         c.Trim(ctx, 0, 4096, 0),
		"write zeroes": c.WriteZeroes(ctx, 0, 4096, 0),
	} {
		if !errors.Is(err, EPERM) {
			t.Errorf("%s: %v, want NBD_EPERM", name, err)
		}
	}
	if err := c.Read(ctx, make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
}

func TestQemuImgInfo(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			_, _, addr := memServer(t, 3<<20, network)
			out := run(t, "qemu-img", "info", "--output=json", nbdURL(network, addr, "disk"))
			var info struct {
				VirtualSize int64 `json:"virtual-size"`
			}
			if err := json.Unmarshal([]byte(out), &info); err != nil || info.VirtualSize != 3<<20 {
				t.Fatalf("qemu-img info: %v\n%s", err, out)
			}
		})
	}
}

func TestNbdinfo(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			_, _, addr := memServer(t, 5<<20, network)
			out := run(t, "nbdinfo", "--json", nbdURL(network, addr, "disk"))
			var info struct {
				Exports []struct {
					Name        string `json:"export-name"`
					Description string `json:"description"`
					Size        int64  `json:"export-size"`
					ReadOnly    bool   `json:"is_read_only"`
					MultiConn   bool   `json:"can_multi_conn"`
					Flush       bool   `json:"can_flush"`
					FUA         bool   `json:"can_fua"`
					Trim        bool   `json:"can_trim"`
					Zero        bool   `json:"can_zero"`
					MaxBlock    int64  `json:"block_size_maximum"`
				} `json:"exports"`
			}
			if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 {
				t.Fatalf("nbdinfo: %v\n%s", err, out)
			}
			e := info.Exports[0]
			if e.Name != "disk" || e.Description != "test disk" || e.Size != 5<<20 || e.ReadOnly ||
				!e.MultiConn || !e.Flush || !e.FUA || !e.Trim || !e.Zero || e.MaxBlock != MaxPayloadSize {
				t.Fatalf("nbdinfo: %+v\n%s", e, out)
			}
		})
	}
}

func TestNbdinfoList(t *testing.T) {
	for _, list := range []bool{false, true} {
		t.Run(fmt.Sprint("ListExports=", list), func(t *testing.T) {
			var exports ExportMap
			exports.Add(&Export{Name: "one", Description: "first", Backend: newMem(1 << 20)})
			exports.Add(&Export{Name: "two", Backend: newMem(2 << 20)})
			srv := &Server{Exports: &exports, ListExports: list}
			addr := serve(t, srv, "tcp")
			out := run(t, "nbdinfo", "--list", "--json", nbdURL("tcp", addr, ""))
			has := strings.Contains(out, `"one"`) && strings.Contains(out, `"two"`)
			if has != list {
				t.Fatalf("nbdinfo --list with ListExports=%v:\n%s", list, out)
			}
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			got, err := ListExports(testCtx(t), conn)
			if err != nil || (len(got) == 2) != list {
				t.Fatalf("ListExports = %v, %v", got, err)
			}
		})
	}
}

func TestNbdcopy(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			const size = 8 << 20
			_, mem, addr := memServer(t, size, network)
			dir := t.TempDir()
			in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
			want := pattern(size, 5)
			clear(want[1<<20 : 3<<20]) // a hole
			if err := os.WriteFile(in, want, 0o600); err != nil {
				t.Fatal(err)
			}
			url := nbdURL(network, addr, "disk")
			run(t, "nbdcopy", "--flush", in, url)
			if !bytes.Equal(mem.bytes(0, size), want) {
				t.Fatal("nbdcopy in: export differs from the source")
			}
			run(t, "nbdcopy", url, out)
			got, err := os.ReadFile(out)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("nbdcopy out: file differs (%v)", err)
			}
		})
	}
}

// TestNbdinfoTLS checks our STARTTLS against libnbd's (GnuTLS) client, with
// the server requiring TLS.
func TestNbdinfoTLS(t *testing.T) {
	serverTLS, _, certPEM := selfSignedPEM(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca-cert.pem"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	var exports ExportMap
	exports.Add(&Export{Name: "disk", Backend: newMem(1 << 20)})
	addr := serve(t, &Server{Exports: &exports, TLSConfig: serverTLS, TLSRequired: true}, "tcp")
	_, port, _ := net.SplitHostPort(addr)
	out := run(t, "nbdinfo", "--json", "nbds://127.0.0.1:"+port+"/disk?tls-certificates="+dir)
	if !strings.Contains(out, `"export-size": 1048576`) {
		t.Fatalf("nbdinfo over TLS:\n%s", out)
	}
	// A plain client is refused.
	cmd := exec.Command(needTool(t, "nbdinfo"), nbdURL("tcp", addr, "disk"))
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("plain nbdinfo accepted by a TLS-only server:\n%s", out)
	}
}
