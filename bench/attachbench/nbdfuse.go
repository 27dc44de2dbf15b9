package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// attachNBDFuse attaches a second volume of the server the way the
// project's notes checked by hand: libnbd's nbdfuse exposes the export as a
// file, losetup puts a loop device on it (direct I/O, as our helper asks).
// Only the benchmark runs these programs; the export name is a throwaway
// of a loopback server.
func attachNBDFuse(ctx context.Context, srv *server, c config) (string, func() error, error) {
	export, err := srv.volume(ctx, "bench-nbdfuse", c.volSize)
	if err != nil {
		return "", nil, err
	}
	dir := filepath.Join(c.work, "nbdfuse")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, err
	}
	pidfile := filepath.Join(c.work, "nbdfuse.pid")
	cmd := exec.Command("nbdfuse", "-P", pidfile, dir, fmt.Sprintf("nbd://%s/%s", srv.nbdAddr, export))
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	go func() { _ = cmd.Wait() }()
	stop := func() error { return syscall.Unmount(dir, 0) } // nbdfuse ends when unmounted
	if err := waitFile(ctx, pidfile); err != nil {
		_ = cmd.Process.Kill()
		return "", nil, fmt.Errorf("nbdfuse did not start: %w", err)
	}
	out, err := exec.Command("losetup", "--direct-io=on", "-f", "--show", filepath.Join(dir, "nbd")).Output()
	if err != nil {
		_ = stop()
		return "", nil, fmt.Errorf("losetup: %w", err)
	}
	dev := strings.TrimSpace(string(out))
	return dev, func() error {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			return fmt.Errorf("losetup -d: %w: %s", err, out)
		}
		time.Sleep(200 * time.Millisecond) // the loop driver lets go of the file
		return stop()
	}, nil
}

func waitFile(ctx context.Context, path string) error {
	for {
		if st, err := os.Stat(path); err == nil && st.Size() > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
