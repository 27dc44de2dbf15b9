package opcmd

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/netvol/netvol/internal/units"
	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume"
	"github.com/netvol/netvol/volume/backend"
)

// CreateArgs are create's own flags: --type, --size, --from and -o.
type CreateArgs struct {
	Type, Size, From string
	FromSnapshot     string // with From: clone this snapshot of it
	Opts             []string
}

// Create creates a volume (create and clone).
func (v *Volumes) Create(ctx context.Context, name string, c CreateArgs) error {
	p, err := v.parseCreate(name, c)
	if err != nil {
		return err
	}
	s, err := v.store(p.Type)
	if err != nil {
		return err
	}
	ctx, cancel := v.context(ctx)
	defer cancel()
	info, err := s.Create(ctx, name, p.Options)
	if err != nil {
		return err
	}
	return v.printChanged(info, info.Name)
}

// printChanged prints a volume just made or changed: JSON, or a line.
func (v *Volumes) printChanged(info VolumeInfo, line string) error {
	if v.JSON {
		return WriteJSON(v.Out, info)
	}
	_, err := fmt.Fprintln(v.Out, line)
	return err
}

// parseCreate checks the name and the options as the plugin does, then
// refuses the options create cannot pass on.
func (v *Volumes) parseCreate(name string, c CreateArgs) (volume.Parsed, error) {
	if err := volume.CheckName(name); err != nil {
		return volume.Parsed{}, err
	}
	raw, err := optionArgs(c)
	if err != nil {
		return volume.Parsed{}, err
	}
	defType, defSize, err := v.createDefaults()
	if err != nil {
		return volume.Parsed{}, err
	}
	p, err := volume.ParseOptions(raw, defType, defSize)
	if err != nil {
		return volume.Parsed{}, fmt.Errorf("volume %q: %w", name, err)
	}
	if err := checkCreateOptions(name, p.Type, raw); err != nil {
		return volume.Parsed{}, err
	}
	if _, sized := raw["size"]; !sized && p.Options.From != "" {
		p.Options.Size = 0 // the daemon gives a clone its source's size
	}
	return p, nil
}

// optionArgs merges -o KEY=VALUE with --type, --size and --from.
func optionArgs(c CreateArgs) (map[string]string, error) {
	raw := map[string]string{}
	for _, o := range c.Opts {
		k, val, ok := strings.Cut(o, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("-o %q: want KEY=VALUE, such as -o mode=0750: %w", o, backend.ErrInvalid)
		}
		if old, dup := raw[k]; dup && old != val {
			return nil, fmt.Errorf("-o %s given twice (%q and %q): %w", k, old, val, backend.ErrInvalid)
		}
		raw[k] = val
	}
	for _, kv := range [][2]string{{"type", c.Type}, {"size", c.Size}, {"from", c.From}, {"from-snapshot", c.FromSnapshot}} {
		if kv[1] == "" {
			continue
		}
		if old, dup := raw[kv[0]]; dup && old != kv[1] {
			return nil, fmt.Errorf("--%s %q and -o %s=%q disagree: %w", kv[0], kv[1], kv[0], old, backend.ErrInvalid)
		}
		raw[kv[0]] = kv[1]
	}
	return raw, nil
}

// createDefaults are the plugin's: --default-type (nbd when --server is
// set, else nfs) and --default-size.
func (v *Volumes) createDefaults() (string, int64, error) {
	typ := v.DefaultType
	if typ == "" {
		typ = backend.TypeNFS
		if v.Conn.Server != "" {
			typ = backend.TypeNBD
		}
	}
	if typ != backend.TypeNBD && typ != backend.TypeNFS {
		return "", 0, fmt.Errorf("--default-type %q (NETVOL_DEFAULT_TYPE): want nbd or nfs", typ)
	}
	size, err := units.ParseSize(v.DefaultSize)
	if err != nil {
		return "", 0, fmt.Errorf("--default-size (NETVOL_DEFAULT_SIZE): %w", err)
	}
	return typ, size, nil
}

// checkCreateOptions refuses the options that act after creation: a
// volume created here would silently lack them.
func checkCreateOptions(name, typ string, raw map[string]string) error {
	passed := []string{"type", "uid", "gid", "mode"}
	if typ == backend.TypeNBD {
		passed = []string{"type", "size", "from", "from-snapshot", "fs", "server"} // fs: ext4, the only one; server: the pool's
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		switch {
		case slices.Contains(passed, k):
		case k == "server" || k == "export":
			return fmt.Errorf("volume %q: option %s: netvol volume create works in the export of --nfs; give --nfs host:/export (NETVOL_NFS) instead: %w",
				name, k, backend.ErrInvalid)
		default:
			return fmt.Errorf("volume %q: option %s acts when a host mounts or removes the volume, and only the host that created it knows it; "+
				"netvol volume create cannot pass it on: create the volume with docker volume create --driver netvol -o %s=... on a Docker host: %w",
				name, k, k, backend.ErrInvalid)
		}
	}
	return nil
}

// Resize grows an nbd volume to arg, SIZE or +SIZE.
func (v *Volumes) Resize(ctx context.Context, name, arg string) error {
	if err := volume.CheckName(name); err != nil {
		return err
	}
	grow, relative := strings.CutPrefix(arg, "+")
	n, err := units.ParseSize(grow)
	if err != nil {
		return fmt.Errorf("resize %q: %w", name, err)
	}
	s, err := v.nbdStore()
	if err != nil {
		return err
	}
	ctx, cancel := v.context(ctx)
	defer cancel()
	cur, err := s.Get(ctx, name)
	if err != nil {
		return err
	}
	size := n
	if relative {
		if n > math.MaxInt64-cur.Size {
			return fmt.Errorf("resize %q by %s: too large", name, grow)
		}
		size = cur.Size + n
	}
	if size < cur.Size {
		return fmt.Errorf("resize %q to %s: the volume has %s already, and volumes only grow", name, units.HumanSize(size), units.HumanSize(cur.Size))
	}
	info, pending, err := s.Resize(ctx, name, size)
	if err != nil {
		return err
	}
	line := fmt.Sprintf("%s: %s -> %s", name, units.HumanSize(cur.Size), units.HumanSize(info.Size))
	switch {
	case len(pending) > 0:
		line += " (the image; not usable everywhere yet, see below)"
	case heldRW(info):
		line += " (the holder's device and file system too: usable now)"
	default:
		line += " (its file system grows at its next mount)"
	}
	if v.JSON {
		err = WriteJSON(v.Out, resized{VolumeInfo: info, Pending: pending})
	} else {
		_, err = fmt.Fprintln(v.Out, line)
	}
	if err != nil || len(pending) == 0 {
		return err
	}
	why := make([]string, 0, len(pending))
	for _, p := range pending {
		why = append(why, p.Why)
	}
	return fmt.Errorf("resize %q: the image has grown to %s, but %s", name, units.HumanSize(info.Size), strings.Join(why, "; "))
}

// resized is resize's JSON answer: the volume and the holders that have
// not grown yet.
type resized struct {
	VolumeInfo
	Pending []api.PendingGrowth `json:"pending,omitempty"`
}

// heldRW reports whether a node holds the volume read-write now.
func heldRW(info VolumeInfo) bool {
	for _, a := range info.Attachments {
		if a.Mode == "rw" && a.ExpiresInMS > 0 {
			return true
		}
	}
	return false
}
