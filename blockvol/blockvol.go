package blockvol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/internal/names"
	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume/backend"
)

// Config configures a Backend. API, Node, Attacher, Mounter and Formatter
// are required: no real attacher, mounter or formatter is chosen behind a
// caller's back (a test that forgot a fake would format and mount for real).
type Config struct {
	API       API       // the storage daemon (an *api.Client); one server
	Servers   []API     // the pool's storage daemons (PoolAPIs); replaces API
	Node      string    // this host's node name in attachments
	NBDAddr   string    // host:port or unix:/path; "" asks GET /healthz
	Attacher  Attacher  // KernelAttacher, or a userspace one
	Mounter   Mounter   // mount.System
	Formatter Formatter // Mkfs
	// FSGrower grows mounted file systems when their volume grew
	// (Ext4Grower); nil grows none, and a resize of a volume mounted here
	// then stays pending with that reason.
	FSGrower FSGrower
	Log      logrus.FieldLogger // lease renewal, takeovers and growth only; nil discards
	Now      func() time.Time   // clock of leases (with a monotonic reading); nil means time.Now
	// HostName is this host's name as its kernel stamps ext4's
	// multi-mount protection blocks (mmp.go); "" means os.Hostname.
	HostName string
}

// Backend implements backend.Backend and backend.Resumer for nbd volumes.
type Backend struct {
	cfg  Config
	pool *pool

	mu     sync.Mutex
	leases map[string]*lease // by volume, while mounted here
}

var (
	_ backend.Backend = (*Backend)(nil)
	_ backend.Resumer = (*Backend)(nil)
)

// New checks cfg and returns a Backend. Call Close when done.
func New(cfg Config) (*Backend, error) {
	apis := cfg.Servers
	if len(apis) == 0 && cfg.API != nil {
		apis = []API{cfg.API}
	}
	if len(apis) == 0 || cfg.Attacher == nil || cfg.Mounter == nil || cfg.Formatter == nil {
		return nil, fmt.Errorf("nbd backend: API (or Servers), Attacher, Mounter and Formatter are required: %w", backend.ErrInvalid)
	}
	p, err := newPool(apis)
	if err != nil {
		return nil, fmt.Errorf("nbd backend: %w", err)
	}
	if cfg.NBDAddr != "" && !p.single() {
		return nil, fmt.Errorf("nbd backend: an NBD address (--nbd) serves one storage server, not a pool of %d: %w", len(p.members), backend.ErrInvalid)
	}
	// The daemon's rule, checked here too so that a bad name fails at
	// start and not at the first mount.
	if err := names.CheckNode(cfg.Node); err != nil {
		return nil, fmt.Errorf("nbd backend: %w", err)
	}
	if err := checkNBDAddr(cfg.NBDAddr); cfg.NBDAddr != "" && err != nil {
		return nil, fmt.Errorf("nbd backend: %w", err)
	}
	if cfg.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		cfg.Log = l
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HostName == "" {
		cfg.HostName, _ = os.Hostname()
	}
	return &Backend{cfg: cfg, pool: p, leases: map[string]*lease{}}, nil
}

// checkNBDAddr accepts host:port and unix:/path.
func checkNBDAddr(addr string) error {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if strings.HasPrefix(path, "/") {
			return nil
		}
	} else if host, port, err := net.SplitHostPort(addr); err == nil && host != "" && port != "" {
		return nil
	}
	return fmt.Errorf("NBD address %q: want host:port or unix:/path: %w", addr, backend.ErrInvalid)
}

// Close stops every lease renewal without detaching anything: the mounts
// stay, and a new Backend resumes them (Resume).
func (b *Backend) Close() {
	b.mu.Lock()
	leases := b.leases
	b.leases = map[string]*lease{}
	b.mu.Unlock()
	for _, l := range leases {
		l.halt()
	}
}

// Create makes the volume on the storage daemon, in a pool on the server
// the pool's rules pick (o.Server names one). The driver supplies the
// size (its default when the user gave none).
func (b *Backend) Create(ctx context.Context, name string, o backend.Options) error {
	if err := checkOptions(o); err != nil {
		return fmt.Errorf("create volume %q: %w", name, err)
	}
	if o.Size <= 0 && o.FromBackup == "" { // a restore may take the backup's size
		return fmt.Errorf("create volume %q: size %d: must be more than zero: %w", name, o.Size, backend.ErrInvalid)
	}
	req := api.CreateRequest{Name: name, Size: api.Size(o.Size), From: o.From, FromSnapshot: o.FromSnapshot,
		FromBackup: o.FromBackup, Labels: storedLabels(o)}
	m, err := b.pool.create(ctx, req, o.Server)
	if err != nil {
		return fmt.Errorf("create volume %q: %w", name, b.mapErr(m, err))
	}
	if !b.pool.single() {
		b.cfg.Log.WithFields(logrus.Fields{"volume": name, "server": m.name, "node": b.cfg.Node}).Info("volume placed")
	}
	return nil
}

// checkOptions refuses options the backend cannot honour, before anything
// is created or attached.
func checkOptions(o backend.Options) error {
	if err := o.CheckOwner(); err != nil {
		return err
	}
	if o.FS != "" && o.FS != "ext4" {
		return fmt.Errorf("file system %q: nbd volumes are ext4: %w", o.FS, backend.ErrInvalid)
	}
	if err := CheckMkfsOptions(o.MkfsOpts); err != nil {
		return err
	}
	return CheckMountOptions(o.MountOpts)
}

// Remove deletes the volume; the daemon refuses while it is attached or
// has clones, and says by whom. In a pool, incoming copies of a move that
// did not finish go too, and the name's claim is released.
func (b *Backend) Remove(ctx context.Context, name string, o backend.Options) error {
	loc, err := b.pool.locateAll(ctx, name)
	if err != nil {
		return fmt.Errorf("remove volume %q: %w", name, b.mapErr(loc.m, err))
	}
	if err := loc.m.api.DeleteVolume(ctx, name); err != nil {
		return fmt.Errorf("remove volume %q: %w", name, b.mapErr(loc.m, err))
	}
	var errs []error
	for _, x := range loc.extras {
		if err := x.api.DeleteVolume(ctx, name); err != nil && !errors.Is(err, api.ErrNotFound) {
			errs = append(errs, fmt.Errorf("removing the copy of an unfinished move on %s: %w", x.name, err))
		}
	}
	b.pool.release(ctx, name, loc.m)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove volume %q: %w", name, err)
	}
	return nil
}

// Get reports one volume.
func (b *Backend) Get(ctx context.Context, name string, o backend.Options) (backend.Volume, error) {
	loc, err := b.pool.locate(ctx, name, o.Location)
	if err != nil {
		return backend.Volume{}, fmt.Errorf("volume %q: %w", name, b.mapErr(loc.m, err))
	}
	return b.volume(loc.m, loc.v), nil
}

// List reports every volume of the pool. Its servers are asked at once,
// each for at most FanOutTimeout; when some do not answer, the volumes of
// the others come with a *backend.PartialError naming them.
func (b *Backend) List(ctx context.Context) ([]backend.Volume, error) {
	lists := b.pool.list(ctx)
	var down []string
	var errs []error
	for _, l := range lists {
		if l.err != nil {
			down = append(down, l.m.name)
			errs = append(errs, fmt.Errorf("storage server %s: %w", l.m.name, b.mapErr(l.m, l.err)))
		}
	}
	if len(down) == len(lists) {
		return nil, fmt.Errorf("list volumes: %w", errors.Join(errs...))
	}
	copies := merge(lists)
	out := make([]backend.Volume, 0, len(copies))
	for _, c := range copies {
		b.pool.remember(c.Volume.Name, c.Server)
		out = append(out, b.volume(b.pool.member(c.Server), c.Volume))
	}
	if len(down) > 0 {
		return out, &backend.PartialError{Servers: down, Err: fmt.Errorf("list volumes: %w", errors.Join(errs...))}
	}
	return out, nil
}

// mapErr adds advice to an API failure. The API's errors are errdefs'
// kinds already, so they match the backend's with errors.Is as they are.
func (b *Backend) mapErr(m *member, err error) error {
	if m != nil && errors.Is(err, api.ErrUnauthorized) {
		return fmt.Errorf("the storage server %s refused the plugin's API token (check the token file): %w", m.name, err)
	}
	if m != nil && !b.pool.single() && errors.Is(err, api.ErrUnavailable) {
		return fmt.Errorf("storage server %s: %w", m.name, err)
	}
	return err
}
