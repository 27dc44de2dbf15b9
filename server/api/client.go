// Package api is the storage daemon's control API v1 as both ends see it:
// its JSON types, error codes and sizes, and a Client. It imports neither
// the registry (bbolt) nor the image format (qcow2), so the plugin and the
// operator commands link none of the storage daemon. docs/design.md describes the
// calls.
//
// Every method takes a context and honours its deadline; give one, the
// client sets no timeout of its own. Answers are read up to a bound, and
// failures come in two kinds:
//
//   - the server answered with an error: an *Error carrying the HTTP status
//     and the API's code; errors.Is matches it against ErrNotFound,
//     ErrExists, ErrInUse, ErrConflict, ErrInvalid and ErrUnauthorized.
//   - the server could not be reached or did not answer in time (connection
//     refused, timeout, a broken answer, a 502/503/504 from a proxy): the
//     error wraps ErrUnavailable and names the server's URL.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Attachment modes.
const (
	ModeRW = "rw"
	ModeRO = "ro"
)

// Bounds of what the client reads from an answer.
const (
	maxAnswer    = 8 << 20  // a volume list of some ten thousand volumes
	maxErrorBody = 64 << 10 // an error answer
)

// Client calls one storage daemon. It is safe for concurrent use.
type Client struct {
	base  *url.URL // scheme and host only
	token string
	hc    *http.Client
}

// New returns a client of the API at baseURL: "host:port" (plain HTTP) or
// "http://host[:port]" or "https://host[:port]", with no path. token is the
// bearer token; an empty one only allows Health. A nil httpClient means a
// client of its own over http.DefaultTransport.
func New(baseURL, token string, httpClient *http.Client) (*Client, error) {
	u, err := parseBase(baseURL)
	if err != nil {
		return nil, err
	}
	for _, r := range token {
		if r <= ' ' || r == 0x7f {
			return nil, fmt.Errorf("API token: contains a space or control character: %w", ErrInvalid)
		}
	}
	if httpClient == nil {
		httpClient = &http.Client{}
	}
	return &Client{base: u, token: token, hc: httpClient}, nil
}

// parseBase checks and normalises the API address.
func parseBase(s string) (*url.URL, error) {
	bad := func(why string) error {
		return fmt.Errorf("API address %q: %s (want host:port or http(s)://host:port): %w", s, why, ErrInvalid)
	}
	bare := !strings.Contains(s, "://")
	raw := s
	if bare {
		raw = "http://" + s
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, bad(err.Error())
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, bad("scheme must be http or https")
	case u.Hostname() == "":
		return nil, bad("no host")
	case bare && u.Port() == "":
		return nil, bad("no port")
	case u.User != nil:
		return nil, bad("credentials belong in the token, not the address")
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "", u.Opaque != "":
		return nil, bad("the API lives at the root: no path, query or fragment")
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// Server is the API's host:port (host alone when the URL gave no port).
func (c *Client) Server() string { return c.base.Host }

// Token is the bearer token the client sends.
func (c *Client) Token() string { return c.token }

// URL is the API's base URL.
func (c *Client) URL() string { return c.base.String() }

// Health calls GET /healthz; the answer names the daemon's NBD address.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.do(ctx, http.MethodGet, "/healthz", nil, http.StatusOK, &h)
	if err == nil && h.Status != "ok" {
		err = fmt.Errorf("%s: health status %q: %w", c.URL(), h.Status, ErrUnavailable)
	}
	return h, err
}

// CreateVolume calls POST /v1/volumes.
func (c *Client) CreateVolume(ctx context.Context, req CreateRequest) (Volume, error) {
	var v Volume
	err := c.do(ctx, http.MethodPost, "/v1/volumes", req, http.StatusCreated, &v)
	return v, err
}

// GetVolume calls GET /v1/volumes/{name}.
func (c *Client) GetVolume(ctx context.Context, name string) (Volume, error) {
	p, err := volumePath(name)
	if err != nil {
		return Volume{}, err
	}
	var v Volume
	err = c.do(ctx, http.MethodGet, p, nil, http.StatusOK, &v)
	return v, err
}

// ListVolumes calls GET /v1/volumes.
func (c *Client) ListVolumes(ctx context.Context) ([]Volume, error) {
	var vols []Volume
	err := c.do(ctx, http.MethodGet, "/v1/volumes", nil, http.StatusOK, &vols)
	return vols, err
}

// DeleteVolume calls DELETE /v1/volumes/{name}.
func (c *Client) DeleteVolume(ctx context.Context, name string) error {
	p, err := volumePath(name)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, p, nil, http.StatusNoContent, nil)
}

// ResizeVolume calls POST /v1/volumes/{name}/resize; size is in bytes.
// The answer lists the holders that have not grown their device and file
// system yet (202); none when the new size is usable everywhere (200).
func (c *Client) ResizeVolume(ctx context.Context, name string, size int64) (ResizeResult, error) {
	p, err := volumePath(name)
	if err != nil {
		return ResizeResult{}, err
	}
	var r ResizeResult
	err = c.doStatus(ctx, http.MethodPost, p+"/resize", ResizeRequest{Size: Size(size)}, []int{http.StatusOK, http.StatusAccepted}, &r)
	return r, err
}

// Attach calls POST /v1/volumes/{volume}/attachments; mode is ModeRW or
// ModeRO.
func (c *Client) Attach(ctx context.Context, volume, node, mode string) (Grant, error) {
	p, err := volumePath(volume)
	if err != nil {
		return Grant{}, err
	}
	var g Grant
	err = c.do(ctx, http.MethodPost, p+"/attachments", AttachRequest{Node: node, Mode: mode}, http.StatusOK, &g)
	return g, err
}

// Renew calls POST /v1/volumes/{volume}/attachments/{node}/renew.
func (c *Client) Renew(ctx context.Context, volume, node string) (Lease, error) {
	p, err := attachmentPath(volume, node)
	if err != nil {
		return Lease{}, err
	}
	var l Lease
	err = c.do(ctx, http.MethodPost, p+"/renew", nil, http.StatusOK, &l)
	return l, err
}

// ReportGrown calls POST /v1/volumes/{volume}/attachments/{node}/grown:
// the holder says what size its device and file system have now.
func (c *Client) ReportGrown(ctx context.Context, volume, node string, r GrownReport) error {
	p, err := attachmentPath(volume, node)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, p+"/grown", r, http.StatusNoContent, nil)
}

// Detach calls DELETE /v1/volumes/{volume}/attachments/{node}.
func (c *Client) Detach(ctx context.Context, volume, node string) error {
	p, err := attachmentPath(volume, node)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, p, nil, http.StatusNoContent, nil)
}

// CreateSnapshot calls POST /v1/volumes/{volume}/snapshots.
func (c *Client) CreateSnapshot(ctx context.Context, volume, name string) (Snapshot, error) {
	p, err := volumePath(volume)
	if err != nil {
		return Snapshot{}, err
	}
	var sn Snapshot
	err = c.do(ctx, http.MethodPost, p+"/snapshots", SnapshotRequest{Name: name}, http.StatusCreated, &sn)
	return sn, err
}

// ListSnapshots calls GET /v1/volumes/{volume}/snapshots.
func (c *Client) ListSnapshots(ctx context.Context, volume string) ([]Snapshot, error) {
	p, err := volumePath(volume)
	if err != nil {
		return nil, err
	}
	var list []Snapshot
	err = c.do(ctx, http.MethodGet, p+"/snapshots", nil, http.StatusOK, &list)
	return list, err
}

// DeleteSnapshot calls DELETE /v1/volumes/{volume}/snapshots/{name}.
func (c *Client) DeleteSnapshot(ctx context.Context, volume, name string) error {
	p, err := volumePath(volume)
	if err != nil {
		return err
	}
	seg, err := segment("snapshot", name)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, p+"/snapshots/"+seg, nil, http.StatusNoContent, nil)
}

// Rollback calls POST /v1/volumes/{volume}/rollback.
func (c *Client) Rollback(ctx context.Context, volume, snapshot string) (Volume, error) {
	p, err := volumePath(volume)
	if err != nil {
		return Volume{}, err
	}
	var v Volume
	err = c.do(ctx, http.MethodPost, p+"/rollback", RollbackRequest{Snapshot: snapshot}, http.StatusOK, &v)
	return v, err
}

// CreateBackup calls POST /v1/volumes/{volume}/backups. It takes as long
// as the backup: give a context with room for it.
func (c *Client) CreateBackup(ctx context.Context, volume string) (Backup, error) {
	p, err := volumePath(volume)
	if err != nil {
		return Backup{}, err
	}
	var b Backup
	err = c.do(ctx, http.MethodPost, p+"/backups", struct{}{}, http.StatusCreated, &b)
	return b, err
}

// ListBackups calls GET /v1/backups?volume=, every volume's for "".
func (c *Client) ListBackups(ctx context.Context, volume string) ([]Backup, error) {
	p := "/v1/backups"
	if volume != "" {
		if _, err := segment("volume", volume); err != nil {
			return nil, err
		}
		p += "?volume=" + url.QueryEscape(volume)
	}
	var list []Backup
	err := c.do(ctx, http.MethodGet, p, nil, http.StatusOK, &list)
	return list, err
}

// GetBackup calls GET /v1/backups/{id}.
func (c *Client) GetBackup(ctx context.Context, id string) (Backup, error) {
	seg, err := segment("backup", id)
	if err != nil {
		return Backup{}, err
	}
	var b Backup
	err = c.do(ctx, http.MethodGet, "/v1/backups/"+seg, nil, http.StatusOK, &b)
	return b, err
}

// DeleteBackup calls DELETE /v1/backups/{id}.
func (c *Client) DeleteBackup(ctx context.Context, id string) error {
	seg, err := segment("backup", id)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, "/v1/backups/"+seg, nil, http.StatusNoContent, nil)
}

// VerifyBackup calls POST /v1/backups/{id}/verify: the daemon reads every
// chunk back. An ErrCorrupt answer names the first bad chunk.
func (c *Client) VerifyBackup(ctx context.Context, id string) (BackupVerify, error) {
	seg, err := segment("backup", id)
	if err != nil {
		return BackupVerify{}, err
	}
	var v BackupVerify
	err = c.do(ctx, http.MethodPost, "/v1/backups/"+seg+"/verify", struct{}{}, http.StatusOK, &v)
	return v, err
}

func volumePath(name string) (string, error) {
	seg, err := segment("volume", name)
	return "/v1/volumes/" + seg, err
}

func attachmentPath(volume, node string) (string, error) {
	p, err := volumePath(volume)
	if err != nil {
		return "", err
	}
	seg, err := segment("node", node)
	return p + "/attachments/" + seg, err
}

// segment escapes a name for a URL path. The server checks names; this
// only keeps a name from changing which path is called ("", ".", "..").
func segment(kind, name string) (string, error) {
	if name == "" || name == "." || name == ".." {
		return "", fmt.Errorf("%s name %q: %w", kind, name, ErrInvalid)
	}
	return url.PathEscape(name), nil
}

// do sends one request and decodes an answer of status want into out
// (when not nil).
func (c *Client) do(ctx context.Context, method, path string, body any, want int, out any) error {
	return c.doStatus(ctx, method, path, body, []int{want}, out)
}

// doStatus is do with several successful statuses.
func (c *Client) doStatus(ctx context.Context, method, path string, body any, want []int, out any) error {
	req, err := c.request(ctx, method, path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if !slices.Contains(want, resp.StatusCode) {
		return c.answerError(req, resp)
	}
	if out == nil {
		return nil
	}
	data, err := readBounded(resp.Body, maxAnswer)
	if err == nil {
		err = json.Unmarshal(data, out)
	}
	if err != nil {
		return fmt.Errorf("%w: %s %s: reading the answer: %w", ErrUnavailable, method, req.URL, err)
	}
	return nil
}

func (c *Client) request(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	// The token is not needed by /healthz, so it is not sent there.
	if c.token != "" && path != "/healthz" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// errTooLarge is an answer over the bound.
var errTooLarge = errors.New("answer too large")

// readBounded reads r to the end, failing beyond limit bytes (with the
// first limit bytes returned).
func readBounded(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err == nil && int64(len(data)) > limit {
		return data[:limit], fmt.Errorf("%w: over %d bytes", errTooLarge, limit)
	}
	return data, err
}

// answerError turns an unexpected answer into an *Error, or into
// ErrUnavailable when its body could not be read.
func (c *Client) answerError(req *http.Request, resp *http.Response) error {
	data, err := readBounded(resp.Body, maxErrorBody)
	if err != nil && !errors.Is(err, errTooLarge) {
		return fmt.Errorf("%w: %s %s: HTTP %d, reading the answer: %w", ErrUnavailable, req.Method, req.URL, resp.StatusCode, err)
	}
	var body ErrorBody
	if json.Unmarshal(data, &body) == nil && body.Error != "" {
		e := &Error{Status: resp.StatusCode, Code: body.Code, Message: body.Error, Holder: body.Holder,
			Mode: body.Mode, ExpiresIn: time.Duration(max(body.ExpiresInMS, 0)) * time.Millisecond,
			Nodes: body.Nodes, Children: body.Children}
		if body.Expires != nil {
			e.Expires = *body.Expires
		}
		return e
	}
	// Not an API answer (a proxy, another service on the port, a 2xx we
	// did not expect): say what came back, briefly and printably.
	msg := fmt.Sprintf("%s %s: unexpected answer HTTP %d %s", req.Method, req.URL, resp.StatusCode, http.StatusText(resp.StatusCode))
	if snippet := printable(data, 120); snippet != "" {
		msg += ": " + snippet
	}
	return &Error{Status: resp.StatusCode, Message: msg}
}

// printable returns at most n bytes of b with anything unprintable dropped.
func printable(b []byte, n int) string {
	s := strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == 0xfffd {
			return -1
		}
		return r
	}, string(b[:min(len(b), n)]))
	return strings.TrimSpace(s)
}
