//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netvol/netvol/e2e/node"
)

// TestPluginThroughHostDocker drives the plugin with a real dockerd on the
// host: create, inspect, ls and rm of both types, and bad input, as a user
// types them. Nothing is mounted (this kernel has neither NBD nor NFS).
func TestPluginThroughHostDocker(t *testing.T) {
	t.Parallel()
	node.LockPluginSocket(t)
	srv := node.StartNetvolServer(t)
	nfs := node.StartNFSServer(t)
	docker := node.StartHostDocker(t)
	state := t.TempDir()
	plugin := node.StartDaemon(t, filepath.Join(state, "plugin.log"), node.NetvolBinary(t), "plugin",
		"--socket", node.PluginSocket, "--state-dir", state, "--node", "host",
		"--server", srv.URL(""), "--token-file", srv.TokenFile,
		"--nfs", "127.0.0.1:"+nfs.NoSquash, "--nfs-port", fmt.Sprint(nfs.Port), "--nfs-mount-port", fmt.Sprint(nfs.MountPort))
	waitSocket(t, plugin, node.PluginSocket)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := func(args ...string) string {
		t.Helper()
		out, err := docker.Docker(ctx, args...)
		if err != nil {
			t.Fatalf("%v\nplugin log:\n%s", err, plugin.LogTail(20))
		}
		return out
	}
	fail := func(want string, args ...string) {
		t.Helper()
		out, err := docker.Docker(ctx, args...)
		if err == nil || !strings.Contains(out, want) {
			t.Fatalf("docker %v = %v, %q; want an error containing %q", args, err, out, want)
		}
	}

	run("volume", "create", "-d", "netvol", "-o", "type=nbd", "-o", "size=64M", "blk")
	run("volume", "create", "-d", "netvol", "-o", "type=nfs", "-o", "mode=0750", "-o", "uid=1234", "shared")
	if st, err := os.Stat(filepath.Join(nfs.NoSquash, "shared")); err != nil || st.Mode().Perm() != 0o750 {
		t.Fatalf("nfs volume directory: %v, %v", st, err)
	}
	assertOwner(t, filepath.Join(nfs.NoSquash, "shared"), 1234)

	var insp []struct {
		Name, Driver, Scope string
		Status              map[string]any
	}
	if err := json.Unmarshal([]byte(run("volume", "inspect", "blk")), &insp); err != nil || len(insp) != 1 {
		t.Fatalf("inspect: %v %+v", err, insp)
	}
	if s := insp[0]; s.Driver != "netvol" || s.Scope != "global" || s.Status["type"] != "nbd" || s.Status["size"] != fmt.Sprint(64<<20) {
		t.Fatalf("inspect blk = %+v", s)
	}
	ls := run("volume", "ls", "-q")
	for _, want := range []string{"blk", "shared"} {
		if !strings.Contains(ls, want) {
			t.Fatalf("volume ls lacks %s:\n%s", want, ls)
		}
	}

	fail("the accepted options are", "volume", "create", "-d", "netvol", "-o", "colour=red", "bad1")
	fail("want nfs or nbd", "volume", "create", "-d", "netvol", "-o", "type=iscsi", "bad2")
	fail("size", "volume", "create", "-d", "netvol", "-o", "size=12X", "bad3")
	fail("does not apply to type=nfs", "volume", "create", "-d", "netvol", "-o", "type=nfs", "-o", "size=1G", "bad4")
	fail("accepted", "volume", "create", "-d", "netvol", "-o", "type=nfs", "-o", "mount-opts=exec,suid", "bad5")
	if strings.Contains(run("volume", "ls", "-q"), "bad") {
		t.Fatal("a refused create left a volume")
	}

	// A volume made on the storage node by another host is found by name.
	apiCreate(t, srv, "fromelsewhere", "32M")
	if !strings.Contains(run("volume", "inspect", "fromelsewhere"), `"type": "nbd"`) {
		t.Fatal("a volume made elsewhere is not found")
	}
	run("volume", "rm", "blk", "shared", "fromelsewhere")
	if _, err := os.Stat(filepath.Join(nfs.NoSquash, "shared")); !os.IsNotExist(err) {
		t.Fatalf("nfs directory after rm: %v", err)
	}
	if ls := run("volume", "ls", "-q"); strings.TrimSpace(ls) != "" {
		t.Fatalf("volumes left after rm:\n%s", ls)
	}

	t.Run("ThousandVolumes", func(t *testing.T) { testThousandVolumes(t, srv, nfs, docker) })
	t.Run("StorageDaemonDown", func(t *testing.T) { testStorageDaemonDown(t, srv, docker) })
}

// testThousandVolumes measures `docker volume ls` with 1,000 volumes of
// each type (made behind the plugin's back, as other hosts would).
func testThousandVolumes(t *testing.T, srv *node.NetvolServer, nfs *node.NFSServer, docker *node.HostDocker) {
	const n = 1000
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		if err := os.Mkdir(filepath.Join(nfs.NoSquash, fmt.Sprintf("dir%04d", i)), 0o755); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			apiCreate(t, srv, fmt.Sprintf("blk%04d", i), "1M")
		})
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var times []time.Duration
	for range 5 {
		start := time.Now()
		out, err := docker.Docker(ctx, "volume", "ls", "-q")
		if err != nil {
			t.Fatal(err)
		}
		times = append(times, time.Since(start))
		if got := strings.Count(out, "\n"); got != 2*n {
			t.Fatalf("volume ls listed %d volumes, want %d", got, 2*n)
		}
	}
	t.Logf("docker volume ls with %d volumes: first %s, median of the next four %s (all %v)",
		2*n, times[0].Round(time.Millisecond), median(times[1:]).Round(time.Millisecond), times)
}

// testStorageDaemonDown: with the storage daemon stopped, ls answers from
// the cache, inspect says the backend is unreachable, and a create fails
// naming the server; after a restart all is well again.
func testStorageDaemonDown(t *testing.T, srv *node.NetvolServer, docker *node.HostDocker) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv.Stop()
	start := time.Now()
	out, err := docker.Docker(ctx, "volume", "ls", "-q")
	if err != nil || !strings.Contains(out, "blk0999") {
		t.Fatalf("volume ls with the daemon down: %v\n%.300s", err, out)
	}
	t.Logf("docker volume ls with the storage daemon down: %s", time.Since(start).Round(time.Millisecond))
	out, err = docker.Docker(ctx, "volume", "inspect", "blk0001")
	if err != nil || !strings.Contains(out, "unreachable") {
		t.Fatalf("inspect with the daemon down: %v\n%s", err, out)
	}
	out, err = docker.Docker(ctx, "volume", "create", "-d", "netvol", "-o", "type=nbd", "newvol")
	if err == nil || !strings.Contains(out, fmt.Sprintf("127.0.0.1:%d", srv.APIPort)) || !strings.Contains(out, "unavailable") {
		t.Fatalf("create with the daemon down: %v\n%s", err, out)
	}
	srv.Restart(t)
	if out, err := docker.Docker(ctx, "volume", "inspect", "blk0001"); err != nil || strings.Contains(out, "unreachable") {
		t.Fatalf("inspect after the restart: %v\n%s", err, out)
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// apiCreate makes a volume with the control API, as another host would.
func apiCreate(t *testing.T, srv *node.NetvolServer, name, size string) {
	t.Helper()
	body := fmt.Sprintf(`{"name":%q,"size":%q}`, name, size)
	req, _ := http.NewRequest(http.MethodPost, srv.URL("")+"/v1/volumes", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+srv.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("API create %s: %s", name, resp.Status)
	}
}

// waitSocket waits until a daemon's unix socket exists.
func waitSocket(t *testing.T, d *node.Daemon, path string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if st, err := os.Stat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear\n%s", path, d.LogTail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
