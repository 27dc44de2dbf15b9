package backup

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/netvol/netvol/errdefs"
	"github.com/netvol/netvol/internal/names"
)

// The format (docs/backup-format.md): a manifest per backup, the list of
// its chunks (the index), and content-addressed chunks.

// Format names the format in every manifest; Version is the version this
// program writes. It reads every version up to Version.
const (
	Format  = "netvol-backup"
	Version = 1
)

// Bounds checked before anything is allocated.
const (
	maxManifest  = 64 << 10 // bytes of a manifest
	minChunkSize = 512
	maxChunkSize = 2 << 20
	maxSize      = 1 << 50 // a volume of a PiB
	indexMagic   = "NVBKIDX1"
	entrySize    = 8 + sha256.Size
)

// Manifest describes one complete backup. It is written last, in one
// atomic put: a backup without one does not exist.
type Manifest struct {
	Format      string    `json:"format"`
	Version     int       `json:"version"`
	ID          string    `json:"id"`
	Volume      string    `json:"volume"`
	Snapshot    string    `json:"snapshot"` // the snapshot it was read from
	CreatedAt   time.Time `json:"created_at"`
	Size        int64     `json:"size"`         // the volume's, bytes
	ClusterSize int64     `json:"cluster_size"` // the volume image's
	ChunkSize   int64     `json:"chunk_size"`   // chunk i covers [i*ChunkSize, (i+1)*ChunkSize) of the volume
	// Parent is the backup this one is incremental to: the clusters not
	// changed since were not read again. The backup restores on its own.
	Parent string `json:"parent,omitempty"`
	// Chunks counts the index's entries (the chunks that are not all zeros),
	// DataBytes their bytes; StoredBytes is what this backup added to the
	// target (new chunks, index, manifest).
	Chunks      int64 `json:"chunks"`
	DataBytes   int64 `json:"data_bytes"`
	StoredBytes int64 `json:"stored_bytes"`
	// Index is the SHA-256 of the index object and its length.
	IndexSHA256 string `json:"index_sha256"`
	IndexSize   int64  `json:"index_size"`
	// Labels are the volume's (its stored options), given to a restore.
	Labels map[string]string `json:"labels,omitempty"`
}

// Entry is one chunk of a backup: its number and the SHA-256 of its data.
type Entry struct {
	N    int64
	Hash [sha256.Size]byte
}

// NumChunks is how many chunks the volume spans.
func (m *Manifest) NumChunks() int64 { return (m.Size + m.ChunkSize - 1) / m.ChunkSize }

// ChunkLen is the length of chunk n (the last one may be short).
func (m *Manifest) ChunkLen(n int64) int64 { return min(m.ChunkSize, m.Size-n*m.ChunkSize) }

func invalid(format string, args ...any) error {
	return fmt.Errorf("backup format: "+format+": %w", append(args, errdefs.ErrInvalid)...)
}

// ParseManifest decodes and checks a manifest.
func ParseManifest(data []byte) (*Manifest, error) {
	if len(data) > maxManifest {
		return nil, invalid("manifest of %d bytes (at most %d)", len(data), maxManifest)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, invalid("manifest: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, invalid("manifest: more than one JSON value")
	}
	return &m, m.check()
}

func (m *Manifest) check() error {
	switch {
	case m.Format != Format:
		return invalid("not a %s manifest (format %q)", Format, m.Format)
	case m.Version < 1 || m.Version > Version:
		return invalid("manifest version %d: this netvol reads versions 1 to %d (upgrade it)", m.Version, Version)
	case m.Size <= 0 || m.Size > maxSize || m.Size%512 != 0:
		return invalid("size %d", m.Size)
	case !powerOf2(m.ChunkSize) || m.ChunkSize < minChunkSize || m.ChunkSize > maxChunkSize:
		return invalid("chunk size %d", m.ChunkSize)
	case !powerOf2(m.ClusterSize) || m.ClusterSize < minChunkSize || m.ClusterSize > maxChunkSize:
		return invalid("cluster size %d", m.ClusterSize)
	case m.Chunks < 0 || m.Chunks > m.NumChunks():
		return invalid("%d chunks in a volume of %d", m.Chunks, m.NumChunks())
	case m.IndexSize != int64(len(indexMagic))+m.Chunks*entrySize:
		return invalid("index of %d bytes for %d chunks", m.IndexSize, m.Chunks)
	case m.DataBytes < 0 || m.DataBytes > m.Size || m.StoredBytes < 0:
		return invalid("byte counts %d, %d", m.DataBytes, m.StoredBytes)
	}
	if _, err := hex.DecodeString(m.IndexSHA256); err != nil || len(m.IndexSHA256) != 2*sha256.Size {
		return invalid("index checksum %q", m.IndexSHA256)
	}
	vol, err := VolumeOf(m.ID)
	if err != nil {
		return err
	}
	if vol != m.Volume {
		return invalid("backup %q names volume %q", m.ID, m.Volume)
	}
	if m.Parent != "" {
		if _, err := VolumeOf(m.Parent); err != nil {
			return err
		}
	}
	return nil
}

func powerOf2(n int64) bool { return n > 0 && n&(n-1) == 0 }

// EncodeIndex writes the index: the magic, then each entry's chunk
// number (8 bytes, big endian) and SHA-256, in increasing chunk order.
func EncodeIndex(entries []Entry) []byte {
	out := make([]byte, 0, len(indexMagic)+len(entries)*entrySize)
	out = append(out, indexMagic...)
	for _, e := range entries {
		out = binary.BigEndian.AppendUint64(out, uint64(e.N))
		out = append(out, e.Hash[:]...)
	}
	return out
}

// ParseIndex decodes the index of m and checks it against m: its
// checksum, length, and chunk numbers (increasing, inside the volume).
func ParseIndex(m *Manifest, data []byte) ([]Entry, error) {
	if int64(len(data)) != m.IndexSize {
		return nil, invalid("backup %s: index of %d bytes, the manifest says %d", m.ID, len(data), m.IndexSize)
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != m.IndexSHA256 {
		return nil, fmt.Errorf("backup %s: index checksum mismatch: %w", m.ID, ErrCorrupt)
	}
	return parseEntries(data, m.NumChunks())
}

func parseEntries(data []byte, chunks int64) ([]Entry, error) {
	if len(data) < len(indexMagic) || string(data[:len(indexMagic)]) != indexMagic || (len(data)-len(indexMagic))%entrySize != 0 {
		return nil, invalid("not an index")
	}
	body := data[len(indexMagic):]
	out := make([]Entry, 0, len(body)/entrySize)
	prev := int64(-1)
	for off := 0; off < len(body); off += entrySize {
		n := binary.BigEndian.Uint64(body[off:])
		if n >= uint64(chunks) || int64(n) <= prev {
			return nil, invalid("index entry %d: chunk %d out of order or past the volume's %d", off/entrySize, n, chunks)
		}
		e := Entry{N: int64(n)}
		copy(e.Hash[:], body[off+8:])
		out = append(out, e)
		prev = e.N
	}
	return out, nil
}

// Backup IDs are "<volume>.<UTC time>.<random>", so that a backup's
// volume and its manifest's key follow from its ID, and IDs made by
// different daemons never collide.
const idTime = "20060102T150405Z"

// NewID names a new backup of volume taken at t.
func NewID(volume string, t time.Time) string {
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s.%s.%x", volume, t.UTC().Format(idTime), b)
}

// VolumeOf checks a backup ID and returns its volume.
func VolumeOf(id string) (string, error) {
	i := strings.LastIndexByte(id, '.')
	if i < 0 {
		return "", invalid("backup ID %q: want VOLUME.TIME.RANDOM", id)
	}
	j := strings.LastIndexByte(id[:i], '.')
	if j < 0 {
		return "", invalid("backup ID %q: want VOLUME.TIME.RANDOM", id)
	}
	vol, ts, rnd := id[:j], id[j+1:i], id[i+1:]
	if _, err := time.Parse(idTime, ts); err != nil || !names.ValidVolume(vol) || len(rnd) != 8 {
		return "", invalid("backup ID %q: want VOLUME.TIME.RANDOM", id)
	}
	if _, err := hex.DecodeString(rnd); err != nil {
		return "", invalid("backup ID %q: want VOLUME.TIME.RANDOM", id)
	}
	return vol, nil
}

// Keys of the target's objects (under its prefix).
func manifestKey(volume, id string) string { return "backups/" + volume + "/" + id + ".json" }
func indexKey(volume, id string) string    { return "backups/" + volume + "/" + id + ".index" }
func chunkKey(h [sha256.Size]byte) string {
	x := hex.EncodeToString(h[:])
	return "chunks/" + x[:2] + "/" + x
}
