package state

import (
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Snapshots. A snapshot is a frozen layer of its volume: the image file the
// volume wrote until the snapshot was taken, which from then on is the
// read-only backing file of the volume's new image (and of clones made
// from it). The registry records the layer under the volume
// (volumes/<volume>/snapshots/<name>); the storage daemon creates the new
// image before the transaction that records both, and deletes files after
// the transactions that stop naming them.
//
// Clones name the snapshot they were made from in their parent's children
// bucket (the value); a clone with an empty value is one made before
// snapshots existed, which reads its parent's own image: such a parent is
// immutable until a snapshot freezes that image as a layer (which points
// the clone at it).

// Snapshot is one frozen layer of a volume.
type Snapshot struct {
	Name    string
	Volume  string
	File    string    // the layer's image, relative to the data directory
	Created time.Time // as given by the caller
	Size    int64     // the volume's size when it was taken
	// Hidden: made by the daemon for a clone of the volume as it was (not
	// by a user); listed by no answer and removed with its last clone.
	Hidden bool
}

type snapshotRecord struct {
	V       int       `json:"v"`
	File    string    `json:"file"`
	Created time.Time `json:"created"`
	Size    int64     `json:"size"`
	Hidden  bool      `json:"hidden,omitempty"`
}

func (rec snapshotRecord) snapshot(volume, name string) Snapshot {
	return Snapshot{Name: name, Volume: volume, File: rec.File, Created: rec.Created, Size: rec.Size, Hidden: rec.Hidden}
}

// Clone is a volume made from a snapshot of another.
type Clone struct {
	Name     string
	Snapshot string // "" for a clone of the parent's own image (made before snapshots)
}

func snapshotErr(volume, name string, err error) error {
	return fmt.Errorf("volume %q: snapshot %q: %w", volume, name, err)
}

// CreateSnapshot records snap as a snapshot of volume snap.Volume whose
// layer is the volume's current image, and makes newFile the volume's
// image, in one transaction. snap.File is ignored. With clone non-nil the
// same transaction records the clone, made from the new snapshot (a clone
// of the volume as it is). Clones recorded before snapshots existed, which
// read the volume's current image, are pointed at the new snapshot.
// ErrExists when the snapshot (or the clone) name is taken, ErrNotFound
// when the volume does not exist. It returns the volume as it is now.
func (r *Registry) CreateSnapshot(snap Snapshot, newFile string, clone *Volume) (Volume, error) {
	vk, sk, err := snapshotKeys(snap.Volume, snap.Name)
	if err != nil {
		return Volume{}, err
	}
	if newFile == "" {
		return Volume{}, snapshotErr(snap.Volume, snap.Name, fmt.Errorf("no new image: %w", ErrInvalid))
	}
	var v Volume
	err = r.s.update(func(root *bolt.Bucket) error {
		b, err := volumeBucket(root, vk)
		if err != nil {
			return err
		}
		if v, err = readVolume(b, snap.Volume); err != nil {
			return err
		}
		snaps := b.Bucket(keySnapshots)
		if snaps.Get(sk) != nil {
			return snapshotErr(snap.Volume, snap.Name, ErrExists)
		}
		rec := snapshotRecord{V: recordVersion, File: v.File, Created: snap.Created, Size: v.Size, Hidden: snap.Hidden}
		if err := putJSON(snaps, sk, rec); err != nil {
			return err
		}
		if err := adoptLegacyClones(b, sk); err != nil {
			return volumeErr(snap.Volume, err)
		}
		v.File = newFile
		if err := putJSON(b, keyRecord, newVolumeRecord(v)); err != nil {
			return err
		}
		if clone == nil {
			return nil
		}
		c := *clone
		c.Parent, c.FromSnapshot = snap.Volume, snap.Name
		ck, err := checkNewVolume(c)
		if err != nil {
			return err
		}
		return createVolume(root.Bucket(keyVolumes), ck, c)
	})
	return v, err
}

// adoptLegacyClones points the clones that read the volume's own image at
// the snapshot sk, whose layer that image now is.
func adoptLegacyClones(b *bolt.Bucket, sk []byte) error {
	children := b.Bucket(keyChildren)
	for _, c := range keys(children) {
		if len(children.Get([]byte(c))) == 0 {
			if err := children.Put([]byte(c), sk); err != nil {
				return err
			}
		}
	}
	return nil
}

func snapshotKeys(volume, name string) (vk, sk []byte, err error) {
	if vk, err = key("volume", volume); err != nil {
		return nil, nil, err
	}
	if sk, err = key("snapshot", name); err != nil {
		return nil, nil, volumeErr(volume, err)
	}
	return vk, sk, nil
}

// GetSnapshot returns one snapshot; ErrNotFound when the volume or the
// snapshot does not exist.
func (r *Registry) GetSnapshot(volume, name string) (Snapshot, error) {
	vk, sk, err := snapshotKeys(volume, name)
	if err != nil {
		return Snapshot{}, err
	}
	var s Snapshot
	err = r.s.view(func(root *bolt.Bucket) error {
		b, err := volumeBucket(root, vk)
		if err != nil {
			return err
		}
		s, err = readSnapshot(b, volume, sk)
		return err
	})
	return s, err
}

func readSnapshot(b *bolt.Bucket, volume string, sk []byte) (Snapshot, error) {
	var rec snapshotRecord
	ok, err := getJSON(b.Bucket(keySnapshots), sk, &rec)
	if err != nil {
		return Snapshot{}, snapshotErr(volume, string(sk), err)
	}
	if !ok {
		return Snapshot{}, snapshotErr(volume, string(sk), ErrNotFound)
	}
	return rec.snapshot(volume, string(sk)), nil
}

// readSnapshots returns the volume's snapshots, oldest first.
func readSnapshots(b *bolt.Bucket, volume string) ([]Snapshot, error) {
	var out []Snapshot
	err := b.Bucket(keySnapshots).ForEach(func(k, v []byte) error {
		var rec snapshotRecord
		if err := decodeJSON(k, v, &rec); err != nil {
			return snapshotErr(volume, string(k), err)
		}
		out = append(out, rec.snapshot(volume, string(k)))
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, err
}

// Clones returns the volumes made from name and the snapshot each was
// made from, sorted by name.
func (r *Registry) Clones(name string) ([]Clone, error) {
	k, err := key("volume", name)
	if err != nil {
		return nil, err
	}
	var out []Clone
	err = r.s.view(func(root *bolt.Bucket) error {
		b, err := volumeBucket(root, k)
		if err != nil {
			return err
		}
		out = readClones(b)
		return nil
	})
	return out, err
}

func readClones(b *bolt.Bucket) []Clone {
	var out []Clone
	children := b.Bucket(keyChildren)
	for _, c := range keys(children) {
		out = append(out, Clone{Name: c, Snapshot: string(children.Get([]byte(c)))})
	}
	return out
}

// clonesOf returns the names of the clones made from snapshot sk.
func clonesOf(b *bolt.Bucket, sk []byte) []string {
	var out []string
	for _, c := range readClones(b) {
		if c.Snapshot == string(sk) {
			out = append(out, c.Name)
		}
	}
	return out
}

// DeleteSnapshot removes a snapshot's record and returns it, so that the
// caller deletes its layer after the commit (once no image reads through
// it). Refused with an *InUseError naming the clones made from it.
func (r *Registry) DeleteSnapshot(volume, name string) (Snapshot, error) {
	vk, sk, err := snapshotKeys(volume, name)
	if err != nil {
		return Snapshot{}, err
	}
	var s Snapshot
	err = r.s.update(func(root *bolt.Bucket) error {
		b, err := volumeBucket(root, vk)
		if err != nil {
			return err
		}
		if s, err = readSnapshot(b, volume, sk); err != nil {
			return err
		}
		if clones := clonesOf(b, sk); len(clones) > 0 {
			return &InUseError{Volume: volume, Snapshot: name, Children: clones}
		}
		return b.Bucket(keySnapshots).Delete(sk)
	})
	return s, err
}

// Rollback makes newFile, an empty image over the snapshot's layer, the
// volume's image, and returns the volume as it was (its File is the image
// to delete after the commit) and the attachments it removed. Refused with
// an *InUseError while an attachment is live at now, or while clones read
// the volume's own image (made before snapshots). Lapsed attachments are
// removed with their export names, so that the caller closes their
// connections: nothing written before the rollback lands after it.
func (r *Registry) Rollback(volume, name, newFile string, now time.Time) (Volume, []Attachment, error) {
	vk, sk, err := snapshotKeys(volume, name)
	if err != nil {
		return Volume{}, nil, err
	}
	var old Volume
	var gone []Attachment
	err = r.s.update(func(root *bolt.Bucket) error {
		b, err := volumeBucket(root, vk)
		if err != nil {
			return err
		}
		if old, err = readVolume(b, volume); err != nil {
			return err
		}
		if _, err := readSnapshot(b, volume, sk); err != nil {
			return err
		}
		e := &InUseError{Volume: volume, Children: immutable(b)}
		for _, a := range old.Attachments {
			if a.Live(now) {
				e.Nodes = append(e.Nodes, a.Node)
			}
		}
		if len(e.Nodes) > 0 || len(e.Children) > 0 {
			return e
		}
		for _, a := range old.Attachments {
			if err := deleteAttachment(root, b, a); err != nil {
				return volumeErr(volume, err)
			}
		}
		gone = old.Attachments
		v := old
		v.File = newFile
		return putJSON(b, keyRecord, newVolumeRecord(v))
	})
	return old, gone, err
}
