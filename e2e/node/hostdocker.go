//go:build e2e

package node

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// HostDocker is a dockerd on the host itself, with its own data, exec root
// and socket, so it touches nothing of a Docker the machine may run. Its
// kernel has neither NBD nor NFS: use it for the calls that mount nothing
// (create, inspect, ls, rm).
type HostDocker struct {
	Socket string
	*Daemon
}

// StartHostDocker starts dockerd and waits until it answers.
func StartHostDocker(t testing.TB) *HostDocker {
	t.Helper()
	RequireRoot(t)
	RequireTools(t, "dockerd", "docker", "containerd")
	dir := t.TempDir()
	d := &HostDocker{Socket: filepath.Join(dir, "docker.sock")}
	d.Daemon = StartDaemon(t, filepath.Join(dir, "dockerd.log"), "dockerd", "--iptables=false", "--bridge=none",
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"), "-H", "unix://"+d.Socket,
		"--containerd-namespace", "netvol-e2e", "--containerd-plugins-namespace", "netvol-e2e-plugins")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		if _, err := d.Docker(ctx, "version"); err == nil {
			return d
		}
		select {
		case <-d.exited:
			t.Fatalf("dockerd exited\n%s", d.LogTail(30))
		case <-ctx.Done():
			t.Fatalf("dockerd not ready in 2 minutes\n%s", d.LogTail(30))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Docker runs the docker CLI against this daemon and returns its combined
// output; the error includes that output.
func (d *HostDocker) Docker(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", append([]string{"-H", "unix://" + d.Socket}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), &cliError{args: args, out: strings.TrimSpace(string(out)), err: err}
	}
	return string(out), nil
}

type cliError struct {
	args []string
	out  string
	err  error
}

func (e *cliError) Error() string {
	return "docker " + strings.Join(e.args, " ") + ": " + e.err.Error() + ": " + e.out
}
