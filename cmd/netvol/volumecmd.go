package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/netvol/netvol/blockvol"
	"github.com/netvol/netvol/internal/units"
	"github.com/netvol/netvol/volume"
	"github.com/netvol/netvol/volume/backend"
)

// volumeCmd is what the volume subcommands share: how to reach the servers
// (netvol plugin's flags and environment) and how to answer.
type volumeCmd struct {
	conn    pluginFlags
	json    bool
	timeout time.Duration
}

func newVolumeCommand() *cobra.Command {
	v := &volumeCmd{}
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Manage volumes on the storage daemon (nbd) and the NFS export (nfs)",
		Long: `Manage netvol volumes from any host, without Docker: list, inspect, create,
clone, resize and remove them on the storage daemon (type nbd, --server) and in
the NFS export (type nfs, --nfs).

The connection flags are netvol plugin's, with the same environment twins
(shown in brackets), so a host set up for the plugin needs nothing more.
With none of them, the storage daemon of this host's netvol run is used when
there is one (its address and token under <state-dir>/server).`,
		Args: cobra.NoArgs, // an unknown subcommand is an error, not help
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	defs := pluginFlagDefs(&v.conn)
	adoptFlags(defs, cmd, true, connFlagNames()...)
	pf := cmd.PersistentFlags()
	pf.BoolVar(&v.json, "json", false, "print JSON instead of a table")
	pf.DurationVar(&v.timeout, "timeout", 30*time.Second, "give up on the servers after this long")
	cmd.AddCommand(v.lsCommand(), v.inspectCommand(), v.createCommand(defs), v.cloneCommand(),
		v.resizeCommand(), v.rmCommand())
	return cmd
}

// context bounds one command's work by --timeout.
func (v *volumeCmd) context(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), v.timeout)
}

// stores returns the configured stores of type typ ("" for every type),
// nbd first.
func (v *volumeCmd) stores(typ string) ([]volumeStore, error) {
	if typ != "" && typ != backend.TypeNBD && typ != backend.TypeNFS {
		return nil, fmt.Errorf("--type %q: want nbd or nfs", typ)
	}
	useLocalDaemon(&v.conn)
	var out []volumeStore
	if v.conn.server != "" && typ != backend.TypeNFS {
		s, err := v.nbdStore()
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if v.conn.nfs != "" && typ != backend.TypeNBD {
		s, err := v.nfsStore()
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, notConfigured(typ)
	}
	return out, nil
}

func notConfigured(typ string) error {
	nbd := "--server host:port (NETVOL_SERVER) and --token-file (NETVOL_TOKEN_FILE) for nbd volumes"
	nfs := "--nfs host:/export (NETVOL_NFS) for nfs volumes"
	switch typ {
	case backend.TypeNBD:
		return errors.New("nbd volumes live on a storage daemon: give " + nbd)
	case backend.TypeNFS:
		return errors.New("nfs volumes live in an NFS export: give " + nfs)
	}
	return errors.New("no server configured, and no netvol run on this host: give " + nbd + ", and/or " + nfs)
}

// store returns the one store of type typ.
func (v *volumeCmd) store(typ string) (volumeStore, error) {
	if typ == backend.TypeNBD {
		return v.nbdStore()
	}
	if typ == backend.TypeNFS {
		return v.nfsStore()
	}
	return nil, fmt.Errorf("type %q: want nbd or nfs", typ)
}

func (v *volumeCmd) nbdStore() (nbdStore, error) {
	useLocalDaemon(&v.conn)
	if v.conn.server == "" {
		return nbdStore{}, notConfigured(backend.TypeNBD)
	}
	api, err := newAPIClient(v.conn)
	if err != nil {
		return nbdStore{}, err
	}
	return nbdStore{api: api}, nil
}

func (v *volumeCmd) nfsStore() (nfsStore, error) {
	if v.conn.nfs == "" {
		return nfsStore{}, notConfigured(backend.TypeNFS)
	}
	b, err := newNFSBackend(v.conn, v.timeout)
	if err != nil {
		return nfsStore{}, err
	}
	return nfsStore{b: b, export: v.conn.nfs}, nil
}

func (v *volumeCmd) lsCommand() *cobra.Command {
	var typ string
	cmd := &cobra.Command{
		Use:     "ls [--type nbd|nfs]",
		Aliases: []string{"list"},
		Short:   "List volumes: NAME TYPE SIZE ALLOCATED ATTACHED CREATED",
		Long: `List the volumes of the storage daemon and of the NFS export. nfs volumes have
no size of their own and no attachments; their CREATED is the directory's
modification time (NFSv3 keeps no creation time).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return v.runLs(cmd, typ) },
	}
	cmd.Flags().StringVar(&typ, "type", "", "only volumes of this type: nbd or nfs")
	return cmd
}

// runLs lists every configured store. A store that fails does not hide
// the others: their volumes are printed, and the failure makes the exit
// status non-zero.
func (v *volumeCmd) runLs(cmd *cobra.Command, typ string) error {
	stores, err := v.stores(typ)
	if err != nil {
		return err
	}
	ctx, cancel := v.context(cmd)
	defer cancel()
	all := []volumeInfo{}
	var errs []error
	for _, s := range stores {
		vols, err := s.List(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		all = append(all, vols...)
	}
	if len(errs) == len(stores) {
		return errors.Join(errs...)
	}
	slices.SortFunc(all, func(a, b volumeInfo) int { return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Type, b.Type)) })
	if v.json {
		err = writeJSON(cmd.OutOrStdout(), all)
	} else {
		err = printVolumeTable(cmd.OutOrStdout(), all, time.Now())
	}
	return errors.Join(append(errs, err)...)
}

func printVolumeTable(w io.Writer, vols []volumeInfo, now time.Time) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tTYPE\tSIZE\tALLOCATED\tATTACHED\tCREATED")
	for _, vol := range vols {
		size, alloc := "-", "-"
		if vol.Type == backend.TypeNBD {
			size, alloc = units.HumanSize(vol.Size), units.HumanSize(vol.Allocated)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", vol.Name, vol.Type, size, alloc,
			orDash(blockvol.AttachedList(vol.Attachments)), shortTime(vol.CreatedAt))
	}
	return tw.Flush()
}

func (v *volumeCmd) inspectCommand() *cobra.Command {
	var typ string
	cmd := &cobra.Command{
		Use:   "inspect NAME... [--type nbd|nfs]",
		Short: "Show every detail of volumes, attachments included",
		Args:  cobra.MinimumNArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return v.runInspect(cmd, args, typ) },
	}
	cmd.Flags().StringVar(&typ, "type", "", "look only for volumes of this type: nbd or nfs")
	return cmd
}

// runInspect prints what it found (a name may be a volume of each type)
// and fails when a name was not found or a store could not be asked.
func (v *volumeCmd) runInspect(cmd *cobra.Command, names []string, typ string) error {
	stores, err := v.stores(typ)
	if err != nil {
		return err
	}
	ctx, cancel := v.context(cmd)
	defer cancel()
	all := []volumeInfo{}
	var errs []error
	for _, name := range names {
		found, err := findVolume(ctx, stores, name)
		for _, f := range found {
			all = append(all, f.info)
		}
		errs = append(errs, err)
	}
	if v.json {
		err = writeJSON(cmd.OutOrStdout(), all)
	} else {
		err = printInspect(cmd.OutOrStdout(), all, time.Now())
	}
	return errors.Join(append(errs, err)...)
}

// foundVolume is a volume and the store that holds it.
type foundVolume struct {
	info  volumeInfo
	store volumeStore
}

// findVolume asks every store for name. It returns what it found and the
// failures of stores that could not answer; a name found nowhere (with
// every store answering) is an error wrapping backend.ErrNotFound.
func findVolume(ctx context.Context, stores []volumeStore, name string) ([]foundVolume, error) {
	if err := volume.CheckName(name); err != nil {
		return nil, err
	}
	var found []foundVolume
	var errs []error
	for _, s := range stores {
		info, err := s.Get(ctx, name)
		switch {
		case err == nil:
			found = append(found, foundVolume{info: info, store: s})
		case !isNotFound(err):
			errs = append(errs, err)
		}
	}
	if len(found) == 0 && len(errs) == 0 {
		where := make([]string, len(stores))
		for i, s := range stores {
			where[i] = s.Where()
		}
		return nil, fmt.Errorf("no volume %q on %s (netvol volume ls lists the volumes): %w",
			name, strings.Join(where, " or "), backend.ErrNotFound)
	}
	return found, errors.Join(errs...)
}

func printInspect(w io.Writer, vols []volumeInfo, now time.Time) error {
	for i, vol := range vols {
		if i > 0 {
			fmt.Fprintln(w)
		}
		for _, kv := range inspectFields(vol) {
			fmt.Fprintf(w, "%-12s %s\n", kv[0]+":", kv[1])
		}
		if vol.Type == backend.TypeNBD {
			if err := printAttachments(w, vol, now); err != nil {
				return err
			}
		}
	}
	return nil
}

// inspectFields are inspect's "Key: value" lines of vol.
func inspectFields(vol volumeInfo) [][2]string {
	f := [][2]string{{"Name", vol.Name}, {"Type", vol.Type}, {"Server", vol.Server}}
	if vol.Type == backend.TypeNFS {
		return append(f, [][2]string{{"Export", vol.Export}, {"Mode", orDash(vol.Mode)},
			{"Owner", "uid " + idString(vol.UID) + ", gid " + idString(vol.GID)},
			{"Modified", longTime(vol.CreatedAt)}}...)
	}
	return append(f, [][2]string{{"Size", bytesString(vol.Size)}, {"Allocated", bytesString(vol.Allocated)},
		{"Created", longTime(vol.CreatedAt)}, {"From", orDash(vol.From)}, {"Labels", labelsString(vol.Labels)},
		{"Attachments", strconv.Itoa(len(vol.Attachments))}}...)
}

func bytesString(n int64) string { return fmt.Sprintf("%s (%d bytes)", units.HumanSize(n), n) }

func idString(id *int64) string {
	if id == nil {
		return "-"
	}
	return strconv.FormatInt(*id, 10)
}

func labelsString(labels map[string]string) string {
	var kv []string
	for k, v := range labels {
		kv = append(kv, k+"="+v)
	}
	slices.Sort(kv)
	return orDash(strings.Join(kv, ", "))
}

// printAttachments is inspect's table of an nbd volume's attachments.
func printAttachments(w io.Writer, vol volumeInfo, now time.Time) error {
	if len(vol.Attachments) == 0 {
		return nil
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "  NODE\tMODE\tGENERATION\tEXPIRES")
	for _, a := range vol.Attachments {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s (%s)\n", a.Node, a.Mode, a.Generation, longTime(a.Expires), relative(a.Expires, now))
	}
	return tw.Flush()
}

func (v *volumeCmd) rmCommand() *cobra.Command {
	var typ string
	var force bool
	cmd := &cobra.Command{
		Use:     "rm NAME... [--type nbd|nfs] [--force]",
		Aliases: []string{"remove"},
		Short:   "Remove volumes; nbd volumes are refused while attached",
		Long: `Remove volumes and their data. The storage daemon refuses to remove an nbd
volume while a node has it attached, or while clones depend on it, and says
which. netvol keeps no record of which hosts mount an nfs volume, so removing
one needs --force: make sure no container uses it first; its directory and
everything in it are deleted.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return v.runRm(cmd, args, typ, force) },
	}
	cmd.Flags().StringVar(&typ, "type", "", "the volume's type, when a name is a volume of each type: nbd or nfs")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove nfs volumes, which may be in use unseen")
	return cmd
}

// removedVolume is rm's JSON answer for one volume.
type removedVolume struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Where string `json:"where"`
}

// runRm removes each name it can and reports the others.
func (v *volumeCmd) runRm(cmd *cobra.Command, names []string, typ string, force bool) error {
	stores, err := v.stores(typ)
	if err != nil {
		return err
	}
	ctx, cancel := v.context(cmd)
	defer cancel()
	removed := []removedVolume{}
	var errs []error
	for _, name := range names {
		s, err := removeOne(ctx, stores, name, force)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, removedVolume{Name: name, Type: s.Type(), Where: s.Where()})
	}
	if v.json {
		err = writeJSON(cmd.OutOrStdout(), removed)
	} else {
		for _, r := range removed {
			fmt.Fprintln(cmd.OutOrStdout(), r.Name)
		}
	}
	return errors.Join(append(errs, err)...)
}

func removeOne(ctx context.Context, stores []volumeStore, name string, force bool) (volumeStore, error) {
	found, err := findVolume(ctx, stores, name)
	switch {
	case err != nil:
		return nil, fmt.Errorf("not removing %q: %w", name, err)
	case len(found) > 1:
		return nil, fmt.Errorf("not removing %q: it is a volume on %s and on %s; give --type nbd or --type nfs",
			name, found[0].store.Where(), found[1].store.Where())
	}
	s := found[0].store
	if s.Type() == backend.TypeNFS && !force {
		return nil, fmt.Errorf("not removing nfs volume %q (%s): netvol cannot tell whether a host has it mounted; "+
			"make sure no container uses it, then give --force to delete the directory and everything in it",
			name, found[0].info.Export)
	}
	return s, s.Remove(ctx, name)
}
