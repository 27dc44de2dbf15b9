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
)

// TestSnapshotsThroughHostDocker: the sequence through the real
// dockerd on this host (userspace attach). A container writes A and
// fsyncs; a snapshot is taken while it runs; it writes B on the same
// device, without an error; a clone of the volume in use and a clone of
// the snapshot (-o from-snapshot) read B and A; docker volume inspect
// lists the snapshot; the volume is rolled back once detached; removing it
// is refused while clones depend on it and takes its snapshots along;
// qemu-img check is clean on every image.
func TestSnapshotsThroughHostDocker(t *testing.T) {
	t.Parallel()
	node.LockPluginSocket(t)
	requireUserspaceAttach(t)
	docker := node.StartHostDocker(t)
	docker.ImportBusybox(t)
	srv := node.StartNetvolServer(t)
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

	d.run("volume", "create", "-d", "netvol", "-o", "size=64M", "db")
	d.run("run", "-d", "--name", "writer", "--network", "none", "-v", "db:/v", node.BusyboxImage, "sh", "-c",
		"echo A > /v/f && sync && echo SYNCED && exec sleep 3600")
	waitLog(t, d, "writer", "SYNCED")
	step("a container wrote A and synced")

	if out := op.must(t, "volume", "snapshot", "create", "db", "s1"); out != "db@s1\n" {
		t.Fatalf("snapshot create printed %q", out)
	}
	step("snapshot s1 taken while the container runs")
	if out := d.run("exec", "writer", "sh", "-c", "echo B > /v/f && sync && cat /v/f"); out != "B\n" {
		t.Fatalf("the writer after the snapshot: %q", out)
	}
	d.run("volume", "create", "-d", "netvol", "-o", "from=db", "live")
	d.run("volume", "create", "-d", "netvol", "-o", "from=db", "-o", "from-snapshot=s1", "old")
	step("B written on the same device; cloned the volume in use and s1")

	for vol, want := range map[string]string{"live": "B\n", "old": "A\n"} {
		if out := d.run("run", "--rm", "--network", "none", "-v", vol+":/v", node.BusyboxImage, "cat", "/v/f"); out != want {
			t.Fatalf("clone %s reads %q, want %q", vol, out, want)
		}
	}
	if out := d.run("exec", "writer", "cat", "/v/f"); out != "B\n" {
		t.Fatalf("the writer after the clones: %q", out)
	}
	step("each clone read what it must, in a container")

	var inspect []struct{ Status map[string]string }
	if err := json.Unmarshal([]byte(d.run("volume", "inspect", "db")), &inspect); err != nil || len(inspect) != 1 ||
		!strings.HasPrefix(inspect[0].Status["snapshots"], "s1 (") {
		t.Fatalf("docker volume inspect db: %v %+v", err, inspect)
	}
	if out, errOut, err := op.run(t, "volume", "rollback", "db", "s1"); err == nil {
		t.Fatalf("rollback of a mounted volume succeeded: %s", out)
	} else if !strings.Contains(errOut, "host-a") {
		t.Fatalf("rollback refusal does not name the node: %s", errOut)
	}
	d.run("rm", "-f", "writer")
	op.must(t, "volume", "rollback", "db", "s1")
	if out := d.run("run", "--rm", "--network", "none", "-v", "db:/v", node.BusyboxImage, "cat", "/v/f"); out != "A\n" {
		t.Fatalf("db rolled back to s1 reads %q", out)
	}
	step("inspect lists s1; rolled back once detached")

	// db's image and s1's layer; the clones' images and the hidden layer
	// of "live" (db as it was when cloned).
	if n := checkImagesClean(t, srv); n != 5 {
		t.Fatalf("%d images, want 5", n)
	}
	step("qemu-img check clean on every image")
	if out, err := docker.Docker(ctx, "volume", "rm", "db"); err == nil || !strings.Contains(out, "old") {
		t.Fatalf("docker volume rm of a volume with clones: %v %q", err, out)
	}
	op.refused(t, []string{"volume", "snapshot", "rm", "db", "s1"}, `"old"`)
	d.run("volume", "rm", "old", "live")
	op.must(t, "volume", "snapshot", "create", "db", "s2")
	d.run("volume", "rm", "db")
	assertNoAttachmentLeft(t, state)
	files, _ := filepath.Glob(filepath.Join(srv.DataDir, "volumes", "*"))
	if len(files) != 0 {
		t.Fatalf("files left after removing the volumes and their snapshots: %v", files)
	}
	step("removal refused while clones depend on it; then everything went")
}

// checkImagesClean stops the storage daemon (it closes its images), runs
// qemu-img check on every image, and starts the daemon again. It returns
// how many images there were.
func checkImagesClean(t *testing.T, srv *node.NetvolServer) int {
	t.Helper()
	srv.Daemon.Stop()
	files, _ := filepath.Glob(filepath.Join(srv.DataDir, "volumes", "*.qcow2"))
	for _, f := range files {
		if out, err := exec.Command("qemu-img", "check", f).CombinedOutput(); err != nil {
			t.Errorf("qemu-img check %s: %v\n%s", filepath.Base(f), err, out)
		}
	}
	srv.Restart(t)
	return len(files)
}
