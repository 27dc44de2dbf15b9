//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/e2e/node"
)

// composeFile is a one-service project with a netvol block volume: the
// service appends its round to /data/log, fsyncs it and prints the log.
// The driver is the managed plugin's full name: docker-compose 1.x
// compares it with the driver dockerd names for an existing volume
// ("netvol:latest") and refuses the second up when the file says "netvol"
// (docs/swarm.md).
const composeFile = `version: "3.8"
services:
  app:
    image: ` + node.BusyboxImage + `
    network_mode: none
    environment: [ROUND]
    command: ["sh", "-c", "echo round-$$ROUND >> /data/log && sync /data/log && cat /data/log"]
    volumes: ["data:/data"]
volumes:
  data:
    driver: netvol:latest
    driver_opts: {type: nbd, size: 1G}
`

// TestCompose is a Compose project on one host with Debian's docker-compose
// as the client: up, down (the volume and its data stay), up again (the
// same volume, the earlier data), down -v (the volume goes, on the storage
// daemon too). The host's own dockerd runs the managed plugin, attaching
// block volumes in userspace (this kernel has no NBD driver).
func TestCompose(t *testing.T) {
	t.Parallel()
	requireUserspaceAttach(t)
	node.RequireTools(t, "docker-compose")
	srv := node.StartNetvolServer(t)
	docker := node.StartHostDocker(t)
	// The managed plugin runs in dockerd's network namespace.
	docker.ForwardLoopback(t, srv.APIPort, srv.NBDPort)
	docker.ImportBusybox(t)
	state := t.TempDir()
	cleanupAttachments(t, state)
	dir := hostPluginDir(t, state)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	d := &dockerCLI{t: t, ctx: ctx, docker: docker, logs: []*node.Daemon{docker.Daemon, srv.Daemon}}
	t.Cleanup(func() { _, _ = docker.Docker(context.Background(), "plugin", "disable", "-f", "netvol") })
	d.run("plugin", "create", "netvol", dir)
	d.run("plugin", "set", "netvol", "NETVOL_SERVER="+srv.URL(""), "NETVOL_TOKEN="+srv.Token, "NETVOL_ATTACH=userspace")
	d.run("plugin", "enable", "netvol")

	project := t.TempDir()
	if err := os.WriteFile(filepath.Join(project, "docker-compose.yml"), []byte(composeFile), 0o644); err != nil {
		t.Fatal(err)
	}
	compose := func(round string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, "docker-compose", append([]string{"-p", "demo", "--ansi", "never"}, args...)...)
		cmd.Dir = project
		cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+docker.Socket, "ROUND="+round)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("docker-compose %v: %v\n%s\ndockerd and plugin:\n%s", args, err, out, docker.LogTail(30))
		}
		return string(out)
	}
	up := func(round string) {
		t.Helper()
		start := time.Now()
		out := compose(round, "up", "--exit-code-from", "app")
		t.Logf("docker-compose up (round %s): %s", round, time.Since(start).Round(100*time.Millisecond))
		var want, got []string
		for r := 1; r <= int(round[0]-'0'); r++ {
			want = append(want, "round-"+itoa(r))
		}
		for _, l := range strings.Split(out, "\n") {
			if _, v, ok := strings.Cut(l, "| "); ok && strings.HasPrefix(v, "round-") {
				got = append(got, strings.TrimSpace(v))
			}
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("up %s: the service printed %v, want %v:\n%s", round, got, want, out)
		}
	}

	up("1")
	compose("1", "down")
	if got := d.run("volume", "inspect", "-f", "{{.Driver}} {{.Status.type}}", "demo_data"); got != "netvol:latest nbd\n" {
		t.Fatalf("the volume after down: %q", got)
	}
	up("2") // the same volume: round-1, then round-2
	compose("2", "down", "-v")
	// Only this test's driver: suites running beside it put plain plugins'
	// sockets in /run/docker/plugins, which every dockerd lists too.
	if got := d.run("volume", "ls", "-q", "--filter", "driver=netvol:latest"); strings.TrimSpace(got) != "" {
		t.Fatalf("volumes after down -v: %q", got)
	}
	if vols := apiVolumes(t, srv); len(vols) != 0 {
		t.Fatalf("the storage daemon still has %v after down -v", vols)
	}
	assertNoAttachmentLeft(t, state)
}

// apiVolumes lists the storage daemon's volumes by name.
func apiVolumes(t *testing.T, srv *node.NetvolServer) []string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, srv.URL("")+"/v1/volumes", nil)
	req.Header.Set("Authorization", "Bearer "+srv.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var vols []struct{ Name string }
	if err := json.NewDecoder(resp.Body).Decode(&vols); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("API list: %s, %v", resp.Status, err)
	}
	var names []string
	for _, v := range vols {
		names = append(names, v.Name)
	}
	return names
}
