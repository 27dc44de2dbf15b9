package volume

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/state"
	"github.com/netvol/netvol/volume/backend"
)

// DefaultTimeout bounds every driver call: under the 30 s Docker gives a
// managed plugin, with room for the answer to travel.
const DefaultTimeout = 25 * time.Second

// Host is what the driver needs to know of this host's mounts.
type Host interface {
	// Mounted reports whether path is a mount point.
	Mounted(path string) (bool, error)
	// MountsUnder lists the mount points below root.
	MountsUnder(root string) ([]string, error)
	// Usage reports the bytes used and the size of the file system at path.
	Usage(path string) (used, size int64, err error)
}

// Kind is one configured volume type: its backend and the checks of the
// options only it understands (nil: no check beyond the allowlist).
type Kind struct {
	Backend        backend.Backend
	CheckMountOpts func([]string) error
	CheckMkfsOpts  func([]string) error
}

// Config wires a Driver.
type Config struct {
	Store       *state.NodeStore
	Kinds       map[string]Kind // by type: "nfs", "nbd"
	DefaultType string
	DefaultSize int64 // bytes, for nbd volumes created without size
	MountRoot   string
	Host        Host
	Timeout     time.Duration      // per call; DefaultTimeout when 0
	Log         logrus.FieldLogger // nil: discard
	Now         func() time.Time   // nil: time.Now
	// Observe, when set, is told of every call: its method, duration and
	// error (metrics).
	Observe func(method string, d time.Duration, err error)
}

// Driver implements go-plugins-helpers' volume.Driver.
type Driver struct {
	cfg   Config
	locks *keyedLocks
}

var _ volume.Driver = (*Driver)(nil)

// New checks cfg and returns a driver. Call Reconcile before serving.
func New(cfg Config) (*Driver, error) {
	if cfg.Store == nil || cfg.Host == nil || len(cfg.Kinds) == 0 {
		return nil, errors.New("volume: Config needs a Store, a Host and at least one Kind")
	}
	if _, ok := cfg.Kinds[cfg.DefaultType]; !ok {
		return nil, fmt.Errorf("volume: default type %q is not configured (configured: %v)", cfg.DefaultType, kindNames(cfg.Kinds))
	}
	if !filepath.IsAbs(cfg.MountRoot) {
		return nil, fmt.Errorf("volume: mount root %q must be an absolute path", cfg.MountRoot)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Log == nil {
		l := logrus.New()
		l.SetOutput(discard{})
		cfg.Log = l
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Driver{cfg: cfg, locks: newKeyedLocks()}, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func kindNames(kinds map[string]Kind) []string {
	var names []string
	for k := range kinds {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// call runs fn under the volume's lock and the call deadline. When fn
// overruns, call answers with the deadline error and fn finishes alone.
func (d *Driver) call(op, name string, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.Timeout)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		release, err := d.locks.lock(ctx, name)
		if err != nil {
			done <- fmt.Errorf("waiting for another operation on the volume: %w", err)
			return
		}
		defer release()
		done <- fn(ctx)
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = fmt.Errorf("no answer within %s: %w", d.cfg.Timeout, ctx.Err())
	}
	if d.cfg.Observe != nil {
		d.cfg.Observe(op, time.Since(start), err)
	}
	switch {
	case errors.Is(err, backend.ErrNotFound) && op == "get":
		// Docker asks before every create: not news.
		d.cfg.Log.WithFields(logrus.Fields{"volume": name, "call": op}).Debug("no such volume")
	case err != nil:
		d.cfg.Log.WithError(err).WithFields(logrus.Fields{"volume": name, "call": op}).Warn("volume call failed")
	}
	return dockerError(op, name, err)
}

// mountpoint is where a volume is mounted on this host. Names are checked,
// so it never leaves the root.
func (d *Driver) mountpoint(name string) string { return filepath.Join(d.cfg.MountRoot, name) }

// Capabilities: volumes are global, the same name means the same data on
// every host.
func (d *Driver) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "global"}}
}

// Create makes a volume on its backend and records it.
func (d *Driver) Create(req *volume.CreateRequest) error {
	return d.call("create", req.Name, func(ctx context.Context) error {
		if err := CheckName(req.Name); err != nil {
			return err
		}
		p, kind, err := d.parse(req.Options)
		if err != nil {
			return err
		}
		if _, err := d.cfg.Store.GetVolume(req.Name); err == nil {
			return fmt.Errorf("%w on this host", backend.ErrExists)
		}
		if err := kind.Backend.Create(ctx, req.Name, p.Options); err != nil {
			if errors.Is(err, backend.ErrExists) {
				return d.adoptRaced(ctx, req.Name, p.Type, kind, p, err)
			}
			return err
		}
		raw := map[string]string{"type": p.Type}
		for k, v := range req.Options {
			raw[k] = v
		}
		err = d.cfg.Store.PutVolume(state.NodeVolume{Name: req.Name, Type: p.Type, Options: raw,
			Server: p.Options.Server, Export: p.Options.Export, Created: d.cfg.Now().UTC()})
		if err != nil {
			return fmt.Errorf("created, but recording it failed (it is listed from the backend): %w", err)
		}
		d.cfg.Log.WithFields(logrus.Fields{"volume": req.Name, "type": p.Type}).Info("volume created")
		return nil
	})
}

// parse validates raw options, including the backend-specific checks.
func (d *Driver) parse(raw map[string]string) (Parsed, Kind, error) {
	p, err := ParseOptions(raw, d.cfg.DefaultType, d.cfg.DefaultSize)
	if err != nil {
		return Parsed{}, Kind{}, err
	}
	kind, ok := d.cfg.Kinds[p.Type]
	if !ok {
		return Parsed{}, Kind{}, fmt.Errorf("type=%s volumes are not configured on this host (configured: %v): %w",
			p.Type, kindNames(d.cfg.Kinds), backend.ErrInvalid)
	}
	if kind.CheckMountOpts != nil && len(p.Options.MountOpts) > 0 {
		if err := kind.CheckMountOpts(p.Options.MountOpts); err != nil {
			return Parsed{}, Kind{}, fmt.Errorf("option mount-opts: %w: %w", err, backend.ErrInvalid)
		}
	}
	if kind.CheckMkfsOpts != nil && len(p.Options.MkfsOpts) > 0 {
		if err := kind.CheckMkfsOpts(p.Options.MkfsOpts); err != nil {
			return Parsed{}, Kind{}, fmt.Errorf("option mkfs-opts: %w: %w", err, backend.ErrInvalid)
		}
	}
	return p, kind, nil
}

// Remove deletes a volume (by its policy), refused while mounted here.
func (d *Driver) Remove(req *volume.RemoveRequest) error {
	return d.call("remove", req.Name, func(ctx context.Context) error {
		v, p, kind, err := d.lookup(ctx, req.Name)
		if err != nil {
			return err
		}
		if m, err := d.cfg.Store.GetMount(req.Name); err == nil {
			return fmt.Errorf("mounted on this host at %s by %d container(s): %w", m.Mountpoint, m.Total(), backend.ErrInUse)
		}
		// The creator's on-remove policy, wherever the volume is removed.
		if v, p, err = d.refresh(ctx, v, kind, p); err != nil {
			return err
		}
		if err := kind.Backend.Remove(ctx, v.Name, p.Options); err != nil && !errors.Is(err, backend.ErrNotFound) {
			return err
		}
		if err := d.cfg.Store.DeleteVolume(v.Name); err != nil && !errors.Is(err, state.ErrNotFound) {
			return err
		}
		d.cfg.Log.WithFields(logrus.Fields{"volume": v.Name, "type": v.Type}).Info("volume removed")
		return nil
	})
}

// lookup finds a volume: in the node store, else on the backends (a
// volume created on another host), which records it here.
func (d *Driver) lookup(ctx context.Context, name string) (state.NodeVolume, Parsed, Kind, error) {
	if err := CheckName(name); err != nil {
		return state.NodeVolume{}, Parsed{}, Kind{}, err
	}
	v, err := d.cfg.Store.GetVolume(name)
	if err == nil {
		p, kind, err := d.parse(v.Options)
		p.Options.Location = v.Server
		return v, p, kind, err
	}
	if !errors.Is(err, state.ErrNotFound) {
		return state.NodeVolume{}, Parsed{}, Kind{}, err
	}
	return d.discover(ctx, name)
}

// located records where the backend says v lives (a backend with several
// servers) and reports whether that changed.
func located(v *state.NodeVolume, p *Parsed, bv backend.Volume) bool {
	if bv.Server == "" || bv.Server == v.Server {
		return false
	}
	v.Server, p.Options.Location = bv.Server, bv.Server
	return true
}

// adoptRaced answers a Create whose backend says the volume exists (err)
// although Docker's Get found it nowhere a moment before: another host
// created it in between, as every node of a Swarm does at once for a
// service's volume. Docker takes a name it knows as created, whatever the
// options; so does this: the volume is recorded here as it is, with its
// creator's options, and nothing is made twice. A volume of another type
// is not found on this backend, so err stands only when Get fails.
func (d *Driver) adoptRaced(ctx context.Context, name, typ string, kind Kind, p Parsed, err error) error {
	bv, gerr := kind.Backend.Get(ctx, name, p.Options)
	if gerr != nil {
		return errors.Join(err, gerr)
	}
	if _, _, rerr := d.record(name, typ, bv); rerr != nil {
		return rerr
	}
	d.cfg.Log.WithFields(logrus.Fields{"volume": name, "type": typ}).Info("volume created by another host at the same time: using it")
	return nil
}

// record keeps a volume found on the backend of type typ in the node
// store, with the options stored with it and the server that holds it
// (a backend with several servers).
func (d *Driver) record(name, typ string, bv backend.Volume) (state.NodeVolume, Parsed, error) {
	v := state.NodeVolume{Name: name, Type: typ, Options: map[string]string{"type": typ},
		Server: bv.Server, Created: bv.CreatedAt, Status: bv.Status, StatusAt: d.cfg.Now().UTC()}
	if _, err := d.applyStored(&v, bv.Stored); err != nil {
		return state.NodeVolume{}, Parsed{}, err
	}
	p, _, err := d.parse(v.Options)
	if err != nil {
		return state.NodeVolume{}, Parsed{}, err
	}
	p.Options.Location = v.Server
	if err := d.cfg.Store.PutVolume(v); err != nil {
		return state.NodeVolume{}, Parsed{}, err
	}
	return v, p, nil
}

// discover asks every backend for a volume unknown here.
func (d *Driver) discover(ctx context.Context, name string) (state.NodeVolume, Parsed, Kind, error) {
	var unavailable error
	for _, typ := range kindNames(d.cfg.Kinds) {
		p, kind, _ := d.parse(map[string]string{"type": typ})
		bv, err := kind.Backend.Get(ctx, name, p.Options)
		if errors.Is(err, backend.ErrNotFound) {
			continue
		}
		if err != nil {
			unavailable = errors.Join(unavailable, err)
			continue
		}
		v, p, err := d.record(name, typ, bv)
		if err != nil {
			return state.NodeVolume{}, Parsed{}, Kind{}, err
		}
		return v, p, kind, nil
	}
	if unavailable != nil {
		return state.NodeVolume{}, Parsed{}, Kind{}, unavailable
	}
	return state.NodeVolume{}, Parsed{}, Kind{}, backend.ErrNotFound
}
