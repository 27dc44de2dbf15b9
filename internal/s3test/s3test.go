// Package s3test starts a real S3 server for tests: versitygw (a
// production S3 gateway, Apache-2.0) with its POSIX backend, every
// subdirectory of its directory a bucket. scripts/deps.sh installs the
// pinned version (Version) with go install; tests find it on PATH, in
// $GOPATH/bin or at $NETVOL_VERSITYGW. Without it they skip, except
// under CI=true, where a missing server fails them.
package s3test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Version is the versitygw release the tests are checked with.
const Version = "v1.8.0"

// Credentials of the test server (it serves loopback only).
const (
	AccessKey = "netvoltest"
	SecretKey = "netvoltestsecret"
	Region    = "us-east-1"
)

// Server is a running versitygw.
type Server struct {
	Endpoint string // http://127.0.0.1:PORT
	Dir      string // its POSIX root: each subdirectory is a bucket
}

// Binary finds versitygw, or "" when it is not installed.
func Binary() string {
	if p := os.Getenv("NETVOL_VERSITYGW"); p != "" {
		return p
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		home, _ := os.UserHomeDir()
		gopath = filepath.Join(home, "go")
	}
	p := filepath.Join(gopath, "bin", "versitygw")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// Start runs versitygw for the test with the given buckets. It is stopped
// when the test ends. SetEnv or CredentialsFile hand its credentials on.
func Start(t testing.TB, buckets ...string) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("versitygw is not installed (scripts/deps.sh installs %s)", Version)
		}
		t.Skipf("versitygw is not installed (go install github.com/versity/versitygw/cmd/versitygw@%s)", Version)
	}
	dir := t.TempDir()
	for _, b := range buckets {
		if err := os.Mkdir(filepath.Join(dir, b), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--access", AccessKey, "--secret", SecretKey, "--port", addr, "posix", dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY=", "ROOT_SECRET_KEY=")
	logf, err := os.Create(filepath.Join(t.TempDir(), "versitygw.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting versitygw: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		logf.Close()
	})
	if err := waitListen(addr, 20*time.Second); err != nil {
		log, _ := os.ReadFile(logf.Name())
		t.Fatalf("versitygw did not listen on %s: %v\n%s", addr, err, log)
	}
	return &Server{Endpoint: "http://" + addr, Dir: dir}
}

// SetEnv sets the test's AWS_* environment to the server's credentials
// (not in parallel tests).
func (s *Server) SetEnv(t testing.TB) {
	t.Setenv("AWS_ACCESS_KEY_ID", AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", SecretKey)
	t.Setenv("AWS_REGION", Region)
}

// CredentialsFile writes the credentials as an AWS shared credentials
// file (profile default), for AWS_SHARED_CREDENTIALS_FILE.
func (s *Server) CredentialsFile(t testing.TB) string {
	p := filepath.Join(t.TempDir(), "credentials")
	data := fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", AccessKey, SecretKey)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitListen(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w (after %s)", err, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
