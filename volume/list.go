package volume

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/netvol/netvol/state"
	"github.com/netvol/netvol/volume/backend"
)

// Get reports a volume with its backend's status, or the status cached
// here when the backend cannot be reached (Status says so).
func (d *Driver) Get(req *volume.GetRequest) (*volume.GetResponse, error) {
	var out *volume.Volume
	err := d.call("get", req.Name, func(ctx context.Context) error {
		v, p, kind, err := d.lookup(ctx, req.Name)
		if err != nil {
			return err
		}
		out, err = d.describe(ctx, v, p, kind)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &volume.GetResponse{Volume: out}, nil
}

func (d *Driver) describe(ctx context.Context, v state.NodeVolume, p Parsed, kind Kind) (*volume.Volume, error) {
	status := map[string]any{}
	bv, err := kind.Backend.Get(ctx, v.Name, p.Options)
	switch {
	case errors.Is(err, backend.ErrUnavailable):
		for k, s := range v.Status {
			status[k] = s
		}
		status["status"] = fmt.Sprintf("backend unreachable, cached at %s: %v", v.StatusAt.Format(time.RFC3339), err)
	case err != nil:
		return nil, err
	default:
		for k, s := range bv.Status {
			status[k] = s
		}
		moved := located(&v, &p, bv)
		changed, err := d.applyStored(&v, bv.Stored)
		if err != nil {
			return nil, err
		}
		if changed || moved || !maps.Equal(bv.Status, v.Status) {
			v.Status, v.StatusAt = bv.Status, d.cfg.Now().UTC()
			_ = d.cfg.Store.PutVolume(v) // a cache: a failed write costs freshness only
		}
	}
	status["type"] = v.Type
	out := &volume.Volume{Name: v.Name, Status: status}
	if !v.Created.IsZero() {
		out.CreatedAt = v.Created.UTC().Format(time.RFC3339)
	}
	if m, err := d.cfg.Store.GetMount(v.Name); err == nil {
		out.Mountpoint = filepath.Join(m.Mountpoint, m.Subdir)
		status["mounted_here"] = fmt.Sprintf("%s (%d container mount(s))", m.Mountpoint, m.Total())
		if used, size, err := d.cfg.Host.Usage(m.Mountpoint); err == nil {
			status["usage"] = fmt.Sprintf("%d of %d bytes", used, size)
		}
	}
	return out, nil
}

// List reports the volumes of every backend. A backend that cannot be
// reached is answered from the cache of the last successful List.
func (d *Driver) List() (*volume.ListResponse, error) {
	var out []*volume.Volume
	err := d.call("list", "", func(ctx context.Context) error {
		var err error
		out, err = d.list(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &volume.ListResponse{Volumes: out}, nil
}

type listed struct {
	vols []backend.Volume
	err  error
}

func (d *Driver) list(ctx context.Context) ([]*volume.Volume, error) {
	results := d.listBackends(ctx)
	cached, err := d.cfg.Store.ListVolumes()
	if err != nil {
		return nil, err
	}
	mounts, err := d.cfg.Store.ListMounts()
	if err != nil {
		return nil, err
	}
	byName := map[string]state.NodeVolume{}
	for _, v := range cached {
		byName[v.Name] = v
	}
	var fresh []state.NodeVolume
	seen := map[string]bool{}
	for typ, r := range results {
		if r.err != nil {
			d.cfg.Log.WithError(r.err).WithField("type", typ).Warn("listing volumes failed in part or whole; answering from the cache for what did not answer")
		}
		for _, bv := range r.vols {
			seen[bv.Name] = true
			old, ok := byName[bv.Name]
			switch {
			case !ok || old.Type != typ:
				fresh = append(fresh, state.NodeVolume{Name: bv.Name, Type: typ, Options: map[string]string{"type": typ},
					Server: bv.Server, Created: bv.CreatedAt, Status: bv.Status, StatusAt: d.cfg.Now().UTC()})
			case bv.Server != "" && old.Server != bv.Server:
				old.Server = bv.Server // moved to another server of the pool
				fresh = append(fresh, old)
			}
		}
	}
	d.updateCache(results, cached, fresh, seen)
	return d.answer(results, cached, mounts), nil
}

// listBackends lists every backend at once.
func (d *Driver) listBackends(ctx context.Context) map[string]listed {
	results := map[string]listed{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for typ, kind := range d.cfg.Kinds {
		wg.Go(func() {
			vols, err := kind.Backend.List(ctx)
			mu.Lock()
			results[typ] = listed{vols, err}
			mu.Unlock()
		})
	}
	wg.Wait()
	return results
}

// updateCache records volumes seen for the first time and forgets those
// their (reachable) backend no longer has, unless mounted here.
func (d *Driver) updateCache(results map[string]listed, cached, fresh []state.NodeVolume, seen map[string]bool) {
	if len(fresh) > 0 {
		if err := d.cfg.Store.PutVolumes(fresh); err != nil {
			d.cfg.Log.WithError(err).Warn("caching the volume list failed")
		}
	}
	for _, v := range cached {
		if r, ok := results[v.Type]; ok && r.answered(v) && !seen[v.Name] {
			_ = d.cfg.Store.DeleteVolume(v.Name) // refused while mounted: then it stays
		}
	}
}

// answered reports whether the list r speaks for v: a list that failed
// speaks for nothing, one that reached some servers of the backend only
// (a *backend.PartialError) for the volumes last seen elsewhere.
func (r listed) answered(v state.NodeVolume) bool {
	if r.err == nil {
		return true
	}
	var pe *backend.PartialError
	return errors.As(r.err, &pe) && v.Server != "" && !slices.Contains(pe.Servers, v.Server)
}

func (d *Driver) answer(results map[string]listed, cached []state.NodeVolume, mounts []state.Mount) []*volume.Volume {
	where := map[string]string{}
	for _, m := range mounts {
		where[m.Name] = filepath.Join(m.Mountpoint, m.Subdir)
	}
	out := []*volume.Volume{}
	add := func(name string, created time.Time) {
		v := &volume.Volume{Name: name, Mountpoint: where[name]}
		if !created.IsZero() {
			v.CreatedAt = created.UTC().Format(time.RFC3339)
		}
		out = append(out, v)
	}
	for _, r := range results {
		for _, bv := range r.vols {
			add(bv.Name, bv.CreatedAt)
		}
	}
	seen := map[string]bool{}
	for _, r := range results {
		for _, bv := range r.vols {
			seen[bv.Name] = true
		}
	}
	for _, v := range cached {
		if r, ok := results[v.Type]; ok && !seen[v.Name] && !r.answered(v) {
			add(v.Name, v.Created)
		}
	}
	return out
}
