package blockvol

import (
	"context"
	"fmt"

	"github.com/netvol/netvol/volume/backend"
)

// attachDevice makes a block device of the export through the Attacher.
func (b *Backend) attachDevice(ctx context.Context, volume, addr, export string) (Device, error) {
	return b.cfg.Attacher.Attach(ctx, Target{Volume: volume, Addr: addr, Export: export, Dial: b.dialer(addr, export)})
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

var _ Attacher = Strategies{}

// Attach implements Attacher with Use.
func (s Strategies) Attach(ctx context.Context, t Target) (Device, error) {
	return s.Use.Attach(ctx, t)
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

var _ Grower = Strategies{}

// Grow implements Grower with the strategy that made d.
func (s Strategies) Grow(ctx context.Context, d Device, dial Dialer) (int64, error) {
	m := d.Method
	if m == "" {
		m = MethodKernel
	}
	g, ok := s.ByMethod[m].(Grower)
	if !ok {
		return 0, fmt.Errorf("device %s was attached by %q, which cannot grow a device in use: %w", d.Path, d.Method, backend.ErrInvalid)
	}
	return g.Grow(ctx, d, dial)
}
