package blockvol

import (
	"context"
	"fmt"

	"github.com/netvol/netvol/volume/backend"
)

// attachDevice makes a block device of the export through the Attacher:
// with the whole Target when it takes one, else with a Dialer.
func (b *Backend) attachDevice(ctx context.Context, volume, addr, export string) (Device, error) {
	dial := b.dialer(addr, export)
	if ta, ok := b.cfg.Attacher.(TargetAttacher); ok {
		return ta.AttachTarget(ctx, Target{Volume: volume, Addr: addr, Export: export, Dial: dial})
	}
	return b.cfg.Attacher.Attach(ctx, dial)
}

// Strategies attaches with one strategy and releases every device with the
// strategy that made it (Device.Method), so that devices attached before a
// change of strategy (NETVOL_ATTACH, a kernel that gained the nbd module)
// are still released. A Method of "" is the kernel's: records older than
// the userspace attach have none.
type Strategies struct {
	Use      Attacher
	ByMethod map[string]Attacher
}

var _ TargetAttacher = Strategies{}

// Attach implements Attacher with Use.
func (s Strategies) Attach(ctx context.Context, dial Dialer) (Device, error) {
	return s.Use.Attach(ctx, dial)
}

// AttachTarget implements TargetAttacher with Use.
func (s Strategies) AttachTarget(ctx context.Context, t Target) (Device, error) {
	if ta, ok := s.Use.(TargetAttacher); ok {
		return ta.AttachTarget(ctx, t)
	}
	return s.Use.Attach(ctx, t.Dial)
}

// Detach implements Attacher with the strategy named by d.Method.
func (s Strategies) Detach(ctx context.Context, d Device) error {
	m := d.Method
	if m == "" {
		m = MethodKernel
	}
	a, ok := s.ByMethod[m]
	if !ok {
		return fmt.Errorf("device %s was attached by %q, which this plugin does not know: %w", d.Path, d.Method, backend.ErrInvalid)
	}
	return a.Detach(ctx, d)
}

var _ Reconnector = Strategies{}

// Reconnect implements Reconnector with the strategy that made d, when it
// can reconnect; one that reconnects by itself (userspace) needs nothing.
func (s Strategies) Reconnect(ctx context.Context, d Device, dial Dialer) error {
	m := d.Method
	if m == "" {
		m = MethodKernel
	}
	if r, ok := s.ByMethod[m].(Reconnector); ok {
		return r.Reconnect(ctx, d, dial)
	}
	return nil
}
