package blockvol

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/nbd/apiclient"
	"github.com/netvol/netvol/nbd/daemon"
)

// Renewal timing.
const (
	minRenewWait = 50 * time.Millisecond
	maxCallWait  = 10 * time.Second
)

// lease is the renewal of one mounted volume's attachment.
type lease struct {
	name string
	stop context.CancelFunc
	done chan struct{} // closed when the renewal goroutine ended

	mu      sync.Mutex
	expires time.Time     // last expiry the server gave
	ttl     time.Duration // the lease's length, as last measured
	lost    bool
}

// update records a successful renewal at now; it reports whether the
// lease had been lost.
func (l *lease) update(now, expires time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Measured against our clock: a server clock far behind ours shows as
	// a short lease, and only makes renewals more frequent.
	if d := expires.Sub(now); d > 0 {
		l.ttl = d
	}
	l.expires = expires
	was := l.lost
	l.lost = false
	return was
}

// failed records a failed renewal at now: the lease is lost once the server
// no longer knows the attachment, or past its expiry. It reports whether
// the lease was lost just now.
func (l *lease) failed(now time.Time, gone bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost || !gone && now.Before(l.expires) {
		return false
	}
	l.lost = true
	return true
}

func (l *lease) state() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost {
		return "lost"
	}
	return "ok"
}

// wait is the time to the next renewal: a third of the lease after a
// success, a sixth after a failure, so that two retries fit before expiry.
func (l *lease) wait(ok bool) time.Duration {
	l.mu.Lock()
	ttl := l.ttl
	l.mu.Unlock()
	if ttl <= 0 {
		ttl = daemon.DefaultLeaseTTL
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
}

// startRenewal renews name's lease, which expires at expires, until
// stopRenewal (or Close).
func (b *Backend) startRenewal(name string, expires time.Time) {
	ctx, cancel := context.WithCancel(context.Background())
	l := &lease{name: name, stop: cancel, done: make(chan struct{})}
	l.update(b.cfg.Now(), expires)
	b.putLease(l)
	go b.renewLoop(ctx, l)
}

// markLost records name's lease as lost without renewing it, so that
// Fenced and Get say so until Unmount.
func (b *Backend) markLost(name string) {
	l := &lease{name: name, stop: func() {}, done: make(chan struct{}), lost: true}
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
	log := b.cfg.Log.WithFields(logrus.Fields{"volume": l.name, "node": b.cfg.Node})
	t := time.NewTimer(l.wait(true))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(l.wait(b.renewOnce(ctx, l, log)))
	}
}

// renewOnce renews l once and logs what changed; it reports success.
func (b *Backend) renewOnce(ctx context.Context, l *lease, log logrus.FieldLogger) bool {
	cctx, cancel := context.WithTimeout(ctx, l.callTimeout())
	got, err := b.cfg.API.Renew(cctx, l.name, b.cfg.Node)
	cancel()
	if ctx.Err() != nil {
		return true // stopping: nothing to report
	}
	now := b.cfg.Now()
	if err == nil {
		if l.update(now, got.Expires) {
			log.WithField("expires", got.Expires.Format(time.RFC3339)).Warn("lease renewed again after it was lost")
		}
		return true
	}
	if l.failed(now, errors.Is(err, apiclient.ErrNotFound)) {
		log.WithError(err).Error("lease lost: the storage server may give the volume to another node; still retrying")
		return false
	}
	log.WithError(err).Warn("lease renewal failed; retrying")
	return false
}
