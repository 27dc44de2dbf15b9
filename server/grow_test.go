package server

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/state"
)

// resizeAsync runs ResizeVolume in the background.
func resizeAsync(s *Service, name string, size int64) <-chan resizeOutcome {
	ch := make(chan resizeOutcome, 1)
	go func() {
		start := time.Now()
		r, err := s.ResizeVolume(bg, name, size)
		ch <- resizeOutcome{r, err, time.Since(start)}
	}()
	return ch
}

type resizeOutcome struct {
	r    api.ResizeResult
	err  error
	took time.Duration
}

func TestResizeRefusals(t *testing.T) {
	s, _ := newService(t)
	mustCreate(t, s, "v", 8<<20, "")
	_, err := s.ResizeVolume(bg, "v", 4<<20)
	wantErr(t, err, state.ErrInvalid)
	if !strings.Contains(err.Error(), "has 8388608 bytes (8MiB)") || !strings.Contains(err.Error(), "only grow") {
		t.Fatalf("a shrink's error does not name the current size: %v", err)
	}
	// A clone reads a frozen layer of v (snapshots), so v still grows and
	// the clone keeps its size.
	mustCreate(t, s, "c", 0, "v")
	if _, err = s.ResizeVolume(bg, "v", 16<<20); err != nil {
		t.Fatalf("growing a volume with a clone: %v", err)
	}
	if c, err := s.GetVolume(bg, "c"); err != nil || c.Size != 8<<20 {
		t.Fatalf("the clone after its source grew: %+v, %v", c, err)
	}
	wantErr(t, s.Grown(bg, "v", "n1", api.GrownReport{Size: 8 << 20}), state.ErrNotFound)
}

// A resize of an attached volume grows the export its holder uses, tells
// the holder the size in the renewal, and returns once the holder
// reported the new size (not at the end of the wait).
func TestResizeWhileAttached(t *testing.T) {
	s, _ := newService(t)
	s.cfg.ResizeWait = 10 * time.Second
	mustCreate(t, s, "v", 8<<20, "")
	g := mustAttach(t, s, "v", "n1", "rw")
	e, err := s.Open(bg, g.Export)
	if err != nil {
		t.Fatal(err)
	}
	done := resizeAsync(s, "v", 16<<20)
	var l api.Lease
	for end := time.Now().Add(5 * time.Second); l.Size != 16<<20; time.Sleep(5 * time.Millisecond) {
		if l, err = s.Renew(bg, "v", "n1"); err != nil || time.Now().After(end) {
			t.Fatalf("renewal never carried the new size: %+v %v", l, err)
		}
	}
	if got := e.Backend.Size(); got != 16<<20 {
		t.Fatalf("the open export has %d bytes, want %d", got, 16<<20)
	}
	select {
	case o := <-done:
		t.Fatalf("resize returned before the holder grew: %+v", o)
	case <-time.After(100 * time.Millisecond):
	}
	if err := s.Grown(bg, "v", "n1", api.GrownReport{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	o := <-done
	if o.err != nil || len(o.r.Pending) != 0 || o.r.Size != 16<<20 || o.took > 5*time.Second {
		t.Fatalf("resize: %+v", o)
	}
	if a := o.r.Attachments; len(a) != 1 || a[0].Grown != 16<<20 {
		t.Fatalf("attachments do not show the holder's report: %+v", a)
	}
}

// A holder that does not report makes the resize answer, at the end of
// the wait, with what is pending and why; one that reports an error ends
// the wait at once, and an error reported before the resize does not.
func TestResizePending(t *testing.T) {
	s, _ := newService(t)
	s.cfg.ResizeWait = 300 * time.Millisecond
	mustCreate(t, s, "v", 8<<20, "")
	mustAttach(t, s, "v", "n1", "rw")
	if err := s.Grown(bg, "v", "n1", api.GrownReport{Size: 8 << 20, Error: "an old failure"}); err != nil {
		t.Fatal(err)
	}
	o := <-resizeAsync(s, "v", 16<<20)
	if o.err != nil || len(o.r.Pending) != 1 || o.r.Pending[0].Node != "n1" || o.r.Pending[0].Grown != 8<<20 ||
		!strings.Contains(o.r.Pending[0].Why, "has not reported") || o.took < 300*time.Millisecond {
		t.Fatalf("silent holder: %+v", o)
	}
	s.cfg.ResizeWait = 10 * time.Second
	done := resizeAsync(s, "v", 32<<20)
	time.Sleep(50 * time.Millisecond)
	if err := s.Grown(bg, "v", "n1", api.GrownReport{Size: 16 << 20, Error: "EXT4_IOC_RESIZE_FS: no space"}); err != nil {
		t.Fatal(err)
	}
	o = <-done
	if o.err != nil || len(o.r.Pending) != 1 || !strings.Contains(o.r.Pending[0].Why, "could not grow") ||
		!strings.Contains(o.r.Pending[0].Why, "no space") || o.took > 5*time.Second {
		t.Fatalf("failing holder: %+v", o)
	}
}

// A holder that detaches while the resize waits is done: its file system
// grows at its next mount. A read-only or lapsed attachment is not waited
// for.
func TestResizeHolderLeaves(t *testing.T) {
	s, clk := newService(t)
	s.cfg.ResizeWait = 10 * time.Second
	mustCreate(t, s, "v", 8<<20, "")
	mustAttach(t, s, "v", "n1", "rw")
	done := resizeAsync(s, "v", 16<<20)
	time.Sleep(50 * time.Millisecond)
	if err := s.Detach(bg, "v", "n1"); err != nil {
		t.Fatal(err)
	}
	// Detaching reports nothing: poke the waiter as any report would.
	mustCreate(t, s, "w", 8<<20, "")
	mustAttach(t, s, "w", "n2", "rw")
	if err := s.Grown(bg, "w", "n2", api.GrownReport{Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	if o := <-done; o.err != nil || len(o.r.Pending) != 0 || o.took > 5*time.Second {
		t.Fatalf("holder detached: %+v", o)
	}
	mustAttach(t, s, "v", "n3", "ro")
	mustAttach(t, s, "w", "n2", "rw")
	clk.Add(time.Minute) // n2's lease lapses
	for _, name := range []string{"v", "w"} {
		if o := <-resizeAsync(s, name, 32<<20); o.err != nil || len(o.r.Pending) != 0 || o.took > time.Second {
			t.Fatalf("%s: %+v", name, o)
		}
	}
}

// Through the HTTP API: 202 with the pending holders, 200 once it grew,
// and the report's own call.
func TestResizeAPI(t *testing.T) {
	c, s, _ := newAPI(t)
	s.cfg.ResizeWait = 200 * time.Millisecond
	mustCreate(t, s, "v", 8<<20, "")
	mustAttach(t, s, "v", "n1", "rw")
	var r api.ResizeResult
	if st, e := c.do("POST", "/v1/volumes/v/resize", `{"size":"16M"}`, &r); st != http.StatusAccepted ||
		len(r.Pending) != 1 || r.Size != 16<<20 {
		t.Fatalf("resize with a silent holder: %d %+v %+v", st, e, r)
	}
	if st, e := c.do("POST", "/v1/volumes/v/attachments/n1/grown", `{"size":16777216}`, nil); st != http.StatusNoContent {
		t.Fatalf("grown: %d %+v", st, e)
	}
	r = api.ResizeResult{}
	if st, e := c.do("POST", "/v1/volumes/v/resize", `{"size":"16M"}`, &r); st != http.StatusOK || len(r.Pending) != 0 {
		t.Fatalf("resize once grown: %d %+v %+v", st, e, r)
	}
	if st, e := c.do("POST", "/v1/volumes/v/resize", `{"size":"4M"}`, nil); st != http.StatusBadRequest || e.Code != api.CodeInvalid {
		t.Fatalf("shrink: %d %+v", st, e)
	}
	if st, e := c.do("POST", "/v1/volumes/v/attachments/n9/grown", `{"size":1}`, nil); st != http.StatusNotFound {
		t.Fatalf("grown of no attachment: %d %+v", st, e)
	}
	ctx, cancel := context.WithTimeout(bg, time.Second)
	defer cancel()
	if l, err := s.Renew(ctx, "v", "n1"); err != nil || l.Size != 16<<20 {
		t.Fatalf("renew: %+v %v", l, err)
	}
}
