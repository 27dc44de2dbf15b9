package volume

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/state"
	"github.com/netvol/netvol/volume/backend"
)

// Reconcile brings the node store and this host's mounts into agreement,
// once, before the plugin serves Docker: a mount in use and in place is
// kept (and its backend resumes what it keeps alive, a lease); a record
// nobody uses or whose mount is gone is released; a mount under the root
// that no record knows of (a crash between mounting and recording) is
// undone. It never mounts anything, so nothing is mounted twice.
func (d *Driver) Reconcile(ctx context.Context) error {
	mounts, err := d.cfg.Store.ListMounts()
	if err != nil {
		return err
	}
	known := map[string]bool{}
	var errs []error
	for _, m := range mounts {
		known[m.Mountpoint] = true
		if err := d.reconcileMount(ctx, m); err != nil {
			errs = append(errs, fmt.Errorf("volume %q: %w", m.Name, err))
		}
	}
	errs = append(errs, d.sweepOrphans(ctx, known))
	return errors.Join(errs...)
}

func (d *Driver) reconcileMount(ctx context.Context, m state.Mount) error {
	log := d.cfg.Log.WithFields(logrus.Fields{"volume": m.Name, "device": m.Device})
	live, err := d.cfg.Host.Mounted(m.Mountpoint)
	if err != nil {
		return err
	}
	_, p, kind, err := d.lookup(ctx, m.Name)
	if err != nil {
		return err
	}
	if live && m.Total() > 0 {
		log.WithField("users", m.Total()).Info("mount kept")
		if r, ok := kind.Backend.(backend.Resumer); ok {
			return r.Resume(ctx, m.Name, p.Options, m.Mountpoint, mountedOf(m))
		}
		return nil
	}
	log.WithFields(logrus.Fields{"mounted": live, "users": m.Total()}).Info("releasing a mount nobody uses")
	return d.release(ctx, kind, p, m)
}

// sweepOrphans unmounts what is mounted under the root without a record.
func (d *Driver) sweepOrphans(ctx context.Context, known map[string]bool) error {
	targets, err := d.cfg.Host.MountsUnder(d.cfg.MountRoot)
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range targets {
		name := filepath.Base(t)
		if known[t] || filepath.Dir(t) != filepath.Clean(d.cfg.MountRoot) || CheckName(name) != nil {
			continue
		}
		_, p, kind, err := d.lookup(ctx, name)
		if err == nil {
			d.cfg.Log.WithField("volume", name).Warn("unmounting a mount without a record")
			err = kind.Backend.Unmount(ctx, name, p.Options, t, backend.Mounted{})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("orphan mount %s: %w", t, err))
		}
	}
	return errors.Join(errs...)
}

func mountedOf(m state.Mount) backend.Mounted {
	return backend.Mounted{Device: m.Device, Method: m.Method, Export: m.Export, Generation: m.Generation, Subdir: m.Subdir}
}
