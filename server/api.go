package server

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/netvol/netvol/server/api"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/state"
)

// API limits.
const (
	maxBody        = 1 << 20 // request bodies, bytes
	DefaultTimeout = 30 * time.Second
	// DefaultBackupTimeout bounds the calls that move a volume's data (a
	// backup, a restore, a verify, a removal's collection); each call to
	// the backup target has a deadline of its own besides.
	DefaultBackupTimeout = time.Hour
)

// API serves the control API v1 over a Service.
type API struct {
	svc     *Service
	token   []byte
	log     logrus.FieldLogger
	timeout time.Duration
	// longTimeout bounds the calls that move data (longCall).
	longTimeout time.Duration
	nbdAddr     string // answered by GET /healthz
	mux         *http.ServeMux
	// metricsHandler serves GET /metrics when set (WithMetrics).
	metricsHandler http.Handler
}

// APIOption sets an optional part of the API.
type APIOption func(*API)

// WithNBDAddr makes GET /healthz report the address the NBD server listens
// on, so that plugins learn where to connect from the API address alone.
func WithNBDAddr(addr net.Addr) APIOption {
	return func(a *API) { a.nbdAddr = FormatAddr(addr) }
}

// WithMetrics serves GET /metrics with h (a Prometheus handler) instead
// of the built-in volume and attachment counts.
func WithMetrics(h http.Handler) APIOption {
	return func(a *API) { a.metricsHandler = h }
}

// FormatAddr writes a listener address the way --nbd-listen takes it:
// host:port, or unix:/path for a unix socket.
func FormatAddr(addr net.Addr) string {
	if addr.Network() == "unix" {
		return "unix:" + addr.String()
	}
	return addr.String()
}

// NewAPI returns the control API handler. Every call but GET /healthz needs
// "Authorization: Bearer <token>". log receives one entry per failed call.
func NewAPI(svc *Service, token string, log logrus.FieldLogger, opts ...APIOption) *API {
	a := &API{svc: svc, token: []byte(token), log: log, timeout: DefaultTimeout, longTimeout: DefaultBackupTimeout,
		mux: http.NewServeMux()}
	for _, o := range opts {
		o(a)
	}
	a.mux.HandleFunc("GET /healthz", a.healthz)
	if a.metricsHandler != nil {
		a.mux.Handle("GET /metrics", a.metricsHandler)
	} else {
		a.mux.HandleFunc("GET /metrics", a.metrics)
	}
	a.mux.HandleFunc("POST /v1/volumes", a.create)
	a.mux.HandleFunc("GET /v1/volumes", a.list)
	a.mux.HandleFunc("GET /v1/volumes/{name}", a.get)
	a.mux.HandleFunc("DELETE /v1/volumes/{name}", a.delete)
	a.mux.HandleFunc("POST /v1/volumes/{name}/resize", a.resize)
	a.mux.HandleFunc("POST /v1/volumes/{name}/snapshots", a.snapshot)
	a.mux.HandleFunc("GET /v1/volumes/{name}/snapshots", a.listSnapshots)
	a.mux.HandleFunc("DELETE /v1/volumes/{name}/snapshots/{snap}", a.deleteSnapshot)
	a.mux.HandleFunc("POST /v1/volumes/{name}/rollback", a.rollback)
	a.mux.HandleFunc("POST /v1/volumes/{name}/attachments", a.attach)
	a.mux.HandleFunc("POST /v1/volumes/{name}/attachments/{node}/renew", a.renew)
	a.mux.HandleFunc("POST /v1/volumes/{name}/attachments/{node}/grown", a.grown)
	a.mux.HandleFunc("DELETE /v1/volumes/{name}/attachments/{node}", a.detach)
	a.mux.HandleFunc("POST /v1/volumes/{name}/backups", a.createBackup)
	a.mux.HandleFunc("GET /v1/backups", a.listBackups)
	a.mux.HandleFunc("GET /v1/backups/{id}", a.getBackup)
	a.mux.HandleFunc("DELETE /v1/backups/{id}", a.deleteBackup)
	a.mux.HandleFunc("POST /v1/backups/{id}/verify", a.verifyBackup)
	a.poolRoutes()
	return a
}

// WithBackupTimeout sets the deadline of the calls that move data.
func WithBackupTimeout(d time.Duration) APIOption {
	return func(a *API) {
		if d > 0 {
			a.longTimeout = d
		}
	}
}

// ServeHTTP checks the token, bounds the body and sets the deadline.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/healthz" && !a.authorized(r) {
		a.fail(w, r, errUnauthorized)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	timeout := a.timeout
	if longCall(r) {
		// The server's write timeout would cut the answer short.
		timeout = a.longTimeout
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(timeout + time.Minute))
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	a.mux.ServeHTTP(w, r.WithContext(ctx))
}

// authorized checks "Authorization: Bearer <token>". The scheme is
// case-insensitive (RFC 7235, section 2.1); the token is not.
func (a *API) authorized(r *http.Request) bool {
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	got = strings.TrimLeft(got, " ")
	return ok && strings.EqualFold(scheme, "Bearer") && len(a.token) > 0 &&
		subtle.ConstantTimeCompare([]byte(got), a.token) == 1
}

func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, body := answerOf(err)
	code := body.Code
	if status == http.StatusInternalServerError {
		a.log.WithError(err).WithFields(logrus.Fields{"method": r.Method, "path": r.URL.Path}).Error("control API call failed")
	} else {
		a.log.WithError(err).WithFields(logrus.Fields{"method": r.Method, "path": r.URL.Path, "code": code}).Debug("control API call refused")
	}
	if errors.Is(err, errUnauthorized) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="netvol"`)
	}
	if body.ExpiresInMS > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt((body.ExpiresInMS+999)/1000, 10))
	}
	reply(w, status, body)
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v != nil {
		json.NewEncoder(w).Encode(v)
	}
}

// decode reads exactly one JSON object with no unknown fields.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return fmt.Errorf("%w: over %d bytes", errTooLarge, tooLarge.Limit)
		}
		if errors.Is(err, state.ErrInvalid) {
			return err
		}
		return fmt.Errorf("request body: %v: %w", err, state.ErrInvalid)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("request body: more than one JSON value: %w", state.ErrInvalid)
	}
	return nil
}

func (a *API) healthz(w http.ResponseWriter, _ *http.Request) {
	reply(w, http.StatusOK, api.Health{Status: "ok", NBD: a.nbdAddr})
}

func (a *API) metrics(w http.ResponseWriter, r *http.Request) {
	vols, err := a.svc.ListVolumes(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var atts int
	for _, v := range vols {
		atts += len(v.Attachments)
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "# HELP netvol_volumes Volumes in the registry.\n# TYPE netvol_volumes gauge\nnetvol_volumes %d\n", len(vols))
	fmt.Fprintf(w, "# HELP netvol_attachments Attachments recorded, live or lapsed.\n# TYPE netvol_attachments gauge\nnetvol_attachments %d\n", atts)
}

func (a *API) create(w http.ResponseWriter, r *http.Request) {
	var req api.CreateRequest
	if err := decode(r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	ctx := r.Context()
	if req.FromBackup == "" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.timeout)
		defer cancel()
	}
	v, err := a.svc.CreateVolume(ctx, req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.WithFields(logrus.Fields{"volume": v.Name, "size": v.Size, "from": v.From, "from_backup": req.FromBackup}).Info("volume created")
	reply(w, http.StatusCreated, v)
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	vols, err := a.svc.ListVolumes(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	reply(w, http.StatusOK, vols)
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	v, err := a.svc.GetVolume(r.Context(), r.PathValue("name"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	reply(w, http.StatusOK, v)
}

func (a *API) delete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if holder := r.URL.Query().Get("holder"); holder != "" {
		a.deleteHeldBy(w, r, name, holder)
		return
	}
	if err := a.svc.DeleteVolume(r.Context(), name); err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.WithField("volume", name).Info("volume deleted")
	reply(w, http.StatusNoContent, nil)
}

func (a *API) resize(w http.ResponseWriter, r *http.Request) {
	var req api.ResizeRequest
	if err := decode(r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	res, err := a.svc.ResizeVolume(r.Context(), r.PathValue("name"), int64(req.Size))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	log := a.log.WithFields(logrus.Fields{"volume": res.Name, "size": res.Size})
	if len(res.Pending) > 0 {
		for _, p := range res.Pending {
			log.WithFields(logrus.Fields{"node": p.Node, "grown": p.Grown, "why": p.Why}).Warn("volume resized; a holder has not grown yet")
		}
		reply(w, http.StatusAccepted, res)
		return
	}
	log.Info("volume resized")
	reply(w, http.StatusOK, res)
}

func (a *API) grown(w http.ResponseWriter, r *http.Request) {
	var req api.GrownReport
	if err := decode(r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	name, node := r.PathValue("name"), r.PathValue("node")
	if err := a.svc.Grown(r.Context(), name, node, req); err != nil {
		a.fail(w, r, err)
		return
	}
	log := a.log.WithFields(logrus.Fields{"volume": name, "node": node, "size": req.Size})
	if req.Error != "" {
		log.WithField("error", req.Error).Warn("a holder could not grow its device and file system")
	} else {
		log.Info("a holder grew its device and file system")
	}
	reply(w, http.StatusNoContent, nil)
}

func (a *API) attach(w http.ResponseWriter, r *http.Request) {
	var req api.AttachRequest
	if err := decode(r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	name := r.PathValue("name")
	g, err := a.svc.Attach(r.Context(), name, req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.WithFields(logrus.Fields{"volume": name, "node": req.Node, "mode": req.Mode,
		"generation": g.Generation, "expires": g.Expires.Format(time.RFC3339)}).Info("volume attached")
	reply(w, http.StatusOK, g)
}

func (a *API) renew(w http.ResponseWriter, r *http.Request) {
	l, err := a.svc.Renew(r.Context(), r.PathValue("name"), r.PathValue("node"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	reply(w, http.StatusOK, l)
}

func (a *API) detach(w http.ResponseWriter, r *http.Request) {
	name, node := r.PathValue("name"), r.PathValue("node")
	if err := a.svc.Detach(r.Context(), name, node); err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.WithFields(logrus.Fields{"volume": name, "node": node}).Info("volume detached")
	reply(w, http.StatusNoContent, nil)
}

func (a *API) snapshot(w http.ResponseWriter, r *http.Request) {
	var req api.SnapshotRequest
	if err := decode(r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	sn, err := a.svc.CreateSnapshot(r.Context(), r.PathValue("name"), req.Name)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.WithFields(logrus.Fields{"volume": sn.Volume, "snapshot": sn.Name}).Info("snapshot taken")
	reply(w, http.StatusCreated, sn)
}

func (a *API) listSnapshots(w http.ResponseWriter, r *http.Request) {
	list, err := a.svc.ListSnapshots(r.Context(), r.PathValue("name"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	reply(w, http.StatusOK, list)
}

func (a *API) deleteSnapshot(w http.ResponseWriter, r *http.Request) {
	name, snap := r.PathValue("name"), r.PathValue("snap")
	if err := a.svc.DeleteSnapshot(r.Context(), name, snap); err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.WithFields(logrus.Fields{"volume": name, "snapshot": snap}).Info("snapshot deleted")
	reply(w, http.StatusNoContent, nil)
}

func (a *API) rollback(w http.ResponseWriter, r *http.Request) {
	var req api.RollbackRequest
	if err := decode(r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	v, err := a.svc.Rollback(r.Context(), r.PathValue("name"), req.Snapshot)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.WithFields(logrus.Fields{"volume": v.Name, "snapshot": req.Snapshot}).Info("volume rolled back")
	reply(w, http.StatusOK, v)
}
