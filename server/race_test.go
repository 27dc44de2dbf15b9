package server

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/netvol/netvol/server/api"

	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/state"
)

// Many nodes attach read-write at once: exactly one wins, the others get
// a conflict naming it.
func TestConcurrentAttach(t *testing.T) {
	s, _ := newService(t)
	mustCreate(t, s, "v", 1<<20, "")
	nodes := []string{"n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7"}
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() { _, errs[i] = s.Attach(bg, "v", api.AttachRequest{Node: n, Mode: "rw"}) })
	}
	wg.Wait()
	var winner string
	for i, err := range errs {
		if err == nil {
			if winner != "" {
				t.Fatalf("both %s and %s attached rw", winner, nodes[i])
			}
			winner = nodes[i]
		}
	}
	for _, err := range errs {
		var ce *state.ConflictError
		if err != nil && (!errors.As(err, &ce) || ce.Holder != winner) {
			t.Fatalf("loser got %v, want a conflict naming %s", err, winner)
		}
	}
}

// A file at a volume's image path that the registry does not know (it
// appeared after the start-up sweep) is never replaced by a create.
func TestCreateNeverReplacesAFile(t *testing.T) {
	s, _ := newService(t)
	path := filepath.Join(s.dir, "x.qcow2")
	os.WriteFile(path, []byte("precious"), 0o600)
	_, err := s.CreateVolume(bg, api.CreateRequest{Name: "x", Size: 1 << 20})
	wantErr(t, err, state.ErrExists)
	if data, _ := os.ReadFile(path); string(data) != "precious" {
		t.Fatal("create replaced an existing file")
	}
	if _, err := s.GetVolume(bg, "x"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("refused create left a registry entry: %v", err)
	}
	if files := imageFiles(t, s); len(files) != 1 {
		t.Fatalf("files %v", files)
	}
}

// Deleting a volume whose lease lapsed closes the connection that still
// served it.
func TestDeleteFencesLapsedAttachment(t *testing.T) {
	s, clk := newService(t)
	mustCreate(t, s, "v", 1<<20, "")
	g := mustAttach(t, s, "v", "n1", "rw")
	e, err := s.Open(bg, g.Export)
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute)
	if err := s.DeleteVolume(bg, "v"); err != nil {
		t.Fatal(err)
	}
	if !e.Revoked() {
		t.Fatal("export of the deleted volume not revoked")
	}
}

// Attach, connect, I/O and detach race one another under -race; no
// connection survives its detach.
func TestAttachDetachStress(t *testing.T) {
	s, _ := newService(t)
	mustCreate(t, s, "v", 4<<20, "")
	_, sock := serveNBD(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			node := []string{"a", "b", "c", "d"}[w]
			buf := make([]byte, 4096)
			for range 15 {
				g, err := s.Attach(ctx, "v", api.AttachRequest{Node: node, Mode: "ro"})
				if err != nil {
					t.Error(err)
					return
				}
				c, err := nbd.Dial(ctx, "unix", sock, nbd.ClientOptions{ExportName: g.Export})
				if err != nil {
					t.Error(err)
					return
				}
				if err := c.Read(ctx, buf, int64(w)*4096); err != nil {
					t.Error(err)
				}
				if err := s.Detach(ctx, "v", node); err != nil {
					t.Error(err)
				}
				if err := c.Read(ctx, buf, 0); err == nil {
					t.Error("read after detach succeeded")
				}
				c.Close()
				if conn, err := net.Dial("unix", sock); err == nil {
					if _, _, err := nbd.Negotiate(ctx, conn, nbd.ClientOptions{ExportName: g.Export}); err == nil {
						t.Error("a detached export negotiated")
					}
					conn.Close()
				}
			}
		})
	}
	wg.Wait()
}
