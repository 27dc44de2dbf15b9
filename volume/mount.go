package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/state"
	"github.com/netvol/netvol/volume/backend"
)

// Mount mounts a volume for a container, or counts one more user of the
// mount already here: a volume is mounted at most once per host.
func (d *Driver) Mount(req *volume.MountRequest) (*volume.MountResponse, error) {
	var path string
	err := d.call("mount", req.Name, func(ctx context.Context) error {
		var err error
		path, err = d.mount(ctx, req.Name, req.ID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &volume.MountResponse{Mountpoint: path}, nil
}

func (d *Driver) mount(ctx context.Context, name, id string) (string, error) {
	if id == "" {
		return "", fmt.Errorf("mount without a mount ID: %w", backend.ErrInvalid)
	}
	v, p, kind, err := d.lookup(ctx, name)
	if err != nil {
		return "", err
	}
	if m, err := d.cfg.Store.GetMount(name); err == nil {
		live, err := d.cfg.Host.Mounted(m.Mountpoint)
		if err != nil {
			return "", err
		}
		if live {
			if _, err := d.cfg.Store.AddMountID(name, id); err != nil {
				return "", err
			}
			return filepath.Join(m.Mountpoint, m.Subdir), nil
		}
		// A record without its mount (host rebooted, unmounted by hand):
		// release what it holds, then mount afresh.
		if err := d.release(ctx, kind, p, m); err != nil {
			return "", fmt.Errorf("cleaning up a stale mount: %w", err)
		}
	} else if !errors.Is(err, state.ErrNotFound) {
		return "", err
	}
	// The owner, mode and mount options the volume's creator gave.
	if v, p, err = d.refresh(ctx, v, kind, p); err != nil {
		return "", err
	}
	return d.mountNew(ctx, v, p, kind, id)
}

func (d *Driver) mountNew(ctx context.Context, v state.NodeVolume, p Parsed, kind Kind, id string) (string, error) {
	target := d.mountpoint(v.Name)
	if err := os.MkdirAll(target, 0o700); err != nil {
		return "", err
	}
	mounted, err := kind.Backend.Mount(ctx, v.Name, p.Options, target)
	if err != nil {
		return "", err
	}
	m := state.Mount{Name: v.Name, Mountpoint: target, Device: mounted.Device, Method: mounted.Method,
		Export: mounted.Export, Generation: mounted.Generation, Subdir: mounted.Subdir, IDs: map[string]int{id: 1}}
	if err = ctx.Err(); err == nil {
		err = d.cfg.Store.PutMount(m)
	}
	if err != nil {
		// Docker gets an error and will not unmount: undo now.
		undo, cancel := context.WithTimeout(context.Background(), d.cfg.Timeout)
		defer cancel()
		if uerr := kind.Backend.Unmount(undo, v.Name, p.Options, target, mounted); uerr != nil {
			d.cfg.Log.WithError(uerr).WithField("volume", v.Name).Error("undoing a mount failed")
		}
		return "", err
	}
	d.cfg.Log.WithFields(logrus.Fields{"volume": v.Name, "type": v.Type, "device": m.Device, "id": id}).Info("volume mounted")
	return filepath.Join(target, m.Subdir), nil
}

// release undoes a mount through its backend and forgets its record.
func (d *Driver) release(ctx context.Context, kind Kind, p Parsed, m state.Mount) error {
	if err := kind.Backend.Unmount(ctx, m.Name, p.Options, m.Mountpoint, mountedOf(m)); err != nil {
		return err
	}
	if _, err := d.cfg.Store.DeleteMount(m.Name); err != nil && !errors.Is(err, state.ErrNotFound) {
		return err
	}
	return nil
}

// Unmount counts one user less; the last one unmounts and detaches.
func (d *Driver) Unmount(req *volume.UnmountRequest) error {
	return d.call("unmount", req.Name, func(ctx context.Context) error {
		total, err := d.cfg.Store.RemoveMountID(req.Name, req.ID)
		if err != nil {
			return err
		}
		if total > 0 {
			return nil
		}
		m, err := d.cfg.Store.GetMount(req.Name)
		if err != nil {
			return err
		}
		_, p, kind, err := d.lookup(ctx, req.Name)
		if err != nil {
			return err
		}
		// On failure the record stays with no IDs: Reconcile retries.
		if err := d.release(ctx, kind, p, m); err != nil {
			return err
		}
		d.cfg.Log.WithFields(logrus.Fields{"volume": req.Name, "id": req.ID}).Info("volume unmounted")
		return nil
	})
}

// Path answers where a volume is mounted here, "" when it is not.
func (d *Driver) Path(req *volume.PathRequest) (*volume.PathResponse, error) {
	var path string
	err := d.call("path", req.Name, func(context.Context) error {
		if err := CheckName(req.Name); err != nil {
			return err
		}
		m, err := d.cfg.Store.GetMount(req.Name)
		if err == nil {
			path = filepath.Join(m.Mountpoint, m.Subdir)
		} else if !errors.Is(err, state.ErrNotFound) {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &volume.PathResponse{Mountpoint: path}, nil
}
