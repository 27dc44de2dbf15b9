package opcmd

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/netvol/netvol/internal/names"
	"github.com/netvol/netvol/internal/units"
	"github.com/netvol/netvol/server/api"
)

// Backups of nbd volumes: netvol volume backup create|ls|rm|verify and
// netvol volume restore. They move data and take as long as that: give
// them a Timeout with room (netvol volume's --timeout).

// BackupCreate backs vol up to the storage daemon's backup target.
func (v *Volumes) BackupCreate(ctx context.Context, vol string) error {
	if err := names.CheckVolume(vol); err != nil {
		return err
	}
	s, err := v.nbdStore()
	if err != nil {
		return err
	}
	ctx, cancel := v.context(ctx)
	defer cancel()
	h, err := s.holder(ctx, vol)
	if err != nil {
		return err
	}
	b, err := h.api.CreateBackup(ctx, vol)
	if err != nil {
		return h.fail("backing up nbd volume "+strconv.Quote(vol), err)
	}
	if v.JSON {
		return WriteJSON(v.Out, b)
	}
	_, err = fmt.Fprintln(v.Out, b.ID)
	return err
}

// BackupLs lists the backups on the target, of vol or ("") of all:
// ID VOLUME CREATED SIZE DATA STORED PARENT.
func (v *Volumes) BackupLs(ctx context.Context, vol string) error {
	if vol != "" {
		if err := names.CheckVolume(vol); err != nil {
			return err
		}
	}
	s, err := v.nbdStore()
	if err != nil {
		return err
	}
	d, err := s.backupDaemon()
	if err != nil {
		return err
	}
	ctx, cancel := v.context(ctx)
	defer cancel()
	list, err := d.api.ListBackups(ctx, vol)
	if err != nil {
		return s.fail("listing backups", err)
	}
	if v.JSON {
		return WriteJSON(v.Out, list)
	}
	return printBackups(v.Out, list)
}

func printBackups(w io.Writer, list []api.Backup) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tVOLUME\tCREATED\tSIZE\tDATA\tSTORED\tPARENT")
	for _, b := range list {
		parent := b.Parent
		if parent == "" {
			parent = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.ID, b.Volume, b.CreatedAt.UTC().Format(time.RFC3339),
			units.HumanSize(b.Size), units.HumanSize(b.DataBytes), units.HumanSize(b.StoredBytes), parent)
	}
	return tw.Flush()
}

// BackupRm removes a backup (the others stay whole: none depends on it).
func (v *Volumes) BackupRm(ctx context.Context, id string) error {
	s, err := v.nbdStore()
	if err != nil {
		return err
	}
	d, err := s.backupDaemon()
	if err != nil {
		return err
	}
	ctx, cancel := v.context(ctx)
	defer cancel()
	if err := d.api.DeleteBackup(ctx, id); err != nil {
		return s.fail("removing backup "+id, err)
	}
	_, err = fmt.Fprintln(v.Out, id)
	return err
}

// BackupVerify reads every chunk of a backup back and checks it.
func (v *Volumes) BackupVerify(ctx context.Context, id string) error {
	s, err := v.nbdStore()
	if err != nil {
		return err
	}
	d, err := s.backupDaemon()
	if err != nil {
		return err
	}
	ctx, cancel := v.context(ctx)
	defer cancel()
	r, err := d.api.VerifyBackup(ctx, id)
	if err != nil {
		return s.fail("verifying backup "+id, err)
	}
	if v.JSON {
		return WriteJSON(v.Out, r)
	}
	_, err = fmt.Fprintf(v.Out, "%s: %d chunks, %s, every checksum matches\n", r.ID, r.Chunks, units.HumanSize(r.Bytes))
	return err
}

// Restore makes volume name of backup id on the storage daemon (any
// daemon that sees the backup target; in a pool, the one placement
// picks, as for a create).
func (v *Volumes) Restore(ctx context.Context, id, name string) error {
	if err := names.CheckVolume(name); err != nil {
		return err
	}
	s, err := v.nbdStore()
	if err != nil {
		return err
	}
	ctx, cancel := v.context(ctx)
	defer cancel()
	vol, err := s.restore(ctx, api.CreateRequest{Name: name, FromBackup: id})
	if err != nil {
		return s.fail(fmt.Sprintf("restoring backup %s as nbd volume %q", id, name), err)
	}
	if v.JSON {
		return WriteJSON(v.Out, vol)
	}
	_, err = fmt.Fprintln(v.Out, vol.Name)
	return err
}
