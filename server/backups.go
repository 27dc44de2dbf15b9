package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/netvol/netvol/qcow2"
	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/server/backup"
	"github.com/netvol/netvol/state"
)

// Backups: see "Backups" in the package doc.

// backupPrefix starts the names of the hidden snapshots backups are taken
// from; the last one of a volume stays as its base.
const backupPrefix = hiddenPrefix + "backup."

func backupSnapshot(name string) bool { return strings.HasPrefix(name, backupPrefix) }

var errNoTarget = fmt.Errorf("this storage daemon has no backup target (start it with --backup-target): %w", state.ErrInvalid)

func (s *Service) engine() (*backup.Engine, error) {
	if s.cfg.Backups == nil {
		return nil, errNoTarget
	}
	return s.cfg.Backups, nil
}

func apiBackup(m *backup.Manifest) api.Backup {
	return api.Backup{ID: m.ID, Volume: m.Volume, Snapshot: m.Snapshot, CreatedAt: m.CreatedAt, Size: m.Size,
		StoredBytes: m.StoredBytes, DataBytes: m.DataBytes, Chunks: m.Chunks, Parent: m.Parent}
}

// CreateBackup backs a volume up to the backup target, also while it is
// attached and written: from a hidden snapshot, reading only the clusters
// changed since the previous backup. One backup of a volume runs at a
// time (in_use otherwise). The service lock is held only to take the
// snapshot and to move the base afterwards, never while data moves.
func (s *Service) CreateBackup(ctx context.Context, volume string) (api.Backup, error) {
	e, err := s.engine()
	if err != nil {
		return api.Backup{}, err
	}
	if !s.bstats.start(volume) {
		return api.Backup{}, fmt.Errorf("volume %q: a backup of it is running: %w", volume, state.ErrInUse)
	}
	defer s.bstats.end(volume)
	m, err := s.backup(ctx, e, volume)
	s.bstats.record(volume, m, err)
	if err != nil {
		return api.Backup{}, err
	}
	return apiBackup(m), nil
}

func (s *Service) backup(ctx context.Context, e *backup.Engine, volume string) (*backup.Manifest, error) {
	created := time.Now().UTC()
	id := backup.NewID(volume, created)
	snap := backupPrefix + id
	v, bs, sn, err := s.freezeForBackup(ctx, volume, snap, created)
	if err != nil {
		return nil, err
	}
	s.step("backup/frozen")
	m, err := s.readBackup(ctx, e, v, bs, sn, id)
	if err != nil {
		// The run's snapshot goes: its layer merges into the volume's image
		// (the clusters written since the last backup: cheap).
		if derr := s.dropQuietly(volume, snap); derr != nil {
			err = fmt.Errorf("%w (and its snapshot stays until the next start: %v)", err, derr)
		}
		return nil, err
	}
	s.step("backup/stored")
	if err := s.adoptBase(volume, bs, snap, m); err != nil {
		return m, fmt.Errorf("backup %s is complete, but moving the volume's backup base failed (the next backup reads more): %w", m.ID, err)
	}
	return m, nil
}

// freezeForBackup takes the run's hidden snapshot under the lock, first
// finishing a drop an earlier run left half done.
func (s *Service) freezeForBackup(ctx context.Context, volume, snap string, created time.Time) (state.Volume, state.BackupState, state.Snapshot, error) {
	var none state.Snapshot
	if err := s.acquire(ctx); err != nil {
		return state.Volume{}, state.BackupState{}, none, err
	}
	defer s.release()
	if err := s.finishDrop(volume); err != nil {
		return state.Volume{}, state.BackupState{}, none, err
	}
	v, err := s.reg.GetVolume(volume)
	if err != nil {
		return state.Volume{}, state.BackupState{}, none, err
	}
	bs, err := s.reg.BackupState(volume)
	if err != nil {
		return v, bs, none, err
	}
	if err := s.freeze(v, state.Snapshot{Name: snap, Volume: volume, Created: created, Hidden: true}, nil); err != nil {
		return v, bs, none, err
	}
	sn, err := s.reg.GetSnapshot(volume, snap)
	return v, bs, sn, err
}

// readBackup stores the snapshot's data on the target. The clusters
// changed since the last backup are those the layers above its base hold
// (the snapshot's own layer and any between); without a base in the
// snapshot's chain (the first backup, or after a rollback below it) every
// cluster some layer holds is read, and chunks the target has already are
// not stored again.
func (s *Service) readBackup(ctx context.Context, e *backup.Engine, v state.Volume, bs state.BackupState, sn state.Snapshot, id string) (*backup.Manifest, error) {
	img, err := qcow2.Open(s.path(sn.File), &qcow2.OpenOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("volume %q: opening its snapshot for the backup: %w", v.Name, err)
	}
	defer img.Close()
	held, err := img.Held(0)
	if err != nil {
		return nil, err
	}
	src := backup.Source{ID: id, Volume: v.Name, Snapshot: sn.Name, Created: sn.Created, Labels: v.Labels,
		Image: img, Size: img.Size(), ClusterSize: img.ClusterSize(), Held: held.Has}
	if bs.Base != "" {
		if base, err := s.reg.GetSnapshot(v.Name, bs.Base); err == nil {
			if depth := slices.Index(img.Chain(), s.path(base.File)); depth > 0 {
				changed, err := img.Held(depth)
				if err != nil {
					return nil, err
				}
				src.Parent, src.Changed = bs.Last, changed.Has
			}
		}
	}
	return e.Backup(ctx, src)
}

// dropQuietly deletes a backup's snapshot under the lock.
func (s *Service) dropQuietly(volume, snap string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.release()
	return s.deleteSnapshot(volume, snap)
}

// adoptBase makes the run's snapshot the volume's base and drops the
// previous base: one transaction records both the new base and which
// base is being dropped and how, so a crash anywhere is finished at start
// (finishDrop).
func (s *Service) adoptBase(volume string, prev state.BackupState, snap string, m *backup.Manifest) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.release()
	v, err := s.reg.GetVolume(volume)
	if err != nil {
		return err
	}
	bs := state.BackupState{Base: snap, Last: m.ID, LastAt: m.CreatedAt}
	if prev.Base != "" {
		if old, err := s.reg.GetSnapshot(volume, prev.Base); err == nil {
			bs.Dropping, bs.DropMode = prev.Base, s.dropMode(v, old, snap)
		}
	}
	if err := s.reg.SetBackupState(volume, bs); err != nil {
		return err
	}
	s.step("backup/adopted")
	return s.finishDrop(volume)
}

// dropMode says how the previous base old can go once snap is the base:
// DropCommit when snap's layer reads old's directly and nothing else reads
// old (the usual case), so that old's file can take in snap's layer (the
// clusters changed since: cheap); DropMerge otherwise (a snapshot taken
// between two backups, a rollback, a grown volume), which merges old's
// layer up as deleting a snapshot does.
func (s *Service) dropMode(v state.Volume, old state.Snapshot, snap string) string {
	sn, err := s.reg.GetSnapshot(v.Name, snap)
	if err != nil || sn.Size != old.Size {
		return state.DropMerge
	}
	readers, err := s.readersOf(v, old.File)
	if err != nil || len(readers) != 1 || readers[0] != sn.File {
		return state.DropMerge
	}
	return state.DropCommit
}

// readersOf lists the images of v (its image and its snapshots' layers)
// whose backing file is file.
func (s *Service) readersOf(v state.Volume, file string) ([]string, error) {
	files := []string{v.File}
	for _, sn := range v.Snapshots {
		files = append(files, sn.File)
	}
	var out []string
	for _, f := range files {
		b, err := qcow2.ReadBackingFile(s.path(f))
		if err != nil {
			return nil, err
		}
		if b == filepath.Base(file) {
			out = append(out, f)
		}
	}
	return out, nil
}

// finishDrop drops the previous base the volume's backup record names,
// if any. Every step can be done again: it runs at start after a crash.
// Call with the lock.
func (s *Service) finishDrop(volume string) error {
	bs, err := s.reg.BackupState(volume)
	if err != nil || bs.Dropping == "" {
		return err
	}
	if bs.DropMode == state.DropMerge {
		if _, err := s.reg.GetSnapshot(volume, bs.Dropping); err == nil {
			if err := s.deleteSnapshot(volume, bs.Dropping); err != nil {
				return err
			}
		}
		bs.Dropping, bs.DropMode = "", ""
		return s.reg.SetBackupState(volume, bs)
	}
	return s.commitDown(volume, bs)
}

// commitDown ends a DropCommit: the new base's layer (the clusters
// changed between the two backups) is copied into the old base's file,
// whose only reader it is, so the old file then reads as the new base;
// the images that read the new layer are pointed at the old file
// (SetBackingFile: they read the same); the registry makes the old file
// the new base's layer; then the new layer's file goes.
//
// Crash safety: while copying, only the new layer reads the old file, and
// it holds every cluster copied, so nothing reads differently; copying
// again copies the same data. Pointing readers at the old file changes
// nothing they read. The transaction is one step, and the file it stops
// naming is removed after it (or by the start-up sweep).
func (s *Service) commitDown(volume string, bs state.BackupState) error {
	v, err := s.reg.GetVolume(volume)
	if err != nil {
		return err
	}
	oldSn, err := s.reg.GetSnapshot(volume, bs.Dropping)
	if err != nil {
		return err
	}
	newSn, err := s.reg.GetSnapshot(volume, bs.Base)
	if err != nil {
		return err
	}
	if err := s.copyDown(newSn.File, oldSn.File); err != nil {
		return fmt.Errorf("volume %q: committing backup layer %s down: %w", volume, filepath.Base(newSn.File), err)
	}
	s.step("backup/copied")
	if err := s.repoint(v, newSn.File); err != nil {
		return fmt.Errorf("volume %q: %w", volume, err)
	}
	s.step("backup/repointed")
	gone, err := s.reg.FinishCommitDrop(volume)
	if err != nil {
		return err
	}
	s.step("backup/dropped")
	var errs []error
	for _, lv := range s.images {
		if lv.img != nil && slices.Contains(lv.img.Chain(), s.path(gone)) {
			errs = append(errs, s.reopen(lv))
		}
	}
	errs = append(errs, s.removeImage(gone))
	return errors.Join(errs...)
}

// copyDown writes every cluster the image upper holds into lower, its
// backing file.
func (s *Service) copyDown(upper, lower string) error {
	src, err := qcow2.Open(s.path(upper), &qcow2.OpenOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer src.Close()
	held, err := src.Held(1)
	if err != nil {
		return err
	}
	dst, err := qcow2.Open(s.path(lower), &qcow2.OpenOptions{BootID: s.cfg.BootID})
	if err != nil {
		return err
	}
	cs, size := src.ClusterSize(), min(src.Size(), dst.Size())
	buf := make([]byte, cs)
	for gc := int64(0); gc*cs < size; gc++ {
		if !held.Has(gc) {
			continue
		}
		off := gc * cs
		b := buf[:min(cs, size-off)]
		if _, err = src.ReadAt(b, off); err != nil {
			break
		}
		if isZero(b) {
			err = dst.WriteZeroes(off, int64(len(b)), false)
		} else {
			_, err = dst.WriteAt(b, off)
		}
		if err != nil {
			break
		}
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	return err
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// repoint makes every image of v that reads file directly read file's own
// backing file instead (DropBacking without a pull: the caller made them
// read the same).
func (s *Service) repoint(v state.Volume, file string) error {
	readers, err := s.readersOf(v, file)
	if err != nil {
		return err
	}
	for _, f := range readers {
		if f == file {
			continue
		}
		if f == v.File {
			lv, err := s.image(v)
			if err != nil {
				return err
			}
			if err := lv.img.DropBacking(); err != nil {
				return err
			}
			continue
		}
		img, err := qcow2.Open(s.path(f), &qcow2.OpenOptions{BootID: s.cfg.BootID})
		if err != nil {
			return err
		}
		err = img.DropBacking()
		if cerr := img.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// recoverBackups finishes, at start, what a crash interrupted: a base
// being dropped, and the snapshots of backups cut short (not the base),
// which are merged away. Call before serving.
func (s *Service) recoverBackups() error {
	vols, err := s.reg.ListVolumes()
	if err != nil {
		return err
	}
	for _, v := range vols {
		if err := s.finishDrop(v.Name); err != nil {
			return fmt.Errorf("volume %q: finishing the drop of a backup base: %w", v.Name, err)
		}
		bs, err := s.reg.BackupState(v.Name)
		if err != nil {
			return err
		}
		if v, err = s.reg.GetVolume(v.Name); err != nil {
			return err
		}
		for _, sn := range v.Snapshots {
			if !backupSnapshot(sn.Name) || sn.Name == bs.Base {
				continue
			}
			if err := s.deleteSnapshot(v.Name, sn.Name); err != nil {
				return fmt.Errorf("volume %q: removing the snapshot of a backup cut short: %w", v.Name, err)
			}
			s.cfg.Log.WithFields(logrus.Fields{"volume": v.Name, "snapshot": sn.Name}).Warn("removed the snapshot of a backup that did not finish")
		}
	}
	return nil
}

// ListBackups lists the complete backups on the target, of one volume or
// ("") of all, oldest first; also of volumes this daemon does not hold.
func (s *Service) ListBackups(ctx context.Context, volume string) ([]api.Backup, error) {
	e, err := s.engine()
	if err != nil {
		return nil, err
	}
	if volume != "" {
		if err := checkVolumeName(volume); err != nil {
			return nil, err
		}
	}
	ms, err := e.List(ctx, volume)
	if err != nil {
		return nil, err
	}
	out := make([]api.Backup, 0, len(ms))
	for _, m := range ms {
		out = append(out, apiBackup(m))
	}
	return out, nil
}

// GetBackup returns one backup.
func (s *Service) GetBackup(ctx context.Context, id string) (api.Backup, error) {
	e, err := s.engine()
	if err != nil {
		return api.Backup{}, err
	}
	m, err := e.Get(ctx, id)
	if err != nil {
		return api.Backup{}, err
	}
	return apiBackup(m), nil
}

// DeleteBackup removes a backup and then the chunks no other backup
// lists. No backup depends on another, so any may go.
func (s *Service) DeleteBackup(ctx context.Context, id string) error {
	e, err := s.engine()
	if err != nil {
		return err
	}
	res, err := e.Delete(ctx, id)
	if err != nil {
		return err
	}
	s.cfg.Log.WithFields(logrus.Fields{"backup": id, "chunks_removed": res.Chunks, "bytes_removed": res.Bytes}).Debug("unreferenced chunks collected")
	return nil
}

// VerifyBackup reads every chunk of a backup back and checks it.
func (s *Service) VerifyBackup(ctx context.Context, id string) (api.BackupVerify, error) {
	e, err := s.engine()
	if err != nil {
		return api.BackupVerify{}, err
	}
	r, err := e.Verify(ctx, id)
	if err != nil {
		return api.BackupVerify{}, err
	}
	return api.BackupVerify{ID: id, Chunks: r.Chunks, Bytes: r.Bytes}, nil
}

// restoreVolume makes a new volume of a backup: a new image (the backup's
// cluster size) under a temporary name, every chunk checked and written,
// flushed, then renamed into place and recorded under the lock. The data
// moves without the lock; a failure or a crash leaves only the temporary
// image (removed, or swept at start).
func (s *Service) restoreVolume(ctx context.Context, req api.CreateRequest) (api.Volume, error) {
	e, err := s.engine()
	if err != nil {
		return api.Volume{}, err
	}
	if req.From != "" {
		return api.Volume{}, fmt.Errorf("from_backup and from: give one: %w", state.ErrInvalid)
	}
	if _, err := s.reg.GetVolume(req.Name); err == nil {
		return api.Volume{}, fmt.Errorf("volume %q: %w", req.Name, state.ErrExists)
	}
	m, err := e.Get(ctx, req.FromBackup)
	if err != nil {
		return api.Volume{}, err
	}
	size := m.Size
	if int64(req.Size) > size {
		size = int64(req.Size)
	} else if req.Size != 0 && int64(req.Size) < size {
		return api.Volume{}, fmt.Errorf("size %d is smaller than backup %s (%d): %w", req.Size, m.ID, m.Size, state.ErrInvalid)
	}
	if err := s.checkSize(size); err != nil {
		return api.Volume{}, err
	}
	tmp, err := s.restoreImage(ctx, e, m, size)
	if err != nil {
		return api.Volume{}, err
	}
	labels := maps.Clone(m.Labels)
	if labels == nil && len(req.Labels) > 0 {
		labels = map[string]string{}
	}
	maps.Copy(labels, req.Labels)
	v := state.Volume{Name: req.Name, Size: size, File: s.newFile(req.Name), Created: s.cfg.Now().UTC(), Labels: labels}
	if err := s.acquire(ctx); err != nil {
		os.Remove(tmp)
		return api.Volume{}, err
	}
	defer s.release()
	if err := s.placeImage(v, tmp); err != nil {
		return api.Volume{}, err
	}
	s.cfg.Log.WithFields(logrus.Fields{"volume": v.Name, "backup": m.ID, "size": size}).Info("volume restored from a backup")
	return s.volume(v), nil
}

// restoreImage writes the backup into a new temporary image.
func (s *Service) restoreImage(ctx context.Context, e *backup.Engine, m *backup.Manifest, size int64) (string, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(s.dir, fmt.Sprintf("%s%x%s", tmpPrefix, rnd, imageExt))
	img, err := qcow2.Create(tmp, size, &qcow2.CreateOptions{ClusterSize: m.ClusterSize})
	if err != nil {
		return "", err
	}
	_, err = e.Restore(ctx, m.ID, img)
	if err == nil {
		err = img.Flush()
	}
	if cerr := img.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		s.removeImage(filepath.Join(volumesDir, filepath.Base(tmp)))
		return "", fmt.Errorf("restoring backup %s: %w", m.ID, err)
	}
	return tmp, nil
}

// placeImage renames a complete temporary image into place and records
// the volume. Call with the lock.
func (s *Service) placeImage(v state.Volume, tmp string) error {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, s.path(v.File), unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EEXIST) {
		err = fmt.Errorf("volume %q: image file %s exists: %w", v.Name, filepath.Base(v.File), state.ErrExists)
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := s.reg.CreateVolume(v); err != nil {
		s.removeImage(v.File)
		return err
	}
	return nil
}
