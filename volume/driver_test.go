package volume

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/netvol/netvol/state"
	"github.com/netvol/netvol/volume/backend"
)

func TestCreateRefusesBadInput(t *testing.T) {
	r := newRig(t, time.Second)
	for _, c := range []struct {
		name string
		opts map[string]string
		want string
	}{
		{"../etc", nil, "volume name"},
		{"a/b", nil, "volume name"},
		{".hidden", nil, "volume name"},
		{strings.Repeat("a", 129), nil, "volume name"},
		{"ok", map[string]string{"colour": "red"}, "the accepted options are"},
		{"ok", map[string]string{"type": "iscsi"}, "want nfs or nbd"},
		{"ok", map[string]string{"size": "1.5G"}, "size"},
		{"ok", map[string]string{"size": "-1"}, "size"},
		{"ok", map[string]string{"type": "nfs", "size": "1G"}, "does not apply to type=nfs"},
		{"ok", map[string]string{"on-remove": "archive"}, "does not apply to type=nbd"},
		{"ok", map[string]string{"type": "nfs", "on-remove": "shred"}, "delete, retain or archive"},
		{"ok", map[string]string{"mode": "999"}, "octal"},
		{"ok", map[string]string{"mode": "01777"}, "octal"},
		{"ok", map[string]string{"uid": "-1"}, "uid"},
		{"ok", map[string]string{"uid": "4294967295"}, "uid"},
		{"ok", map[string]string{"fs": "xfs"}, "want ext4"},
		{"ok", map[string]string{"from": "../x"}, "volume name"},
		{"ok", map[string]string{"type": "nfs", "export": "/srv/../etc"}, "export"},
		{"ok", map[string]string{"type": "nfs", "export": "srv"}, "export"},
		{"ok", map[string]string{"type": "nfs", "server": "a;rm -rf /"}, "server"},
		{"ok", map[string]string{"mount-opts": "noatime,,ro"}, "empty mount option"},
	} {
		err := r.d.Create(&volume.CreateRequest{Name: c.name, Options: c.opts})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Create(%q, %v) = %v, want an error containing %q", c.name, c.opts, err, c.want)
		}
	}
	if len(r.nbd.vols)+len(r.nfs.vols) != 0 {
		t.Fatalf("refused creates left volumes: %v %v", r.nbd.vols, r.nfs.vols)
	}
	if vs, _ := r.store.ListVolumes(); len(vs) != 0 {
		t.Fatalf("refused creates left records: %v", vs)
	}
}

func TestCreateParsesOptions(t *testing.T) {
	r := newRig(t, time.Second)
	err := r.d.Create(&volume.CreateRequest{Name: "db", Options: map[string]string{"size": "20G", "uid": "999", "mode": "0750", "mkfs-opts": "-L db -m 0"}})
	if err != nil {
		t.Fatal(err)
	}
	o := r.nbd.vols["db"]
	if o.Size != 20<<30 || o.UID != 999 || o.GID != -1 || o.Mode != 0o750 || o.FS != "ext4" || strings.Join(o.MkfsOpts, " ") != "-L db -m 0" {
		t.Fatalf("backend got %+v", o)
	}
	if err := r.d.Create(&volume.CreateRequest{Name: "plain"}); err != nil {
		t.Fatal(err)
	}
	if got := r.nbd.vols["plain"].Size; got != 1<<30 {
		t.Fatalf("default size: %d", got)
	}
	err = r.d.Create(&volume.CreateRequest{Name: "db", Options: map[string]string{"size": "1G"}})
	if err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("second create: %v", err)
	}
}

func TestBackendOptionChecks(t *testing.T) {
	r := newRig(t, time.Second)
	r.d.cfg.Kinds["nbd"] = Kind{Backend: r.nbd, CheckMountOpts: func(o []string) error {
		if o[0] != "noatime" {
			return errors.New("want noatime")
		}
		return nil
	}}
	if err := r.d.Create(&volume.CreateRequest{Name: "a", Options: map[string]string{"mount-opts": "barrier=0"}}); err == nil || !strings.Contains(err.Error(), "want noatime") {
		t.Fatalf("mount-opts check: %v", err)
	}
	if err := r.d.Create(&volume.CreateRequest{Name: "a", Options: map[string]string{"mount-opts": "noatime"}}); err != nil {
		t.Fatal(err)
	}
}

func TestMountCountsIDs(t *testing.T) {
	r := newRig(t, time.Second)
	if err := r.d.Create(&volume.CreateRequest{Name: "v"}); err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(r.root, "v", "data")
	for _, id := range []string{"c1", "c2", "c1"} {
		res, err := r.d.Mount(&volume.MountRequest{Name: "v", ID: id})
		if err != nil || res.Mountpoint != want {
			t.Fatalf("Mount %s = %+v, %v", id, res, err)
		}
	}
	if m, u := r.nbd.count(); m != 1 || u != 0 {
		t.Fatalf("backend mounts %d unmounts %d, want 1, 0", m, u)
	}
	if err := r.d.Remove(&volume.RemoveRequest{Name: "v"}); err == nil || !strings.Contains(err.Error(), "mounted on this host") {
		t.Fatalf("Remove while mounted: %v", err)
	}
	if p, err := r.d.Path(&volume.PathRequest{Name: "v"}); err != nil || p.Mountpoint != want {
		t.Fatalf("Path = %+v, %v", p, err)
	}
	for i, id := range []string{"c1", "c2", "c1"} {
		if err := r.d.Unmount(&volume.UnmountRequest{Name: "v", ID: id}); err != nil {
			t.Fatal(err)
		}
		if _, u := r.nbd.count(); (u == 1) != (i == 2) {
			t.Fatalf("after unmount %d the backend unmounted %d times", i+1, u)
		}
	}
	if err := r.d.Unmount(&volume.UnmountRequest{Name: "v", ID: "c1"}); err == nil {
		t.Fatal("an unmount of an ID not mounted was accepted")
	}
	if p, _ := r.d.Path(&volume.PathRequest{Name: "v"}); p.Mountpoint != "" {
		t.Fatalf("Path after the last unmount = %q", p.Mountpoint)
	}
	if err := r.d.Remove(&volume.RemoveRequest{Name: "v"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.nbd.vols["v"]; ok {
		t.Fatal("volume still on the backend")
	}
}

func TestMountFailureLeavesNoRecord(t *testing.T) {
	r := newRig(t, time.Second)
	r.d.Create(&volume.CreateRequest{Name: "v"})
	r.nbd.failMount = errors.New("attach refused")
	if _, err := r.d.Mount(&volume.MountRequest{Name: "v", ID: "c"}); err == nil || !strings.Contains(err.Error(), "attach refused") {
		t.Fatalf("Mount = %v", err)
	}
	if _, err := r.store.GetMount("v"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("mount record after a failed mount: %v", err)
	}
}

// TestDeadline: a backend that hangs makes the call fail at the deadline,
// and the late mount is undone so nothing is left mounted that Docker
// does not know of.
func TestDeadline(t *testing.T) {
	r := newRig(t, 200*time.Millisecond)
	r.d.Create(&volume.CreateRequest{Name: "v"})
	r.nbd.setDelay(time.Second)
	start := time.Now()
	_, err := r.d.Mount(&volume.MountRequest{Name: "v", ID: "c"})
	if err == nil || !strings.Contains(err.Error(), "no answer within") || time.Since(start) > 600*time.Millisecond {
		t.Fatalf("Mount = %v after %s", err, time.Since(start))
	}
	r.nbd.setDelay(0)
	// The next call on the volume waits for the first to finish.
	deadline := time.Now().Add(3 * time.Second)
	for {
		if m, u := r.nbd.count(); m == 1 && u == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the late mount was not undone")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := r.store.GetMount("v"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("record after the late mount: %v", err)
	}
}

func TestGetAndListFromOtherHostsAndCache(t *testing.T) {
	r := newRig(t, time.Second)
	r.nfs.vols["shared"] = backend.Options{} // made by another host
	r.nbd.vols["block"] = backend.Options{Size: 5}
	g, err := r.d.Get(&volume.GetRequest{Name: "shared"})
	if err != nil || g.Volume.Status["type"] != "nfs" {
		t.Fatalf("Get = %+v, %v", g, err)
	}
	if _, err := r.d.Get(&volume.GetRequest{Name: "nope"}); err == nil || !strings.Contains(err.Error(), "no such volume") {
		t.Fatalf("Get of a missing volume: %v", err)
	}
	names := func() []string {
		l, err := r.d.List()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, v := range l.Volumes {
			out = append(out, v.Name)
		}
		return out
	}
	if got := strings.Join(sorted(names()), ","); got != "block,shared" {
		t.Fatalf("List = %s", got)
	}
	r.nbd.down = true
	if got := strings.Join(sorted(names()), ","); got != "block,shared" {
		t.Fatalf("List with nbd down = %s", got)
	}
	g, err = r.d.Get(&volume.GetRequest{Name: "block"})
	if err != nil || !strings.Contains(g.Volume.Status["status"].(string), "unreachable") || g.Volume.Status["size"] != "5" {
		t.Fatalf("Get with the backend down = %+v, %v", g, err)
	}
	r.nbd.down = false
	delete(r.nfs.vols, "shared") // removed by another host
	if got := strings.Join(sorted(names()), ","); got != "block" {
		t.Fatalf("List after a remote remove = %s", got)
	}
	if _, err := r.store.GetVolume("shared"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("cache still holds a removed volume: %v", err)
	}
}

func TestReconcile(t *testing.T) {
	r := newRig(t, time.Second)
	for _, n := range []string{"live", "gone", "idle"} {
		r.d.Create(&volume.CreateRequest{Name: n})
		if _, err := r.d.Mount(&volume.MountRequest{Name: n, ID: "c"}); err != nil {
			t.Fatal(err)
		}
	}
	r.host.set(filepath.Join(r.root, "gone"), false)              // host rebooted under it
	if _, err := r.store.RemoveMountID("idle", "c"); err != nil { // crash during the last unmount
		t.Fatal(err)
	}
	r.nbd.vols["orphan"] = backend.Options{}
	r.host.set(filepath.Join(r.root, "orphan"), true) // crash between mount and record
	d := r.driver(t, time.Second)
	if err := d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if strings.Join(r.nbd.resumed, ",") != "live" {
		t.Fatalf("resumed %v, want live", r.nbd.resumed)
	}
	ms, _ := r.store.ListMounts()
	if len(ms) != 1 || ms[0].Name != "live" {
		t.Fatalf("mount records after reconcile: %+v", ms)
	}
	for _, n := range []string{"gone", "idle", "orphan"} {
		if ok, _ := r.host.Mounted(filepath.Join(r.root, n)); ok {
			t.Errorf("%s still mounted", n)
		}
	}
	// The kept mount is shared, not mounted again.
	if _, err := d.Mount(&volume.MountRequest{Name: "live", ID: "c2"}); err != nil {
		t.Fatal(err)
	}
	if m, _ := r.nbd.count(); m != 3 {
		t.Fatalf("backend mounted %d times, want 3", m)
	}
}

func TestCapabilities(t *testing.T) {
	if s := newRig(t, time.Second).d.Capabilities().Capabilities.Scope; s != "global" {
		t.Fatalf("scope %q", s)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// A pool with a server down: the volumes seen there are listed from the
// cache and kept; Get says unreachable; the other servers' volumes are
// fresh, and one removed there is forgotten.
func TestListWithAPoolServerDown(t *testing.T) {
	r := newRig(t, time.Second)
	r.nbd.serverOf = map[string]string{"ona": "a:1", "onb": "b:1", "gone": "a:1"}
	for name := range r.nbd.serverOf {
		r.nbd.vols[name] = backend.Options{Size: 5}
	}
	list := func() string {
		l, err := r.d.List()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, v := range l.Volumes {
			out = append(out, v.Name)
		}
		return strings.Join(sorted(out), ",")
	}
	if got := list(); got != "gone,ona,onb" {
		t.Fatalf("List = %s", got)
	}
	if v, err := r.store.GetVolume("onb"); err != nil || v.Server != "b:1" {
		t.Fatalf("the node store's record of onb: %+v %v", v, err)
	}
	r.nbd.serversDown = []string{"b:1"}
	delete(r.nbd.vols, "gone")
	if got := list(); got != "ona,onb" {
		t.Fatalf("List with b:1 down = %s", got)
	}
	if _, err := r.store.GetVolume("onb"); err != nil {
		t.Fatalf("the cache forgot a volume of the server that is down: %v", err)
	}
	if _, err := r.store.GetVolume("gone"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("the cache keeps a volume removed from a server that answered: %v", err)
	}
	g, err := r.d.Get(&volume.GetRequest{Name: "onb"})
	if err != nil || !strings.Contains(g.Volume.Status["status"].(string), "unreachable") {
		t.Fatalf("Get of a volume on the server that is down = %+v, %v", g, err)
	}
}

// TestCreateRacesAnotherHost: every node of a Swarm calls Create for a
// service's volume at once, each after its own Get found nothing. The
// create that finds the volume made by another host in the meantime, with
// the same type, succeeds and takes the volume as it is (the creator's
// options), as Docker does with a name it knows; nothing is made twice.
func TestCreateRacesAnotherHost(t *testing.T) {
	r := newRig(t, time.Second)
	other := r.otherHost(t)
	if err := other.Create(&volume.CreateRequest{Name: "db", Options: map[string]string{"size": "2G", "uid": "999"}}); err != nil {
		t.Fatal(err)
	}
	// This host's dockerd asked Get before the other host's Create landed.
	if err := r.d.Create(&volume.CreateRequest{Name: "db", Options: map[string]string{"size": "1G"}}); err != nil {
		t.Fatalf("Create of a volume another host made at the same time: %v", err)
	}
	if o := r.nbd.vols["db"]; o.Size != 2<<30 || o.UID != 999 {
		t.Fatalf("the volume was changed: %+v", o)
	}
	v, err := r.store.GetVolume("db")
	if err != nil || v.Type != "nbd" || v.Options["uid"] != "999" {
		t.Fatalf("this host's record: %+v, %v", v, err)
	}
	if _, err := r.d.Mount(&volume.MountRequest{Name: "db", ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if got := r.nbd.mountedAs["db"]; got.UID != 999 {
		t.Fatalf("mounted with %+v, want the creator's options (uid 999)", got)
	}
	// The same for an nfs volume.
	if err := other.Create(&volume.CreateRequest{Name: "web", Options: map[string]string{"type": "nfs"}}); err != nil {
		t.Fatal(err)
	}
	if err := r.d.Create(&volume.CreateRequest{Name: "web", Options: map[string]string{"type": "nfs"}}); err != nil {
		t.Fatalf("nfs: %v", err)
	}
	if len(r.nbd.vols) != 1 || len(r.nfs.vols) != 1 {
		t.Fatalf("volumes: nbd %v nfs %v", r.nbd.vols, r.nfs.vols)
	}
}
