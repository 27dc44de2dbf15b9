package server

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netvol/netvol/server/api"

	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/state"
)

// clock is a settable wall clock for leases.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newService(t *testing.T) (*Service, *clock) {
	t.Helper()
	clk := &clock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	s, err := Open(Config{DataDir: t.TempDir(), MaxVolumeSize: 1 << 30, LeaseTTL: 15 * time.Second, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, clk
}

var bg = context.Background()

func mustCreate(t *testing.T, s *Service, name string, size int64, from string) api.Volume {
	t.Helper()
	v, err := s.CreateVolume(bg, api.CreateRequest{Name: name, Size: api.Size(size), From: from})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustAttach(t *testing.T, s *Service, vol, node, mode string) api.Grant {
	t.Helper()
	g, err := s.Attach(bg, vol, api.AttachRequest{Node: node, Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
}

func imageFiles(t *testing.T, s *Service) []string {
	t.Helper()
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestCreateGetListDelete(t *testing.T) {
	s, clk := newService(t)
	v := mustCreate(t, s, "data", 64<<20, "")
	if v.Name != "data" || v.Size != 64<<20 || v.From != "" || !v.CreatedAt.Equal(clk.Now()) || v.Allocated <= 0 {
		t.Fatalf("created %+v", v)
	}
	mustCreate(t, s, "a.b_c-1", 1<<20, "")
	if got, err := s.GetVolume(bg, "data"); err != nil || got.Size != 64<<20 {
		t.Fatalf("get: %+v, %v", got, err)
	}
	list, err := s.ListVolumes(bg)
	if err != nil || len(list) != 2 || list[0].Name != "a.b_c-1" || list[1].Name != "data" {
		t.Fatalf("list: %+v, %v", list, err)
	}
	_, err = s.CreateVolume(bg, api.CreateRequest{Name: "data", Size: 1 << 20})
	wantErr(t, err, state.ErrExists)
	if err := s.DeleteVolume(bg, "data"); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetVolume(bg, "data")
	wantErr(t, err, state.ErrNotFound)
	wantErr(t, s.DeleteVolume(bg, "data"), state.ErrNotFound)
	if files := imageFiles(t, s); len(files) != 1 || files[0] != "a.b_c-1.qcow2" {
		t.Fatalf("image files %v", files)
	}
}

func TestCreateRefused(t *testing.T) {
	s, _ := newService(t)
	for _, req := range []api.CreateRequest{
		{Name: "", Size: 1 << 20},
		{Name: ".hidden", Size: 1 << 20},
		{Name: "a/b", Size: 1 << 20},
		{Name: "../x", Size: 1 << 20},
		{Name: strings.Repeat("a", 129), Size: 1 << 20},
		{Name: "ok", Size: 0},
		{Name: "ok", Size: -1},
		{Name: "ok", Size: 1<<30 + 512}, // over MaxVolumeSize
		{Name: "ok", Size: 1000},        // not a multiple of 512
	} {
		_, err := s.CreateVolume(bg, req)
		wantErr(t, err, state.ErrInvalid)
	}
	_, err := s.CreateVolume(bg, api.CreateRequest{Name: "clone", From: "missing"})
	wantErr(t, err, state.ErrNotFound)
	if files := imageFiles(t, s); len(files) != 0 {
		t.Fatalf("refused creates left files %v", files)
	}
}

func TestClones(t *testing.T) {
	s, _ := newService(t)
	mustCreate(t, s, "base", 8<<20, "")
	mustAttach(t, s, "base", "n1", "rw")
	c := mustCreate(t, s, "c", 0, "base") // of a volume in use
	if c.Size != 8<<20 || c.From != "base" {
		t.Fatalf("clone %+v", c)
	}
	_, err := s.CreateVolume(bg, api.CreateRequest{Name: "small", From: "base", Size: 1 << 20})
	wantErr(t, err, state.ErrInvalid)
	_, err = s.CreateVolume(bg, api.CreateRequest{Name: "c2", From: "base", FromSnapshot: "nope"})
	wantErr(t, err, state.ErrNotFound)
	_, err = s.CreateVolume(bg, api.CreateRequest{Name: "c2", FromSnapshot: "nope"})
	wantErr(t, err, state.ErrInvalid)
	// The parent goes on: its clone reads a frozen layer.
	if _, err := s.Renew(bg, "base", "n1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Detach(bg, "base", "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ResizeVolume(bg, "base", 16<<20); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.DeleteVolume(bg, "base"), state.ErrInUse)
	mustAttach(t, s, "c", "n2", "rw")
	wantErr(t, s.DeleteVolume(bg, "c"), state.ErrInUse)
	if err := s.Detach(bg, "c", "n2"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVolume(bg, "c"); err != nil {
		t.Fatal(err)
	}
	// The clone's hidden snapshot went with it: base has one image again.
	if err := s.DeleteVolume(bg, "base"); err != nil {
		t.Fatal(err)
	}
	if files := imageFiles(t, s); len(files) != 0 {
		t.Fatalf("files left %v", files)
	}
}

func TestResize(t *testing.T) {
	s, _ := newService(t)
	mustCreate(t, s, "v", 4<<20, "")
	v, err := s.ResizeVolume(bg, "v", 8<<20)
	if err != nil || v.Size != 8<<20 {
		t.Fatalf("resize: %+v, %v", v, err)
	}
	_, err = s.ResizeVolume(bg, "v", 4<<20)
	wantErr(t, err, state.ErrInvalid)
	_, err = s.ResizeVolume(bg, "v", 2<<30)
	wantErr(t, err, state.ErrInvalid)
	_, err = s.ResizeVolume(bg, "nope", 8<<20)
	wantErr(t, err, state.ErrNotFound)
	if e, err := s.Open(bg, mustAttach(t, s, "v", "n1", "rw").Export); err != nil || e.Backend.Size() != 8<<20 {
		t.Fatalf("export after resize: %v", err)
	}
}

func TestAttachConflictAndTakeover(t *testing.T) {
	s, clk := newService(t)
	mustCreate(t, s, "v", 4<<20, "")
	g1 := mustAttach(t, s, "v", "n1", "rw")
	if !strings.HasPrefix(g1.Export, "v.") || len(g1.Export) != len("v.")+43 || g1.Generation != 1 ||
		!g1.Expires.Equal(clk.Now().Add(15*time.Second)) {
		t.Fatalf("grant %+v", g1)
	}
	e1, err := s.Open(bg, g1.Export)
	if err != nil || e1.ReadOnly {
		t.Fatalf("open: %v", err)
	}
	_, err = s.Attach(bg, "v", api.AttachRequest{Node: "n2", Mode: "rw"})
	var ce *state.ConflictError
	if !errors.As(err, &ce) || ce.Holder != "n1" || !strings.Contains(err.Error(), `"n1"`) {
		t.Fatalf("second rw attach: %v", err)
	}
	_, err = s.Attach(bg, "v", api.AttachRequest{Node: "n2", Mode: "ro"})
	wantErr(t, err, state.ErrConflict)
	// Renewed leases hold; a lapsed one is taken over and fenced.
	clk.Add(10 * time.Second)
	if l, err := s.Renew(bg, "v", "n1"); err != nil || !l.Expires.Equal(clk.Now().Add(15*time.Second)) {
		t.Fatalf("renew: %+v, %v", l, err)
	}
	clk.Add(10 * time.Second)
	_, err = s.Attach(bg, "v", api.AttachRequest{Node: "n2", Mode: "rw"})
	wantErr(t, err, state.ErrConflict)
	clk.Add(6 * time.Second)
	if _, err := s.Open(bg, g1.Export); !errors.Is(err, nbd.ErrUnknownExport) {
		t.Fatalf("open of an expired lease: %v", err)
	}
	g2 := mustAttach(t, s, "v", "n2", "rw")
	if g2.Generation != 2 || !e1.Revoked() {
		t.Fatalf("takeover: %+v, old export revoked %v", g2, e1.Revoked())
	}
	_, err = s.Renew(bg, "v", "n1")
	wantErr(t, err, state.ErrNotFound)
	if _, err := s.Open(bg, g1.Export); !errors.Is(err, nbd.ErrUnknownExport) {
		t.Fatalf("open of a taken-over export: %v", err)
	}
	e2, err := s.Open(bg, g2.Export)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := s.Open(bg, g2.Export); again != e2 {
		t.Fatal("Open handed out a second Export for one attachment")
	}
	if err := s.Detach(bg, "v", "n2"); err != nil || !e2.Revoked() {
		t.Fatalf("detach: %v, revoked %v", err, e2.Revoked())
	}
	wantErr(t, s.Detach(bg, "v", "n2"), state.ErrNotFound)
	if _, err := s.Open(bg, g2.Export); !errors.Is(err, nbd.ErrUnknownExport) {
		t.Fatalf("open of a detached export: %v", err)
	}
}

func TestAttachReadOnlyAndRefusals(t *testing.T) {
	s, _ := newService(t)
	mustCreate(t, s, "v", 4<<20, "")
	r1 := mustAttach(t, s, "v", "n1", "ro")
	mustAttach(t, s, "v", "n2", "ro")
	_, err := s.Attach(bg, "v", api.AttachRequest{Node: "n3", Mode: "rw"})
	wantErr(t, err, state.ErrConflict)
	e, err := s.Open(bg, r1.Export)
	if err != nil || !e.ReadOnly {
		t.Fatalf("ro export: %v", err)
	}
	for _, req := range []api.AttachRequest{{Node: "", Mode: "rw"}, {Node: "n/1", Mode: "rw"}, {Node: "n1", Mode: "RW"}, {Node: "n1"}} {
		_, err := s.Attach(bg, "v", req)
		wantErr(t, err, state.ErrInvalid)
	}
	_, err = s.Attach(bg, "missing", api.AttachRequest{Node: "n1", Mode: "rw"})
	wantErr(t, err, state.ErrNotFound)
	tok := r1.Export[len("v."):]
	for _, name := range []string{"", "v", "v.", "w." + tok, "v." + tok + "x", "v.v." + tok, r1.Export[:len(r1.Export)-1]} {
		if _, err := s.Open(bg, name); !errors.Is(err, nbd.ErrUnknownExport) {
			t.Errorf("Open(%q): %v", name, err)
		}
	}
}

// An image whose registry commit never happened (crash) and a temporary
// image are removed when the service opens; registered images stay.
func TestSweep(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, "keep", 1<<20, "")
	g := mustAttach(t, s, "keep", "n1", "rw")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"orphan.qcow2", "orphan.qcow2.wal", ".tmp-123.qcow2", "keep.qcow2.wal"} {
		os.WriteFile(filepath.Join(dir, volumesDir, n), []byte("x"), 0o600)
	}
	os.WriteFile(filepath.Join(dir, volumesDir, "notes.txt"), []byte("x"), 0o600)
	s, err = Open(Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// keep.qcow2.wal is its intent log (garbage here, so ignored).
	if files := imageFiles(t, s); strings.Join(files, ",") != "keep.qcow2,keep.qcow2.wal,notes.txt" {
		t.Fatalf("after sweep: %v", files)
	}
	// The attachment survives the restart and its export opens again.
	if _, err := s.Open(bg, g.Export); err != nil {
		t.Fatal(err)
	}
}
