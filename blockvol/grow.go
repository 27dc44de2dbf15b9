package blockvol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/server/api"
)

// Growing a mounted volume. The storage daemon grows the image; this host,
// which holds the volume, grows the device and the file system on it.
// Every lease renewal's answer carries the volume's size; when it is
// larger than the device, the renewal starts a growth beside it (the
// lease keeps being renewed meanwhile): the Attacher's Grower gives the
// device the export's new size (the kernel's NBD driver through netlink,
// the userspace attach through its helper and LOOP_SET_CAPACITY), then the
// FSGrower grows ext4 online. The result, or why it failed, goes to the
// daemon at once (ReportGrown), which is what a resize waits for. A failed
// growth is tried again at a renewal after growRetry, or at once for a
// new size. A volume grown while detached grows its file system at its
// next mount (growAtMount), and a mount found at start is checked too.

// Growth timing.
const (
	growTimeout = 2 * time.Minute // one growth of a device and its file system
	growRetry   = time.Minute     // a failed growth is tried again after this
)

// growState is a lease's growth: what the device and its file system
// have, and the last failure.
type growState struct {
	size       int64 // bytes the device and its file system have, as far as we know
	running    bool
	failedSize int64 // the size a growth last failed to reach
	failedAt   time.Time
}

// setTarget records where the file system is mounted.
func (l *lease) setTarget(target string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.target = target
}

// setMounted records where the file system is mounted and the size it
// and its device have (0: unknown).
func (l *lease) setMounted(target string, size int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.target, l.grow.size = target, size
}

// startGrow reports whether a growth to size should start now, and marks
// it running if so.
func (l *lease) startGrow(size int64, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := &l.grow
	switch {
	case size <= g.size, g.running, l.lost, l.device.Path == "" || l.target == "":
		return false
	case size == g.failedSize && now.Sub(g.failedAt) < growRetry:
		return false
	}
	g.running = true
	l.growing.Add(1)
	return true
}

// endGrow records a growth's result: the size reached, or a failure to
// reach size.
func (l *lease) endGrow(size, reached int64, ok bool, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := &l.grow
	g.running = false
	if reached > g.size {
		g.size = reached
	}
	if ok {
		g.failedSize = 0
	} else {
		g.failedSize, g.failedAt = size, now
	}
}

// growTarget is what a growth needs: device, export and mount.
func (l *lease) growTarget() (Device, string, string, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.device, l.export, l.target, l.grow.size
}

// maybeGrow starts growing l's device and file system when the volume
// (size, from a renewal) is larger than they are.
func (b *Backend) maybeGrow(ctx context.Context, l *lease, size int64, log logrus.FieldLogger) {
	if !l.startGrow(size, b.cfg.Now()) {
		return
	}
	go func() {
		defer l.growing.Done()
		b.grow(ctx, l, size, log)
	}()
}

// grow grows l's device and file system to the volume's size and reports
// the result to the daemon.
func (b *Backend) grow(ctx context.Context, l *lease, size int64, log logrus.FieldLogger) {
	dev, _, target, had := l.growTarget()
	log = log.WithFields(logrus.Fields{"device": dev.Path, "size": size, "from": had})
	gctx, cancel := context.WithTimeout(ctx, growTimeout)
	reached, err := b.growDevice(gctx, l)
	cancel()
	if err == nil && reached < size {
		err = fmt.Errorf("the device has %d bytes after growing, not the volume's %d", reached, size)
	}
	if ctx.Err() != nil {
		l.endGrow(size, 0, false, b.cfg.Now())
		return // unmounted meanwhile: nothing to report
	}
	report := api.GrownReport{Size: max(reached, had)}
	if err != nil {
		report.Error = err.Error()
		log.WithError(err).Error("the volume grew, but growing its device and file system here failed; retrying later")
	} else {
		log.WithField("target", target).Info("volume grew: device and file system grown online")
	}
	l.endGrow(size, reached, err == nil, b.cfg.Now())
	rctx, rcancel := context.WithTimeout(ctx, maxCallWait)
	defer rcancel()
	if err := l.m.api.ReportGrown(rctx, l.name, b.cfg.Node, report); err != nil && ctx.Err() == nil {
		log.WithError(err).Warn("reporting the growth to the storage server failed")
	}
}

// growDevice grows l's device (Grower), then its file system (FSGrower),
// and returns the size both have then; 0 when the file system did not grow.
func (b *Backend) growDevice(ctx context.Context, l *lease) (int64, error) {
	dev, export, target, _ := l.growTarget()
	g, ok := b.cfg.Attacher.(Grower)
	if !ok {
		return 0, fmt.Errorf("the attach method %q cannot grow a device in use: the file system grows at the next mount", dev.Method)
	}
	if b.cfg.FSGrower == nil {
		return 0, errors.New("this plugin grows no file systems (no FSGrower): the file system grows at the next mount")
	}
	addr, err := b.nbdAddr(ctx, l.m)
	if err != nil {
		return 0, fmt.Errorf("finding the NBD server: %w", err)
	}
	if _, err := g.Grow(ctx, dev, b.dialer(addr, export)); err != nil {
		return 0, fmt.Errorf("growing %s: %w", dev.Path, err)
	}
	return b.cfg.FSGrower.GrowFS(ctx, dev.Path, target)
}

// growAtMount grows the file system just mounted (or found mounted at
// start) to its device, which has the volume's size since its attach:
// the volume may have grown while it was detached, or while this host's
// earlier growth was cut short. A failure leaves the volume mounted at
// its old size; the renewals try again and report it.
func (b *Backend) growAtMount(ctx context.Context, l *lease, dev Device, target string) {
	// The target is recorded last, with the size: a renewal meanwhile
	// must not start a growth beside this one.
	var n int64
	var err error
	if b.cfg.FSGrower == nil {
		n, err = deviceSize(dev.Path)
	} else if n, err = b.cfg.FSGrower.GrowFS(ctx, dev.Path, target); err != nil {
		b.cfg.Log.WithFields(logrus.Fields{"volume": l.name, "node": b.cfg.Node, "device": dev.Path}).WithError(err).
			Warn("growing the file system to its device failed; the volume is mounted at its old size")
	}
	if err != nil {
		n = 0 // unknown: the first renewal tries again, and reports
	}
	l.setMounted(target, n)
}

// deviceSize is the size of a block device (or file) in bytes.
func deviceSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, io.SeekEnd)
}
