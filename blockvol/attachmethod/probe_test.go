package attachmethod

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netvol/netvol/nbd"
)

// fakeHost is a host with or without the NBD driver, a module that loads
// it, and the userspace attach's devices.
type fakeHost struct {
	driver   bool  // the kernel has the driver
	module   bool  // loading it works
	loadErr  error // loading fails so
	noDevs   []string
	loads    int
	kernelFn func() error // overrides driver
}

func (f *fakeHost) host(load bool) Host {
	h := Host{
		KernelNBD: func() error {
			if f.kernelFn != nil {
				return f.kernelFn()
			}
			if f.driver {
				return nil
			}
			return fmt.Errorf("probing: %w", nbd.ErrNoKernelNBD)
		},
		Device: func(dev string) error {
			for _, d := range f.noDevs {
				if d == dev {
					return errors.New("no " + dev)
				}
			}
			return nil
		},
	}
	if load {
		h.LoadNBD = func(context.Context) error {
			f.loads++
			if f.loadErr != nil {
				return f.loadErr
			}
			f.driver = f.driver || f.module
			return nil
		}
	}
	return h
}

func TestProbe(t *testing.T) {
	for _, c := range []struct {
		name   string
		mode   string
		host   fakeHost
		load   bool
		method string
		reason []string
		usable bool
		loads  int
	}{
		{"driver there", Auto, fakeHost{driver: true}, true, Kernel, []string{"the kernel has the NBD driver"}, true, 0},
		{"loads the module", "", fakeHost{module: true}, true, Kernel, []string{"loaded the nbd module"}, true, 1},
		{"modprobe fails", Auto, fakeHost{loadErr: errors.New("exit status 1: FATAL: Module nbd not found")}, true,
			Userspace, []string{"no NBD driver, and modprobe nbd: exit status 1: FATAL"}, true, 1},
		{"modprobe loads nothing", Auto, fakeHost{}, true, Userspace, []string{"modprobe nbd: loaded nothing"}, true, 1},
		{"not allowed to load", Auto, fakeHost{module: true}, false, Userspace, []string{"modprobe nbd was not tried"}, true, 0},
		{"no way to attach", Auto, fakeHost{noDevs: []string{DevFuse, DevLoopControl}}, true, Userspace,
			[]string{"loaded nothing; but /dev/fuse and /dev/loop-control cannot be used: block volumes will not mount"}, false, 1},
		{"netlink refused", Auto, fakeHost{kernelFn: func() error { return errors.New("socket: permission denied") }}, true,
			Userspace, []string{"socket: permission denied"}, true, 0},
		{"forced kernel loads", Kernel, fakeHost{module: true}, true, Kernel, []string{"--attach kernel"}, true, 1},
		{"forced kernel, none", Kernel, fakeHost{}, false, Kernel,
			[]string{"--attach kernel; but the kernel has no NBD driver, and modprobe nbd was not tried: block volumes will not mount"}, false, 0},
		{"forced userspace loads nothing", Userspace, fakeHost{module: true}, true, Userspace, []string{"--attach userspace"}, true, 0},
		{"forced userspace, no loop", Userspace, fakeHost{driver: true, noDevs: []string{DevLoopControl}}, true, Userspace,
			[]string{"--attach userspace; but /dev/loop-control cannot be used"}, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := c.host
			r, err := Probe(context.Background(), c.mode, h.host(c.load))
			if err != nil {
				t.Fatal(err)
			}
			if r.Method != c.method || r.Usable() != c.usable || h.loads != c.loads {
				t.Errorf("Probe = %+v (usable %v, %d loads), want %s, usable %v, %d loads", r, r.Usable(), h.loads, c.method, c.usable, c.loads)
			}
			for _, s := range c.reason {
				if !strings.Contains(r.Reason, s) {
					t.Errorf("reason %q does not say %q", r.Reason, s)
				}
			}
			if len(r.Missing) != len(c.host.noDevs) {
				t.Errorf("missing %+v, want %v", r.Missing, c.host.noDevs)
			}
		})
	}
	if _, err := Probe(context.Background(), "magic", (&fakeHost{}).host(true)); err == nil || !strings.Contains(err.Error(), "want auto, kernel or userspace") {
		t.Errorf("Probe(magic) = %v", err)
	}
}

func TestDeviceAt(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "dev"), 0o755)
	if err := os.Symlink("/dev/null", filepath.Join(root, DevFuse)); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, DevLoopControl), nil, 0o644)
	dev := DeviceAt(root)
	if err := dev(DevFuse); err != nil {
		t.Errorf("%s (/dev/null): %v", DevFuse, err)
	}
	if err := dev(DevLoopControl); err == nil || err.Error() != DevLoopControl+" is not a character device" {
		t.Errorf("%s (a file): %v", DevLoopControl, err)
	}
	if err := dev("/dev/none"); err == nil || err.Error() != "no /dev/none" {
		t.Errorf("/dev/none: %v", err)
	}
}
