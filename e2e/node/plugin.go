//go:build e2e

package node

import (
	"fmt"
	"strings"
	"testing"
)

// PluginSocket is where Docker looks for the netvol plugin.
const PluginSocket = "/run/docker/plugins/netvol.sock"

// PluginLog is the plugin's log inside a node.
const PluginLog = "/var/log/netvol-plugin.log"

// StartPlugin runs `netvol plugin` in the node, detached from the agent,
// with its state on the node's disk (it survives Reboot and Crash), and
// waits until its socket answers. args are extra flags.
func (n *Node) StartPlugin(t testing.TB, bin string, args ...string) {
	t.Helper()
	script := fmt.Sprintf(`modprobe nbd nbds_max=16 2>/dev/null; modprobe nfsv4 2>/dev/null; modprobe nfsv3 2>/dev/null
modprobe fuse 2>/dev/null; modprobe loop 2>/dev/null # for --attach userspace
rm -f %[6]s
setsid -f %[1]s plugin --node %[2]s --state-dir %[3]s %[4]s </dev/null >>%[5]s 2>&1
i=0
until [ -S %[6]s ]; do
	i=$((i+1))
	if [ $i -gt 300 ]; then echo "plugin not ready after 60 s" >&2; tail -n 40 %[5]s >&2; exit 1; fi
	sleep 0.2
done`, bin, n.Name(), GuestStateDir, strings.Join(args, " "), PluginLog, PluginSocket)
	n.MustRun(t, script)
}

// StopPlugin ends the plugin with SIGTERM (kill: SIGKILL, a crash) and
// waits until it is gone. Mounts stay.
func (n *Node) StopPlugin(t testing.TB, bin string, kill bool) {
	t.Helper()
	sig := "TERM"
	if kill {
		sig = "KILL"
	}
	// Anchored on the binary's path, so the pattern does not match the
	// shell running this script.
	pattern := "^" + bin + " plugin "
	n.MustRun(t, fmt.Sprintf(`pkill -%[1]s -f '%[2]s' || true
i=0
while pgrep -f '%[2]s' >/dev/null; do
	i=$((i+1)); [ $i -gt 150 ] && { echo "plugin still running" >&2; exit 1; }
	sleep 0.2
done`, sig, pattern))
}

// PluginLogTail returns the end of the plugin's log in the node.
func (n *Node) PluginLogTail(t testing.TB) string {
	return n.MustRun(t, "tail -n 40 "+PluginLog+" 2>&1 || true")
}
