package state

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Mount is a volume mounted on this host and the Docker mount IDs using it.
type Mount struct {
	Name       string
	Mountpoint string         // where the file system is mounted
	Device     string         // /dev/nbdN, /dev/loopN; "" for nfs
	Method     string         // how the device was attached (kernel NBD, FUSE+loop...)
	Export     string         // NBD export name or NFS source
	Generation uint64         // attachment generation of the export
	Subdir     string         // directory inside the mount handed to Docker ("" = its root)
	IDs        map[string]int // Docker mount ID -> times mounted with it
}

// Total returns how many Docker mounts use the volume.
func (m Mount) Total() int {
	t := 0
	for _, c := range m.IDs {
		t += c
	}
	return t
}

type mountRecord struct {
	V          int            `json:"v"`
	Mountpoint string         `json:"mountpoint"`
	Device     string         `json:"device,omitempty"`
	Method     string         `json:"method,omitempty"`
	Export     string         `json:"export,omitempty"`
	Generation uint64         `json:"generation,omitempty"`
	Subdir     string         `json:"subdir,omitempty"`
	IDs        map[string]int `json:"ids"`
}

func newMountRecord(m Mount) mountRecord {
	ids := m.IDs
	if ids == nil {
		ids = map[string]int{}
	}
	return mountRecord{V: recordVersion, Mountpoint: m.Mountpoint, Device: m.Device,
		Method: m.Method, Export: m.Export, Generation: m.Generation, Subdir: m.Subdir, IDs: ids}
}

func (rec mountRecord) mount(name string) Mount {
	ids := rec.IDs
	if ids == nil {
		ids = map[string]int{}
	}
	return Mount{Name: name, Mountpoint: rec.Mountpoint, Device: rec.Device, Method: rec.Method,
		Export: rec.Export, Generation: rec.Generation, Subdir: rec.Subdir, IDs: ids}
}

func checkIDs(m Mount) error {
	for id, c := range m.IDs {
		if id == "" || c <= 0 {
			return volumeErr(m.Name, fmt.Errorf("mount ID %q with count %d: %w", id, c, ErrInvalid))
		}
	}
	return nil
}

// PutMount creates or replaces the mount record of m.Name, its IDs
// included, in one transaction: typically after the first Mount with
// IDs {id: 1}.
func (n *NodeStore) PutMount(m Mount) error {
	k, err := key("volume", m.Name)
	if err != nil {
		return err
	}
	if err := checkIDs(m); err != nil {
		return err
	}
	return n.s.update(func(root *bolt.Bucket) error {
		return putJSON(root.Bucket(keyMounts), k, newMountRecord(m))
	})
}

// UpdateMount replaces everything in the mount record of m.Name but its
// IDs (after a reconnect: new device or generation) and returns it.
// ErrNotFound when there is no record.
func (n *NodeStore) UpdateMount(m Mount) (Mount, error) {
	var out Mount
	err := n.changeMount(m.Name, func(old *Mount) error {
		ids := old.IDs
		*old = m
		old.IDs = ids
		out = *old
		return nil
	})
	return out, err
}

// GetMount returns the mount record of a volume; ErrNotFound if absent.
func (n *NodeStore) GetMount(name string) (Mount, error) {
	k, err := key("volume", name)
	if err != nil {
		return Mount{}, err
	}
	var m Mount
	err = n.s.view(func(root *bolt.Bucket) error {
		m, err = readMount(root, k)
		return err
	})
	return m, err
}

// ListMounts returns every mount record, sorted by volume name.
func (n *NodeStore) ListMounts() ([]Mount, error) {
	var out []Mount
	err := n.s.view(func(root *bolt.Bucket) error {
		return root.Bucket(keyMounts).ForEach(func(k, data []byte) error {
			var rec mountRecord
			if err := decodeJSON(k, data, &rec); err != nil {
				return volumeErr(string(k), err)
			}
			out = append(out, rec.mount(string(k)))
			return nil
		})
	})
	return out, err
}

// DeleteMount removes a mount record, whatever its IDs, and returns it.
// ErrNotFound if absent.
func (n *NodeStore) DeleteMount(name string) (Mount, error) {
	k, err := key("volume", name)
	if err != nil {
		return Mount{}, err
	}
	var m Mount
	err = n.s.update(func(root *bolt.Bucket) error {
		if m, err = readMount(root, k); err != nil {
			return err
		}
		return root.Bucket(keyMounts).Delete(k)
	})
	return m, err
}

// AddMountID counts one more Docker mount with id and returns the new
// total over all IDs. ErrNotFound when the volume has no mount record:
// the first mount creates it with PutMount.
func (n *NodeStore) AddMountID(name, id string) (int, error) {
	if _, err := key("mount ID", id); err != nil {
		return 0, volumeErr(name, err)
	}
	var total int
	err := n.changeMount(name, func(m *Mount) error {
		m.IDs[id]++
		total = m.Total()
		return nil
	})
	return total, err
}

// RemoveMountID counts one Docker mount with id less and returns the new
// total. At 0 the record stays, so that a crash before the unmount is
// finished is seen on restart; DeleteMount removes it. ErrNotFound when
// there is no record or id is not counted.
func (n *NodeStore) RemoveMountID(name, id string) (int, error) {
	var total int
	err := n.changeMount(name, func(m *Mount) error {
		if m.IDs[id] == 0 {
			return volumeErr(name, fmt.Errorf("mount ID %q: %w", id, ErrNotFound))
		}
		m.IDs[id]--
		if m.IDs[id] == 0 {
			delete(m.IDs, id)
		}
		total = m.Total()
		return nil
	})
	return total, err
}

// changeMount applies fn to the mount record of name in one transaction.
func (n *NodeStore) changeMount(name string, fn func(*Mount) error) error {
	k, err := key("volume", name)
	if err != nil {
		return err
	}
	return n.s.update(func(root *bolt.Bucket) error {
		m, err := readMount(root, k)
		if err != nil {
			return err
		}
		if err := fn(&m); err != nil {
			return err
		}
		return putJSON(root.Bucket(keyMounts), k, newMountRecord(m))
	})
}

func readMount(root *bolt.Bucket, k []byte) (Mount, error) {
	var rec mountRecord
	ok, err := getJSON(root.Bucket(keyMounts), k, &rec)
	if err == nil && !ok {
		err = fmt.Errorf("mount: %w", ErrNotFound)
	}
	if err != nil {
		return Mount{}, volumeErr(string(k), err)
	}
	return rec.mount(string(k)), nil
}
