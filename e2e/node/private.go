//go:build e2e

package node

import (
	"context"
	"fmt"
	"net"
	"testing"
)

// PrivateSubnet is the private network between nodes: the first end of a
// PrivateLink is PrivateSubnet.1, the second PrivateSubnet.2.
const PrivateSubnet = "192.168.77"

// privateNetdevID names the node's second network backend.
const privateNetdevID = "p0"

// PrivateLink is an Ethernet between two nodes beside their user-mode NICs,
// so that they reach each other on any port and protocol (Swarm's manager
// port, its gossip and overlay traffic) while the host's servers stay
// reachable at HostAddr. Each end is a qemu socket netdev sending UDP
// frames to the other's port on the host's loopback: no host privileges,
// no bridge, and no connection either, so either node may crash, freeze or
// boot again and the link carries frames as soon as both run.
type PrivateLink struct {
	ends [2]*PrivateEnd
}

// PrivateEnd is one node's side of a PrivateLink; give it to Options.Private.
type PrivateEnd struct {
	Addr          string // the node's address on the link, e.g. 192.168.77.1
	mac           string
	local, remote int // UDP ports on the host's loopback
}

// NewPrivateLink returns a link with two ends, PrivateSubnet.1 and .2.
func NewPrivateLink(t testing.TB) *PrivateLink {
	t.Helper()
	p := [2]int{freeUDPPort(t), freeUDPPort(t)}
	l := &PrivateLink{}
	for i := range l.ends {
		l.ends[i] = &PrivateEnd{Addr: fmt.Sprintf("%s.%d", PrivateSubnet, i+1),
			mac: fmt.Sprintf("52:54:00:77:00:%02x", i+1), local: p[i], remote: p[1-i]}
	}
	return l
}

// End returns end i (0 or 1) of the link.
func (l *PrivateLink) End(i int) *PrivateEnd { return l.ends[i] }

// qemuArgs are the netdev and NIC of this end.
func (e *PrivateEnd) qemuArgs() []string {
	return []string{
		"-netdev", fmt.Sprintf("socket,id=%s,udp=127.0.0.1:%d,localaddr=127.0.0.1:%d", privateNetdevID, e.remote, e.local),
		"-device", "virtio-net-pci,netdev=" + privateNetdevID + ",mac=" + e.mac,
	}
}

// setupScript configures the NIC with this end's MAC inside the node.
func (e *PrivateEnd) setupScript() string {
	return fmt.Sprintf(`dev=
for i in /sys/class/net/*; do [ "$(cat $i/address)" = %[1]s ] && dev=${i##*/}; done
[ -n "$dev" ] || { echo "no NIC with MAC %[1]s" >&2; exit 1; }
ip link set "$dev" up && ip addr add %[2]s/24 dev "$dev"`, e.mac, e.Addr)
}

// PrivateAddr is the node's address on its PrivateLink ("" without one).
func (n *Node) PrivateAddr() string {
	if n.opts.Private == nil {
		return ""
	}
	return n.opts.Private.Addr
}

// setupPrivate configures the node's private NIC after a boot.
func (n *Node) setupPrivate(ctx context.Context, v *vm) error {
	if n.opts.Private == nil {
		return nil
	}
	res, err := v.agent.run(ctx, n.opts.Private.setupScript(), nil)
	if err == nil && res.Exit != 0 {
		err = fmt.Errorf("exit %d: %s %s", res.Exit, res.Stderr, res.Err)
	}
	if err != nil {
		return fmt.Errorf("node %s: private network: %w", n.opts.Name, err)
	}
	return nil
}

// freeUDPPort is a UDP port free on the host's loopback.
func freeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
