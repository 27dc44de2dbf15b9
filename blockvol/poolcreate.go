package blockvol

import (
	"context"
	"errors"
	"fmt"

	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume/backend"
)

// create makes a volume in the pool (docs/design.md, "A pool of storage
// servers"): it picks the server (a clone's source's, the one named, or
// placement's), claims the name for it on the name's home server, and
// creates it where the claim says. A claim that names another server
// means another host created (or is creating) the name: the volume is
// made there, and a create of the same volume that finds it made already
// succeeds, so that two hosts creating one name at once both succeed and
// see one volume.
func (p *pool) create(ctx context.Context, req api.CreateRequest, want string) (*member, error) {
	if p.single() {
		m := p.members[0]
		if want != "" && want != m.name {
			return nil, fmt.Errorf("server %q: the storage server is %s: %w", want, m.name, backend.ErrInvalid)
		}
		_, err := m.api.CreateVolume(ctx, req)
		return m, err
	}
	target, err := p.target(ctx, req, want)
	if err != nil {
		return nil, err
	}
	claim, err := p.claim(ctx, req.Name, target)
	if err != nil {
		return nil, err
	}
	m := p.member(claim.Server)
	if m == nil {
		return nil, fmt.Errorf("the name is claimed for storage server %s, which is not in this host's --server list (every host must list the same servers, named alike): %w",
			claim.Server, backend.ErrInvalid)
	}
	if claim.Server != target.name && want != "" && req.From == "" {
		return nil, fmt.Errorf("the name is claimed for storage server %s, not %s: %w", claim.Server, want, backend.ErrExists)
	}
	if claim.Created {
		if err := p.checkUnclaimed(ctx, req.Name, m); err != nil {
			return nil, err
		}
	}
	if err := p.createOn(ctx, m, req, claim.Created); err != nil {
		return nil, err
	}
	p.remember(req.Name, m.name)
	return m, nil
}

// target is where a new volume should go: a clone's source's server (also
// for a clone of one of its snapshots, which live with it), the one the
// user named, or placement's pick.
func (p *pool) target(ctx context.Context, req api.CreateRequest, want string) (*member, error) {
	if req.FromSnapshot != "" && req.From == "" {
		return nil, fmt.Errorf("from_snapshot %q needs from, the volume it is a snapshot of: %w", req.FromSnapshot, backend.ErrInvalid)
	}
	if req.From != "" { // a clone of the volume or of one of its snapshots
		src, err := p.locate(ctx, req.From, "")
		if err != nil {
			return nil, fmt.Errorf("clone source: %w", err)
		}
		if want != "" && want != src.m.name {
			return nil, fmt.Errorf("server %q: a clone stays on its source's server, %s: %w", want, src.m.name, backend.ErrInvalid)
		}
		return src.m, nil
	}
	if want != "" {
		m := p.member(want)
		if m == nil {
			return nil, fmt.Errorf("server %q is not in the pool (%v): %w", want, p.names(), backend.ErrInvalid)
		}
		return m, nil
	}
	caps, errs := fanOut(ctx, p.members, func(ctx context.Context, m *member) (api.Capacity, error) {
		return m.pool().Capacity(ctx)
	})
	cands := make([]Candidate, len(p.members))
	for i, m := range p.members {
		cands[i] = Candidate{Server: m.name, Capacity: caps[i], Err: errs[i]}
	}
	name, err := Place(req.Name, cands)
	if err != nil {
		return nil, err
	}
	return p.member(name), nil
}

// claim claims name for target on the name's home server and returns the
// claim that holds (another host's, when it came first).
func (p *pool) claim(ctx context.Context, name string, target *member) (api.Claim, error) {
	home := p.member(Rank(name, p.names())[0])
	cctx, cancel := context.WithTimeout(ctx, FanOutTimeout)
	defer cancel()
	c, err := home.pool().ClaimName(cctx, name, target.name)
	if err != nil {
		return api.Claim{}, fmt.Errorf("claiming the name on its home server %s (which keeps the claims of the names it ranks first; no volume of such a name can be created while it is down): %w",
			home.name, err)
	}
	return c, nil
}

// checkUnclaimed looks for a volume of name made without a claim (before
// the pool had more than one server) on the members other than m. One
// found there wins: the claim is moved to it and the create reports it
// exists. Members that do not answer are not waited for.
func (p *pool) checkUnclaimed(ctx context.Context, name string, m *member) error {
	var others []*member
	for _, o := range p.members {
		if o != m {
			others = append(others, o)
		}
	}
	_, errs := fanOut(ctx, others, func(ctx context.Context, o *member) (api.Volume, error) {
		return o.api.GetVolume(ctx, name)
	})
	for i, o := range others {
		if errs[i] != nil {
			continue
		}
		home := p.member(Rank(name, p.names())[0])
		if _, err := home.pool().SwitchClaim(ctx, name, m.name, o.name); err != nil {
			return fmt.Errorf("volume %q exists on storage server %s without a claim; claiming it: %w", name, o.name, err)
		}
		p.remember(name, o.name)
		return fmt.Errorf("volume %q exists on storage server %s: %w", name, o.name, backend.ErrExists)
	}
	return nil
}

// createOn creates the volume on m. When m has it already (made by
// another host's create of the same name) and it is the volume asked for
// (size and source), that is success. A refusal (invalid: no new volumes,
// size) of a claim this call made releases the claim.
func (p *pool) createOn(ctx context.Context, m *member, req api.CreateRequest, claimed bool) error {
	_, err := m.api.CreateVolume(ctx, req)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, api.ErrExists):
		v, gerr := m.api.GetVolume(ctx, req.Name)
		if gerr != nil {
			return fmt.Errorf("storage server %s: %w", m.name, err)
		}
		if (req.Size == 0 || int64(req.Size) == v.Size) && req.From == v.From && req.FromSnapshot == v.FromSnapshot {
			return nil
		}
		return fmt.Errorf("volume %q exists on storage server %s with size %d and source %q (snapshot %q): %w", req.Name, m.name, v.Size, v.From, v.FromSnapshot, backend.ErrExists)
	case errors.Is(err, api.ErrInvalid) && claimed:
		home := p.member(Rank(req.Name, p.names())[0])
		_ = home.pool().ReleaseClaim(context.WithoutCancel(ctx), req.Name, m.name)
	}
	return fmt.Errorf("storage server %s: %w", m.name, err)
}

// release forgets name after its removal: its claim on its home server
// (when it names m) and where it was seen. A claim left behind (the home
// did not answer) only keeps the name on m for the next create.
func (p *pool) release(ctx context.Context, name string, m *member) {
	p.remember(name, "")
	if p.single() {
		return
	}
	home := p.member(Rank(name, p.names())[0])
	cctx, cancel := context.WithTimeout(ctx, FanOutTimeout)
	defer cancel()
	_ = home.pool().ReleaseClaim(cctx, name, m.name)
}
