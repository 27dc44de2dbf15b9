package state

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors. Every error the stores return for one of these cases
// wraps the sentinel, so callers decide with errors.Is.
var (
	// ErrNotFound: the volume, attachment, mount or mount ID does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: a volume of that name already exists.
	ErrExists = errors.New("already exists")
	// ErrInUse: the volume is attached, mounted, or the parent of a clone.
	// The error is an *InUseError that says which.
	ErrInUse = errors.New("in use")
	// ErrConflict: an attachment was refused because another node holds
	// the volume. The error is a *ConflictError naming the holder.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: an argument the store cannot record (empty name, unknown
	// attachment mode, shrinking size, ...).
	ErrInvalid = errors.New("invalid argument")
	// ErrLocked: another process (or another handle) holds the database.
	ErrLocked = errors.New("database is locked by another process")
	// ErrSchema: the file is not a netvol database of the expected kind,
	// or its schema is newer than this program knows.
	ErrSchema = errors.New("unsupported database schema")
)

// ConflictError reports the live attachment that prevents a new one.
// It matches ErrConflict with errors.Is.
type ConflictError struct {
	Volume  string
	Holder  string    // node holding the attachment
	Mode    Mode      // its mode
	Expires time.Time // its lease expiry (wall clock, as the caller stored it)
	// ExpiresIn is what the lease had left at the caller's now: a span
	// that needs no clock shared with whoever reads it.
	ExpiresIn time.Duration
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("volume %q is attached %s by node %q until %s: %v",
		e.Volume, e.Mode.long(), e.Holder, e.Expires.UTC().Format(time.RFC3339), ErrConflict)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// InUseError reports why a volume cannot be deleted. It matches ErrInUse
// with errors.Is.
type InUseError struct {
	Volume   string
	Nodes    []string // nodes with a live attachment (registry)
	Children []string // volumes cloned from this one (registry)
	Mounted  bool     // a mount record exists (node store)
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
	return fmt.Sprintf("volume %q is %v: %s", e.Volume, ErrInUse, strings.Join(why, "; "))
}

// Is makes errors.Is(err, ErrInUse) true.
func (e *InUseError) Is(target error) bool { return target == ErrInUse }

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}

func volumeErr(name string, err error) error {
	return fmt.Errorf("volume %q: %w", name, err)
}
