package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/internal/names"
	"github.com/netvol/netvol/qcow2"
	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/state"
)

// Snapshots, rollback and clones: see "Snapshots" in the package doc.

// hiddenPrefix starts the names of the snapshots the daemon takes for a
// clone of a volume as it is; no snapshot name a user gives starts so
// (names.CheckVolume).
const hiddenPrefix = "@"

// maxChain bounds the images one volume reads through (its own, its
// snapshots' layers, its source's): qcow2 opens at most 64.
const maxChain = 48

func hiddenSnapshot(name string) bool { return strings.HasPrefix(name, hiddenPrefix) }

// step marks a point of a snapshot operation that a crash may interrupt;
// Config.AtStep lets a test kill the daemon there.
func (s *Service) step(name string) {
	if s.cfg.AtStep != nil {
		s.cfg.AtStep(name)
	}
}

// nextFile names a new image for volume with a random suffix: snapshots
// and rollbacks give a volume new images while the old ones live on.
func nextFile(volume string) string {
	var rnd [6]byte
	rand.Read(rnd[:])
	return filepath.Join(volumesDir, fmt.Sprintf("%s.%x%s", volume, rnd, imageExt))
}

// snapshots is v's visible snapshots as the API shows them.
func (s *Service) snapshots(v state.Volume, clones []state.Clone) []api.Snapshot {
	out := []api.Snapshot{}
	for _, sn := range v.Snapshots {
		if sn.Hidden {
			continue
		}
		a := api.Snapshot{Name: sn.Name, Volume: v.Name, CreatedAt: sn.Created, Size: sn.Size, Allocated: s.allocated(sn.File)}
		for _, c := range clones {
			if c.Snapshot == sn.Name {
				a.Clones = append(a.Clones, c.Name)
			}
		}
		out = append(out, a)
	}
	return out
}

// legacyClones names the clones that read volume's own image (made before
// snapshots existed): they keep it immutable.
func (s *Service) legacyClones(volume string) ([]string, error) {
	clones, err := s.reg.Clones(volume)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, c := range clones {
		if c.Snapshot == "" {
			out = append(out, c.Name)
		}
	}
	return out, nil
}

func (s *Service) path(file string) string { return filepath.Join(s.cfg.DataDir, file) }

// chainLength counts the images file reads through, itself included.
func (s *Service) chainLength(file string) (int, error) {
	n := 0
	for path := s.path(file); path != ""; n++ {
		b, err := qcow2.ReadBackingFile(path)
		if err != nil || b == "" {
			return n + 1, err
		}
		path = filepath.Join(filepath.Dir(path), b)
	}
	return n, nil
}

func (s *Service) checkChain(v state.Volume) error {
	n, err := s.chainLength(v.File)
	if err != nil {
		return fmt.Errorf("volume %q: %w", v.Name, err)
	}
	if n >= maxChain {
		return fmt.Errorf("volume %q reads through %d images (its snapshots and its source's); at most %d: delete snapshots first: %w", v.Name, n, maxChain, state.ErrInvalid)
	}
	return nil
}

// CreateSnapshot takes a snapshot of a volume, also while it is attached
// and written: see freeze.
func (s *Service) CreateSnapshot(ctx context.Context, volume, name string) (api.Snapshot, error) {
	if err := names.CheckVolume(name); err != nil {
		return api.Snapshot{}, fmt.Errorf("snapshot name: %w", err)
	}
	if err := s.acquire(ctx); err != nil {
		return api.Snapshot{}, err
	}
	defer s.release()
	v, err := s.reg.GetVolume(volume)
	if err != nil {
		return api.Snapshot{}, err
	}
	if _, err := s.reg.GetSnapshot(volume, name); err == nil {
		return api.Snapshot{}, fmt.Errorf("volume %q: snapshot %q: %w", volume, name, state.ErrExists)
	}
	sn := state.Snapshot{Name: name, Volume: volume, Created: s.cfg.Now().UTC()}
	if err := s.freeze(v, sn, nil); err != nil {
		return api.Snapshot{}, err
	}
	got, err := s.reg.GetSnapshot(volume, name)
	if err != nil {
		return api.Snapshot{}, err
	}
	return api.Snapshot{Name: name, Volume: volume, CreatedAt: got.Created, Size: got.Size, Allocated: s.allocated(got.File)}, nil
}

// ListSnapshots returns a volume's snapshots, oldest first, with the
// clones made from each.
func (s *Service) ListSnapshots(_ context.Context, volume string) ([]api.Snapshot, error) {
	v, err := s.reg.GetVolume(volume)
	if err != nil {
		return nil, err
	}
	clones, err := s.reg.Clones(volume)
	if err != nil {
		return nil, err
	}
	return s.snapshots(v, clones), nil
}

// freeze makes v's current image the layer of snapshot sn and gives v a
// new, empty image over it, under the volume's open exports (liveImage):
//
//  1. requests are paused (the ones in flight finish);
//  2. the image is closed: flushed, its intent log emptied and removed,
//     its dirty bit cleared, so the layer is complete and clean on disk;
//  3. the new image (and with clone, the clone's) is created under a
//     temporary name over the layer and renamed into place;
//  4. the new image is opened;
//  5. one registry transaction records the snapshot (the layer), the
//     volume's new image and the clone;
//  6. requests go on, against the new image.
//
// A crash before 5 leaves the registry naming the old image, complete and
// clean (the start-up sweep removes the new files); after it, the new.
// The writer was never on the layer after it froze: it writes the new
// image. A failure before 5 reopens the old image.
func (s *Service) freeze(v state.Volume, sn state.Snapshot, clone *state.Volume) error {
	if err := s.checkChain(v); err != nil {
		return err
	}
	lv, err := s.image(v)
	if err != nil {
		return err
	}
	lv.pause()
	s.step("snapshot/paused")
	old := lv.img
	if err := old.Close(); err != nil {
		return s.resumeOld(lv, v, fmt.Errorf("volume %q: closing its image for the snapshot: %w", v.Name, err))
	}
	s.step("snapshot/closed")
	newFile := nextFile(v.Name)
	backing := filepath.Base(v.File)
	created := []string{}
	undo := func(err error) error {
		for _, f := range created {
			s.removeImage(f)
		}
		return s.resumeOld(lv, v, err)
	}
	if err := s.createImage(v.Name, newFile, v.Size, backing); err != nil {
		return undo(err)
	}
	created = append(created, newFile)
	if clone != nil {
		if err := s.createImage(clone.Name, clone.File, clone.Size, backing); err != nil {
			return undo(err)
		}
		created = append(created, clone.File)
	}
	s.step("snapshot/created")
	img, err := qcow2.Open(s.path(newFile), &qcow2.OpenOptions{BootID: s.cfg.BootID})
	if err != nil {
		return undo(fmt.Errorf("volume %q: opening its new image: %w", v.Name, err))
	}
	s.step("snapshot/opened")
	if _, err := s.reg.CreateSnapshot(sn, newFile, clone); err != nil {
		img.Close()
		return undo(err)
	}
	s.step("snapshot/committed")
	lv.resume(img)
	s.cfg.Log.WithFields(logrus.Fields{"volume": v.Name, "snapshot": sn.Name, "layer": filepath.Base(v.File),
		"image": filepath.Base(newFile)}).Debug("volume image frozen as a snapshot layer")
	return nil
}

// resumeOld reopens the volume's old image after a failed switch and lets
// requests go on against it; err is returned as is.
func (s *Service) resumeOld(lv *liveImage, v state.Volume, err error) error {
	img, oerr := qcow2.Open(s.path(v.File), &qcow2.OpenOptions{BootID: s.cfg.BootID})
	if oerr != nil {
		lv.resume(nil)
		delete(s.images, v.Name)
		return fmt.Errorf("%w; reopening the image: %v", err, oerr)
	}
	lv.resume(img)
	return err
}

// createClone makes v, a clone of v.Parent: of its snapshot
// v.FromSnapshot, or (none given) of the volume as it is, through a
// hidden snapshot taken in the clone's own transaction.
func (s *Service) createClone(v state.Volume) error {
	src, err := s.reg.GetVolume(v.Parent)
	if err != nil {
		return fmt.Errorf("clone source: %w", err)
	}
	if v.Size, err = s.cloneSize(v.Size, src); err != nil {
		return err
	}
	if _, err := s.reg.GetVolume(v.Name); err == nil {
		return fmt.Errorf("volume %q: %w", v.Name, state.ErrExists)
	}
	if v.FromSnapshot == "" {
		sn := state.Snapshot{Name: fmt.Sprintf("%s%s.%x", hiddenPrefix, v.Name, v.Created.UnixNano()), Volume: src.Name,
			Created: v.Created, Hidden: true}
		return s.freeze(src, sn, &v)
	}
	if hiddenSnapshot(v.FromSnapshot) {
		return fmt.Errorf("volume %q: snapshot %q: %w", src.Name, v.FromSnapshot, state.ErrNotFound)
	}
	sn, err := s.reg.GetSnapshot(src.Name, v.FromSnapshot)
	if err != nil {
		return fmt.Errorf("clone source: %w", err)
	}
	if err := s.checkChain(state.Volume{Name: src.Name, File: sn.File}); err != nil {
		return err
	}
	if err := s.createImage(v.Name, v.File, v.Size, filepath.Base(sn.File)); err != nil {
		return err
	}
	s.step("clone/created")
	if err := s.reg.CloneVolume(v); err != nil {
		s.removeImage(v.File)
		return err
	}
	s.step("clone/committed")
	return nil
}

// Rollback resets a detached volume to one of its snapshots: a new empty
// image over the snapshot's layer replaces the volume's image, which is
// deleted. Refused while an attachment is live; lapsed attachments are
// removed and their connections closed.
func (s *Service) Rollback(ctx context.Context, volume, name string) (api.Volume, error) {
	if err := s.acquire(ctx); err != nil {
		return api.Volume{}, err
	}
	defer s.release()
	v, err := s.reg.GetVolume(volume)
	if err != nil {
		return api.Volume{}, err
	}
	if hiddenSnapshot(name) {
		return api.Volume{}, fmt.Errorf("volume %q: snapshot %q: %w", volume, name, state.ErrNotFound)
	}
	sn, err := s.reg.GetSnapshot(volume, name)
	if err != nil {
		return api.Volume{}, err
	}
	newFile := nextFile(volume)
	if err := s.createImage(volume, newFile, v.Size, filepath.Base(sn.File)); err != nil {
		return api.Volume{}, err
	}
	s.step("rollback/created")
	old, gone, err := s.reg.Rollback(volume, name, newFile, s.cfg.Now())
	if err != nil {
		s.removeImage(newFile)
		return api.Volume{}, err
	}
	s.step("rollback/committed")
	for _, a := range gone {
		s.revoke(a.Export)
	}
	if lv := s.images[volume]; lv != nil {
		lv.pause()
		if lv.img != nil {
			lv.img.Close()
		}
		lv.resume(nil)
		delete(s.images, volume) // opened again, as the new image, on the next attach
	}
	if err := s.removeImage(old.File); err != nil {
		s.cfg.Log.WithError(err).WithField("volume", volume).Warn("rolled back, but the old image could not be removed; the next start does")
	}
	v, err = s.reg.GetVolume(volume)
	if err != nil {
		return api.Volume{}, err
	}
	return s.volume(v), nil
}

// DeleteSnapshot removes a snapshot; refused (in_use, naming them) while
// clones were made from it. Its layer is merged away (mergeAway).
func (s *Service) DeleteSnapshot(ctx context.Context, volume, name string) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.release()
	if hiddenSnapshot(name) {
		return fmt.Errorf("volume %q: snapshot %q: %w", volume, name, state.ErrNotFound)
	}
	return s.deleteSnapshot(volume, name)
}

// dropHidden deletes a hidden snapshot once no clone is made from it.
func (s *Service) dropHidden(volume, name string) error {
	clones, err := s.reg.Clones(volume)
	if err != nil {
		return err
	}
	for _, c := range clones {
		if c.Snapshot == name {
			return nil
		}
	}
	return s.deleteSnapshot(volume, name)
}

// deleteSnapshot merges the snapshot's layer away and removes it. Call
// with the lock.
//
// The layer's children (the images that read through it: the volume's
// image, or the layer of the next snapshot) each pull in the clusters the
// layer holds and they do not, then name the layer's own backing file
// (qcow2.Image.StreamBacking): what every image reads stays the same at
// every step, so a crash anywhere leaves every volume and snapshot as it
// was. Then the registry forgets the snapshot, and only then is its file
// deleted and the images that still had it open reopened (which frees its
// space and shortens their chains).
func (s *Service) deleteSnapshot(volume, name string) error {
	v, err := s.reg.GetVolume(volume)
	if err != nil {
		return err
	}
	sn, err := s.reg.GetSnapshot(volume, name)
	if err != nil {
		return err
	}
	clones, err := s.reg.Clones(volume)
	if err != nil {
		return err
	}
	e := &state.InUseError{Volume: volume, Snapshot: name}
	for _, c := range clones {
		if c.Snapshot == name {
			e.Children = append(e.Children, c.Name)
		}
	}
	if len(e.Children) > 0 {
		return e
	}
	if err := s.mergeAway(v, sn); err != nil {
		return fmt.Errorf("volume %q: snapshot %q: merging its layer: %w", volume, name, err)
	}
	s.step("delete/merged")
	if _, err := s.reg.DeleteSnapshot(volume, name); err != nil {
		return err
	}
	s.step("delete/committed")
	path := s.path(sn.File)
	var errs []error
	for _, lv := range s.images {
		if lv.img != nil && slices.Contains(lv.img.Chain(), path) {
			errs = append(errs, s.reopen(lv))
		}
	}
	errs = append(errs, s.removeImage(sn.File))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("volume %q: snapshot %q deleted, but: %w", volume, name, err)
	}
	return nil
}

// mergeAway streams the layer sn into every image of v that reads it
// directly.
func (s *Service) mergeAway(v state.Volume, sn state.Snapshot) error {
	layer := filepath.Base(sn.File)
	files := []string{v.File}
	for _, o := range v.Snapshots {
		if o.Name != sn.Name {
			files = append(files, o.File)
		}
	}
	for _, f := range files {
		b, err := qcow2.ReadBackingFile(s.path(f))
		if err != nil {
			return err
		}
		if b != layer {
			continue
		}
		if f == v.File {
			lv, err := s.image(v)
			if err != nil {
				return err
			}
			if err := s.stream(lv.img); err != nil {
				return err
			}
			continue
		}
		if err := s.streamLayer(f); err != nil {
			return err
		}
	}
	return nil
}

// streamLayer streams the backing layer of another layer: an image no one
// writes, opened for writing just for this. Readers that have it open keep
// reading what they read (every change is to clusters they read from the
// backing layer, with the same data).
func (s *Service) streamLayer(file string) error {
	img, err := qcow2.Open(s.path(file), &qcow2.OpenOptions{BootID: s.cfg.BootID})
	if err != nil {
		return err
	}
	s.step("delete/layer-opened")
	err = s.stream(img)
	if cerr := img.Close(); err == nil {
		err = cerr
	}
	return err
}

// stream is qcow2.Image.StreamBacking with a step between its halves.
func (s *Service) stream(img *qcow2.Image) error {
	if err := img.PullBacking(); err != nil {
		return err
	}
	s.step("delete/pulled")
	return img.DropBacking()
}

// reopen switches an open volume to a fresh handle of its image (after a
// layer left its chain). Call with the lock.
func (s *Service) reopen(lv *liveImage) error {
	lv.pause()
	path := ""
	if lv.img != nil {
		path = lv.img.Chain()[0]
		if err := lv.img.Close(); err != nil {
			lv.resume(nil)
			delete(s.images, lv.volume)
			return fmt.Errorf("volume %q: %w", lv.volume, err)
		}
	}
	img, err := qcow2.Open(path, &qcow2.OpenOptions{BootID: s.cfg.BootID})
	if err != nil {
		lv.resume(nil)
		delete(s.images, lv.volume)
		return fmt.Errorf("volume %q: reopening: %w", lv.volume, err)
	}
	lv.resume(img)
	return nil
}

// recoverLayers brings back to a clean state the snapshot layers a crash
// left open for writing (a merge of the layer below into them): their
// intent log is replayed and their references recounted. Their content
// never changed (see deleteSnapshot). Hidden snapshots no clone is made
// from any more (a crash after the clone's deletion) are merged away.
func (s *Service) recoverLayers() error {
	vols, err := s.reg.ListVolumes()
	if err != nil {
		return err
	}
	for _, v := range vols {
		for _, sn := range v.Snapshots {
			if _, err := os.Stat(qcow2.WALPath(s.path(sn.File))); err != nil {
				continue
			}
			img, err := qcow2.Open(s.path(sn.File), &qcow2.OpenOptions{BootID: s.cfg.BootID})
			if err == nil {
				err = img.Close()
			}
			if err != nil {
				return fmt.Errorf("volume %q: snapshot %q: recovering its layer: %w", v.Name, sn.Name, err)
			}
			s.cfg.Log.WithFields(logrus.Fields{"volume": v.Name, "snapshot": sn.Name}).Info("recovered a snapshot layer a crash left open")
		}
	}
	for _, v := range vols {
		for _, sn := range v.Snapshots {
			if !sn.Hidden || backupSnapshot(sn.Name) {
				continue // backups keep theirs (recoverBackups)
			}
			if err := s.dropHidden(v.Name, sn.Name); err != nil {
				s.cfg.Log.WithError(err).WithFields(logrus.Fields{"volume": v.Name, "snapshot": sn.Name}).
					Warn("could not merge away the layer of a deleted clone")
			}
		}
	}
	return nil
}
