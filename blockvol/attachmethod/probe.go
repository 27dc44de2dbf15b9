// Package attachmethod decides how block volumes become devices on this
// host: through the kernel's NBD driver (blockvol.KernelAttacher) or, where
// the kernel has none, the userspace attach (fuseattach: FUSE and a loop
// device). Probe is the one decision: the plugin acts on it and netvol
// doctor reports it.
package attachmethod

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netvol/netvol/blockvol"
	"github.com/netvol/netvol/blockvol/fuseattach"
	"github.com/netvol/netvol/nbd"
)

// The modes of --attach; Kernel and Userspace are also the methods Probe
// chooses (the Device.Method of their attachers).
const (
	Auto      = "auto"
	Kernel    = blockvol.MethodKernel
	Userspace = fuseattach.MethodUserspace
)

// The devices the userspace attach needs.
const (
	DevFuse        = "/dev/fuse"
	DevLoopControl = "/dev/loop-control"
)

// Host is how Probe looks at the host; tests give fakes.
type Host struct {
	// KernelNBD returns nil when the kernel's NBD driver is there, an error
	// wrapping nbd.ErrNoKernelNBD when it is not (nbd.KernelAvailable).
	KernelNBD func() error
	// LoadNBD loads the driver (modprobe nbd). nil: Probe loads nothing and
	// leaves the host as it is (netvol doctor).
	LoadNBD func(context.Context) error
	// Device returns nil when the device (DevFuse, DevLoopControl) can be
	// opened for reading and writing, else why not.
	Device func(path string) error
}

// System is this host; load lets Probe load the nbd module.
func System(load bool) Host {
	h := Host{KernelNBD: nbd.KernelAvailable, Device: DeviceAt("")}
	if load {
		h.LoadNBD = ModprobeNBD
	}
	return h
}

// Missing is a device the userspace attach needs and cannot use.
type Missing struct {
	Path string
	Err  error
}

// Result is what Probe found and chose.
type Result struct {
	Method string // Kernel or Userspace
	Reason string // why, in a sentence for the log and netvol doctor
	// Driver is nil when the kernel has its NBD driver (once loaded, when
	// Probe loaded it), else why not.
	Driver  error
	Loaded  bool      // Probe loaded the nbd module
	LoadErr error     // how loading failed; nil when it was not tried or worked
	Missing []Missing // the userspace attach's devices that cannot be used
}

// Usable says whether the chosen method has what it needs on this host.
func (r Result) Usable() bool {
	if r.Method == Kernel {
		return r.Driver == nil
	}
	return len(r.Missing) == 0
}

// Probe resolves an --attach mode on h. Auto (or "") takes the kernel's
// NBD driver when it is there or loads (h.LoadNBD), else the userspace
// attach; kernel and userspace are taken as given, and their Reason says
// when the host lacks what they need. Whatever the mode, Result holds what
// the host has: the driver, the userspace attach's devices. Only an
// unknown mode is an error.
func Probe(ctx context.Context, mode string, h Host) (Result, error) {
	switch mode {
	case Auto, "", Kernel, Userspace:
	default:
		return Result{}, fmt.Errorf("--attach %q: want auto, kernel or userspace", mode)
	}
	var r Result
	r.Driver = h.KernelNBD()
	noDriver := errors.Is(r.Driver, nbd.ErrNoKernelNBD)
	if noDriver && mode != Userspace && h.LoadNBD != nil {
		if r.LoadErr = h.LoadNBD(ctx); r.LoadErr == nil {
			if r.Driver = h.KernelNBD(); r.Driver == nil {
				r.Loaded = true
			}
		}
	}
	for _, dev := range []string{DevFuse, DevLoopControl} {
		if err := h.Device(dev); err != nil {
			r.Missing = append(r.Missing, Missing{Path: dev, Err: err})
		}
	}
	switch {
	case mode == Kernel || mode == Userspace:
		r.Method, r.Reason = mode, "--attach "+mode
		if !r.Usable() {
			r.Reason += "; but " + r.lacking(h) + ": block volumes will not mount"
		}
	case r.Driver == nil:
		r.Method, r.Reason = Kernel, "the kernel has the NBD driver"
		if r.Loaded {
			r.Reason = "loaded the nbd module"
		}
	default:
		r.Method, r.Reason = Userspace, r.driverMissing(h)
		if !r.Usable() {
			r.Reason += "; but " + r.lacking(h) + ": block volumes will not mount"
		}
	}
	return r, nil
}

// driverMissing says why the kernel's driver is not there.
func (r Result) driverMissing(h Host) string {
	switch {
	case !errors.Is(r.Driver, nbd.ErrNoKernelNBD):
		return r.Driver.Error()
	case h.LoadNBD == nil:
		return "the kernel has no NBD driver, and modprobe nbd was not tried"
	case r.LoadErr != nil:
		return "the kernel has no NBD driver, and modprobe nbd: " + r.LoadErr.Error()
	}
	return "the kernel has no NBD driver, and modprobe nbd: loaded nothing"
}

// lacking names what the chosen method lacks.
func (r Result) lacking(h Host) string {
	if r.Method == Kernel {
		return r.driverMissing(h)
	}
	paths := make([]string, len(r.Missing))
	for i, m := range r.Missing {
		paths[i] = m.Path
	}
	return strings.Join(paths, " and ") + " cannot be used"
}

const modprobeTimeout = 10 * time.Second

// ModprobeNBD loads the nbd module: a fixed argv, no shell.
func ModprobeNBD(ctx context.Context) error {
	path, err := exec.LookPath("modprobe")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, modprobeTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "nbd").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// DeviceAt checks devices under root ("" is the host's /): each must be a
// character device this process may open for reading and writing. Errors
// name the device as given, without root.
func DeviceAt(root string) func(string) error {
	return func(dev string) error {
		p := filepath.Join(root, dev)
		st, err := os.Stat(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return errors.New("no " + dev)
		case err != nil:
			return fmt.Errorf("%s: %w", dev, err)
		case st.Mode()&os.ModeCharDevice == 0:
			return errors.New(dev + " is not a character device")
		}
		if err := unix.Access(p, unix.R_OK|unix.W_OK); err != nil {
			return fmt.Errorf("%s cannot be opened for reading and writing: %w", dev, err)
		}
		return nil
	}
}
