package daemon

import (
	"errors"
	"net/http"

	"github.com/netvol/netvol/state"
)

// Error codes of the control API.
const (
	CodeNotFound     = "not_found"
	CodeExists       = "exists"
	CodeInUse        = "in_use"
	CodeConflict     = "conflict"
	CodeInvalid      = "invalid"
	CodeUnauthorized = "unauthorized"
	CodeInternal     = "internal"
)

// errUnauthorized is answered to a request without the right bearer token.
var errUnauthorized = errors.New("missing or wrong bearer token")

// errTooLarge is answered to a request whose body is over maxBody.
var errTooLarge = errors.New("request body too large")

// codeOf maps an error to its HTTP status and API code. It is the only place
// that does.
func codeOf(err error) (int, string) {
	var tooLarge *http.MaxBytesError
	switch {
	case errors.Is(err, errUnauthorized):
		return http.StatusUnauthorized, CodeUnauthorized
	case errors.Is(err, state.ErrNotFound):
		return http.StatusNotFound, CodeNotFound
	case errors.Is(err, state.ErrExists):
		return http.StatusConflict, CodeExists
	case errors.Is(err, state.ErrInUse):
		return http.StatusConflict, CodeInUse
	case errors.Is(err, state.ErrConflict):
		return http.StatusConflict, CodeConflict
	case errors.Is(err, errTooLarge), errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, CodeInvalid
	case errors.Is(err, state.ErrInvalid):
		return http.StatusBadRequest, CodeInvalid
	}
	return http.StatusInternalServerError, CodeInternal
}
