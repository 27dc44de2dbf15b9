//go:build e2e

package node

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Daemon is a long-running process a fixture started on the host (qemu-nbd,
// rpcbind, ganesha, later `netvol server`). It is stopped when the test
// ends, and killed with the test binary if cleanups never run.
type Daemon struct {
	Name    string
	LogPath string // stdout and stderr, appended

	cmd    *exec.Cmd
	exited chan struct{}
}

// StartDaemon starts argv[0] (looked up on PATH and in sbin) with its output
// in logPath, and registers its shutdown with t.
func StartDaemon(t testing.TB, logPath string, argv ...string) *Daemon {
	t.Helper()
	return startDaemon(t, t, logPath, argv...)
}

// startDaemon is StartDaemon with the shutdown registered with owner, which
// may outlive t (a daemon restarted by a subtest serves the whole test).
func startDaemon(t, owner testing.TB, logPath string, argv ...string) *Daemon {
	t.Helper()
	return startDaemonIn(t, owner, 0, logPath, argv...)
}

// startDaemonIn is startDaemon with extra clone flags for the process, such
// as syscall.CLONE_NEWNET for a network namespace of its own.
func startDaemonIn(t, owner testing.TB, cloneflags uintptr, logPath string, argv ...string) *Daemon {
	t.Helper()
	d, err := spawnDaemon(cloneflags, logPath, argv...)
	if err != nil {
		t.Fatal(err)
	}
	owner.Cleanup(d.Stop)
	return d
}

// spawnDaemon starts a daemon that no test owns: the caller stops it. It
// dies with the test binary all the same.
func spawnDaemon(cloneflags uintptr, logPath string, argv ...string) (*Daemon, error) {
	log, err := os.OpenFile(logPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Cloneflags: cloneflags}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	d := &Daemon{Name: argv[0], LogPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(d.exited) }()
	return d, nil
}

// Stop asks the daemon to terminate and kills it if it has not within ten
// seconds. Stopping a stopped daemon does nothing.
func (d *Daemon) Stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
}

// Kill ends the daemon at once, as a crash would.
func (d *Daemon) Kill() {
	_ = d.cmd.Process.Kill()
	<-d.exited
}

// WaitTCP waits until addr accepts connections. It fails early, with the
// daemon's log, when the daemon exits first.
func (d *Daemon) WaitTCP(ctx context.Context, addr string) error {
	var dialer net.Dialer
	for {
		conn, err := dialer.DialContext(ctx, "tcp", addr)
		if err == nil {
			return conn.Close()
		}
		select {
		case <-d.exited:
			return fmt.Errorf("%s exited before listening on %s\n%s", d.Name, addr, d.LogTail(30))
		case <-ctx.Done():
			return fmt.Errorf("%s not listening on %s: %w\n%s", d.Name, addr, ctx.Err(), d.LogTail(30))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// LogTail returns the last lines of the daemon's log.
func (d *Daemon) LogTail(lines int) string {
	b, err := os.ReadFile(d.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// FreePort returns a TCP port nothing listens on right now. Fixtures use
// their own ports rather than the well-known ones so that several suites,
// or a service already running on the host, do not collide.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitReady waits up to a minute for a daemon's port, failing the test.
func waitReady(t testing.TB, d *Daemon, port int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := d.WaitTCP(ctx, fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
		t.Fatal(err)
	}
}
