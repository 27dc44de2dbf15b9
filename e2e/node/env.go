//go:build e2e

package node

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// InCI reports whether the suite runs in CI (CI=true). There the environment
// is installed by .ci/run (make deps), so anything missing is a failure, not a skip.
func InCI() bool {
	v := os.Getenv("CI")
	return v == "true" || v == "1"
}

// Unavailable ends the test because the environment lacks something: a skip
// on a developer's machine, a failure in CI.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("e2e environment incomplete (CI=true, so this fails instead of skipping): %s", msg)
	}
	t.Skipf("e2e: skipping: %s", msg)
}

// RequireRoot stops the test unless it runs as root: nodes mount tmpfs and
// the fixtures start daemons that bind privileged ports.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (running as uid %d)", os.Geteuid())
	}
}

// RequireTools stops the test unless every named program is installed.
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := lookTool(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		Unavailable(t, "missing programs %v (as root, `make deps` installs them)", missing)
	}
}

// lookTool finds a program on PATH or in the sbin directories, which a
// non-login root shell may not have on its PATH.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH or in sbin", name)
}

// command builds an exec.Cmd for a tool found with lookTool, so fixtures work
// whatever the caller's PATH.
func command(name string, args ...string) *exec.Cmd {
	if p, err := lookTool(name); err == nil {
		name = p
	}
	return exec.Command(name, args...)
}
