package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/netvol/netvol/errdefs"
)

// DefaultLeaseTTL is a storage daemon's lease term unless configured
// otherwise; a client that has not seen an answer yet assumes it.
const DefaultLeaseTTL = 15 * time.Second

// AddressFile is where a storage daemon records its API's URL in its data
// directory (server.Start), so that the operator commands on the same host
// find it, with the token beside it, when no server is configured.
const AddressFile = "api-address"

// Error codes of the control API, one per errdefs kind ("conflict" is
// errdefs.ErrHeld), and "internal" for the rest.
const (
	CodeNotFound     = "not_found"
	CodeExists       = "exists"
	CodeInUse        = "in_use"
	CodeConflict     = "conflict"
	CodeInvalid      = "invalid"
	CodeUnauthorized = "unauthorized"
	CodeCorrupt      = "corrupt"
	CodeInternal     = "internal"
)

// kinds maps the codes to the kinds, both ways.
var kinds = []struct {
	code   string
	status int
	kind   error
}{
	{CodeUnauthorized, http.StatusUnauthorized, errdefs.ErrUnauthorized},
	{CodeNotFound, http.StatusNotFound, errdefs.ErrNotFound},
	{CodeExists, http.StatusConflict, errdefs.ErrExists},
	// Before in_use: a held error is in use too.
	{CodeConflict, http.StatusConflict, errdefs.ErrHeld},
	{CodeInUse, http.StatusConflict, errdefs.ErrInUse},
	{CodeInvalid, http.StatusBadRequest, errdefs.ErrInvalid},
	{CodeCorrupt, http.StatusUnprocessableEntity, errdefs.ErrCorrupt},
}

// CodeOf maps an error to its HTTP status and API code. It is the only
// place that does; the storage daemon answers every error through it.
func CodeOf(err error) (status int, code string) {
	for _, k := range kinds {
		if errors.Is(err, k.kind) {
			return k.status, k.code
		}
	}
	return http.StatusInternalServerError, CodeInternal
}

// kindOf is the kind an answer's code stands for; nil for none.
func kindOf(code string) error {
	for _, k := range kinds {
		if k.code == code {
			return k.kind
		}
	}
	return nil
}

// ErrorBody is every error answer. A conflict also says which node holds
// the volume, in which mode and until when: the expiry on the daemon's
// clock and the time left when the answer was made, so that a client can
// wait for the lease to lapse without parsing the message or trusting its
// own clock. An in_use answer names the nodes attached and the clones.
type ErrorBody struct {
	Error       string     `json:"error"`
	Code        string     `json:"code"`
	Holder      string     `json:"holder,omitempty"`
	Mode        string     `json:"mode,omitempty"`
	Expires     *time.Time `json:"expires,omitempty"`
	ExpiresInMS int64      `json:"expires_in_ms,omitempty"`
	Nodes       []string   `json:"nodes,omitempty"`
	Children    []string   `json:"children,omitempty"`
}

// NewErrorBody is the answer to err, with its status.
func NewErrorBody(err error) (int, ErrorBody) {
	status, code := CodeOf(err)
	b := ErrorBody{Error: err.Error(), Code: code}
	var held *errdefs.HeldError
	if errors.As(err, &held) {
		exp := held.Expires.UTC()
		b.Holder, b.Mode, b.Expires, b.ExpiresInMS = held.Holder, held.Mode, &exp, ceilMS(held.ExpiresIn)
	}
	var inUse *errdefs.InUseError
	if errors.As(err, &inUse) {
		b.Nodes, b.Children = inUse.Nodes, inUse.Children
	}
	return status, b
}

// ceilMS is d in whole milliseconds, rounded up: what a waiting client
// must wait at least.
func ceilMS(d time.Duration) int64 {
	return max(int64((d+time.Millisecond-1)/time.Millisecond), 1)
}
