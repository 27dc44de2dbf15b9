package volume

import (
	"io/fs"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/netvol/netvol/volume/backend"
)

func mustCreate(t *testing.T, d *Driver, name string, opts map[string]string) {
	t.Helper()
	if err := d.Create(&volume.CreateRequest{Name: name, Options: opts}); err != nil {
		t.Fatal(err)
	}
}

func mustMount(t *testing.T, d *Driver, name, id string) {
	t.Helper()
	if _, err := d.Mount(&volume.MountRequest{Name: name, ID: id}); err != nil {
		t.Fatal(err)
	}
}

// Another host mounts a volume with its creator's owner, mode and mount
// options: found by Get, by List first, or known here before the volume
// stored any (a cache from an older plugin).
func TestStoredOptionsTravel(t *testing.T) {
	for _, first := range []string{"get", "list", "mount"} {
		t.Run(first, func(t *testing.T) {
			r := newRig(t, time.Second)
			mustCreate(t, r.d, "v", map[string]string{"size": "1G", "uid": "1234", "mode": "0700", "mount-opts": "noatime", "mkfs-opts": "-L v"})
			b := r.otherHost(t)
			switch first {
			case "get":
				if _, err := b.Get(&volume.GetRequest{Name: "v"}); err != nil {
					t.Fatal(err)
				}
			case "list":
				if _, err := b.List(); err != nil {
					t.Fatal(err)
				}
			}
			mustMount(t, b, "v", "c1")
			got := r.nbd.mountedAs["v"]
			want := backend.Options{Size: 1 << 30, UID: 1234, GID: -1, Mode: 0o700, FS: "ext4",
				MkfsOpts: []string{"-L", "v"}, MountOpts: []string{"noatime"}}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("host b mounted with %+v, want %+v", got, want)
			}
		})
	}
}

// Another host removes a volume by its creator's policy (nfs on-remove),
// not by the default (delete).
func TestStoredOnRemoveEverywhere(t *testing.T) {
	r := newRig(t, time.Second)
	mustCreate(t, r.d, "v", map[string]string{"type": "nfs", "uid": "1234", "mode": "0700", "on-remove": "archive"})
	b := r.otherHost(t)
	if err := b.Remove(&volume.RemoveRequest{Name: "v"}); err != nil {
		t.Fatal(err)
	}
	if got := r.nfs.removedAs["v"]; got.OnRemove != "archive" || got.UID != 1234 || got.Mode != fs.FileMode(0o700) {
		t.Fatalf("host b removed with %+v, want the creator's on-remove=archive", got)
	}
}

// A volume that stored none (made before options travelled) is mounted
// with this host's defaults, as before.
func TestNoStoredOptions(t *testing.T) {
	r := newRig(t, time.Second)
	mustCreate(t, r.d, "old", map[string]string{"uid": "1234"})
	r.nbd.stored["old"] = nil
	b := r.otherHost(t)
	mustMount(t, b, "old", "c1")
	if got := r.nbd.mountedAs["old"]; got.UID != -1 || got.Mode != 0 || got.MountOpts != nil {
		t.Fatalf("host b mounted a volume without stored options with %+v, want its defaults", got)
	}
}

// Stored options come from the storage: they pass the checks Docker's
// options pass, and a volume whose stored options fail them is not
// mounted with them, nor with anything else.
func TestStoredOptionsChecked(t *testing.T) {
	for name, c := range map[string]struct {
		stored map[string]string
		want   string
	}{
		"unknown key":     {map[string]string{"colour": "red"}, `"colour"`},
		"size":            {map[string]string{"size": "1T"}, `"size"`},
		"type":            {map[string]string{"type": "nfs"}, `"type"`},
		"bad uid":         {map[string]string{"uid": "-5"}, "uid"},
		"bad mode":        {map[string]string{"mode": "4777"}, "mode"},
		"empty mount opt": {map[string]string{"mount-opts": "noatime,,"}, "empty mount option"},
		"refused mount":   {map[string]string{"mount-opts": "suid"}, "not allowed"},
		"nfs only":        {map[string]string{"on-remove": "archive"}, "does not apply"},
	} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, time.Second)
			mustCreate(t, r.d, "v", nil)
			r.nbd.stored["v"] = c.stored
			b := r.otherHost(t)
			b.cfg.Kinds["nbd"] = Kind{Backend: r.nbd, CheckMountOpts: func(o []string) error {
				for _, s := range o {
					if s != "noatime" {
						return fmtErr("mount option " + s + " is not allowed")
					}
				}
				return nil
			}}
			_, err := b.Mount(&volume.MountRequest{Name: "v", ID: "c1"})
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "stored") {
				t.Fatalf("mount with stored %v: %v, want an error naming %s", c.stored, err, c.want)
			}
			if m, _ := r.nbd.count(); m != 0 {
				t.Fatal("mounted with refused stored options")
			}
		})
	}
}

type fmtErr string

func (e fmtErr) Error() string { return string(e) }
