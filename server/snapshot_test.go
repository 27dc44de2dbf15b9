package server

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/server/api"
)

// openAPI opens a service and its API on dir, as a restarted daemon would.
func openAPI(t *testing.T, dir string, clk *clock) (*apiClient, *Service, string) {
	t.Helper()
	s, err := Open(Config{DataDir: dir, MaxVolumeSize: 1 << 30, LeaseTTL: 15 * time.Second, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	log := logrus.New()
	log.SetOutput(io.Discard)
	srv := httptest.NewServer(NewAPI(s, testToken, log))
	t.Cleanup(srv.Close)
	_, sock := serveNBD(t, s)
	return &apiClient{t: t, url: srv.URL, token: testToken}, s, sock
}

// expectAt reads n bytes at off over cl and checks they are all want.
func expectAt(t *testing.T, cl *nbd.Client, what string, off int64, n int, want byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	buf := make([]byte, n)
	if err := cl.Read(ctx, buf, off); err != nil {
		t.Fatalf("%s: read at %d: %v", what, off, err)
	}
	for i, b := range buf {
		if b != want {
			t.Fatalf("%s: byte %d at %d reads %#x, want %#x", what, i, off, b, want)
		}
	}
}

func writeAt(t *testing.T, cl *nbd.Client, off int64, n int, b byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	if err := cl.Write(ctx, fill(b, n), off, 0); err != nil {
		t.Fatalf("write %#x at %d: %v", b, off, err)
	}
}

// attachRW attaches volume for node and connects to its export.
func attachRW(t *testing.T, c *apiClient, sock, volume, node string) *nbd.Client {
	t.Helper()
	var g api.Grant
	c.must(200, "POST", "/v1/volumes/"+volume+"/attachments", `{"node":"`+node+`","mode":"rw"}`, &g)
	return dialExport(t, sock, g.Export)
}

// checkAllImages runs qemu-img check on every image of the data
// directory and returns their names.
func checkAllImages(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, volumesDir, "*"+imageExt))
	if err != nil || len(files) == 0 {
		t.Fatalf("no images in %s: %v", dir, err)
	}
	var names []string
	for _, f := range files {
		mustRun(t, "qemu-img", "check", "-f", "qcow2", f)
		names = append(names, filepath.Base(f))
	}
	return names
}

// imagePaths maps every volume to its image's path.
func imagePaths(t *testing.T, s *Service) map[string]string {
	t.Helper()
	vols, err := s.reg.ListVolumes()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, v := range vols {
		out[v.Name] = s.path(v.File)
	}
	return out
}

// qemuReads checks with qemu-io that the image at path reads want at off:
// qemu reads the chain of layers as we do.
func qemuReads(t *testing.T, path string, off int64, want byte) {
	t.Helper()
	mustRun(t, "qemu-io", "-r", "-f", "qcow2", "-c", fmt.Sprintf("read -P %d %d 64k", want, off), path)
}

// The sequence over NBD: write A, snapshot, write B on the same
// connection, clone the volume as it is and the snapshot, each reads what
// it must; roll back; delete snapshots with and without clones; qemu-img
// check is clean on every file and qemu reads the chains as we do.
func TestSnapshotsOverNBD(t *testing.T) {
	needTool(t, "qemu-img")
	needTool(t, "qemu-io")
	dir := t.TempDir()
	clk := &clock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	c, s, sock := openAPI(t, dir, clk)
	const A, B, D, off2 = 0xaa, 0xbb, 0xdd, 2 << 20
	c.must(201, "POST", "/v1/volumes", `{"name":"db","size":"8M"}`, nil)
	db := attachRW(t, c, sock, "db", "n1")
	writeAt(t, db, 0, 64<<10, A)
	if err := db.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var sn api.Snapshot
	c.must(201, "POST", "/v1/volumes/db/snapshots", `{"name":"s1"}`, &sn)
	if sn.Name != "s1" || sn.Volume != "db" || sn.Size != 8<<20 || !sn.CreatedAt.Equal(clk.Now()) || sn.Allocated == 0 {
		t.Fatalf("snapshot answer %+v", sn)
	}
	c.refused(409, api.CodeExists, "POST", "/v1/volumes/db/snapshots", `{"name":"s1"}`)
	if msg := c.refused(400, api.CodeInvalid, "POST", "/v1/volumes/db/snapshots", `{"name":"@x"}`); !strings.Contains(msg, "letter or digit") {
		t.Fatalf("bad name refusal does not state the rule: %q", msg)
	}
	c.refused(404, api.CodeNotFound, "POST", "/v1/volumes/nope/snapshots", `{"name":"s"}`)

	// The same connection goes on, without an error or a reconnect.
	writeAt(t, db, 0, 64<<10, B)
	writeAt(t, db, off2, 64<<10, B)
	expectAt(t, db, "db after the snapshot", 0, 64<<10, B)

	c.must(201, "POST", "/v1/volumes", `{"name":"live","from":"db"}`, nil)
	c.must(201, "POST", "/v1/volumes", `{"name":"old","from":"db","from_snapshot":"s1"}`, nil)
	c.refused(404, api.CodeNotFound, "POST", "/v1/volumes", `{"name":"x","from":"db","from_snapshot":"nope"}`)
	writeAt(t, db, 0, 64<<10, D) // after the clones: neither sees it

	live, old := attachRW(t, c, sock, "live", "n2"), attachRW(t, c, sock, "old", "n3")
	expectAt(t, live, "clone of the volume in use", 0, 64<<10, B)
	expectAt(t, live, "clone of the volume in use", off2, 64<<10, B)
	expectAt(t, old, "clone of s1", 0, 64<<10, A)
	expectAt(t, old, "clone of s1", off2, 64<<10, 0)
	expectAt(t, db, "db", 0, 64<<10, D)
	writeAt(t, old, off2, 4096, 0x01) // clones are read-write
	expectAt(t, old, "clone of s1 after a write", off2, 4096, 0x01)
	expectAt(t, db, "db after a clone's write", off2, 4096, B)

	var v api.Volume
	c.must(200, "GET", "/v1/volumes/db", "", &v)
	if len(v.Snapshots) != 1 || v.Snapshots[0].Name != "s1" || fmt.Sprint(v.Snapshots[0].Clones) != "[old]" {
		t.Fatalf("db's snapshots %+v", v.Snapshots)
	}
	c.must(200, "GET", "/v1/volumes/old", "", &v)
	if v.From != "db" || v.FromSnapshot != "s1" {
		t.Fatalf("clone of s1: %+v", v)
	}
	clk.Add(time.Second)
	c.must(201, "POST", "/v1/volumes/db/snapshots", `{"name":"s2"}`, nil) // holds D
	writeAt(t, db, 0, 64<<10, 0x02)
	var list []api.Snapshot
	c.must(200, "GET", "/v1/volumes/db/snapshots", "", &list)
	if len(list) != 2 || list[0].Name != "s1" || list[1].Name != "s2" {
		t.Fatalf("snapshot list %+v", list)
	}

	// Every file is clean and qemu reads the chains as we do.
	paths := imagePaths(t, s)
	s.Close()
	// db's image and 3 layers (s1, the hidden one of "live", s2), the clones'.
	if files := checkAllImages(t, dir); len(files) != 6 {
		t.Fatalf("images: %v", files)
	}
	qemuReads(t, paths["live"], 0, B)
	qemuReads(t, paths["old"], 0, A)
	qemuReads(t, paths["db"], 0, 0x02)
	out := mustRun(t, "qemu-img", "info", "-U", "--backing-chain", paths["db"])
	if n := strings.Count(out, "backing file:"); n != 3 { // db → s2's layer → live's hidden layer → s1's layer
		t.Fatalf("qemu-img info --backing-chain of db shows %d backing files, want 3:\n%s", n, out)
	}

	// Rollback: refused while attached; then db reads s1 again.
	c, s, sock = openAPI(t, dir, clk)
	if msg := c.refused(409, api.CodeInUse, "POST", "/v1/volumes/db/rollback", `{"snapshot":"s1"}`); !strings.Contains(msg, `"n1"`) {
		t.Fatalf("rollback refusal does not name the node: %q", msg)
	}
	c.must(204, "DELETE", "/v1/volumes/db/attachments/n1", "", nil)
	c.refused(404, api.CodeNotFound, "POST", "/v1/volumes/db/rollback", `{"snapshot":"nope"}`)
	c.must(200, "POST", "/v1/volumes/db/rollback", `{"snapshot":"s1"}`, &v)
	if v.Name != "db" || len(v.Snapshots) != 2 {
		t.Fatalf("rollback answer %+v", v)
	}
	db = attachRW(t, c, sock, "db", "n1")
	expectAt(t, db, "db rolled back to s1", 0, 64<<10, A)
	expectAt(t, db, "db rolled back to s1", off2, 64<<10, 0)

	// s1 has a clone: kept, naming it. s2 has none: merged away.
	if msg := c.refused(409, api.CodeInUse, "DELETE", "/v1/volumes/db/snapshots/s1", ""); !strings.Contains(msg, `"old"`) {
		t.Fatalf("refusal does not name the clone: %q", msg)
	}
	c.must(204, "DELETE", "/v1/volumes/db/snapshots/s2", "", nil)
	c.refused(404, api.CodeNotFound, "DELETE", "/v1/volumes/db/snapshots/s2", "")
	live = attachRW(t, c, sock, "live", "n2")
	expectAt(t, live, "clone of db after s2 went", 0, 64<<10, B)
	c.must(204, "DELETE", "/v1/volumes/old/attachments/n3", "", nil)
	c.must(204, "DELETE", "/v1/volumes/old", "", nil)
	c.must(204, "DELETE", "/v1/volumes/db/snapshots/s1", "", nil) // merged into what reads it
	expectAt(t, db, "db after s1 went", 0, 64<<10, A)
	writeAt(t, db, 0, 64<<10, 0x03)
	expectAt(t, live, "clone after s1 went", 0, 64<<10, B)
	c.must(200, "GET", "/v1/volumes/db", "", &v)
	if len(v.Snapshots) != 0 {
		t.Fatalf("snapshots left %+v", v.Snapshots)
	}
	paths = imagePaths(t, s)
	s.Close()
	checkAllImages(t, dir)
	qemuReads(t, paths["live"], 0, B)
	qemuReads(t, paths["db"], 0, 0x03)

	// The clone of db as it was goes, and with it its hidden layer: db is
	// one image again; db goes, and nothing is left.
	c, s, _ = openAPI(t, dir, clk)
	c.must(204, "DELETE", "/v1/volumes/live/attachments/n2", "", nil)
	c.must(204, "DELETE", "/v1/volumes/live", "", nil)
	dbv, _ := s.reg.GetVolume("db")
	if n, err := s.chainLength(dbv.File); err != nil || n != 1 {
		t.Fatalf("db reads through %d images after its snapshots and clones went, want 1 (%v)", n, err)
	}
	c.must(204, "DELETE", "/v1/volumes/db/attachments/n1", "", nil)
	c.must(204, "DELETE", "/v1/volumes/db", "", nil)
	if files, _ := os.ReadDir(s.dir); len(files) != 0 {
		t.Fatalf("files left: %v", files)
	}
}
