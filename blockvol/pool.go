package blockvol

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume/backend"
)

// A pool is the storage daemons of --server: each volume lives on one of
// them, and every host sees every volume. docs/design.md ("A pool of
// storage servers") has the rules; this file holds them: placement,
// the home of a name (rendezvous hashing) and which copy of a name is the
// volume.

// PoolAPI is what a pool of more than one server needs of each member
// besides API; *api.Client implements it.
type PoolAPI interface {
	API
	Capacity(ctx context.Context) (api.Capacity, error)
	ClaimName(ctx context.Context, name, server string) (api.Claim, error)
	GetClaim(ctx context.Context, name string) (api.Claim, error)
	SwitchClaim(ctx context.Context, name, from, to string) (api.Claim, error)
	ReleaseClaim(ctx context.Context, name, server string) error
	SetLabels(ctx context.Context, name string, set map[string]string, del []string) (api.Volume, error)
	DeleteVolumeHeldBy(ctx context.Context, name, node string) error
}

var _ PoolAPI = (*api.Client)(nil)

// LabelIncoming marks a copy a move is making (or made) on its target; its
// value names the source server. Such a copy is the volume only once the
// source has none (see Resolve).
const LabelIncoming = LabelPrefix + "incoming"

// FanOutTimeout bounds each member's answer to a call asked of every
// member (list, locate, capacity): one slow or dead server costs at most
// this, and the others' answers are used.
const FanOutTimeout = 5 * time.Second

// member is one storage daemon of the pool.
type member struct {
	name string // API.Server(): host:port, the name --server gives it
	api  API
}

func (m *member) pool() PoolAPI { p, _ := m.api.(PoolAPI); return p }

// pool is the members and what the backend learnt of where volumes are.
type pool struct {
	members []*member

	mu    sync.Mutex
	where map[string]string // volume -> member name, as last seen
}

func newPool(apis []API) (*pool, error) {
	p := &pool{where: map[string]string{}}
	seen := map[string]bool{}
	for _, a := range apis {
		m := &member{name: a.Server(), api: a}
		if seen[m.name] {
			return nil, fmt.Errorf("storage server %s is given twice: %w", m.name, backend.ErrInvalid)
		}
		seen[m.name] = true
		if len(apis) > 1 && m.pool() == nil {
			return nil, fmt.Errorf("storage server %s: its client cannot take part in a pool: %w", m.name, backend.ErrInvalid)
		}
		p.members = append(p.members, m)
	}
	if len(p.members) == 0 {
		return nil, fmt.Errorf("no storage server: %w", backend.ErrInvalid)
	}
	return p, nil
}

func (p *pool) single() bool { return len(p.members) == 1 }

func (p *pool) member(name string) *member {
	for _, m := range p.members {
		if m.name == name {
			return m
		}
	}
	return nil
}

func (p *pool) names() []string {
	out := make([]string, len(p.members))
	for i, m := range p.members {
		out[i] = m.name
	}
	return out
}

func (p *pool) remember(volume, server string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if server == "" {
		delete(p.where, volume)
		return
	}
	p.where[volume] = server
}

func (p *pool) lastSeen(volume string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.where[volume]
}

// Rank orders servers by rendezvous (highest random weight) hashing of
// name: the first is the name's home, which keeps its claim. Every host
// computes the same order from the same set of names, whatever order it
// lists them in, and adding or removing a server changes the home of only
// the names that server ranks first.
func Rank(name string, servers []string) []string {
	out := slices.Clone(servers)
	score := func(s string) uint64 {
		h := sha256.Sum256([]byte(s + "\x00" + name))
		return binary.BigEndian.Uint64(h[:8])
	}
	slices.SortFunc(out, func(a, b string) int {
		return cmp.Or(cmp.Compare(score(b), score(a)), cmp.Compare(a, b))
	})
	return out
}

// Candidate is a server as placement sees it: its capacity, or why it
// could not say.
type Candidate struct {
	Server   string
	Capacity api.Capacity
	Err      error
}

// Headroom is what placement ranks a server by: its free space less what
// its thin volumes promised, times its weight.
func (c Candidate) Headroom() float64 {
	w := c.Capacity.Weight
	if w <= 0 {
		w = 1
	}
	return float64(c.Capacity.Free-c.Capacity.Promised) * w
}

// Place picks the server of a new volume name: among those that answered
// and take new volumes, the one with the most headroom; equal headroom
// goes to the server that ranks name higher (Rank), so that the names
// spread. It fails with ErrUnavailable naming why when none qualifies.
func Place(name string, cands []Candidate) (string, error) {
	rank := Rank(name, serversOf(cands))
	var best *Candidate
	var why []string
	for i := range cands {
		c := &cands[i]
		switch {
		case c.Err != nil:
			why = append(why, fmt.Sprintf("%s: %v", c.Server, c.Err))
			continue
		case c.Capacity.NoNewVolumes:
			why = append(why, c.Server+" takes no new volumes (--no-new-volumes)")
			continue
		}
		if best == nil || c.Headroom() > best.Headroom() ||
			c.Headroom() == best.Headroom() && slices.Index(rank, c.Server) < slices.Index(rank, best.Server) {
			best = c
		}
	}
	if best == nil {
		return "", fmt.Errorf("no storage server can take volume %q: %s: %w", name, strings.Join(why, "; "), backend.ErrUnavailable)
	}
	return best.Server, nil
}

func serversOf(cands []Candidate) []string {
	out := make([]string, len(cands))
	for i, c := range cands {
		out[i] = c.Server
	}
	return out
}

// Copy is a volume of some name as one server holds it.
type Copy struct {
	Server string
	Volume api.Volume
}

func (c Copy) incomingFrom() string { return c.Volume.Labels[LabelIncoming] }

// Resolve decides which copy of a name is the volume, from the copies the
// servers that answered hold and the servers that did not answer:
//
//   - a copy without the incoming label is the volume (a move's source
//     until the move deletes it);
//   - an incoming copy is the volume when its source server answered and
//     holds no copy (the move deleted the source but had not yet dropped
//     the label); when the source did not answer, nobody can tell, and the
//     volume is unavailable;
//   - no copy: not found, or unavailable when a server did not answer.
//
// Two copies without the label would break the pool's rule; Resolve
// refuses to pick one.
func Resolve(name string, copies []Copy, unreachable []string) (Copy, error) {
	var plain, incoming []Copy
	for _, c := range copies {
		if c.incomingFrom() != "" {
			incoming = append(incoming, c)
		} else {
			plain = append(plain, c)
		}
	}
	switch {
	case len(plain) == 1:
		return plain[0], nil
	case len(plain) > 1:
		return Copy{}, fmt.Errorf("volume %q is on %s and on %s, which the pool's rules never make: remove the wrong copy on its server (DELETE /v1/volumes/%[1]s)",
			name, plain[0].Server, plain[1].Server)
	}
	if len(incoming) > 0 {
		c := incoming[0] // one move at a time: one incoming copy
		src := c.incomingFrom()
		if slices.Contains(unreachable, src) {
			return Copy{}, fmt.Errorf("volume %q is being moved from storage server %s to %s, and %s does not answer: %w",
				name, src, c.Server, src, backend.ErrUnavailable)
		}
		return c, nil
	}
	if len(unreachable) > 0 {
		return Copy{}, fmt.Errorf("volume %q is on none of the storage servers that answered, and %s did not answer (its volumes are unreachable until it is back): %w",
			name, strings.Join(unreachable, ", "), backend.ErrUnavailable)
	}
	return Copy{}, fmt.Errorf("volume %q: %w", name, backend.ErrNotFound)
}

// fanOut calls fn on every member at once, each bounded by FanOutTimeout
// (and ctx), and returns the results in member order.
func fanOut[T any](ctx context.Context, ms []*member, fn func(context.Context, *member) (T, error)) ([]T, []error) {
	vals, errs := make([]T, len(ms)), make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, FanOutTimeout)
			defer cancel()
			vals[i], errs[i] = fn(cctx, m)
		})
	}
	wg.Wait()
	return vals, errs
}

// unreachable is whether err says the server did not answer (rather than
// answering with an error).
func unreachable(err error) bool {
	return errors.Is(err, backend.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}

// located is where a volume is: its member and what it said, and members
// holding incoming copies of it that are not the volume.
type located struct {
	m      *member
	v      api.Volume
	extras []*member
}

// locate finds the member holding name: where it was last seen (by this
// backend, or hint: the node store's record) when that member still holds
// it, else by asking every member at once (Resolve).
func (p *pool) locate(ctx context.Context, name, hint string) (located, error) {
	if p.single() {
		m := p.members[0]
		v, err := m.api.GetVolume(ctx, name)
		return located{m: m, v: v}, err
	}
	seen := p.lastSeen(name)
	if seen == "" {
		seen = hint
	}
	if m := p.member(seen); m != nil {
		cctx, cancel := context.WithTimeout(ctx, FanOutTimeout)
		v, err := m.api.GetVolume(cctx, name)
		cancel()
		if err == nil && v.Labels[LabelIncoming] == "" {
			return located{m: m, v: v}, nil
		}
	}
	return p.locateAll(ctx, name)
}

// locateAll asks every member (all copies of name: extras too).
func (p *pool) locateAll(ctx context.Context, name string) (located, error) {
	if p.single() {
		return p.locate(ctx, name, "")
	}
	vols, errs := fanOut(ctx, p.members, func(ctx context.Context, m *member) (api.Volume, error) {
		return m.api.GetVolume(ctx, name)
	})
	var copies []Copy
	var down []string
	var failed []error
	for i, m := range p.members {
		switch err := errs[i]; {
		case err == nil:
			copies = append(copies, Copy{Server: m.name, Volume: vols[i]})
		case errors.Is(err, api.ErrNotFound):
		case unreachable(err):
			down = append(down, m.name)
		default:
			failed = append(failed, fmt.Errorf("storage server %s: %w", m.name, err))
		}
	}
	if len(failed) > 0 && len(copies) == 0 {
		return located{}, errors.Join(failed...)
	}
	c, err := Resolve(name, copies, down)
	if err != nil {
		return located{}, err
	}
	loc := located{m: p.member(c.Server), v: c.Volume}
	for _, o := range copies {
		if o.Server != c.Server {
			loc.extras = append(loc.extras, p.member(o.Server))
		}
	}
	p.remember(name, c.Server)
	return loc, nil
}

// listed is one member's list.
type listed struct {
	m    *member
	vols []api.Volume
	err  error
}

// list asks every member at once; each answer is bounded by
// FanOutTimeout.
func (p *pool) list(ctx context.Context) []listed {
	vols, errs := fanOut(ctx, p.members, func(ctx context.Context, m *member) ([]api.Volume, error) {
		return m.api.ListVolumes(ctx)
	})
	out := make([]listed, len(p.members))
	for i, m := range p.members {
		out[i] = listed{m: m, vols: vols[i], err: errs[i]}
	}
	return out
}

// merge resolves the lists of the members into one volume per name
// (Resolve); names whose copies cannot be resolved are left out.
func merge(lists []listed) []Copy {
	byName := map[string][]Copy{}
	var down []string
	for _, l := range lists {
		if l.err != nil {
			down = append(down, l.m.name)
			continue
		}
		for _, v := range l.vols {
			byName[v.Name] = append(byName[v.Name], Copy{Server: l.m.name, Volume: v})
		}
	}
	out := make([]Copy, 0, len(byName))
	for name, copies := range byName {
		if len(copies) == 1 && copies[0].incomingFrom() == "" {
			out = append(out, copies[0])
			continue
		}
		if c, err := Resolve(name, copies, down); err == nil {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b Copy) int { return cmp.Compare(a.Volume.Name, b.Volume.Name) })
	return out
}
