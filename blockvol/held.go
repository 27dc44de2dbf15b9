package blockvol

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume/backend"
)

// Waiting for another node's lease in Mount.
const (
	// heldMargin is kept of the caller's deadline for the rest of Mount
	// (device, probe, mount) once the lease has lapsed.
	heldMargin = 5 * time.Second
	// heldPoll is the longest wait between two attach attempts, so that
	// the holder's detach is seen early.
	heldPoll = time.Second
	// lapseSlack is waited past the expiry the server reported, so that
	// the attempt after it finds the lease lapsed.
	lapseSlack = 250 * time.Millisecond
)

// HeldError is a Mount refused because another node holds the volume and
// its lease would not lapse within the call's deadline. It matches
// backend.ErrInUse and the API's api.ErrConflict.
type HeldError struct {
	Volume  string
	Holder  string        // the node holding the volume
	Mode    string        // its attachment's mode, "rw" or "ro"
	Expires time.Time     // its lease's expiry, on the storage server's clock
	RetryIn time.Duration // the time its lease had left
	err     error         // the server's answer
}

func (e *HeldError) Error() string {
	mode := "read-write"
	if e.Mode == api.ModeRO {
		mode = "read-only"
	}
	// Callers name the volume already.
	return fmt.Sprintf("in use %s by node %q (its lease runs until %s); "+
		"if that host is down or cut off, the volume is free once the lease lapses: retry in %d s",
		mode, e.Holder, e.Expires.UTC().Format(time.RFC3339), int64(math.Ceil(e.RetryIn.Seconds())))
}

// Unwrap gives the server's answer, backend.ErrHeld and backend.ErrInUse.
func (e *HeldError) Unwrap() []error { return []error{e.err, backend.ErrHeld, backend.ErrInUse} }

// attachRW attaches name read-write for this node. While another node
// holds it, it asks again every heldPoll, for as long as waiting for the
// holder's lease to lapse fits in ctx's deadline less heldMargin; a
// renewed lease is judged afresh. When it does not fit, or ctx has no
// deadline, it fails with a *HeldError.
func (b *Backend) attachRW(ctx context.Context, m *member, name string) (api.Grant, error) {
	var waited bool
	for {
		g, err := m.api.Attach(ctx, name, b.cfg.Node, api.ModeRW)
		var ae *api.Error
		if err == nil || !errors.Is(err, api.ErrConflict) || !errors.As(err, &ae) {
			if err != nil {
				err = fmt.Errorf("attaching on the storage server: %w", b.mapErr(m, err))
			}
			return g, err
		}
		wait := ae.ExpiresIn + lapseSlack
		if !fits(ctx, wait) {
			return api.Grant{}, &HeldError{Volume: name, Holder: ae.Holder, Mode: ae.Mode,
				Expires: ae.Expires, RetryIn: ae.ExpiresIn, err: err}
		}
		if !waited {
			waited = true
			b.cfg.Log.WithFields(logrus.Fields{"volume": name, "node": b.cfg.Node, "holder": ae.Holder,
				"expires": ae.Expires.UTC().Format(time.RFC3339)}).Info("volume held by another node: waiting for its lease to lapse")
		}
		if err := sleep(ctx, min(wait, heldPoll)); err != nil {
			return api.Grant{}, fmt.Errorf("waiting for node %q's lease on the volume to lapse: %w", ae.Holder, err)
		}
	}
}

// fits reports whether waiting d still leaves heldMargin before ctx's
// deadline. Without a deadline nothing bounds the wait, so nothing fits.
func fits(ctx context.Context, d time.Duration) bool {
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl)-heldMargin >= d
}

// sleep waits d, or less when ctx ends first (its error).
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
