package blockvol

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume/backend"
)

// Rank is the same whatever order the servers come in, spreads the homes
// of names, and removing a server moves only the names it was home of.
func TestRank(t *testing.T) {
	servers := []string{"a:1", "b:1", "c:1"}
	homes := map[string]int{}
	for i := range 600 {
		name := fmt.Sprintf("vol-%d", i)
		r := Rank(name, servers)
		if got := Rank(name, []string{"c:1", "a:1", "b:1"}); !slices.Equal(got, r) {
			t.Fatalf("Rank(%q) depends on the order: %v vs %v", name, r, got)
		}
		homes[r[0]]++
		if r[0] != "b:1" {
			if got := Rank(name, []string{"a:1", "c:1"})[0]; got != r[0] {
				t.Fatalf("removing b:1 moved the home of %q from %s to %s", name, r[0], got)
			}
		}
	}
	for _, s := range servers {
		if homes[s] < 150 {
			t.Errorf("server %s is home of %d of 600 names: %v", s, homes[s], homes)
		}
	}
}

func TestPlace(t *testing.T) {
	capOf := func(free, promised int64, w float64) api.Capacity {
		return api.Capacity{Free: free, Promised: promised, Weight: w}
	}
	down := errors.New("connection refused")
	for _, tc := range []struct {
		what  string
		cands []Candidate
		want  string
	}{
		{"most free", []Candidate{{"a", capOf(10, 0, 1), nil}, {"b", capOf(30, 0, 1), nil}, {"c", capOf(20, 0, 1), nil}}, "b"},
		{"promised counts", []Candidate{{"a", capOf(100, 90, 1), nil}, {"b", capOf(50, 0, 1), nil}}, "b"},
		{"weight scales", []Candidate{{"a", capOf(100, 0, 1), nil}, {"b", capOf(60, 0, 2), nil}}, "b"},
		{"draining skipped", []Candidate{{"a", api.Capacity{Free: 100, NoNewVolumes: true}, nil}, {"b", capOf(1, 0, 1), nil}}, "b"},
		{"unreachable skipped", []Candidate{{"a", api.Capacity{}, down}, {"b", capOf(1, 0, 1), nil}}, "b"},
		{"overcommitted: least overcommitted", []Candidate{{"a", capOf(10, 50, 1), nil}, {"b", capOf(10, 20, 1), nil}}, "b"},
	} {
		got, err := Place("v", tc.cands)
		if err != nil || got != tc.want {
			t.Errorf("%s: Place = %q, %v; want %q", tc.what, got, err, tc.want)
		}
	}
	// Ties go by Rank, so equal servers spread the names.
	tie := []Candidate{{"a", capOf(10, 0, 1), nil}, {"b", capOf(10, 0, 1), nil}, {"c", capOf(10, 0, 1), nil}}
	picked := map[string]int{}
	for i := range 300 {
		name := fmt.Sprintf("n%d", i)
		got, err := Place(name, tie)
		if err != nil || got != Rank(name, []string{"a", "b", "c"})[0] {
			t.Fatalf("tie for %q: %q, %v", name, got, err)
		}
		picked[got]++
	}
	if len(picked) != 3 {
		t.Errorf("ties all went to %v", picked)
	}
	_, err := Place("v", []Candidate{{"a", api.Capacity{}, down}, {"b", api.Capacity{NoNewVolumes: true}, nil}})
	if !errors.Is(err, backend.ErrUnavailable) || !strings.Contains(err.Error(), "a: connection refused") || !strings.Contains(err.Error(), "no-new-volumes") {
		t.Errorf("no candidate: %v", err)
	}
}

func TestResolve(t *testing.T) {
	plain := func(s string) Copy { return Copy{Server: s, Volume: api.Volume{Name: "v"}} }
	incoming := func(s, from string) Copy {
		return Copy{Server: s, Volume: api.Volume{Name: "v", Labels: map[string]string{LabelIncoming: from}}}
	}
	for _, tc := range []struct {
		what   string
		copies []Copy
		down   []string
		want   string // server, or the error's kind
	}{
		{"one copy", []Copy{plain("a")}, nil, "a"},
		{"one copy, another server down", []Copy{plain("a")}, []string{"b"}, "a"},
		{"move before commit: source wins", []Copy{plain("a"), incoming("b", "a")}, nil, "a"},
		{"move before commit, target down", []Copy{plain("a")}, []string{"b"}, "a"},
		{"move after commit: the incoming copy", []Copy{incoming("b", "a")}, nil, "b"},
		{"incoming copy, source down: cannot tell", []Copy{incoming("b", "a")}, []string{"a"}, "unavailable"},
		{"none", nil, nil, "not found"},
		{"none, a server down", nil, []string{"c"}, "unavailable"},
		{"two plain copies", []Copy{plain("a"), plain("b")}, nil, "error"},
	} {
		c, err := Resolve("v", tc.copies, tc.down)
		var got string
		switch {
		case err == nil:
			got = c.Server
		case errors.Is(err, backend.ErrUnavailable):
			got = "unavailable"
			for _, d := range tc.down {
				if !strings.Contains(err.Error(), d) {
					t.Errorf("%s: %v does not name %s", tc.what, err, d)
				}
			}
		case errors.Is(err, backend.ErrNotFound):
			got = "not found"
		default:
			got = "error"
		}
		if got != tc.want {
			t.Errorf("%s: Resolve = %q (%v), want %q", tc.what, got, err, tc.want)
		}
	}
}

// poolEnv is three storage daemons in process and backends ("hosts") over
// all three.
type poolEnv struct {
	t    *testing.T
	envs []*testEnv
}

func newPoolEnv(t *testing.T) *poolEnv {
	p := &poolEnv{t: t}
	for range 3 {
		p.envs = append(p.envs, newEnv(t, 0))
	}
	return p
}

func (p *poolEnv) apis() []API {
	var out []API
	for _, e := range p.envs {
		c, err := newClient(e.api.URL)
		if err != nil {
			p.t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func (p *poolEnv) host(node string) *Backend {
	p.t.Helper()
	b, err := New(Config{Servers: p.apis(), Node: node, Attacher: newCopyAttacher(p.t), Mounter: &fakeMounter{},
		Formatter: &countingFormatter{}, Log: quietLog()})
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(b.Close)
	return b
}

// holders lists the servers that hold a volume of name.
func (p *poolEnv) holders(name string) []string {
	var out []string
	for _, e := range p.envs {
		if _, err := e.client.GetVolume(ctxT(p.t), name); err == nil {
			out = append(out, e.client.Server())
		}
	}
	return out
}

// Placement spreads volumes over the servers; each is on exactly one, and
// every host finds it there.
func TestPoolPlacementSpreads(t *testing.T) {
	p := newPoolEnv(t)
	h1, h2 := p.host("h1"), p.host("h2")
	ctx := ctxT(t)
	per := map[string]int{}
	for i := range 30 {
		name := fmt.Sprintf("v%02d", i)
		if err := []*Backend{h1, h2}[i%2].Create(ctx, name, backend.Options{Size: volSize}); err != nil {
			t.Fatal(err)
		}
		hs := p.holders(name)
		if len(hs) != 1 {
			t.Fatalf("%s is on %v", name, hs)
		}
		per[hs[0]]++
		v, err := []*Backend{h2, h1}[i%2].Get(ctx, name, backend.Options{})
		if err != nil || v.Server != hs[0] || v.Status["server"] != hs[0] {
			t.Fatalf("the other host's Get of %s: %+v %v; it is on %s", name, v, err, hs[0])
		}
	}
	for _, e := range p.envs {
		if n := per[e.client.Server()]; n < 8 {
			t.Errorf("server %s got %d of 30 volumes: %v", e.client.Server(), n, per)
		}
	}
	list, err := h1.List(ctx)
	if err != nil || len(list) != 30 {
		t.Fatalf("list: %d volumes, %v", len(list), err)
	}
	// -o server=NAME picks; a clone stays with its source.
	named := p.envs[2].client.Server()
	if err := h1.Create(ctx, "named", backend.Options{Size: volSize, Server: named}); err != nil {
		t.Fatal(err)
	}
	if err := h2.Create(ctx, "clone", backend.Options{Size: volSize, From: "named"}); err != nil {
		t.Fatal(err)
	}
	if hs := p.holders("named"); !slices.Equal(hs, []string{named}) {
		t.Fatalf("-o server=%s: on %v", named, hs)
	}
	if hs := p.holders("clone"); !slices.Equal(hs, []string{named}) {
		t.Fatalf("clone of a volume on %s: on %v", named, hs)
	}
	err = h1.Create(ctx, "x", backend.Options{Size: volSize, Server: "elsewhere:1"})
	if !errors.Is(err, backend.ErrInvalid) {
		t.Fatalf("a server outside the pool: %v", err)
	}
}

// Two hosts creating one name at once: both succeed, exactly one volume.
func TestPoolConcurrentCreate(t *testing.T) {
	p := newPoolEnv(t)
	hosts := []*Backend{p.host("h1"), p.host("h2"), p.host("h3")}
	ctx := ctxT(t)
	for i := range 20 {
		name := fmt.Sprintf("same-%d", i)
		var wg sync.WaitGroup
		errs := make([]error, len(hosts))
		for j, h := range hosts {
			wg.Go(func() { errs[j] = h.Create(ctx, name, backend.Options{Size: volSize}) })
		}
		wg.Wait()
		for j, err := range errs {
			if err != nil {
				t.Fatalf("%s: host %d: %v", name, j, err)
			}
		}
		if hs := p.holders(name); len(hs) != 1 {
			t.Fatalf("%s is on %v after concurrent creates", name, hs)
		}
	}
	// A create of an existing name with another size is refused.
	err := hosts[0].Create(ctx, "same-0", backend.Options{Size: 2 * volSize})
	if !errors.Is(err, backend.ErrExists) {
		t.Fatalf("create of an existing name with another size: %v", err)
	}
}

// A server that is down affects its own volumes only: they fail naming
// it, List answers the others' with a PartialError naming it.
func TestPoolServerDown(t *testing.T) {
	p := newPoolEnv(t)
	h := p.host("h1")
	ctx := ctxT(t)
	onDead := p.envs[1].client.Server()
	if err := h.Create(ctx, "doomed", backend.Options{Size: volSize, Server: onDead}); err != nil {
		t.Fatal(err)
	}
	if err := h.Create(ctx, "alive", backend.Options{Size: volSize, Server: p.envs[0].client.Server()}); err != nil {
		t.Fatal(err)
	}
	other := p.host("h2") // knows nothing of where volumes were seen
	p.envs[1].api.Close()
	for _, b := range []*Backend{h, other} {
		_, err := b.Get(ctx, "doomed", backend.Options{})
		if !errors.Is(err, backend.ErrUnavailable) || !strings.Contains(err.Error(), onDead) {
			t.Fatalf("get of a volume on the dead server: %v", err)
		}
		_, err = b.Mount(ctx, "doomed", backend.Options{}, t.TempDir())
		if !errors.Is(err, backend.ErrUnavailable) || !strings.Contains(err.Error(), onDead) {
			t.Fatalf("mount of a volume on the dead server: %v", err)
		}
		if _, err := b.Get(ctx, "alive", backend.Options{}); err != nil {
			t.Fatalf("get of a volume on a live server: %v", err)
		}
		list, err := b.List(ctx)
		var pe *backend.PartialError
		if !errors.As(err, &pe) || !slices.Equal(pe.Servers, []string{onDead}) || len(list) != 1 || list[0].Name != "alive" {
			t.Fatalf("list with a server down: %+v, %v", list, err)
		}
	}
	m, err := h.Mount(ctx, "alive", backend.Options{UID: -1, GID: -1}, t.TempDir())
	if err != nil {
		t.Fatalf("mount of a volume on a live server: %v", err)
	}
	if err := h.Unmount(ctx, "alive", backend.Options{}, "", m); err != nil {
		t.Fatal(err)
	}
	// The home of a name on the dead server: creates of it are refused
	// naming it; other names are created.
	var homedOnDead, homedElsewhere string
	servers := h.pool.names()
	for i := 0; homedOnDead == "" || homedElsewhere == ""; i++ {
		n := fmt.Sprintf("n%d", i)
		if Rank(n, servers)[0] == onDead {
			homedOnDead = n
		} else {
			homedElsewhere = n
		}
	}
	if err := h.Create(ctx, homedElsewhere, backend.Options{Size: volSize}); err != nil {
		t.Fatalf("create with a server down: %v", err)
	}
	if hs := p.holders(homedElsewhere); len(hs) != 1 || hs[0] == onDead {
		t.Fatalf("placed on %v with %s down", hs, onDead)
	}
	err = h.Create(ctx, homedOnDead, backend.Options{Size: volSize})
	if !errors.Is(err, backend.ErrUnavailable) || !strings.Contains(err.Error(), "home server "+onDead) {
		t.Fatalf("create of a name whose home is down: %v", err)
	}
}

// writeExport writes data at offset 0 of name through an attachment.
func writeVolume(t *testing.T, c *api.Client, name string, data []byte, read bool) []byte {
	t.Helper()
	ctx := ctxT(t)
	g, err := c.Attach(ctx, name, "writer", api.ModeRW)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Detach(ctx, name, "writer")
	nc, err := dialExport(ctx, &member{name: c.Server(), api: c}, g.Export)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if read {
		buf := make([]byte, len(data))
		if err := nc.Read(ctx, buf, 5<<20); err != nil {
			t.Fatal(err)
		}
		return buf
	}
	if err := nc.Write(ctx, data, 5<<20, 0); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return nil
}

// A move copies the data, leaves the volume on the target only, and keeps
// it the volume for every host; it is refused while attached.
func TestPoolMove(t *testing.T) {
	p := newPoolEnv(t)
	h := p.host("h1")
	ctx := ctxT(t)
	from, to := p.envs[0], p.envs[2]
	if err := h.Create(ctx, "mv", backend.Options{Size: volSize, Server: from.client.Server(), UID: 7, GID: -1}); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3<<20+123)
	rand.Read(data)
	writeVolume(t, from.client, "mv", data, false)

	pool, err := NewPool(p.apis())
	if err != nil {
		t.Fatal(err)
	}
	// Attached: refused, nothing left on the target.
	if _, err := from.client.Attach(ctx, "mv", "busy", api.ModeRW); err != nil {
		t.Fatal(err)
	}
	if err := pool.Move(ctx, "mv", to.client.Server(), "mover", nil); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("move of an attached volume: %v", err)
	}
	if err := from.client.Detach(ctx, "mv", "busy"); err != nil {
		t.Fatal(err)
	}
	if hs := p.holders("mv"); !slices.Equal(hs, []string{from.client.Server()}) {
		t.Fatalf("after a refused move: on %v", hs)
	}

	var steps []string
	if err := pool.Move(ctx, "mv", to.client.Server(), "mover", func(s string) { steps = append(steps, s) }); err != nil {
		t.Fatal(err)
	}
	if hs := p.holders("mv"); !slices.Equal(hs, []string{to.client.Server()}) {
		t.Fatalf("after the move: on %v (steps %q)", hs, steps)
	}
	if got := writeVolume(t, to.client, "mv", data, true); !bytes.Equal(got, data) {
		t.Fatal("the moved volume reads other data")
	}
	v, err := h.Get(ctx, "mv", backend.Options{})
	if err != nil || v.Server != to.client.Server() || v.Stored["uid"] != "7" || v.Status["moving_from"] != "" {
		t.Fatalf("the moved volume: %+v %v", v, err)
	}
	home := pool.API(Rank("mv", pool.Servers())[0]).(PoolAPI)
	if c, err := home.GetClaim(ctx, "mv"); err != nil || c.Server != to.client.Server() {
		t.Fatalf("claim after the move: %+v %v", c, err)
	}
	// Creating the name again finds it where it went.
	if err := p.host("h2").Create(ctx, "mv", backend.Options{Size: volSize}); err != nil {
		t.Fatalf("create of the moved name: %v", err)
	}
	if hs := p.holders("mv"); len(hs) != 1 {
		t.Fatalf("after a create of the moved name: on %v", hs)
	}
}

// The states a crash in a move leaves are read deterministically: before
// the commit the source is the volume, after it the target, and rm
// removes both copies.
func TestPoolMoveCrashStates(t *testing.T) {
	p := newPoolEnv(t)
	h := p.host("h1")
	ctx := ctxT(t)
	src, dst := p.envs[0].client, p.envs[1].client
	if err := h.Create(ctx, "c", backend.Options{Size: volSize, Server: src.Server()}); err != nil {
		t.Fatal(err)
	}
	// Crashed after copying: an incoming copy on the target.
	if _, err := dst.CreateVolume(ctx, api.CreateRequest{Name: "c", Size: volSize,
		Labels: map[string]string{LabelIncoming: src.Server()}}); err != nil {
		t.Fatal(err)
	}
	for _, b := range []*Backend{h, p.host("h2")} {
		v, err := b.Get(ctx, "c", backend.Options{Location: dst.Server()})
		if err != nil || v.Server != src.Server() {
			t.Fatalf("before the commit: %+v %v", v, err)
		}
		if list, err := b.List(ctx); err != nil || len(list) != 1 || list[0].Server != src.Server() {
			t.Fatalf("list before the commit: %+v %v", list, err)
		}
	}
	// Crashed after the commit (source deleted), label still there.
	if err := src.DeleteVolume(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	v, err := h.Get(ctx, "c", backend.Options{Location: src.Server()})
	if err != nil || v.Server != dst.Server() {
		t.Fatalf("after the commit: %+v %v", v, err)
	}
	// With the source down, nobody can tell.
	p.envs[0].api.Close()
	if _, err := p.host("h3").Get(ctx, "c", backend.Options{}); !errors.Is(err, backend.ErrUnavailable) || !strings.Contains(err.Error(), "being moved") {
		t.Fatalf("incoming copy, source down: %v", err)
	}
}

// A volume left on two servers by a crashed move goes entirely with rm.
func TestPoolRemoveTakesIncomingCopies(t *testing.T) {
	p := newPoolEnv(t)
	h := p.host("h1")
	ctx := ctxT(t)
	src, dst := p.envs[0].client, p.envs[1].client
	if err := h.Create(ctx, "r", backend.Options{Size: volSize, Server: src.Server()}); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.CreateVolume(ctx, api.CreateRequest{Name: "r", Size: volSize,
		Labels: map[string]string{LabelIncoming: src.Server()}}); err != nil {
		t.Fatal(err)
	}
	if err := h.Remove(ctx, "r", backend.Options{}); err != nil {
		t.Fatal(err)
	}
	if hs := p.holders("r"); len(hs) != 0 {
		t.Fatalf("after rm: on %v", hs)
	}
	if _, err := h.Get(context.Background(), "r", backend.Options{}); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("after rm: %v", err)
	}
}
