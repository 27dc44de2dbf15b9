//go:build e2e

package node

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// StartSwarm makes a Docker Swarm of nodes that run dockerd (StartDocker)
// and share a PrivateLink: the first initialises it and is its manager
// (and a worker too), the others join it as workers over the link. Node
// names are their host names, so `--constraint node.hostname==NAME` and
// `docker node update NAME` work. It returns once every node is Ready.
func StartSwarm(t testing.TB, manager *Node, workers ...*Node) {
	t.Helper()
	start := time.Now()
	for _, n := range append([]*Node{manager}, workers...) {
		if n.PrivateAddr() == "" {
			t.Fatalf("StartSwarm: node %s has no PrivateLink (Options.Private)", n.Name())
		}
	}
	manager.MustRun(t, "docker swarm init --advertise-addr "+manager.PrivateAddr()+" >/dev/null")
	token := strings.TrimSpace(manager.MustRun(t, "docker swarm join-token -q worker"))
	for _, w := range workers {
		w.MustRun(t, fmt.Sprintf("docker swarm join --advertise-addr %s --token %s %s:2377 >/dev/null",
			w.PrivateAddr(), token, manager.PrivateAddr()))
	}
	manager.MustRun(t, fmt.Sprintf(`i=0
until [ "$(docker node ls --format '{{.Status}}' | grep -c Ready)" = %d ]; do
	i=$((i+1)); [ $i -gt 300 ] && { docker node ls >&2; exit 1; }; sleep 0.2
done`, 1+len(workers)))
	t.Logf("swarm of %d node(s) ready in %s", 1+len(workers), time.Since(start).Round(100*time.Millisecond))
}
