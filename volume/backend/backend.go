// Package backend is the contract between the Docker driver (package volume)
// and the storage backends (nfs, nbd). Read this file first: the driver
// validates names and options, counts mounts and keeps state; a backend only
// creates, removes, lists, mounts and unmounts volumes of its kind.
package backend

import (
	"context"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
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
	Size int64  // nbd: bytes
	From string // nbd: clone this template or volume
	// FromSnapshot: nbd: clone this snapshot of From instead of From as it is.
	FromSnapshot string
	// FromBackup: nbd: restore this backup (its ID) as the new volume, of
	// the backup's size unless Size is given.
	FromBackup string
	// BackupEvery, BackupKeep: nbd: the storage daemon backs the volume up
	// this often (a duration such as "1h") and keeps this many newest
	// backups; stored with the volume (labels), validated by the driver.
	BackupEvery, BackupKeep string
	UID, GID                int         // owner of the volume root; -1 leaves it
	Mode                    fs.FileMode // permission bits of the volume root; 0 leaves it
	FS                      string      // nbd: file system, "ext4"
	MkfsOpts                []string    // nbd: extra mkfs arguments, validated
	MountOpts               []string    // extra mount options, allowlisted
	OnRemove                string      // nfs: "delete", "retain" or "archive"
	Server                  string      // override of the backend's server (nbd: the pool's server to create on)
	// Location is where this host last saw the volume (the node store's
	// record, nbd: the pool's server): a hint the backend checks first.
	// The driver fills it; it is not an option a user gives.
	Location string
	Export   string // nfs: override of the export path
}

// StoredKeys are the options a volume keeps with it, so that every host
// mounts, owns and removes it alike: in Docker's option syntax, as Stored
// writes them.
var StoredKeys = []string{"uid", "gid", "mode", "fs", "mkfs-opts", "mount-opts", "on-remove", "backup-every", "backup-keep"}

// Stored returns the options of o that travel with the volume (StoredKeys)
// in Docker's option syntax, nil when there are none. A backend keeps them
// at Create (nbd: the daemon's labels; nfs: a file beside the directory)
// and reports them in Volume.Stored. Size and From are the storage's own
// record; Server and Export say where the volume is, not how to use it.
func (o Options) Stored() map[string]string {
	m := map[string]string{}
	if o.UID >= 0 {
		m["uid"] = strconv.Itoa(o.UID)
	}
	if o.GID >= 0 {
		m["gid"] = strconv.Itoa(o.GID)
	}
	if o.Mode != 0 {
		m["mode"] = fmt.Sprintf("%04o", UnixMode(o.Mode))
	}
	if o.FS != "" {
		m["fs"] = o.FS
	}
	if len(o.MkfsOpts) > 0 {
		m["mkfs-opts"] = strings.Join(o.MkfsOpts, " ")
	}
	if len(o.MountOpts) > 0 {
		m["mount-opts"] = strings.Join(o.MountOpts, ",")
	}
	if o.OnRemove != "" {
		m["on-remove"] = o.OnRemove
	}
	if o.BackupEvery != "" {
		m["backup-every"] = o.BackupEvery
	}
	if o.BackupKeep != "" {
		m["backup-keep"] = o.BackupKeep
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// MaxID is the largest uid or gid Linux has; -1 leaves the owner.
const MaxID = 1<<32 - 2

// CheckOwner refuses, with ErrInvalid, a UID or GID outside -1 to MaxID
// and Mode bits other than the permissions, setuid, setgid and sticky.
func (o Options) CheckOwner() error {
	for _, id := range []struct {
		name string
		v    int
	}{{"uid", o.UID}, {"gid", o.GID}} {
		if id.v < -1 || id.v > MaxID {
			return fmt.Errorf("%s %d: want 0 to %d, or -1 to leave it: %w", id.name, id.v, MaxID, ErrInvalid)
		}
	}
	if o.Mode&^(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
		return fmt.Errorf("mode %v: want permission bits, setuid, setgid and sticky only: %w", o.Mode, ErrInvalid)
	}
	return nil
}

// UnixMode is m's permission bits with setuid, setgid and sticky as the
// octal digits chmod (and the NFS protocol) takes.
func UnixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

// Volume is what a backend reports of a volume.
type Volume struct {
	Name      string
	CreatedAt time.Time
	Status    map[string]string // shown by docker volume inspect
	// Server is where the volume lives when the backend has several
	// (nbd: the pool's storage server); the driver records it
	// (Options.Location).
	Server string
	// Stored is what the volume keeps of its options (Options.Stored) as
	// read back from the storage: untrusted input, which the driver
	// validates as it does Docker's options before any use. Get fills it;
	// List may leave it nil (reading it costs a call per volume on nfs).
	// nil also means a volume that keeps none (made before options were
	// stored, or by the operator command): hosts then use their own.
	Stored map[string]string
}

// PartialError is a List that reached some of a backend's servers only:
// List returns the volumes of the others with it. The driver answers for
// the volumes it last saw on Servers from its cache. It matches
// ErrUnavailable.
type PartialError struct {
	Servers []string // the servers that did not answer
	Err     error
}

func (e *PartialError) Error() string {
	return fmt.Sprintf("storage servers %s did not answer: %v", strings.Join(e.Servers, ", "), e.Err)
}

// Unwrap gives Err and ErrUnavailable.
func (e *PartialError) Unwrap() []error { return []error{e.Err, ErrUnavailable} }

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
// deadline. The driver validates names and options first; a backend
// refuses an invalid name (names.CheckVolume) or options it cannot honour
// with ErrInvalid all the same. Package backendtest is the suite every
// implementation passes.
type Backend interface {
	// Create makes the volume and keeps o.Stored() with it; ErrExists when
	// it exists already (nothing is changed then), ErrInvalid for a name
	// or options it cannot take (nothing is made then).
	Create(ctx context.Context, name string, o Options) error
	// Remove deletes the volume with its stored options (or, by policy,
	// keeps or archives it); ErrNotFound when absent, ErrInUse when
	// another host uses it.
	Remove(ctx context.Context, name string, o Options) error
	// Get reports one volume with its Stored options; ErrNotFound when
	// absent.
	Get(ctx context.Context, name string, o Options) (Volume, error)
	// List reports every volume of the backend's default server.
	List(ctx context.Context) ([]Volume, error)
	// Mount attaches the volume and mounts its file system at target, an
	// existing empty directory; ErrNotFound when the volume is absent and
	// the backend can tell without mounting (nfs leaves a missing
	// directory to the kernel's mount, which needs no call of its own).
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
