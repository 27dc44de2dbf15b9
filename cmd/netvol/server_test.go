package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/nbd"
)

func TestServerEnvTwins(t *testing.T) {
	t.Setenv("NETVOL_DATA", "/srv/netvol")
	t.Setenv("NETVOL_NBD_LISTEN", "unix:/run/nbd.sock")
	t.Setenv("NETVOL_API_LISTEN", "0.0.0.0:1")
	t.Setenv("NETVOL_TOKEN_FILE", "/etc/tok")
	t.Setenv("NETVOL_LIST_EXPORTS", "true")
	t.Setenv("NETVOL_MAX_VOLUME_SIZE", "2T")
	t.Setenv("NETVOL_LEASE_TTL", "30s")
	t.Setenv("NETVOL_TLS_CERT", "/etc/netvol/cert.pem")
	t.Setenv("NETVOL_TLS_KEY", "/etc/netvol/key.pem")
	t.Setenv("NETVOL_TLS_REQUIRED", "1")
	t.Setenv("NETVOL_NBD_HANDSHAKE_TIMEOUT", "10s")
	t.Setenv("NETVOL_NBD_MAX_HANDSHAKES", "128")
	t.Setenv("NETVOL_NBD_MAX_EXPORT_CONNS", "8")
	t.Setenv("NETVOL_NBD_REPLY_TIMEOUT", "5m")
	fl := newServerCommand().Flags()
	for name, want := range map[string]string{"data": "/srv/netvol", "nbd-listen": "unix:/run/nbd.sock",
		"api-listen": "0.0.0.0:1", "token-file": "/etc/tok", "list-exports": "true",
		"max-volume-size": "2T", "lease-ttl": "30s", "tls-cert": "/etc/netvol/cert.pem",
		"tls-key": "/etc/netvol/key.pem", "tls-required": "true",
		"nbd-handshake-timeout": "10s", "nbd-max-handshakes": "128", "nbd-max-export-conns": "8", "nbd-reply-timeout": "5m0s"} {
		if got := fl.Lookup(name).Value.String(); got != want {
			t.Errorf("--%s = %q from the environment, want %q", name, got, want)
		}
	}
}

func TestServerFlagsRefused(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []serverFlags{
		{maxSize: "1T", leaseTTL: time.Second, logLevel: "info"},                                                   // no --data
		{data: dir, maxSize: "lots", leaseTTL: time.Second, logLevel: "info"},                                      // bad size
		{data: dir, maxSize: "1T", leaseTTL: 0, logLevel: "info"},                                                  // no lease
		{data: dir, maxSize: "1T", leaseTTL: time.Second, logLevel: "loud"},                                        // bad level
		{data: dir, maxSize: "1T", leaseTTL: time.Second, logLevel: "info", tlsRequired: true},                     // required without a cert
		{data: dir, maxSize: "1T", leaseTTL: time.Second, logLevel: "info", tlsCert: filepath.Join(dir, "c")},      // cert without key
		{data: dir, maxSize: "1T", leaseTTL: time.Second, logLevel: "info", tlsKey: filepath.Join(dir, "k")},       // key without cert
		{data: dir, maxSize: "1T", leaseTTL: time.Second, logLevel: "info", tlsCert: "/nonexistent", tlsKey: "/x"}, // unreadable
		{data: dir, maxSize: "1T", leaseTTL: time.Second, logLevel: "info", maxExportConns: -1},                    // negative limit
		{data: dir, maxSize: "1T", leaseTTL: time.Second, logLevel: "info", handshakeTimeout: -time.Second},        // negative timeout
	} {
		if err := runServer(context.Background(), f); err == nil {
			t.Errorf("%+v accepted", f)
		}
	}
}

// runServer in process: create and attach over the API, write and read over
// NBD, cancel (as SIGTERM does), and find the image clean.
func TestRunServer(t *testing.T) {
	dir := t.TempDir()
	sockDir, _ := os.MkdirTemp("", "nvs")
	defer os.RemoveAll(sockDir)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	apiAddr := l.Addr().String()
	l.Close()
	f := serverFlags{data: filepath.Join(dir, "data"), nbdListen: "unix:" + filepath.Join(sockDir, "s"),
		apiListen: apiAddr, maxSize: "1G", leaseTTL: 15 * time.Second, logLevel: "error"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runServer(ctx, f) }()
	defer cancel()

	call := func(method, path, body string, out any) int {
		t.Helper()
		for range 50 {
			tok, err := os.ReadFile(filepath.Join(f.data, "token"))
			if err == nil {
				req, _ := http.NewRequest(method, "http://"+apiAddr+path, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					defer resp.Body.Close()
					if out != nil {
						json.NewDecoder(resp.Body).Decode(out)
					}
					return resp.StatusCode
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s %s: the server did not answer", method, path)
		return 0
	}
	if code := call("POST", "/v1/volumes", `{"name":"v","size":"8M"}`, nil); code != 201 {
		t.Fatalf("create: %d", code)
	}
	var g struct{ Export string }
	if code := call("POST", "/v1/volumes/v/attachments", `{"node":"n","mode":"rw"}`, &g); code != 200 {
		t.Fatalf("attach: %d", code)
	}
	c, err := nbd.Dial(ctx, "unix", filepath.Join(sockDir, "s"), nbd.ClientOptions{ExportName: g.Export})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0xc3}, 64<<10)
	if err := c.Write(ctx, data, 1<<20, nbd.CmdFlagFUA); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := c.Read(ctx, got, 1<<20); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	checkMetrics(t, apiAddr, filepath.Join(f.data, "token"))
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("runServer: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("runServer did not return after cancel")
	}
	c.Close()
	if _, err := exec.LookPath("qemu-img"); err == nil {
		img := filepath.Join(f.data, "volumes", "v.qcow2")
		if out, err := exec.Command("qemu-img", "check", "-f", "qcow2", img).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img check: %v\n%s", err, out)
		}
		if out, err := exec.Command("qemu-io", "-f", "qcow2", "-r", "-c", "read -P 0xc3 1M 64k", img).CombinedOutput(); err != nil {
			t.Fatalf("qemu-io: %v\n%s", err, out)
		}
	}
}

// checkMetrics scrapes the daemon's /metrics after one attach and a 64 KiB
// write on one connection.
func checkMetrics(t *testing.T, apiAddr, tokenFile string) {
	t.Helper()
	tok, _ := os.ReadFile(tokenFile)
	req, _ := http.NewRequest("GET", "http://"+apiAddr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{"netvol_volumes 1", "netvol_attachments 1", "netvol_attaches_total 1",
		"netvol_nbd_connections 1", `netvol_nbd_requests_total{cmd="write"} 1`, `netvol_nbd_bytes_total{cmd="write"} 65536`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	req.Header.Del("Authorization")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/metrics without the token: %v %v", resp.Status, err)
	}
}
