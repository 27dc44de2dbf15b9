package server

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/state"
)

// Labels that schedule a volume's backups: the plugin stores the options
// -o backup-every=1h and -o backup-keep=24 under them.
const (
	LabelBackupEvery = "netvol.backup-every"
	LabelBackupKeep  = "netvol.backup-keep"
)

// Schedule is when to back a volume up and how many backups to keep: a
// volume's labels, else the daemon's defaults (--backup-every,
// --backup-keep). Every 0 means no scheduled backups; Keep 0 keeps all.
type Schedule struct {
	Every time.Duration
	Keep  int
}

// scheduleOf is v's schedule: its labels over the defaults.
func scheduleOf(labels map[string]string, def Schedule) (Schedule, error) {
	sc := def
	if s, ok := labels[LabelBackupEvery]; ok {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return sc, fmt.Errorf("label %s=%q: want a duration such as 1h", LabelBackupEvery, s)
		}
		sc.Every = d
	}
	if s, ok := labels[LabelBackupKeep]; ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return sc, fmt.Errorf("label %s=%q: want a number of backups", LabelBackupKeep, s)
		}
		sc.Keep = n
	}
	return sc, nil
}

// RunBackupSchedule backs up every volume whose schedule is due, checking
// every tick, until ctx ends; after each backup the volume's oldest
// backups beyond its Keep are removed. When a volume was last backed up is
// in the registry, so a restart neither skips nor repeats a backup.
func (s *Service) RunBackupSchedule(ctx context.Context, def Schedule, tick time.Duration) {
	if s.cfg.Backups == nil {
		return
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		s.runDueBackups(ctx, def)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// runDueBackups runs the backups that are due, one after another.
func (s *Service) runDueBackups(ctx context.Context, def Schedule) {
	vols, err := s.reg.ListVolumes()
	if err != nil {
		s.cfg.Log.WithError(err).Error("backup schedule: listing volumes")
		return
	}
	for _, v := range vols {
		if ctx.Err() != nil {
			return
		}
		log := s.cfg.Log.WithField("volume", v.Name)
		sc, err := scheduleOf(v.Labels, def)
		if err != nil {
			log.WithError(err).Warn("backup schedule: ignoring the volume's schedule")
			continue
		}
		if sc.Every <= 0 || !s.due(v.Name, sc.Every) {
			continue
		}
		start := time.Now()
		b, err := s.CreateBackup(ctx, v.Name)
		if err != nil {
			log.WithError(err).Error("scheduled backup failed")
			continue
		}
		log.WithFields(logrus.Fields{"backup": b.ID, "parent": b.Parent, "stored_bytes": b.StoredBytes,
			"seconds": time.Since(start).Seconds()}).Info("scheduled backup taken")
		if sc.Keep > 0 {
			if gone, err := s.PruneBackups(ctx, v.Name, sc.Keep); err != nil {
				log.WithError(err).Error("backup retention failed")
			} else if len(gone) > 0 {
				log.WithField("removed", gone).Info("old backups removed (retention)")
			}
		}
	}
}

// due reports whether the volume's last backup is every old or older.
func (s *Service) due(volume string, every time.Duration) bool {
	bs, err := s.reg.BackupState(volume)
	return err == nil && (bs.LastAt.IsZero() || time.Since(bs.LastAt) >= every)
}

// PruneBackups removes the volume's oldest backups beyond the keep
// newest; the backup the next one will be incremental to is always kept.
// No backup depends on another (each lists all its chunks), so removing
// any leaves the others whole.
func (s *Service) PruneBackups(ctx context.Context, volume string, keep int) ([]string, error) {
	e, err := s.engine()
	if err != nil {
		return nil, err
	}
	if keep < 1 {
		return nil, fmt.Errorf("keep %d: at least one: %w", keep, state.ErrInvalid)
	}
	ms, err := e.List(ctx, volume)
	if err != nil || len(ms) <= keep {
		return nil, err
	}
	bs, _ := s.reg.BackupState(volume)
	var gone []string
	for _, m := range ms[:len(ms)-keep] {
		if m.ID != bs.Last {
			gone = append(gone, m.ID)
		}
	}
	if len(gone) == 0 {
		return nil, nil
	}
	_, err = e.Delete(ctx, gone...)
	return slices.Clip(gone), err
}
