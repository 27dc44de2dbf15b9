package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/netvol/netvol/server"
)

// Errors to check with errors.Is. An *Error matches the one of its code;
// ErrUnavailable is wrapped by transport failures.
var (
	ErrNotFound     = errors.New("not found")
	ErrExists       = errors.New("already exists")
	ErrInUse        = errors.New("in use")
	ErrConflict     = errors.New("attached by another node")
	ErrInvalid      = errors.New("invalid argument")
	ErrUnauthorized = errors.New("unauthorized")
	ErrUnavailable  = errors.New("storage server unavailable")
)

// Error is an error answer of the API: {"error": Message, "code": Code}
// with HTTP status Status. Code is empty when the answer was not an API
// error (a proxy's page, say); Message then describes what came back.
//
// A conflict (ErrConflict) also names the Holder of the volume, its Mode,
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
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("storage server answered HTTP %d %s", e.Status, e.Code)
	}
	return e.Message
}

// Is matches the sentinel of e's code; ErrUnavailable also matches a
// gateway's 502, 503 or 504, which say the daemon behind it is not there.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrUnavailable:
		return e.Status == http.StatusBadGateway || e.Status == http.StatusServiceUnavailable ||
			e.Status == http.StatusGatewayTimeout
	case ErrNotFound:
		return e.Code == server.CodeNotFound
	case ErrExists:
		return e.Code == server.CodeExists
	case ErrInUse:
		return e.Code == server.CodeInUse
	case ErrConflict:
		return e.Code == server.CodeConflict
	case ErrInvalid:
		return e.Code == server.CodeInvalid
	case ErrUnauthorized:
		return e.Code == server.CodeUnauthorized
	}
	return false
}
