//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/e2e/node"
	"github.com/netvol/netvol/internal/optest"
	"github.com/netvol/netvol/internal/s3test"
)

// TestBackupsThroughHostDocker: backups to a real S3 server (versitygw)
// of a volume a container keeps writing, through the real dockerd on this
// host (userspace attach). A full backup and an incremental one are taken
// while the container writes and syncs; the incremental stores a fraction
// of the full one; verify reads every chunk back; -o from-backup restores
// the first through Docker, and a container reads what the writer had
// synced before it; a second storage daemon with its own data directory
// restores the second (netvol volume restore) and e2fsck -fn finds its
// file system clean. The daemon's log never shows the S3 secret.
func TestBackupsThroughHostDocker(t *testing.T) {
	t.Parallel()
	node.LockPluginSocket(t)
	requireUserspaceAttach(t)
	s3 := s3test.Start(t, "e2e")
	creds := s3.CredentialsFile(t)
	docker := node.StartHostDocker(t)
	docker.ImportBusybox(t)
	target := []string{"--backup-target", "s3://e2e/netvol", "--s3-endpoint", s3.Endpoint}
	env := []string{"AWS_SHARED_CREDENTIALS_FILE=" + creds, "AWS_REGION=" + s3test.Region}
	srv := node.StartNetvolServerEnv(t, env, target...)
	state := t.TempDir()
	cleanupAttachments(t, state)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	plugin := startHostPlugin(t, state, "host-a", "--server", srv.URL(""), "--token-file", srv.TokenFile, "--attach", "userspace")
	d := &dockerCLI{t: t, ctx: ctx, docker: docker, logs: []*node.Daemon{plugin, srv.Daemon}}
	op := operator{bin: node.NetvolBinary(t), env: append(os.Environ(),
		fmt.Sprintf("NETVOL_SERVER=127.0.0.1:%d", srv.APIPort), "NETVOL_TOKEN_FILE="+srv.TokenFile)}
	t.Cleanup(func() { _, _ = docker.Docker(context.Background(), "rm", "-f", "writer") })
	step := stepTimer(t)

	d.run("volume", "create", "-d", "netvol", "-o", "size=256M", "db")
	// The writer: 64 KiB files of random data, each synced, numbered, ten
	// a second, for as long as the test runs.
	d.run("run", "-d", "--name", "writer", "--network", "none", "-v", "db:/v", node.BusyboxImage, "sh", "-c",
		"dd if=/dev/urandom of=/v/base bs=1M count=16 2>/dev/null && sync && echo SYNCED && "+
			"i=0; while true; do dd if=/dev/urandom of=/v/f$i bs=64k count=1 2>/dev/null; sync; i=$((i+1)); usleep 100000; done")
	waitLog(t, d, "writer", "SYNCED")
	step("a container wrote 16 MiB and keeps writing")

	full := strings.TrimSpace(op.must(t, "volume", "backup", "create", "db"))
	time.Sleep(2 * time.Second) // more files
	inc := strings.TrimSpace(op.must(t, "volume", "backup", "create", "db"))
	step("a full and an incremental backup taken while it writes")
	rows := optest.TableRows(op.must(t, "volume", "backup", "ls", "db"))
	if len(rows) != 3 || rows[1][0] != full || rows[2][0] != inc || rows[2][6] != full {
		t.Fatalf("backup ls: %q", rows)
	}
	var list []struct {
		ID          string `json:"id"`
		StoredBytes int64  `json:"stored_bytes"`
	}
	if err := json.Unmarshal([]byte(op.must(t, "volume", "backup", "ls", "db", "--json")), &list); err != nil || len(list) != 2 {
		t.Fatalf("backup ls --json: %v %+v", err, list)
	}
	fullStored, incStored := list[0].StoredBytes, list[1].StoredBytes
	if fullStored < 16<<20 || incStored > fullStored/4 {
		t.Fatalf("full backup stored %d bytes, incremental %d: want 16 MiB or more, and a fraction", fullStored, incStored)
	}
	if out := op.must(t, "volume", "backup", "verify", inc); !strings.Contains(out, "every checksum matches") {
		t.Fatalf("verify: %q", out)
	}
	step(fmt.Sprintf("ls, verify; stored %d then %d bytes", fullStored, incStored))

	d.run("volume", "create", "-d", "netvol", "-o", "from-backup="+full, "restored")
	sum := d.run("run", "--rm", "--network", "none", "-v", "restored:/v", node.BusyboxImage, "sh", "-c", "md5sum /v/base && ls /v | wc -l")
	orig := d.run("exec", "writer", "md5sum", "/v/base")
	if !strings.HasPrefix(sum, orig) {
		t.Fatalf("the restored volume's base file: %q, the writer's: %q", sum, orig)
	}
	step("-o from-backup restored the full backup; a container reads it")

	other := node.StartNetvolServerEnv(t, env, target...)
	opB := operator{bin: node.NetvolBinary(t), env: append(os.Environ(),
		fmt.Sprintf("NETVOL_SERVER=127.0.0.1:%d", other.APIPort), "NETVOL_TOKEN_FILE="+other.TokenFile)}
	opB.must(t, "volume", "restore", inc, "moved")
	other.Daemon.Stop()
	raw := filepath.Join(t.TempDir(), "moved.raw")
	mustExec(t, "qemu-img", "convert", "-O", "raw", filepath.Join(other.DataDir, "volumes", "moved.qcow2"), raw)
	if out, err := exec.Command("e2fsck", "-fn", raw).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn of the volume restored on another daemon: %v\n%s", err, out)
	}
	step("restored on a second daemon; e2fsck -fn clean")

	d.run("rm", "-f", "writer")
	d.run("volume", "rm", "restored", "db")
	op.must(t, "volume", "backup", "rm", full)
	op.must(t, "volume", "backup", "rm", inc)
	for _, log := range []string{srv.Daemon.LogPath, other.Daemon.LogPath} {
		data, _ := os.ReadFile(log)
		if strings.Contains(string(data), s3test.SecretKey) {
			t.Fatalf("the storage daemon's log %s shows the S3 secret", log)
		}
	}
	assertNoAttachmentLeft(t, state)
	step("removed; no secret in the logs")
}

func mustExec(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
