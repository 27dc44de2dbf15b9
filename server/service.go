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
	"github.com/netvol/netvol/server/backup"
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
	// Backups is the backup engine over the daemon's backup target; nil
	// when it has none (backup calls are refused).
	Backups *backup.Engine
	// Weight scales this server's share of new volumes in a pool (GET
	// /v1/capacity); 0 means 1. NoNewVolumes refuses creates (a server
	// being drained).
	Weight       float64
	NoNewVolumes bool
	// AtStep, for tests only, is called at each named step of the
	// snapshot operations (see steps.go), so that a test can kill the
	// daemon there.
	AtStep func(step string)
	// ResizeWait bounds how long a resize waits for the holders of the
	// volume to grow their device and file system (see grow.go); 0 means
	// DefaultResizeWait. The call's own deadline bounds it too.
	ResizeWait time.Duration
}

// Service is the storage daemon's state: registry, images and exports. It
// implements nbd.Exports. Control operations are serialised.
type Service struct {
	cfg     Config
	dir     string // <data>/volumes
	reg     *state.Registry
	lock    chan struct{}          // a mutex whose Lock honours a context
	images  map[string]*liveImage  // open volumes, by name
	exports map[string]*nbd.Export // by export name
	closed  bool
	// instance names this run of the daemon: a client that sees it change
	// knows its NBD connections were closed by a restart and dials again.
	instance string
	counts   counters
	bstats   *backupStats
	growth   growth // what holders reported about growing (grow.go)
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
	if cfg.ResizeWait <= 0 {
		cfg.ResizeWait = DefaultResizeWait
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
		images: map[string]*liveImage{}, exports: map[string]*nbd.Export{}, instance: newToken()[:16],
		bstats: newBackupStats(), growth: newGrowth()}
	if err := s.sweep(); err != nil {
		reg.Close()
		return nil, err
	}
	if err := s.recoverLayers(); err != nil {
		reg.Close()
		return nil, err
	}
	if err := s.recoverBackups(); err != nil {
		s.closeImages()
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
		for _, sn := range v.Snapshots {
			known[filepath.Base(sn.File)] = true
		}
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
	errs := []error{s.closeImages()}
	if err := s.reg.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// closeImages closes every open image.
func (s *Service) closeImages() error {
	var errs []error
	for name, lv := range s.images {
		if lv.img == nil {
			continue
		}
		if err := lv.img.Close(); err != nil {
			errs = append(errs, fmt.Errorf("volume %q: %w", name, err))
		}
		delete(s.images, name)
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
	clones, _ := s.reg.Clones(v.Name) // only names which snapshot has clones
	out := api.Volume{Name: v.Name, Size: v.Size, CreatedAt: v.Created, From: v.Parent, FromSnapshot: v.FromSnapshot,
		Labels: v.Labels, Attachments: []api.Attachment{}, Snapshots: s.snapshots(v, clones)}
	if out.FromSnapshot != "" && hiddenSnapshot(out.FromSnapshot) {
		out.FromSnapshot = "" // a clone of the volume as it was
	}
	out.Allocated = s.allocated(v.File)
	now := s.cfg.Now()
	for _, a := range v.Attachments {
		g := s.growth.get(a.Export)
		out.Attachments = append(out.Attachments, api.Attachment{Node: a.Node, Mode: string(a.Mode),
			Generation: a.Generation, Expires: a.Expires, ExpiresInMS: floorMS(a.Expires.Sub(now)), LostWrites: a.LostWrites,
			Grown: g.Size, GrowError: g.Error})
	}
	return out
}

// allocated is the bytes an image file occupies on disk (0 if unknown).
func (s *Service) allocated(file string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(s.cfg.DataDir, file), &st); err != nil {
		return 0
	}
	return st.Blocks * 512
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

// CreateVolume makes a volume: a new image, or with req.From a clone: an
// overlay of a snapshot of that volume (req.FromSnapshot), or of the
// volume as it is now, which takes a hidden snapshot of it (see
// snapshot.go). Size may be left out for a clone (the source's).
func (s *Service) CreateVolume(ctx context.Context, req api.CreateRequest) (api.Volume, error) {
	if err := checkVolumeName(req.Name); err != nil {
		return api.Volume{}, err
	}
	if req.FromBackup != "" {
		return s.restoreVolume(ctx, req)
	}
	if req.FromSnapshot != "" && req.From == "" {
		return api.Volume{}, fmt.Errorf("from_snapshot %q needs from, the volume it is a snapshot of: %w", req.FromSnapshot, state.ErrInvalid)
	}
	if s.cfg.NoNewVolumes {
		return api.Volume{}, fmt.Errorf("volume %q: this server takes no new volumes (--no-new-volumes, being drained): %w", req.Name, state.ErrInvalid)
	}
	if err := s.acquire(ctx); err != nil {
		return api.Volume{}, err
	}
	defer s.release()
	v := state.Volume{Name: req.Name, Size: int64(req.Size), File: s.newFile(req.Name),
		Parent: req.From, FromSnapshot: req.FromSnapshot, Created: s.cfg.Now().UTC(), Labels: req.Labels}
	if req.From == "" {
		if err := s.checkSize(v.Size); err != nil {
			return api.Volume{}, err
		}
		if err := s.createImage(v.Name, v.File, v.Size, ""); err != nil {
			return api.Volume{}, err
		}
		if err := s.reg.CreateVolume(v); err != nil {
			s.removeImage(v.File)
			return api.Volume{}, err
		}
		return s.volume(v), nil
	}
	if err := s.createClone(v); err != nil {
		return api.Volume{}, err
	}
	v, err := s.reg.GetVolume(v.Name)
	if err != nil {
		return api.Volume{}, err
	}
	return s.volume(v), nil
}

// cloneSize checks the clone's size against its source's; 0 means the
// source's.
func (s *Service) cloneSize(size int64, src state.Volume) (int64, error) {
	if size == 0 {
		size = src.Size
	}
	if size < src.Size {
		return 0, fmt.Errorf("size %d is smaller than the source %q (%d): %w", size, src.Name, src.Size, state.ErrInvalid)
	}
	return size, s.checkSize(size)
}

// newFile names a new image of volume: <name>.qcow2 for its first, a
// random suffix for the images snapshots and rollbacks give it later.
func (s *Service) newFile(volume string) string {
	return filepath.Join(volumesDir, volume+imageExt)
}

// removeImage deletes an image file and its intent log; best effort, for
// files no registry entry names (the start-up sweep catches what fails).
func (s *Service) removeImage(file string) error {
	path := filepath.Join(s.cfg.DataDir, file)
	err := os.Remove(path)
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	if werr := os.Remove(qcow2.WALPath(path)); werr != nil && !errors.Is(werr, os.ErrNotExist) && err == nil {
		err = werr
	}
	return err
}

// createImage writes an image of size bytes (over backing, a file in the
// same directory, if not "") under a temporary name and renames it to
// file, refusing to replace a file.
func (s *Service) createImage(volume, file string, size int64, backing string) error {
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(s.dir, tmpPrefix+fmt.Sprintf("%x", rnd)+imageExt)
	var opts *qcow2.CreateOptions
	if backing != "" {
		opts = &qcow2.CreateOptions{BackingFile: backing}
	}
	img, err := qcow2.Create(tmp, size, opts)
	if err == nil {
		err = img.Close()
	}
	if err == nil {
		err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, filepath.Join(s.cfg.DataDir, file), unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EEXIST) {
			err = fmt.Errorf("volume %q: image file %s exists: %w", volume, filepath.Base(file), state.ErrExists)
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

// DeleteVolume removes a volume with its snapshots and their files;
// refused (in_use) while it is attached or has clones. Exports of its
// expired attachments are revoked. A clone made from a hidden snapshot
// (of its source as it was) that was the snapshot's last takes the
// snapshot with it: its layer is merged away (see snapshot.go).
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
	if lv := s.images[name]; lv != nil {
		delete(s.images, name)
		if lv.img != nil {
			errs = append(errs, lv.img.Close())
		}
	}
	errs = append(errs, s.removeImage(v.File))
	for _, sn := range v.Snapshots {
		errs = append(errs, s.removeImage(sn.File))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("volume %q deleted, but removing its files: %w", name, err)
	}
	if v.Parent != "" && hiddenSnapshot(v.FromSnapshot) {
		if err := s.dropHidden(v.Parent, v.FromSnapshot); err != nil {
			s.cfg.Log.WithError(err).WithFields(logrus.Fields{"volume": v.Parent, "snapshot": v.FromSnapshot}).
				Warn("could not merge away the layer a deleted clone was made from; the next start tries again")
		}
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
func (s *Service) image(v state.Volume) (*liveImage, error) {
	if lv := s.images[v.Name]; lv != nil && lv.img != nil {
		return lv, nil
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
	lv := s.images[v.Name]
	if lv == nil {
		lv = &liveImage{volume: v.Name}
		s.images[v.Name] = lv
	}
	lv.pause()
	lv.resume(img)
	return lv, nil
}

// newToken returns 32 random bytes in unpadded base64url.
func newToken() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
