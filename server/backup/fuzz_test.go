package backup

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"
)

func sampleManifest() *Manifest {
	idx := EncodeIndex([]Entry{{N: 1, Hash: sha256.Sum256([]byte("x"))}})
	sum := sha256.Sum256(idx)
	return &Manifest{Format: Format, Version: Version, ID: "db.20250101T000000Z.0123abcd", Volume: "db",
		CreatedAt: time.Unix(0, 0).UTC(), Size: 1 << 20, ClusterSize: 65536, ChunkSize: 65536, Chunks: 1,
		DataBytes: 65536, IndexSHA256: hex.EncodeToString(sum[:]), IndexSize: int64(len(idx))}
}

// FuzzParseManifest: any input is refused or gives a manifest whose
// fields are within bounds, and whose index parses within them.
func FuzzParseManifest(f *testing.F) {
	good, _ := json.Marshal(sampleManifest())
	f.Add(good)
	f.Add([]byte(`{"format":"netvol-backup","version":2}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		if m.Size <= 0 || m.ChunkSize < minChunkSize || m.Chunks > m.NumChunks() || m.IndexSize < int64(len(indexMagic)) {
			t.Fatalf("accepted %+v", m)
		}
		if _, err := VolumeOf(m.ID); err != nil {
			t.Fatalf("accepted ID %q", m.ID)
		}
	})
}

// FuzzParseIndex: every accepted index has increasing chunk numbers
// inside the volume.
func FuzzParseIndex(f *testing.F) {
	f.Add(EncodeIndex([]Entry{{N: 0}, {N: 5}}), int64(16))
	f.Add([]byte(indexMagic), int64(1))
	f.Fuzz(func(t *testing.T, data []byte, chunks int64) {
		entries, err := parseEntries(data, chunks)
		if err != nil {
			return
		}
		prev := int64(-1)
		for _, e := range entries {
			if e.N <= prev || e.N >= chunks {
				t.Fatalf("accepted entry %d after %d of %d", e.N, prev, chunks)
			}
			prev = e.N
		}
	})
}

func TestParseManifestRefuses(t *testing.T) {
	good, _ := json.Marshal(sampleManifest())
	if _, err := ParseManifest(good); err != nil {
		t.Fatalf("good manifest: %v", err)
	}
	for name, edit := range map[string]func(*Manifest){
		"newer version": func(m *Manifest) { m.Version = Version + 1 },
		"other format":  func(m *Manifest) { m.Format = "x" },
		"chunk size":    func(m *Manifest) { m.ChunkSize = 1000 },
		"index size":    func(m *Manifest) { m.IndexSize++ },
		"id":            func(m *Manifest) { m.ID = "../x" },
		"volume":        func(m *Manifest) { m.Volume = "other" },
		"chunks":        func(m *Manifest) { m.Chunks = 1 << 40 },
	} {
		m := sampleManifest()
		edit(m)
		data, _ := json.Marshal(m)
		if _, err := ParseManifest(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	m := sampleManifest()
	if _, err := ParseIndex(m, EncodeIndex([]Entry{{N: 1, Hash: sha256.Sum256([]byte("y"))}})); err == nil {
		t.Error("index with another checksum accepted")
	}
}
