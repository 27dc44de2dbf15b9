package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/internal/opcmd"
	"github.com/netvol/netvol/internal/optest"
	"github.com/netvol/netvol/server"
	"github.com/netvol/netvol/server/api"
)

// vcDaemon is a storage daemon's API in process.
type vcDaemon struct{ *optest.Daemon }

func startVCDaemon(t *testing.T) vcDaemon { return vcDaemon{optest.StartDaemon(t)} }

// netvol runs the netvol command line in process and returns its output.
func netvol(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCommand()
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String() + errOut.String(), err
}

// vol runs netvol volume against d.
func (d vcDaemon) vol(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return netvol(t, append([]string{"volume", "--server", d.URL, "--token-file", d.TokenFile}, args...)...)
}

func (d vcDaemon) mustVol(t *testing.T, args ...string) string {
	t.Helper()
	out, err := d.vol(t, args...)
	if err != nil {
		t.Fatalf("netvol volume %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	optest.WantErr(t, err, parts...)
}

func tableRows(out string) [][]string { return optest.TableRows(out) }

func TestVolumeCreateLsInspect(t *testing.T) {
	d := startVCDaemon(t)
	if out := d.mustVol(t, "create", "db", "--size", "1G"); out != "db\n" {
		t.Fatalf("create printed %q", out)
	}
	var made opcmd.VolumeInfo
	out := d.mustVol(t, "create", "web", "-o", "size=512M", "--json")
	if err := json.Unmarshal([]byte(out), &made); err != nil || made.Name != "web" || made.Size != 512<<20 || made.Type != "nbd" {
		t.Fatalf("create --json: %v %+v\n%s", err, made, out)
	}
	d.mustVol(t, "clone", "db", "db2")
	rows := tableRows(d.mustVol(t, "ls"))
	srv := strings.TrimPrefix(d.URL, "http://")
	want := [][]string{{"NAME", "TYPE", "SERVER", "SIZE", "ALLOCATED", "ATTACHED", "CREATED"},
		{"db", "nbd", srv, "1GiB"}, {"db2", "nbd", srv, "1GiB"}, {"web", "nbd", srv, "512MiB"}}
	if len(rows) != len(want) {
		t.Fatalf("ls: %q", rows)
	}
	for i, w := range want {
		if strings.Join(rows[i][:len(w)], " ") != strings.Join(w, " ") {
			t.Errorf("ls row %d: %q, want %q...", i, rows[i], w)
		}
		if i > 0 && (len(rows[i]) != 8 || rows[i][5] != "-") { // CREATED is two fields
			t.Errorf("ls row %d: %q, want 8 fields, not attached", i, rows[i])
		}
	}
	var list []opcmd.VolumeInfo
	if err := json.Unmarshal([]byte(d.mustVol(t, "ls", "--json")), &list); err != nil || len(list) != 3 || list[1].From != "db" {
		t.Fatalf("ls --json: %v %+v", err, list)
	}
	out = d.mustVol(t, "inspect", "db2")
	for _, s := range []string{"Name:        db2", "Type:        nbd", "Server:      " + d.URL, "Size:        1GiB (1073741824 bytes)",
		"From:        db", "Attachments: 0"} {
		if !strings.Contains(out, s) {
			t.Errorf("inspect lacks %q:\n%s", s, out)
		}
	}
}

func TestVolumeAttachedRefusals(t *testing.T) {
	d := startVCDaemon(t)
	d.mustVol(t, "create", "data", "--size", "64M")
	ctx := context.Background()
	g, err := d.API.Attach(ctx, "data", "web1", api.ModeRW)
	if err != nil {
		t.Fatal(err)
	}
	rows := tableRows(d.mustVol(t, "ls"))
	if len(rows) != 2 || rows[1][5] != "web1(rw)" {
		t.Fatalf("ls of an attached volume: %q", rows)
	}
	out := d.mustVol(t, "inspect", "data")
	if !strings.Contains(out, "Attachments: 1") || !strings.Contains(out, "NODE  MODE  GENERATION  EXPIRES") ||
		!regexpMatch(`\n  web1  rw    1 +\S+Z \(in \d+s\)\n`, out) {
		t.Fatalf("inspect of an attached volume:\n%s", out)
	}
	var got []opcmd.VolumeInfo
	if err := json.Unmarshal([]byte(d.mustVol(t, "inspect", "data", "--json")), &got); err != nil || len(got) != 1 ||
		len(got[0].Attachments) != 1 || got[0].Attachments[0].Generation != g.Generation || !got[0].Attachments[0].Expires.Equal(g.Expires) {
		t.Fatalf("inspect --json: %v %+v", err, got)
	}
	_, err = d.vol(t, "rm", "data")
	wantErr(t, err, `removing nbd volume "data"`, d.URL, `attached by node "web1"`, "stop the containers")
	// An attached volume grows; the command waits for the holder, which
	// here reports as a plugin would once it sees the size in a renewal.
	holder := func(size int64, report api.GrownReport) {
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if l, err := d.API.Renew(ctx, "data", "web1"); err == nil && l.Size == size {
				if err := d.API.ReportGrown(ctx, "data", "web1", report); err != nil {
					t.Error(err)
				}
				return
			}
		}
		t.Error("the renewal never carried the new size")
	}
	go holder(96<<20, api.GrownReport{Size: 96 << 20})
	if out := d.mustVol(t, "resize", "data", "+32M"); !strings.Contains(out, "data: 64MiB -> 96MiB (the holder's device and file system too: usable now)") {
		t.Fatalf("resize of an attached volume printed %q", out)
	}
	go holder(128<<20, api.GrownReport{Size: 96 << 20, Error: "EXT4_IOC_RESIZE_FS: read-only file system"})
	_, err = d.vol(t, "resize", "data", "128M")
	wantErr(t, err, `the image has grown to 128MiB`, `node "web1" could not grow`, "read-only file system")
	if err := d.API.Detach(ctx, "data", "web1"); err != nil {
		t.Fatal(err)
	}
	if out := d.mustVol(t, "resize", "data", "+32M"); !strings.Contains(out, "data: 128MiB -> 160MiB (its file system grows at its next mount)") {
		t.Fatalf("resize printed %q", out)
	}
	_, err = d.vol(t, "resize", "data", "100M")
	wantErr(t, err, "has 160MiB already", "only grow")
	var v opcmd.VolumeInfo
	if err := json.Unmarshal([]byte(d.mustVol(t, "resize", "data", "1G", "--json")), &v); err != nil || v.Size != 1<<30 {
		t.Fatalf("resize --json: %v %+v", err, v)
	}
	var removed []opcmd.RemovedVolume
	if err := json.Unmarshal([]byte(d.mustVol(t, "rm", "data", "--json")), &removed); err != nil || len(removed) != 1 || removed[0].Type != "nbd" {
		t.Fatalf("rm --json: %v %+v", err, removed)
	}
	_, err = d.vol(t, "inspect", "data")
	wantErr(t, err, `no volume "data" on the storage daemon `+d.URL, "netvol volume ls")
}

func TestVolumeCloneDependents(t *testing.T) {
	d := startVCDaemon(t)
	d.mustVol(t, "create", "base", "--size", "32M")
	d.mustVol(t, "clone", "base", "big", "--size", "64M")
	if v, err := d.API.GetVolume(context.Background(), "big"); err != nil || v.Size != 64<<20 || v.From != "base" {
		t.Fatalf("clone --size: %+v %v", v, err)
	}
	_, err := d.vol(t, "rm", "base")
	wantErr(t, err, `parent of "big"`, "remove its clones first")
	_, err = d.vol(t, "clone", "nope", "c")
	wantErr(t, err, `creating nbd volume "c"`, "nope")
	if out := d.mustVol(t, "rm", "big", "base"); out != "big\nbase\n" {
		t.Fatalf("rm printed %q", out)
	}
}

func TestVolumeBadInput(t *testing.T) {
	d := startVCDaemon(t)
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"create", "../x"}, []string{`volume name "../x"`}},
		{[]string{"create", "-x"}, []string{"unknown shorthand flag"}},
		{[]string{"create", ".hidden"}, []string{"volume name"}},
		{[]string{"create", "x", "--size", "10Q"}, []string{`volume "x": option size`, `"10Q"`}},
		{[]string{"create", "x", "--size", "0"}, []string{"more than zero"}},
		{[]string{"create", "x", "--size", "-1G"}, []string{"size"}},
		{[]string{"create", "x", "-o", "colour=red"}, []string{`unknown option "colour"`, "accepted options are"}},
		{[]string{"create", "x", "-o", "size"}, []string{`-o "size": want KEY=VALUE`}},
		{[]string{"create", "x", "--size", "1G", "-o", "size=2G"}, []string{"disagree"}},
		{[]string{"create", "x", "--type", "iscsi"}, []string{`type="iscsi"`, "want nfs or nbd"}},
		{[]string{"create", "x", "-o", "mount-opts=noatime"}, []string{"option mount-opts acts when a host mounts", "docker volume create"}},
		{[]string{"create", "x", "-o", "uid=1000"}, []string{"option uid acts when"}},
		{[]string{"create", "x", "-o", "on-remove=retain"}, []string{`"on-remove" does not apply to type=nbd`}},
		{[]string{"create", "x", "--type", "nfs"}, []string{"nfs volumes live in an NFS export", "--nfs host:/export"}},
		{[]string{"create", "x", "--from", "../y"}, []string{`volume name "../y"`}},
		{[]string{"clone", "a", "b/c"}, []string{`volume name "b/c"`}},
		{[]string{"resize", "x", "big"}, []string{`resize "x"`, `size "big"`}},
		{[]string{"resize", "x", "1G"}, []string{`nbd volume "x" on the storage daemon`, "not found"}},
		{[]string{"rm", "x/.."}, []string{"volume name"}},
		{[]string{"ls", "--type", "zfs"}, []string{`--type "zfs"`}},
		{[]string{"inspect"}, []string{"requires at least 1 arg"}},
	} {
		out, err := d.vol(t, c.args...)
		if err == nil {
			t.Errorf("%q: accepted:\n%s", c.args, out)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: %v; want it to contain %q", c.args, err, w)
			}
		}
	}
	if vols, err := d.API.ListVolumes(context.Background()); err != nil || len(vols) != 0 {
		t.Fatalf("bad input made volumes: %+v %v", vols, err)
	}
}

func TestVolumeConnectionErrors(t *testing.T) {
	for _, k := range []string{"NETVOL_SERVER", "NETVOL_NFS", "NETVOL_TOKEN", "NETVOL_TOKEN_FILE"} {
		t.Setenv(k, "")
	}
	t.Setenv("NETVOL_STATE_DIR", t.TempDir()) // no netvol run here
	_, err := netvol(t, "volume", "ls")
	wantErr(t, err, "no server configured", "--server", "--nfs")
	_, err = netvol(t, "volume", "ls", "--server", "127.0.0.1:1", "--token", "x")
	wantErr(t, err, "listing nbd volumes on the storage daemon http://127.0.0.1:1", "unavailable", "is netvol server running there?")
	_, err = netvol(t, "volume", "ls", "--server", "127.0.0.1:1")
	wantErr(t, err, "no API token", "--token-file")
	_, err = netvol(t, "volume", "ls", "--server", "127.0.0.1:1", "--token-file", filepath.Join(t.TempDir(), "none"))
	wantErr(t, err, "reading the API token", "no such file")
	_, err = netvol(t, "volume", "ls", "--nfs", "nas")
	wantErr(t, err, `--nfs "nas"`, "want host:/path", "[fd00::5]:/srv/nfs/vols")
	d := startVCDaemon(t)
	_, err = netvol(t, "volume", "ls", "--server", d.URL, "--token", "wrong")
	wantErr(t, err, "refused the API token", "--token-file")
}

func TestVolumeEnvTwins(t *testing.T) {
	env := map[string]string{"NETVOL_SERVER": "store:10810", "NETVOL_TOKEN_FILE": "/etc/netvol/token", "NETVOL_TOKEN": "t",
		"NETVOL_NFS": "nas:/srv/vols", "NETVOL_NFS_VERSION": "3", "NETVOL_NFS_PORT": "2050", "NETVOL_NFS_MOUNT_PORT": "20049",
		"NETVOL_DEFAULT_TYPE": "nfs", "NETVOL_DEFAULT_SIZE": "5G"}
	flags := map[string]string{"server": "store:10810", "token-file": "/etc/netvol/token", "token": "t", "nfs": "nas:/srv/vols",
		"nfs-version": "3", "nfs-port": "2050", "nfs-mount-port": "20049", "default-type": "nfs", "default-size": "5G"}
	for k, v := range env {
		t.Setenv(k, v)
	}
	cmd := newVolumeCommand()
	create, _, err := cmd.Find([]string{"create"})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range flags {
		fl := create.Flags().Lookup(name)
		if fl == nil {
			fl = cmd.PersistentFlags().Lookup(name)
		}
		if fl == nil || fl.Value.String() != want {
			t.Errorf("--%s = %v from the environment, want %q", name, fl, want)
		}
	}
	doctor := newDoctorCommand()
	for _, name := range []string{"server", "token-file", "nfs", "nfs-port"} {
		if fl := doctor.Flags().Lookup(name); fl == nil || fl.Value.String() != flags[name] {
			t.Errorf("doctor --%s = %v from the environment, want %q", name, fl, flags[name])
		}
	}
}

func TestVersionJSON(t *testing.T) {
	out, err := netvol(t, "version", "--json")
	var v versionInfo
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || v.Version == "" || v.Go == "" || v.Platform == "" {
		t.Fatalf("version --json: %v %q", err, out)
	}
	if out, err := netvol(t, "version"); err != nil || !strings.HasPrefix(out, "netvol ") {
		t.Fatalf("version: %v %q", err, out)
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

// With no server configured, the operator commands use this host's
// netvol run: the daemon records its API address beside its token.
func TestVolumeUsesLocalDaemon(t *testing.T) {
	for _, k := range []string{"NETVOL_SERVER", "NETVOL_NFS", "NETVOL_TOKEN", "NETVOL_TOKEN_FILE"} {
		t.Setenv(k, "")
	}
	state := t.TempDir()
	t.Setenv("NETVOL_STATE_DIR", state)
	log := logrus.New()
	log.SetOutput(io.Discard)
	d, err := server.Start(server.DaemonConfig{DataDir: filepath.Join(state, "server"), NBDListen: "127.0.0.1:0",
		APIListen: "127.0.0.1:0", LeaseTTL: time.Minute, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	if out, err := netvol(t, "volume", "create", "--type", "nbd", "--size", "1M", "local1"); err != nil {
		t.Fatalf("create without --server: %v\n%s", err, out)
	}
	out, err := netvol(t, "volume", "ls")
	if err != nil || !strings.Contains(out, "local1") {
		t.Fatalf("ls without --server: %v\n%s", err, out)
	}
	out, _ = netvol(t, "doctor", "--timeout", "2s")
	if !strings.Contains(out, "storage daemon http://"+d.APIAddr().String()) {
		t.Fatalf("doctor did not check the local daemon:\n%s", out)
	}
	// Elsewhere (another state directory) there is none.
	_, err = netvol(t, "volume", "ls", "--state-dir", t.TempDir())
	wantErr(t, err, "no server configured, and no netvol run on this host", "--server")
}

// netvol volume snapshot create|ls|rm, clone --snapshot, rollback and
// inspect's snapshots, against a daemon.
func TestVolumeSnapshotCommands(t *testing.T) {
	d := startVCDaemon(t)
	d.mustVol(t, "create", "db", "--size", "64M")
	if out := d.mustVol(t, "snapshot", "create", "db", "nightly"); out != "db@nightly\n" {
		t.Fatalf("snapshot create printed %q", out)
	}
	_, err := d.vol(t, "snapshot", "create", "db", "nightly")
	wantErr(t, err, `snapshot "nightly"`, "exists")
	_, err = d.vol(t, "snapshot", "create", "db", "../x")
	wantErr(t, err, "snapshot", "letter or digit")
	d.mustVol(t, "clone", "db", "test-db", "--snapshot", "nightly")
	d.mustVol(t, "create", "db2", "--from", "db", "--from-snapshot", "nightly")
	rows := tableRows(d.mustVol(t, "snapshot", "ls", "db"))
	if len(rows) != 2 || strings.Join(rows[0], " ") != "NAME CREATED SIZE ALLOCATED CLONES" || rows[1][0] != "nightly" ||
		rows[1][2] != "64MiB" || strings.Join(rows[1][4:], " ") != "db2, test-db" {
		t.Fatalf("snapshot ls: %q", rows)
	}
	out := d.mustVol(t, "inspect", "test-db")
	if !strings.Contains(out, "From:        db@nightly") {
		t.Fatalf("inspect of a clone of a snapshot:\n%s", out)
	}
	out = d.mustVol(t, "inspect", "db")
	if !strings.Contains(out, "Snapshots:   1") || !regexpMatch(`\n  NAME +CREATED +SIZE +ALLOCATED +CLONES\n  nightly +\S+Z +64MiB `, out) {
		t.Fatalf("inspect of a volume with a snapshot:\n%s", out)
	}
	_, err = d.vol(t, "snapshot", "rm", "db", "nightly")
	wantErr(t, err, `snapshot "nightly" of volume "db" is in use`, `"db2"`, `"test-db"`)
	if _, err := d.API.Attach(context.Background(), "db", "web1", api.ModeRW); err != nil {
		t.Fatal(err)
	}
	_, err = d.vol(t, "rollback", "db", "nightly")
	wantErr(t, err, `"web1"`)
	if err := d.API.Detach(context.Background(), "db", "web1"); err != nil {
		t.Fatal(err)
	}
	if out := d.mustVol(t, "rollback", "db", "nightly"); out != "db@nightly\n" {
		t.Fatalf("rollback printed %q", out)
	}
	d.mustVol(t, "rm", "test-db")
	d.mustVol(t, "rm", "db2")
	if out := d.mustVol(t, "snapshot", "rm", "db", "nightly"); out != "db@nightly\n" {
		t.Fatalf("snapshot rm printed %q", out)
	}
	if rows := tableRows(d.mustVol(t, "snapshot", "ls", "db")); len(rows) != 1 {
		t.Fatalf("snapshot ls after rm: %q", rows)
	}
}
