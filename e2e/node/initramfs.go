//go:build e2e

package node

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// guestTmpfsDirs are the host directories a node covers with its own tmpfs:
// its root is the host's, read-only, and these are where guest programs
// write (dockerd's data root and key, the plugin's state, logs, sockets).
func guestTmpfsDirs() []string {
	return []string{"/tmp", "/run", "/mnt", "/var/lib", "/var/log", "/var/tmp", "/var/cache", "/etc/docker"}
}

// guestModules are loaded once the node's root is up: the network and disk
// drivers, the agent's virtio-serial port and what the tests exercise.
func guestModules() []string {
	return []string{"virtio_net", "virtio_blk", "virtio_console", "ext4", "overlay", "nbd", "nfsv4", "nfsv3"}
}

// initScript is the node's /init, run by busybox from the initramfs. It
// mounts the host's root over 9p read-only, covers the writable directories
// with tmpfs, loads modules with the host's modprobe, configures the network
// for qemu's user-mode stack and starts the agent inside the root. Busybox
// stays PID 1 so orphaned processes are reaped and an agent crash powers the
// node off instead of panicking the kernel. The root is mounted cache=loose:
// programs start several times faster, at the price that a node may not see
// a host file that changes while it runs (files in the share are uncached).
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
say() { echo "[$(cat /proc/uptime /host/proc/uptime 2>/dev/null | cut -d' ' -f1)] netvol-e2e: $*"; }
die() { say "FAILED: $*"; sync; poweroff -f; }
mount -t proc proc /proc || die proc
mount -t sysfs sysfs /sys || die sysfs
mount -t devtmpfs devtmpfs /dev || die devtmpfs
name=node; disk=0
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	netvol.name=*) name=${arg#netvol.name=} ;;
	netvol.disk=*) disk=${arg#netvol.disk=} ;;
	esac
done
say "init started"
for m in $(cat /modules.list); do insmod "/modules/$m" || die "insmod $m"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /host || die "9p root"
for d in @TMPFS@; do
	[ -d "/host$d" ] || continue
	mount -t tmpfs -o mode=0755 tmpfs "/host$d" || die "tmpfs $d"
done
chmod 1777 /host/tmp /host/var/tmp
for d in proc sys dev; do mount --move "/$d" "/host/$d" || die "move /$d"; done
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts || die devpts
mount -t tmpfs tmpfs /host/dev/shm || die shm
mount -t cgroup2 none /host/sys/fs/cgroup || die cgroup2
mkdir -p /host@SHARE@
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share /host@SHARE@ || die "9p share"
cp /agent /host/run/netvol-e2e-agent || die "copy agent"
say "root mounted"
chroot /host /sbin/modprobe -a @MODULES@ || die modprobe
say "modules loaded"
say "network"
hostname "$name"
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 || die network
if [ "$disk" = 1 ]; then
	# devtmpfs now lives under /host/dev; the disk may take a moment to appear.
	for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /host/dev/vda ] && break; sleep 0.2; done
	mkdir -p /host@STATE@ && chroot /host mount -t ext4 /dev/vda @STATE@ || die "state disk"
fi
say "starting agent"
chroot /host /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	HOME=/tmp LANG=C.UTF-8 /run/netvol-e2e-agent
die "agent exited"
`

func renderInit() []byte {
	r := strings.NewReplacer(
		"@TMPFS@", strings.Join(guestTmpfsDirs(), " "),
		"@MODULES@", strings.Join(guestModules(), " "),
		"@SHARE@", GuestShare,
		"@STATE@", GuestStateDir,
	)
	return []byte(r.Replace(initScript))
}

// bootFiles are what every node boots from, built once per run.
type bootFiles struct {
	kernel, initrd string
}

func prepareBoot(t testing.TB) (bootFiles, error) {
	t.Helper()
	k, err := findKernel()
	if err != nil {
		return bootFiles{}, err
	}
	dir := cacheDir(t)
	agent, err := cached(dir, "agent", buildAgent)
	if err != nil {
		return bootFiles{}, err
	}
	initrd, err := cached(dir, "initramfs-"+k.version+".cpio", func(tmp string) error {
		return buildInitramfs(k, agent, tmp)
	})
	if err != nil {
		return bootFiles{}, err
	}
	files := bootFiles{kernel: k.image, initrd: initrd}
	// The uncompressed kernel only saves time: boot the bzImage without it.
	if vmlinux, err := cached(dir, "vmlinux-"+k.version, func(tmp string) error {
		return extractVmlinux(k.image, tmp)
	}); err == nil {
		files.kernel = vmlinux
	} else {
		t.Logf("booting the compressed kernel: %v", err)
	}
	return files, nil
}

// buildAgent compiles the guest agent as a static binary; it ships in the
// initramfs because the run's cache directory is under /tmp, which nodes
// cover with their own tmpfs.
func buildAgent(out string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	cmd := exec.Command(goTool, "build", "-trimpath", "-tags", "e2e", "-o", out, "./e2e/node/agent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build agent: %v: %s", err, b)
	}
	return nil
}

func buildInitramfs(k kernel, agent, out string) error {
	busybox, err := staticBusybox()
	if err != nil {
		return err
	}
	mods, err := k.moduleFiles(initramfsModules())
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	c := &cpioWriter{w: &buf}
	for _, d := range []string{"bin", "dev", "proc", "sys", "host", "modules"} {
		c.Dir(d)
	}
	// The kernel opens /dev/console for init before devtmpfs is mounted.
	c.CharDev("dev/console", 5, 1)
	c.CopyFile("bin/busybox", 0o755, busybox)
	c.File("init", 0o755, renderInit())
	c.CopyFile("agent", 0o755, agent)
	var names []string
	for _, m := range mods {
		names = append(names, filepath.Base(m))
		c.CopyFile("modules/"+filepath.Base(m), 0o644, m)
	}
	c.File("modules.list", 0o644, []byte(strings.Join(names, "\n")+"\n"))
	if err := c.Close(); err != nil {
		return err
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}

// staticBusybox returns the host's busybox, which must be the static build
// (busybox-static): the initramfs has no libc.
func staticBusybox() (string, error) {
	p, err := lookTool("busybox")
	if err != nil {
		return "", err
	}
	f, err := elf.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return "", fmt.Errorf("%s is dynamically linked: install busybox-static", p)
		}
	}
	return p, nil
}
