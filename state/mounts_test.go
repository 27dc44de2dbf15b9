package state

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
)

func firstMount(name, id string) Mount {
	return Mount{Name: name, Mountpoint: "/var/lib/netvol/" + name, Device: "/dev/nbd0",
		Method: "kernel", Export: "exp-" + name, Generation: 7, IDs: map[string]int{id: 1}}
}

func TestPutGetMount(t *testing.T) {
	n := openNode(t)
	m := firstMount("v", "c1")
	must(t, n.PutMount(m))
	got, err := n.GetMount("v")
	must(t, err)
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("got %+v, want %+v", got, m)
	}
	_, err = n.GetMount("nope")
	wantErr(t, err, ErrNotFound)
	wantErr(t, n.PutMount(Mount{Name: "x", IDs: map[string]int{"": 1}}), ErrInvalid)
	wantErr(t, n.PutMount(Mount{Name: "x", IDs: map[string]int{"a": 0}}), ErrInvalid)
	if _, err := n.GetMount("x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("refused mount was stored: %v", err)
	}
	must(t, n.PutMount(Mount{Name: "empty"}))
	got, _ = n.GetMount("empty")
	if got.IDs == nil || got.Total() != 0 {
		t.Fatalf("mount without IDs: %+v", got)
	}
}

func TestMountIDCounting(t *testing.T) {
	n := openNode(t)
	_, err := n.AddMountID("v", "c1")
	wantErr(t, err, ErrNotFound)
	must(t, n.PutMount(firstMount("v", "c1")))
	steps := []struct {
		add  bool
		id   string
		want int
	}{
		{true, "c1", 2}, // Docker mounts the same ID twice
		{true, "c2", 3},
		{false, "c1", 2},
		{false, "c1", 1},
		{false, "c2", 0}, // last: the caller unmounts
	}
	for i, s := range steps {
		f := n.RemoveMountID
		if s.add {
			f = n.AddMountID
		}
		got, err := f("v", s.id)
		must(t, err)
		if got != s.want {
			t.Fatalf("step %d (%+v): total %d", i, s, got)
		}
	}
	m, err := n.GetMount("v")
	must(t, err)
	if len(m.IDs) != 0 || m.Mountpoint == "" {
		t.Fatalf("record at total 0: %+v (must stay until DeleteMount)", m)
	}
	_, err = n.RemoveMountID("v", "c1")
	wantErr(t, err, ErrNotFound)
	_, err = n.AddMountID("v", "")
	wantErr(t, err, ErrInvalid)
}

func TestMountRecordAndIDsCommitTogether(t *testing.T) {
	n := openNode(t)
	must(t, n.PutMount(firstMount("v", "c1")))
	// A failing change inside the transaction leaves record and IDs as they were.
	boom := errors.New("boom")
	err := n.changeMount("v", func(m *Mount) error {
		m.IDs["c2"] = 5
		m.Device = "/dev/nbd9"
		return boom
	})
	wantErr(t, err, boom)
	got, _ := n.GetMount("v")
	if !reflect.DeepEqual(got, firstMount("v", "c1")) {
		t.Fatalf("failed change leaked: %+v", got)
	}
	// A refused RemoveMountID changes nothing either.
	_, err = n.RemoveMountID("v", "unknown")
	wantErr(t, err, ErrNotFound)
	got, _ = n.GetMount("v")
	if got.Total() != 1 {
		t.Fatalf("total %d", got.Total())
	}
}

func TestUpdateMountKeepsIDs(t *testing.T) {
	n := openNode(t)
	must(t, n.PutMount(firstMount("v", "c1")))
	_, err := n.AddMountID("v", "c2")
	must(t, err)
	m, err := n.UpdateMount(Mount{Name: "v", Mountpoint: "/m/v", Device: "/dev/loop3",
		Method: "fuse", Generation: 8, IDs: map[string]int{"ignored": 9}})
	must(t, err)
	if m.Device != "/dev/loop3" || m.Generation != 8 || !reflect.DeepEqual(m.IDs, map[string]int{"c1": 1, "c2": 1}) {
		t.Fatalf("updated %+v", m)
	}
	got, _ := n.GetMount("v")
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("stored %+v, returned %+v", got, m)
	}
	_, err = n.UpdateMount(Mount{Name: "nope"})
	wantErr(t, err, ErrNotFound)
}

func TestListAndDeleteMounts(t *testing.T) {
	n := openNode(t)
	for _, name := range []string{"b", "a", "a/b"} {
		must(t, n.PutMount(firstMount(name, "c")))
	}
	ms, err := n.ListMounts()
	must(t, err)
	var names []string
	for _, m := range ms {
		names = append(names, m.Name)
	}
	if fmt.Sprint(names) != "[a a/b b]" {
		t.Fatalf("mounts %v", names)
	}
	m, err := n.DeleteMount("a")
	must(t, err)
	if m.Name != "a" || m.Total() != 1 {
		t.Fatalf("deleted %+v", m)
	}
	_, err = n.DeleteMount("a")
	wantErr(t, err, ErrNotFound)
	if _, err := n.GetMount("a/b"); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentMountIDs(t *testing.T) {
	n := openNode(t)
	must(t, n.PutMount(firstMount("v", "c0")))
	const workers, each = 16, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if _, err := n.AddMountID("v", fmt.Sprintf("c%d", (w*each+i)%7)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	m, err := n.GetMount("v")
	must(t, err)
	if m.Total() != 1+workers*each {
		t.Fatalf("total %d, want %d", m.Total(), 1+workers*each)
	}
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if _, err := n.RemoveMountID("v", fmt.Sprintf("c%d", (w*each+i)%7)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	m, _ = n.GetMount("v")
	if !reflect.DeepEqual(m.IDs, map[string]int{"c0": 1}) {
		t.Fatalf("after removing all added: %v", m.IDs)
	}
}
