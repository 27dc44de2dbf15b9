package server

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/server/api"

	"github.com/netvol/netvol/nbd"
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

// A clone of a volume in use (fenced by issue 12's rule: nothing that
// makes a layer immutable leaves a writer on it). The source's writer,
// live or with a lapsed lease, goes on writing on the same connection,
// without an error, to the source's new image; the layer the clone reads
// never changes again; the clone holds the source as it was at the clone,
// including writes the source had not flushed.
func TestAPICloneOfVolumeInUse(t *testing.T) {
	for _, lapsed := range []bool{false, true} {
		t.Run(fmt.Sprintf("lapsed=%v", lapsed), func(t *testing.T) {
			c, s, clk := newAPI(t)
			_, sock := serveNBD(t, s)
			c.must(201, "POST", "/v1/volumes", `{"name":"base","size":"8M"}`, nil)
			var g api.Grant
			c.must(200, "POST", "/v1/volumes/base/attachments", `{"node":"n1","mode":"rw"}`, &g)
			cl := dialExport(t, sock, g.Export)
			ctx, cancel := context.WithTimeout(bg, 10*time.Second)
			defer cancel()
			if err := cl.Write(ctx, fill(0xaa, 64<<10), 0, 0); err != nil { // not flushed
				t.Fatal(err)
			}
			if lapsed {
				clk.Add(16 * time.Second) // the connection stays
			}
			c.must(201, "POST", "/v1/volumes", `{"name":"clone","from":"base"}`, nil)
			layer := filepath.Join(s.dir, "base.qcow2")
			frozen, err := os.ReadFile(layer)
			if err != nil {
				t.Fatal(err)
			}
			if err := cl.Write(ctx, fill(0xcc, 64<<10), 0, 0); err != nil {
				t.Fatalf("the source's writer after the clone: %v", err)
			}
			if err := cl.Flush(ctx); err != nil {
				t.Fatalf("the source's writer's flush after the clone: %v", err)
			}
			c.must(200, "POST", "/v1/volumes/base/attachments/n1/renew", "", nil)
			var cg api.Grant
			c.must(200, "POST", "/v1/volumes/clone/attachments", `{"node":"n2","mode":"rw"}`, &cg)
			readAll(t, sock, cg.Export, 0xaa)
			readAll(t, sock, g.Export, 0xcc)
			if now, _ := os.ReadFile(layer); !bytes.Equal(now, frozen) {
				t.Fatal("the layer the clone reads changed after the clone")
			}
			var v api.Volume
			c.must(200, "GET", "/v1/volumes/clone", "", &v)
			if v.From != "base" || v.FromSnapshot != "" {
				t.Fatalf("clone %+v", v)
			}
			c.must(200, "GET", "/v1/volumes/base", "", &v)
			if len(v.Snapshots) != 0 {
				t.Fatalf("the clone's hidden snapshot is listed: %+v", v.Snapshots)
			}
			msg := c.refused(409, api.CodeInUse, "DELETE", "/v1/volumes/base", "")
			if !strings.Contains(msg, `"clone"`) {
				t.Fatalf("refusal does not name the clone: %q", msg)
			}
		})
	}
}
