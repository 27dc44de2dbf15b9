package state

import (
	"testing"
	"time"
)

// The backup record follows a base from backup to backup: the old base is
// committed down and its file becomes the new base's layer.
func TestBackupStateCommitDrop(t *testing.T) {
	r := openRegistry(t)
	must(t, r.CreateVolume(Volume{Name: "v", Size: 1 << 20, File: "v.qcow2", Created: t0}))
	bs, err := r.BackupState("v")
	must(t, err)
	if bs != (BackupState{}) {
		t.Fatalf("new volume has a backup record %+v", bs)
	}
	_, err = r.CreateSnapshot(Snapshot{Name: "@backup.a", Volume: "v", Created: t0, Hidden: true}, "v.1.qcow2", nil)
	must(t, err)
	wantErr(t, r.SetBackupState("v", BackupState{Base: "@nope"}), ErrNotFound)
	must(t, r.SetBackupState("v", BackupState{Base: "@backup.a", Last: "a", LastAt: t0}))
	_, err = r.CreateSnapshot(Snapshot{Name: "@backup.b", Volume: "v", Created: t0.Add(time.Hour), Hidden: true}, "v.2.qcow2", nil)
	must(t, err)
	wantErr(t, r.SetBackupState("v", BackupState{Base: "@backup.b", Dropping: "@backup.a", DropMode: "x"}), ErrInvalid)
	_, err = r.FinishCommitDrop("v")
	wantErr(t, err, ErrInvalid)
	must(t, r.SetBackupState("v", BackupState{Base: "@backup.b", Last: "b", LastAt: t0.Add(time.Hour), Dropping: "@backup.a", DropMode: DropCommit}))
	gone, err := r.FinishCommitDrop("v")
	must(t, err)
	if gone != "v.1.qcow2" {
		t.Fatalf("FinishCommitDrop gives %q to delete, want the new base's former layer v.1.qcow2", gone)
	}
	v, err := r.GetVolume("v")
	must(t, err)
	if len(v.Snapshots) != 1 || v.Snapshots[0].Name != "@backup.b" || v.Snapshots[0].File != "v.qcow2" || v.File != "v.2.qcow2" {
		t.Fatalf("after the drop: %+v", v)
	}
	bs, err = r.BackupState("v")
	must(t, err)
	if bs != (BackupState{Base: "@backup.b", Last: "b", LastAt: t0.Add(time.Hour)}) {
		t.Fatalf("backup record %+v", bs)
	}
}
