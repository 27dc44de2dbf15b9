package backup

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/errdefs"
)

const testCluster = 64 << 10

// volume is an in-memory volume whose changes since the last backup are
// tracked as the storage daemon's layers track them.
type volume struct {
	data    []byte
	changed map[int64]bool
	held    map[int64]bool
}

func newVolume(size int64) *volume {
	return &volume{data: make([]byte, size), changed: map[int64]bool{}, held: map[int64]bool{}}
}

func (v *volume) write(p []byte, off int64) {
	copy(v.data[off:], p)
	for c := off / testCluster; c*testCluster < off+int64(len(p)); c++ {
		v.changed[c], v.held[c] = true, true
	}
}

func (v *volume) source(id, parent string) Source {
	changed := v.changed
	v.changed = map[int64]bool{}
	held := v.held
	return Source{ID: id, Volume: "db", Snapshot: "@backup", Created: time.Now(), Image: bytes.NewReader(bytes.Clone(v.data)),
		Size: int64(len(v.data)), ClusterSize: testCluster, Parent: parent,
		Changed: func(c int64) bool { return changed[c] }, Held: func(c int64) bool { return held[c] }}
}

type memDisk struct{ data []byte }

func (d *memDisk) WriteAt(p []byte, off int64) (int, error) { return copy(d.data[off:], p), nil }

func testEngine(t *testing.T) (*Engine, string) {
	root := filepath.Join(t.TempDir(), "target")
	tg, err := OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	return NewEngine(tg, EngineOptions{GCGrace: -1}), root
}

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	r.Read(b)
	return b
}

func restoreBytes(t *testing.T, e *Engine, id string, size int64) []byte {
	t.Helper()
	d := &memDisk{data: make([]byte, size)}
	if _, err := e.Restore(context.Background(), id, d); err != nil {
		t.Fatalf("restore %s: %v", id, err)
	}
	return d.data
}

// A chain of incrementals: each stores only what changed, and each
// restores on its own to exactly the volume as it was.
func TestIncrementalChainRestoresEach(t *testing.T) {
	ctx := context.Background()
	e, _ := testEngine(t)
	r := rand.New(rand.NewSource(1))
	const size = 64 * testCluster
	v := newVolume(size)
	v.write(randomBytes(r, 20*testCluster), 0)
	v.write(bytes.Repeat([]byte{1}, 2*testCluster), 30*testCluster) // two identical chunks: stored once
	var ids []string
	var states [][]byte
	parent := ""
	for i := range 5 {
		if i > 0 {
			v.write(randomBytes(r, 1000), int64(r.Intn(size-1000)))
			v.write(make([]byte, testCluster), 2*testCluster) // zeros over data
		}
		id := NewID("db", time.Now())
		m, err := e.Backup(ctx, v.source(id, parent))
		if err != nil {
			t.Fatal(err)
		}
		if m.Parent != parent {
			t.Fatalf("backup %d: parent %q, want %q", i, m.Parent, parent)
		}
		if i == 0 {
			if m.StoredBytes < 21*testCluster || m.StoredBytes > 22*testCluster {
				t.Fatalf("full backup stored %d bytes, want 21 clusters and the index", m.StoredBytes)
			}
		} else if m.StoredBytes > 3*testCluster {
			t.Fatalf("incremental %d stored %d bytes for one or two changed clusters", i, m.StoredBytes)
		}
		ids, states, parent = append(ids, id), append(states, bytes.Clone(v.data)), id
	}
	for i, id := range ids {
		if got := restoreBytes(t, e, id, size); !bytes.Equal(got, states[i]) {
			t.Fatalf("backup %d restores other data", i)
		}
		if res, err := e.Verify(ctx, id); err != nil || res.Chunks == 0 {
			t.Fatalf("verify %s: %+v %v", id, res, err)
		}
	}
	list, err := e.List(ctx, "db")
	if err != nil || len(list) != 5 || list[0].ID != ids[0] || list[4].ID != ids[4] {
		t.Fatalf("List: %d backups, %v", len(list), err)
	}
}

// The parent gone (removed), the next backup reads everything again and
// is still complete.
func TestMissingParentMeansFullRead(t *testing.T) {
	ctx := context.Background()
	e, _ := testEngine(t)
	v := newVolume(16 * testCluster)
	v.write(bytes.Repeat([]byte{9}, 3*testCluster), 0)
	first := NewID("db", time.Now())
	if _, err := e.Backup(ctx, v.source(first, "")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Delete(ctx, first); err != nil {
		t.Fatal(err)
	}
	v.write([]byte{1}, 5*testCluster)
	id := NewID("db", time.Now())
	m, err := e.Backup(ctx, v.source(id, first))
	if err != nil {
		t.Fatal(err)
	}
	if m.Parent != "" || m.Chunks != 4 {
		t.Fatalf("parent %q, %d chunks; want none and 4", m.Parent, m.Chunks)
	}
	if !bytes.Equal(restoreBytes(t, e, id, 16*testCluster), v.data) {
		t.Fatal("restored other data")
	}
}

// A chunk changed on the target fails verify and restore, naming it.
func TestCorruptChunkIsNamed(t *testing.T) {
	ctx := context.Background()
	e, root := testEngine(t)
	v := newVolume(8 * testCluster)
	v.write(bytes.Repeat([]byte{5}, testCluster), 3*testCluster)
	id := NewID("db", time.Now())
	if _, err := e.Backup(ctx, v.source(id, "")); err != nil {
		t.Fatal(err)
	}
	chunks, _ := filepath.Glob(filepath.Join(root, "chunks", "*", "*"))
	if len(chunks) != 1 {
		t.Fatalf("%d chunk files, want 1", len(chunks))
	}
	if err := os.WriteFile(chunks[0], bytes.Repeat([]byte{6}, testCluster), 0o600); err != nil {
		t.Fatal(err)
	}
	for what, err := range map[string]error{
		"verify":  func() error { _, err := e.Verify(ctx, id); return err }(),
		"restore": func() error { _, err := e.Restore(ctx, id, &memDisk{data: make([]byte, 8*testCluster)}); return err }(),
	} {
		if !errors.Is(err, errdefs.ErrCorrupt) || !strings.Contains(err.Error(), "chunk 3 ") ||
			!strings.Contains(err.Error(), filepath.Base(chunks[0])) {
			t.Errorf("%s of a corrupted chunk: %v; want corrupt naming chunk 3 and its checksum", what, err)
		}
	}
	os.Remove(chunks[0])
	if _, err := e.Verify(ctx, id); !errors.Is(err, errdefs.ErrCorrupt) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("verify of a missing chunk: %v", err)
	}
}

// Chunks stored by a backup that never wrote its manifest (a daemon
// killed) are not a backup and are collected; removing a backup keeps
// the chunks others list.
func TestCutShortAndGC(t *testing.T) {
	ctx := context.Background()
	e, root := testEngine(t)
	v := newVolume(8 * testCluster)
	v.write(bytes.Repeat([]byte{1}, testCluster), 0)
	a := NewID("db", time.Now())
	if _, err := e.Backup(ctx, v.source(a, "")); err != nil {
		t.Fatal(err)
	}
	v.write(bytes.Repeat([]byte{2}, testCluster), testCluster)
	b := NewID("db", time.Now())
	if _, err := e.Backup(ctx, v.source(b, a)); err != nil {
		t.Fatal(err)
	}
	// a backup cut short: a chunk and an index, no manifest
	if err := e.t.Put(ctx, chunkKey([32]byte{1}), []byte("orphan")); err != nil {
		t.Fatal(err)
	}
	cut := NewID("db", time.Now())
	if err := e.t.Put(ctx, indexKey("db", cut), []byte(indexMagic)); err != nil {
		t.Fatal(err)
	}
	list, _ := e.List(ctx, "")
	if len(list) != 2 {
		t.Fatalf("%d backups listed, want 2 (the one cut short is not)", len(list))
	}
	if _, err := e.Get(ctx, cut); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Get of a backup cut short: %v", err)
	}
	res, err := e.Delete(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if res.Chunks != 2 { // the orphan chunk and the orphan index; chunk 0's data is b's too
		t.Fatalf("collected %d objects, want 2", res.Chunks)
	}
	if !bytes.Equal(restoreBytes(t, e, b, 8*testCluster), v.data) {
		t.Fatal("b restores other data after a's removal")
	}
	if _, err := e.Delete(ctx, a); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("removing a removed backup: %v", err)
	}
	if _, err := e.Delete(ctx, b); err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(root, "chunks", "*", "*"))
	if len(left) != 0 {
		t.Fatalf("%d chunks left after every backup was removed", len(left))
	}
}

// The engine against a real S3 server: full, incremental, restore.
func TestEngineS3(t *testing.T) {
	ctx := context.Background()
	tg := targets(t)["s3"]
	e := NewEngine(tg, EngineOptions{GCGrace: -1})
	r := rand.New(rand.NewSource(2))
	v := newVolume(32 * testCluster)
	v.write(randomBytes(r, 10*testCluster), 0)
	a := NewID("db", time.Now())
	if _, err := e.Backup(ctx, v.source(a, "")); err != nil {
		t.Fatal(err)
	}
	full := bytes.Clone(v.data)
	v.write(randomBytes(r, 100), 20*testCluster)
	b := NewID("db", time.Now())
	m, err := e.Backup(ctx, v.source(b, a))
	if err != nil {
		t.Fatal(err)
	}
	if m.StoredBytes > 2*testCluster {
		t.Fatalf("incremental stored %d bytes", m.StoredBytes)
	}
	if !bytes.Equal(restoreBytes(t, e, a, 32*testCluster), full) || !bytes.Equal(restoreBytes(t, e, b, 32*testCluster), v.data) {
		t.Fatal("restored other data")
	}
	if _, err := e.Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Verify(ctx, b); err != nil {
		t.Fatal(err)
	}
}
