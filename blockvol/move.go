package blockvol

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume/backend"
)

// Moving a volume between servers of a pool (docs/design.md, "Moving a
// volume"). The protocol, each step safe to crash after:
//
//  1. attach the source read-write as the mover (a node of its own): no
//     host can mount it while the move runs, and the lease says who;
//  2. create the copy on the target with LabelIncoming naming the source:
//     Resolve never takes it for the volume while the source holds one;
//  3. copy over NBD (the source's export read, the target's written, all
//     zero blocks skipped so thin volumes stay thin), flush, read the
//     target back and compare;
//  4. switch the name's claim on its home server from source to target
//     (compare and swap): creates of the name go to the target from now;
//  5. delete the source while the mover still holds it (the commit point:
//     from now on Resolve takes the incoming copy, the only one);
//  6. drop the label from the target.
//
// A crash before 5 leaves the source the volume (the target's copy is
// ignored, and removed by the next move or rm); after 5 the target is it.
// A failure before 5 undoes 4 and 2.

// moveChunk is the unit of the copy; moveWorkers copy at once.
const (
	moveChunk   = 1 << 20
	moveWorkers = 4
)

// MoveProgress is told of each step of a move, for the operator.
type MoveProgress func(step string)

// Move moves a detached volume to the server named to, as node (the
// mover's node name in attachments). It refuses a volume attached by
// anyone, a clone (of a snapshot or of a volume as it was: clones stay on
// their source's server), a volume with clones, a volume with snapshots
// (a move copies the data, not the snapshots: it names them) and a target
// that takes no new volumes.
func (p *Pool) Move(ctx context.Context, name, to, node string, progress MoveProgress) error {
	return p.move(ctx, name, to, node, progress, nil)
}

// move is Move; vols, when not nil, are the source server's volumes as
// listed a moment ago (a drain lists them once), to find the clones.
func (p *Pool) move(ctx context.Context, name, to, node string, progress MoveProgress, vols []api.Volume) error {
	if progress == nil {
		progress = func(string) {}
	}
	if p.p.single() {
		return fmt.Errorf("move %q: --server names one storage server: a move needs a pool of several: %w", name, backend.ErrInvalid)
	}
	t := p.p.member(to)
	if t == nil {
		return fmt.Errorf("move %q: server %q is not in the pool (%v): %w", name, to, p.p.names(), backend.ErrInvalid)
	}
	loc, err := p.p.locateAll(ctx, name)
	if err != nil {
		return fmt.Errorf("move %q: %w", name, err)
	}
	s := loc.m
	if s == t {
		return fmt.Errorf("move %q: it is on %s already: %w", name, to, backend.ErrInvalid)
	}
	if vols == nil {
		if vols, err = s.api.ListVolumes(ctx); err != nil {
			return fmt.Errorf("move %q: listing the volumes of %s (to find its clones): %w", name, s.name, err)
		}
	}
	if err := unmovable(loc.v, s.name, vols); err != nil {
		return fmt.Errorf("move %q: %w", name, err)
	}
	for _, x := range loc.extras {
		// An earlier move's copy, which is not the volume: start afresh.
		if err := x.api.DeleteVolume(ctx, name); err != nil && !errors.Is(err, api.ErrNotFound) {
			return fmt.Errorf("move %q: removing the copy an unfinished move left on %s: %w", name, x.name, err)
		}
	}
	m := &mover{p: p.p, name: name, node: node, s: s, t: t, v: loc.v, progress: progress}
	return m.run(ctx)
}

// unmovable says why v, on server, cannot move: it is a clone, or has
// clones (vols are server's volumes: clones stay on their source's
// server, so every clone of v is among them) or snapshots. Nil when it
// can.
func unmovable(v api.Volume, server string, vols []api.Volume) error {
	if v.From != "" {
		of := strconv.Quote(v.From)
		if v.FromSnapshot != "" {
			of = fmt.Sprintf("snapshot %q of %q", v.FromSnapshot, v.From)
		}
		return fmt.Errorf("a clone stays on its source's server (%s, with %s): %w", server, of, backend.ErrInvalid)
	}
	var clones []string
	for _, c := range vols {
		if c.From == v.Name && c.Labels[LabelIncoming] == "" {
			clones = append(clones, c.Name)
		}
	}
	var why []string
	if len(clones) > 0 {
		why = append(why, fmt.Sprintf("clones (%s), which stay on its server %s with it", strings.Join(clones, ", "), server))
	}
	if len(v.Snapshots) > 0 {
		snaps := make([]string, len(v.Snapshots))
		for i, sn := range v.Snapshots {
			snaps[i] = sn.Name
		}
		why = append(why, fmt.Sprintf("snapshots (%s), which a move does not carry", strings.Join(snaps, ", ")))
	}
	if len(why) > 0 {
		return fmt.Errorf("it has %s: remove them first (netvol volume rm, netvol volume snapshot rm), or keep it where it is: %w", strings.Join(why, " and "), backend.ErrInvalid)
	}
	return nil
}

type mover struct {
	p        *pool
	name     string
	node     string
	s, t     *member
	v        api.Volume
	progress MoveProgress
}

func (m *mover) run(ctx context.Context) error {
	srcGrant, err := m.s.api.Attach(ctx, m.name, m.node, api.ModeRW)
	if err != nil {
		return fmt.Errorf("move %q: attaching it on %s (a volume moves only while no host has it mounted): %w", m.name, m.s.name, err)
	}
	stop := m.keepLease(ctx, m.s)
	defer stop()
	committed := false
	defer func() {
		if !committed {
			_ = m.s.api.Detach(context.WithoutCancel(ctx), m.name, m.node)
		}
	}()
	m.progress(fmt.Sprintf("attached on %s as %s", m.s.name, m.node))
	if err := m.copyToTarget(ctx, srcGrant.Export); err != nil {
		m.dropTarget(ctx)
		return fmt.Errorf("move %q to %s: %w", m.name, m.t.name, err)
	}
	if err := m.switchClaim(ctx); err != nil {
		m.dropTarget(ctx)
		return fmt.Errorf("move %q to %s: %w", m.name, m.t.name, err)
	}
	m.progress("claim switched to " + m.t.name)
	stop()
	if err := m.s.pool().DeleteVolumeHeldBy(ctx, m.name, m.node); err != nil {
		m.undoClaim(ctx)
		m.dropTarget(ctx)
		return fmt.Errorf("move %q to %s: deleting the source on %s: %w", m.name, m.t.name, m.s.name, err)
	}
	committed = true
	m.progress("source deleted on " + m.s.name + ": the volume is on " + m.t.name)
	if _, err := m.t.pool().SetLabels(ctx, m.name, nil, []string{LabelIncoming}); err != nil {
		return fmt.Errorf("move %q: done, but dropping the incoming label on %s (the next move or list does no harm; netvol volume move again finishes it): %w", m.name, m.t.name, err)
	}
	m.p.remember(m.name, m.t.name)
	return nil
}

// keepLease renews the mover's lease on member until stop.
func (m *mover) keepLease(ctx context.Context, on *member) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		wait := api.DefaultLeaseTTL / 3
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			cctx, c := context.WithTimeout(ctx, maxCallWait)
			if l, err := on.api.Renew(cctx, m.name, m.node); err == nil && l.ExpiresInMS > 0 {
				wait = max(time.Duration(l.ExpiresInMS)*time.Millisecond/3, minRenewWait)
			}
			c()
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { cancel(); <-done }) }
}

// copyToTarget makes the incoming copy on the target and fills it from
// the source's export.
func (m *mover) copyToTarget(ctx context.Context, srcExport string) error {
	labels := maps.Clone(m.v.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelIncoming] = m.s.name
	if _, err := m.t.api.CreateVolume(ctx, api.CreateRequest{Name: m.name, Size: api.Size(m.v.Size), Labels: labels}); err != nil {
		return fmt.Errorf("creating the copy on %s: %w", m.t.name, err)
	}
	m.progress("incoming copy created on " + m.t.name)
	dstGrant, err := m.t.api.Attach(ctx, m.name, m.node, api.ModeRW)
	if err != nil {
		return fmt.Errorf("attaching the copy on %s: %w", m.t.name, err)
	}
	defer m.t.api.Detach(context.WithoutCancel(ctx), m.name, m.node)
	stop := m.keepLease(ctx, m.t)
	defer stop()
	src, err := dialExport(ctx, m.s, srcExport)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := dialExport(ctx, m.t, dstGrant.Export)
	if err != nil {
		return err
	}
	defer dst.Close()
	start := time.Now()
	sums, copied, err := copyExport(ctx, src, dst, m.v.Size)
	if err != nil {
		return err
	}
	m.progress(fmt.Sprintf("copied %d of %d bytes (the rest is zero) in %s", copied, m.v.Size, time.Since(start).Round(time.Millisecond)))
	if err := verifyExport(ctx, dst, m.v.Size, sums); err != nil {
		return err
	}
	m.progress("copy verified: it reads back as the source")
	return nil
}

// dialExport connects to export on member's NBD server.
func dialExport(ctx context.Context, mb *member, export string) (*nbd.Client, error) {
	h, err := mb.api.Health(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mb.name, err)
	}
	addr, err := DeriveNBDAddr(mb.name, h.NBD)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mb.name, err)
	}
	conn, err := dialNBD(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("NBD server %s of %s: %w: %w", addr, mb.name, backend.ErrUnavailable, err)
	}
	nc, info, err := nbd.Negotiate(ctx, conn, nbd.ClientOptions{ExportName: export})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("NBD handshake with %s: %w", addr, err)
	}
	return nbd.NewClient(nc, info), nil
}

// copyExport copies size bytes from src to dst in chunks, several at
// once, skipping chunks that are all zero (dst is new: it reads zero
// there). It returns each chunk's SHA-256 and the bytes written.
func copyExport(ctx context.Context, src, dst *nbd.Client, size int64) ([][32]byte, int64, error) {
	n := int((size + moveChunk - 1) / moveChunk)
	sums := make([][32]byte, n)
	var mu sync.Mutex
	var copied int64
	err := forChunks(ctx, n, func(ctx context.Context, i int, buf []byte) error {
		off := int64(i) * moveChunk
		b := buf[:min(moveChunk, size-off)]
		if err := src.Read(ctx, b, off); err != nil {
			return fmt.Errorf("reading the source at %d: %w", off, err)
		}
		sums[i] = sha256.Sum256(b)
		if isZero(b) {
			return nil
		}
		if err := dst.Write(ctx, b, off, 0); err != nil {
			return fmt.Errorf("writing the copy at %d: %w", off, err)
		}
		mu.Lock()
		copied += int64(len(b))
		mu.Unlock()
		return nil
	})
	if err == nil {
		if err = dst.Flush(ctx); err != nil {
			err = fmt.Errorf("flushing the copy: %w", err)
		}
	}
	return sums, copied, err
}

// verifyExport reads dst back and compares every chunk with sums.
func verifyExport(ctx context.Context, dst *nbd.Client, size int64, sums [][32]byte) error {
	return forChunks(ctx, len(sums), func(ctx context.Context, i int, buf []byte) error {
		off := int64(i) * moveChunk
		b := buf[:min(moveChunk, size-off)]
		if err := dst.Read(ctx, b, off); err != nil {
			return fmt.Errorf("reading the copy back at %d: %w", off, err)
		}
		if sha256.Sum256(b) != sums[i] {
			return fmt.Errorf("the copy differs from the source at bytes %d to %d", off, off+int64(len(b)))
		}
		return nil
	})
}

// forChunks runs fn on chunks 0..n-1, moveWorkers at once, each with a
// buffer of its own; the first error stops the rest.
func forChunks(ctx context.Context, n int, fn func(ctx context.Context, i int, buf []byte) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range moveWorkers {
		wg.Go(func() {
			buf := make([]byte, moveChunk)
			for i := range next {
				if err := fn(ctx, i, buf); err != nil {
					cancel(err)
				}
			}
		})
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

var zeroChunk = make([]byte, moveChunk)

func isZero(b []byte) bool { return bytes.Equal(b, zeroChunk[:len(b)]) }

// switchClaim moves the name's claim from source to target; a volume
// made before the pool had claims gets one for the target.
func (m *mover) switchClaim(ctx context.Context) error {
	home := m.p.member(Rank(m.name, m.p.names())[0]).pool()
	_, err := home.SwitchClaim(ctx, m.name, m.s.name, m.t.name)
	if errors.Is(err, api.ErrNotFound) {
		var c api.Claim
		if c, err = home.ClaimName(ctx, m.name, m.t.name); err == nil && c.Server != m.t.name {
			err = fmt.Errorf("the name is claimed for %s meanwhile", c.Server)
		}
	}
	if err != nil {
		return fmt.Errorf("switching the name's claim on its home server: %w", err)
	}
	return nil
}

// undoClaim switches the claim back to the source after a failed commit.
func (m *mover) undoClaim(ctx context.Context) {
	home := m.p.member(Rank(m.name, m.p.names())[0]).pool()
	_, _ = home.SwitchClaim(context.WithoutCancel(ctx), m.name, m.t.name, m.s.name)
}

// dropTarget removes the incoming copy after a failure.
func (m *mover) dropTarget(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	_ = m.t.api.Detach(ctx, m.name, m.node)
	v, err := m.t.api.GetVolume(ctx, m.name)
	if err == nil && v.Labels[LabelIncoming] != "" {
		_ = m.t.api.DeleteVolume(ctx, m.name)
	}
}

// Pool is a pool of storage servers for the operator commands: the same
// rules the plugin's nbd backend follows (placement, claims, Resolve).
type Pool struct{ p *pool }

// NewPool returns the pool of servers (their PoolAPIs when more than
// one).
func NewPool(servers []API) (*Pool, error) {
	p, err := newPool(servers)
	if err != nil {
		return nil, err
	}
	return &Pool{p: p}, nil
}

// Servers names the members, in the order given.
func (p *Pool) Servers() []string { return p.p.names() }

// Create makes a volume as the plugin does and returns its server.
func (p *Pool) Create(ctx context.Context, req api.CreateRequest, server string) (string, error) {
	m, err := p.p.create(ctx, req, server)
	if err != nil {
		return "", err
	}
	return m.name, nil
}

// Locate returns the server holding name and the volume there.
func (p *Pool) Locate(ctx context.Context, name string) (string, api.Volume, error) {
	loc, err := p.p.locate(ctx, name, "")
	if err != nil {
		return "", api.Volume{}, err
	}
	return loc.m.name, loc.v, nil
}

// API is the client of the member named server.
func (p *Pool) API(server string) API {
	if m := p.p.member(server); m != nil {
		return m.api
	}
	return nil
}

// List asks every member at once and returns one copy per volume (the
// one Resolve picks) and the servers that did not answer, with their
// errors.
func (p *Pool) List(ctx context.Context) ([]Copy, map[string]error) {
	lists := p.p.list(ctx)
	down := map[string]error{}
	for _, l := range lists {
		if l.err != nil {
			down[l.m.name] = l.err
		}
	}
	return merge(lists), down
}

// Remove deletes name wherever it is (incoming copies too) and releases
// its claim.
func (p *Pool) Remove(ctx context.Context, name string) (string, error) {
	loc, err := p.p.locateAll(ctx, name)
	if err != nil {
		return "", err
	}
	if err := loc.m.api.DeleteVolume(ctx, name); err != nil {
		return loc.m.name, err
	}
	var errs []error
	for _, x := range loc.extras {
		if err := x.api.DeleteVolume(ctx, name); err != nil && !errors.Is(err, api.ErrNotFound) {
			errs = append(errs, fmt.Errorf("%s: %w", x.name, err))
		}
	}
	p.p.release(ctx, name, loc.m)
	return loc.m.name, errors.Join(errs...)
}

// Drain moves every detached volume off server (to placement's pick among
// the others) and reports what it moved and what it could not: attached
// volumes, and those Move refuses (clones, volumes with clones or
// snapshots), which stay where they are.
func (p *Pool) Drain(ctx context.Context, server, node string, progress MoveProgress) (moved []string, failed map[string]error, err error) {
	src := p.p.member(server)
	if src == nil {
		return nil, nil, fmt.Errorf("server %q is not in the pool (%v): %w", server, p.p.names(), backend.ErrInvalid)
	}
	vols, err := src.api.ListVolumes(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("listing the volumes of %s: %w", server, err)
	}
	failed = map[string]error{}
	for _, v := range vols {
		if v.Labels[LabelIncoming] != "" {
			continue // a copy on its way here: not a volume of this server yet
		}
		if err := unmovable(v, server, vols); err != nil {
			failed[v.Name] = err // before placement: no move is tried
			continue
		}
		to, err := p.placeAway(ctx, v.Name, src)
		if err == nil {
			err = p.move(ctx, v.Name, to, node, func(s string) { progress(v.Name + ": " + s) }, vols)
		}
		if err != nil {
			failed[v.Name] = err
			continue
		}
		moved = append(moved, v.Name+" -> "+to)
	}
	return moved, failed, nil
}

// placeAway is placement's pick for name among the members other than
// src.
func (p *Pool) placeAway(ctx context.Context, name string, src *member) (string, error) {
	var others []*member
	for _, m := range p.p.members {
		if m != src {
			others = append(others, m)
		}
	}
	caps, errs := fanOut(ctx, others, func(ctx context.Context, m *member) (api.Capacity, error) {
		return m.pool().Capacity(ctx)
	})
	cands := make([]Candidate, len(others))
	for i, m := range others {
		cands[i] = Candidate{Server: m.name, Capacity: caps[i], Err: errs[i]}
	}
	return Place(name, cands)
}

// MoverNode is the node name a move attaches as, from this host's name.
func MoverNode(host string) string {
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '-'
	}, host)
	if host == "" {
		host = "host"
	}
	return "netvol-move." + host
}
