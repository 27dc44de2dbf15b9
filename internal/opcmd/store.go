package opcmd

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/netvol/netvol/nfs"
	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume/backend"
)

// VolumeInfo is a volume as the operator commands show it, of either type.
type VolumeInfo struct {
	Name        string            `json:"name"`
	Type        string            `json:"type"`
	Server      string            `json:"server"`                  // nbd: the API's URL; nfs: the NFS server
	Export      string            `json:"export,omitempty"`        // nfs: server:/export/name
	Size        int64             `json:"size,omitempty"`          // nbd: bytes
	Allocated   int64             `json:"allocated,omitempty"`     // nbd: bytes the image takes
	CreatedAt   time.Time         `json:"created_at"`              // nfs: the directory's mtime
	From        string            `json:"from,omitempty"`          // nbd: the clone's source
	FromSnap    string            `json:"from_snapshot,omitempty"` // nbd: the snapshot of From it was cloned from
	Snapshots   []api.Snapshot    `json:"snapshots,omitempty"`     // nbd only
	Labels      map[string]string `json:"labels,omitempty"`
	Attachments []api.Attachment  `json:"attachments,omitzero"` // nbd only
	Mode        string            `json:"mode,omitempty"`       // nfs: the directory's permission bits
	UID         *int64            `json:"uid,omitempty"`        // nfs: the directory's owner
	GID         *int64            `json:"gid,omitempty"`
}

// volumeStore is where the volumes of one type live: the storage daemon
// (nbd) or the NFS export (nfs). Errors say what failed, where, and what
// to do about it.
type volumeStore interface {
	Type() string
	Where() string
	List(ctx context.Context) ([]VolumeInfo, error)
	Get(ctx context.Context, name string) (VolumeInfo, error)
	Create(ctx context.Context, name string, o backend.Options) (VolumeInfo, error)
	Remove(ctx context.Context, name string) error
}

// isNotFound tells a missing volume from every other failure.
func isNotFound(err error) bool {
	return errors.Is(err, api.ErrNotFound) || errors.Is(err, backend.ErrNotFound)
}

// nbdStore is the storage daemon's volumes.
type nbdStore struct {
	api *api.Client
	// server names the daemon as a pool's --server does (host:port); ""
	// outside a pool, where volumes show the API's URL.
	server string
}

func (s nbdStore) Type() string  { return backend.TypeNBD }
func (s nbdStore) Where() string { return "the storage daemon " + s.api.URL() }

func (s nbdStore) List(ctx context.Context) ([]VolumeInfo, error) {
	vols, err := s.api.ListVolumes(ctx)
	if err != nil {
		return nil, s.fail("listing nbd volumes", err)
	}
	out := make([]VolumeInfo, 0, len(vols))
	for _, v := range vols {
		out = append(out, s.info(v))
	}
	return out, nil
}

func (s nbdStore) Get(ctx context.Context, name string) (VolumeInfo, error) {
	v, err := s.api.GetVolume(ctx, name)
	if err != nil {
		return VolumeInfo{}, s.fail("nbd volume "+strconv.Quote(name), err)
	}
	return s.info(v), nil
}

func (s nbdStore) Create(ctx context.Context, name string, o backend.Options) (VolumeInfo, error) {
	if o.Server != "" && o.Server != s.api.Server() {
		return VolumeInfo{}, fmt.Errorf("creating nbd volume %q: server %q: the storage server is %s: %w", name, o.Server, s.api.Server(), backend.ErrInvalid)
	}
	v, err := s.api.CreateVolume(ctx, api.CreateRequest{Name: name, Size: api.Size(o.Size), From: o.From, FromSnapshot: o.FromSnapshot})
	if err != nil {
		return VolumeInfo{}, s.fail("creating nbd volume "+strconv.Quote(name), err)
	}
	return s.info(v), nil
}

func (s nbdStore) Remove(ctx context.Context, name string) error {
	if err := s.api.DeleteVolume(ctx, name); err != nil {
		return s.fail("removing nbd volume "+strconv.Quote(name), err)
	}
	return nil
}

// holder is the daemon that holds name: this one.
func (s nbdStore) holder(context.Context, string) (nbdStore, error) { return s, nil }
func (s nbdStore) backupDaemon() (nbdStore, error)                  { return s, nil }
func (s nbdStore) restore(ctx context.Context, req api.CreateRequest) (api.Volume, error) {
	return s.api.CreateVolume(ctx, req)
}

// Resize grows a volume to size bytes; pending are the holders that have
// not grown their device and file system yet.
func (s nbdStore) Resize(ctx context.Context, name string, size int64) (info VolumeInfo, pending []api.PendingGrowth, err error) {
	r, err := s.api.ResizeVolume(ctx, name, size)
	if err != nil {
		return VolumeInfo{}, nil, s.fail("resizing nbd volume "+strconv.Quote(name), err)
	}
	return s.info(r.Volume), r.Pending, nil
}

func (s nbdStore) info(v api.Volume) VolumeInfo {
	atts := v.Attachments
	if atts == nil {
		atts = []api.Attachment{}
	}
	server := s.server
	if server == "" {
		server = s.api.URL()
	}
	return VolumeInfo{Name: v.Name, Type: backend.TypeNBD, Server: server, Size: v.Size, Allocated: v.Allocated,
		CreatedAt: v.CreatedAt, From: v.From, FromSnap: v.FromSnapshot, Labels: v.Labels, Attachments: atts, Snapshots: v.Snapshots}
}

// fail names the daemon in err and adds what to do about it.
func (s nbdStore) fail(what string, err error) error {
	return fmt.Errorf("%s on %s: %w%s", what, s.Where(), err, nbdAdvice(err))
}

func nbdAdvice(err error) string {
	switch {
	case errors.Is(err, api.ErrNotFound):
		return " (netvol volume ls lists the volumes)"
	case errors.Is(err, api.ErrUnauthorized):
		return "; the daemon refused the API token: give --token-file (NETVOL_TOKEN_FILE) a copy of <data>/token from the storage node"
	case errors.Is(err, api.ErrUnavailable):
		return "; is netvol server running there? Check --server (NETVOL_SERVER); netvol doctor checks the connection"
	case errors.Is(err, api.ErrInUse), errors.Is(err, api.ErrConflict):
		return inUseAdvice(err)
	}
	return ""
}

// inUseAdvice answers the daemon's reasons, as its answer lists them:
// attachments (the nodes, or a conflict naming the holder) and clones.
func inUseAdvice(err error) string {
	var ae *api.Error
	errors.As(err, &ae)
	var do []string
	if errors.Is(err, api.ErrConflict) || (ae != nil && len(ae.Nodes) > 0) {
		do = append(do, "stop the containers that use it on that node (the plugin then detaches it), or wait for a dead node's lease to lapse")
	}
	if ae != nil && len(ae.Children) > 0 {
		do = append(do, "remove its clones first")
	}
	if len(do) == 0 {
		do = append(do, "netvol volume inspect shows who uses it")
	}
	return "; " + strings.Join(do, "; ") + "; then retry"
}

// nfsStore is the volumes of the NFS export of --nfs.
type nfsStore struct {
	b      *nfs.Backend
	export string // host:/export, as given
}

func (s nfsStore) Type() string  { return backend.TypeNFS }
func (s nfsStore) Where() string { return "the NFS export " + s.export }

func (s nfsStore) List(ctx context.Context) ([]VolumeInfo, error) {
	vols, err := s.b.List(ctx)
	if err != nil {
		return nil, s.fail(err)
	}
	out := make([]VolumeInfo, 0, len(vols))
	for _, v := range vols {
		out = append(out, nfsInfo(v))
	}
	return out, nil
}

func (s nfsStore) Get(ctx context.Context, name string) (VolumeInfo, error) {
	v, err := s.b.Get(ctx, name, backend.Options{UID: -1, GID: -1})
	if err != nil {
		return VolumeInfo{}, s.fail(err)
	}
	return nfsInfo(v), nil
}

func (s nfsStore) Create(ctx context.Context, name string, o backend.Options) (VolumeInfo, error) {
	if err := s.b.Create(ctx, name, o); err != nil {
		return VolumeInfo{}, s.fail(err)
	}
	return s.Get(ctx, name)
}

func (s nfsStore) Remove(ctx context.Context, name string) error {
	if err := s.b.Remove(ctx, name, backend.Options{UID: -1, GID: -1, OnRemove: nfs.OnRemoveDelete}); err != nil {
		return s.fail(err)
	}
	return nil
}

// fail adds what to do; the backend's errors already name the volume and
// the export.
func (s nfsStore) fail(err error) error {
	switch {
	case errors.Is(err, backend.ErrNotFound):
		return fmt.Errorf("%w (netvol volume ls lists the volumes)", err)
	case errors.Is(err, backend.ErrUnavailable):
		return fmt.Errorf("%w; check --nfs (NETVOL_NFS) and the ports (--nfs-port, --nfs-mount-port); netvol doctor checks the connection", err)
	}
	return err
}

// nfsInfo converts what the nfs backend reports.
func nfsInfo(v backend.Volume) VolumeInfo {
	st := v.Status
	info := VolumeInfo{Name: v.Name, Type: backend.TypeNFS, Server: st["server"], Export: st["export"],
		CreatedAt: v.CreatedAt, Mode: st["mode"]}
	if n, err := strconv.ParseInt(st["uid"], 10, 64); err == nil {
		info.UID = &n
	}
	if n, err := strconv.ParseInt(st["gid"], 10, 64); err == nil {
		info.GID = &n
	}
	return info
}
