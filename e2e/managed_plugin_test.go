//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/netvol/netvol/e2e/node"
)

// TestManagedPlugin installs netvol as Docker installs plugins (docker
// plugin create/set/enable, from the directory `make plugin` builds), runs
// containers on both volume types, then upgrades the plugin (disable,
// replace, enable) and finds every volume and its data.
func TestManagedPlugin(t *testing.T) {
	t.Parallel()
	srv := node.StartNetvolServer(t)
	nfs := node.StartNFSServer(t)
	dir := node.PluginDir(t)
	n := node.Start(t, node.Options{Name: "m1", MemoryMiB: 1536})
	n.StartDocker(t)
	defer func() {
		if t.Failed() {
			t.Logf("plugin log:\n%s", n.MustRun(t, "tail -n 30 /var/log/dockerd.log"))
		}
	}()
	settings := fmt.Sprintf("NETVOL_SERVER=%s NETVOL_TOKEN=%s NETVOL_NFS=%s:%s NETVOL_NFS_PORT=%d NETVOL_NFS_MOUNT_PORT=%d NETVOL_NODE=m1",
		srv.URL(node.HostAddr), srv.Token, node.HostAddr, nfs.NoSquash, nfs.Port, nfs.MountPort)
	install := fmt.Sprintf(`docker plugin create netvol:dev %s >/dev/null &&
		docker plugin set netvol:dev %s && docker plugin enable netvol:dev >/dev/null`, dir, settings)
	n.MustRun(t, "modprobe nbd nbds_max=16 && modprobe nfsv4 && modprobe nfsv3 && "+install)
	n.MustRun(t, `docker volume create -d netvol:dev -o type=nbd -o size=64M mblk >/dev/null &&
		docker volume create -d netvol:dev -o type=nfs -o mode=0770 mnfs >/dev/null`)
	n.MustRun(t, dockerRun("mblk", "echo managed-block > /v/f && sync")+" && "+dockerRun("mnfs", "echo managed-nfs > /v/f"))
	if got := n.MustRun(t, "docker plugin inspect -f '{{.Enabled}} {{.Config.Linux.Capabilities}}' netvol:dev"); got != "true [CAP_SYS_ADMIN]\n" {
		t.Fatalf("plugin inspect: %q", got)
	}

	// Upgrade: the new plugin is the same directory, as a release would be a
	// new one; the state lives outside the rootfs.
	n.MustRun(t, "docker plugin disable -f netvol:dev >/dev/null && docker plugin rm -f netvol:dev >/dev/null && "+install)
	if got := n.MustRun(t, dockerRun("mblk", "cat /v/f")+" && "+dockerRun("mnfs", "cat /v/f")); got != "managed-block\nmanaged-nfs\n" {
		t.Fatalf("after the upgrade: %q", got)
	}
	if got := n.MustRun(t, "docker volume ls -q | sort | tr '\\n' ' '"); got != "mblk mnfs " {
		t.Fatalf("volume ls after the upgrade: %q", got)
	}
	n.MustRun(t, "docker volume rm mblk mnfs >/dev/null")
	if ls := n.MustRun(t, "docker volume ls -q"); strings.TrimSpace(ls) != "" {
		t.Fatalf("left: %q", ls)
	}
}
