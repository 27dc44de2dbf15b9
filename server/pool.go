package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/state"
)

// What a storage daemon does for a pool of them (docs/design.md, "A pool
// of storage servers"): it reports its capacity for placement, keeps the
// name claims of the names whose home it is, relabels a volume and
// deletes a volume its mover holds. The daemon knows nothing of the
// pool's other members: the plugins and operator commands run the
// protocols.

// Capacity reports what placement weighs: the data directory's free
// space, what thin volumes may still take, the weight and whether new
// volumes are refused.
func (s *Service) Capacity(ctx context.Context) (api.Capacity, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(s.cfg.DataDir, &st); err != nil {
		return api.Capacity{}, fmt.Errorf("statfs %s: %w", s.cfg.DataDir, err)
	}
	vols, err := s.ListVolumes(ctx)
	if err != nil {
		return api.Capacity{}, err
	}
	c := api.Capacity{Free: int64(st.Bavail) * st.Bsize, Weight: s.cfg.Weight, NoNewVolumes: s.cfg.NoNewVolumes, Volumes: len(vols)}
	if c.Weight <= 0 {
		c.Weight = 1
	}
	for _, v := range vols {
		c.Promised += max(v.Size-v.Allocated, 0)
	}
	return c, nil
}

// checkServerName refuses a pool member name no client would send: the
// daemon stores it as given, so it must be printable and bounded.
func checkServerName(server string) error {
	if server == "" || len(server) > 255 || strings.ContainsFunc(server, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("server name %q: want host:port as the pool names it: %w", server, state.ErrInvalid)
	}
	return nil
}

// ClaimName claims name for server unless it is claimed (then the claim
// that holds is returned).
func (s *Service) ClaimName(name, server string) (api.Claim, error) {
	if err := checkVolumeName(name); err != nil {
		return api.Claim{}, err
	}
	if err := checkServerName(server); err != nil {
		return api.Claim{}, err
	}
	c, created, err := s.reg.ClaimName(name, server, s.cfg.Now())
	return api.Claim{Name: c.Name, Server: c.Server, CreatedAt: c.Created, Created: created}, err
}

// GetClaim returns name's claim.
func (s *Service) GetClaim(name string) (api.Claim, error) {
	c, err := s.reg.GetClaim(name)
	return api.Claim{Name: c.Name, Server: c.Server, CreatedAt: c.Created}, err
}

// SwitchClaim moves name's claim from one server to another.
func (s *Service) SwitchClaim(name, from, to string) (api.Claim, error) {
	if err := checkServerName(to); err != nil {
		return api.Claim{}, err
	}
	c, err := s.reg.SwitchClaim(name, from, to)
	return api.Claim{Name: c.Name, Server: c.Server, CreatedAt: c.Created}, err
}

// ReleaseClaim removes name's claim while it names server.
func (s *Service) ReleaseClaim(name, server string) error { return s.reg.ReleaseClaim(name, server) }

// SetLabels changes a volume's labels.
func (s *Service) SetLabels(ctx context.Context, name string, req api.LabelsRequest) (api.Volume, error) {
	if err := s.acquire(ctx); err != nil {
		return api.Volume{}, err
	}
	defer s.release()
	v, err := s.reg.SetLabels(name, req.Set, req.Delete)
	if err != nil {
		return api.Volume{}, err
	}
	return s.volume(v), nil
}

// DeleteVolumeHeldBy deletes a volume that node may hold (a move's
// source); another node's live attachment refuses it.
func (s *Service) DeleteVolumeHeldBy(ctx context.Context, name, node string) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.release()
	v, err := s.reg.DeleteVolumeHeldBy(name, node, s.cfg.Now())
	if err != nil {
		return err
	}
	return s.removeDeleted(v)
}

func (a *API) poolRoutes() {
	a.mux.HandleFunc("GET /v1/capacity", a.capacity)
	a.mux.HandleFunc("POST /v1/names", a.claimName)
	a.mux.HandleFunc("GET /v1/names/{name}", a.getClaim)
	a.mux.HandleFunc("POST /v1/names/{name}/switch", a.switchClaim)
	a.mux.HandleFunc("DELETE /v1/names/{name}", a.releaseClaim)
	a.mux.HandleFunc("POST /v1/volumes/{name}/labels", a.setLabels)
}

func (a *API) capacity(w http.ResponseWriter, r *http.Request) {
	c, err := a.svc.Capacity(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	reply(w, http.StatusOK, c)
}

func (a *API) claimName(w http.ResponseWriter, r *http.Request) {
	var req api.ClaimRequest
	if err := decode(r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	c, err := a.svc.ClaimName(req.Name, req.Server)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if c.Created {
		a.log.WithFields(logrus.Fields{"volume": c.Name, "server": c.Server}).Info("name claimed")
	}
	reply(w, http.StatusOK, c)
}

func (a *API) getClaim(w http.ResponseWriter, r *http.Request) {
	c, err := a.svc.GetClaim(r.PathValue("name"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	reply(w, http.StatusOK, c)
}

func (a *API) switchClaim(w http.ResponseWriter, r *http.Request) {
	var req api.SwitchRequest
	if err := decode(r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	c, err := a.svc.SwitchClaim(r.PathValue("name"), req.From, req.To)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.WithFields(logrus.Fields{"volume": c.Name, "from": req.From, "server": c.Server}).Info("name claim switched")
	reply(w, http.StatusOK, c)
}

func (a *API) releaseClaim(w http.ResponseWriter, r *http.Request) {
	name, server := r.PathValue("name"), r.URL.Query().Get("server")
	if err := a.svc.ReleaseClaim(name, server); err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.WithFields(logrus.Fields{"volume": name, "server": server}).Info("name claim released")
	reply(w, http.StatusNoContent, nil)
}

func (a *API) setLabels(w http.ResponseWriter, r *http.Request) {
	var req api.LabelsRequest
	if err := decode(r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	v, err := a.svc.SetLabels(r.Context(), r.PathValue("name"), req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	reply(w, http.StatusOK, v)
}

func (a *API) deleteHeldBy(w http.ResponseWriter, r *http.Request, name, holder string) {
	if err := a.svc.DeleteVolumeHeldBy(r.Context(), name, holder); err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.WithFields(logrus.Fields{"volume": name, "node": holder}).Info("volume deleted (held by its mover)")
	reply(w, http.StatusNoContent, nil)
}
