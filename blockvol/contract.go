package blockvol

import (
	"context"
	"net"

	"github.com/netvol/netvol/internal/mount"
	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/server/api"
)

// API is the storage daemon's control API as the backend uses it;
// *api.Client implements it.
type API interface {
	// Server names the API's host:port in status and errors; its host is
	// also the NBD server's unless the daemon reports a unix socket.
	Server() string
	Health(ctx context.Context) (api.Health, error)
	CreateVolume(ctx context.Context, req api.CreateRequest) (api.Volume, error)
	GetVolume(ctx context.Context, name string) (api.Volume, error)
	ListVolumes(ctx context.Context) ([]api.Volume, error)
	DeleteVolume(ctx context.Context, name string) error
	Attach(ctx context.Context, volume, node, mode string) (api.Grant, error)
	Renew(ctx context.Context, volume, node string) (api.Lease, error)
	Detach(ctx context.Context, volume, node string) error
	// ReportGrown tells the daemon what size this node's device and file
	// system of volume have after it grew them (or why they could not).
	ReportGrown(ctx context.Context, volume, node string, r api.GrownReport) error
}

var _ API = (*api.Client)(nil)

// Dialer opens one more connection to the export being attached and
// negotiates it: the connection is in the transmission phase with nothing
// buffered, ready for the kernel or a userspace client, and info is what
// the server said about the export. The caller owns (closes) the
// connection.
type Dialer func(ctx context.Context) (conn net.Conn, info nbd.ExportInfo, err error)

// Device is a block device an Attacher made of an export.
type Device struct {
	Path   string // /dev/nbdN, /dev/loopN
	Method string // how it was made: "kernel", ...; kept in the mount record
}

// Attacher turns an NBD export into a local block device and back.
type Attacher interface {
	// Attach makes a device of the export t names. The kernel attacher
	// dials t.Dial as many times as it wants (on failure it closes what it
	// dialed); the userspace one hands t's address and name to a helper
	// process that dials again by itself after a lost connection.
	Attach(ctx context.Context, t Target) (Device, error)
	// Detach releases a device Attach made, also one made by an earlier run
	// of the plugin. A device that is gone already is not an error.
	Detach(ctx context.Context, d Device) error
}

// Target is the export Mount attaches: where it is, its name (a
// credential: never in logs, errors, argv or the environment), and a
// Dialer of it.
type Target struct {
	Volume string
	Addr   string // host:port or unix:/path
	Export string
	Dial   Dialer
}

// Mounter performs mounts; mount.System is the real one.
type Mounter interface {
	Mount(m mount.Mount) error
	// Unmount unmounts target; a target not mounted is not an error.
	Unmount(target string) error
}

var _ Mounter = mount.System{}

// Formatter makes an ext4 file system; Mkfs is the real one.
type Formatter interface {
	// Format formats device; opts are extra mkfs.ext4 arguments that
	// CheckMkfsOptions accepted.
	Format(ctx context.Context, device string, opts []string) error
}

// Grower is an Attacher that can give a device in use the new size of its
// export after the volume grew (see grow.go).
type Grower interface {
	// Grow makes d as large as its export is now (dial reaches the export
	// to ask, for attachers that need to) and returns d's size in bytes.
	Grow(ctx context.Context, d Device, dial Dialer) (int64, error)
}

// FSGrower grows the file system mounted at target, online, to the size
// of its device; Ext4Grower is the real one.
type FSGrower interface {
	// GrowFS returns the device's size in bytes, which the file system
	// now spans (up to its own rounding).
	GrowFS(ctx context.Context, device, target string) (int64, error)
}

// Reconnector is an Attacher that can give a device new connections after
// the server closed its old ones (a storage daemon restart), so that the
// device's I/O goes on instead of failing once the kernel gives up on the
// dead connections.
type Reconnector interface {
	Reconnect(ctx context.Context, d Device, dial Dialer) error
}
