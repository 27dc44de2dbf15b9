package api

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// The calls a pool of storage daemons needs (docs/design.md, "A pool of
// storage servers"): each daemon's capacity for placement, name claims on
// a name's home daemon, labels that mark a copy in a move, and the delete
// that ends a move.

// Capacity answers GET /v1/capacity: what placement weighs.
type Capacity struct {
	// Free is what the data directory's file system has available to
	// the daemon (statfs f_bavail), in bytes.
	Free int64 `json:"free"`
	// Promised is what thin volumes may still take: the sum over volumes
	// of size less allocated, in bytes.
	Promised int64 `json:"promised"`
	// Weight scales the daemon's share of new volumes (--weight).
	Weight float64 `json:"weight"`
	// NoNewVolumes: the daemon takes no new volumes (--no-new-volumes,
	// while it is drained); it refuses creates.
	NoNewVolumes bool `json:"no_new_volumes,omitempty"`
	Volumes      int  `json:"volumes"`
}

// Claim is a pool name claim, kept by the name's home daemon: the server
// of the pool that holds the volume of that name.
type Claim struct {
	Name      string    `json:"name"`
	Server    string    `json:"server"`
	CreatedAt time.Time `json:"created_at"`
	// Created: this call made the claim (POST /v1/names); otherwise it
	// existed and is returned unchanged.
	Created bool `json:"created,omitempty"`
}

// ClaimRequest is the body of POST /v1/names.
type ClaimRequest struct {
	Name   string `json:"name"`
	Server string `json:"server"`
}

// SwitchRequest is the body of POST /v1/names/{name}/switch.
type SwitchRequest struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// LabelsRequest is the body of POST /v1/volumes/{name}/labels.
type LabelsRequest struct {
	Set    map[string]string `json:"set,omitempty"`
	Delete []string          `json:"delete,omitempty"`
}

// Capacity calls GET /v1/capacity.
func (c *Client) Capacity(ctx context.Context) (Capacity, error) {
	var cp Capacity
	err := c.do(ctx, http.MethodGet, "/v1/capacity", nil, http.StatusOK, &cp)
	return cp, err
}

// ClaimName calls POST /v1/names: claims name for server unless it is
// claimed already, and returns the claim that holds.
func (c *Client) ClaimName(ctx context.Context, name, server string) (Claim, error) {
	var cl Claim
	err := c.do(ctx, http.MethodPost, "/v1/names", ClaimRequest{Name: name, Server: server}, http.StatusOK, &cl)
	return cl, err
}

// GetClaim calls GET /v1/names/{name}; ErrNotFound when unclaimed.
func (c *Client) GetClaim(ctx context.Context, name string) (Claim, error) {
	seg, err := segment("name", name)
	if err != nil {
		return Claim{}, err
	}
	var cl Claim
	err = c.do(ctx, http.MethodGet, "/v1/names/"+seg, nil, http.StatusOK, &cl)
	return cl, err
}

// SwitchClaim calls POST /v1/names/{name}/switch: the claim moves from
// one server to another only while it names from.
func (c *Client) SwitchClaim(ctx context.Context, name, from, to string) (Claim, error) {
	seg, err := segment("name", name)
	if err != nil {
		return Claim{}, err
	}
	var cl Claim
	err = c.do(ctx, http.MethodPost, "/v1/names/"+seg+"/switch", SwitchRequest{From: from, To: to}, http.StatusOK, &cl)
	return cl, err
}

// ReleaseClaim calls DELETE /v1/names/{name}?server=: removes the claim
// while it names server.
func (c *Client) ReleaseClaim(ctx context.Context, name, server string) error {
	seg, err := segment("name", name)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, "/v1/names/"+seg+"?server="+url.QueryEscape(server), nil, http.StatusNoContent, nil)
}

// SetLabels calls POST /v1/volumes/{name}/labels.
func (c *Client) SetLabels(ctx context.Context, name string, set map[string]string, del []string) (Volume, error) {
	p, err := volumePath(name)
	if err != nil {
		return Volume{}, err
	}
	var v Volume
	err = c.do(ctx, http.MethodPost, p+"/labels", LabelsRequest{Set: set, Delete: del}, http.StatusOK, &v)
	return v, err
}

// DeleteVolumeHeldBy calls DELETE /v1/volumes/{name}?holder=NODE: the
// volume is deleted although node holds it (its attachment goes with it);
// any other node's live attachment refuses it as DeleteVolume.
func (c *Client) DeleteVolumeHeldBy(ctx context.Context, name, node string) error {
	p, err := volumePath(name)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, p+"?holder="+url.QueryEscape(node), nil, http.StatusNoContent, nil)
}
