package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/internal/units"
	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/state"
)

// Growing a volume, attached or not.
//
// The daemon grows the image; the host that holds the volume grows its
// device and the ext4 file system on it, since only that host has them.
// The holder learns of the new size from its next lease renewal (the
// answer's "size"), grows, and reports what its device and file system
// now have (POST .../attachments/{node}/grown). A resize waits, bounded by
// ResizeWait and the call's deadline, until every live read-write holder
// reported the new size, and answers 202 with the ones still pending and
// why otherwise. A detached volume grows its file system at its next
// mount. Reports are kept in memory: after a restart a holder shows none
// until it grows again.

// DefaultResizeWait is Config.ResizeWait's default: two renewal periods
// of the default lease (a holder renews every third of it) and the growth
// itself, within the API's own deadline.
const DefaultResizeWait = 20 * time.Second

// resizeMargin is kept of the call's deadline to answer in.
const resizeMargin = time.Second

// growth holds the holders' reports, by export name (one per attachment
// generation), and wakes the resizes that wait for them.
type growth struct {
	mu      sync.Mutex
	reports map[string]growReport
	seq     uint64        // counts reports
	changed chan struct{} // closed at every report
}

type growReport struct {
	api.GrownReport
	seq uint64
}

func newGrowth() growth {
	return growth{reports: map[string]growReport{}, changed: make(chan struct{})}
}

func (g *growth) get(export string) growReport {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.reports[export]
}

func (g *growth) put(export string, r api.GrownReport) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seq++
	g.reports[export] = growReport{GrownReport: r, seq: g.seq}
	close(g.changed)
	g.changed = make(chan struct{})
}

func (g *growth) forget(export string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.reports, export)
}

// watch returns the report count and a channel closed at the next report.
func (g *growth) watch() (uint64, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.seq, g.changed
}

// ResizeVolume grows a volume to size bytes, also while a node has it
// attached, and waits for the holders to grow their device and file
// system (see above). Shrinking is refused (invalid), and so is growing a
// volume that clones made before snapshots read directly (in_use).
func (s *Service) ResizeVolume(ctx context.Context, name string, size int64) (api.ResizeResult, error) {
	if err := s.checkSize(size); err != nil {
		return api.ResizeResult{}, err
	}
	start, _ := s.growth.watch()
	holders, err := s.resize(ctx, name, size)
	if err != nil {
		return api.ResizeResult{}, err
	}
	pending := s.waitGrown(ctx, name, size, holders, start)
	v, err := s.reg.GetVolume(name)
	if err != nil {
		return api.ResizeResult{}, err
	}
	return api.ResizeResult{Volume: s.volume(v), Pending: pending}, nil
}

// resize grows the image and records the size; it returns the live
// read-write attachments, whose holders must grow too.
func (s *Service) resize(ctx context.Context, name string, size int64) ([]state.Attachment, error) {
	if err := s.acquire(ctx); err != nil {
		return nil, err
	}
	defer s.release()
	v, err := s.reg.GetVolume(name)
	if err != nil {
		return nil, err
	}
	if err := s.checkResizable(v, size); err != nil {
		return nil, err
	}
	if size > v.Size {
		lv, err := s.image(v)
		if err != nil {
			return nil, err
		}
		img := lv.img
		if img == nil {
			return nil, lv.unavailable()
		}
		if err := img.Resize(size); err != nil {
			return nil, fmt.Errorf("volume %q: %w", name, err)
		}
		if err := img.Flush(); err != nil {
			return nil, fmt.Errorf("volume %q: %w", name, err)
		}
		if v, err = s.reg.UpdateVolumeSize(name, size); err != nil {
			return nil, err
		}
		s.cfg.Log.WithFields(logrus.Fields{"volume": name, "size": size}).Info("image grown")
	}
	var holders []state.Attachment
	now := s.cfg.Now()
	for _, a := range v.Attachments {
		if a.Mode == state.ModeRW && a.Live(now) {
			holders = append(holders, a)
		}
	}
	return holders, nil
}

// checkResizable refuses a shrink, naming the current size, and a volume
// with clones made before snapshots existed, which read its image itself
// (clones of snapshots read frozen layers, which growing leaves alone).
func (s *Service) checkResizable(v state.Volume, size int64) error {
	if size < v.Size {
		return fmt.Errorf("volume %q has %d bytes (%s): %d bytes is smaller, and volumes only grow: %w",
			v.Name, v.Size, units.HumanSize(v.Size), size, state.ErrInvalid)
	}
	children, err := s.legacyClones(v.Name)
	if err != nil {
		return err
	}
	if len(children) > 0 {
		return fmt.Errorf("volume %q cannot grow: its clones read it as it is (remove them first): %w",
			v.Name, &state.InUseError{Volume: v.Name, Children: children})
	}
	return nil
}

// waitGrown waits until every holder reported size, detached, or reported
// an error since start (the report count when the resize began), and
// returns those that did not, with why.
func (s *Service) waitGrown(ctx context.Context, name string, size int64, holders []state.Attachment, start uint64) []api.PendingGrowth {
	wait := s.cfg.ResizeWait
	if d, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(d)-resizeMargin)
	}
	timer := time.NewTimer(max(wait, 0))
	defer timer.Stop()
	for {
		_, changed := s.growth.watch()
		pending, waiting := s.pendingGrowth(name, size, holders, start)
		if !waiting {
			return pending
		}
		select {
		case <-changed:
		case <-timer.C:
			return pending
		case <-ctx.Done():
			return pending
		}
	}
}

// pendingGrowth lists the holders that have not grown to size; waiting
// is whether any of them may still report.
func (s *Service) pendingGrowth(name string, size int64, holders []state.Attachment, start uint64) (pending []api.PendingGrowth, waiting bool) {
	current := map[string]bool{}
	if v, err := s.reg.GetVolume(name); err == nil {
		now := s.cfg.Now()
		for _, a := range v.Attachments {
			current[a.Export] = a.Live(now)
		}
	}
	for _, h := range holders {
		r := s.growth.get(h.Export)
		switch {
		case r.Size >= size || !current[h.Export]:
			// Grown, or detached (or lapsed): it grows at its next mount.
		case r.Error != "" && r.seq > start:
			pending = append(pending, api.PendingGrowth{Node: h.Node, Grown: r.Size,
				Why: fmt.Sprintf("node %q could not grow its device and file system: %s", h.Node, r.Error)})
		default:
			waiting = true
			pending = append(pending, api.PendingGrowth{Node: h.Node, Grown: r.Size,
				Why: fmt.Sprintf("node %q has not reported growing its device and file system yet: it learns of the new size "+
					"at its next lease renewal (within %s) and grows them then; a plugin older than this daemon never does "+
					"(the file system grows at its next mount)", h.Node, (s.cfg.LeaseTTL / 3).Round(time.Second))})
		}
	}
	return pending, waiting
}

// Grown records node's report on its attachment of volume: its device and
// file system have r.Size bytes, or could not grow (r.Error). not_found
// when node holds no attachment of volume.
func (s *Service) Grown(ctx context.Context, volume, node string, r api.GrownReport) error {
	if r.Size < 0 {
		return fmt.Errorf("size %d: must not be negative: %w", r.Size, state.ErrInvalid)
	}
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.release()
	v, err := s.reg.GetVolume(volume)
	if err != nil {
		return err
	}
	for _, a := range v.Attachments {
		if a.Node == node {
			s.growth.put(a.Export, r)
			return nil
		}
	}
	return fmt.Errorf("volume %q: node %q holds no attachment: %w", volume, node, state.ErrNotFound)
}
