package api_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/server"
	"github.com/netvol/netvol/server/api"
)

const testToken = "t0ken"

// newDaemon starts a real storage daemon's API and returns a client of it.
func newDaemon(t *testing.T, opts ...server.APIOption) (*api.Client, *httptest.Server) {
	t.Helper()
	svc, err := server.Open(server.Config{DataDir: t.TempDir(), MaxVolumeSize: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	log := logrus.New()
	log.SetOutput(io.Discard)
	srv := httptest.NewServer(server.NewAPI(svc, testToken, log, opts...))
	t.Cleanup(srv.Close)
	c, err := api.New(srv.URL, testToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c, srv
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNew(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:10810":          "http://127.0.0.1:10810",
		"storage-1:10810":          "http://storage-1:10810",
		"[::1]:10810":              "http://[::1]:10810",
		"http://10.0.0.1:80":       "http://10.0.0.1:80",
		"https://storage.example/": "https://storage.example",
		"http://h:1":               "http://h:1",
	} {
		c, err := api.New(in, "tok", nil)
		if err != nil || c.URL() != want {
			t.Errorf("New(%q) = %v, %v; want %s", in, c, err, want)
		}
	}
	for _, in := range []string{"", "storage", ":10810", "ftp://h:1", "http://", "http://u:p@h:1",
		"http://h:1/api", "http://h:1?x=1", "http://h:1#f", "h:port", "http://h:99999x", "unix:/run/x"} {
		if _, err := api.New(in, "tok", nil); !errors.Is(err, api.ErrInvalid) {
			t.Errorf("New(%q) = %v, want ErrInvalid", in, err)
		}
	}
	for _, tok := range []string{"a b", "a\nb", "a\x00"} {
		if _, err := api.New("h:1", tok, nil); !errors.Is(err, api.ErrInvalid) {
			t.Errorf("token %q accepted", tok)
		}
	}
}

// Every call against a real daemon, and the errors it answers.
func TestVolumesAndAttachments(t *testing.T) {
	c, srv := newDaemon(t)
	ctx := ctxT(t)
	v, err := c.CreateVolume(ctx, api.CreateRequest{Name: "v1", Size: 8 << 20, Labels: map[string]string{"a": "b"}})
	if err != nil || v.Name != "v1" || v.Size != 8<<20 || v.Labels["a"] != "b" {
		t.Fatalf("create: %+v %v", v, err)
	}
	if v, err = c.CreateVolume(ctx, api.CreateRequest{Name: "clone", From: "v1"}); err != nil || v.Size != 8<<20 || v.From != "v1" {
		t.Fatalf("clone without a size: %+v %v", v, err)
	}
	if r, err := c.ResizeVolume(ctx, "clone", 16<<20); err != nil || r.Size != 16<<20 || len(r.Pending) != 0 {
		t.Fatalf("resize: %+v %v", r, err)
	}
	if v, err = c.GetVolume(ctx, "v1"); err != nil || v.Name != "v1" || len(v.Attachments) != 0 {
		t.Fatalf("get: %+v %v", v, err)
	}
	vols, err := c.ListVolumes(ctx)
	if err != nil || len(vols) != 2 || vols[0].Name != "clone" {
		t.Fatalf("list: %+v %v", vols, err)
	}
	g, err := c.Attach(ctx, "clone", "node-1", api.ModeRW)
	if err != nil || !strings.HasPrefix(g.Export, "clone.") || g.Generation != 1 || !g.Expires.After(time.Now()) {
		t.Fatalf("attach: %+v %v", g, err)
	}
	l, err := c.Renew(ctx, "clone", "node-1")
	if err != nil || l.Expires.Before(g.Expires) {
		t.Fatalf("renew: %+v %v", l, err)
	}
	err = c.DeleteVolume(ctx, "clone")
	wantErr(t, err, api.ErrInUse, 409, "node-1")
	var inUse *api.Error
	if errors.As(err, &inUse); len(inUse.Nodes) != 1 || inUse.Nodes[0] != "node-1" {
		t.Fatalf("in_use answer names nodes %v, want node-1", inUse.Nodes)
	}
	_, err = c.Attach(ctx, "clone", "node-2", api.ModeRW)
	wantErr(t, err, api.ErrConflict, 409, `"node-1"`)
	var ce *api.Error
	errors.As(err, &ce)
	if ce.Holder != "node-1" || ce.Mode != api.ModeRW || !ce.Expires.Equal(l.Expires) ||
		ce.ExpiresIn <= 0 || ce.ExpiresIn > time.Duration(l.ExpiresInMS)*time.Millisecond {
		t.Fatalf("conflict details %+v, lease %+v", ce, l)
	}
	if g.ExpiresInMS != server.DefaultLeaseTTL.Milliseconds() {
		t.Fatalf("grant's time left %d ms", g.ExpiresInMS)
	}
	if err := c.Detach(ctx, "clone", "node-1"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, c.Detach(ctx, "clone", "node-1"), api.ErrNotFound, 404, "")
	_, err = c.Renew(ctx, "clone", "node-1")
	wantErr(t, err, api.ErrNotFound, 404, "")
	_, err = c.CreateVolume(ctx, api.CreateRequest{Name: "v1", Size: 1 << 20})
	wantErr(t, err, api.ErrExists, 409, `"v1"`)
	_, err = c.CreateVolume(ctx, api.CreateRequest{Name: "v2"})
	wantErr(t, err, api.ErrInvalid, 400, "more than zero")
	_, err = c.CreateVolume(ctx, api.CreateRequest{Name: "v3", Size: 1 << 20, From: "nope"})
	wantErr(t, err, api.ErrNotFound, 404, "nope")
	_, err = c.Attach(ctx, "v1", "node-1", "rwx")
	wantErr(t, err, api.ErrInvalid, 400, "mode")
	_, err = c.GetVolume(ctx, "a/b") // escaped: one path segment, no such volume
	wantErr(t, err, api.ErrNotFound, 404, "")
	for _, name := range []string{"", ".", ".."} {
		if _, err := c.GetVolume(ctx, name); !errors.Is(err, api.ErrInvalid) {
			t.Errorf("GetVolume(%q) = %v", name, err)
		}
	}
	for _, name := range []string{"clone", "v1"} {
		if err := c.DeleteVolume(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	wantErr(t, c.DeleteVolume(ctx, "v1"), api.ErrNotFound, 404, "")

	bad, _ := api.New(srv.URL, "wrong", nil)
	_, err = bad.ListVolumes(ctx)
	wantErr(t, err, api.ErrUnauthorized, 401, "token")
	if _, err := bad.Health(ctx); err != nil {
		t.Fatalf("health needs no token: %v", err)
	}
}

func wantErr(t *testing.T, err, target error, status int, msg string) {
	t.Helper()
	var e *api.Error
	if !errors.Is(err, target) || !errors.As(err, &e) || e.Status != status || !strings.Contains(e.Message, msg) {
		t.Fatalf("error %#v (%v), want %v, HTTP %d, mentioning %q", err, err, target, status, msg)
	}
	for _, other := range []error{api.ErrNotFound, api.ErrExists, api.ErrInUse, api.ErrConflict, api.ErrInvalid, api.ErrUnauthorized, api.ErrUnavailable} {
		heldInUse := target == api.ErrConflict && other == api.ErrInUse // errdefs: held is in use
		if other != target && !heldInUse && errors.Is(err, other) {
			t.Fatalf("error %v also matches %v", err, other)
		}
	}
}

func TestHealth(t *testing.T) {
	c, _ := newDaemon(t, server.WithNBDAddr(&net.UnixAddr{Net: "unix", Name: "/run/n.sock"}))
	h, err := c.Health(ctxT(t))
	if err != nil || h.Status != "ok" || h.NBD != "unix:/run/n.sock" {
		t.Fatalf("health: %+v %v", h, err)
	}
}

// A stopped daemon and one that never answers are ErrUnavailable naming
// the server, and a deadline is honoured.
func TestUnavailable(t *testing.T) {
	c, srv := newDaemon(t)
	srv.Close()
	_, err := c.GetVolume(ctxT(t), "v")
	if !errors.Is(err, api.ErrUnavailable) || !strings.Contains(err.Error(), c.Server()) {
		t.Fatalf("stopped daemon: %v", err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() { // accept and say nothing
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()
	c, _ = api.New(l.Addr().String(), testToken, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Attach(ctx, "v", "n", api.ModeRW)
	if !errors.Is(err, api.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), l.Addr().String()) || time.Since(start) > 5*time.Second {
		t.Fatalf("silent server: %v after %v", err, time.Since(start))
	}
}

// Answers that are not the API's are errors, read within bounds.
func TestBadAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/volumes":
			w.Write([]byte("[" + strings.Repeat(`{"name":"x"},`, 1<<20) + "{}]"))
		case "/v1/volumes/gw":
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte("<html>bad \x00gateway</html>"))
		case "/v1/volumes/big":
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte(strings.Repeat("x", 1<<20)))
		case "/v1/volumes/garbage":
			w.Write([]byte("not json"))
		case "/healthz":
			w.Write([]byte(`{"status":"degraded"}`))
		}
	}))
	defer srv.Close()
	c, _ := api.New(srv.URL, testToken, nil)
	ctx := ctxT(t)
	if _, err := c.ListVolumes(ctx); !errors.Is(err, api.ErrUnavailable) || !strings.Contains(err.Error(), "over") {
		t.Errorf("huge list: %v", err)
	}
	_, err := c.GetVolume(ctx, "gw")
	var e *api.Error
	if !errors.As(err, &e) || e.Status != 502 || !errors.Is(err, api.ErrUnavailable) || !strings.Contains(err.Error(), "<html>bad gateway") {
		t.Errorf("gateway: %v", err)
	}
	if _, err := c.GetVolume(ctx, "big"); !errors.As(err, &e) || e.Status != 500 || len(err.Error()) > 300 {
		t.Errorf("big error: %.300v", err)
	}
	if _, err := c.GetVolume(ctx, "garbage"); !errors.Is(err, api.ErrUnavailable) {
		t.Errorf("garbage: %v", err)
	}
	if _, err := c.Health(ctx); !errors.Is(err, api.ErrUnavailable) {
		t.Errorf("degraded health: %v", err)
	}
}
