package doctor

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/internal/opcmd"
	"github.com/netvol/netvol/internal/optest"
	"github.com/netvol/netvol/nbd"
)

// newTestDoctor is a doctor of this host with nothing configured and no
// Docker: tests set what they check.
func newTestDoctor(t *testing.T) *doctor {
	dir := t.TempDir()
	return &doctor{cfg: Config{
		Conn:       opcmd.Conn{NFSVersion: "4.1"},
		Socket:     filepath.Join(dir, "plugins", "netvol.sock"),
		DockerHost: "unix://" + filepath.Join(dir, "docker.sock"),
		KernelNBD:  nbd.KernelAvailable, Now: time.Now, Timeout: 2 * time.Second,
	}}
}

// result finds a check's result.
func result(t *testing.T, results []Result, check string) Result {
	t.Helper()
	for _, r := range results {
		if r.Check == check {
			return r
		}
	}
	t.Fatalf("no %q check in %+v", check, results)
	return Result{}
}

func wantResult(t *testing.T, r Result, status string, parts ...string) {
	t.Helper()
	if r.Status != status {
		t.Errorf("%s: %s, want %s: %s (fix: %s)", r.Check, r.Status, status, r.Detail, r.Fix)
	}
	for _, p := range parts {
		if !strings.Contains(r.Detail+" fix: "+r.Fix, p) {
			t.Errorf("%s: %q (fix: %q) does not say %q", r.Check, r.Detail, r.Fix, p)
		}
	}
	if status != StatusOK && r.Fix == "" {
		t.Errorf("%s: %s without a fix", r.Check, status)
	}
}

// On this host as it is: the lines about the kernel say what it lacks
// and what to do about it. (The build machines have no NBD driver and no
// NFS client; elsewhere the lines are OK.)
func TestDoctorThisHost(t *testing.T) {
	d := newTestDoctor(t)
	d.cfg.Conn.NFS, d.cfg.Conn.NFSPort, d.cfg.Conn.NFSMountPort = "127.0.0.1:/srv/none", 1, 1 // nothing answers
	results := d.run(context.Background())
	drv := result(t, results, "nbd driver")
	if err := nbd.KernelAvailable(); err != nil {
		wantResult(t, drv, drv.Status, "NBD driver", "modprobe nbd")
		if drv.Status == StatusOK {
			t.Errorf("nbd driver OK, but %v", err)
		}
		wantResult(t, result(t, results, "/dev/nbd*"), StatusWarn, "no /dev/nbd* devices")
	} else {
		wantResult(t, drv, StatusOK, "loaded")
	}
	fs, _ := os.ReadFile("/proc/filesystems")
	nfsc := result(t, results, "nfs client")
	if !strings.Contains(string(fs), "nfs4") {
		wantResult(t, nfsc, nfsc.Status, "no NFS client for NFS 4.1", "nfsv4")
		if nfsc.Status == StatusOK {
			t.Error("nfs client OK without nfs4 in /proc/filesystems")
		}
	}
	wantResult(t, result(t, results, "nfs server"), StatusFail, "127.0.0.1:/srv/none", "--nfs-port")
	wantResult(t, result(t, results, "docker"), StatusWarn, "no Docker daemon socket", "start dockerd")
	wantResult(t, result(t, results, "plugin socket"), StatusWarn, "no plugin socket", "netvol plugin")
	var out strings.Builder
	err := Report(&out, results, false)
	optest.WantErr(t, err, "checks failed")
	for _, s := range []string{"FAIL  nfs server", "fix: check that the server exports", "OK, "} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("report lacks %q:\n%s", s, out.String())
		}
	}
	t.Logf("report:\n%s", out.String())
}

// fakeRoot is a host tree: kernel release, /proc/filesystems, modules and
// devices as given. Devices are links to /dev/null, a character device.
func fakeRoot(t *testing.T, filesystems string, modules []string, devs ...string) string {
	root := t.TempDir()
	write := func(p, s string) {
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("proc/sys/kernel/osrelease", "5.10.0-test\n")
	write("proc/filesystems", filesystems)
	var dep strings.Builder
	for _, m := range modules {
		dep.WriteString(m + ": kernel/other.ko\n")
	}
	write("lib/modules/5.10.0-test/modules.dep", dep.String())
	os.MkdirAll(filepath.Join(root, "dev"), 0o755)
	for _, d := range devs {
		if err := os.Symlink("/dev/null", filepath.Join(root, "dev", d)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestDoctorKernelChecks(t *testing.T) {
	noNBD := func() error { return nbd.ErrNoKernelNBD }
	for _, c := range []struct {
		name              string
		kernel            func() error
		server, nfs, vers string
		root              string
		want              map[string][]string // check: status, then what it says
	}{
		{"nbd module, no loop, nbd needed", noNBD, "store:1", "", "4.1",
			fakeRoot(t, "nodev\tnfs4\n", []string{"kernel/drivers/block/nbd.ko.xz"}, "fuse"),
			map[string][]string{"nbd driver": {StatusFail, "not loaded (the nbd module is available)", "modprobe nbd"},
				"loop devices": {StatusFail, "no /dev/loop-control", "modprobe loop"}, "fuse": {StatusOK},
				"/dev/nbd*": {StatusWarn, "no /dev/nbd* devices"}, "nfs client": {StatusOK, "nfs4 in /proc/filesystems"},
				"attach method": {StatusFail, "would attach block volumes with userspace", "modprobe nbd was not tried", "/dev/loop-control cannot be used"}}},
		{"no nbd module, userspace attach", noNBD, "store:1", "", "4.1",
			fakeRoot(t, "", nil, "fuse", "loop-control"),
			map[string][]string{"nbd driver": {StatusWarn, "(5.10.0-test) has no NBD driver", "linux-image-5.10.0-test", "userspace attach"},
				"fuse": {StatusOK}, "loop devices": {StatusOK}, "nfs client": {StatusWarn, "no NFS client"},
				"attach method": {StatusOK, "attaches block volumes with userspace: the kernel has no NBD driver"}}},
		{"kernel nbd, no fuse, nfs v3 module", func() error { return nil }, "", "nas:/x", "3",
			fakeRoot(t, "nodev\tnfs4\n", []string{"kernel/fs/nfs/nfs.ko"}, "nbd0", "nbd1", "nbd1p1"),
			map[string][]string{"nbd driver": {StatusOK}, "/dev/nbd*": {StatusOK, "2 NBD devices"},
				"attach method": {StatusOK, "with kernel: the kernel has the NBD driver"},
				"fuse":          {StatusWarn, "no /dev/fuse", "userspace attach"}, "nfs client": {StatusWarn, "the nfs module is available", "modprobe nfs"}}},
		{"no nfs client, nfs needed", noNBD, "", "nas:/x", "4.1", fakeRoot(t, "nodev\tproc\n", nil),
			map[string][]string{"nfs client": {StatusFail, "no nfs4 in /proc/filesystems and no nfsv4 module", "CONFIG_NFS_V4"},
				"nbd driver": {StatusWarn}, "loop devices": {StatusWarn}}},
		{"netlink unusable", func() error { return errors.New("socket: permission denied") }, "", "", "4.1", fakeRoot(t, "", nil),
			map[string][]string{"nbd driver": {StatusWarn, "could not ask the kernel", "permission denied"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := newTestDoctor(t)
			d.cfg.Root, d.cfg.KernelNBD = c.root, c.kernel
			d.cfg.Conn.Server, d.cfg.Conn.NFS, d.cfg.Conn.NFSVersion = c.server, c.nfs, c.vers
			ctx := context.Background()
			results := append(d.blockChecks(ctx), d.nfsClientChecks(ctx)...)
			for check, want := range c.want {
				wantResult(t, result(t, results, check), want[0], want[1:]...)
			}
		})
	}
}

// The attach method line follows --attach (NETVOL_ATTACH) as the plugin
// does; the doctor loads no module.
func TestDoctorAttachMethod(t *testing.T) {
	noNBD := func() error { return nbd.ErrNoKernelNBD }
	for _, c := range []struct {
		attach, server string
		want           []string
	}{
		{"kernel", "", []string{StatusWarn, "would attach block volumes with kernel: --attach kernel; but the kernel has no NBD driver", "nbd driver"}},
		{"kernel", "store:1", []string{StatusFail, "--attach kernel; but"}},
		{"userspace", "store:1", []string{StatusOK, "with userspace: --attach userspace"}},
		{"magic", "", []string{StatusFail, `--attach "magic": want auto, kernel or userspace`, "NETVOL_ATTACH"}},
	} {
		d := newTestDoctor(t)
		d.cfg.Root, d.cfg.KernelNBD = fakeRoot(t, "", []string{"kernel/drivers/block/nbd.ko"}, "fuse", "loop-control"), noNBD
		d.cfg.Attach, d.cfg.Conn.Server = c.attach, c.server
		results := d.blockChecks(context.Background())
		wantResult(t, result(t, results, "attach method"), c.want[0], c.want[1:]...)
		wantResult(t, result(t, results, "nbd driver"), StatusWarn, "the nbd module is available")
		wantResult(t, result(t, results, "fuse"), StatusOK)
	}
}

func TestDoctorStorageDaemon(t *testing.T) {
	d := optest.StartDaemon(t)
	doc := newTestDoctor(t)
	doc.cfg.Conn.Server, doc.cfg.Conn.TokenFile = d.URL, d.TokenFile
	results := doc.run(context.Background())
	wantResult(t, result(t, results, "configuration"), StatusOK, "storage daemon "+d.URL)
	wantResult(t, result(t, results, "storage daemon"), StatusOK, "healthy", d.NBDL.Addr().String())
	wantResult(t, result(t, results, "clock"), StatusOK, "clock")
	wantResult(t, result(t, results, "api token"), StatusOK, "accepted")
	wantResult(t, result(t, results, "nbd address"), StatusOK, d.NBDL.Addr().String(), "accepts connections")

	doc.cfg.Conn.Token = "wrong"
	doc.cfg.Now = func() time.Time { return time.Now().Add(-10 * time.Second) }
	results = doc.daemonChecks(context.Background())
	wantResult(t, result(t, results, "api token"), StatusFail, "refuses the token", "<data>/token")
	wantResult(t, result(t, results, "clock"), StatusWarn, "ahead of this host's", "NTP")
	doc.cfg.Now = func() time.Time { return time.Now().Add(10 * time.Second) }
	wantResult(t, result(t, doc.daemonChecks(context.Background()), "clock"), StatusWarn, "behind this host's")

	doc.cfg.Conn.Token, doc.cfg.Conn.TokenFile = "", ""
	wantResult(t, result(t, doc.daemonChecks(context.Background()), "api token"), StatusFail, "no API token", "--token-file")

	d.NBDL.Close()
	doc.cfg.Conn.Token = optest.Token
	wantResult(t, result(t, doc.daemonChecks(context.Background()), "nbd address"), StatusFail, "cannot connect to the NBD server", "--nbd-listen", "NETVOL_NBD")
	doc.cfg.Conn.NBDAddr = "unix:/nonexistent/nbd.sock"
	wantResult(t, result(t, doc.daemonChecks(context.Background()), "nbd address"), StatusFail, "unix:/nonexistent/nbd.sock (--nbd)")
}

func TestDoctorDaemonDown(t *testing.T) {
	doc := newTestDoctor(t)
	doc.cfg.Conn.Server, doc.cfg.Conn.Token = "127.0.0.1:1", "t"
	results := doc.daemonChecks(context.Background())
	wantResult(t, result(t, results, "storage daemon"), StatusFail, "http://127.0.0.1:1 does not answer", "--api-listen")
	wantResult(t, result(t, results, "api token"), StatusWarn, "not checked")
	wantResult(t, result(t, results, "nbd address"), StatusWarn, "not checked")
	for _, r := range results {
		if r.Check == "clock" {
			t.Errorf("a clock check without a daemon: %+v", r)
		}
	}
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler()) // a certificate nobody trusts
	defer tlsSrv.Close()
	doc.cfg.Conn.Server = tlsSrv.URL
	wantResult(t, result(t, doc.daemonChecks(context.Background()), "storage daemon"), StatusFail, "certificate", "trust store")
	doc.cfg.Conn.Server = "ftp://x"
	wantResult(t, result(t, doc.daemonChecks(context.Background()), "storage daemon"), StatusFail, "ftp://x", "NETVOL_SERVER")
}

// A server that accepts and never answers: each check ends at the timeout.
func TestDoctorTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	doc := newTestDoctor(t)
	doc.cfg.Conn.Server, doc.cfg.Conn.Token, doc.cfg.Timeout = l.Addr().String(), "t", 200*time.Millisecond
	start := time.Now()
	results := doc.daemonChecks(context.Background())
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("checks took %s with a 200ms timeout", took)
	}
	wantResult(t, result(t, results, "storage daemon"), StatusFail, "no answer to GET /healthz within 200ms")
	hung := doc.check(context.Background(), "stuck", func(ctx context.Context) Result { time.Sleep(time.Second); return passed("stuck", "") })
	wantResult(t, hung, StatusFail, "no answer within 200ms", "--timeout")
}

// serveUnix serves h on a unix socket at path until the test ends.
func serveUnix(t *testing.T, path string, h http.Handler) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

func TestDoctorDockerAndPlugin(t *testing.T) {
	dir := t.TempDir()
	docker := filepath.Join(dir, "docker.sock")
	serveUnix(t, docker, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_ping" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Api-Version", "1.47")
		w.Write([]byte("OK"))
	}))
	activate := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"Implements": ["VolumeDriver"]}`))
	})
	// A managed plugin's socket: /run/docker/plugins/<id>/netvol.sock.
	serveUnix(t, filepath.Join(dir, "plugins", "0123abcd", "netvol.sock"), activate)
	doc := newTestDoctor(t)
	doc.cfg.DockerHost, doc.cfg.Socket = "unix://"+docker, filepath.Join(dir, "plugins", "netvol.sock")
	results := doc.dockerChecks(context.Background())
	wantResult(t, result(t, results, "docker"), StatusOK, "GET /_ping", "API 1.47")
	wantResult(t, result(t, results, "plugin socket"), StatusOK, "0123abcd/netvol.sock", "VolumeDriver")

	// A socket nobody serves any more, and a Docker that is not Docker.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	notDocker := filepath.Join(dir, "other.sock")
	serveUnix(t, notDocker, http.NotFoundHandler())
	doc.cfg.DockerHost, doc.cfg.Socket = "unix://"+notDocker, stale
	results = doc.dockerChecks(context.Background())
	wantResult(t, result(t, results, "docker"), StatusFail, "does not answer GET /_ping: HTTP 404", "dockerd")
	wantResult(t, result(t, results, "plugin socket"), StatusFail, stale+" does not answer Plugin.Activate", "restart the plugin")

	doc.cfg.DockerHost = "ssh://host"
	wantResult(t, result(t, doc.dockerChecks(context.Background()), "docker"), StatusWarn, "want unix:///path or tcp://host:port")
}

// A pool: every server is checked, each line naming it; a dead one fails
// alone.
func TestDoctorPool(t *testing.T) {
	a, b := optest.StartDaemon(t), optest.StartDaemon(t)
	doc := newTestDoctor(t)
	doc.cfg.Conn.Server = a.URL + "," + b.URL + ",127.0.0.1:1"
	doc.cfg.Conn.TokenFile = a.TokenFile
	results := doc.daemonChecks(context.Background())
	for _, d := range []*optest.Daemon{a, b} {
		srv := strings.TrimPrefix(d.URL, "http://")
		wantResult(t, result(t, results, "storage daemon "+srv), StatusOK, "healthy")
		wantResult(t, result(t, results, "api token "+srv), StatusOK, "accepted")
		wantResult(t, result(t, results, "nbd address "+srv), StatusOK, d.NBDL.Addr().String())
	}
	wantResult(t, result(t, results, "storage daemon 127.0.0.1:1"), StatusFail, "does not answer")
	doc.cfg.Conn.TokenFile = a.TokenFile + "," + b.TokenFile
	results = doc.daemonChecks(context.Background())
	wantResult(t, result(t, results, "api token"), StatusFail, "2 tokens for 3")
}
