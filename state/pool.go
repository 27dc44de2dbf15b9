package state

import (
	"fmt"
	"maps"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Claim is a pool name claim: the record on a name's home server of which
// server of the pool holds (or is about to hold) the volume of that name.
// See docs/design.md ("A pool of storage servers").
type Claim struct {
	Name    string
	Server  string // the holding server, as the pool names it (host:port)
	Created time.Time
}

type claimRecord struct {
	V       int       `json:"v"`
	Server  string    `json:"server"`
	Created time.Time `json:"created"`
}

// ClaimName records that server holds name, unless name is claimed
// already: then the existing claim is returned unchanged. created reports
// whether this call made the claim. Two claims of one name race in one
// transaction each: the first wins, the second learns its server.
func (r *Registry) ClaimName(name, server string, now time.Time) (c Claim, created bool, err error) {
	k, err := key("name", name)
	if err != nil {
		return Claim{}, false, err
	}
	if server == "" {
		return Claim{}, false, fmt.Errorf("claim of %q: no server: %w", name, ErrInvalid)
	}
	err = r.s.update(func(root *bolt.Bucket) error {
		names := root.Bucket(keyNames)
		var rec claimRecord
		ok, err := getJSON(names, k, &rec)
		if err != nil || ok {
			c = Claim{Name: name, Server: rec.Server, Created: rec.Created}
			return err
		}
		rec = claimRecord{V: recordVersion, Server: server, Created: now.UTC()}
		c, created = Claim{Name: name, Server: server, Created: rec.Created}, true
		return putJSON(names, k, rec)
	})
	return c, created, err
}

// GetClaim returns name's claim; ErrNotFound when unclaimed.
func (r *Registry) GetClaim(name string) (Claim, error) {
	k, err := key("name", name)
	if err != nil {
		return Claim{}, err
	}
	var c Claim
	err = r.s.view(func(root *bolt.Bucket) error {
		var rec claimRecord
		ok, err := getJSON(root.Bucket(keyNames), k, &rec)
		if err == nil && !ok {
			err = fmt.Errorf("name %q: no claim: %w", name, ErrNotFound)
		}
		c = Claim{Name: name, Server: rec.Server, Created: rec.Created}
		return err
	})
	return c, err
}

// SwitchClaim moves name's claim from server from to server to, only while
// it names from (compare and swap): ErrConflict otherwise, ErrNotFound when
// unclaimed. It is the commit point of a volume's move between servers.
func (r *Registry) SwitchClaim(name, from, to string) (Claim, error) {
	k, err := key("name", name)
	if err != nil {
		return Claim{}, err
	}
	if to == "" {
		return Claim{}, fmt.Errorf("claim of %q: no server: %w", name, ErrInvalid)
	}
	var c Claim
	err = r.s.update(func(root *bolt.Bucket) error {
		names := root.Bucket(keyNames)
		var rec claimRecord
		ok, err := getJSON(names, k, &rec)
		switch {
		case err != nil:
			return err
		case !ok:
			return fmt.Errorf("name %q: no claim: %w", name, ErrNotFound)
		case rec.Server != from:
			c = Claim{Name: name, Server: rec.Server, Created: rec.Created}
			return fmt.Errorf("name %q is claimed for %s, not %s: %w", name, rec.Server, from, ErrInvalid)
		}
		rec.Server = to
		c = Claim{Name: name, Server: to, Created: rec.Created}
		return putJSON(names, k, rec)
	})
	return c, err
}

// ReleaseClaim removes name's claim while it names server; ErrNotFound when
// there is none, ErrInvalid when it names another server.
func (r *Registry) ReleaseClaim(name, server string) error {
	k, err := key("name", name)
	if err != nil {
		return err
	}
	return r.s.update(func(root *bolt.Bucket) error {
		names := root.Bucket(keyNames)
		var rec claimRecord
		ok, err := getJSON(names, k, &rec)
		switch {
		case err != nil:
			return err
		case !ok:
			return fmt.Errorf("name %q: no claim: %w", name, ErrNotFound)
		case rec.Server != server:
			return fmt.Errorf("name %q is claimed for %s, not %s: %w", name, rec.Server, server, ErrInvalid)
		}
		return names.Delete(k)
	})
}

// SetLabels sets the labels of set and removes those of del in one
// transaction, and returns the volume.
func (r *Registry) SetLabels(name string, set map[string]string, del []string) (Volume, error) {
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
		var rec volumeRecord
		if _, err := getJSON(b, keyRecord, &rec); err != nil {
			return volumeErr(name, err)
		}
		labels := maps.Clone(rec.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		maps.Copy(labels, set)
		for _, l := range del {
			delete(labels, l)
		}
		if len(labels) == 0 {
			labels = nil
		}
		rec.Labels = labels
		if err := putJSON(b, keyRecord, rec); err != nil {
			return err
		}
		v, err = readVolume(b, name)
		return err
	})
	return v, err
}

// DeleteVolumeHeldBy removes a volume as DeleteVolume does, except that a
// live attachment of node does not stop it: it is dropped with the volume;
// and a volume with snapshots is refused (ErrInUse).
// A move deletes the source this way while still holding it, so that no
// other node can attach it between the switch and the delete.
func (r *Registry) DeleteVolumeHeldBy(name, node string, now time.Time) (Volume, error) {
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
		others := v
		others.Attachments = nil
		for _, a := range v.Attachments {
			if a.Node != node {
				others.Attachments = append(others.Attachments, a)
			}
		}
		if err := checkUnused(root, others, now); err != nil {
			return err
		}
		// A move copies the volume's data, not its snapshots: it checks
		// for them first, and this refuses one taken during the copy.
		if snaps := visibleSnapshots(v); len(snaps) > 0 {
			return fmt.Errorf("volume %q has snapshots %s, which a move does not carry: %w", name, strings.Join(snaps, ", "), ErrInUse)
		}
		return dropVolume(root, v)
	})
	return v, err
}

// visibleSnapshots names v's snapshots other than the hidden ones (the
// layers of clones, which checkUnused finds as children).
func visibleSnapshots(v Volume) []string {
	var out []string
	for _, sn := range v.Snapshots {
		if !sn.Hidden {
			out = append(out, sn.Name)
		}
	}
	return out
}
