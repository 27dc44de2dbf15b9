package server

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/server/api"

	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/state"
)

// fill returns n bytes of b.
func fill(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// dialExport connects our NBD client to export.
func dialExport(t *testing.T, sock, export string) *nbd.Client {
	t.Helper()
	cl, err := nbd.Dial(bg, "unix", sock, nbd.ClientOptions{ExportName: export})
	if err != nil {
		t.Fatalf("dial %s: %v", export, err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// readAll reads 64 KiB at 0 over a fresh connection to export and checks
// they are all want.
func readAll(t *testing.T, sock, export string, want byte) {
	t.Helper()
	cl := dialExport(t, sock, export)
	buf := make([]byte, 64<<10)
	ctx, cancel := context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	if err := cl.Read(ctx, buf, 0); err != nil {
		t.Fatalf("read %s: %v", export, err)
	}
	if !bytes.Equal(buf, fill(want, len(buf))) {
		t.Errorf("%s reads %#x..., want %#x", export, buf[0], want)
	}
}

// A clone made while the source's read-write lease has lapsed (its holder
// partitioned or its plugin down, the device still connected) fences that
// attachment in the clone's transaction: the old connection is closed,
// the lease is not renewed, the export is not served again, and the clone
// reads the source as it was when cloned, including writes the source's
// shared image handle had not flushed.
func TestAPICloneFencesLapsedWriter(t *testing.T) {
	c, s, clk := newAPI(t)
	_, sock := serveNBD(t, s)
	c.must(201, "POST", "/v1/volumes", `{"name":"base","size":"8M"}`, nil)
	var g api.Grant
	c.must(200, "POST", "/v1/volumes/base/attachments", `{"node":"n1","mode":"rw"}`, &g)
	cl := dialExport(t, sock, g.Export)
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	if err := cl.Write(ctx, fill(0xaa, 64<<10), 0, 0); err != nil { // no flush: the clone must flush
		t.Fatal(err)
	}

	clk.Add(16 * time.Second) // n1's lease lapses; its connection stays
	c.must(201, "POST", "/v1/volumes", `{"name":"clone","from":"base"}`, nil)

	// (a) The old connection no longer writes the source.
	if err := cl.Write(ctx, fill(0xcc, 64<<10), 0, 0); err == nil {
		t.Error("the lapsed writer's connection still writes the clone's source")
	}
	// (b) Its lease is not renewed: the attachment is gone.
	if st, e := c.do("POST", "/v1/volumes/base/attachments/n1/renew", "", nil); st != 404 || e.Code != api.CodeNotFound {
		t.Errorf("renew of the lapsed writer after the clone: %d %+v, want 404 not_found", st, e)
	}
	// (c) Its export name is not served again, nor is a new writer let in.
	if cl2, err := nbd.Dial(ctx, "unix", sock, nbd.ClientOptions{ExportName: g.Export}); err == nil {
		cl2.Close()
		t.Error("the lapsed writer's export was served again after the clone")
	}
	if st, e := c.do("POST", "/v1/volumes/base/attachments", `{"node":"n1","mode":"rw"}`, nil); st != 409 || e.Code != api.CodeInUse || !strings.Contains(e.Error, `"clone"`) {
		t.Errorf("a new writer of the clone's source: %d %+v, want 409 in_use naming the clone", st, e)
	}
	var v api.Volume
	c.must(200, "GET", "/v1/volumes/base", "", &v)
	if len(v.Attachments) != 0 {
		t.Errorf("source still has attachments %+v", v.Attachments)
	}
	c.do("DELETE", "/v1/volumes/base/attachments/n1", "", nil) // were it still recorded, readers would conflict

	// (d) The clone and the source read what the source held at the clone.
	var cg, bg api.Grant
	c.must(200, "POST", "/v1/volumes/clone/attachments", `{"node":"n2","mode":"ro"}`, &cg)
	readAll(t, sock, cg.Export, 0xaa)
	c.must(200, "POST", "/v1/volumes/base/attachments", `{"node":"n3","mode":"ro"}`, &bg)
	readAll(t, sock, bg.Export, 0xaa)
}

// A live read-write attachment still refuses the clone, naming its holder,
// and leaves the writer alone.
func TestAPICloneRefusedWhileWriterLive(t *testing.T) {
	c, s, clk := newAPI(t)
	_, sock := serveNBD(t, s)
	c.must(201, "POST", "/v1/volumes", `{"name":"base","size":"8M"}`, nil)
	var g api.Grant
	c.must(200, "POST", "/v1/volumes/base/attachments", `{"node":"n1","mode":"rw"}`, &g)
	cl := dialExport(t, sock, g.Export)
	clk.Add(14 * time.Second)
	msg := c.refused(409, api.CodeInUse, "POST", "/v1/volumes", `{"name":"clone","from":"base"}`)
	if !strings.Contains(msg, `"n1"`) {
		t.Fatalf("refusal does not name the holder: %q", msg)
	}
	c.refused(404, api.CodeNotFound, "GET", "/v1/volumes/clone", "")
	// base.qcow2 and, while it is open, its intent log.
	if files := imageFiles(t, s); strings.Join(files, ",") != "base.qcow2,base.qcow2.wal" {
		t.Fatalf("refused clone left files %v", files)
	}
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	if err := cl.Write(ctx, fill(0x11, 4096), 0, 0); err != nil {
		t.Fatalf("the live writer was cut off by a refused clone: %v", err)
	}
	c.must(200, "POST", "/v1/volumes/base/attachments/n1/renew", "", nil)
}

// The same sequence at the service: the clone revokes the lapsed writer's
// export and removes its attachment; renewing it and opening its export
// are refused, and so is a new writer.
func TestCloneRevokesLapsedWriter(t *testing.T) {
	s, clk := newService(t)
	mustCreate(t, s, "base", 8<<20, "")
	w := mustAttach(t, s, "base", "n1", "rw")
	e, err := s.Open(bg, w.Export)
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(16 * time.Second)
	mustCreate(t, s, "clone", 0, "base")
	if !e.Revoked() {
		t.Error("the lapsed writer's export was not revoked by the clone")
	}
	if _, err := s.Renew(bg, "base", "n1"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("renew of the lapsed writer after the clone: %v, want not found", err)
	}
	if _, err := s.Open(bg, w.Export); !errors.Is(err, nbd.ErrUnknownExport) {
		t.Errorf("open of the lapsed writer's export after the clone: %v", err)
	}
	_, err = s.Attach(bg, "base", api.AttachRequest{Node: "n1", Mode: "rw"})
	wantErr(t, err, state.ErrInUse)
	mustAttach(t, s, "base", "n2", "ro")

	// A live writer refuses the clone, naming it, and keeps its export.
	mustCreate(t, s, "other", 8<<20, "")
	w = mustAttach(t, s, "other", "n1", "rw")
	if e, err = s.Open(bg, w.Export); err != nil {
		t.Fatal(err)
	}
	_, err = s.CreateVolume(bg, api.CreateRequest{Name: "clone2", From: "other"})
	var inUse *state.InUseError
	if !errors.As(err, &inUse) || len(inUse.Nodes) != 1 || inUse.Nodes[0] != "n1" {
		t.Fatalf("clone of a live writer's volume: %v", err)
	}
	if e.Revoked() {
		t.Fatal("a refused clone revoked the live writer's export")
	}
	if _, err := s.Renew(bg, "other", "n1"); err != nil {
		t.Fatal(err)
	}
}

// A read-write attachment of a volume with clones that is still recorded
// (made before cloning fenced writers) is neither renewed (in_use) nor
// served, until detached; a read-only one is.
func TestRecordedWriterOfCloneSourceRefused(t *testing.T) {
	c, s, _ := newAPI(t)
	mustCreate(t, s, "base", 8<<20, "")
	mustCreate(t, s, "clone", 0, "base")
	const token = "recorded-before-the-fix"
	_, _, err := s.reg.AddAttachment("base", state.Attachment{Node: "n1", Mode: state.ModeRW,
		Expires: s.cfg.Now().Add(time.Minute), Export: "base." + token, TokenHash: state.HashToken(token)}, s.cfg.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Renew(bg, "base", "n1")
	wantErr(t, err, state.ErrInUse)
	if !strings.Contains(err.Error(), `"n1"`) || !strings.Contains(err.Error(), `"clone"`) {
		t.Errorf("renew refusal %q does not name the node and the clone", err)
	}
	c.refused(409, api.CodeInUse, "POST", "/v1/volumes/base/attachments/n1/renew", "")
	if _, err := s.Open(bg, "base."+token); !errors.Is(err, nbd.ErrUnknownExport) {
		t.Errorf("open of a read-write export of a clone source: %v", err)
	}
	if err := s.Detach(bg, "base", "n1"); err != nil {
		t.Fatal(err)
	}
	r := mustAttach(t, s, "base", "n2", "ro")
	if e, err := s.Open(bg, r.Export); err != nil || !e.ReadOnly {
		t.Fatalf("read-only export of a clone source: %v", err)
	}
	if _, err := s.Renew(bg, "base", "n2"); err != nil {
		t.Fatal(err)
	}
}
