package opcmd

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

	"github.com/netvol/netvol/blockvol"
	"github.com/netvol/netvol/internal/units"
	"github.com/netvol/netvol/volume"
	"github.com/netvol/netvol/volume/backend"
)

// Volumes runs the volume subcommands; a value serves one command.
type Volumes struct {
	Conn Conn // how to reach the servers; UseLocalDaemon is applied when none is configured
	// DefaultType and DefaultSize are create's defaults, netvol plugin's
	// --default-type ("": nbd when a storage daemon is configured, else
	// nfs) and --default-size.
	DefaultType, DefaultSize string
	JSON                     bool          // print JSON instead of a table
	Timeout                  time.Duration // give up on the servers after this long
	Out                      io.Writer
}

// context bounds one command's work by the timeout.
func (v *Volumes) context(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, v.Timeout)
}

// stores returns the configured stores of type typ ("" for every type),
// nbd first.
func (v *Volumes) stores(typ string) ([]volumeStore, error) {
	if typ != "" && typ != backend.TypeNBD && typ != backend.TypeNFS {
		return nil, fmt.Errorf("--type %q: want nbd or nfs", typ)
	}
	v.Conn.UseLocalDaemon()
	var out []volumeStore
	if v.Conn.Server != "" && typ != backend.TypeNFS {
		s, err := v.nbdStore()
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if v.Conn.NFS != "" && typ != backend.TypeNBD {
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
func (v *Volumes) store(typ string) (volumeStore, error) {
	if typ == backend.TypeNBD {
		return v.nbdStore()
	}
	if typ == backend.TypeNFS {
		return v.nfsStore()
	}
	return nil, fmt.Errorf("type %q: want nbd or nfs", typ)
}

func (v *Volumes) nbdStore() (blockStore, error) {
	v.Conn.UseLocalDaemon()
	if v.Conn.Server == "" {
		return nil, notConfigured(backend.TypeNBD)
	}
	if servers, err := v.Conn.Servers(); err != nil {
		return nil, err
	} else if len(servers) > 1 {
		clients, err := v.Conn.APIClients()
		if err != nil {
			return nil, err
		}
		return newPoolStore(clients)
	}
	api, err := v.Conn.APIClient()
	if err != nil {
		return nil, err
	}
	return nbdStore{api: api}, nil
}

func (v *Volumes) nfsStore() (nfsStore, error) {
	if v.Conn.NFS == "" {
		return nfsStore{}, notConfigured(backend.TypeNFS)
	}
	b, err := v.Conn.NFSBackend(v.Timeout)
	if err != nil {
		return nfsStore{}, err
	}
	return nfsStore{b: b, export: v.Conn.NFS}, nil
}

// Ls lists every configured store. A store that fails does not hide
// the others: their volumes are printed, and the failure makes the exit
// status non-zero.
func (v *Volumes) Ls(ctx context.Context, typ string) error {
	stores, err := v.stores(typ)
	if err != nil {
		return err
	}
	ctx, cancel := v.context(ctx)
	defer cancel()
	all := []VolumeInfo{}
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
	slices.SortFunc(all, func(a, b VolumeInfo) int { return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Type, b.Type)) })
	if v.JSON {
		err = WriteJSON(v.Out, all)
	} else {
		err = printVolumeTable(v.Out, all, time.Now())
	}
	return errors.Join(append(errs, err)...)
}

func printVolumeTable(w io.Writer, vols []VolumeInfo, now time.Time) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tTYPE\tSERVER\tSIZE\tALLOCATED\tATTACHED\tCREATED")
	for _, vol := range vols {
		size, alloc := "-", "-"
		if vol.Type == backend.TypeNBD {
			size, alloc = units.HumanSize(vol.Size), units.HumanSize(vol.Allocated)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", vol.Name, vol.Type, OrDash(serverColumn(vol.Server)), size, alloc,
			OrDash(blockvol.AttachedList(vol.Attachments)), shortTime(vol.CreatedAt))
	}
	return tw.Flush()
}

// serverColumn is a server as ls shows it: host:port, without a scheme.
func serverColumn(s string) string {
	if _, rest, ok := strings.Cut(s, "://"); ok {
		return rest
	}
	return s
}

// Inspect prints what it found (a name may be a volume of each type)
// and fails when a name was not found or a store could not be asked.
func (v *Volumes) Inspect(ctx context.Context, names []string, typ string) error {
	stores, err := v.stores(typ)
	if err != nil {
		return err
	}
	ctx, cancel := v.context(ctx)
	defer cancel()
	all := []VolumeInfo{}
	var errs []error
	for _, name := range names {
		found, err := findVolume(ctx, stores, name)
		for _, f := range found {
			all = append(all, f.info)
		}
		errs = append(errs, err)
	}
	if v.JSON {
		err = WriteJSON(v.Out, all)
	} else {
		err = printInspect(v.Out, all, time.Now())
	}
	return errors.Join(append(errs, err)...)
}

// foundVolume is a volume and the store that holds it.
type foundVolume struct {
	info  VolumeInfo
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

func printInspect(w io.Writer, vols []VolumeInfo, now time.Time) error {
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
			if len(vol.Snapshots) > 0 {
				if err := printSnapshots(w, vol.Snapshots, "  "); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// inspectFields are inspect's "Key: value" lines of vol.
func inspectFields(vol VolumeInfo) [][2]string {
	f := [][2]string{{"Name", vol.Name}, {"Type", vol.Type}, {"Server", vol.Server}}
	if vol.Type == backend.TypeNFS {
		return append(f, [][2]string{{"Export", vol.Export}, {"Mode", OrDash(vol.Mode)},
			{"Owner", "uid " + idString(vol.UID) + ", gid " + idString(vol.GID)},
			{"Modified", longTime(vol.CreatedAt)}}...)
	}
	return append(f, [][2]string{{"Size", bytesString(vol.Size)}, {"Allocated", bytesString(vol.Allocated)},
		{"Created", longTime(vol.CreatedAt)}, {"From", OrDash(fromString(vol))}, {"Labels", labelsString(vol.Labels)},
		{"Attachments", strconv.Itoa(len(vol.Attachments))}, {"Snapshots", strconv.Itoa(len(vol.Snapshots))}}...)
}

// fromString is a clone's source: VOLUME, or VOLUME@SNAPSHOT.
func fromString(vol VolumeInfo) string {
	if vol.FromSnap != "" {
		return vol.From + "@" + vol.FromSnap
	}
	return vol.From
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
	return OrDash(strings.Join(kv, ", "))
}

// printAttachments is inspect's table of an nbd volume's attachments.
func printAttachments(w io.Writer, vol VolumeInfo, now time.Time) error {
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

// RemovedVolume is rm's JSON answer for one volume.
type RemovedVolume struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Where string `json:"where"`
}

// Rm removes each name it can and reports the others.
func (v *Volumes) Rm(ctx context.Context, names []string, typ string, force bool) error {
	stores, err := v.stores(typ)
	if err != nil {
		return err
	}
	ctx, cancel := v.context(ctx)
	defer cancel()
	removed := []RemovedVolume{}
	var errs []error
	for _, name := range names {
		s, err := removeOne(ctx, stores, name, force)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, RemovedVolume{Name: name, Type: s.Type(), Where: s.Where()})
	}
	if v.JSON {
		err = WriteJSON(v.Out, removed)
	} else {
		for _, r := range removed {
			fmt.Fprintln(v.Out, r.Name)
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
