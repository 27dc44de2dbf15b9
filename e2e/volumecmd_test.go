//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netvol/netvol/e2e/node"
)

// operator runs the built netvol binary with the environment a host set up
// for the plugin would have (the flags' environment twins).
type operator struct {
	bin string
	env []string
}

// run returns stdout and stderr; err is the exit status.
func (o operator) run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(o.bin, args...)
	cmd.Env = o.env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

func (o operator) must(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := o.run(t, args...)
	if err != nil {
		t.Fatalf("netvol %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// refused runs a command that must fail and say every one of want.
func (o operator) refused(t *testing.T, args []string, want ...string) {
	t.Helper()
	out, errOut, err := o.run(t, args...)
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("netvol %s: %v, want a non-zero exit\n%s", strings.Join(args, " "), err, out)
	}
	// main logs the error with logrus, which quotes it: read it back.
	errOut = strings.ReplaceAll(errOut, `\"`, `"`)
	for _, w := range want {
		if !strings.Contains(errOut, w) {
			t.Errorf("netvol %s: stderr %q does not say %q", strings.Join(args, " "), errOut, w)
		}
	}
}

// TestVolumeCommand drives `netvol volume` and `netvol doctor`, the built
// binary, against nfs-ganesha and a storage daemon on the host, and checks
// the effects on the exported directories. Not parallel: ganesha registers
// with the host's one rpcbind (see TestNFSBackend).
func TestVolumeCommand(t *testing.T) {
	nfsSrv := node.StartNFSServer(t)
	store := node.StartNetvolServer(t)
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		"NETVOL_NFS=127.0.0.1:" + nfsSrv.NoSquash, "NETVOL_NFS_PORT=" + itoa(nfsSrv.Port),
		"NETVOL_NFS_MOUNT_PORT=" + itoa(nfsSrv.MountPort),
		fmt.Sprintf("NETVOL_SERVER=127.0.0.1:%d", store.APIPort), "NETVOL_TOKEN_FILE=" + store.TokenFile}
	op := operator{bin: node.NetvolBinary(t), env: env}
	t.Run("CreateNFS", func(t *testing.T) { testOpCreateNFS(t, op, nfsSrv) })
	t.Run("ListBothTypes", func(t *testing.T) { testOpList(t, op) })
	t.Run("RemoveNFS", func(t *testing.T) { testOpRemoveNFS(t, op, nfsSrv) })
	t.Run("RootSquash", func(t *testing.T) { testOpRootSquash(t, op, nfsSrv) })
	t.Run("Doctor", func(t *testing.T) { testOpDoctor(t, op) })
}

func testOpCreateNFS(t *testing.T, op operator, srv *node.NFSServer) {
	if out := op.must(t, "volume", "create", "shared", "--type", "nfs", "-o", "mode=0750", "-o", "uid=1000", "-o", "gid=100"); out != "shared\n" {
		t.Fatalf("create printed %q", out)
	}
	if st := statHost(t, filepath.Join(srv.NoSquash, "shared")); st != (hostStat{fs.ModeDir | 0o750, 1000, 100}) {
		t.Fatalf("on the host: %+v", st)
	}
	out := op.must(t, "volume", "inspect", "shared", "--type", "nfs")
	for _, s := range []string{"Type:        nfs", "Export:      127.0.0.1:" + srv.NoSquash + "/shared", "Mode:        0750",
		"Owner:       uid 1000, gid 100"} {
		if !strings.Contains(out, s) {
			t.Errorf("inspect lacks %q:\n%s", s, out)
		}
	}
	op.refused(t, []string{"volume", "create", "shared", "--type", "nfs"}, `"shared"`, "exists")
	op.refused(t, []string{"volume", "create", "x", "--type", "nfs", "--size", "1G"}, `option "size" does not apply to type=nfs`)
	op.refused(t, []string{"volume", "create", "x", "--type", "nfs", "-o", "on-remove=archive"}, "option on-remove acts when")
	mustBeGone(t, filepath.Join(srv.NoSquash, "x"))
}

func testOpList(t *testing.T, op operator) {
	op.must(t, "volume", "create", "shared", "--type", "nbd", "--size", "64M") // the same name, the other type
	op.must(t, "volume", "create", "blk", "--size", "32M")                     // nbd: the default with --server
	var vols []struct {
		Name, Type, Export string
		Size               int64
	}
	if err := json.Unmarshal([]byte(op.must(t, "volume", "ls", "--json")), &vols); err != nil {
		t.Fatal(err)
	}
	got := make([]string, len(vols))
	for i, v := range vols {
		got[i] = fmt.Sprintf("%s/%s/%d", v.Name, v.Type, v.Size)
	}
	if strings.Join(got, " ") != "blk/nbd/33554432 shared/nbd/67108864 shared/nfs/0" {
		t.Fatalf("ls --json: %v", got)
	}
	t.Logf("netvol volume ls:\n%s", op.must(t, "volume", "ls"))
	table := op.must(t, "volume", "ls", "--type", "nfs")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	// NAME TYPE SERVER SIZE ALLOCATED ATTACHED CREATED; SERVER is the NFS server.
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[0], "SERVER") ||
		!nfsRow(strings.Fields(lines[1])) {
		t.Fatalf("ls --type nfs:\n%s", table)
	}
	op.refused(t, []string{"volume", "rm", "shared"}, "give --type nbd or --type nfs")
	op.must(t, "volume", "rm", "shared", "blk", "--type", "nbd")
}

// nfsRow is ls's row of the nfs volume "shared": a server, no size,
// allocation or attachment.
func nfsRow(f []string) bool {
	return len(f) >= 6 && f[0] == "shared" && f[1] == "nfs" && f[2] != "-" && strings.Join(f[3:6], " ") == "- - -"
}

func testOpRemoveNFS(t *testing.T, op operator, srv *node.NFSServer) {
	dir := filepath.Join(srv.NoSquash, "shared")
	mustWrite(t, filepath.Join(dir, "sub", "file"), "data")
	op.refused(t, []string{"volume", "rm", "shared"}, `not removing nfs volume "shared"`, "--force")
	mustExist(t, filepath.Join(dir, "sub", "file"))
	if out := op.must(t, "volume", "rm", "--force", "shared"); out != "shared\n" {
		t.Fatalf("rm printed %q", out)
	}
	mustBeGone(t, dir)
	op.refused(t, []string{"volume", "inspect", "shared"}, `no volume "shared"`, "127.0.0.1:"+srv.NoSquash)
}

func testOpRootSquash(t *testing.T, op operator, srv *node.NFSServer) {
	squashed := append([]string(nil), op.env...)
	squashed = append(squashed, "NETVOL_NFS=127.0.0.1:"+srv.Squashed) // the last one wins
	sq := operator{bin: op.bin, env: squashed}
	sq.refused(t, []string{"volume", "create", "owned", "--type", "nfs", "-o", "uid=1000"}, "root_squash")
	mustBeGone(t, filepath.Join(srv.Squashed, "owned"))
}

func testOpDoctor(t *testing.T, op operator) {
	out, _, _ := op.run(t, "doctor", "--docker-host", "unix:///nonexistent/docker.sock", "--socket", "/nonexistent/netvol.sock")
	t.Logf("netvol doctor:\n%s", out)
	for _, s := range []string{"OK    nfs server", "OK    storage daemon", "OK    api token", "OK    nbd address", "OK    clock"} {
		if !strings.Contains(out, s) {
			t.Errorf("doctor does not say %q:\n%s", s, out)
		}
	}
}
