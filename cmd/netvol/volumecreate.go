package main

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/netvol/netvol/internal/units"
	"github.com/netvol/netvol/volume"
	"github.com/netvol/netvol/volume/backend"
)

// createArgs are create's own flags.
type createArgs struct {
	typ, size, from string
	opts            []string
}

func (v *volumeCmd) createCommand(defs *cobra.Command) *cobra.Command {
	var c createArgs
	cmd := &cobra.Command{
		Use:   "create NAME [--type nbd|nfs] [--size SIZE] [--from SOURCE] [-o KEY=VALUE]...",
		Short: "Create a volume on the storage daemon (nbd) or in the NFS export (nfs)",
		Long: `Create a volume, with the names and options docker volume create -o takes,
checked the same way. Only the options that act when the volume is made are
passed on: type, size and from for nbd volumes; uid, gid and mode for nfs
volumes. The others act when a host mounts the volume and only the host that
created it knows them: give them to docker volume create on that host.

Sizes are binary: 10G = 10GiB; plain numbers are bytes.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return v.runCreate(cmd, args[0], c) },
	}
	fl := cmd.Flags()
	fl.StringVar(&c.typ, "type", "", "nbd or nfs (default: --default-type)")
	fl.StringVar(&c.size, "size", "", "nbd: the size, such as 10G or 512M (default: --default-size; a clone's: its source's)")
	fl.StringVar(&c.from, "from", "", "nbd: clone this volume")
	fl.StringArrayVarP(&c.opts, "opt", "o", nil, "a volume option KEY=VALUE, as docker volume create -o (repeatable)")
	adoptFlags(defs, cmd, false, "default-type", "default-size")
	return cmd
}

func (v *volumeCmd) runCreate(cmd *cobra.Command, name string, c createArgs) error {
	p, err := v.parseCreate(name, c)
	if err != nil {
		return err
	}
	s, err := v.store(p.Type)
	if err != nil {
		return err
	}
	ctx, cancel := v.context(cmd)
	defer cancel()
	info, err := s.Create(ctx, name, p.Options)
	if err != nil {
		return err
	}
	return v.printChanged(cmd, info, info.Name)
}

// printChanged prints a volume just made or changed: JSON, or a line.
func (v *volumeCmd) printChanged(cmd *cobra.Command, info volumeInfo, line string) error {
	if v.json {
		return writeJSON(cmd.OutOrStdout(), info)
	}
	_, err := fmt.Fprintln(cmd.OutOrStdout(), line)
	return err
}

// parseCreate checks the name and the options as the plugin does, then
// refuses the options create cannot pass on.
func (v *volumeCmd) parseCreate(name string, c createArgs) (volume.Parsed, error) {
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
func optionArgs(c createArgs) (map[string]string, error) {
	raw := map[string]string{}
	for _, o := range c.opts {
		k, val, ok := strings.Cut(o, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("-o %q: want KEY=VALUE, such as -o mode=0750: %w", o, backend.ErrInvalid)
		}
		if old, dup := raw[k]; dup && old != val {
			return nil, fmt.Errorf("-o %s given twice (%q and %q): %w", k, old, val, backend.ErrInvalid)
		}
		raw[k] = val
	}
	for _, kv := range [][2]string{{"type", c.typ}, {"size", c.size}, {"from", c.from}} {
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
func (v *volumeCmd) createDefaults() (string, int64, error) {
	typ := v.conn.defaultType
	if typ == "" {
		typ = backend.TypeNFS
		if v.conn.server != "" {
			typ = backend.TypeNBD
		}
	}
	if typ != backend.TypeNBD && typ != backend.TypeNFS {
		return "", 0, fmt.Errorf("--default-type %q (NETVOL_DEFAULT_TYPE): want nbd or nfs", typ)
	}
	size, err := units.ParseSize(v.conn.defaultSize)
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
		passed = []string{"type", "size", "from", "fs"} // fs: ext4, the only one
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

func (v *volumeCmd) cloneCommand() *cobra.Command {
	var size string
	cmd := &cobra.Command{
		Use:   "clone SOURCE NAME [--size SIZE]",
		Short: "Clone an nbd volume: NAME starts as a copy of SOURCE (refused while SOURCE is attached read-write)",
		Long: `Clone an nbd volume on the storage daemon. The clone's image is backed by
SOURCE's (qcow2 copy on write): it starts with SOURCE's data and size (or
--size, at least SOURCE's), and SOURCE cannot be removed or resized while
clones depend on it.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return v.runCreate(cmd, args[1], createArgs{typ: backend.TypeNBD, from: args[0], size: size})
		},
	}
	cmd.Flags().StringVar(&size, "size", "", "the clone's size, such as 20G (default: SOURCE's)")
	return cmd
}

func (v *volumeCmd) resizeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "resize NAME SIZE",
		Short: "Grow an nbd volume to SIZE (such as 20G), or by +SIZE; refused while attached",
		Long: `Grow an nbd volume on the storage daemon to SIZE, or by +SIZE. Volumes only
grow. The daemon refuses while a node has the volume attached, or while clones
depend on it. Only the block device grows: the ext4 file system inside keeps
its size (netvol does not run resize2fs).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error { return v.runResize(cmd, args[0], args[1]) },
	}
}

func (v *volumeCmd) runResize(cmd *cobra.Command, name, arg string) error {
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
	ctx, cancel := v.context(cmd)
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
	info, err := s.Resize(ctx, name, size)
	if err != nil {
		return err
	}
	return v.printChanged(cmd, info, fmt.Sprintf("%s: %s -> %s (the ext4 file system inside keeps its size)",
		name, units.HumanSize(cur.Size), units.HumanSize(info.Size)))
}
