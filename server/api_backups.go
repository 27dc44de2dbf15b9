package server

import (
	"net/http"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// longCall reports the calls that move a volume's data: a backup, a
// restore (a create, which answers within the short deadline unless it
// restores: createVolume), a verify and a removal (which collects chunks).
func longCall(r *http.Request) bool {
	p := r.URL.Path
	switch r.Method {
	case http.MethodPost:
		return p == "/v1/volumes" || strings.HasSuffix(p, "/backups") || (strings.HasPrefix(p, "/v1/backups/") && strings.HasSuffix(p, "/verify"))
	case http.MethodDelete:
		return strings.HasPrefix(p, "/v1/backups/")
	}
	return false
}

func (a *API) createBackup(w http.ResponseWriter, r *http.Request) {
	var req struct{}
	if r.ContentLength != 0 {
		if err := decode(r, &req); err != nil {
			a.fail(w, r, err)
			return
		}
	}
	start := time.Now()
	b, err := a.svc.CreateBackup(r.Context(), r.PathValue("name"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.WithFields(logrus.Fields{"volume": b.Volume, "backup": b.ID, "parent": b.Parent, "data_bytes": b.DataBytes,
		"stored_bytes": b.StoredBytes, "seconds": time.Since(start).Seconds()}).Info("backup taken")
	reply(w, http.StatusCreated, b)
}

func (a *API) listBackups(w http.ResponseWriter, r *http.Request) {
	list, err := a.svc.ListBackups(r.Context(), r.URL.Query().Get("volume"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	reply(w, http.StatusOK, list)
}

func (a *API) getBackup(w http.ResponseWriter, r *http.Request) {
	b, err := a.svc.GetBackup(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	reply(w, http.StatusOK, b)
}

func (a *API) deleteBackup(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := a.svc.DeleteBackup(r.Context(), id); err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.WithField("backup", id).Info("backup removed")
	reply(w, http.StatusNoContent, nil)
}

func (a *API) verifyBackup(w http.ResponseWriter, r *http.Request) {
	v, err := a.svc.VerifyBackup(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.WithFields(logrus.Fields{"backup": v.ID, "chunks": v.Chunks, "bytes": v.Bytes}).Info("backup verified")
	reply(w, http.StatusOK, v)
}
