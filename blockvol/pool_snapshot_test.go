package blockvol

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/netvol/netvol/volume/backend"
)

// Snapshots and clones in a pool: a clone of a snapshot goes where the
// volume is (placement follows from); move refuses a volume with
// snapshots or clones, and a clone, naming them, before copying anything;
// drain moves the others and leaves these, with the reason.
func TestPoolMoveRefusesSnapshotsAndClones(t *testing.T) {
	p := newPoolEnv(t)
	h := p.host("h1")
	ctx := ctxT(t)
	from, to := p.envs[0].client, p.envs[1].client
	for _, n := range []string{"snapped", "live", "plain"} {
		if err := h.Create(ctx, n, backend.Options{Size: volSize, Server: from.Server()}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := from.CreateSnapshot(ctx, "snapped", "s1"); err != nil {
		t.Fatal(err)
	}
	// Clones, placed without -o server: on their source's server.
	if err := h.Create(ctx, "of-snap", backend.Options{Size: volSize, From: "snapped", FromSnapshot: "s1"}); err != nil {
		t.Fatal(err)
	}
	if err := p.host("h2").Create(ctx, "of-live", backend.Options{Size: volSize, From: "live"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"of-snap", "of-live"} {
		if hs := p.holders(n); !slices.Equal(hs, []string{from.Server()}) {
			t.Fatalf("clone %s is on %v, not with its source on %s", n, hs, from.Server())
		}
	}
	// Naming another server for a clone of a snapshot is refused.
	err := h.Create(ctx, "elsewhere", backend.Options{Size: volSize, From: "snapped", FromSnapshot: "s1", Server: to.Server()})
	if !errors.Is(err, backend.ErrInvalid) || len(p.holders("elsewhere")) != 0 {
		t.Fatalf("a clone of a snapshot on another server: %v, on %v", err, p.holders("elsewhere"))
	}

	pool, err := NewPool(p.apis())
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"snapped": `snapshots (s1)`,
		"live":    `clones (of-live)`,
		"of-snap": `snapshot "s1" of "snapped"`,
		"of-live": `"live"`,
	} {
		err := pool.Move(ctx, name, to.Server(), "mover", nil)
		if !errors.Is(err, backend.ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("move %s: %v; want it refused naming %s", name, err, want)
		}
		if hs := p.holders(name); !slices.Equal(hs, []string{from.Server()}) {
			t.Errorf("after the refused move of %s: on %v", name, hs)
		}
	}
	// A volume whose clones of a snapshot are gone still has the snapshot.
	if err := h.Remove(ctx, "of-snap", backend.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := pool.Move(ctx, "snapped", to.Server(), "mover", nil); err == nil || !strings.Contains(err.Error(), "s1") {
		t.Fatalf("move of a volume with a snapshot: %v", err)
	}

	moved, failed, err := pool.Drain(ctx, from.Server(), "mover", func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	if len(moved) != 1 || !strings.HasPrefix(moved[0], "plain -> ") {
		t.Fatalf("drain moved %v", moved)
	}
	var stayed []string
	for n := range failed {
		stayed = append(stayed, n)
	}
	slices.Sort(stayed)
	if !slices.Equal(stayed, []string{"live", "of-live", "snapped"}) {
		t.Fatalf("drain left %v: %v", stayed, failed)
	}
	for _, n := range stayed {
		if hs := p.holders(n); !slices.Equal(hs, []string{from.Server()}) {
			t.Fatalf("after the drain %s is on %v", n, hs)
		}
	}
	if !strings.Contains(failed["snapped"].Error(), "s1") || !strings.Contains(failed["live"].Error(), "of-live") {
		t.Fatalf("drain's reasons: %v", failed)
	}
}
