package state

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
)

func TestNodeCreateGetDeleteVolume(t *testing.T) {
	n := openNode(t)
	v := NodeVolume{Name: "web", Type: "nfs", Options: map[string]string{"uid": "33"},
		Server: "nas", Export: "/exports/web", Created: t0,
		Status: map[string]string{"size": "0"}, StatusAt: t0}
	must(t, n.CreateVolume(v))
	got, err := n.GetVolume("web")
	must(t, err)
	if !reflect.DeepEqual(got, v) {
		t.Fatalf("got %+v, want %+v", got, v)
	}
	wantErr(t, n.CreateVolume(NodeVolume{Name: "web", Type: "nbd"}), ErrExists)
	wantErr(t, n.CreateVolume(NodeVolume{}), ErrInvalid)
	_, err = n.GetVolume("nope")
	wantErr(t, err, ErrNotFound)

	must(t, n.DeleteVolume("web"))
	wantErr(t, n.DeleteVolume("web"), ErrNotFound)
	_, err = n.GetVolume("web")
	wantErr(t, err, ErrNotFound)
}

func TestNodeDeleteVolumeRefusedWhileMounted(t *testing.T) {
	n := openNode(t)
	must(t, n.CreateVolume(NodeVolume{Name: "v", Type: "nbd"}))
	must(t, n.PutMount(Mount{Name: "v", Mountpoint: "/m/v", IDs: map[string]int{"c1": 1}}))
	err := n.DeleteVolume("v")
	var inUse *InUseError
	if !errors.As(err, &inUse) || !inUse.Mounted || !errors.Is(err, ErrInUse) {
		t.Fatalf("error %v, want mounted", err)
	}
	if err.Error() != `volume "v" is in use: mounted on this host` {
		t.Fatalf("error text %q", err)
	}
	_, err = n.DeleteMount("v")
	must(t, err)
	must(t, n.DeleteVolume("v"))
}

func TestNodePutVolumesUpsertsAndLists(t *testing.T) {
	n := openNode(t)
	must(t, n.CreateVolume(NodeVolume{Name: "vol-0001", Type: "nfs"}))
	must(t, n.PutVolumes(cacheVolumes(1000)))
	vs, err := n.ListVolumes()
	must(t, err)
	if len(vs) != 1000 {
		t.Fatalf("%d volumes, want 1000", len(vs))
	}
	for i, v := range vs {
		if v.Name != fmt.Sprintf("vol-%04d", i) || v.Type != "nbd" || v.Status["attached"] != "node-3" {
			t.Fatalf("volume %d: %+v", i, v)
		}
	}
	must(t, n.PutVolume(NodeVolume{Name: "vol-0001", Type: "nfs"}))
	v, _ := n.GetVolume("vol-0001")
	if v.Type != "nfs" || v.Status != nil {
		t.Fatalf("PutVolume did not replace: %+v", v)
	}
}

func TestNodePutVolumesAllOrNothing(t *testing.T) {
	n := openNode(t)
	vs := cacheVolumes(1000)
	vs[500].Name = ""
	wantErr(t, n.PutVolumes(vs), ErrInvalid)
	got, err := n.ListVolumes()
	must(t, err)
	if len(got) != 0 {
		t.Fatalf("failed batch stored %d volumes", len(got))
	}
}

func TestNodeListEmpty(t *testing.T) {
	n := openNode(t)
	vs, err := n.ListVolumes()
	must(t, err)
	ms, err2 := n.ListMounts()
	must(t, err2)
	if len(vs) != 0 || len(ms) != 0 {
		t.Fatalf("fresh store lists %v %v", vs, ms)
	}
}
