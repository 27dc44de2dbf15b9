package server

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/server/api"

	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/state"
)

// The daemon's clock advances with the monotonic clock and carries no
// monotonic reading of its own, so what it stamps compares as wall time.
func TestMonotonicClock(t *testing.T) {
	now := monotonicClock()
	a := now()
	time.Sleep(10 * time.Millisecond)
	b := now()
	if d := b.Sub(a); d < 10*time.Millisecond || d > time.Minute {
		t.Fatalf("clock advanced %v over a 10ms sleep", d)
	}
	if strings.Contains(a.String(), "m=") {
		t.Fatalf("clock reading %s carries a monotonic reading", a)
	}
	if d := time.Since(a); d < 0 || d > time.Minute {
		t.Fatalf("clock is %v away from the wall clock", d)
	}
}

// Grants and renewals say how long the lease has left; a takeover names
// the read-write holder it fenced, and a reader's takeover names none.
func TestGrantTimeLeftAndFenced(t *testing.T) {
	s, clk := newService(t)
	mustCreate(t, s, "v", 4<<20, "")
	g := mustAttach(t, s, "v", "n1", "rw")
	if g.ExpiresInMS != 15000 || len(g.Fenced) != 0 {
		t.Fatalf("grant %+v", g)
	}
	clk.Add(4 * time.Second)
	_, err := s.Attach(bg, "v", api.AttachRequest{Node: "n2", Mode: "rw"})
	var ce *state.ConflictError
	if !errors.As(err, &ce) || ce.ExpiresIn != 11*time.Second {
		t.Fatalf("conflict %v", err)
	}
	if l, err := s.Renew(bg, "v", "n1"); err != nil || l.ExpiresInMS != 15000 {
		t.Fatalf("renew %+v %v", l, err)
	}
	clk.Add(15 * time.Second)
	if v, _ := s.GetVolume(bg, "v"); v.Attachments[0].ExpiresInMS != 0 {
		t.Fatalf("lapsed attachment shows %d ms left", v.Attachments[0].ExpiresInMS)
	}
	g = mustAttach(t, s, "v", "n2", "ro")
	if len(g.Fenced) != 1 || g.Fenced[0] != "n1" {
		t.Fatalf("takeover from a writer: %+v", g)
	}
	clk.Add(15 * time.Second)
	if g = mustAttach(t, s, "v", "n3", "rw"); len(g.Fenced) != 0 {
		t.Fatalf("takeover from a reader fenced %v", g.Fenced)
	}
	if g = mustAttach(t, s, "v", "n3", "rw"); len(g.Fenced) != 1 || g.Fenced[0] != "n3" {
		t.Fatalf("a node's own second attach: %+v", g)
	}
}

// A restart keeps every attachment and gives each a full term from the
// restart, lapsed ones too: a taker waits one term, then fences the holder.
func TestLeasesSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	cfg := Config{DataDir: dir, LeaseTTL: 15 * time.Second, Now: clk.Now}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, "v", 4<<20, "")
	g1 := mustAttach(t, s, "v", "n1", "rw")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Hour) // down for an hour: the lease lapsed on the wall clock
	if s, err = Open(cfg); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.GetVolume(bg, "v")
	if err != nil || len(v.Attachments) != 1 || !v.Attachments[0].Expires.Equal(clk.Now().Add(15*time.Second)) ||
		v.Attachments[0].Generation != g1.Generation {
		t.Fatalf("after restart: %+v %v", v.Attachments, err)
	}
	clk.Add(10 * time.Second)
	_, err = s.Attach(bg, "v", api.AttachRequest{Node: "n2", Mode: "rw"})
	var ce *state.ConflictError
	if !errors.As(err, &ce) || ce.Holder != "n1" || ce.ExpiresIn != 5*time.Second {
		t.Fatalf("attach within the restored term: %v", err)
	}
	e1, err := s.Open(bg, g1.Export)
	if err != nil {
		t.Fatalf("the restored attachment's export: %v", err)
	}
	clk.Add(5 * time.Second)
	g2 := mustAttach(t, s, "v", "n2", "rw")
	if g2.Generation != g1.Generation+1 || len(g2.Fenced) != 1 || !e1.Revoked() {
		t.Fatalf("takeover after the term: %+v, revoked %v", g2, e1.Revoked())
	}
	if _, err := s.Open(bg, g1.Export); !errors.Is(err, nbd.ErrUnknownExport) {
		t.Fatalf("fenced export opens: %v", err)
	}
}

// A conflict answers 409 with the holder, its mode, the expiry and the
// time left in fields of their own, and Retry-After in whole seconds.
func TestAPIConflictBody(t *testing.T) {
	c, _, clk := newAPI(t)
	c.must(201, "POST", "/v1/volumes", `{"name":"v","size":"4M"}`, nil)
	var g api.Grant
	c.must(200, "POST", "/v1/volumes/v/attachments", `{"node":"node-1","mode":"rw"}`, &g)
	if g.ExpiresInMS != 15000 {
		t.Fatalf("grant %+v", g)
	}
	clk.Add(2500 * time.Millisecond)
	req, _ := http.NewRequest("POST", c.url+"/v1/volumes/v/attachments", strings.NewReader(`{"node":"node-2","mode":"ro"}`))
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var body map[string]any
	if err := json.Unmarshal(data, &body); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"code": "conflict", "holder": "node-1", "mode": "rw",
		"expires": g.Expires.UTC().Format(time.RFC3339Nano), "expires_in_ms": 12500.0}
	for k, v := range want {
		if body[k] != v {
			t.Errorf("%s = %v, want %v (body %s)", k, body[k], v, data)
		}
	}
	if resp.StatusCode != 409 || resp.Header.Get("Retry-After") != "13" {
		t.Fatalf("status %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Other errors carry none of it.
	_, e := c.do("DELETE", "/v1/volumes/v", "", nil)
	if e.Holder != "" || e.Expires != nil || e.ExpiresInMS != 0 {
		t.Fatalf("in_use answer with conflict fields: %+v", e)
	}
}
