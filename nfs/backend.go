package nfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/netvol/netvol/internal/names"
	"github.com/netvol/netvol/volume/backend"
)

// Backend is the nfs volume backend. It is safe for concurrent use: it
// holds only its configuration, and each operation has connections of its
// own.
type Backend struct {
	cfg      Config
	def      target
	auth     rpc.Auth
	reserved bool // bind reserved source ports (running as root)
}

var _ backend.Backend = (*Backend)(nil)

// Remove policies (Options.OnRemove).
const (
	OnRemoveDelete  = "delete"
	OnRemoveRetain  = "retain"
	OnRemoveArchive = "archive"
)

// defaultMode is a new volume's mode when Options.Mode is 0.
const defaultMode = 0o755

// do runs f on a session to t and names the volume and the export in its
// error.
func (b *Backend) do(ctx context.Context, what string, t target, f func(*session) error) error {
	s, err := b.open(ctx, t)
	if err == nil {
		err = f(s)
		s.close()
	}
	if err != nil {
		return fmt.Errorf("nfs: %s on %s: %w", what, t, err)
	}
	return nil
}

// Create makes the volume's directory with Options.Mode (0755 when 0) and,
// when Options.UID or GID is not -1, gives it that owner.
func (b *Backend) Create(ctx context.Context, name string, o backend.Options) error {
	t, err := b.targetFor(name, o)
	if err != nil {
		return fmt.Errorf("nfs: %w", err)
	}
	mode, attr, err := newDirAttrs(o)
	if err == nil {
		// Checked now, since they are stored: a volume whose options no
		// host could mount with is of no use.
		err = errors.Join(CheckMountOptions(o.MountOpts), checkOnRemove(o.OnRemove))
	}
	if err != nil {
		return fmt.Errorf("nfs: volume %q: %w", name, err)
	}
	return b.do(ctx, "volume "+strconv.Quote(name), t, func(s *session) error {
		return s.create(ctx, name, mode, attr, o.Stored())
	})
}

// newDirAttrs returns the mode for MKDIR and what SETATTR sets after it:
// the owner, and the mode again when it has setuid, setgid or sticky bits,
// which servers may drop from MKDIR.
func newDirAttrs(o backend.Options) (uint32, nfs.Sattr3, error) {
	var attr nfs.Sattr3
	if err := o.CheckOwner(); err != nil {
		return 0, attr, err
	}
	var errUID, errGID error
	attr.UID, errUID = ownerAttr("uid", o.UID)
	attr.GID, errGID = ownerAttr("gid", o.GID)
	if err := errors.Join(errUID, errGID); err != nil {
		return 0, attr, err
	}
	mode := backend.UnixMode(o.Mode)
	if mode == 0 {
		mode = defaultMode
	}
	if mode&0o7000 != 0 {
		attr.Mode = nfs.SetMode{SetIt: true, Mode: mode}
	}
	return mode, attr, nil
}

// ownerAttr is the SETATTR field for a uid or gid; -1 leaves it.
func ownerAttr(field string, id int) (nfs.SetUID, error) {
	if id < -1 || id > maxID {
		return nfs.SetUID{}, invalidf("%s %d: want 0 to %d, or -1 to leave it", field, id, maxID)
	}
	return nfs.SetUID{SetIt: id >= 0, UID: uint32(id)}, nil
}

// create makes the volume's directory, gives it its owner and stores its
// options beside it.
func (s *session) create(ctx context.Context, name string, mode uint32, attr nfs.Sattr3, stored map[string]string) error {
	fh, err := s.nfs.mkdir(ctx, s.root, name, mode)
	if errors.Is(err, fs.ErrExist) {
		return backend.ErrExists
	}
	if err != nil {
		return fmt.Errorf("MKDIR %s: %w", s.t.source(name), err)
	}
	if attr.UID.SetIt || attr.GID.SetIt || attr.Mode.SetIt {
		if err := s.nfs.setattr(ctx, fh, attr); err != nil {
			return s.undoCreate(ctx, name, setattrError(err, attr))
		}
	}
	if stored != nil {
		if err := s.writeStored(ctx, name, stored); err != nil {
			return s.undoCreate(ctx, name, err)
		}
	}
	return nil
}

// undoCreate takes the new, empty directory away again after err: without
// its owner or its options the volume is not what was asked for.
func (s *session) undoCreate(ctx context.Context, name string, err error) error {
	if rmErr := s.nfs.rmdir(ctx, s.root, name); rmErr != nil {
		err = fmt.Errorf("%w (and removing the new directory failed: %v)", err, rmErr)
	}
	if rmErr := s.removeStored(ctx, name); rmErr != nil {
		err = fmt.Errorf("%w (and removing its options failed: %v)", err, rmErr)
	}
	return err
}

// setattrError explains a refused SETATTR: most often the export squashes
// root, and the anonymous user may not give a directory away.
func setattrError(err error, a nfs.Sattr3) error {
	owner := fmt.Sprintf("uid %s, gid %s", idString(a.UID), idString(a.GID))
	var nfsErr *nfs.Error
	if errors.Is(err, fs.ErrPermission) || errors.As(err, &nfsErr) && nfsErr.ErrorNum == nfs.NFS3ErrAcces {
		return fmt.Errorf("the server refused to set %s on the new directory (%w): the export squashes root "+
			"(root_squash), or the backend's credentials are not root's; export with no_root_squash, or leave uid and gid unset",
			owner, err)
	}
	return fmt.Errorf("setting %s on the new directory: %w", owner, err)
}

func idString(id nfs.SetUID) string {
	if !id.SetIt {
		return "unchanged"
	}
	return strconv.FormatUint(uint64(id.UID), 10)
}

// Remove deletes the volume's directory and everything in it, keeps it
// (OnRemove "retain") or moves it into the export's archive directory
// (OnRemove "archive").
func (b *Backend) Remove(ctx context.Context, name string, o backend.Options) error {
	t, err := b.targetFor(name, o)
	if err != nil {
		return fmt.Errorf("nfs: %w", err)
	}
	if err := checkOnRemove(o.OnRemove); err != nil {
		return fmt.Errorf("nfs: volume %q: %w", name, err)
	}
	policy := o.OnRemove
	if policy == "" {
		policy = OnRemoveDelete
	}
	return b.do(ctx, "volume "+strconv.Quote(name), t, func(s *session) error {
		fh, _, err := s.volume(ctx, name)
		switch {
		case err != nil || policy == OnRemoveRetain:
			// Kept: the directory is still a volume, with its options.
			return err
		case policy == OnRemoveArchive:
			err = s.archive(ctx, name, b.cfg.Now())
		default:
			err = s.delete(ctx, name, fh)
		}
		if err != nil {
			return err
		}
		return s.removeStored(ctx, name)
	})
}

// checkOnRemove refuses an unknown remove policy; "" is delete.
func checkOnRemove(policy string) error {
	switch policy {
	case "", OnRemoveDelete, OnRemoveRetain, OnRemoveArchive:
		return nil
	}
	return invalidf("on-remove %q: want delete, retain or archive", policy)
}

// Get reports the volume's directory and the options stored beside it.
func (b *Backend) Get(ctx context.Context, name string, o backend.Options) (backend.Volume, error) {
	t, err := b.targetFor(name, o)
	if err != nil {
		return backend.Volume{}, fmt.Errorf("nfs: %w", err)
	}
	var v backend.Volume
	err = b.do(ctx, "volume "+strconv.Quote(name), t, func(s *session) error {
		_, attr, err := s.volume(ctx, name)
		if err != nil {
			return err
		}
		v = volumeOf(t, name, attr)
		v.Stored, err = s.readStored(ctx, name)
		return err
	})
	if err != nil {
		return backend.Volume{}, err
	}
	return v, nil
}

// List reports the directories of the default export whose names are
// volume names; hidden entries such as the archive and the files of stored
// options never are. It leaves Stored nil: Get reads it.
func (b *Backend) List(ctx context.Context) ([]backend.Volume, error) {
	var vols []backend.Volume
	err := b.do(ctx, "listing volumes", b.def, func(s *session) error {
		entries, err := s.nfs.readdirplus(ctx, s.root)
		if err != nil {
			return fmt.Errorf("READDIRPLUS: %w", err)
		}
		for _, e := range entries {
			if !names.ValidVolume(e.FileName) {
				continue
			}
			attr := e.Attr.Attr
			if !e.Attr.IsSet {
				if _, attr, err = s.nfs.lookup(ctx, s.root, e.FileName); err != nil {
					return fmt.Errorf("LOOKUP %s: %w", e.FileName, err)
				}
			}
			if attr.Type == nfs.NF3Dir {
				vols = append(vols, volumeOf(s.t, e.FileName, attr))
			}
		}
		return nil
	})
	slices.SortFunc(vols, func(a, b backend.Volume) int { return strings.Compare(a.Name, b.Name) })
	return vols, err
}

// volumeOf describes a volume directory. NFSv3 keeps no creation time; the
// directory's mtime stands in for it.
func volumeOf(t target, name string, a nfs.Fattr) backend.Volume {
	return backend.Volume{
		Name:      name,
		CreatedAt: a.ModTime(),
		Status: map[string]string{
			"type":   backend.TypeNFS,
			"server": t.server,
			"export": t.source(name),
			"mode":   fmt.Sprintf("%04o", a.FileMode&0o7777),
			"uid":    strconv.FormatUint(uint64(a.UID), 10),
			"gid":    strconv.FormatUint(uint64(a.GID), 10),
		},
	}
}
