package server

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sirupsen/logrus"
)

// GET /healthz reports the NBD address it was given, as --nbd-listen
// spells it, and nothing when it was given none.
func TestHealthzNBDAddr(t *testing.T) {
	s, _ := newService(t)
	log := logrus.New()
	log.SetOutput(io.Discard)
	for _, tc := range []struct {
		opts []APIOption
		want string
	}{
		{nil, ""},
		{[]APIOption{WithNBDAddr(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 10809})}, "127.0.0.1:10809"},
		{[]APIOption{WithNBDAddr(&net.TCPAddr{IP: net.IPv6loopback, Port: 10809})}, "[::1]:10809"},
		{[]APIOption{WithNBDAddr(&net.UnixAddr{Name: "/run/netvol/nbd.sock", Net: "unix"})}, "unix:/run/netvol/nbd.sock"},
	} {
		srv := httptest.NewServer(NewAPI(s, testToken, log, tc.opts...))
		resp, err := http.Get(srv.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		var h map[string]string
		err = json.NewDecoder(resp.Body).Decode(&h)
		resp.Body.Close()
		srv.Close()
		if err != nil || resp.StatusCode != 200 || h["status"] != "ok" || h["nbd"] != tc.want {
			t.Errorf("healthz with %q: %d %v %v", tc.want, resp.StatusCode, h, err)
		}
		if _, ok := h["nbd"]; !ok && tc.want != "" {
			t.Errorf("healthz without an nbd field: %v", h)
		}
	}
}
