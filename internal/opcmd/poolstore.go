package opcmd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/netvol/netvol/blockvol"
	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume/backend"
)

// blockStore is where nbd volumes live: one storage daemon (nbdStore) or
// a pool of them (poolStore).
type blockStore interface {
	volumeStore
	Resize(ctx context.Context, name string, size int64) (VolumeInfo, []api.PendingGrowth, error)
	// holder is the storage daemon that holds volume name (in a pool, the
	// server it lives on), for the calls that concern one volume:
	// snapshots, rollback, resize.
	holder(ctx context.Context, name string) (nbdStore, error)
	// backupDaemon is the storage daemon asked about the backup target
	// (list, remove, verify): in a pool, the first --server (the servers
	// of a pool share one backup target).
	backupDaemon() (nbdStore, error)
	// restore creates a volume of a backup, placed as a create is.
	restore(ctx context.Context, req api.CreateRequest) (api.Volume, error)
	fail(what string, err error) error
}

var (
	_ blockStore = nbdStore{}
	_ blockStore = poolStore{}
)

// poolStore is the volumes of a pool of storage daemons, by the rules the
// plugin follows (blockvol.Pool).
type poolStore struct{ p *blockvol.Pool }

func newPoolStore(clients []*api.Client) (poolStore, error) {
	apis := make([]blockvol.API, len(clients))
	for i, c := range clients {
		apis[i] = c
	}
	p, err := blockvol.NewPool(apis)
	if err != nil {
		return poolStore{}, fmt.Errorf("--server (NETVOL_SERVER): %w", err)
	}
	return poolStore{p: p}, nil
}

func (s poolStore) Type() string { return backend.TypeNBD }
func (s poolStore) Where() string {
	return "the storage servers " + strings.Join(s.p.Servers(), ", ")
}

// List lists every server at once; those that do not answer are named in
// the error, and the others' volumes are returned.
func (s poolStore) List(ctx context.Context) ([]VolumeInfo, error) {
	copies, down := s.p.List(ctx)
	out := make([]VolumeInfo, 0, len(copies))
	for _, c := range copies {
		out = append(out, poolInfo(c.Server, c.Volume))
	}
	var errs []error
	for _, srv := range slices.Sorted(maps.Keys(down)) {
		errs = append(errs, fmt.Errorf("listing nbd volumes on the storage server %s: %w%s", srv, down[srv], nbdAdvice(down[srv])))
	}
	return out, errors.Join(errs...)
}

func (s poolStore) Get(ctx context.Context, name string) (VolumeInfo, error) {
	srv, v, err := s.p.Locate(ctx, name)
	if err != nil {
		return VolumeInfo{}, s.fail("nbd volume "+strconv.Quote(name), err)
	}
	return poolInfo(srv, v), nil
}

func (s poolStore) Create(ctx context.Context, name string, o backend.Options) (VolumeInfo, error) {
	srv, err := s.p.Create(ctx, api.CreateRequest{Name: name, Size: api.Size(o.Size), From: o.From, FromSnapshot: o.FromSnapshot}, o.Server)
	if err != nil {
		return VolumeInfo{}, s.fail("creating nbd volume "+strconv.Quote(name), err)
	}
	v, err := s.p.API(srv).GetVolume(ctx, name)
	if err != nil {
		return VolumeInfo{}, s.fail("nbd volume "+strconv.Quote(name), err)
	}
	return poolInfo(srv, v), nil
}

func (s poolStore) Remove(ctx context.Context, name string) error {
	if _, err := s.p.Remove(ctx, name); err != nil {
		return s.fail("removing nbd volume "+strconv.Quote(name), err)
	}
	return nil
}

func (s poolStore) Resize(ctx context.Context, name string, size int64) (VolumeInfo, []api.PendingGrowth, error) {
	h, err := s.holder(ctx, name)
	if err != nil {
		return VolumeInfo{}, nil, err
	}
	return h.Resize(ctx, name, size)
}

// holder is the daemon of the server that holds name.
func (s poolStore) holder(ctx context.Context, name string) (nbdStore, error) {
	srv, _, err := s.p.Locate(ctx, name)
	if err != nil {
		return nbdStore{}, s.fail("nbd volume "+strconv.Quote(name), err)
	}
	c, ok := s.p.API(srv).(*api.Client)
	if !ok {
		return nbdStore{}, fmt.Errorf("storage server %s: not an API client", srv)
	}
	return nbdStore{api: c, server: srv}, nil
}

func (s poolStore) backupDaemon() (nbdStore, error) {
	srv := s.p.Servers()[0]
	c, ok := s.p.API(srv).(*api.Client)
	if !ok {
		return nbdStore{}, fmt.Errorf("storage server %s: not an API client", srv)
	}
	return nbdStore{api: c, server: srv}, nil
}

func (s poolStore) restore(ctx context.Context, req api.CreateRequest) (api.Volume, error) {
	srv, err := s.p.Create(ctx, req, "")
	if err != nil {
		return api.Volume{}, err
	}
	return s.p.API(srv).GetVolume(ctx, req.Name)
}

func (s poolStore) fail(what string, err error) error {
	return fmt.Errorf("%s in %s: %w%s", what, s.Where(), err, nbdAdvice(err))
}

func poolInfo(server string, v api.Volume) VolumeInfo {
	return nbdStore{server: server}.info(v)
}

// Move moves an nbd volume of the pool to the server to (as --server
// names it), printing each step.
func (v *Volumes) Move(ctx context.Context, name, to, host string) error {
	s, err := v.poolStore()
	if err != nil {
		return err
	}
	ctx, cancel := v.context(ctx)
	defer cancel()
	return s.p.Move(ctx, name, to, blockvol.MoverNode(host), func(step string) { fmt.Fprintln(v.Out, name+": "+step) })
}

// Drain moves every detached volume off server.
func (v *Volumes) Drain(ctx context.Context, server, host string) error {
	s, err := v.poolStore()
	if err != nil {
		return err
	}
	ctx, cancel := v.context(ctx)
	defer cancel()
	moved, failed, err := s.p.Drain(ctx, server, blockvol.MoverNode(host), func(step string) { fmt.Fprintln(v.Out, step) })
	if err != nil {
		return err
	}
	for _, m := range moved {
		fmt.Fprintln(v.Out, "moved "+m)
	}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(failed)) {
		errs = append(errs, fmt.Errorf("not moved: %s: %w", name, failed[name]))
	}
	if len(errs) > 0 {
		errs = append(errs, fmt.Errorf("%d volumes stay on %s (attached ones move once no host mounts them: run drain again; clones, volumes with clones and volumes with snapshots stay with their snapshots and clones)", len(failed), server))
	}
	return errors.Join(errs...)
}

func (v *Volumes) poolStore() (poolStore, error) {
	s, err := v.nbdStore()
	if err != nil {
		return poolStore{}, err
	}
	ps, ok := s.(poolStore)
	if !ok {
		return poolStore{}, fmt.Errorf("--server (NETVOL_SERVER) names one storage server: moving volumes needs the pool, every server separated by commas: %w", backend.ErrInvalid)
	}
	return ps, nil
}
