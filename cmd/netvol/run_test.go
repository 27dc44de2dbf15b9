package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pluginClient speaks Docker's side of the VolumeDriver protocol.
type pluginClient struct {
	t    *testing.T
	http *http.Client
}

func newPluginClient(t *testing.T, socket string) *pluginClient {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}
	return &pluginClient{t: t, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// call posts req to /VolumeDriver.<method> and decodes the answer into out;
// it returns the answer's Err.
func (c *pluginClient) call(method string, req, out any) string {
	c.t.Helper()
	body, _ := json.Marshal(req)
	resp, err := c.http.Post("http://plugin/VolumeDriver."+method, "application/vnd.docker.plugins.v1.2+json", bytes.NewReader(body))
	if err != nil {
		c.t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		c.t.Fatalf("%s: %v", method, err)
	}
	var e struct{ Err string }
	json.Unmarshal(raw, &e)
	if out != nil {
		json.Unmarshal(raw, out)
	}
	return e.Err
}

// TestRunEmbedded starts `netvol run` in process (storage daemon and plugin
// on loopback and a temporary socket) and drives it as Docker does.
func TestRunEmbedded(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "netvol.sock")
	f := pluginFlags{stateDir: filepath.Join(dir, "state"), socket: socket, node: "solo", logLevel: "warn",
		defaultSize: "16M", nfsVersion: "4.1"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runEmbedded(ctx, f, "127.0.0.1:0", "127.0.0.1:0") }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if st, err := os.Stat(socket); err == nil && st.Mode()&os.ModeSocket != 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("netvol run ended: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no plugin socket after 20 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c := newPluginClient(t, socket)
	if e := c.call("Create", map[string]any{"Name": "v1", "Opts": map[string]string{"size": "32M"}}, nil); e != "" {
		t.Fatalf("Create: %s", e)
	}
	if e := c.call("Create", map[string]any{"Name": "v2"}, nil); e != "" {
		t.Fatalf("Create: %s", e)
	}
	if e := c.call("Create", map[string]any{"Name": "../x"}, nil); !strings.Contains(e, "volume name") {
		t.Fatalf("Create of a bad name: %q", e)
	}
	var got struct {
		Volume struct{ Status map[string]any }
	}
	if e := c.call("Get", map[string]string{"Name": "v1"}, &got); e != "" || got.Volume.Status["size"] != "33554432" {
		t.Fatalf("Get v1: %q %+v", e, got)
	}
	if e := c.call("Get", map[string]string{"Name": "v2"}, &got); e != "" || got.Volume.Status["size"] != "16777216" {
		t.Fatalf("Get v2 (default size): %q %+v", e, got)
	}
	var list struct{ Volumes []struct{ Name string } }
	if e := c.call("List", map[string]string{}, &list); e != "" || len(list.Volumes) != 2 {
		t.Fatalf("List: %q %+v", e, list)
	}
	var caps struct{ Capabilities struct{ Scope string } }
	c.call("Capabilities", map[string]string{}, &caps)
	if caps.Capabilities.Scope != "global" {
		t.Fatalf("Capabilities: %+v", caps)
	}
	for _, n := range []string{"v1", "v2"} {
		if e := c.call("Remove", map[string]string{"Name": n}, nil); e != "" {
			t.Fatalf("Remove %s: %s", n, e)
		}
	}
	if e := c.call("Get", map[string]string{"Name": "v1"}, nil); !strings.Contains(e, "no such volume") {
		t.Fatalf("Get after Remove: %q", e)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("netvol run: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("netvol run did not stop")
	}
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
}
