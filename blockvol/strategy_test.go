package blockvol

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/netvol/netvol/volume/backend"
)

// targetAttacher is the test's copyAttacher that records the targets it
// was given.
type targetAttacher struct {
	*copyAttacher
	targets []Target
}

func (a *targetAttacher) Attach(ctx context.Context, t Target) (Device, error) {
	a.targets = append(a.targets, t)
	return a.copyAttacher.Attach(ctx, t)
}

// Mount hands an Attacher that takes a Target the volume, address and
// export name; Strategies releases each device with the attacher that made
// it.
func TestMountGivesTargetAndStrategiesDetachByMethod(t *testing.T) {
	e := newEnv(t, 0)
	ta := &targetAttacher{copyAttacher: newCopyAttacher(t)}
	other := newCopyAttacher(t)
	att := Strategies{Use: ta, ByMethod: map[string]Attacher{"copy": ta, MethodKernel: other}}
	b, err := New(Config{API: e.client, Node: "node-1", Attacher: att, Mounter: &fakeMounter{},
		Formatter: &countingFormatter{}, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	e.create(b, "v")
	ctx := ctxT(t)
	m, err := b.Mount(ctx, "v", backend.Options{}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(ta.targets) != 1 {
		t.Fatalf("Attach called %d times", len(ta.targets))
	}
	if tg := ta.targets[0]; tg.Volume != "v" || tg.Addr != e.nbdL.Addr().String() || tg.Export != m.Export || tg.Dial == nil {
		t.Fatalf("target %+v, mounted %+v", tg, m)
	}
	if err := att.Detach(ctx, Device{Path: m.Device, Method: "mystery"}); !errors.Is(err, backend.ErrInvalid) || !strings.Contains(err.Error(), "mystery") {
		t.Fatalf("Detach of an unknown method = %v", err)
	}
	if err := b.Unmount(ctx, "v", backend.Options{}, "", m); err != nil || ta.attached() != 0 {
		t.Fatalf("Unmount = %v, %d still attached", err, ta.attached())
	}
}
