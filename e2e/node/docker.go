//go:build e2e

package node

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BusyboxImage is the image StartDocker imports into a node's dockerd; no
// registry is reachable, so it is built from the host's busybox-static.
const BusyboxImage = "busybox:local"

// StartDocker starts dockerd inside the node (no iptables, no bridge, data on
// the node's tmpfs, or its state disk with Options.DockerOnDisk), waits
// until it answers and imports BusyboxImage.
// Containers should run with --network none. dockerd dies with the node.
func (n *Node) StartDocker(t testing.TB) {
	t.Helper()
	RequireTools(t, "dockerd", "docker", "containerd", "runc")
	tarball, err := cached(cacheDir(t), "busybox.tar", buildBusyboxTar)
	if err != nil {
		t.Fatal(err)
	}
	if err := linkOrCopy(tarball, filepath.Join(n.HostShare(), "busybox.tar")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if n.opts.DockerOnDisk {
		n.MustRun(t, "mkdir -p /var/lib/docker "+GuestStateDir+"/docker-root && "+
			"{ grep -q ' /var/lib/docker ' /proc/mounts || mount --bind "+GuestStateDir+"/docker-root /var/lib/docker; }")
	}
	n.MustRun(t, dockerStartScript)
	n.MustRun(t, "docker import "+GuestShare+"/busybox.tar "+BusyboxImage+" >/dev/null")
	t.Logf("%s: dockerd ready and %s imported in %s", n.Name(), BusyboxImage, time.Since(start).Round(100*time.Millisecond))
}

// dockerStartScript starts dockerd in its own session (so it outlives the
// agent's request) and polls it from inside the node, which saves a round
// trip per try. On failure it shows dockerd's log.
const dockerStartScript = `setsid -f dockerd --iptables=false --bridge=none --data-root=/var/lib/docker \
	</dev/null >/var/log/dockerd.log 2>&1
i=0
until docker version >/dev/null 2>&1; do
	i=$((i+1))
	if [ $i -gt 600 ]; then echo "dockerd not ready after 120 s" >&2; tail -n 40 /var/log/dockerd.log >&2; exit 1; fi
	sleep 0.2
done`

// buildBusyboxTar writes a root filesystem of /bin/busybox and a symlink per
// applet, in tar format for `docker import`.
func buildBusyboxTar(out string) error {
	busybox, err := staticBusybox()
	if err != nil {
		return err
	}
	applets, err := command(busybox, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries := []*tar.Header{
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777},
		{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))},
	}
	for _, h := range entries {
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
	}
	if _, err := tw.Write(bin); err != nil {
		return err
	}
	for _, a := range strings.Fields(string(applets)) {
		if a == "busybox" {
			continue
		}
		h := &tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}

// linkOrCopy puts src at dst, as a hard link when both are on one
// filesystem.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}
