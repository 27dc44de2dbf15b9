package state

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// NodeStore is the Docker plugin's state on one host: the volumes it knows
// (a cache for List while a backend is down) and what it has mounted.
// It is safe for concurrent use; each method is one transaction.
type NodeStore struct {
	s *store
}

// OpenNodeStore opens or creates the node database at path. It fails with
// ErrLocked when another handle holds the file past the timeout and with
// ErrSchema when the file is not a node store this program understands.
func OpenNodeStore(path string, opts ...Option) (*NodeStore, error) {
	s, err := open(path, nodeSchema(), opts)
	if err != nil {
		return nil, err
	}
	return &NodeStore{s: s}, nil
}

// Close releases the database.
func (n *NodeStore) Close() error { return n.s.Close() }

// Path returns the database file's path.
func (n *NodeStore) Path() string { return n.s.Path() }

// NodeVolume is what a host knows of a volume.
type NodeVolume struct {
	Name     string
	Type     string            // backend: "nfs" or "nbd" (not checked here)
	Options  map[string]string // options given at create
	Server   string            // storage server or NFS server
	Export   string            // NFS export path or NBD volume
	Created  time.Time         // as given by the caller
	Status   map[string]string // last status seen from the backend, for List
	StatusAt time.Time         // when Status was seen
}

type nodeVolumeRecord struct {
	V        int               `json:"v"`
	Type     string            `json:"type"`
	Options  map[string]string `json:"options,omitempty"`
	Server   string            `json:"server,omitempty"`
	Export   string            `json:"export,omitempty"`
	Created  time.Time         `json:"created"`
	Status   map[string]string `json:"status,omitempty"`
	StatusAt time.Time         `json:"status_at,omitzero"`
}

func newNodeVolumeRecord(v NodeVolume) nodeVolumeRecord {
	return nodeVolumeRecord{V: recordVersion, Type: v.Type, Options: v.Options, Server: v.Server,
		Export: v.Export, Created: v.Created, Status: v.Status, StatusAt: v.StatusAt}
}

func (rec nodeVolumeRecord) volume(name string) NodeVolume {
	return NodeVolume{Name: name, Type: rec.Type, Options: rec.Options, Server: rec.Server,
		Export: rec.Export, Created: rec.Created, Status: rec.Status, StatusAt: rec.StatusAt}
}

// CreateVolume records a new volume; ErrExists when the name is taken.
func (n *NodeStore) CreateVolume(v NodeVolume) error {
	k, err := key("volume", v.Name)
	if err != nil {
		return err
	}
	return n.s.update(func(root *bolt.Bucket) error {
		vols := root.Bucket(keyVolumes)
		if vols.Get(k) != nil {
			return volumeErr(v.Name, ErrExists)
		}
		return putJSON(vols, k, newNodeVolumeRecord(v))
	})
}

// PutVolume creates or replaces a volume.
func (n *NodeStore) PutVolume(v NodeVolume) error {
	return n.PutVolumes([]NodeVolume{v})
}

// PutVolumes creates or replaces many volumes in one transaction (the
// List cache): all are written or, on any error, none.
func (n *NodeStore) PutVolumes(vs []NodeVolume) error {
	ks := make([][]byte, len(vs))
	for i, v := range vs {
		k, err := key("volume", v.Name)
		if err != nil {
			return fmt.Errorf("volume %d of %d: %w", i+1, len(vs), err)
		}
		ks[i] = k
	}
	return n.s.update(func(root *bolt.Bucket) error {
		vols := root.Bucket(keyVolumes)
		for i, v := range vs {
			if err := putJSON(vols, ks[i], newNodeVolumeRecord(v)); err != nil {
				return volumeErr(v.Name, err)
			}
		}
		return nil
	})
}

// GetVolume returns a volume; ErrNotFound if absent.
func (n *NodeStore) GetVolume(name string) (NodeVolume, error) {
	k, err := key("volume", name)
	if err != nil {
		return NodeVolume{}, err
	}
	var rec nodeVolumeRecord
	err = n.s.view(func(root *bolt.Bucket) error {
		ok, err := getJSON(root.Bucket(keyVolumes), k, &rec)
		if err == nil && !ok {
			err = ErrNotFound
		}
		if err != nil {
			return volumeErr(name, err)
		}
		return nil
	})
	return rec.volume(name), err
}

// ListVolumes returns every volume, sorted by name.
func (n *NodeStore) ListVolumes() ([]NodeVolume, error) {
	var out []NodeVolume
	err := n.s.view(func(root *bolt.Bucket) error {
		return root.Bucket(keyVolumes).ForEach(func(k, data []byte) error {
			var rec nodeVolumeRecord
			if err := decodeJSON(k, data, &rec); err != nil {
				return volumeErr(string(k), err)
			}
			out = append(out, rec.volume(string(k)))
			return nil
		})
	})
	return out, err
}

// DeleteVolume removes a volume. It is refused with an *InUseError
// (ErrInUse) while a mount record exists; ErrNotFound if absent.
func (n *NodeStore) DeleteVolume(name string) error {
	k, err := key("volume", name)
	if err != nil {
		return err
	}
	return n.s.update(func(root *bolt.Bucket) error {
		vols := root.Bucket(keyVolumes)
		if vols.Get(k) == nil {
			return volumeErr(name, ErrNotFound)
		}
		if root.Bucket(keyMounts).Get(k) != nil {
			return &InUseError{Volume: name, Mounted: true}
		}
		return vols.Delete(k)
	})
}
