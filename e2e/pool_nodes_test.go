//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netvol/netvol/e2e/node"
)

// TestPoolAcrossNodes: a container's block volume on the second of three
// storage servers follows it from one node to the other, through the
// kernel's NBD client; the other servers hold nothing of it.
func TestPoolAcrossNodes(t *testing.T) {
	t.Parallel()
	node.RequireTools(t, "mkfs.ext4")
	var urls, tokens []string
	var servers []*node.NetvolServer
	for range 3 {
		s := node.StartNetvolServer(t)
		servers = append(servers, s)
		urls = append(urls, s.URL(node.HostAddr))
		tokens = append(tokens, s.Token)
	}
	args := []string{"--server", strings.Join(urls, ","), "--token", strings.Join(tokens, ",")}
	serverB := strings.TrimPrefix(urls[1], "http://")
	bin := node.NetvolBinary(t)
	nodes := node.StartAll(t, node.Options{Name: "q1", MemoryMiB: 1536}, node.Options{Name: "q2", MemoryMiB: 1536})
	n1, n2 := nodes[0], nodes[1]
	done := make(chan struct{})
	go func() { defer close(done); n2.StartDocker(t); n2.StartPlugin(t, bin, args...) }()
	n1.StartDocker(t)
	n1.StartPlugin(t, bin, args...)
	<-done
	defer func() {
		if t.Failed() {
			t.Logf("q1 plugin log:\n%s\nq2 plugin log:\n%s", n1.PluginLogTail(t), n2.PluginLogTail(t))
		}
	}()

	n1.MustRun(t, "docker volume create -d netvol -o size=64M -o server="+serverB+" follow")
	n1.MustRun(t, dockerRun("follow", "echo from-q1 > /v/f && sync"))
	if got := n2.MustRun(t, dockerRun("follow", "cat /v/f && echo from-q2 >> /v/f && sync")); got != "from-q1\n" {
		t.Fatalf("q2 read %q", got)
	}
	if got := n1.MustRun(t, dockerRun("follow", "cat /v/f")); got != "from-q1\nfrom-q2\n" {
		t.Fatalf("q1 read back %q", got)
	}
	if got := n2.MustRun(t, "docker volume inspect -f '{{.Status.server}}' follow"); strings.TrimSpace(got) != serverB {
		t.Fatalf("q2 sees the volume on %q, want %s", got, serverB)
	}
	for i, s := range servers {
		_, err := os.Stat(filepath.Join(s.DataDir, "volumes", "follow.qcow2"))
		if (err == nil) != (i == 1) {
			t.Errorf("server %d (%s): image of follow: %v", i, urls[i], err)
		}
	}
	n2.MustRun(t, "docker volume rm follow")
}
