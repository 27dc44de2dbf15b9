//go:build e2e

package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// NetvolServer is `netvol server` running on the host: the storage node of
// the suites. Nodes reach it at HostAddr with the same ports.
type NetvolServer struct {
	NBDPort, APIPort int
	DataDir          string // qcow2 images and the BoltDB registry
	Token            string // bearer token of the control API
	TokenFile        string
	*Daemon
	args  []string
	owner testing.TB // the test the server serves; it stops the server
}

// StartNetvolServer starts the freshly built netvol as a storage daemon on
// loopback with its own ports and data directory, and waits for /healthz.
// extra flags are appended (e.g. "--lease-ttl", "5s").
func StartNetvolServer(t testing.TB, extra ...string) *NetvolServer {
	t.Helper()
	return startNetvolServer(t, nil, extra...)
}

// startNetvolServer starts netvol server behind the command prefix (none,
// or env(1) and variables: StartNetvolServerEnv).
func startNetvolServer(t testing.TB, prefix []string, extra ...string) *NetvolServer {
	t.Helper()
	dir := t.TempDir()
	s := &NetvolServer{NBDPort: FreePort(t), APIPort: FreePort(t), DataDir: filepath.Join(dir, "data"),
		TokenFile: filepath.Join(dir, "token"), owner: t}
	s.args = append(append(prefix, NetvolBinary(t), "server", "--data", s.DataDir, "--token-file", s.TokenFile,
		"--nbd-listen", fmt.Sprintf("127.0.0.1:%d", s.NBDPort), "--api-listen", fmt.Sprintf("127.0.0.1:%d", s.APIPort)), extra...)
	s.start(t, filepath.Join(dir, "server.log"))
	tok, err := os.ReadFile(s.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	s.Token = strings.TrimSpace(string(tok))
	return s
}

func (s *NetvolServer) start(t testing.TB, log string) {
	t.Helper()
	s.Daemon = startDaemon(t, s.owner, log, s.args...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		if st, err := s.health(ctx); err == nil && st == "ok" {
			return
		}
		select {
		case <-s.exited:
			t.Fatalf("netvol server exited\n%s", s.LogTail(30))
		case <-ctx.Done():
			t.Fatalf("netvol server not healthy within a minute\n%s", s.LogTail(30))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Restart starts the server again with the same data, ports and token
// (after Stop or Kill); it runs until the test that started it ends, also
// when t is a subtest.
func (s *NetvolServer) Restart(t testing.TB) { s.start(t, s.LogPath) }

func (s *NetvolServer) health(ctx context.Context) (string, error) { return health(ctx, s.URL("")) }

// health asks the control API at url (http://host:port) for /healthz.
func health(ctx context.Context, url string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/healthz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var h struct{ Status string }
	err = json.NewDecoder(resp.Body).Decode(&h)
	return h.Status, err
}

// URL is the control API's address for a client at host ("" = the host
// itself; HostAddr inside a node).
func (s *NetvolServer) URL(host string) string {
	if host == "" {
		host = "127.0.0.1"
	}
	return fmt.Sprintf("http://%s:%d", host, s.APIPort)
}

// PluginArgs are the flags of `netvol plugin` in a node against this server.
func (s *NetvolServer) PluginArgs() string {
	return fmt.Sprintf("--server %s --token %s", s.URL(HostAddr), s.Token)
}
