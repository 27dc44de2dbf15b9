package opcmd

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/netvol/netvol/internal/names"
	"github.com/netvol/netvol/internal/units"
	"github.com/netvol/netvol/server/api"
)

// Snapshots of nbd volumes: netvol volume snapshot create|ls|rm and
// netvol volume rollback.

// withHolder runs f, within the commands' deadline, against the storage
// daemon that holds vol (in a pool, the one it lives on).
func (v *Volumes) withHolder(ctx context.Context, vol string, f func(context.Context, nbdStore) error) error {
	bs, err := v.nbdStore()
	if err != nil {
		return err
	}
	ctx, cancel := v.context(ctx)
	defer cancel()
	s, err := bs.holder(ctx, vol)
	if err != nil {
		return err
	}
	return f(ctx, s)
}

// SnapshotCreate takes snapshot name of volume vol.
func (v *Volumes) SnapshotCreate(ctx context.Context, vol, name string) error {
	if err := checkSnapshotArgs(vol, name); err != nil {
		return err
	}
	return v.withHolder(ctx, vol, func(ctx context.Context, s nbdStore) error {
		sn, err := s.api.CreateSnapshot(ctx, vol, name)
		if err != nil {
			return s.fail(fmt.Sprintf("taking snapshot %q of nbd volume %q", name, vol), err)
		}
		if v.JSON {
			return WriteJSON(v.Out, sn)
		}
		_, err = fmt.Fprintln(v.Out, vol+"@"+sn.Name)
		return err
	})
}

// SnapshotLs lists vol's snapshots: NAME CREATED SIZE ALLOCATED CLONES.
func (v *Volumes) SnapshotLs(ctx context.Context, vol string) error {
	if err := names.CheckVolume(vol); err != nil {
		return err
	}
	return v.withHolder(ctx, vol, func(ctx context.Context, s nbdStore) error {
		list, err := s.api.ListSnapshots(ctx, vol)
		if err != nil {
			return s.fail("listing the snapshots of nbd volume "+strconv.Quote(vol), err)
		}
		if v.JSON {
			return WriteJSON(v.Out, list)
		}
		return printSnapshots(v.Out, list, "")
	})
}

// printSnapshots is a table of snapshots, each line after indent.
func printSnapshots(w io.Writer, list []api.Snapshot, indent string) error {
	tw := newTable(w)
	fmt.Fprintln(tw, indent+"NAME\tCREATED\tSIZE\tALLOCATED\tCLONES")
	for _, sn := range list {
		clones := "-"
		if len(sn.Clones) > 0 {
			clones = strings.Join(sn.Clones, ", ")
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\n", indent, sn.Name, sn.CreatedAt.UTC().Format(time.RFC3339),
			units.HumanSize(sn.Size), units.HumanSize(sn.Allocated), clones)
	}
	return tw.Flush()
}

// SnapshotRm removes snapshot name of vol; refused while clones were made
// from it.
func (v *Volumes) SnapshotRm(ctx context.Context, vol, name string) error {
	if err := checkSnapshotArgs(vol, name); err != nil {
		return err
	}
	return v.withHolder(ctx, vol, func(ctx context.Context, s nbdStore) error {
		if err := s.api.DeleteSnapshot(ctx, vol, name); err != nil {
			return s.fail(fmt.Sprintf("removing snapshot %q of nbd volume %q", name, vol), err)
		}
		_, err := fmt.Fprintln(v.Out, vol+"@"+name)
		return err
	})
}

// Rollback resets vol to its snapshot name; refused while vol is attached.
func (v *Volumes) Rollback(ctx context.Context, vol, name string) error {
	if err := checkSnapshotArgs(vol, name); err != nil {
		return err
	}
	return v.withHolder(ctx, vol, func(ctx context.Context, s nbdStore) error {
		got, err := s.api.Rollback(ctx, vol, name)
		if err != nil {
			return s.fail(fmt.Sprintf("rolling nbd volume %q back to snapshot %q", vol, name), err)
		}
		return v.printChanged(s.info(got), vol+"@"+name)
	})
}

func checkSnapshotArgs(vol, name string) error {
	if err := names.CheckVolume(vol); err != nil {
		return err
	}
	if err := names.CheckVolume(name); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}
