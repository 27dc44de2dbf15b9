package state

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Backups. The storage daemon takes a backup from a hidden snapshot of the
// volume and keeps that snapshot's layer, the base, until the next
// backup: the clusters the layers above it hold are exactly those changed
// since (changed-block tracking that a restart keeps). The volume's backup
// record (volumes/<volume>/backup, schema 4) names the base snapshot and
// the backup taken from it, and, while the previous base is being merged
// away, that one (Dropping) and how (DropMode).

// Drop modes of a previous base.
const (
	// DropCommit: the new base's layer is copied down into the old base's
	// file, which then becomes the new base's layer (cost: the clusters
	// changed since the previous backup).
	DropCommit = "commit"
	// DropMerge: the old base is deleted as any snapshot is (its layer
	// merged up into what reads it).
	DropMerge = "merge"
)

// BackupState is a volume's backup record; the zero value means none.
type BackupState struct {
	Base     string    // hidden snapshot whose layer is the last backup's state
	Last     string    // ID of the backup taken from Base
	LastAt   time.Time // when it was taken
	Dropping string    // the previous base, being merged away ("" when none)
	DropMode string    // DropCommit or DropMerge
}

type backupRecord struct {
	V        int       `json:"v"`
	Base     string    `json:"base,omitempty"`
	Last     string    `json:"last,omitempty"`
	LastAt   time.Time `json:"last_at"`
	Dropping string    `json:"dropping,omitempty"`
	DropMode string    `json:"drop_mode,omitempty"`
}

// BackupState returns the volume's backup record (zero when it has none).
func (r *Registry) BackupState(volume string) (BackupState, error) {
	k, err := key("volume", volume)
	if err != nil {
		return BackupState{}, err
	}
	var bs BackupState
	err = r.s.view(func(root *bolt.Bucket) error {
		b, err := volumeBucket(root, k)
		if err != nil {
			return err
		}
		bs, err = readBackup(b, volume)
		return err
	})
	return bs, err
}

func readBackup(b *bolt.Bucket, volume string) (BackupState, error) {
	var rec backupRecord
	if _, err := getJSON(b, keyBackup, &rec); err != nil {
		return BackupState{}, volumeErr(volume, err)
	}
	return BackupState{Base: rec.Base, Last: rec.Last, LastAt: rec.LastAt, Dropping: rec.Dropping, DropMode: rec.DropMode}, nil
}

// SetBackupState records the volume's backup record. Base and Dropping
// must name snapshots of the volume.
func (r *Registry) SetBackupState(volume string, bs BackupState) error {
	k, err := key("volume", volume)
	if err != nil {
		return err
	}
	return r.s.update(func(root *bolt.Bucket) error {
		b, err := volumeBucket(root, k)
		if err != nil {
			return err
		}
		for _, sn := range []string{bs.Base, bs.Dropping} {
			if sn == "" {
				continue
			}
			if _, err := readSnapshot(b, volume, []byte(sn)); err != nil {
				return err
			}
		}
		if bs.Dropping != "" && bs.DropMode != DropCommit && bs.DropMode != DropMerge {
			return volumeErr(volume, fmt.Errorf("drop mode %q: %w", bs.DropMode, ErrInvalid))
		}
		return putJSON(b, keyBackup, backupRecord{V: recordVersion, Base: bs.Base, Last: bs.Last, LastAt: bs.LastAt,
			Dropping: bs.Dropping, DropMode: bs.DropMode})
	})
}

// FinishCommitDrop ends a DropCommit: the old base's snapshot record goes,
// the new base's layer becomes the old base's file (which now holds the
// new base's state), and the record forgets the drop, in one
// transaction. It returns the new base's former layer, for the caller to
// delete after the commit.
func (r *Registry) FinishCommitDrop(volume string) (string, error) {
	k, err := key("volume", volume)
	if err != nil {
		return "", err
	}
	var gone string
	err = r.s.update(func(root *bolt.Bucket) error {
		b, err := volumeBucket(root, k)
		if err != nil {
			return err
		}
		bs, err := readBackup(b, volume)
		if err != nil {
			return err
		}
		if bs.Dropping == "" || bs.DropMode != DropCommit {
			return volumeErr(volume, fmt.Errorf("no base being committed down: %w", ErrInvalid))
		}
		oldSn, err := readSnapshot(b, volume, []byte(bs.Dropping))
		if err != nil {
			return err
		}
		newSn, err := readSnapshot(b, volume, []byte(bs.Base))
		if err != nil {
			return err
		}
		snaps := b.Bucket(keySnapshots)
		if len(clonesOf(b, []byte(bs.Dropping))) > 0 {
			return &InUseError{Volume: volume, Snapshot: bs.Dropping, Children: clonesOf(b, []byte(bs.Dropping))}
		}
		if err := snaps.Delete([]byte(bs.Dropping)); err != nil {
			return err
		}
		rec := snapshotRecord{V: recordVersion, File: oldSn.File, Created: newSn.Created, Size: newSn.Size, Hidden: newSn.Hidden}
		if err := putJSON(snaps, []byte(bs.Base), rec); err != nil {
			return err
		}
		gone = newSn.File
		bs.Dropping, bs.DropMode = "", ""
		return putJSON(b, keyBackup, backupRecord{V: recordVersion, Base: bs.Base, Last: bs.Last, LastAt: bs.LastAt})
	})
	return gone, err
}
