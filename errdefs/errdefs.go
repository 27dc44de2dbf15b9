// Package errdefs is netvol's one vocabulary of errors: the kinds a caller
// decides on, shared by the stores (state), the control API (server and
// server/api) and the driver's backend contract (volume/backend). Errors of
// every layer wrap one of these with %w, so errors.Is answers the same
// question everywhere without translation. They are mapped once to the
// API's codes (server/api.CodeOf) and once to the text Docker shows
// (volume's dockerError).
//
// It imports nothing of netvol and nothing outside the standard library.
package errdefs

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// The kinds.
var (
	// ErrNotFound: no such volume, attachment, mount or mount ID.
	ErrNotFound = errors.New("not found")
	// ErrExists: a volume of that name exists already.
	ErrExists = errors.New("already exists")
	// ErrInUse: the volume is attached, mounted, or the parent of a clone;
	// an *InUseError says which.
	ErrInUse = errors.New("in use")
	// ErrHeld: another node holds the volume's lease (the API's code
	// "conflict"); a *HeldError names it. Held errors also match ErrInUse.
	ErrHeld = errors.New("held by another node")
	// ErrInvalid: an argument that cannot be accepted; the message names
	// it and what is accepted.
	ErrInvalid = errors.New("invalid argument")
	// ErrUnavailable: a server did not answer (refused, timed out, broken).
	ErrUnavailable = errors.New("unavailable")
	// ErrUnauthorized: the storage daemon refused the API token.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrCorrupt: stored data failed its checksum or is missing (a backup's
	// chunk, index or manifest); the message names what.
	ErrCorrupt = errors.New("data corrupt")
)

// InUseError says why a volume is in use. It matches ErrInUse.
type InUseError struct {
	Volume   string
	Snapshot string   // set when a snapshot of Volume is what is in use
	Nodes    []string // nodes with a live attachment
	Children []string // volumes cloned from this one
	Mounted  bool     // mounted on this host
}

func (e *InUseError) Error() string {
	var why []string
	if len(e.Nodes) > 0 {
		why = append(why, "attached by node "+quoteList(e.Nodes))
	}
	if len(e.Children) > 0 {
		why = append(why, "parent of "+quoteList(e.Children))
	}
	if e.Mounted {
		why = append(why, "mounted on this host")
	}
	if e.Snapshot != "" {
		return fmt.Sprintf("snapshot %q of volume %q is %v: %s", e.Snapshot, e.Volume, ErrInUse, strings.Join(why, "; "))
	}
	return fmt.Sprintf("volume %q is %v: %s", e.Volume, ErrInUse, strings.Join(why, "; "))
}

// Is makes errors.Is(err, ErrInUse) true.
func (e *InUseError) Is(target error) bool { return target == ErrInUse }

// HeldError reports the live attachment of another node that refuses a
// new one. It matches ErrHeld and ErrInUse.
type HeldError struct {
	Volume  string
	Holder  string    // node holding the attachment
	Mode    string    // its mode: "rw" or "ro"
	Expires time.Time // its lease expiry on the storage daemon's clock
	// ExpiresIn is what the lease had left when the error was made: a span
	// that needs no clock shared with whoever reads it.
	ExpiresIn time.Duration
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("volume %q is attached %s by node %q until %s: %v",
		e.Volume, ModeText(e.Mode), e.Holder, e.Expires.UTC().Format(time.RFC3339), ErrHeld)
}

// Is makes errors.Is(err, ErrHeld) and errors.Is(err, ErrInUse) true.
func (e *HeldError) Is(target error) bool { return target == ErrHeld || target == ErrInUse }

// ModeText spells an attachment mode out: "read-write", "read-only".
func ModeText(mode string) string {
	switch mode {
	case "rw":
		return "read-write"
	case "ro":
		return "read-only"
	}
	return mode
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}
