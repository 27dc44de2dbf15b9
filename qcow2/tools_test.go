package qcow2

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"testing"
)

// needTool skips outside CI when a reference tool is missing; in CI the
// environment is installed, so a missing tool is a failure.
func needTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found; .ci/run installs qemu-utils", name)
		}
		t.Skipf("%s not found (apt-get install qemu-utils)", name)
	}
}

// run runs a reference tool and returns its output and exit code.
func run(t testing.TB, name string, args ...string) (string, int) {
	t.Helper()
	needTool(t, name)
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return out.String(), 0
}

func mustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, code := run(t, name, args...)
	if code != 0 {
		t.Fatalf("%s %v: exit %d: %s", name, args, code, out)
	}
	return out
}

// checkClean asserts qemu-img check finds the image clean.
func checkClean(t testing.TB, path string) {
	t.Helper()
	out, code := run(t, "qemu-img", "check", "-f", "qcow2", path)
	if code != 0 {
		t.Fatalf("qemu-img check %s: exit %d:\n%s", path, code, out)
	}
}

// compareRaw asserts the image holds exactly the raw file's bytes.
func compareRaw(t testing.TB, img, raw string) {
	t.Helper()
	out, code := run(t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", img, raw)
	if code != 0 {
		t.Fatalf("qemu-img compare %s %s: exit %d: %s", img, raw, code, out)
	}
}
