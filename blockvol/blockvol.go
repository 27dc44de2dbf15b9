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
	API       API                // the storage daemon (an *api.Client)
	Node      string             // this host's node name in attachments
	NBDAddr   string             // host:port or unix:/path; "" asks GET /healthz
	Attacher  Attacher           // KernelAttacher, or a userspace one
	Mounter   Mounter            // mount.System
	Formatter Formatter          // Mkfs
	Log       logrus.FieldLogger // lease renewal and takeovers only; nil discards
	Now       func() time.Time   // clock of leases (with a monotonic reading); nil means time.Now
	// HostName is this host's name as its kernel stamps ext4's
	// multi-mount protection blocks (mmp.go); "" means os.Hostname.
	HostName string
}

// Backend implements backend.Backend and backend.Resumer for nbd volumes.
type Backend struct {
	cfg Config

	mu     sync.Mutex
	leases map[string]*lease // by volume, while mounted here
}

var (
	_ backend.Backend = (*Backend)(nil)
	_ backend.Resumer = (*Backend)(nil)
)

// New checks cfg and returns a Backend. Call Close when done.
func New(cfg Config) (*Backend, error) {
	if cfg.API == nil || cfg.Attacher == nil || cfg.Mounter == nil || cfg.Formatter == nil {
		return nil, fmt.Errorf("nbd backend: API, Attacher, Mounter and Formatter are required: %w", backend.ErrInvalid)
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
	return &Backend{cfg: cfg, leases: map[string]*lease{}}, nil
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

// Create makes the volume on the storage daemon. The driver supplies the
// size (its default when the user gave none).
func (b *Backend) Create(ctx context.Context, name string, o backend.Options) error {
	if err := checkOptions(o); err != nil {
		return fmt.Errorf("create volume %q: %w", name, err)
	}
	if o.Size <= 0 && o.FromBackup == "" { // a restore may take the backup's size
		return fmt.Errorf("create volume %q: size %d: must be more than zero: %w", name, o.Size, backend.ErrInvalid)
	}
	if o.Server != "" && o.Server != b.cfg.API.Server() {
		return fmt.Errorf("create volume %q: server %q: this nbd backend uses %s only: %w", name, o.Server, b.cfg.API.Server(), backend.ErrInvalid)
	}
	req := api.CreateRequest{Name: name, Size: api.Size(o.Size), From: o.From, FromSnapshot: o.FromSnapshot,
		FromBackup: o.FromBackup, Labels: storedLabels(o)}
	_, err := b.cfg.API.CreateVolume(ctx, req)
	if err != nil {
		return fmt.Errorf("create volume %q: %w", name, b.mapErr(err))
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
// has clones, and says by whom.
func (b *Backend) Remove(ctx context.Context, name string, _ backend.Options) error {
	if err := b.cfg.API.DeleteVolume(ctx, name); err != nil {
		return fmt.Errorf("remove volume %q: %w", name, b.mapErr(err))
	}
	return nil
}

// Get reports one volume.
func (b *Backend) Get(ctx context.Context, name string, _ backend.Options) (backend.Volume, error) {
	v, err := b.cfg.API.GetVolume(ctx, name)
	if err != nil {
		return backend.Volume{}, fmt.Errorf("volume %q: %w", name, b.mapErr(err))
	}
	return b.volume(v), nil
}

// List reports every volume of the storage daemon.
func (b *Backend) List(ctx context.Context) ([]backend.Volume, error) {
	vols, err := b.cfg.API.ListVolumes(ctx)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", b.mapErr(err))
	}
	out := make([]backend.Volume, 0, len(vols))
	for _, v := range vols {
		out = append(out, b.volume(v))
	}
	return out, nil
}

// mapErr adds advice to an API failure. The API's errors are errdefs'
// kinds already, so they match the backend's with errors.Is as they are.
func (b *Backend) mapErr(err error) error {
	if errors.Is(err, api.ErrUnauthorized) {
		return fmt.Errorf("the storage server %s refused the plugin's API token (check the token file): %w", b.cfg.API.Server(), err)
	}
	return err
}
