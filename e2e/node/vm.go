//go:build e2e

package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"github.com/netvol/netvol/e2e/node/internal/proto"
)

// netdevID names the node's network backend for set_link.
const netdevID = "n0"

// vm is one qemu process of a node.
type vm struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed once qemu has exited and been reaped
	agent   *agentClient
	qmpPath string
}

// qbootPath is qemu's minimal firmware, which starts a kernel in a tenth of
// the time SeaBIOS takes under TCG; it ships with qemu-system-x86.
const qbootPath = "/usr/share/qemu/qboot.rom"

func (n *Node) qemuArgs() []string {
	var args []string
	if _, err := os.Stat(qbootPath); err == nil {
		args = append(args, "-bios", qbootPath)
	}
	o := n.opts
	netdev := "user,id=" + netdevID
	for _, p := range o.HostForward {
		netdev += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", p, p)
	}
	args = append(args,
		"-accel", "tcg", // KVM hangs on these machines (no nested virtualisation)
		"-cpu", "max", "-smp", strconv.Itoa(o.CPUs), "-m", strconv.Itoa(o.MemoryMiB),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", n.boot.kernel, "-initrd", n.boot.initrd,
		"-append", "console=ttyS0 quiet panic=-1 netvol.disk=1 netvol.name="+o.Name,
		"-chardev", "file,id=con,append=on,path="+n.path("console.log"),
		"-serial", "chardev:con",
		"-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
		"-virtfs", "local,path="+n.HostShare()+",mount_tag=share,security_model=none,multidevs=remap",
		"-drive", "file="+n.DiskImage()+",if=virtio,format=raw",
		"-netdev", netdev,
		"-device", "virtio-net-pci,netdev="+netdevID,
		"-device", "virtio-serial-pci",
		"-chardev", "socket,id=agent,server=on,wait=off,path="+n.path("agent.sock"),
		"-device", "virtserialport,chardev=agent,name="+proto.PortName,
		"-qmp", "unix:"+n.path("qmp.sock")+",server=on,wait=off",
	)
	// After the user-mode NIC, which the node's init configures as eth0.
	if o.Private != nil {
		args = append(args, o.Private.qemuArgs()...)
	}
	return args
}

// startVM starts qemu and waits for the node's agent to say hello.
func startVM(ctx context.Context, n *Node) (*vm, error) {
	for _, s := range []string{"agent.sock", "qmp.sock"} {
		_ = os.Remove(n.path(s)) // left by a killed predecessor
	}
	qlog, err := os.OpenFile(n.path("qemu.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	defer qlog.Close()
	cmd := command("qemu-system-x86_64", n.qemuArgs()...)
	cmd.Stdout, cmd.Stderr = qlog, qlog
	// qemu dies with the test binary even if cleanups never run (a panic,
	// go test's own timeout).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	n.logf("starting qemu")
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	v := &vm{cmd: cmd, exited: make(chan struct{}), qmpPath: n.path("qmp.sock")}
	go func() { _ = cmd.Wait(); close(v.exited) }()
	if err := v.connect(ctx, n.path("agent.sock")); err != nil {
		v.kill()
		if b, _ := os.ReadFile(n.path("qemu.log")); len(b) > 0 {
			err = fmt.Errorf("%w; qemu says: %s", err, b)
		}
		return nil, err
	}
	return v, nil
}

func (v *vm) connect(ctx context.Context, sock string) error {
	a, err := dialAgent(ctx, sock, v.exited)
	if err != nil {
		return err
	}
	v.agent = a
	return a.waitHello(ctx)
}

// kill ends qemu at once and waits until it is reaped, so its disk image is
// no longer in use when kill returns.
func (v *vm) kill() {
	_ = v.cmd.Process.Kill()
	<-v.exited
	if v.agent != nil {
		v.agent.close()
	}
}

func (v *vm) waitExit(ctx context.Context) error {
	select {
	case <-v.exited:
		v.agent.close()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// makeStateDisk creates the node's raw state disk, formatted ext4 on the host
// where mkfs is fast.
func makeStateDisk(path string, mib int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = f.Truncate(int64(mib) << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	out, err := command("mkfs.ext4", "-q", "-F", "-L", "netvol-state", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4 state disk: %v: %s", err, out)
	}
	return nil
}
