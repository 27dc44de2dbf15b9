//go:build e2e

package e2e

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netvol/netvol/e2e/node"
	"github.com/netvol/netvol/internal/mount"
	"github.com/netvol/netvol/nfs"
	"github.com/netvol/netvol/volume/backend"
)

// TestNFSBackend runs package nfs against nfs-ganesha on the host and checks
// every effect on the exported directories from the host's side. It is not
// parallel on purpose: ganesha registers with the host's one rpcbind, and a
// second ganesha started by a parallel suite would take the registration
// over from under the portmapper checks. The kernel mount itself needs a
// node (this kernel has no NFS client); here a recording Mounter checks
// what would be mounted.
func TestNFSBackend(t *testing.T) {
	srv := node.StartNFSServer(t)
	t.Run("CreateModeOwner", func(t *testing.T) { testNFSCreate(t, srv) })
	t.Run("Exists", func(t *testing.T) { testNFSExists(t, srv) })
	t.Run("RootSquash", func(t *testing.T) { testNFSRootSquash(t, srv) })
	t.Run("ListAndGet", func(t *testing.T) { testNFSListGet(t, srv) })
	t.Run("RemoveDelete", func(t *testing.T) { testNFSRemoveDelete(t, srv) })
	t.Run("RemoveRetain", func(t *testing.T) { testNFSRemoveRetain(t, srv) })
	t.Run("RemoveArchive", func(t *testing.T) { testNFSRemoveArchive(t, srv) })
	t.Run("EscapesRefused", func(t *testing.T) { testNFSEscapes(t, srv) })
	t.Run("Portmapper", func(t *testing.T) { testNFSPortmapper(t, srv) })
	t.Run("MountSpec", func(t *testing.T) { testNFSMountSpec(t, srv) })
	t.Run("UnreachableServer", func(t *testing.T) { testNFSUnreachable(t, srv) })
	t.Run("Conformance", func(t *testing.T) { testNFSConformance(t, srv) })
	t.Run("OptionsTravel", func(t *testing.T) { testNFSOptionsTravel(t, srv) })
	// Last: it stops the server.
	t.Run("StoppedServer", func(t *testing.T) { testNFSStopped(t, srv) })
}

// nfsBackend is a backend on export of srv with the fixture's ports; edit
// changes the configuration first.
func nfsBackend(t *testing.T, srv *node.NFSServer, export string, edit func(*nfs.Config)) *nfs.Backend {
	t.Helper()
	cfg := nfs.Config{Server: "127.0.0.1", Export: export, Port: srv.Port, MountPort: srv.MountPort}
	if edit != nil {
		edit(&cfg)
	}
	b, err := nfs.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ctx30(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// opts are volume options as the driver passes them: owner unset.
func opts(edit func(*backend.Options)) backend.Options {
	o := backend.Options{UID: -1, GID: -1}
	if edit != nil {
		edit(&o)
	}
	return o
}

// hostStat is a directory's mode and owner, seen on the host.
type hostStat struct {
	mode     fs.FileMode
	uid, gid uint32
}

func statHost(t *testing.T, path string) hostStat {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("on the host: %v", err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return hostStat{mode: fi.Mode(), uid: st.Uid, gid: st.Gid}
}

func mustExist(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("on the host: %v", err)
	}
}

func mustBeGone(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("on the host, %s should be gone: %v", path, err)
	}
}

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func testNFSCreate(t *testing.T, srv *node.NFSServer) {
	b := nfsBackend(t, srv, srv.NoSquash, nil)
	ctx := ctx30(t)
	cases := []struct {
		name string
		o    backend.Options
		want hostStat
	}{
		{"owned", opts(func(o *backend.Options) { o.Mode, o.UID, o.GID = 0o750, 1234, 2345 }), hostStat{fs.ModeDir | 0o750, 1234, 2345}},
		{"plain", opts(nil), hostStat{fs.ModeDir | 0o755, 0, 0}},
		{"uid-only", opts(func(o *backend.Options) { o.Mode, o.UID = 0o700, 1000 }), hostStat{fs.ModeDir | 0o700, 1000, 0}},
		{"shared", opts(func(o *backend.Options) { o.Mode, o.GID = fs.ModeSetgid|0o775, 100 }), hostStat{fs.ModeDir | fs.ModeSetgid | 0o775, 0, 100}},
	}
	for _, c := range cases {
		if err := b.Create(ctx, c.name, c.o); err != nil {
			t.Fatalf("Create %s: %v", c.name, err)
		}
		if got := statHost(t, filepath.Join(srv.NoSquash, c.name)); got != c.want {
			t.Errorf("%s on the host: mode %v uid %d gid %d; want mode %v uid %d gid %d",
				c.name, got.mode, got.uid, got.gid, c.want.mode, c.want.uid, c.want.gid)
		}
	}
}

func testNFSExists(t *testing.T, srv *node.NFSServer) {
	b := nfsBackend(t, srv, srv.NoSquash, nil)
	ctx := ctx30(t)
	if err := b.Create(ctx, "twice", opts(nil)); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(srv.NoSquash, "twice", "data"), "kept")
	mustWrite(t, filepath.Join(srv.NoSquash, "a-file"), "not a volume")
	for _, name := range []string{"twice", "a-file"} {
		err := b.Create(ctx, name, opts(func(o *backend.Options) { o.UID = 42 }))
		if !errors.Is(err, backend.ErrExists) {
			t.Fatalf("Create of existing %s: %v, want ErrExists", name, err)
		}
	}
	if st := statHost(t, filepath.Join(srv.NoSquash, "twice")); st.uid != 0 {
		t.Fatalf("a refused Create changed the owner of the existing directory to %d", st.uid)
	}
	mustExist(t, filepath.Join(srv.NoSquash, "twice", "data"))
}

// testNFSRootSquash: with root squashed, directories made with uid 0
// credentials belong to the anonymous user, and giving them another owner
// fails with an error that says why, leaving nothing behind. Credentials of
// an unprivileged user are not squashed and may own what they make.
func testNFSRootSquash(t *testing.T, srv *node.NFSServer) {
	b := nfsBackend(t, srv, srv.Squashed, nil)
	ctx := ctx30(t)
	if err := b.Create(ctx, "sq-plain", opts(func(o *backend.Options) { o.Mode = 0o770 })); err != nil {
		t.Fatal(err)
	}
	if got, want := statHost(t, filepath.Join(srv.Squashed, "sq-plain")), (hostStat{fs.ModeDir | 0o770, 65534, 65534}); got != want {
		t.Fatalf("squashed create: %+v, want %+v", got, want)
	}
	err := b.Create(ctx, "sq-owned", opts(func(o *backend.Options) { o.UID, o.GID = 1000, 1000 }))
	if err == nil || !strings.Contains(err.Error(), "root_squash") || !strings.Contains(err.Error(), "uid 1000") {
		t.Fatalf("squashed create with an owner: %v, want an error naming the owner and root_squash", err)
	}
	t.Logf("squashed create with an owner: %v", err)
	mustBeGone(t, filepath.Join(srv.Squashed, "sq-owned"))

	user := nfsBackend(t, srv, srv.Squashed, func(c *nfs.Config) { c.UID, c.GID = 1000, 1000 })
	if err := user.Create(ctx, "as-user", opts(func(o *backend.Options) { o.UID, o.GID = 1000, 1000 })); err != nil {
		t.Fatalf("create as uid 1000 on the squashed export: %v", err)
	}
	if got := statHost(t, filepath.Join(srv.Squashed, "as-user")); got.uid != 1000 || got.gid != 1000 {
		t.Fatalf("as-user: %+v, want 1000:1000", got)
	}
	if err := b.Remove(ctx, "sq-plain", opts(nil)); err != nil {
		t.Fatalf("squashed remove: %v", err)
	}
	mustBeGone(t, filepath.Join(srv.Squashed, "sq-plain"))
}

func testNFSListGet(t *testing.T, srv *node.NFSServer) {
	b := nfsBackend(t, srv, srv.NoSquash, nil)
	ctx := ctx30(t)
	for _, d := range []string{"has space", ".hidden", "list-me"} {
		if err := os.Mkdir(filepath.Join(srv.NoSquash, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("list-me", filepath.Join(srv.NoSquash, "dir-link")); err != nil {
		t.Fatal(err)
	}
	vols, err := b.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range vols {
		names = append(names, v.Name)
	}
	for _, want := range []string{"list-me", "owned", "plain", "twice"} {
		if !slices.Contains(names, want) {
			t.Errorf("List = %v, lacks %s", names, want)
		}
	}
	for _, not := range []string{"has space", ".hidden", "dir-link", "a-file"} {
		if slices.Contains(names, not) {
			t.Errorf("List = %v, shows %q", names, not)
		}
	}
	testNFSGet(t, b, srv)
}

func testNFSGet(t *testing.T, b *nfs.Backend, srv *node.NFSServer) {
	ctx := ctx30(t)
	v, err := b.Get(ctx, "owned", opts(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"type": "nfs", "server": "127.0.0.1", "export": "127.0.0.1:" + srv.NoSquash + "/owned",
		"mode": "0750", "uid": "1234", "gid": "2345"}
	if v.Name != "owned" || !mapsEqual(v.Status, want) {
		t.Fatalf("Get owned = %+v, want status %v", v, want)
	}
	if time.Since(v.CreatedAt) > 10*time.Minute || v.CreatedAt.After(time.Now().Add(time.Minute)) {
		t.Errorf("Get owned: CreatedAt %v", v.CreatedAt)
	}
	for _, name := range []string{"missing", "a-file", "dir-link"} {
		if _, err := b.Get(ctx, name, opts(nil)); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("Get %s: %v, want ErrNotFound", name, err)
		}
		if err := b.Remove(ctx, name, opts(nil)); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("Remove %s: %v, want ErrNotFound", name, err)
		}
	}
	mustExist(t, filepath.Join(srv.NoSquash, "a-file"))
	mustExist(t, filepath.Join(srv.NoSquash, "dir-link"))
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// testNFSRemoveDelete removes a tree with nested directories, a directory
// without write permission, and symbolic links to a directory outside the
// volume, which must survive.
func testNFSRemoveDelete(t *testing.T, srv *node.NFSServer) {
	b := nfsBackend(t, srv, srv.NoSquash, nil)
	ctx := ctx30(t)
	if err := b.Create(ctx, "del", opts(nil)); err != nil {
		t.Fatal(err)
	}
	vol := filepath.Join(srv.NoSquash, "del")
	outside := filepath.Join(t.TempDir(), "outside")
	mustWrite(t, filepath.Join(outside, "precious"), "keep me")
	mustWrite(t, filepath.Join(vol, "a", "b", "c", "deep.txt"), "deep")
	mustWrite(t, filepath.Join(vol, "top.txt"), "top")
	mustWrite(t, filepath.Join(vol, "locked", "inside.txt"), "locked")
	for i := range 300 { // more than one READDIRPLUS page
		mustWrite(t, filepath.Join(vol, "many", "f"+itoa(i)), "x")
	}
	if err := os.Chmod(filepath.Join(vol, "locked"), 0o500); err != nil {
		t.Fatal(err)
	}
	for _, link := range []string{"out-link", "a/out-link"} {
		if err := os.Symlink(outside, filepath.Join(vol, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Remove(ctx, "del", opts(func(o *backend.Options) { o.OnRemove = "delete" })); err != nil {
		t.Fatal(err)
	}
	mustBeGone(t, vol)
	mustExist(t, filepath.Join(outside, "precious"))
	mustExist(t, srv.NoSquash)
	if _, err := b.Get(ctx, "del", opts(nil)); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("Get after delete: %v", err)
	}
}

func testNFSRemoveRetain(t *testing.T, srv *node.NFSServer) {
	b := nfsBackend(t, srv, srv.NoSquash, nil)
	ctx := ctx30(t)
	if err := b.Create(ctx, "keep", opts(nil)); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(srv.NoSquash, "keep", "data"), "kept")
	if err := b.Remove(ctx, "keep", opts(func(o *backend.Options) { o.OnRemove = "retain" })); err != nil {
		t.Fatal(err)
	}
	mustExist(t, filepath.Join(srv.NoSquash, "keep", "data"))
	if err := b.Remove(ctx, "keep", opts(func(o *backend.Options) { o.OnRemove = "shred" })); !errors.Is(err, backend.ErrInvalid) {
		t.Fatalf("Remove with an unknown policy: %v, want ErrInvalid", err)
	}
	mustExist(t, filepath.Join(srv.NoSquash, "keep", "data"))
}

func testNFSRemoveArchive(t *testing.T, srv *node.NFSServer) {
	now := time.Date(2024, 5, 6, 7, 8, 9, 0, time.FixedZone("CEST", 2*3600))
	b := nfsBackend(t, srv, srv.NoSquash, func(c *nfs.Config) { c.Now = func() time.Time { return now } })
	ctx := ctx30(t)
	archive := filepath.Join(srv.NoSquash, ".netvol-archive")
	for i, want := range []string{"arch-20240506T050809Z", "arch-20240506T050809Z-2"} {
		if err := b.Create(ctx, "arch", opts(nil)); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, filepath.Join(srv.NoSquash, "arch", "data"), itoa(i))
		if err := b.Remove(ctx, "arch", opts(func(o *backend.Options) { o.OnRemove = "archive" })); err != nil {
			t.Fatal(err)
		}
		mustBeGone(t, filepath.Join(srv.NoSquash, "arch"))
		if got, err := os.ReadFile(filepath.Join(archive, want, "data")); err != nil || string(got) != itoa(i) {
			t.Fatalf("archived copy %s: %q, %v", want, got, err)
		}
	}
	if st := statHost(t, archive); st.mode != fs.ModeDir|0o700 {
		t.Errorf("archive directory mode %v, want drwx------", st.mode)
	}
	vols, err := b.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		if strings.Contains(v.Name, "netvol-archive") || strings.HasPrefix(v.Name, "arch") {
			t.Fatalf("List shows the archive: %v", v.Name)
		}
	}
}

// testNFSEscapes tries names and overrides that would reach outside the
// export: each is refused as invalid before anything is touched.
func testNFSEscapes(t *testing.T, srv *node.NFSServer) {
	b := nfsBackend(t, srv, srv.NoSquash, nil)
	ctx := ctx30(t)
	parent := filepath.Dir(srv.NoSquash)
	victim := filepath.Join(parent, "victim")
	mustWrite(t, filepath.Join(victim, "precious"), "keep me")
	names := []string{"", ".", "..", "../victim", "a/b", "/etc", ".netvol-archive", "-x", "x\x00", strings.Repeat("a", 129)}
	for _, name := range names {
		for op, err := range nfsOps(ctx, b, name, opts(nil)) {
			if !errors.Is(err, backend.ErrInvalid) {
				t.Errorf("%s %q: %v, want ErrInvalid", op, name, err)
			}
		}
	}
	for _, export := range []string{"relative", srv.NoSquash + "/../victim", srv.NoSquash + "/", "/srv//x"} {
		o := opts(func(o *backend.Options) { o.Export = export })
		for op, err := range nfsOps(ctx, b, "victim", o) {
			if !errors.Is(err, backend.ErrInvalid) {
				t.Errorf("%s with export %q: %v, want ErrInvalid", op, export, err)
			}
		}
	}
	for _, server := range []string{"127.0.0.1:2049", "host,addr=1.2.3.4", "-o"} {
		o := opts(func(o *backend.Options) { o.Server = server })
		if err := b.Remove(ctx, "victim", o); !errors.Is(err, backend.ErrInvalid) {
			t.Errorf("Remove with server %q: %v, want ErrInvalid", server, err)
		}
	}
	// A well-formed export the server does not export: the server refuses.
	o := opts(func(o *backend.Options) { o.Export = parent })
	if err := b.Remove(ctx, "victim", o); err == nil {
		t.Errorf("Remove through the unexported parent %s succeeded", parent)
	}
	mustExist(t, filepath.Join(victim, "precious"))
	mustExist(t, srv.NoSquash)
}

// nfsOps runs each backend call that takes a name and reports its error.
func nfsOps(ctx context.Context, b *nfs.Backend, name string, o backend.Options) map[string]error {
	_, getErr := b.Get(ctx, name, o)
	_, mountErr := b.Mount(ctx, name, o, "/nonexistent/target")
	return map[string]error{
		"Create": b.Create(ctx, name, o),
		"Remove": b.Remove(ctx, name, o),
		"Get":    getErr,
		"Mount":  mountErr,
	}
}

// testNFSPortmapper manages directories with no ports configured: both
// come from rpcbind, where ganesha registered them.
func testNFSPortmapper(t *testing.T, srv *node.NFSServer) {
	b := nfsBackend(t, srv, srv.NoSquash, func(c *nfs.Config) { c.Port, c.MountPort = 0, 0 })
	ctx := ctx30(t)
	if err := b.Create(ctx, "via-rpcbind", opts(nil)); err != nil {
		t.Fatal(err)
	}
	mustExist(t, filepath.Join(srv.NoSquash, "via-rpcbind"))
	if err := b.Remove(ctx, "via-rpcbind", opts(nil)); err != nil {
		t.Fatal(err)
	}
	mustBeGone(t, filepath.Join(srv.NoSquash, "via-rpcbind"))
}

// recordingMounter keeps what it was asked to do.
type recordingMounter struct {
	mu       sync.Mutex
	mounts   []mount.Mount
	unmounts []string
}

func (r *recordingMounter) Mount(m mount.Mount) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mounts = append(r.mounts, m)
	return nil
}

func (r *recordingMounter) Unmount(target string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unmounts = append(r.unmounts, target)
	return nil
}

// testNFSMountSpec checks the mount(2) call for each version against the
// real server's ports: v3 gets both from rpcbind.
func testNFSMountSpec(t *testing.T, srv *node.NFSServer) {
	ctx := ctx30(t)
	source := "127.0.0.1:" + srv.NoSquash + "/owned"
	port, mport := "port="+itoa(srv.Port), "mountport="+itoa(srv.MountPort)
	cases := []struct {
		version, fstype string
		port            int
		want            []string
	}{
		{"", "nfs4", srv.Port, []string{"vers=4.1", "addr=127.0.0.1", "proto=tcp", port, "soft", "timeo=600", "retrans=2", "noatime"}},
		{"4", "nfs4", srv.Port, []string{"vers=4.0", "addr=127.0.0.1", "proto=tcp", port, "soft", "timeo=600", "retrans=2", "noatime"}},
		{"3", "nfs", 0, []string{"vers=3", "addr=127.0.0.1", "proto=tcp", port, "soft", "timeo=600", "retrans=2",
			mport, "mountproto=tcp", "mountvers=3", "nolock", "noatime"}},
	}
	for _, c := range cases {
		rec := &recordingMounter{}
		b := nfsBackend(t, srv, srv.NoSquash, func(cfg *nfs.Config) {
			cfg.Version, cfg.Mounter, cfg.Port, cfg.MountPort = c.version, rec, c.port, 0
		})
		o := opts(func(o *backend.Options) { o.MountOpts = []string{"soft", "noatime"} })
		m, err := b.Mount(ctx, "owned", o, "/mnt/owned")
		if err != nil {
			t.Fatalf("version %q: %v", c.version, err)
		}
		if m != (backend.Mounted{Export: source, Method: "nfs"}) {
			t.Errorf("version %q: Mounted %+v", c.version, m)
		}
		want := mount.Mount{Source: source, Target: "/mnt/owned", Type: c.fstype, Options: c.want}
		if len(rec.mounts) != 1 || !mountEqual(rec.mounts[0], want) {
			t.Errorf("version %q: mounted %+v\nwant %+v", c.version, rec.mounts, want)
		}
		if err := b.Unmount(ctx, "owned", o, "/mnt/owned", m); err != nil || !slices.Equal(rec.unmounts, []string{"/mnt/owned"}) {
			t.Errorf("version %q: Unmount: %v, unmounted %v", c.version, err, rec.unmounts)
		}
	}
}

func mountEqual(a, b mount.Mount) bool {
	return a.Source == b.Source && a.Target == b.Target && a.Type == b.Type && slices.Equal(a.Options, b.Options)
}

// testNFSUnreachable: servers that accept connections and never answer (a
// hung daemon; for MOUNT and for NFS after a good MOUNT), a port nobody
// listens on, and an address nothing answers for. Each gives
// ErrUnavailable, naming the server, within the deadline.
func testNFSUnreachable(t *testing.T, srv *node.NFSServer) {
	silent := silentListener(t)
	closed := closedPort(t)
	cases := []struct {
		what string
		cfg  nfs.Config
	}{
		{"hung MOUNT service", nfs.Config{Server: "127.0.0.1", Export: srv.NoSquash, Port: silent, MountPort: silent}},
		{"hung NFS service", nfs.Config{Server: "127.0.0.1", Export: srv.NoSquash, Port: silent, MountPort: srv.MountPort}},
		{"closed port", nfs.Config{Server: "127.0.0.1", Export: srv.NoSquash, Port: closed, MountPort: closed}},
		{"unroutable address", nfs.Config{Server: "192.0.2.1", Export: "/srv"}}, // TEST-NET-1
	}
	for _, c := range cases {
		b, err := nfs.New(c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		checkUnavailable(t, c.what, c.cfg.Server, func(ctx context.Context) error { return b.Create(ctx, "v", opts(nil)) })
		checkUnavailable(t, c.what, c.cfg.Server, func(ctx context.Context) error { _, err := b.List(ctx); return err })
	}
}

// silentListener accepts connections and never answers, until the test
// ends.
func silentListener(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

func closedPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// checkUnavailable runs f with a 2 s deadline and wants ErrUnavailable
// naming server, in at most the deadline and a little slack.
func checkUnavailable(t *testing.T, what, server string, f func(context.Context) error) {
	t.Helper()
	const deadline = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	err := f(ctx)
	took := time.Since(start)
	if !errors.Is(err, backend.ErrUnavailable) || !strings.Contains(err.Error(), server) {
		t.Errorf("%s: %v, want ErrUnavailable naming %s", what, err, server)
	}
	// The slack is for a loaded machine (2 cores, VMs beside); a call that
	// ignored the deadline would take the kernel's TCP timeouts, minutes.
	if took > deadline+time.Second {
		t.Errorf("%s: took %s, deadline %s", what, took, deadline)
	}
	t.Logf("%s (%s): %v", what, took.Round(time.Millisecond), err)
}

// testNFSStopped stops ganesha, then manages volumes with and without the
// portmapper.
func testNFSStopped(t *testing.T, srv *node.NFSServer) {
	direct := nfsBackend(t, srv, srv.NoSquash, nil)
	viaPortmap := nfsBackend(t, srv, srv.NoSquash, func(c *nfs.Config) { c.Port, c.MountPort = 0, 0 })
	if _, err := direct.Get(ctx30(t), "owned", opts(nil)); err != nil {
		t.Fatalf("before the stop: %v", err)
	}
	srv.Stop()
	for what, b := range map[string]*nfs.Backend{"stopped server": direct, "stopped server, via rpcbind": viaPortmap} {
		checkUnavailable(t, what, "127.0.0.1", func(ctx context.Context) error { _, err := b.Get(ctx, "owned", opts(nil)); return err })
		checkUnavailable(t, what, "127.0.0.1", func(ctx context.Context) error { return b.Remove(ctx, "owned", opts(nil)) })
	}
	mustExist(t, filepath.Join(srv.NoSquash, "owned"))
}
