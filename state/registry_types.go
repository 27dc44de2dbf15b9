package state

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"
)

// Mode is how a node attaches a volume.
type Mode string

// Attachment modes.
const (
	ModeRW Mode = "rw" // read-write: one node at a time
	ModeRO Mode = "ro" // read-only: many nodes, never beside a live rw
)

// Valid reports whether m is ModeRW or ModeRO.
func (m Mode) Valid() bool { return m == ModeRW || m == ModeRO }

// Volume is one entry of the storage daemon's registry.
type Volume struct {
	Name   string
	Size   int64  // bytes
	File   string // image path relative to the data directory
	Parent string // volume or template it was cloned from; "" if none
	// FromSnapshot: the snapshot of Parent the clone was made from ("" for
	// a clone of Parent's own image, made before snapshots existed).
	FromSnapshot string
	Template     bool              // a template: a base for clones
	Created      time.Time         // as given by the caller
	Labels       map[string]string // free-form

	// Attachments is filled by GetVolume and ListVolumes (sorted by node)
	// and ignored by CreateVolume.
	Attachments []Attachment
	// Snapshots is filled by GetVolume and ListVolumes (oldest first), hidden
	// ones included, and ignored by CreateVolume.
	Snapshots []Snapshot
}

// Attachment is a node's lease on a volume's NBD export.
//
// (*) The generation counter lives with the volume: a volume deleted and
// created again under the same name starts again at 1. Export names and
// token hashes, which are unique in the registry and dropped with the
// volume, identify an attachment across such incarnations.
type Attachment struct {
	Volume     string
	Node       string
	Mode       Mode
	Generation uint64    // issued by AddAttachment; per volume, increasing, never reused (*)
	Expires    time.Time // wall-clock lease expiry computed by the caller
	Export     string    // NBD export name issued with the attachment
	TokenHash  TokenHash // sha256 of the export token; the token is never stored
	// LostWrites: the storage node went down uncleanly (a power cut) while
	// this attachment could write, so writes it had not flushed may be gone.
	// Its flushes fail until it is detached (see MarkLostWrites).
	LostWrites bool
}

// Live reports whether the lease is still valid at now.
func (a Attachment) Live(now time.Time) bool { return now.Before(a.Expires) }

// TokenHash is the SHA-256 of an export token.
type TokenHash [sha256.Size]byte

// HashToken returns the hash under which an export token is stored.
func HashToken(token string) TokenHash { return sha256.Sum256([]byte(token)) }

// IsZero reports whether h is unset.
func (h TokenHash) IsZero() bool { return h == TokenHash{} }

// String returns h in hex.
func (h TokenHash) String() string { return hex.EncodeToString(h[:]) }

// MarshalText encodes h in hex (JSON and logs stay readable).
func (h TokenHash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText decodes a hex hash.
func (h *TokenHash) UnmarshalText(text []byte) error {
	if hex.DecodedLen(len(text)) != len(h) {
		return fmt.Errorf("token hash: %d hex digits, want %d", len(text), 2*len(h))
	}
	_, err := hex.Decode(h[:], text)
	return err
}
