package state

import (
	"errors"
	"fmt"

	"github.com/netvol/netvol/errdefs"
)

// The error kinds are errdefs'; every error the stores return for one of
// these cases wraps the kind, so callers decide with errors.Is.
var (
	// ErrNotFound: the volume, attachment, mount or mount ID does not exist.
	ErrNotFound = errdefs.ErrNotFound
	// ErrExists: a volume of that name already exists.
	ErrExists = errdefs.ErrExists
	// ErrInUse: the volume is attached, mounted, or the parent of a clone.
	// The error is an *InUseError that says which.
	ErrInUse = errdefs.ErrInUse
	// ErrConflict: an attachment was refused because another node holds
	// the volume. The error is a *ConflictError naming the holder.
	ErrConflict = errdefs.ErrHeld
	// ErrInvalid: an argument the store cannot record (empty name, unknown
	// attachment mode, shrinking size, ...).
	ErrInvalid = errdefs.ErrInvalid
	// ErrLocked: another process (or another handle) holds the database.
	ErrLocked = errors.New("database is locked by another process")
	// ErrSchema: the file is not a netvol database of the expected kind,
	// or its schema is newer than this program knows.
	ErrSchema = errors.New("unsupported database schema")
)

// ConflictError reports the live attachment that prevents a new one.
type ConflictError = errdefs.HeldError

// InUseError reports why a volume cannot be deleted.
type InUseError = errdefs.InUseError

func volumeErr(name string, err error) error {
	return fmt.Errorf("volume %q: %w", name, err)
}
