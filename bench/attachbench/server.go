package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// server is `netvol server` on loopback with its data in the work
// directory. The lease is long: nothing renews it during the benchmark.
type server struct {
	cmd     *exec.Cmd
	api     string
	nbdAddr string
	token   string
}

func startServer(c config) (*server, error) {
	nbdPort, apiPort := freePort(), freePort()
	data := filepath.Join(c.work, "server")
	s := &server{api: fmt.Sprintf("http://127.0.0.1:%d", apiPort), nbdAddr: fmt.Sprintf("127.0.0.1:%d", nbdPort)}
	log, err := os.Create(filepath.Join(c.work, "server.log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	s.cmd = exec.Command(c.netvol, "server", "--data", data, "--nbd-listen", s.nbdAddr,
		"--api-listen", strings.TrimPrefix(s.api, "http://"), "--lease-ttl", "24h")
	s.cmd.Stdout, s.cmd.Stderr = log, log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	if err := s.waitHealthy(); err != nil {
		s.stop()
		return nil, err
	}
	tok, err := os.ReadFile(filepath.Join(data, "token"))
	s.token = strings.TrimSpace(string(tok))
	return s, err
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *server) waitHealthy() error {
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get(s.api + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("netvol server not healthy within a minute")
}

func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// volume creates a volume and attaches it read-write; it returns the
// export name.
func (s *server) volume(ctx context.Context, name string, size int64) (string, error) {
	if err := s.post(ctx, "/v1/volumes", map[string]any{"name": name, "size": size}, nil); err != nil {
		return "", err
	}
	var g struct{ Export string }
	err := s.post(ctx, "/v1/volumes/"+name+"/attachments", map[string]any{"node": "bench", "mode": "rw"}, &g)
	return g.Export, err
}

func (s *server) post(ctx context.Context, path string, body, out any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.api+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s", path, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
