//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	dockervolume "github.com/docker/go-plugins-helpers/volume"

	"github.com/netvol/netvol/e2e/node"
	"github.com/netvol/netvol/internal/mount"
	"github.com/netvol/netvol/nfs"
	"github.com/netvol/netvol/state"
	"github.com/netvol/netvol/volume"
	"github.com/netvol/netvol/volume/backend"
	"github.com/netvol/netvol/volume/backend/backendtest"
)

// testNFSConformance runs the backend contract's suite against package nfs
// and nfs-ganesha, in an export directory of its own. Mounts are recorded,
// not performed (this kernel has no NFS client).
func testNFSConformance(t *testing.T, srv *node.NFSServer) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		return nfsBackend(t, srv, srv.NoSquash, func(c *nfs.Config) { c.Mounter = &recordingMounter{} })
	}, backendtest.Caps{Base: opts(nil), Mount: true,
		MountMissingReason: "nfs leaves a missing directory to the kernel's mount, and this kernel has no NFS client"})
}

// nfsHost is the plugin of one Docker host over srv's export: its own node
// store and mount root, a recording mounter.
type nfsHost struct {
	d   *volume.Driver
	rec *recordingMounter
}

func newNFSHost(t *testing.T, srv *node.NFSServer) nfsHost {
	t.Helper()
	dir := t.TempDir()
	store, err := state.OpenNodeStore(filepath.Join(dir, "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	rec := &recordingMounter{}
	b := nfsBackend(t, srv, srv.NoSquash, func(c *nfs.Config) { c.Mounter = rec })
	d, err := volume.New(volume.Config{Store: store, Host: mount.Host{}, MountRoot: filepath.Join(dir, "mnt"),
		DefaultType: backend.TypeNFS, Kinds: map[string]volume.Kind{
			backend.TypeNFS: {Backend: b, CheckMountOpts: nfs.CheckMountOptions}}})
	if err != nil {
		t.Fatal(err)
	}
	return nfsHost{d: d, rec: rec}
}

// testNFSOptionsTravel: a volume created through one host's driver with an
// owner, a mode, mount options and a remove policy is mounted by another
// host's driver (its own node store) with the creator's mount options and
// removed by the creator's policy. The options live in a file beside the
// directory that List never takes for a volume.
func testNFSOptionsTravel(t *testing.T, srv *node.NFSServer) {
	a, b := newNFSHost(t, srv), newNFSHost(t, srv)
	err := a.d.Create(&dockervolume.CreateRequest{Name: "travel", Options: map[string]string{
		"uid": "1234", "mode": "0700", "mount-opts": "noatime,nconnect=2", "on-remove": "archive"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(srv.NoSquash, "travel")
	if got := statHost(t, dir); got.mode.Perm() != 0o700 || got.uid != 1234 {
		t.Fatalf("volume directory: %+v", got)
	}
	meta := filepath.Join(srv.NoSquash, ".netvol.travel.json")
	data, err := os.ReadFile(meta)
	if err != nil || !strings.Contains(string(data), `"mount-opts":"noatime,nconnect=2"`) {
		t.Fatalf("stored options on the server: %q, %v", data, err)
	}
	ls, err := b.d.List()
	if err != nil || slices.ContainsFunc(ls.Volumes, func(v *dockervolume.Volume) bool { return strings.HasPrefix(v.Name, ".") }) {
		t.Fatalf("List: %v, %v", ls, err)
	}

	if _, err := b.d.Mount(&dockervolume.MountRequest{Name: "travel", ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if len(b.rec.mounts) != 1 || !slices.Contains(b.rec.mounts[0].Options, "noatime") ||
		!slices.Contains(b.rec.mounts[0].Options, "nconnect=2") {
		t.Fatalf("host b mounted %+v, want the creator's noatime and nconnect=2", b.rec.mounts)
	}
	if err := b.d.Unmount(&dockervolume.UnmountRequest{Name: "travel", ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if err := b.d.Remove(&dockervolume.RemoveRequest{Name: "travel"}); err != nil {
		t.Fatal(err)
	}
	mustBeGone(t, dir)
	mustBeGone(t, meta)
	archived, _ := filepath.Glob(filepath.Join(srv.NoSquash, ".netvol-archive", "travel-*"))
	if len(archived) != 1 {
		t.Fatalf("host b removed the volume without the creator's on-remove=archive: archive holds %v", archived)
	}
}
