package qcow2

import (
	"bytes"
	"testing"
)

// Held is what changed-block tracking of the storage daemon's backups
// rests on: a layer holds exactly the clusters written (data or zeros)
// while it was the top, and nothing read through it.
func TestHeldPerLayer(t *testing.T) {
	const cs = 64 << 10
	l := newLayered(t, 64*cs)
	data := bytes.Repeat([]byte{7}, cs)
	l.write(t, data, 1*cs)
	l.write(t, data[:100], 40*cs+5) // a partial write holds its cluster
	l.freeze(t, 64*cs)
	l.write(t, data, 2*cs)
	l.write(t, data, 40*cs) // over a lower layer's cluster: copied up
	// zeros over a lower layer's data: the zero flag (cluster 1)
	if err := l.top.WriteZeroes(1*cs, cs, false); err != nil {
		t.Fatal(err)
	}
	top, err := l.top.Held(1)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := heldList(top, 64), []int64{1, 2, 40}; !equalInts(got, want) {
		t.Fatalf("top layer holds %v, want %v", got, want)
	}
	all, err := l.top.Held(0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := heldList(all, 64), []int64{1, 2, 40}; !equalInts(got, want) {
		t.Fatalf("chain holds %v, want %v", got, want)
	}
	if all.Count() != 3 || all.Has(-1) || all.Has(64) || all.Has(3) {
		t.Fatalf("Count %d, Has out of range or unset cluster", all.Count())
	}
	two, err := l.top.Held(2)
	if err != nil {
		t.Fatal(err)
	}
	if !equalInts(heldList(two, 64), heldList(all, 64)) {
		t.Fatalf("depth 2 of a two-image chain: %v, want %v", heldList(two, 64), heldList(all, 64))
	}
}

func heldList(b Bitmap, n int64) []int64 {
	var out []int64
	for gc := range n {
		if b.Has(gc) {
			out = append(out, gc)
		}
	}
	return out
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
