package server

import (
	"errors"
	"net/http"
	"time"

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

// errorBody is every error answer. A conflict also says which node holds
// the volume, in which mode and until when: the expiry on the daemon's
// clock and the time left when the answer was made, so that a client can
// wait for the lease to lapse without parsing the message or trusting its
// own clock.
type errorBody struct {
	Error       string     `json:"error"`
	Code        string     `json:"code"`
	Holder      string     `json:"holder,omitempty"`
	Mode        string     `json:"mode,omitempty"`
	Expires     *time.Time `json:"expires,omitempty"`
	ExpiresInMS int64      `json:"expires_in_ms,omitempty"`
}

// answerOf maps an error to its HTTP status and answer.
func answerOf(err error) (int, errorBody) {
	status, code := codeOf(err)
	b := errorBody{Error: err.Error(), Code: code}
	var c *state.ConflictError
	if errors.As(err, &c) {
		exp := c.Expires.UTC()
		b.Holder, b.Mode, b.Expires, b.ExpiresInMS = c.Holder, string(c.Mode), &exp, ceilMS(c.ExpiresIn)
	}
	return status, b
}

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
