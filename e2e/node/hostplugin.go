//go:build e2e

package node

import (
	"os"
	"path/filepath"
	"testing"
)

// pluginSocketLock is the lock file of PluginSocket.
const pluginSocketLock = "/run/docker/plugins/.netvol-e2e.lock"

// LockPluginSocket makes the calling test the only one running a plugin on
// the host's PluginSocket (the one place Docker looks for it) until it
// ends: tests of one binary and of parallel runs wait for each other.
func LockPluginSocket(t testing.TB) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(pluginSocketLock), 0o755); err != nil {
		t.Fatal(err)
	}
	unlock, err := lockFile(pluginSocketLock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlock)
}

// ImportBusybox imports BusyboxImage into this dockerd, built from the
// host's busybox-static (no registry is reachable).
func (d *HostDocker) ImportBusybox(t testing.TB) {
	t.Helper()
	tarball, err := cached(cacheDir(t), "busybox.tar", buildBusyboxTar)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := command("docker", "-H", "unix://"+d.Socket, "import", tarball, BusyboxImage).CombinedOutput(); err != nil {
		t.Fatalf("docker import: %v\n%s", err, out)
	}
}
