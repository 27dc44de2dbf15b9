package volume

import (
	"context"
	"errors"
	"fmt"

	"github.com/netvol/netvol/volume/backend"
)

// dockerError turns an error of a driver call into the text Docker shows
// the user as is. It is the only place that does (the kinds are errdefs',
// shared by the node store and the backends); the text says what failed,
// on which volume, and what to do where there is something to do.
func dockerError(op, name string, err error) error {
	if err == nil {
		return nil
	}
	var hint string
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		hint = "the storage did not answer in time; the operation may still finish: retry in a minute"
	case errors.Is(err, backend.ErrUnavailable):
		hint = "check that the server is running and reachable from this host (netvol doctor)"
	case errors.Is(err, backend.ErrHeld):
		// The error names the holder and when to retry.
	case errors.Is(err, backend.ErrInUse):
		hint = "stop the containers using it first"
	case err == backend.ErrNotFound:
		return fmt.Errorf("netvol: %s %q: no such volume", op, name)
	case errors.Is(err, backend.ErrNotFound):
		return fmt.Errorf("netvol: %s %q: no such volume: %v", op, name, err)
	}
	if hint == "" {
		return fmt.Errorf("netvol: %s %q: %v", op, name, err)
	}
	return fmt.Errorf("netvol: %s %q: %v (%s)", op, name, err, hint)
}
