//go:build e2e

package node

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// cacheEnv names the directory where a test run keeps what it builds once for
// every node (initramfs, agent, busybox image). Main sets it for the run; a
// developer may set it to keep the artifacts between runs.
const cacheEnv = "NETVOL_E2E_CACHE"

// Main runs a test binary's tests with a per-run artifact cache and removes
// the cache afterwards, and stops the rpcbind the NFS fixtures started, if
// they started one. Call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(node.Main(m)) }
//
// The cache lives in the environment rather than in a package variable so the
// harness holds no mutable global state; the rpcbind is the one exception,
// since the host has one for all tests (see ensureRPCBind).
func Main(m *testing.M) int {
	defer stopRPCBind()
	if os.Getenv(cacheEnv) != "" {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "netvol-e2e-cache-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.Setenv(cacheEnv, dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

// cacheDir returns the run's cache, or a directory private to the test when
// the test binary did not go through Main.
func cacheDir(t testing.TB) string {
	if dir := os.Getenv(cacheEnv); dir != "" {
		return dir
	}
	return t.TempDir()
}

// cached returns dir/name, calling build to create it first unless an
// earlier call did. A file lock serialises parallel tests, so each artifact
// is built once per run; build writes to a temporary path that is renamed
// into place, so a failed build leaves nothing behind.
func cached(dir, name string, build func(tmp string) error) (string, error) {
	final := filepath.Join(dir, name)
	unlock, err := lockFile(filepath.Join(dir, name+".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	tmp := final + ".tmp"
	_ = os.RemoveAll(tmp)
	if err := build(tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("building %s: %w", name, err)
	}
	return final, os.Rename(tmp, final)
}

func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
