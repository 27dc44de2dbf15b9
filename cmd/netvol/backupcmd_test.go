package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/netvol/netvol/internal/optest"
	"github.com/netvol/netvol/server"
	"github.com/netvol/netvol/server/backup"
)

// netvol volume backup create|ls|verify|rm and netvol volume restore,
// against a daemon with a directory target; restore on a second daemon.
func TestVolumeBackupCommands(t *testing.T) {
	target := filepath.Join(t.TempDir(), "backups")
	start := func() vcDaemon {
		tg, err := backup.OpenDir(target)
		if err != nil {
			t.Fatal(err)
		}
		return vcDaemon{optest.StartDaemonConfig(t, server.Config{DataDir: t.TempDir(), MaxVolumeSize: 1 << 40,
			Backups: backup.NewEngine(tg, backup.EngineOptions{GCGrace: -1})})}
	}
	d := start()
	d.mustVol(t, "create", "db", "--size", "64M")
	id := strings.TrimSpace(d.mustVol(t, "backup", "create", "db"))
	if !strings.HasPrefix(id, "db.") {
		t.Fatalf("backup create printed %q", id)
	}
	id2 := strings.TrimSpace(d.mustVol(t, "backup", "create", "db"))
	rows := tableRows(d.mustVol(t, "backup", "ls", "db"))
	if len(rows) != 3 || strings.Join(rows[0], " ") != "ID VOLUME CREATED SIZE DATA STORED PARENT" ||
		rows[1][0] != id || rows[1][6] != "-" || rows[2][0] != id2 || rows[2][6] != id || rows[1][3] != "64MiB" {
		t.Fatalf("backup ls: %q", rows)
	}
	if out := d.mustVol(t, "backup", "verify", id); !strings.Contains(out, "every checksum matches") {
		t.Fatalf("verify printed %q", out)
	}
	other := start()
	if out := other.mustVol(t, "restore", id2, "copy"); out != "copy\n" {
		t.Fatalf("restore printed %q", out)
	}
	if out := other.mustVol(t, "inspect", "copy"); !strings.Contains(out, "64MiB") {
		t.Fatalf("inspect of the restored volume:\n%s", out)
	}
	_, err := other.vol(t, "restore", id2, "copy")
	wantErr(t, err, `"copy"`, "exists")
	d.mustVol(t, "backup", "rm", id)
	_, err = d.vol(t, "backup", "verify", id)
	wantErr(t, err, id, "not found")
	_, err = d.vol(t, "restore", "nonsense", "x")
	wantErr(t, err, "backup ID", "VOLUME.TIME.RANDOM")
	plain := startVCDaemon(t)
	plain.mustVol(t, "create", "v", "--size", "1M")
	_, err = plain.vol(t, "backup", "create", "v")
	wantErr(t, err, "--backup-target")
}
