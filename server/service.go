package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/netvol/netvol/internal/names"
	"github.com/netvol/netvol/server/api"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/qcow2"
	"github.com/netvol/netvol/state"
)

// Defaults of Config.
const (
	DefaultMaxVolumeSize = 1 << 40 // 1 TiB
	DefaultLeaseTTL      = api.DefaultLeaseTTL
)

const (
	registryFile = "registry.db"
	volumesDir   = "volumes"
	imageExt     = ".qcow2"
	walExt       = ".wal" // the image's intent log: qcow2.WALPath
	tmpPrefix    = ".tmp-"
)

// Config configures a Service.
type Config struct {
	DataDir       string             // required
	MaxVolumeSize int64              // bytes; 0 means DefaultMaxVolumeSize
	LeaseTTL      time.Duration      // 0 means DefaultLeaseTTL
	Now           func() time.Time   // lease clock; nil means the daemon's own (see lease.go)
	Log           logrus.FieldLogger // start-up sweep, lease restore, lost writes; nil discards
	// BootID names the storage node's running boot; "" reads the kernel's.
	// Images left open by another boot may have lost unflushed writes.
	BootID string
	// Weight scales this server's share of new volumes in a pool (GET
	// /v1/capacity); 0 means 1. NoNewVolumes refuses creates (a server
	// being drained).
	Weight       float64
	NoNewVolumes bool
}

// Service is the storage daemon's state: registry, images and exports. It
// implements nbd.Exports. Control operations are serialised.
type Service struct {
	cfg     Config
	dir     string // <data>/volumes
	reg     *state.Registry
	lock    chan struct{} // a mutex whose Lock honours a context
	images  map[string]*qcow2.Image
	exports map[string]*nbd.Export // by export name
	closed  bool
	// instance names this run of the daemon: a client that sees it change
	// knows its NBD connections were closed by a restart and dials again.
	instance string
	counts   counters
}

// counters count what the attachments went through, for metrics.
type counters struct {
	attaches, renewals, takeovers atomic.Uint64
}

// Counters is a snapshot of the service's counters.
type Counters struct {
	Attaches  uint64 // attachments issued
	Renewals  uint64 // leases renewed
	Takeovers uint64 // attachments of other nodes taken over (lapsed leases)
}

// Counters returns the service's counters.
func (s *Service) Counters() Counters {
	return Counters{Attaches: s.counts.attaches.Load(), Renewals: s.counts.renewals.Load(), Takeovers: s.counts.takeovers.Load()}
}

var _ nbd.Exports = (*Service)(nil)

// Open opens the data directory (creating it if needed) and its registry,
// removes images the registry does not know, and gives every recorded
// lease a full term from now (see lease.go).
func Open(cfg Config) (*Service, error) {
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("no data directory: %w", state.ErrInvalid)
	}
	if cfg.MaxVolumeSize <= 0 {
		cfg.MaxVolumeSize = DefaultMaxVolumeSize
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.Now == nil {
		cfg.Now = monotonicClock()
	}
	if cfg.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		cfg.Log = l
	}
	dir := filepath.Join(cfg.DataDir, volumesDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	reg, err := state.OpenRegistry(filepath.Join(cfg.DataDir, registryFile))
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, dir: dir, reg: reg, lock: make(chan struct{}, 1),
		images: map[string]*qcow2.Image{}, exports: map[string]*nbd.Export{}, instance: newToken()[:16]}
	if err := s.sweep(); err != nil {
		reg.Close()
		return nil, err
	}
	if err := s.restartLeases(); err != nil {
		reg.Close()
		return nil, err
	}
	return s, nil
}

// sweep removes temporary images and images of volumes the registry does
// not hold (a crash between rename and commit, or after a delete's commit).
func (s *Service) sweep() error {
	vols, err := s.reg.ListVolumes()
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, v := range vols {
		known[filepath.Base(v.File)] = true
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		n := e.Name()
		image := strings.TrimSuffix(n, walExt)
		if !strings.HasPrefix(n, tmpPrefix) && (!strings.HasSuffix(image, imageExt) || known[image]) {
			continue
		}
		if err := os.Remove(filepath.Join(s.dir, n)); err != nil {
			return err
		}
		s.cfg.Log.WithField("file", n).Warn("removed an image the registry does not know")
	}
	return nil
}

// Close revokes every export, flushes and closes every image and closes the
// registry. Shut the NBD server down first so requests in flight finish.
func (s *Service) Close() error {
	s.lock <- struct{}{}
	defer func() { <-s.lock }()
	if s.closed {
		return nil
	}
	s.closed = true
	for name, e := range s.exports {
		e.Revoke()
		delete(s.exports, name)
	}
	var errs []error
	for name, img := range s.images {
		if err := img.Close(); err != nil {
			errs = append(errs, fmt.Errorf("volume %q: %w", name, err))
		}
		delete(s.images, name)
	}
	if err := s.reg.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// acquire takes the service lock, or fails when ctx ends first or the
// service is closed.
func (s *Service) acquire(ctx context.Context) error {
	select {
	case s.lock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if s.closed {
		<-s.lock
		return errors.New("service is closed")
	}
	return nil
}

func (s *Service) release() { <-s.lock }

func (s *Service) volume(v state.Volume) api.Volume {
	out := api.Volume{Name: v.Name, Size: v.Size, CreatedAt: v.Created, From: v.Parent,
		Labels: v.Labels, Attachments: []api.Attachment{}}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(s.cfg.DataDir, v.File), &st); err == nil {
		out.Allocated = st.Blocks * 512
	}
	now := s.cfg.Now()
	for _, a := range v.Attachments {
		out.Attachments = append(out.Attachments, api.Attachment{Node: a.Node, Mode: string(a.Mode),
			Generation: a.Generation, Expires: a.Expires, ExpiresInMS: floorMS(a.Expires.Sub(now)), LostWrites: a.LostWrites})
	}
	return out
}

func checkVolumeName(name string) error { return names.CheckVolume(name) }

func (s *Service) checkSize(size int64) error {
	switch {
	case size <= 0:
		return fmt.Errorf("size %d: must be more than zero: %w", size, state.ErrInvalid)
	case size > s.cfg.MaxVolumeSize:
		return fmt.Errorf("size %d is over the limit of %d bytes: %w", size, s.cfg.MaxVolumeSize, state.ErrInvalid)
	case size%512 != 0:
		return fmt.Errorf("size %d: must be a multiple of 512 bytes: %w", size, state.ErrInvalid)
	}
	return nil
}

// CreateVolume makes a volume: a new image, or with req.From an overlay of
// that volume's image. Size may be left out for a clone (the source's).
func (s *Service) CreateVolume(ctx context.Context, req api.CreateRequest) (api.Volume, error) {
	if err := checkVolumeName(req.Name); err != nil {
		return api.Volume{}, err
	}
	if s.cfg.NoNewVolumes {
		return api.Volume{}, fmt.Errorf("volume %q: this server takes no new volumes (--no-new-volumes, being drained): %w", req.Name, state.ErrInvalid)
	}
	if err := s.acquire(ctx); err != nil {
		return api.Volume{}, err
	}
	defer s.release()
	size, backing := int64(req.Size), ""
	if req.From != "" {
		src, err := s.reg.GetVolume(req.From)
		if err != nil {
			return api.Volume{}, fmt.Errorf("clone source: %w", err)
		}
		if size == 0 {
			size = src.Size
		}
		if size < src.Size {
			return api.Volume{}, fmt.Errorf("size %d is smaller than the source %q (%d): %w", size, src.Name, src.Size, state.ErrInvalid)
		}
		backing = filepath.Base(src.File)
	}
	if err := s.checkSize(size); err != nil {
		return api.Volume{}, err
	}
	v := state.Volume{Name: req.Name, Size: size, File: filepath.Join(volumesDir, req.Name+imageExt),
		Parent: req.From, Created: s.cfg.Now().UTC(), Labels: req.Labels}
	if err := s.createImage(v, backing); err != nil {
		return api.Volume{}, err
	}
	if err := s.register(v); err != nil {
		os.Remove(filepath.Join(s.cfg.DataDir, v.File))
		return api.Volume{}, err
	}
	return s.volume(v), nil
}

// register records v. For a clone, the same transaction makes the source
// immutable (state.Registry.CloneVolume: refused while a read-write
// attachment of it is live, lapsed ones removed); then the exports of the
// removed attachments are revoked, which closes their connections and
// waits for their requests in flight, and the source's image is flushed.
// Only then does the clone exist for anyone else (the lock is held
// throughout), so it reads its source as of this moment. Should the
// flush fail, the clone is removed again.
func (s *Service) register(v state.Volume) error {
	if v.Parent == "" {
		return s.reg.CreateVolume(v)
	}
	revoked, err := s.reg.CloneVolume(v, s.cfg.Now())
	if err != nil {
		return err
	}
	for _, a := range revoked {
		s.revoke(a.Export)
	}
	img := s.images[v.Parent]
	if img == nil {
		return nil
	}
	if err := img.Flush(); err != nil {
		if _, derr := s.reg.DeleteVolume(v.Name, s.cfg.Now()); derr != nil {
			return fmt.Errorf("clone source %q: %w; removing the clone %q: %v", v.Parent, err, v.Name, derr)
		}
		return fmt.Errorf("clone source %q: %w", v.Parent, err)
	}
	return nil
}

// createImage writes v's image under a temporary name and renames it into
// place, refusing to replace a file.
func (s *Service) createImage(v state.Volume, backing string) error {
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(s.dir, tmpPrefix+fmt.Sprintf("%x", rnd)+imageExt)
	var opts *qcow2.CreateOptions
	if backing != "" {
		opts = &qcow2.CreateOptions{BackingFile: backing}
	}
	img, err := qcow2.Create(tmp, v.Size, opts)
	if err == nil {
		err = img.Close()
	}
	if err == nil {
		err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, filepath.Join(s.cfg.DataDir, v.File), unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EEXIST) {
			err = fmt.Errorf("volume %q: image file exists: %w", v.Name, state.ErrExists)
		}
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(s.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// GetVolume returns one volume.
func (s *Service) GetVolume(_ context.Context, name string) (api.Volume, error) {
	v, err := s.reg.GetVolume(name)
	if err != nil {
		return api.Volume{}, err
	}
	return s.volume(v), nil
}

// ListVolumes returns every volume, sorted by name.
func (s *Service) ListVolumes(context.Context) ([]api.Volume, error) {
	vols, err := s.reg.ListVolumes()
	if err != nil {
		return nil, err
	}
	out := make([]api.Volume, 0, len(vols))
	for _, v := range vols {
		out = append(out, s.volume(v))
	}
	return out, nil
}

// DeleteVolume removes a volume and its image; refused (in_use) while it is
// attached or has clones. Exports of its expired attachments are revoked.
func (s *Service) DeleteVolume(ctx context.Context, name string) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.release()
	v, err := s.reg.DeleteVolume(name, s.cfg.Now())
	if err != nil {
		return err
	}
	return s.removeDeleted(v)
}

// removeDeleted revokes the exports of a volume the registry deleted and
// removes its image. Call with the lock.
func (s *Service) removeDeleted(v state.Volume) error {
	name := v.Name
	for _, a := range v.Attachments {
		s.revoke(a.Export)
	}
	var errs []error
	if img := s.images[name]; img != nil {
		delete(s.images, name)
		errs = append(errs, img.Close())
	}
	path := filepath.Join(s.cfg.DataDir, v.File)
	errs = append(errs, os.Remove(path))
	if err := os.Remove(qcow2.WALPath(path)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("volume %q deleted, but removing its image: %w", name, err)
	}
	return nil
}

// ResizeVolume grows a volume; refused while it is attached or has clones.
func (s *Service) ResizeVolume(ctx context.Context, name string, size int64) (api.Volume, error) {
	if err := s.checkSize(size); err != nil {
		return api.Volume{}, err
	}
	if err := s.acquire(ctx); err != nil {
		return api.Volume{}, err
	}
	defer s.release()
	v, err := s.reg.GetVolume(name)
	if err != nil {
		return api.Volume{}, err
	}
	if err := s.checkResizable(v, size); err != nil {
		return api.Volume{}, err
	}
	img, err := s.image(v)
	if err != nil {
		return api.Volume{}, err
	}
	if err := img.Resize(size); err != nil {
		return api.Volume{}, fmt.Errorf("volume %q: %w", name, err)
	}
	if err := img.Flush(); err != nil {
		return api.Volume{}, fmt.Errorf("volume %q: %w", name, err)
	}
	if v, err = s.reg.UpdateVolumeSize(name, size); err != nil {
		return api.Volume{}, err
	}
	return s.volume(v), nil
}

func (s *Service) checkResizable(v state.Volume, size int64) error {
	if size < v.Size {
		return fmt.Errorf("volume %q: size %d is smaller than %d (volumes only grow): %w", v.Name, size, v.Size, state.ErrInvalid)
	}
	e := &state.InUseError{Volume: v.Name}
	now := s.cfg.Now()
	for _, a := range v.Attachments {
		if a.Live(now) {
			e.Nodes = append(e.Nodes, a.Node)
		}
	}
	children, err := s.reg.Children(v.Name)
	if err != nil {
		return err
	}
	e.Children = children
	if len(e.Nodes) > 0 || len(e.Children) > 0 {
		return e
	}
	return nil
}

// image returns v's open image, opening it on first use. Call with the lock.
//
// An image the storage node left open when it went down uncleanly (another
// boot) may have lost writes its clients were told of but had not flushed.
// Before the image is opened, which starts a log for this boot and so
// forgets that, the volume's read-write attachments are marked in the
// registry: their exports then fail every flush (see lostWritesBackend).
func (s *Service) image(v state.Volume) (*qcow2.Image, error) {
	if img := s.images[v.Name]; img != nil {
		return img, nil
	}
	path := filepath.Join(s.cfg.DataDir, v.File)
	lost, err := qcow2.CheckLostWrites(path, s.cfg.BootID)
	if err != nil {
		return nil, fmt.Errorf("volume %q: %w", v.Name, err)
	}
	if lost {
		marked, err := s.reg.MarkLostWrites(v.Name)
		if err != nil {
			return nil, fmt.Errorf("volume %q: recording lost writes: %w", v.Name, err)
		}
		for _, a := range marked {
			s.cfg.Log.WithFields(logrus.Fields{"volume": v.Name, "node": a.Node, "generation": a.Generation}).
				Error("the storage node went down uncleanly while this attachment could write; its unflushed writes may be lost, so its flushes fail until it detaches")
		}
	}
	img, err := qcow2.Open(path, &qcow2.OpenOptions{BootID: s.cfg.BootID})
	if err != nil {
		return nil, fmt.Errorf("volume %q: %w", v.Name, err)
	}
	s.images[v.Name] = img
	return img, nil
}

// newToken returns 32 random bytes in unpadded base64url.
func newToken() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
