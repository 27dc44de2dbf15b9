//go:build e2e

package node

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const modulePath = "github.com/netvol/netvol"

// RepoRoot returns the directory holding netvol's go.mod. It starts from this
// source file's location, which does not depend on the working directory the
// test runs in, and falls back to `go env GOMOD`.
func RepoRoot() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		if root, ok := findModule(filepath.Dir(file)); ok {
			return root, nil
		}
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("locating the repository: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("locating the repository: not inside the %s module", modulePath)
	}
	return filepath.Dir(gomod), nil
}

func findModule(dir string) (string, bool) {
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module "+modulePath+"\n")) {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// NetvolBinary returns the path of the netvol binary that `make build` left in
// <repo>/bin/netvol. Nodes see the host's root read-only at the same paths,
// so the same path runs the binary inside a node; a clone under a path nodes
// cover with tmpfs (such as /tmp) gets a copy under /opt instead.
func NetvolBinary(t testing.TB) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "bin", "netvol")
	st, err := os.Stat(bin)
	if err != nil || st.Mode()&0o111 == 0 {
		t.Fatalf("netvol binary %s missing or not executable: run `make build` first (`make e2e` does)", bin)
	}
	if _, hidden := shadowedInGuest(bin); hidden {
		// A clone under /tmp (CI may clone anywhere): nodes cover /tmp with a
		// tmpfs, so hand them a copy on a path they see through 9p.
		return copyVisible(t, bin)
	}
	return bin
}

// copyVisible copies bin to a directory under /opt, which nodes see, and
// removes it when the test ends.
func copyVisible(t testing.TB, bin string) string {
	t.Helper()
	dir, err := os.MkdirTemp("/opt", "netvol-e2e-")
	if err != nil {
		t.Fatalf("copying the netvol binary where nodes see it: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "netvol")
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// shadowedInGuest reports whether a host path is hidden inside nodes by one
// of their writable tmpfs mounts.
func shadowedInGuest(path string) (string, bool) {
	for _, dir := range guestTmpfsDirs() {
		if path == dir || strings.HasPrefix(path, dir+"/") {
			return dir, true
		}
	}
	return "", false
}

// PluginDir returns the managed-plugin directory that `make plugin` left in
// <repo>/build/plugin (config.json and rootfs/), as a path nodes see.
func PluginDir(t testing.TB) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "build", "plugin")
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
		t.Fatalf("plugin directory %s missing: run `make plugin` first (`make e2e` does)", dir)
	}
	if _, hidden := shadowedInGuest(dir); !hidden {
		return dir
	}
	cp, err := os.MkdirTemp("/opt", "netvol-plugin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(cp) })
	if out, err := command("cp", "-a", dir+"/.", cp).CombinedOutput(); err != nil {
		t.Fatalf("copying the plugin directory: %v: %s", err, out)
	}
	return cp
}
