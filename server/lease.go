package server

import (
	"time"

	"github.com/sirupsen/logrus"
)

// Leases are judged by the daemon alone, on its own clock: no client's
// clock takes part, and answers carry the time left ("expires_in_ms") as
// well as the expiry, so that a client can act on the span without
// comparing clocks.
//
// The clock (monotonicClock) is the wall time at start advanced by the
// monotonic clock, so that a step of the wall clock while the daemon runs
// neither shortens nor stretches a lease. Expiries are recorded in the
// registry on that clock.
//
// Across a restart there is no monotonic clock to go by, and the daemon
// cannot know how long it was down. So it is conservative: every lease it
// finds in the registry, live or lapsed, is live for one full term
// (LeaseTTL) from the start (restartLeases). A restart never shortens a
// lease, provided --lease-ttl is not lowered across it; a holder that died
// meanwhile costs a taker at most one term more.

// monotonicClock returns the daemon's lease clock: the wall time now,
// advanced from then on by the monotonic clock.
func monotonicClock() func() time.Time {
	start := time.Now()
	wall := start.Round(0) // strips the monotonic reading
	return func() time.Time { return wall.Add(time.Since(start)) }
}

// restartLeases gives every recorded lease a full term from now.
func (s *Service) restartLeases() error {
	until := s.cfg.Now().Add(s.cfg.LeaseTTL).UTC()
	n, err := s.reg.RestartLeases(until)
	if err != nil {
		return err
	}
	if n > 0 {
		s.cfg.Log.WithFields(logrus.Fields{"leases": n, "until": until.Format(time.RFC3339)}).
			Info("leases restored from the registry: each is live for a full term from now")
	}
	return nil
}

// floorMS is d in whole milliseconds, rounded down: what a holder may
// count on.
func floorMS(d time.Duration) int64 { return max(int64(d/time.Millisecond), 0) }
