package blockvol

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/server/api"
)

// Renewal timing.
const (
	minRenewWait = 50 * time.Millisecond
	maxCallWait  = 10 * time.Second
)

// lease is the renewal of one mounted volume's attachment. Its timing is
// counted on this host's clock from the time left the server reports, so
// no clock is compared with the server's.
type lease struct {
	m    *member // the storage server that holds the attachment
	name string
	stop context.CancelFunc
	done chan struct{} // closed when the renewal goroutine ended

	mu       sync.Mutex
	deadline time.Time     // when the lease lapses unless renewed, on our clock
	ttl      time.Duration // the lease's length, as last reported
	lost     bool
	why      string // why it was lost, for Get's Status
	device   Device // released when the server no longer holds the attachment
	export   string // the NBD export name, to connect again after a daemon restart
	instance string // the daemon's run, as last reported
	target   string // where the file system is mounted, to grow it
	grow     growState
	growing  sync.WaitGroup // a growth running (grow.go)
}

// remaining is the time a grant or renewal left: what the server says, or
// for a server that does not say, its expiry measured against our clock
// (a server clock behind ours then only makes renewals more frequent).
func remaining(now time.Time, g api.Lease) time.Duration {
	if g.ExpiresInMS > 0 {
		return time.Duration(g.ExpiresInMS) * time.Millisecond
	}
	return g.Expires.Sub(now)
}

// update records a successful renewal at now; it reports whether the
// lease had been lost.
func (l *lease) update(now time.Time, g api.Lease) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := remaining(now, g)
	if d > 0 {
		l.ttl = d
	}
	l.deadline = now.Add(d)
	was := l.lost
	l.lost, l.why = false, ""
	return was
}

// failed records a failed renewal at now: the lease is lost once the server
// no longer knows the attachment (that reason then replaces any earlier
// one), or past its deadline. It reports whether the lease was lost just
// now.
func (l *lease) failed(now time.Time, gone bool, why string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	was := l.lost
	if gone || !was && !now.Before(l.deadline) {
		l.lost, l.why = true, why
	}
	return l.lost && !was
}

func (l *lease) state() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost {
		return "lost"
	}
	return "ok"
}

// lostWhy says why the lease was lost; "" while it holds.
func (l *lease) lostWhy() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.why
}

// setDevice records the device to release should the server drop the
// attachment. It reports false, recording nothing, when the lease is lost
// already: nobody would release the device then.
func (l *lease) setDevice(d Device) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost {
		return false
	}
	l.device = d
	return true
}

// setExport records the export name, for reconnecting after a restart.
func (l *lease) setExport(export string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.export = export
}

// sawInstance records the daemon's run named in an answer and reports
// whether it differs from the one seen before (the daemon restarted).
func (l *lease) sawInstance(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	changed := id != "" && l.instance != "" && id != l.instance
	if id != "" {
		l.instance = id
	}
	return changed
}

// reconnectTarget is what reconnecting needs: the device and export.
func (l *lease) reconnectTarget() (Device, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.device, l.export
}

// takeDevice returns the device to release, once.
func (l *lease) takeDevice() Device {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.device
	l.device = Device{}
	return d
}

// wait is the time to the next renewal: a third of the lease after a
// success, a sixth after a failure, so that two retries fit before expiry.
func (l *lease) wait(ok bool) time.Duration {
	l.mu.Lock()
	ttl := l.ttl
	l.mu.Unlock()
	if ttl <= 0 {
		ttl = api.DefaultLeaseTTL
	}
	if !ok {
		return max(ttl/6, minRenewWait)
	}
	return max(ttl/3, minRenewWait)
}

// callTimeout bounds one renewal call.
func (l *lease) callTimeout() time.Duration {
	return min(max(l.wait(true), time.Second), maxCallWait)
}

func (l *lease) halt() {
	l.stop()
	<-l.done
	l.growing.Wait()
}

// startRenewal renews name's lease, as granted or last renewed, until
// stopRenewal (or Close). dev, when known, is released should the server
// drop the attachment (setDevice gives it later).
func (b *Backend) startRenewal(m *member, name string, granted api.Lease, dev Device) *lease {
	ctx, cancel := context.WithCancel(context.Background())
	l := &lease{m: m, name: name, stop: cancel, done: make(chan struct{}), device: dev}
	l.update(b.cfg.Now(), granted)
	l.sawInstance(granted.Instance)
	b.putLease(l)
	go b.renewLoop(ctx, l)
	return l
}

// markLost records name's lease as lost without renewing it, so that
// Fenced and Get say so until Unmount.
func (b *Backend) markLost(name, why string) {
	l := &lease{name: name, stop: func() {}, done: make(chan struct{}), lost: true, why: why}
	close(l.done)
	b.putLease(l)
}

func (b *Backend) putLease(l *lease) {
	b.mu.Lock()
	old := b.leases[l.name]
	b.leases[l.name] = l
	b.mu.Unlock()
	if old != nil {
		old.halt()
	}
}

func (b *Backend) stopRenewal(name string) {
	b.mu.Lock()
	l := b.leases[name]
	delete(b.leases, name)
	b.mu.Unlock()
	if l != nil {
		l.halt()
	}
}

func (b *Backend) lease(name string) *lease {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.leases[name]
}

// Fenced reports whether this host's lease on name is lost: the storage
// server may have handed the volume to another node, and writes through
// this host's device may be refused.
func (b *Backend) Fenced(name string) bool {
	l := b.lease(name)
	return l != nil && l.state() == "lost"
}

func (b *Backend) renewLoop(ctx context.Context, l *lease) {
	defer close(l.done)
	log := b.cfg.Log.WithFields(logrus.Fields{"volume": l.name, "node": b.cfg.Node, "server": l.m.name})
	t := time.NewTimer(l.wait(true))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, gone := b.renewOnce(ctx, l, log)
		if gone != nil {
			b.fence(ctx, l, gone, log)
			return
		}
		t.Reset(l.wait(ok))
	}
}

// renewOnce renews l once and logs what changed. It reports success, and
// as gone the server's answer when it will never renew the attachment:
// not_found once it no longer holds it (taken over by another node,
// detached, or fenced by a clone of the volume), in_use for a read-write
// attachment of a volume that has clones. Then there is nothing left to
// renew.
func (b *Backend) renewOnce(ctx context.Context, l *lease, log logrus.FieldLogger) (ok bool, gone error) {
	cctx, cancel := context.WithTimeout(ctx, l.callTimeout())
	got, err := l.m.api.Renew(cctx, l.name, b.cfg.Node)
	cancel()
	if ctx.Err() != nil {
		return true, nil // stopping: nothing to report
	}
	now := b.cfg.Now()
	if err == nil {
		if l.update(now, got) {
			log.WithField("expires", got.Expires.Format(time.RFC3339)).Warn("lease renewed again after it was lost")
		}
		if l.sawInstance(got.Instance) {
			if got.LostWrites {
				// The daemon fails this attachment's flushes, so the file
				// system learns of it at its next commit; reads go on.
				log.Error("the storage node went down uncleanly: writes not yet flushed may be lost, and every flush of this volume fails until it is unmounted and mounted again (ext4 then replays its journal)")
			}
			b.reconnect(ctx, l, log)
		}
		b.maybeGrow(ctx, l, got.Size, log)
		return true, nil
	}
	if errors.Is(err, api.ErrNotFound) || errors.Is(err, api.ErrInUse) {
		return false, err
	}
	if l.failed(now, false, "not renewed within its term: "+err.Error()) {
		log.WithError(err).Error("lease lost: the storage server may give the volume to another node; still retrying")
		return false, nil
	}
	log.WithError(err).Warn("lease renewal failed; retrying")
	return false, nil
}

// reconnect gives the device new connections after the daemon restarted
// (which closed the old ones). Attachers that reconnect on their own, or
// cannot, are left alone.
func (b *Backend) reconnect(ctx context.Context, l *lease, log logrus.FieldLogger) {
	r, ok := b.cfg.Attacher.(Reconnector)
	dev, export := l.reconnectTarget()
	if !ok || dev.Path == "" || export == "" {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, undoTimeout)
	defer cancel()
	addr, err := b.nbdAddr(cctx, l.m)
	if err == nil {
		err = r.Reconnect(cctx, dev, b.dialer(addr, export))
	}
	log = log.WithField("device", dev.Path)
	if err != nil {
		log.WithError(err).Error("the storage daemon restarted; reconnecting the device failed: its I/O fails once the kernel's dead-connection timeout passes")
		return
	}
	log.Warn("the storage daemon restarted; device reconnected")
}

// fence handles an attachment the server no longer holds or will not
// renew (renewOnce's gone): the lease is lost for good, and the device is
// released at once, so that I/O on it fails now instead of hanging until
// the kernel gives up on the closed connections (its request and
// dead-connection timeouts). The file system stays mounted, failing,
// until Docker unmounts it.
func (b *Backend) fence(ctx context.Context, l *lease, gone error, log logrus.FieldLogger) {
	why := "the storage server no longer holds this node's attachment" + b.holderNow(ctx, l.m, l.name)
	if !errors.Is(gone, api.ErrNotFound) {
		why = "the storage server will not renew this node's attachment: " + gone.Error()
	}
	// Fenced turns true only once the device is released and it is logged.
	defer l.failed(b.cfg.Now(), true, why)
	log = log.WithField("reason", why)
	dev := l.takeDevice()
	if dev.Path == "" {
		log.Error("lease lost: volume fenced on this host; its writes fail from now on")
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	if err := b.cfg.Attacher.Detach(rctx, dev); err != nil {
		log.WithError(err).WithField("device", dev.Path).Error("lease lost: volume fenced on this host; releasing its device failed")
		return
	}
	log.WithField("device", dev.Path).Error("lease lost: volume fenced on this host; device released, its I/O fails from now on")
}

// holderNow names, for messages, the node that holds name now, if any.
func (b *Backend) holderNow(ctx context.Context, m *member, name string) string {
	cctx, cancel := context.WithTimeout(ctx, maxCallWait)
	defer cancel()
	v, err := m.api.GetVolume(cctx, name)
	if err != nil {
		return ""
	}
	for _, a := range v.Attachments {
		if a.Node != b.cfg.Node {
			return fmt.Sprintf(" (node %q holds it now, %s)", a.Node, a.Mode)
		}
	}
	return ""
}
