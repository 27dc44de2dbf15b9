package state

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// recordVersion is written into every JSON value so that a later schema
// can tell old values from new ones.
const recordVersion = 1

// Registry is the storage daemon's state: volumes and their attachments.
// It is safe for concurrent use; each method is one transaction.
type Registry struct {
	s *store
}

// OpenRegistry opens or creates the registry database at path. It fails
// with ErrLocked when another handle holds the file past the timeout and
// with ErrSchema when the file is not a registry this program understands.
func OpenRegistry(path string, opts ...Option) (*Registry, error) {
	s, err := open(path, registrySchema(), opts)
	if err != nil {
		return nil, err
	}
	return &Registry{s: s}, nil
}

// Close releases the database.
func (r *Registry) Close() error { return r.s.Close() }

// Path returns the database file's path.
func (r *Registry) Path() string { return r.s.Path() }

type volumeRecord struct {
	V        int               `json:"v"`
	Size     int64             `json:"size"`
	File     string            `json:"file"`
	Parent   string            `json:"parent,omitempty"`
	FromSnap string            `json:"from_snapshot,omitempty"`
	Template bool              `json:"template,omitempty"`
	Created  time.Time         `json:"created"`
	Labels   map[string]string `json:"labels,omitempty"`
}

func newVolumeRecord(v Volume) volumeRecord {
	return volumeRecord{V: recordVersion, Size: v.Size, File: v.File, Parent: v.Parent, FromSnap: v.FromSnapshot,
		Template: v.Template, Created: v.Created, Labels: v.Labels}
}

func (rec volumeRecord) volume(name string) Volume {
	return Volume{Name: name, Size: rec.Size, File: rec.File, Parent: rec.Parent, FromSnapshot: rec.FromSnap,
		Template: rec.Template, Created: rec.Created, Labels: rec.Labels}
}

// CreateVolume records a new volume. ErrExists when the name is taken.
// A clone (v.Parent set) is ErrInvalid here: CloneVolume records those.
func (r *Registry) CreateVolume(v Volume) error {
	k, err := checkNewVolume(v)
	if err != nil {
		return err
	}
	if v.Parent != "" {
		return volumeErr(v.Name, fmt.Errorf("clone of %q: use CloneVolume: %w", v.Parent, ErrInvalid))
	}
	return r.s.update(func(root *bolt.Bucket) error {
		return createVolume(root.Bucket(keyVolumes), k, v)
	})
}

func checkNewVolume(v Volume) ([]byte, error) {
	k, err := key("volume", v.Name)
	if err != nil {
		return nil, err
	}
	if v.Size < 0 {
		return nil, volumeErr(v.Name, fmt.Errorf("negative size %d: %w", v.Size, ErrInvalid))
	}
	return k, nil
}

// CloneVolume records v, a clone of the snapshot v.FromSnapshot of the
// volume v.Parent: its image is an overlay of the snapshot's layer, which
// never changes, so the parent goes on as before. ErrNotFound when the
// parent or the snapshot does not exist, ErrExists when v's name is taken.
// (CreateSnapshot records a clone of a volume as it is.)
func (r *Registry) CloneVolume(v Volume) error {
	k, err := checkNewVolume(v)
	if err != nil {
		return err
	}
	pk, sk, err := snapshotKeys(v.Parent, v.FromSnapshot)
	if err != nil {
		return volumeErr(v.Name, err)
	}
	return r.s.update(func(root *bolt.Bucket) error {
		vols := root.Bucket(keyVolumes)
		if vols.Bucket(k) != nil {
			return volumeErr(v.Name, ErrExists)
		}
		pb := vols.Bucket(pk)
		if pb == nil {
			return volumeErr(v.Name, fmt.Errorf("parent %q: %w", v.Parent, ErrNotFound))
		}
		if _, err := readSnapshot(pb, v.Parent, sk); err != nil {
			return volumeErr(v.Name, err)
		}
		return createVolume(vols, k, v)
	})
}

// immutable returns what keeps the volume in b from changing: clones made
// before snapshots existed, which read its own image. A read-write
// attachment of it is neither renewed nor served. (A snapshot ends that:
// see adoptLegacyClones.)
func immutable(b *bolt.Bucket) []string {
	var out []string
	for _, c := range readClones(b) {
		if c.Snapshot == "" {
			out = append(out, c.Name)
		}
	}
	return out
}

func createVolume(vols *bolt.Bucket, k []byte, v Volume) error {
	if vols.Bucket(k) != nil {
		return volumeErr(v.Name, ErrExists)
	}
	if err := linkChild(vols, v.Parent, k, v.FromSnapshot); err != nil {
		return volumeErr(v.Name, err)
	}
	b, err := vols.CreateBucket(k)
	if err != nil {
		return volumeErr(v.Name, err)
	}
	for _, sub := range [][]byte{keyAttachments, keyChildren, keySnapshots} {
		if _, err := b.CreateBucket(sub); err != nil {
			return volumeErr(v.Name, err)
		}
	}
	return putJSON(b, keyRecord, newVolumeRecord(v))
}

// linkChild records child under parent's children, made from snapshot;
// nothing when parent is "".
func linkChild(vols *bolt.Bucket, parent string, child []byte, snapshot string) error {
	if parent == "" {
		return nil
	}
	pb := vols.Bucket([]byte(parent))
	if pb == nil {
		return fmt.Errorf("parent %q: %w", parent, ErrNotFound)
	}
	return pb.Bucket(keyChildren).Put(child, []byte(snapshot))
}

// GetVolume returns the volume with its attachments; ErrNotFound if absent.
func (r *Registry) GetVolume(name string) (Volume, error) {
	k, err := key("volume", name)
	if err != nil {
		return Volume{}, err
	}
	var v Volume
	err = r.s.view(func(root *bolt.Bucket) error {
		b, err := volumeBucket(root, k)
		if err != nil {
			return err
		}
		v, err = readVolume(b, name)
		return err
	})
	return v, err
}

// ListVolumes returns every volume with its attachments, sorted by name.
func (r *Registry) ListVolumes() ([]Volume, error) {
	var out []Volume
	err := r.s.view(func(root *bolt.Bucket) error {
		vols := root.Bucket(keyVolumes)
		return vols.ForEachBucket(func(k []byte) error {
			v, err := readVolume(vols.Bucket(k), string(k))
			out = append(out, v)
			return err
		})
	})
	return out, err
}

// volumeBucket returns volumes/<k>, or ErrNotFound naming the volume.
func volumeBucket(root *bolt.Bucket, k []byte) (*bolt.Bucket, error) {
	b := root.Bucket(keyVolumes).Bucket(k)
	if b == nil {
		return nil, volumeErr(string(k), ErrNotFound)
	}
	return b, nil
}

func readVolume(b *bolt.Bucket, name string) (Volume, error) {
	var rec volumeRecord
	ok, err := getJSON(b, keyRecord, &rec)
	if err == nil && !ok {
		err = fmt.Errorf("entry has no %s", keyRecord)
	}
	if err != nil {
		return Volume{}, volumeErr(name, err)
	}
	v := rec.volume(name)
	if v.Attachments, err = readAttachments(b, name); err != nil {
		return Volume{}, err
	}
	v.Snapshots, err = readSnapshots(b, name)
	return v, err
}

// UpdateVolumeSize records a new size and returns the volume. Sizes only
// grow: a smaller size is ErrInvalid.
func (r *Registry) UpdateVolumeSize(name string, size int64) (Volume, error) {
	k, err := key("volume", name)
	if err != nil {
		return Volume{}, err
	}
	var v Volume
	err = r.s.update(func(root *bolt.Bucket) error {
		b, err := volumeBucket(root, k)
		if err != nil {
			return err
		}
		v, err = setSize(b, name, size)
		return err
	})
	return v, err
}

func setSize(b *bolt.Bucket, name string, size int64) (Volume, error) {
	v, err := readVolume(b, name)
	if err != nil {
		return Volume{}, err
	}
	if size < v.Size {
		return Volume{}, volumeErr(name, fmt.Errorf("size %d is smaller than %d (volumes only grow): %w", size, v.Size, ErrInvalid))
	}
	v.Size = size
	return v, putJSON(b, keyRecord, newVolumeRecord(v))
}

// Children returns the names of the volumes cloned from name, sorted.
func (r *Registry) Children(name string) ([]string, error) {
	k, err := key("volume", name)
	if err != nil {
		return nil, err
	}
	var out []string
	err = r.s.view(func(root *bolt.Bucket) error {
		b, err := volumeBucket(root, k)
		if err != nil {
			return err
		}
		out = keys(b.Bucket(keyChildren))
		return nil
	})
	return out, err
}

func keys(b *bolt.Bucket) []string {
	var out []string
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		out = append(out, string(k))
	}
	return out
}

// DeleteVolume removes a volume with its snapshots and returns what it
// was, so the caller can remove its image and its snapshots' layers after
// the commit. It is refused with an *InUseError (ErrInUse) while the
// volume has an attachment live at now or clones (of it or of any of its
// snapshots). Expired attachments are dropped with the volume.
func (r *Registry) DeleteVolume(name string, now time.Time) (Volume, error) {
	k, err := key("volume", name)
	if err != nil {
		return Volume{}, err
	}
	var v Volume
	err = r.s.update(func(root *bolt.Bucket) error {
		b, err := volumeBucket(root, k)
		if err != nil {
			return err
		}
		if v, err = readVolume(b, name); err != nil {
			return err
		}
		return deleteVolume(root, v, now)
	})
	return v, err
}

func deleteVolume(root *bolt.Bucket, v Volume, now time.Time) error {
	if err := checkUnused(root, v, now); err != nil {
		return err
	}
	return dropVolume(root, v)
}

// dropVolume removes v with its attachments and indexes, unchecked.
func dropVolume(root *bolt.Bucket, v Volume) error {
	for _, a := range v.Attachments {
		if err := unindex(root, a); err != nil {
			return volumeErr(v.Name, err)
		}
	}
	vols := root.Bucket(keyVolumes)
	if v.Parent != "" {
		if pb := vols.Bucket([]byte(v.Parent)); pb != nil {
			if err := pb.Bucket(keyChildren).Delete([]byte(v.Name)); err != nil {
				return volumeErr(v.Name, err)
			}
		}
	}
	return vols.DeleteBucket([]byte(v.Name))
}

func checkUnused(root *bolt.Bucket, v Volume, now time.Time) error {
	e := &InUseError{Volume: v.Name}
	for _, a := range v.Attachments {
		if a.Live(now) {
			e.Nodes = append(e.Nodes, a.Node)
		}
	}
	e.Children = keys(root.Bucket(keyVolumes).Bucket([]byte(v.Name)).Bucket(keyChildren))
	if len(e.Nodes) > 0 || len(e.Children) > 0 {
		return e
	}
	return nil
}
