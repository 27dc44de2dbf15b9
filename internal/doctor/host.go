package doctor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/netvol/netvol/blockvol/attachmethod"
	"github.com/netvol/netvol/nbd"
)

// The doctor's checks of this host's kernel and devices.

const modprobeHint = "(on the host: a managed plugin cannot load modules; list it in /etc/modules-load.d/netvol.conf to load it at boot)"

// blockChecks: how this host can attach nbd volumes, through the kernel's
// NBD driver or, without it, through FUSE and a loop device, and which of
// them netvol plugin takes (attachmethod.Probe, the plugin's own decision,
// but without loading modules: the doctor changes nothing on the host).
func (d *doctor) blockChecks(ctx context.Context) []Result {
	late := fmt.Errorf("no answer from the kernel within %s", d.cfg.Timeout)
	host := attachmethod.Host{
		KernelNBD: func() error {
			return bounded(ctx, d.cfg.Timeout, func(context.Context) error { return d.cfg.KernelNBD() }, late)
		},
		Device: attachmethod.DeviceAt(d.cfg.Root),
	}
	needed := d.cfg.Conn.Server != ""
	probe, err := attachmethod.Probe(ctx, d.cfg.Attach, host)
	method := d.methodCheck(probe, err, needed)
	if err != nil {
		probe, _ = attachmethod.Probe(ctx, attachmethod.Auto, host)
	}
	drvErr := probe.Driver
	fuse := deviceCheck(probe, "fuse", attachmethod.DevFuse, "modprobe fuse "+modprobeHint+"; a managed plugin also needs /dev/fuse among its devices")
	loop := deviceCheck(probe, "loop devices", attachmethod.DevLoopControl, "modprobe loop "+modprobeHint+"; a managed plugin also needs /dev/loop-control among its devices")
	userspace := fuse.Status == StatusOK && loop.Status == StatusOK
	for _, r := range []*Result{&fuse, &loop} {
		if r.Status == StatusOK {
			continue
		}
		r.Status = StatusWarn
		if drvErr != nil {
			r.Status = severity(needed)
		}
		r.Detail += ": the userspace attach of nbd volumes, used where the kernel has no NBD driver, needs it"
	}
	return []Result{d.nbdDriverCheck(drvErr, userspace, needed), d.nbdDevicesCheck(drvErr == nil), fuse, loop, method}
}

// methodCheck says how netvol plugin would attach block volumes here.
func (d *doctor) methodCheck(p attachmethod.Result, err error, needed bool) Result {
	const name = "attach method"
	switch {
	case err != nil:
		return problem(StatusFail, name, err.Error(), "give --attach auto, kernel or userspace (NETVOL_ATTACH)")
	}
	reason := p.Reason
	if errors.Is(p.Driver, nbd.ErrNoKernelNBD) && p.Method == attachmethod.Userspace && d.cfg.Attach != attachmethod.Userspace {
		reason += " (by the doctor; netvol plugin tries it first: see nbd driver)"
	}
	if p.Usable() {
		return passed(name, fmt.Sprintf("netvol plugin attaches block volumes with %s: %s", p.Method, reason))
	}
	return problem(severity(needed), name, fmt.Sprintf("netvol plugin would attach block volumes with %s: %s", p.Method, reason),
		"see nbd driver, fuse and loop devices")
}

// deviceCheck reports on a device of the userspace attach.
func deviceCheck(p attachmethod.Result, name, dev, fix string) Result {
	for _, m := range p.Missing {
		if m.Path == dev {
			return problem(StatusWarn, name, m.Err.Error(), fix)
		}
	}
	return passed(name, dev+" is present")
}

func (d *doctor) nbdDriverCheck(drvErr error, userspace, needed bool) Result {
	const name = "nbd driver"
	if drvErr == nil {
		return passed(name, `the kernel's NBD driver is loaded (generic netlink family "nbd")`)
	}
	detail, fix := d.nbdMissing(drvErr)
	if userspace {
		return problem(StatusWarn, name, detail+"; nbd volumes fall back to the userspace attach (FUSE and a loop device), which is slower", fix)
	}
	return problem(severity(needed), name, detail+"; and without FUSE and loop devices (below) nbd volumes cannot be attached on this host", fix)
}

// nbdMissing explains why the NBD driver is missing and what to do.
func (d *doctor) nbdMissing(err error) (detail, fix string) {
	modprobe := "run modprobe nbd " + modprobeHint
	switch {
	case !errors.Is(err, nbd.ErrNoKernelNBD):
		return "could not ask the kernel for its NBD driver: " + err.Error(), "netlink must be usable (some sandboxes block it); " + modprobe
	case d.exists("/sys/module/nbd"):
		return "the nbd module is loaded but has no generic netlink interface (a kernel older than 4.12?)", "use a kernel of 4.12 or newer"
	case d.hasModule("nbd"):
		return "the kernel's NBD driver is not loaded (the nbd module is available)", modprobe
	}
	rel := d.release()
	return fmt.Sprintf("the kernel (%s) has no NBD driver: not built in, not loaded, and no nbd module in /lib/modules/%s", rel, rel),
		fmt.Sprintf("install this kernel's modules (%s) or use a kernel built with CONFIG_BLK_DEV_NBD, then %s", modulePackages(rel), modprobe)
}

var nbdDevRe = regexp.MustCompile(`^nbd[0-9]+$`)

func (d *doctor) nbdDevicesCheck(driver bool) Result {
	const name = "/dev/nbd*"
	entries, _ := os.ReadDir(d.path("/dev"))
	n := 0
	for _, e := range entries {
		if nbdDevRe.MatchString(e.Name()) {
			n++
		}
	}
	switch {
	case n > 0:
		return passed(name, fmt.Sprintf("%d NBD devices", n))
	case driver:
		return problem(StatusWarn, name, "no /dev/nbd* devices although the driver is loaded",
			"recent kernels add devices on demand; else reload the driver with some: modprobe -r nbd; modprobe nbd nbds_max=16. A managed plugin sees only the /dev/nbd* its config lists")
	}
	return problem(StatusWarn, name, "no /dev/nbd* devices: the kernel has no NBD driver (see nbd driver)", "they appear when the nbd module is loaded")
}

// nfsClientChecks: whether the kernel can mount the configured NFS version.
func (d *doctor) nfsClientChecks(context.Context) []Result {
	const name = "nfs client"
	fsType, module := "nfs4", "nfsv4"
	if d.cfg.Conn.NFSVersion == "3" {
		fsType, module = "nfs", "nfs"
	}
	data, err := os.ReadFile(d.path("/proc/filesystems"))
	if err != nil {
		return []Result{problem(StatusWarn, name, "cannot read /proc/filesystems: "+err.Error(), "run doctor on the host itself")}
	}
	for line := range strings.Lines(string(data)) {
		if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == fsType {
			return []Result{passed(name, fmt.Sprintf("the kernel mounts NFS %s (%s in /proc/filesystems)", d.cfg.Conn.NFSVersion, fsType))}
		}
	}
	if d.hasModule(module) {
		return []Result{problem(StatusWarn, name,
			fmt.Sprintf("the kernel's NFS client is not loaded (the %s module is available)", module),
			fmt.Sprintf("mount loads it on demand where modprobe works, but not from inside a managed plugin: run modprobe %s %s", module, modprobeHint))}
	}
	rel := d.release()
	return []Result{problem(severity(d.cfg.Conn.NFS != ""), name,
		fmt.Sprintf("the kernel (%s) has no NFS client for NFS %s: no %s in /proc/filesystems and no %s module in %s; nfs volumes cannot be mounted on this host (creating and listing them still works)",
			rel, d.cfg.Conn.NFSVersion, fsType, module, filepath.Join("/lib/modules", rel)),
		fmt.Sprintf("install this kernel's modules (%s) or use a kernel built with CONFIG_NFS_FS and CONFIG_NFS_V4, then modprobe %s %s", modulePackages(rel), module, modprobeHint))}
}

// modulePackages names the packages that hold a kernel's modules.
func modulePackages(release string) string {
	return "Debian: linux-image-" + release + "; Ubuntu: linux-modules-extra-" + release
}
