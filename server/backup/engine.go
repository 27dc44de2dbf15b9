package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netvol/netvol/errdefs"
)

// Defaults of EngineOptions.
const (
	DefaultWorkers     = 8
	DefaultCallTimeout = 2 * time.Minute
	DefaultGCGrace     = time.Hour
)

// EngineOptions tune an Engine; zero values mean the defaults.
type EngineOptions struct {
	Workers     int           // chunks read, hashed, stored or fetched at once
	CallTimeout time.Duration // deadline of each call to the target
	// GCGrace: chunks and indexes younger than this are never collected,
	// so that a backup another daemon is writing to the same target keeps
	// the chunks it has stored but not yet named in a manifest.
	GCGrace time.Duration
}

// Engine takes, lists, verifies, restores and removes backups on one
// target. It is safe for concurrent use: backups run side by side, and a
// removal (which collects unreferenced chunks) waits for them.
type Engine struct {
	t    Target
	opts EngineOptions
	mu   sync.RWMutex // held shared by backups, exclusively by removals
}

// NewEngine returns an engine over t.
func NewEngine(t Target, opts EngineOptions) *Engine {
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = DefaultCallTimeout
	}
	if opts.GCGrace < 0 {
		opts.GCGrace = 0
	} else if opts.GCGrace == 0 {
		opts.GCGrace = DefaultGCGrace
	}
	return &Engine{t: t, opts: opts}
}

// Target is the engine's target.
func (e *Engine) Target() Target { return e.t }

// Source is what a backup reads: a frozen image of the volume and what
// is known of its clusters.
type Source struct {
	ID, Volume, Snapshot string
	Created              time.Time
	Labels               map[string]string
	Image                io.ReaderAt
	Size, ClusterSize    int64
	// Parent is the backup Changed is relative to ("" for none).
	Parent string
	// Changed reports the clusters that may differ from Parent; the others
	// are taken from Parent's index without reading them. Nil: read all.
	Changed func(cluster int64) bool
	// Held reports the clusters some layer holds; the others read as
	// zeros and are not read. Nil: read all.
	Held func(cluster int64) bool
}

// result is what the workers of a backup found.
type result struct {
	mu      sync.Mutex
	entries []Entry
	data    int64
	stored  atomic.Int64
	known   map[[sha256.Size]byte]bool // on the target
	claimed map[[sha256.Size]byte]bool // being stored by a worker
}

func (r *result) add(e Entry, n int64) {
	r.mu.Lock()
	r.entries = append(r.entries, e)
	r.data += n
	r.mu.Unlock()
}

// Backup stores a backup of src and returns its manifest. Chunks go
// first, several at once; then the target is synced, the index stored,
// and the manifest last, in one atomic put: a backup cut short leaves no
// manifest, so it is not listed, and the chunks it stored are collected
// later (GC).
func (e *Engine) Backup(ctx context.Context, src Source) (*Manifest, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	m := &Manifest{Format: Format, Version: Version, ID: src.ID, Volume: src.Volume, Snapshot: src.Snapshot,
		CreatedAt: src.Created.UTC(), Labels: src.Labels, Size: src.Size, ClusterSize: src.ClusterSize, ChunkSize: src.ClusterSize}
	if vol, err := VolumeOf(src.ID); err != nil || vol != src.Volume {
		return nil, fmt.Errorf("backup ID %q of volume %q: %w", src.ID, src.Volume, errdefs.ErrInvalid)
	}
	if err := m.checkGeometry(); err != nil {
		return nil, err
	}
	parent, err := e.usableParent(ctx, src, m)
	if err != nil {
		return nil, err
	}
	r := &result{known: map[[sha256.Size]byte]bool{}, claimed: map[[sha256.Size]byte]bool{}}
	read := e.plan(src, m, parent, r)
	if err := e.store(ctx, src, m, read, r); err != nil {
		return nil, fmt.Errorf("backup %s of volume %q: %w", src.ID, src.Volume, err)
	}
	if err := e.commit(ctx, m, r); err != nil {
		return nil, fmt.Errorf("backup %s of volume %q: %w", src.ID, src.Volume, err)
	}
	return m, nil
}

func (m *Manifest) checkGeometry() error {
	switch {
	case m.Size <= 0 || m.Size%512 != 0 || m.Size > maxSize:
		return invalid("volume size %d", m.Size)
	case !powerOf2(m.ChunkSize) || m.ChunkSize < minChunkSize || m.ChunkSize > maxChunkSize:
		return invalid("cluster size %d", m.ChunkSize)
	}
	return nil
}

// parentIndex is a parent backup's chunks by number.
type parentIndex struct {
	m       *Manifest
	entries map[int64][sha256.Size]byte
}

// usableParent loads src.Parent when the unchanged clusters can be taken
// from it: it exists (it may have been removed) and has the same chunks.
func (e *Engine) usableParent(ctx context.Context, src Source, m *Manifest) (*parentIndex, error) {
	if src.Parent == "" || src.Changed == nil {
		return nil, nil
	}
	pm, entries, err := e.load(ctx, src.Parent)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("parent backup: %w", err)
	}
	if pm.Volume != m.Volume || pm.ChunkSize != m.ChunkSize {
		return nil, nil
	}
	p := &parentIndex{m: pm, entries: make(map[int64][sha256.Size]byte, len(entries))}
	for _, en := range entries {
		p.entries[en.N] = en.Hash
	}
	m.Parent = pm.ID
	return p, nil
}

// plan decides, chunk by chunk, what to read: the rest is taken from the
// parent (unchanged) or left out (no layer holds it: zeros).
func (e *Engine) plan(src Source, m *Manifest, p *parentIndex, r *result) []int64 {
	var read []int64
	n := m.NumChunks()
	for c := range n {
		if p != nil && !src.Changed(c) && (p.m.Size == m.Size || c < p.m.NumChunks()-1) {
			if h, ok := p.entries[c]; ok && c < p.m.NumChunks() {
				r.entries = append(r.entries, Entry{N: c, Hash: h})
				r.data += m.ChunkLen(c)
				r.known[h] = true
			}
			continue
		}
		if src.Held != nil && !src.Held(c) {
			continue
		}
		read = append(read, c)
	}
	return read
}

// store reads, hashes and stores the chunks of read, Workers at once.
func (e *Engine) store(ctx context.Context, src Source, m *Manifest, read []int64, r *result) error {
	return parallel(ctx, e.opts.Workers, read, func() func(context.Context, int64) error {
		buf := make([]byte, m.ChunkSize)
		return func(ctx context.Context, c int64) error { return e.storeChunk(ctx, src, m, c, buf, r) }
	})
}

// parallel runs a worker of each newWorker on the items, workers at once,
// until all are done or the first fails (its error is returned and the
// others' context ends).
func parallel[T any](ctx context.Context, workers int, items []T, newWorker func() func(context.Context, T) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan T)
	var wg sync.WaitGroup
	for range workers {
		work := newWorker()
		wg.Go(func() {
			for it := range jobs {
				if ctx.Err() != nil {
					continue
				}
				if err := work(ctx, it); err != nil {
					cancel(err)
				}
			}
		})
	}
feed:
	for _, it := range items {
		select {
		case jobs <- it:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	return context.Cause(ctx)
}

func (e *Engine) storeChunk(ctx context.Context, src Source, m *Manifest, c int64, buf []byte, r *result) error {
	n := m.ChunkLen(c)
	b := buf[:n]
	if k, err := src.Image.ReadAt(b, c*m.ChunkSize); err != nil && !(errors.Is(err, io.EOF) && int64(k) == n) {
		return fmt.Errorf("reading chunk %d: %w", c, err)
	}
	if allZero(b) {
		return nil
	}
	h := sha256.Sum256(b)
	r.add(Entry{N: c, Hash: h}, n)
	r.mu.Lock()
	skip := r.known[h] || r.claimed[h]
	r.claimed[h] = true
	r.mu.Unlock()
	if skip {
		return nil
	}
	key := chunkKey(h)
	cctx, cancel := context.WithTimeout(ctx, e.opts.CallTimeout)
	defer cancel()
	ok, err := e.t.Exists(cctx, key)
	if err != nil || ok {
		return err
	}
	if err := e.t.Put(cctx, key, b); err != nil {
		return err
	}
	r.stored.Add(n)
	return nil
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// commit syncs the chunks, stores the index and then the manifest.
func (e *Engine) commit(ctx context.Context, m *Manifest, r *result) error {
	slices.SortFunc(r.entries, func(a, b Entry) int { return int(a.N - b.N) })
	index := EncodeIndex(r.entries)
	sum := sha256.Sum256(index)
	m.Chunks, m.DataBytes = int64(len(r.entries)), r.data
	m.IndexSHA256, m.IndexSize = hex.EncodeToString(sum[:]), int64(len(index))
	m.StoredBytes = r.stored.Load() + int64(len(index))
	cctx, cancel := context.WithTimeout(ctx, e.opts.CallTimeout)
	defer cancel()
	if err := e.t.Sync(cctx); err != nil {
		return err
	}
	if err := e.t.Put(cctx, indexKey(m.Volume, m.ID), index); err != nil {
		return err
	}
	if err := e.t.Sync(cctx); err != nil {
		return err
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return e.t.Put(cctx, manifestKey(m.Volume, m.ID), append(data, '\n'))
}

// Get returns a backup's manifest (errdefs.ErrNotFound when there is
// none: also a backup cut short).
func (e *Engine) Get(ctx context.Context, id string) (*Manifest, error) {
	vol, err := VolumeOf(id)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, e.opts.CallTimeout)
	defer cancel()
	data, err := e.t.Get(cctx, manifestKey(vol, id), maxManifest)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, fmt.Errorf("backup %s: %w", id, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("backup %s: manifest: %v: %w", id, err, ErrCorrupt)
	}
	if m.ID != id {
		return nil, fmt.Errorf("backup %s: its manifest names backup %s: %w", id, m.ID, ErrCorrupt)
	}
	return m, nil
}

// load returns a backup's manifest and index.
func (e *Engine) load(ctx context.Context, id string) (*Manifest, []Entry, error) {
	m, err := e.Get(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, e.opts.CallTimeout)
	defer cancel()
	data, err := e.t.Get(cctx, indexKey(m.Volume, m.ID), m.IndexSize)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, nil, fmt.Errorf("backup %s: its index is missing: %w", id, ErrCorrupt)
	}
	if err != nil {
		return nil, nil, err
	}
	entries, err := ParseIndex(m, data)
	if err != nil && !errors.Is(err, ErrCorrupt) {
		err = fmt.Errorf("%v: %w", err, ErrCorrupt)
	}
	return m, entries, err
}

// List returns the complete backups of volume ("" for every volume),
// oldest first.
func (e *Engine) List(ctx context.Context, volume string) ([]*Manifest, error) {
	prefix := "backups/"
	if volume != "" {
		prefix += volume + "/"
	}
	cctx, cancel := context.WithTimeout(ctx, e.opts.CallTimeout)
	defer cancel()
	objs, err := e.t.List(cctx, prefix)
	if err != nil {
		return nil, err
	}
	var out []*Manifest
	for _, o := range objs {
		id, ok := manifestID(o.Key)
		if !ok {
			continue
		}
		m, err := e.Get(ctx, id)
		if errors.Is(err, errdefs.ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	slices.SortStableFunc(out, func(a, b *Manifest) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// manifestID is the backup ID of a manifest's key.
func manifestID(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, "backups/")
	if !ok || !strings.HasSuffix(rest, ".json") {
		return "", false
	}
	vol, file, ok := strings.Cut(strings.TrimSuffix(rest, ".json"), "/")
	if !ok {
		return "", false
	}
	if v, err := VolumeOf(file); err != nil || v != vol {
		return "", false
	}
	return file, true
}

// VerifyResult is what a verification read.
type VerifyResult struct {
	Chunks int64 `json:"chunks"`
	Bytes  int64 `json:"bytes"`
}

// Verify reads every chunk of a backup back and checks its length and
// checksum; the first failure names the chunk (errdefs.ErrCorrupt).
func (e *Engine) Verify(ctx context.Context, id string) (VerifyResult, error) {
	return e.fetchAll(ctx, id, nil)
}

// Restore writes a backup into dst, a zeroed device of at least the
// backup's size, checking every chunk first; chunks left out are zeros.
// It fails naming the first chunk that is missing or fails its checksum,
// having written only chunks that passed.
func (e *Engine) Restore(ctx context.Context, id string, dst io.WriterAt) (VerifyResult, error) {
	if dst == nil {
		return VerifyResult{}, errors.New("restore: no destination")
	}
	return e.fetchAll(ctx, id, dst)
}

func (e *Engine) fetchAll(ctx context.Context, id string, dst io.WriterAt) (VerifyResult, error) {
	m, entries, err := e.load(ctx, id)
	if err != nil {
		return VerifyResult{}, err
	}
	var done atomic.Int64
	err = parallel(ctx, e.opts.Workers, entries, func() func(context.Context, Entry) error {
		return func(ctx context.Context, en Entry) error {
			n, err := e.fetchChunk(ctx, m, en, dst)
			done.Add(n)
			return err
		}
	})
	if err != nil {
		return VerifyResult{}, err
	}
	return VerifyResult{Chunks: int64(len(entries)), Bytes: done.Load()}, nil
}

// fetchChunk reads one chunk, checks it and writes it to dst (if any).
func (e *Engine) fetchChunk(ctx context.Context, m *Manifest, en Entry, dst io.WriterAt) (int64, error) {
	want := m.ChunkLen(en.N)
	cctx, cancel := context.WithTimeout(ctx, e.opts.CallTimeout)
	defer cancel()
	data, err := e.t.Get(cctx, chunkKey(en.Hash), m.ChunkSize)
	name := fmt.Sprintf("backup %s: chunk %d (volume bytes %d to %d, sha256 %x)", m.ID, en.N, en.N*m.ChunkSize, en.N*m.ChunkSize+want, en.Hash)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return 0, fmt.Errorf("%s is missing from the target: %w", name, ErrCorrupt)
	case errors.Is(err, ErrCorrupt):
		return 0, fmt.Errorf("%s: %v", name, err)
	case err != nil:
		return 0, fmt.Errorf("%s: %w", name, err)
	case int64(len(data)) != want:
		return 0, fmt.Errorf("%s: %d bytes stored, want %d: %w", name, len(data), want, ErrCorrupt)
	case sha256.Sum256(data) != en.Hash:
		return 0, fmt.Errorf("%s: checksum mismatch: %w", name, ErrCorrupt)
	}
	if dst != nil {
		if _, err := dst.WriteAt(data, en.N*m.ChunkSize); err != nil {
			return 0, fmt.Errorf("restore: writing chunk %d: %w", en.N, err)
		}
	}
	return want, nil
}

// GCResult counts what a collection removed.
type GCResult struct {
	Chunks int64
	Bytes  int64
}

// Delete removes backups: each manifest first (the backup is gone from
// then on), then its index; then unreferenced chunks are collected. Other
// backups never depend on a removed one: every manifest lists all its
// chunks. Removing a backup that does not exist is ErrNotFound.
func (e *Engine) Delete(ctx context.Context, ids ...string) (GCResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range ids {
		// A corrupt manifest may be removed; a missing one is not found.
		if _, err := e.Get(ctx, id); err != nil && !errors.Is(err, ErrCorrupt) {
			return GCResult{}, err
		}
		vol, _ := VolumeOf(id)
		cctx, cancel := context.WithTimeout(ctx, e.opts.CallTimeout)
		err := e.t.Delete(cctx, manifestKey(vol, id))
		if err == nil {
			err = e.t.Delete(cctx, indexKey(vol, id))
		}
		cancel()
		if err != nil {
			return GCResult{}, err
		}
	}
	return e.gcLocked(ctx)
}

// GC removes the chunks no manifest's index lists and the indexes of
// backups cut short, older than the grace period.
func (e *Engine) GC(ctx context.Context) (GCResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.gcLocked(ctx)
}

func (e *Engine) gcLocked(ctx context.Context) (GCResult, error) {
	start := time.Now()
	ms, err := e.List(ctx, "")
	if err != nil {
		return GCResult{}, fmt.Errorf("collecting chunks: %w", err)
	}
	refs := map[string]bool{}
	indexes := map[string]bool{}
	for _, m := range ms {
		_, entries, err := e.load(ctx, m.ID)
		if err != nil {
			return GCResult{}, fmt.Errorf("collecting chunks: %w", err)
		}
		for _, en := range entries {
			refs[chunkKey(en.Hash)] = true
		}
		indexes[indexKey(m.Volume, m.ID)] = true
	}
	var res GCResult
	for _, prefix := range []string{"chunks/", "backups/"} {
		cctx, cancel := context.WithTimeout(ctx, e.opts.CallTimeout)
		objs, err := e.t.List(cctx, prefix)
		cancel()
		if err != nil {
			return res, err
		}
		for _, o := range objs {
			if refs[o.Key] || indexes[o.Key] || strings.HasSuffix(o.Key, ".json") || start.Sub(o.Modified) < e.opts.GCGrace {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, e.opts.CallTimeout)
			err := e.t.Delete(cctx, o.Key)
			cancel()
			if err != nil {
				return res, err
			}
			res.Chunks++
			res.Bytes += o.Size
		}
	}
	return res, nil
}
