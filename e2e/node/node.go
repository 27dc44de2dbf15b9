//go:build e2e

package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Paths and addresses as seen from inside a node.
const (
	// HostAddr is the host as a node sees it: qemu's user-mode network
	// forwards HostAddr:PORT to the host's 127.0.0.1:PORT.
	HostAddr = "10.0.2.2"
	// GuestShare is where the node's read-write share of Node.HostShare
	// appears: a way to hand files to a node and get them back.
	GuestShare = "/run/e2e"
	// GuestStateDir is where the node's own disk is mounted; what is written
	// there survives Reboot and Crash.
	GuestStateDir = "/var/lib/netvol"
)

// Options describe a node. The zero value of every field picks a default.
type Options struct {
	Name        string        // hostname, and the name in messages; default "node"
	MemoryMiB   int           // default 1024
	CPUs        int           // default 1: two nodes share this machine's two cores
	DiskMiB     int           // size of the state disk; default 256
	BootTimeout time.Duration // default 3 minutes
	// HostForward lists TCP ports forwarded from the host's 127.0.0.1:P
	// to the node's port P (qemu hostfwd), so a server in the node is
	// reachable from the host, and from other nodes at HostAddr:P, on the
	// port it listens on. The forwards are set up again at every Boot.
	HostForward []int
	// Private joins the node to a PrivateLink with another node (a second
	// NIC at Private.Addr, set up again at every Boot): NewPrivateLink(t).End(i).
	Private *PrivateEnd
	// DockerOnDisk keeps dockerd's data root (images, plugins, containers,
	// swarm membership) on the state disk, so that they survive Crash and
	// Boot as on a real host; StartDocker again after Boot. Give the disk
	// room (DiskMiB).
	DockerOnDisk bool
}

func (o Options) withDefaults() Options {
	if o.Name == "" {
		o.Name = "node"
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 1024
	}
	if o.CPUs == 0 {
		o.CPUs = 1
	}
	if o.DiskMiB == 0 {
		o.DiskMiB = 256
	}
	if o.BootTimeout == 0 {
		o.BootTimeout = 3 * time.Minute
	}
	return o
}

// Node is a virtual machine running Debian's kernel over the host's root.
// It survives its qemu process: Crash, Shutdown and Boot replace the process
// and keep the state disk, the share and the console log.
type Node struct {
	opts Options
	boot bootFiles
	dir  string // console.log, qemu.log, disk.img, share/, sockets

	mu sync.Mutex
	vm *vm // the running incarnation; nil while the node is down
}

// Start boots one node and stops it when the test ends.
func Start(t testing.TB, opts Options) *Node {
	t.Helper()
	return StartAll(t, opts)[0]
}

// StartAll boots several nodes at once, which under software emulation takes
// little longer than booting one.
func StartAll(t testing.TB, opts ...Options) []*Node {
	t.Helper()
	RequireRoot(t)
	RequireTools(t, "qemu-system-x86_64", "modprobe", "busybox", "mkfs.ext4")
	boot, err := prepareBoot(t)
	if err != nil {
		t.Fatalf("preparing node boot files: %v", err)
	}
	nodes := make([]*Node, len(opts))
	for i, o := range opts {
		if nodes[i], err = create(t, o.withDefaults(), boot); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() { errs[i] = n.bootWithTimeout() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("booted %d node(s) in %s", len(nodes), time.Since(start).Round(100*time.Millisecond))
	return nodes
}

// create makes the node's directory and disk and registers its cleanup.
func create(t testing.TB, opts Options, boot bootFiles) (*Node, error) {
	// Not t.TempDir: unix socket paths must stay short.
	dir, err := os.MkdirTemp("", "nv-"+opts.Name+"-")
	if err != nil {
		return nil, err
	}
	n := &Node{opts: opts, boot: boot, dir: dir}
	t.Cleanup(func() { n.cleanup(t) })
	if err := os.Mkdir(n.HostShare(), 0o777); err != nil {
		return nil, err
	}
	if err := makeStateDisk(n.path("disk.img"), opts.DiskMiB); err != nil {
		return nil, fmt.Errorf("node %s: %w", opts.Name, err)
	}
	return n, nil
}

func (n *Node) cleanup(t testing.TB) {
	if t.Failed() {
		t.Logf("node %s console (last lines):\n%s", n.opts.Name, n.ConsoleTail(60))
	}
	n.Crash()
	_ = os.RemoveAll(n.dir)
}

// Name returns the node's name (also its hostname).
func (n *Node) Name() string { return n.opts.Name }

// HostShare is the host directory that the node sees at GuestShare.
func (n *Node) HostShare() string { return n.path("share") }

// DiskImage is the host path of the node's raw state disk.
func (n *Node) DiskImage() string { return n.path("disk.img") }

func (n *Node) path(name string) string { return filepath.Join(n.dir, name) }

func (n *Node) bootWithTimeout() error {
	ctx, cancel := context.WithTimeout(context.Background(), n.opts.BootTimeout)
	defer cancel()
	return n.Boot(ctx)
}

// Boot starts the node, after Start or after Crash or Shutdown, and returns
// once its agent answers. The state disk is kept.
func (n *Node) Boot(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.vm != nil {
		return fmt.Errorf("node %s: already running", n.opts.Name)
	}
	start := time.Now()
	v, err := startVM(ctx, n)
	if err != nil {
		return n.withConsole(fmt.Errorf("node %s: boot: %w", n.opts.Name, err))
	}
	if err := n.setupPrivate(ctx, v); err != nil {
		v.kill()
		return n.withConsole(err)
	}
	n.vm = v
	n.logf("booted in %s", time.Since(start).Round(100*time.Millisecond))
	return nil
}

// logf appends a harness note to the console log, where it reads in order
// with the node's own messages.
func (n *Node) logf(format string, args ...any) {
	f, err := os.OpenFile(n.path("console.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "\n[harness %s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// running returns the current incarnation or an error naming the node.
func (n *Node) running() (*vm, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.vm == nil {
		return nil, fmt.Errorf("node %s is not running", n.opts.Name)
	}
	return n.vm, nil
}

// Crash kills the node's qemu process at once, as a power cut would. It is a
// no-op on a node that is down.
func (n *Node) Crash() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.vm == nil {
		return
	}
	n.vm.kill()
	n.vm = nil
	n.logf("crashed (qemu killed)")
}

// Shutdown syncs the node's disks and powers it off, killing qemu if the
// node has not stopped by the time ctx ends.
func (n *Node) Shutdown(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.vm == nil {
		return nil
	}
	v := n.vm
	n.vm = nil
	if _, err := v.agent.run(ctx, "sync; umount "+GuestStateDir+" || mount -o remount,ro "+GuestStateDir+"; sync", nil); err != nil {
		v.kill()
		return fmt.Errorf("node %s: preparing shutdown: %w", n.opts.Name, err)
	}
	_ = v.agent.poweroff()
	if err := v.waitExit(ctx); err != nil {
		v.kill()
		return n.withConsole(fmt.Errorf("node %s: did not power off: %w", n.opts.Name, err))
	}
	n.logf("powered off")
	return nil
}

// Reboot shuts the node down cleanly and boots it again with the same disk.
func (n *Node) Reboot(ctx context.Context) error {
	if err := n.Shutdown(ctx); err != nil {
		return err
	}
	return n.Boot(ctx)
}

// SetLink cuts (up=false) or restores (up=true) the node's network link, as
// a pulled cable would: the node keeps running and its connections to the
// host time out. The agent channel is not a network device and stays up;
// so does a PrivateLink (Freeze takes a node off every network).
func (n *Node) SetLink(ctx context.Context, up bool) error {
	v, err := n.running()
	if err != nil {
		return err
	}
	if err := qmpExecute(ctx, v.qmpPath, "set_link", map[string]any{"name": netdevID, "up": up}); err != nil {
		return fmt.Errorf("node %s: set_link %v: %w", n.opts.Name, up, err)
	}
	n.logf("link up=%v", up)
	return nil
}

// Freeze stops the node's virtual CPUs (QMP stop): to everyone else it is
// dead, as if it had crashed (no heartbeat, no lease renewal, no answer on
// any connection), but it keeps its memory, page cache and processes. Thaw
// lets it go on where it was, as a host back from a long stall or a
// partition would, with whatever it still meant to write. The agent does not
// answer while the node is frozen.
func (n *Node) Freeze(ctx context.Context) error { return n.runState(ctx, "stop") }

// Thaw resumes a frozen node (QMP cont).
func (n *Node) Thaw(ctx context.Context) error { return n.runState(ctx, "cont") }

func (n *Node) runState(ctx context.Context, cmd string) error {
	v, err := n.running()
	if err != nil {
		return err
	}
	if err := qmpExecute(ctx, v.qmpPath, cmd, nil); err != nil {
		return fmt.Errorf("node %s: %w", n.opts.Name, err)
	}
	n.logf("qmp %s", cmd)
	return nil
}

// ConsoleTail returns the last lines of the node's serial console, across
// all of its boots.
func (n *Node) ConsoleTail(lines int) string {
	b, err := os.ReadFile(n.path("console.log"))
	if err != nil {
		return fmt.Sprintf("(no console log: %v)", err)
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

func (n *Node) withConsole(err error) error {
	return fmt.Errorf("%w\n--- console of %s (last 40 lines) ---\n%s\n---", err, n.opts.Name, n.ConsoleTail(40))
}
