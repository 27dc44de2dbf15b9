//go:build e2e

package node

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// HostDocker is a dockerd on the host itself, with its own data, exec root,
// socket and network namespace, so it touches nothing of a Docker the
// machine may run nor the host's network. Its kernel has neither NBD nor
// NFS: use it for the calls that mount nothing (create, inspect, ls, rm) and
// for userspace attaches.
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
	// dockerd runs in a network namespace of its own (CLONE_NEWNET), the
	// one setting that leaves the host's network alone. Checked with
	// Docker 20.10 in a scratch namespace: with --bridge=none it deletes
	// an existing docker0 as it starts, and with it the network of the
	// host's own containers (issue 13); with a bridge
	// of our own (-b netvoltest0, made beforehand) it leaves docker0 alone
	// but gives that bridge 172.17.0.1/16 and its route, which may clash
	// with the host's docker0, sets net.ipv4.ip_forward=1, and leaves all
	// of it behind when it stops, as a killed test binary would leave the
	// bridge. A namespace goes with the last process in it. dockerd needs
	// no network here: the docker CLI and containerd reach it over unix
	// sockets; it reaches the plugin over its unix socket in
	// /run/docker/plugins (pathname sockets work across network
	// namespaces; the plugin itself runs in the host's and reaches the
	// storage daemon on 127.0.0.1 there); the suites' containers run with
	// --network none.
	d.Daemon = startDaemonIn(t, t, syscall.CLONE_NEWNET, filepath.Join(dir, "dockerd.log"), "dockerd", "--iptables=false", "--bridge=none",
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
