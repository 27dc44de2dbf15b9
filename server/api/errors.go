package api

import (
	"fmt"
	"net/http"
	"time"

	"github.com/netvol/netvol/errdefs"
)

// Errors to check with errors.Is. An *Error matches the one of its code;
// ErrUnavailable is wrapped by transport failures.
// They are errdefs' kinds; ErrConflict is errdefs.ErrHeld.
var (
	ErrNotFound     = errdefs.ErrNotFound
	ErrExists       = errdefs.ErrExists
	ErrInUse        = errdefs.ErrInUse
	ErrConflict     = errdefs.ErrHeld
	ErrInvalid      = errdefs.ErrInvalid
	ErrUnauthorized = errdefs.ErrUnauthorized
	ErrCorrupt      = errdefs.ErrCorrupt
	ErrUnavailable  = errdefs.ErrUnavailable
)

// Error is an error answer of the API: {"error": Message, "code": Code}
// with HTTP status Status. Code is empty when the answer was not an API
// error (a proxy's page, say); Message then describes what came back.
//
// An in_use answer names the Nodes attached and the Children (clones). A
// conflict (ErrConflict) also names the Holder of the volume, its Mode,
// and its lease: Expires on the daemon's clock, ExpiresIn the time it had
// left when the daemon answered. Wait on ExpiresIn: it needs no clock
// shared with the daemon.
type Error struct {
	Status  int
	Code    string
	Message string

	Holder    string
	Mode      string
	Expires   time.Time
	ExpiresIn time.Duration

	// An in_use answer's details: the nodes attached, the clones.
	Nodes, Children []string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("storage server answered HTTP %d %s", e.Status, e.Code)
	}
	return e.Message
}

// Is matches the kind of e's code (a conflict is also in use);
// ErrUnavailable also matches a gateway's 502, 503 or 504, which say the
// daemon behind it is not there.
func (e *Error) Is(target error) bool {
	if target == ErrUnavailable {
		return e.Status == http.StatusBadGateway || e.Status == http.StatusServiceUnavailable ||
			e.Status == http.StatusGatewayTimeout
	}
	kind := kindOf(e.Code)
	return kind != nil && (target == kind || (kind == ErrConflict && target == ErrInUse))
}
