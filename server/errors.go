package server

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/netvol/netvol/errdefs"
	"github.com/netvol/netvol/server/api"
)

// errUnauthorized is answered to a request without the right bearer token.
var errUnauthorized = fmt.Errorf("missing or wrong bearer token: %w", errdefs.ErrUnauthorized)

// errTooLarge is answered to a request whose body is over maxBody.
var errTooLarge = fmt.Errorf("request body too large: %w", errdefs.ErrInvalid)

// answerOf maps an error to its HTTP status and answer (api.NewErrorBody),
// with 413 for a body over the limit.
func answerOf(err error) (int, api.ErrorBody) {
	status, b := api.NewErrorBody(err)
	var tooLarge *http.MaxBytesError
	if errors.Is(err, errTooLarge) || errors.As(err, &tooLarge) {
		status, b.Code = http.StatusRequestEntityTooLarge, api.CodeInvalid
	}
	return status, b
}
