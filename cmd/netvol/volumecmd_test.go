package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/server"
	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume/backend"
)

const vcToken = "op-t0ken"

// vcDaemon is a storage daemon's API in process, with an NBD listener
// whose address it reports (nothing serves NBD on it: connecting is all
// the doctor does).
type vcDaemon struct {
	url       string
	api       *api.Client
	nbdL      net.Listener
	tokenFile string
}

func startVCDaemon(t *testing.T) *vcDaemon {
	t.Helper()
	svc, err := server.Open(server.Config{DataDir: t.TempDir(), MaxVolumeSize: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	nbdL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nbdL.Close() })
	log := logrus.New()
	log.SetOutput(io.Discard)
	srv := httptest.NewServer(server.NewAPI(svc, vcToken, log, server.WithNBDAddr(nbdL.Addr())))
	t.Cleanup(srv.Close)
	api, err := api.New(srv.URL, vcToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(vcToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &vcDaemon{url: srv.URL, api: api, nbdL: nbdL, tokenFile: tokenFile}
}

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
func (d *vcDaemon) vol(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return netvol(t, append([]string{"volume", "--server", d.url, "--token-file", d.tokenFile}, args...)...)
}

func (d *vcDaemon) mustVol(t *testing.T, args ...string) string {
	t.Helper()
	out, err := d.vol(t, args...)
	if err != nil {
		t.Fatalf("netvol volume %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

// tableRows splits a table into rows of fields, header first.
func tableRows(out string) [][]string {
	var rows [][]string
	for line := range strings.Lines(strings.TrimSpace(out)) {
		rows = append(rows, strings.Fields(line))
	}
	return rows
}

func TestVolumeCreateLsInspect(t *testing.T) {
	d := startVCDaemon(t)
	if out := d.mustVol(t, "create", "db", "--size", "1G"); out != "db\n" {
		t.Fatalf("create printed %q", out)
	}
	var made volumeInfo
	out := d.mustVol(t, "create", "web", "-o", "size=512M", "--json")
	if err := json.Unmarshal([]byte(out), &made); err != nil || made.Name != "web" || made.Size != 512<<20 || made.Type != "nbd" {
		t.Fatalf("create --json: %v %+v\n%s", err, made, out)
	}
	d.mustVol(t, "clone", "db", "db2")
	rows := tableRows(d.mustVol(t, "ls"))
	want := [][]string{{"NAME", "TYPE", "SIZE", "ALLOCATED", "ATTACHED", "CREATED"},
		{"db", "nbd", "1GiB"}, {"db2", "nbd", "1GiB"}, {"web", "nbd", "512MiB"}}
	if len(rows) != len(want) {
		t.Fatalf("ls: %q", rows)
	}
	for i, w := range want {
		if strings.Join(rows[i][:len(w)], " ") != strings.Join(w, " ") {
			t.Errorf("ls row %d: %q, want %q...", i, rows[i], w)
		}
		if i > 0 && (len(rows[i]) != 7 || rows[i][4] != "-") { // CREATED is two fields
			t.Errorf("ls row %d: %q, want 7 fields, not attached", i, rows[i])
		}
	}
	var list []volumeInfo
	if err := json.Unmarshal([]byte(d.mustVol(t, "ls", "--json")), &list); err != nil || len(list) != 3 || list[1].From != "db" {
		t.Fatalf("ls --json: %v %+v", err, list)
	}
	out = d.mustVol(t, "inspect", "db2")
	for _, s := range []string{"Name:        db2", "Type:        nbd", "Server:      " + d.url, "Size:        1GiB (1073741824 bytes)",
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
	g, err := d.api.Attach(ctx, "data", "web1", api.ModeRW)
	if err != nil {
		t.Fatal(err)
	}
	rows := tableRows(d.mustVol(t, "ls"))
	if len(rows) != 2 || rows[1][4] != "web1(rw)" {
		t.Fatalf("ls of an attached volume: %q", rows)
	}
	out := d.mustVol(t, "inspect", "data")
	if !strings.Contains(out, "Attachments: 1") || !strings.Contains(out, "NODE  MODE  GENERATION  EXPIRES") ||
		!regexpMatch(`\n  web1  rw    1 +\S+Z \(in \d+s\)\n`, out) {
		t.Fatalf("inspect of an attached volume:\n%s", out)
	}
	var got []volumeInfo
	if err := json.Unmarshal([]byte(d.mustVol(t, "inspect", "data", "--json")), &got); err != nil || len(got) != 1 ||
		len(got[0].Attachments) != 1 || got[0].Attachments[0].Generation != g.Generation || !got[0].Attachments[0].Expires.Equal(g.Expires) {
		t.Fatalf("inspect --json: %v %+v", err, got)
	}
	_, err = d.vol(t, "rm", "data")
	wantErr(t, err, `removing nbd volume "data"`, d.url, `attached by node "web1"`, "stop the containers")
	_, err = d.vol(t, "resize", "data", "128M")
	wantErr(t, err, `resizing nbd volume "data"`, `attached by node "web1"`, "then retry")
	if err := d.api.Detach(ctx, "data", "web1"); err != nil {
		t.Fatal(err)
	}
	if out := d.mustVol(t, "resize", "data", "+64M"); !strings.Contains(out, "data: 64MiB -> 128MiB") {
		t.Fatalf("resize printed %q", out)
	}
	_, err = d.vol(t, "resize", "data", "100M")
	wantErr(t, err, "has 128MiB already", "only grow")
	var v volumeInfo
	if err := json.Unmarshal([]byte(d.mustVol(t, "resize", "data", "1G", "--json")), &v); err != nil || v.Size != 1<<30 {
		t.Fatalf("resize --json: %v %+v", err, v)
	}
	var removed []removedVolume
	if err := json.Unmarshal([]byte(d.mustVol(t, "rm", "data", "--json")), &removed); err != nil || len(removed) != 1 || removed[0].Type != "nbd" {
		t.Fatalf("rm --json: %v %+v", err, removed)
	}
	_, err = d.vol(t, "inspect", "data")
	wantErr(t, err, `no volume "data" on the storage daemon `+d.url, "netvol volume ls")
}

func TestVolumeCloneDependents(t *testing.T) {
	d := startVCDaemon(t)
	d.mustVol(t, "create", "base", "--size", "32M")
	d.mustVol(t, "clone", "base", "big", "--size", "64M")
	if v, err := d.api.GetVolume(context.Background(), "big"); err != nil || v.Size != 64<<20 || v.From != "base" {
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
	if vols, err := d.api.ListVolumes(context.Background()); err != nil || len(vols) != 0 {
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
	_, err = netvol(t, "volume", "ls", "--server", d.url, "--token", "wrong")
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

// fakeStore is a volumeStore in memory.
type fakeStore struct {
	typ     string
	vols    map[string]volumeInfo
	err     error // every call fails with it
	removed []string
}

func (s *fakeStore) Type() string  { return s.typ }
func (s *fakeStore) Where() string { return "the fake " + s.typ + " store" }
func (s *fakeStore) List(context.Context) ([]volumeInfo, error) {
	var out []volumeInfo
	for _, v := range s.vols {
		out = append(out, v)
	}
	return out, s.err
}

func (s *fakeStore) Get(_ context.Context, name string) (volumeInfo, error) {
	if s.err != nil {
		return volumeInfo{}, s.err
	}
	v, ok := s.vols[name]
	if !ok {
		return volumeInfo{}, backend.ErrNotFound
	}
	return v, nil
}

func (s *fakeStore) Create(context.Context, string, backend.Options) (volumeInfo, error) {
	return volumeInfo{}, errors.New("not supported")
}

func (s *fakeStore) Remove(_ context.Context, name string) error {
	s.removed = append(s.removed, name)
	return s.err
}

func TestRemoveOne(t *testing.T) {
	ctx := context.Background()
	nbdS := &fakeStore{typ: "nbd", vols: map[string]volumeInfo{"both": {Name: "both", Type: "nbd"}, "blk": {Name: "blk", Type: "nbd"}}}
	nfsS := &fakeStore{typ: "nfs", vols: map[string]volumeInfo{"both": {Name: "both", Type: "nfs"},
		"dir": {Name: "dir", Type: "nfs", Export: "nas:/srv/vols/dir"}}}
	stores := []volumeStore{nbdS, nfsS}
	_, err := removeOne(ctx, stores, "both", true)
	wantErr(t, err, `not removing "both"`, "give --type nbd or --type nfs")
	_, err = removeOne(ctx, stores, "dir", false)
	wantErr(t, err, `not removing nfs volume "dir" (nas:/srv/vols/dir)`, "--force")
	if s, err := removeOne(ctx, stores, "dir", true); err != nil || s != nfsS {
		t.Fatalf("rm --force dir: %v", err)
	}
	if s, err := removeOne(ctx, stores, "blk", false); err != nil || s != nbdS {
		t.Fatalf("rm blk: %v", err)
	}
	_, err = removeOne(ctx, stores, "none", false)
	wantErr(t, err, `no volume "none" on the fake nbd store or the fake nfs store`)
	if !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("%v is not ErrNotFound", err)
	}
	if len(nbdS.removed) != 1 || len(nfsS.removed) != 1 {
		t.Fatalf("removed %v and %v", nbdS.removed, nfsS.removed)
	}
	// A store that cannot answer: the name might be there; nothing removed.
	down := &fakeStore{typ: "nfs", err: errors.New("nfs server down")}
	_, err = removeOne(ctx, []volumeStore{nbdS, down}, "none", true)
	wantErr(t, err, "nfs server down")
	if errors.Is(err, backend.ErrNotFound) {
		t.Errorf("%v claims the volume does not exist", err)
	}
}

func TestNFSInfoAndTable(t *testing.T) {
	v := nfsInfo(backend.Volume{Name: "dir", CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Status: map[string]string{"type": "nfs", "server": "nas", "export": "nas:/srv/vols/dir", "mode": "0750", "uid": "1000", "gid": "100"}})
	if v.Type != "nfs" || v.Export != "nas:/srv/vols/dir" || *v.UID != 1000 || *v.GID != 100 || v.Mode != "0750" {
		t.Fatalf("nfsInfo: %+v", v)
	}
	var buf bytes.Buffer
	if err := printVolumeTable(&buf, []volumeInfo{v}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if rows := tableRows(buf.String()); strings.Join(rows[1], " ") != "dir nfs - - - 2025-01-02 03:04" {
		t.Fatalf("table: %q", rows)
	}
	buf.Reset()
	printInspect(&buf, []volumeInfo{v}, time.Now())
	for _, s := range []string{"Export:      nas:/srv/vols/dir", "Mode:        0750", "Owner:       uid 1000, gid 100", "Modified:    2025-01-02T03:04:05Z"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("inspect lacks %q:\n%s", s, buf.String())
		}
	}
	b, _ := json.Marshal(v)
	if strings.Contains(string(b), "attachments") || !strings.Contains(string(b), `"uid":1000`) {
		t.Errorf("nfs JSON: %s", b)
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
