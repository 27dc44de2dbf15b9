// Package backend is the contract between the Docker driver (package volume)
// and the storage backends (nfs, nbd). Read this file first: the driver
// validates names and options, counts mounts and keeps state; a backend only
// creates, removes, lists, mounts and unmounts volumes of its kind.
package backend

import (
	"context"
	"io/fs"
	"time"

	"github.com/netvol/netvol/errdefs"
)

// Volume types.
const (
	TypeNFS = "nfs"
	TypeNBD = "nbd"
)

// Errors a backend wraps (with %w) so the driver can decide and tell Docker
// what happened: errdefs' kinds, named here for the backends. Anything else
// is reported as an internal failure.
var (
	ErrNotFound = errdefs.ErrNotFound
	ErrExists   = errdefs.ErrExists
	ErrInUse    = errdefs.ErrInUse
	// ErrHeld: another host holds the volume; the error says until when
	// (it also matches ErrInUse).
	ErrHeld        = errdefs.ErrHeld
	ErrInvalid     = errdefs.ErrInvalid
	ErrUnavailable = errdefs.ErrUnavailable
)

// Options are a volume's validated options. The driver parses Docker's
// string options into this struct; backends never see the raw strings.
type Options struct {
	Size      int64       // nbd: bytes
	From      string      // nbd: clone this template or volume
	UID, GID  int         // owner of the volume root; -1 leaves it
	Mode      fs.FileMode // permission bits of the volume root; 0 leaves it
	FS        string      // nbd: file system, "ext4"
	MkfsOpts  []string    // nbd: extra mkfs arguments, validated
	MountOpts []string    // extra mount options, allowlisted
	OnRemove  string      // nfs: "delete", "retain" or "archive"
	Server    string      // override of the backend's server
	Export    string      // nfs: override of the export path
}

// Volume is what a backend reports of a volume.
type Volume struct {
	Name      string
	CreatedAt time.Time
	Status    map[string]string // shown by docker volume inspect
}

// Mounted is what a backend did to mount a volume on this host. The driver
// persists it with the mount record and hands it back to Unmount and
// Resume, also after a restart of the plugin.
type Mounted struct {
	Device     string // /dev/nbdN, /dev/loopN; "" for nfs
	Method     string // how the device was attached ("kernel", ...)
	Export     string // NBD export name or NFS source
	Generation uint64 // attachment generation (nbd)
	Subdir     string // the directory inside the mount that Docker gets; "" for the root
}

// Backend is one kind of volume storage. Every method honours ctx's
// deadline. Names are already validated.
type Backend interface {
	// Create makes the volume; ErrExists when it exists already.
	Create(ctx context.Context, name string, o Options) error
	// Remove deletes (or, by policy, keeps) the volume; ErrNotFound when
	// absent, ErrInUse when another host uses it.
	Remove(ctx context.Context, name string, o Options) error
	// Get reports one volume; ErrNotFound when absent.
	Get(ctx context.Context, name string, o Options) (Volume, error)
	// List reports every volume of the backend's default server.
	List(ctx context.Context) ([]Volume, error)
	// Mount attaches the volume and mounts its file system at target, an
	// existing empty directory.
	Mount(ctx context.Context, name string, o Options, target string) (Mounted, error)
	// Unmount undoes Mount: unmounts target (when mounted), releases the
	// device and the attachment. It succeeds when there is nothing left to
	// undo, so it also cleans up after a crash.
	Unmount(ctx context.Context, name string, o Options, target string, m Mounted) error
}

// Resumer is implemented by backends that keep something alive while a
// volume is mounted (a lease). The driver calls Resume for every mount
// still in place when the plugin starts.
type Resumer interface {
	Resume(ctx context.Context, name string, o Options, target string, m Mounted) error
}
