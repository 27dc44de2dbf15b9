package blockvol

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netvol/netvol/internal/mount"
	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume/backend"
)

// Mount formats a blank volume (for real, through the export), mounts it
// and makes data/ with the owner and mode asked for; Unmount detaches; a
// second Mount finds the file system the first one wrote and keeps data/
// as it is.
func TestMountFormatsOnceAndUnmountDetaches(t *testing.T) {
	e := newEnv(t, 0)
	b, fk := e.backend("node-1", needMkfs(t))
	e.create(b, "v")
	ctx := ctxT(t)
	target := t.TempDir()
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		uid, gid = 1234, 5678
	}
	o := backend.Options{UID: uid, GID: gid, Mode: 0o750, MkfsOpts: []string{"-L", "v", "-m", "0"},
		MountOpts: []string{"noatime", "errors=continue"}}
	m, err := b.Mount(ctx, "v", o, target)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.Device, fk.att.dir) || m.Method != "copy" || !strings.HasPrefix(m.Export, "v.") ||
		m.Generation != 1 || m.Subdir != "data" {
		t.Fatalf("mounted %+v", m)
	}
	if c, err := probe(m.Device); err != nil || c != contentExt || fk.fmt.count() != 1 {
		t.Fatalf("device after mount: %v %v, %d formats", c, err, fk.fmt.count())
	}
	want := mount.Mount{Source: m.Device, Target: target, Type: "ext4", Options: []string{"noatime", "errors=continue"}}
	if len(fk.mnt.mounts) != 1 || !reflect.DeepEqual(fk.mnt.mounts[0], want) {
		t.Fatalf("mounts %+v, want %+v", fk.mnt.mounts, want)
	}
	checkDir(t, filepath.Join(target, "data"), 0o750, uid, gid)
	v, err := b.Get(ctx, "v", backend.Options{})
	if err != nil || v.Status["attached"] != "node-1(rw)" || v.Status["lease"] != "ok" {
		t.Fatalf("get while mounted: %+v %v", v, err)
	}

	if err := b.Unmount(ctx, "v", o, target, m); err != nil {
		t.Fatal(err)
	}
	if len(e.attachments("v")) != 0 || fk.att.attached() != 0 || fk.mnt.unmounts[0] != target || fk.att.writeBackErr != nil {
		t.Fatalf("after unmount: attachments %+v, devices %d, unmounts %v, write back %v",
			e.attachments("v"), fk.att.attached(), fk.mnt.unmounts, fk.att.writeBackErr)
	}
	if v, _ := b.Get(ctx, "v", backend.Options{}); v.Status["lease"] != "" || v.Status["attached"] != "" {
		t.Fatalf("status after unmount: %v", v.Status)
	}
	if err := b.Unmount(ctx, "v", o, target, m); err != nil {
		t.Fatalf("second unmount: %v", err)
	}

	// data/ survives the fake mount: the second Mount must leave it be.
	os.Chmod(filepath.Join(target, "data"), 0o700)
	m2, err := b.Mount(ctx, "v", backend.Options{UID: -1, GID: -1, Mode: 0o777}, target)
	if err != nil {
		t.Fatal(err)
	}
	if fk.fmt.count() != 1 || m2.Generation != 2 {
		t.Fatalf("second mount: %d formats, %+v", fk.fmt.count(), m2)
	}
	checkDir(t, filepath.Join(target, "data"), 0o700, uid, gid)
	if got := fk.mnt.mounts[1].Options; !reflect.DeepEqual(got, []string{"errors=remount-ro"}) {
		t.Fatalf("default mount options: %v", got)
	}
	if err := b.Unmount(ctx, "v", backend.Options{}, target, m2); err != nil {
		t.Fatal(err)
	}
}

func checkDir(t *testing.T, dir string, mode os.FileMode, uid, gid int) {
	t.Helper()
	st, err := os.Lstat(dir)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	if !st.IsDir() || st.Mode().Perm() != mode || uid >= 0 && (int(sys.Uid) != uid || int(sys.Gid) != gid) {
		t.Fatalf("%s: %v uid %d gid %d; want %v %d %d", dir, st.Mode(), sys.Uid, sys.Gid, mode, uid, gid)
	}
}

// writeExport writes p at 0 of the volume through an attachment of its own.
func (e *testEnv) writeExport(name string, p []byte) {
	e.t.Helper()
	ctx := ctxT(e.t)
	g, err := e.client.Attach(ctx, name, "writer", api.ModeRW)
	if err != nil {
		e.t.Fatal(err)
	}
	cl, err := nbd.Dial(ctx, "tcp", e.nbdL.Addr().String(), nbd.ClientOptions{ExportName: g.Export})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cl.Write(ctx, p, 0, nbd.CmdFlagFUA); err != nil {
		e.t.Fatal(err)
	}
	cl.Close()
	if err := e.client.Detach(ctx, name, "writer"); err != nil {
		e.t.Fatal(err)
	}
}

// A volume holding something that is not ext4 is never formatted over,
// and the refusal undoes the attach.
func TestMountRefusesUnknownData(t *testing.T) {
	e := newEnv(t, 0)
	b, fk := e.backend("node-1", nil)
	e.create(b, "v")
	junk := make([]byte, 4096)
	copy(junk[100:], "precious data")
	e.writeExport("v", junk)
	_, err := b.Mount(ctxT(t), "v", backend.Options{}, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), `volume "v"`) || !strings.Contains(err.Error(), "refusing to format") {
		t.Fatalf("mount of junk: %v", err)
	}
	if fk.fmt.count() != 0 || len(fk.mnt.mounts) != 0 || fk.att.attached() != 0 || len(e.attachments("v")) != 0 {
		t.Fatalf("after refusal: %d formats, mounts %v, %d devices, attachments %v",
			fk.fmt.count(), fk.mnt.mounts, fk.att.attached(), e.attachments("v"))
	}
}

// A failure at any step undoes the steps before it and names the volume
// and the step.
func TestMountFailureUndoes(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		step  string
		setup func(*fakes, string)
		mount bool // a mount was done, so an unmount must follow
	}{
		{"attaching the NBD export", func(f *fakes, _ string) { f.att.fail = boom }, false},
		{"formatting", func(f *fakes, _ string) { f.fmt.fail = boom }, false},
		{"mounting", func(f *fakes, _ string) { f.mnt.fail = boom }, false},
		{"preparing the data directory", func(_ *fakes, target string) {
			os.Symlink("/etc", filepath.Join(target, "data"))
		}, true},
	} {
		t.Run(tc.step, func(t *testing.T) {
			e := newEnv(t, 0)
			b, fk := e.backend("node-1", nil)
			e.create(b, "v")
			target := t.TempDir()
			tc.setup(fk, target)
			_, err := b.Mount(ctxT(t), "v", backend.Options{UID: -1, GID: -1}, target)
			if err == nil || !strings.Contains(err.Error(), `mount volume "v": `+tc.step) {
				t.Fatalf("error %v, want the volume and %q", err, tc.step)
			}
			if tc.step != "preparing the data directory" && !errors.Is(err, boom) {
				t.Fatalf("error %v does not wrap the cause", err)
			}
			if len(e.attachments("v")) != 0 || fk.att.attached() != 0 || (len(fk.mnt.unmounts) == 1) != tc.mount {
				t.Fatalf("not undone: attachments %v, %d devices, unmounts %v", e.attachments("v"), fk.att.attached(), fk.mnt.unmounts)
			}
			if b.lease("v") != nil {
				t.Fatal("a lease is renewed after a failed mount")
			}
		})
	}
}

func TestMountRefused(t *testing.T) {
	e := newEnv(t, 0)
	b, fk := e.backend("node-1", nil)
	ctx := ctxT(t)
	_, err := b.Mount(ctx, "nope", backend.Options{}, t.TempDir())
	wantErr(t, err, backend.ErrNotFound, `"nope"`)
	e.create(b, "v")
	g, err := e.client.Attach(ctx, "v", "other-node", api.ModeRW)
	if err != nil {
		t.Fatal(err)
	}
	// 15 s of lease do not fit in 10 s: refused at once, saying when to retry.
	short, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err = b.Mount(short, "v", backend.Options{}, t.TempDir())
	wantErr(t, err, backend.ErrInUse, `"v"`, `"other-node"`, "read-write", g.Expires.UTC().Format(time.RFC3339), "retry in 15 s")
	var held *HeldError
	if !errors.As(err, &held) || held.Holder != "other-node" || !errors.Is(err, api.ErrConflict) || time.Since(start) > 2*time.Second {
		t.Fatalf("held error %#v after %v", err, time.Since(start))
	}
	_, err = b.Mount(ctx, "v", backend.Options{MountOpts: []string{"errors=panic"}}, t.TempDir())
	wantErr(t, err, backend.ErrInvalid, "errors=panic", "crash")
	if fk.att.conns != 0 {
		t.Fatal("a refused mount dialed the NBD server")
	}
}

// Removing a volume mounted elsewhere is refused, naming the node.
func TestRemoveWhileMounted(t *testing.T) {
	e := newEnv(t, 0)
	b1, _ := e.backend("node-1", nil)
	b2, _ := e.backend("node-2", nil)
	e.create(b1, "v")
	ctx := ctxT(t)
	target := t.TempDir()
	m, err := b1.Mount(ctx, "v", backend.Options{UID: -1, GID: -1}, target)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, b2.Remove(ctx, "v", backend.Options{}), backend.ErrInUse, `"v"`, `"node-1"`)
	_, err = b2.Mount(ctx, "v", backend.Options{}, t.TempDir())
	wantErr(t, err, backend.ErrInUse, `"node-1"`)
	if err := b1.Unmount(ctx, "v", backend.Options{}, target, m); err != nil {
		t.Fatal(err)
	}
	if err := b2.Remove(ctx, "v", backend.Options{}); err != nil {
		t.Fatal(err)
	}
}

// The NBD address can be a unix socket the daemon reports, or set.
func TestMountOverUnixSocket(t *testing.T) {
	e := newEnvOn(t, 0, "unix")
	b, fk := e.backend("node-1", nil)
	e.create(b, "v")
	ctx := ctxT(t)
	target := t.TempDir()
	m, err := b.Mount(ctx, "v", backend.Options{UID: -1, GID: -1}, target)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Unmount(ctx, "v", backend.Options{}, target, m); err != nil || fk.fmt.count() != 1 {
		t.Fatalf("unmount %v, %d formats", err, fk.fmt.count())
	}

	cfg := b.cfg
	cfg.NBDAddr = "unix:" + e.nbdL.Addr().String()
	cfg.API = &noHealth{e.client}
	b2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if m, err = b2.Mount(ctx, "v", backend.Options{UID: -1, GID: -1}, target); err != nil {
		t.Fatal(err)
	}
	if err := b2.Unmount(ctx, "v", backend.Options{}, target, m); err != nil {
		t.Fatal(err)
	}
}

// noHealth fails Health: with NBDAddr set, nobody asks.
type noHealth struct{ *api.Client }

func (noHealth) Health(context.Context) (api.Health, error) {
	return api.Health{}, errors.New("Health called")
}

// The renewal keeps the lease past its TTL; Unmount ends it.
func TestRenewalKeepsLease(t *testing.T) {
	e := newEnv(t, time.Second)
	b, _ := e.backend("node-1", nil)
	e.create(b, "v")
	ctx := ctxT(t)
	target := t.TempDir()
	m, err := b.Mount(ctx, "v", backend.Options{UID: -1, GID: -1}, target)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	if a := e.attachments("v"); len(a) != 1 || !a[0].Expires.After(time.Now()) || b.Fenced("v") {
		t.Fatalf("after 2.5 lease TTLs: %+v, fenced %v", a, b.Fenced("v"))
	}
	_, err = e.client.Attach(ctx, "v", "node-2", api.ModeRW)
	wantErr(t, err, api.ErrConflict, `"node-1"`)
	if err := b.Unmount(ctx, "v", backend.Options{}, target, m); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.Attach(ctx, "v", "node-2", api.ModeRW); err != nil {
		t.Fatalf("attach after unmount: %v", err)
	}
}

// The lease is renewed from the attach on: a format that outlasts it does
// not let another node take the volume.
func TestRenewalCoversSlowFormat(t *testing.T) {
	e := newEnv(t, time.Second)
	b, fk := e.backend("node-1", nil)
	e.create(b, "v")
	ctx := ctxT(t)
	var takeover error
	fk.fmt.hook = func() {
		time.Sleep(2500 * time.Millisecond)
		_, takeover = e.client.Attach(ctx, "v", "node-2", api.ModeRW)
	}
	target := t.TempDir()
	m, err := b.Mount(ctx, "v", backend.Options{UID: -1, GID: -1}, target)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, takeover, api.ErrConflict, `"node-1"`)
	if err := b.Unmount(ctx, "v", backend.Options{}, target, m); err != nil {
		t.Fatal(err)
	}
}
