//go:build e2e

package node

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// NFSServer is nfs-ganesha on the host with two exports on a tmpfs (its VFS
// backend does not work on overlayfs): Squashed with root squashing (root
// becomes uid 65534), as ganesha's default, and NoSquash without it. Each export's path is the same
// for NFSv3 (Path) and NFSv4 (Pseudo), so HostAddr:<path> mounts with both.
type NFSServer struct {
	Port      int    // NFS (v3 and v4)
	MountPort int    // MOUNT protocol, for v3
	Squashed  string // export path, root squashed to nobody
	NoSquash  string // export path, no_root_squash
	*Daemon
}

// StartNFSServer starts nfs-ganesha on ports of its own, stopped when the
// test ends, and rpcbind unless one runs already (that one runs until the
// test binary ends: see ensureRPCBind).
//
// rpcbind holds one port per program and version on a host: ganesha takes
// the NFS and MOUNT registrations over as it starts and removes them as it
// stops, whoever made them (checked with nfs-ganesha 4.3). So an NFS server
// the host runs loses its registrations to the fixture, and two fixtures at
// once take them from each other (suites that ask rpcbind do not run in
// parallel). The exported directories
// are world-writable so squashed users can create files in them.
func StartNFSServer(t testing.TB) *NFSServer {
	t.Helper()
	RequireRoot(t)
	RequireTools(t, "ganesha.nfsd", "rpcbind")
	dir := t.TempDir()
	root := filepath.Join(dir, "exports")
	mountTmpfs(t, root)
	s := &NFSServer{
		Port: FreePort(t), MountPort: FreePort(t),
		Squashed: filepath.Join(root, "squashed"), NoSquash: filepath.Join(root, "nosquash"),
	}
	for _, d := range []string{s.Squashed, s.NoSquash, filepath.Join(dir, "recovery")} {
		if err := os.Mkdir(d, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o777); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "ganesha.conf")
	if err := os.WriteFile(conf, []byte(s.config(filepath.Join(dir, "recovery"))), 0o644); err != nil {
		t.Fatal(err)
	}
	ensureRPCBind(t)
	s.Daemon = StartDaemon(t, filepath.Join(dir, "ganesha.out"), "ganesha.nfsd", "-F",
		"-f", conf, "-L", filepath.Join(dir, "ganesha.log"), "-p", filepath.Join(dir, "ganesha.pid"), "-N", "NIV_EVENT")
	waitReady(t, s.Daemon, s.Port)
	waitReady(t, s.Daemon, s.MountPort)
	return s
}

// config renders ganesha's configuration: TCP only, no NLM or RQUOTA (v3
// clients mount with nolock), no grace period so clients need not wait.
// Squashed users map to 65534 (nobody), as with Linux's NFS server; ganesha's
// own default is 4294967294.
func (s *NFSServer) config(recovery string) string {
	export := func(id int, path, squash string) string {
		return fmt.Sprintf(`EXPORT { Export_Id = %d; Path = %s; Pseudo = %s; Access_Type = RW;
  Squash = %s; Anonymous_Uid = 65534; Anonymous_Gid = 65534;
  SecType = sys; Protocols = 3, 4; Transports = TCP; FSAL { Name = VFS; } }
`, id, path, path, squash)
	}
	return fmt.Sprintf(`NFS_CORE_PARAM { NFS_Port = %d; MNT_Port = %d; Enable_NLM = false;
  Enable_RQUOTA = false; Enable_UDP = false; Protocols = 3, 4; }
NFSV4 { Graceless = true; RecoveryBackend = fs; RecoveryRoot = %s; }
LOG { Default_Log_Level = WARN; }
`, s.Port, s.MountPort, recovery) + export(1, s.NoSquash, "No_Root_Squash") + export(2, s.Squashed, "Root_Squash")
}

// MountOptions returns the mount -o options for version "4.1", "4", or "3".
// Ports are explicit, so the node never asks rpcbind.
func (s *NFSServer) MountOptions(version string) string {
	if version == "3" {
		return fmt.Sprintf("vers=3,proto=tcp,port=%d,mountport=%d,mountproto=tcp,nolock", s.Port, s.MountPort)
	}
	return fmt.Sprintf("vers=%s,proto=tcp,port=%d", version, s.Port)
}

// MountCommand is the shell command that mounts export (Squashed or
// NoSquash) at target inside a node.
func (s *NFSServer) MountCommand(export, version, target string) string {
	return fmt.Sprintf("mkdir -p %s && mount -t nfs -o %s %s:%s %s", target, s.MountOptions(version), HostAddr, export, target)
}

// rpcbind is the rpcbind this test binary started, if any. It serves every
// NFS server of the run, so it lives as long as the binary: stopped by Main
// after the last test, or killed with the binary.
var rpcbind struct {
	sync.Mutex
	d   *Daemon
	dir string
}

// ensureRPCBind starts rpcbind unless one already answers: ganesha exits
// when it cannot register its v3 services. An rpcbind found running, the
// host's own or another's, is left alone: never restarted, never stopped.
//
// One started here is not stopped when the test that started it ends:
// NFS servers of other tests (and any the host starts meanwhile) have
// registered with it since, and stopping it would drop their registrations
// while they run, and make the next test start another.
func ensureRPCBind(t testing.TB) {
	t.Helper()
	rpcbind.Lock()
	defer rpcbind.Unlock()
	if rpcbindAnswers() {
		return
	}
	if rpcbind.dir == "" {
		dir, err := os.MkdirTemp("", "netvol-e2e-rpcbind-")
		if err != nil {
			t.Fatal(err)
		}
		rpcbind.dir = dir
	}
	// -f: stay in the foreground so the fixture owns the process. No -w:
	// a warm start would load the registrations of whatever rpcbind last
	// stopped on this host, servers long gone.
	d, err := spawnDaemon(0, filepath.Join(rpcbind.dir, "rpcbind.log"), "rpcbind", "-f")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := d.WaitTCP(ctx, "127.0.0.1:111"); err != nil {
		d.Kill()
		// Another test binary may have started rpcbind since the check
		// above; ours then exits ("another rpcbind is already running").
		if rpcbindAnswers() {
			return
		}
		t.Fatal(err)
	}
	rpcbind.d = d
}

func rpcbindAnswers() bool {
	conn, err := net.DialTimeout("tcp", "127.0.0.1:111", time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// stopRPCBind stops the rpcbind ensureRPCBind started, if any. It kills it:
// on SIGTERM rpcbind writes its table to /run/rpcbind for a warm start,
// over what the host's own rpcbind may have saved there.
func stopRPCBind() {
	rpcbind.Lock()
	defer rpcbind.Unlock()
	if rpcbind.d != nil {
		rpcbind.d.Kill()
		rpcbind.d = nil
	}
	if rpcbind.dir != "" {
		os.RemoveAll(rpcbind.dir)
		rpcbind.dir = ""
	}
}

// mountTmpfs mounts a tmpfs at dir, unmounted when the test ends.
func mountTmpfs(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755,size=512m"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { unmount(t, dir) })
}

// unmount retries for a while: a daemon that has just exited may still hold
// the mount busy for a moment.
func unmount(t testing.TB, dir string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		err := syscall.Unmount(dir, 0)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("unmount %s: %v", dir, err)
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
