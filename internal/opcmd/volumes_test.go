package opcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/internal/optest"
	"github.com/netvol/netvol/volume/backend"
)

// fakeStore is a volumeStore in memory.
type fakeStore struct {
	typ     string
	vols    map[string]VolumeInfo
	err     error // every call fails with it
	removed []string
}

func (s *fakeStore) Type() string  { return s.typ }
func (s *fakeStore) Where() string { return "the fake " + s.typ + " store" }
func (s *fakeStore) List(context.Context) ([]VolumeInfo, error) {
	var out []VolumeInfo
	for _, v := range s.vols {
		out = append(out, v)
	}
	return out, s.err
}

func (s *fakeStore) Get(_ context.Context, name string) (VolumeInfo, error) {
	if s.err != nil {
		return VolumeInfo{}, s.err
	}
	v, ok := s.vols[name]
	if !ok {
		return VolumeInfo{}, backend.ErrNotFound
	}
	return v, nil
}

func (s *fakeStore) Create(context.Context, string, backend.Options) (VolumeInfo, error) {
	return VolumeInfo{}, errors.New("not supported")
}

func (s *fakeStore) Remove(_ context.Context, name string) error {
	s.removed = append(s.removed, name)
	return s.err
}

func TestRemoveOne(t *testing.T) {
	ctx := context.Background()
	nbdS := &fakeStore{typ: "nbd", vols: map[string]VolumeInfo{"both": {Name: "both", Type: "nbd"}, "blk": {Name: "blk", Type: "nbd"}}}
	nfsS := &fakeStore{typ: "nfs", vols: map[string]VolumeInfo{"both": {Name: "both", Type: "nfs"},
		"dir": {Name: "dir", Type: "nfs", Export: "nas:/srv/vols/dir"}}}
	stores := []volumeStore{nbdS, nfsS}
	_, err := removeOne(ctx, stores, "both", true)
	optest.WantErr(t, err, `not removing "both"`, "give --type nbd or --type nfs")
	_, err = removeOne(ctx, stores, "dir", false)
	optest.WantErr(t, err, `not removing nfs volume "dir" (nas:/srv/vols/dir)`, "--force")
	if s, err := removeOne(ctx, stores, "dir", true); err != nil || s != nfsS {
		t.Fatalf("rm --force dir: %v", err)
	}
	if s, err := removeOne(ctx, stores, "blk", false); err != nil || s != nbdS {
		t.Fatalf("rm blk: %v", err)
	}
	_, err = removeOne(ctx, stores, "none", false)
	optest.WantErr(t, err, `no volume "none" on the fake nbd store or the fake nfs store`)
	if !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("%v is not ErrNotFound", err)
	}
	if len(nbdS.removed) != 1 || len(nfsS.removed) != 1 {
		t.Fatalf("removed %v and %v", nbdS.removed, nfsS.removed)
	}
	// A store that cannot answer: the name might be there; nothing removed.
	down := &fakeStore{typ: "nfs", err: errors.New("nfs server down")}
	_, err = removeOne(ctx, []volumeStore{nbdS, down}, "none", true)
	optest.WantErr(t, err, "nfs server down")
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
	if err := printVolumeTable(&buf, []VolumeInfo{v}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if rows := optest.TableRows(buf.String()); strings.Join(rows[1], " ") != "dir nfs nas - - - 2025-01-02 03:04" {
		t.Fatalf("table: %q", rows)
	}
	buf.Reset()
	printInspect(&buf, []VolumeInfo{v}, time.Now())
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
