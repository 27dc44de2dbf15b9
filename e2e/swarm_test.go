//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netvol/netvol/e2e/node"
)

// TestSwarm runs netvol under Docker Swarm on two nodes, s1 (manager and
// worker) and s2 (worker), joined by a private link; the storage daemon and
// nfs-ganesha run on the host. The plugin is the managed plugin on each
// node (Swarm's scheduler sees only those: a plain `netvol plugin` is
// "missing" until dockerd has used it), and its API token reaches the
// node as docs/swarm.md says: a Swarm secret that a global job copies to
// each host. Subtests, in order:
//
//   - Stack: a stack with an nbd and an nfs volume is deployed, updated to
//     a new image tag and removed; its volumes survive `docker stack rm` and
//     the next deploy finds their data.
//   - Drain: a service made with `docker service create --mount
//     type=volume,...,volume-driver=netvol` appends and fsyncs numbered
//     lines; its node is drained and the task comes up on the other node
//     with every line.
//   - NodeFreeze: the node running that task freezes (to the swarm and the
//     storage daemon it is dead); once its lease lapses the new task on the
//     survivor has every fsynced line; when the frozen node comes back,
//     none of its writes reaches the volume (its task still runs and
//     writes: the old export is refused, the plugin releases the device).
//   - NodeCrash: the task moves back to the worker, whose VM is killed;
//     the survivor's new task has every fsynced line; the killed node
//     boots again with its disk (dockerd, the enabled plugin with its
//     records of the mount, its swarm membership) and disturbs nothing.
//     The volume's log is checked line by line against every task's notes.
//
// Each logs its time to recover; docs/swarm.md quotes them.
func TestSwarm(t *testing.T) {
	t.Parallel()
	node.RequireTools(t, "mkfs.ext4")
	srv := node.StartNetvolServer(t)
	nfs := node.StartNFSServer(t)
	link := node.NewPrivateLink(t)
	nodes := node.StartAll(t,
		node.Options{Name: "s1", MemoryMiB: 1536, Private: link.End(0), DockerOnDisk: true, DiskMiB: 768},
		node.Options{Name: "s2", MemoryMiB: 1536, Private: link.End(1), DockerOnDisk: true, DiskMiB: 768})
	s1, s2 := nodes[0], nodes[1]
	onBoth(nodes, func(n *node.Node) { n.StartDocker(t) })
	node.StartSwarm(t, s1, s2)
	diag := func(t *testing.T) {
		t.Cleanup(func() {
			if !t.Failed() {
				return
			}
			for _, n := range nodes {
				t.Logf("%s: tasks, plugin log, dockerd log, kernel:\n%s", n.Name(), tail(n,
					"docker service ps --no-trunc --format '{{.Name}} {{.Node}} {{.CurrentState}} {{.Error}}' $(docker service ls -q) 2>&1 | tail -n 12; "+
						"grep plugin= /var/log/dockerd.log | tail -n 25; grep -v plugin= /var/log/dockerd.log | grep -iE 'level=(error|warn)' | grep -v 'kernel parameter' | tail -n 10; dmesg | tail -n 10"))
			}
			t.Logf("server log:\n%s", srv.LogTail(20))
		})
	}
	diag(t)

	// The token as a Swarm secret, copied by a global job to every host's
	// /var/lib/netvol, which the managed plugin sees at the same path.
	s1.MustRun(t, "echo "+srv.Token+" | docker secret create netvol-token - >/dev/null")
	s1.MustRun(t, "docker service create --quiet --name netvol-token --mode global-job --no-resolve-image "+
		"--secret source=netvol-token,mode=0400 --mount type=bind,source=/var/lib/netvol,target=/out "+
		node.BusyboxImage+" cp /run/secrets/netvol-token /out/token >/dev/null")
	dir := node.PluginDir(t)
	settings := fmt.Sprintf("NETVOL_SERVER=%s NETVOL_TOKEN_FILE=/var/lib/netvol/token NETVOL_NFS=%s:%s NETVOL_NFS_PORT=%d NETVOL_NFS_MOUNT_PORT=%d",
		srv.URL(node.HostAddr), node.HostAddr, nfs.NoSquash, nfs.Port, nfs.MountPort)
	onBoth(nodes, func(n *node.Node) {
		if got := n.MustRun(t, "stat -c '%a %s' /var/lib/netvol/token"); got != fmt.Sprintf("400 %d\n", len(srv.Token)+1) {
			t.Errorf("%s: the token the global job copied: %q", n.Name(), got)
		}
		n.MustRun(t, "modprobe nbd nbds_max=16 && modprobe nfsv4 && docker plugin create netvol "+dir+" >/dev/null && "+
			"docker plugin set netvol "+settings+" && docker plugin enable netvol >/dev/null")
	})
	if t.Failed() {
		t.FailNow()
	}
	for _, n := range nodes {
		writeFile(t, filepath.Join(n.HostShare(), "writer.sh"), swarmWriter)
		writeFile(t, filepath.Join(n.HostShare(), "stack.sh"), stackTask)
	}

	t.Run("Stack", func(t *testing.T) { diag(t); testSwarmStack(t, s1, s2, nfs) })
	t.Run("Drain", func(t *testing.T) { diag(t); testSwarmDrain(t, s1, s2) })
	t.Run("NodeFreeze", func(t *testing.T) { diag(t); testSwarmNodeFreeze(t, s1, s2) })
	t.Run("NodeCrash", func(t *testing.T) { diag(t); testSwarmNodeCrash(t, s1, s2) })
}

// onBoth runs fn on each node at once and waits. fn may fail the test
// (t.Fatal from its goroutine ends that goroutine only).
func onBoth(nodes []*node.Node, fn func(n *node.Node)) {
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() { fn(n) })
	}
	wg.Wait()
}

// stackTask is the command of both stack services: it appends "<round>
// <host>" to /data/log, fsyncs it, copies the log to the node's share as
// <service>-<round> and stays up until stopped.
const stackTask = `trap 'exit 0' TERM
svc=$1 round=$2 h=$(hostname)
echo "$round $h" >> /data/log && sync /data/log && cp /data/log /share/$svc-$round.tmp && mv /share/$svc-$round.tmp /share/$svc-$round
while :; do sleep 0.2; done
`

// stackFile is the stack's compose file: db on a block volume (one
// writer: stop-first updates), web on every node with an nfs volume. The
// tasks use the host's network: an overlay network needs kernel modules
// that the nodes' dockerd cannot load by itself (they do not reach the
// kernel's module loader), and the volumes do not care.
func stackFile(dbTag, round string) string {
	return `version: "3.8"
services:
  db:
    image: busybox:` + dbTag + `
    hostname: "{{.Node.Hostname}}"
    command: ["sh", "/share/stack.sh", "db", "` + round + `"]
    volumes: ["dbdata:/data", "/run/e2e:/share"]
    networks: [hostnet]
    deploy:
      replicas: 1
      update_config: {order: stop-first}
      restart_policy: {delay: 1s}
  web:
    image: ` + node.BusyboxImage + `
    hostname: "{{.Node.Hostname}}"
    command: ["sh", "/share/stack.sh", "web", "` + round + `"]
    volumes: ["shared:/data", "/run/e2e:/share"]
    networks: [hostnet]
    deploy:
      mode: global
      restart_policy: {delay: 1s}
networks:
  hostnet: {external: true, name: host}
volumes:
  dbdata:
    driver: netvol
    driver_opts: {type: nbd, size: 1G}
  shared:
    driver: netvol
    driver_opts: {type: nfs}
`
}

func testSwarmStack(t *testing.T, s1, s2 *node.Node, nfs *node.NFSServer) {
	nodes := []*node.Node{s1, s2}
	// busybox:v2 is the update's "new image".
	onBoth(nodes, func(n *node.Node) { n.MustRun(t, "docker tag "+node.BusyboxImage+" busybox:v2") })
	deploy := func(tag, round string) time.Duration {
		t.Helper()
		writeFile(t, filepath.Join(s1.HostShare(), "stack.yml"), stackFile(tag, round))
		start := time.Now()
		s1.MustRun(t, "docker stack deploy --resolve-image never -c "+node.GuestShare+"/stack.yml app >/dev/null")
		// db runs on one node, web on both: wait for their notes.
		db := waitShareFile(t, nodes, "db-"+round)
		took := time.Since(start).Round(100 * time.Millisecond)
		for _, n := range nodes {
			waitShareFile(t, []*node.Node{n}, "web-"+round)
		}
		t.Logf("deploy %s (busybox:%s): db task wrote and fsynced its line %s after the deploy; db log:\n%s", round, tag, took, db)
		return took
	}

	deploy("local", "r1")
	// Update: a new image tag for db; the old task stops first, the new one
	// mounts the volume and finds the first round's line.
	took := deploy("v2", "r2")
	if got := s1.MustRun(t, "docker service inspect -f '{{.Spec.TaskTemplate.ContainerSpec.Image}}' app_db"); got != "busybox:v2\n" {
		t.Fatalf("app_db's image after the update: %q", got)
	}
	checkRounds(t, nodes, "db-r2", "r1", "r2")
	t.Logf("TIME update (stop-first, new image tag): %s", took)

	// Remove: the services go, the volumes stay.
	start := time.Now()
	s1.MustRun(t, "docker stack rm app >/dev/null")
	onBoth(nodes, func(n *node.Node) {
		n.MustRun(t, `i=0; while [ -n "$(docker ps -q)" ]; do i=$((i+1)); [ $i -gt 600 ] && { docker ps >&2; exit 1; }; sleep 0.2; done`)
	})
	t.Logf("stack rm: every task gone in %s", time.Since(start).Round(100*time.Millisecond))
	for _, n := range nodes {
		if got := n.MustRun(t, "docker volume ls -q | sort | tr '\\n' ' '"); !strings.Contains(got, "app_dbdata") || !strings.Contains(got, "app_shared") {
			t.Fatalf("%s: volumes after stack rm: %q", n.Name(), got)
		}
	}
	if _, err := os.Stat(filepath.Join(nfs.NoSquash, "app_shared")); err != nil {
		t.Fatalf("the nfs volume's directory after stack rm: %v", err)
	}
	// The next deploy reuses them.
	deploy("local", "r3")
	checkRounds(t, nodes, "db-r3", "r1", "r2", "r3")
	b, err := os.ReadFile(filepath.Join(nfs.NoSquash, "app_shared", "log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"r1 s1", "r1 s2", "r3 s1", "r3 s2"} {
		if !strings.Contains(string(b), want+"\n") {
			t.Fatalf("the nfs volume's log lacks %q:\n%s", want, b)
		}
	}
	s1.MustRun(t, "docker stack rm app >/dev/null")
	onBoth(nodes, func(n *node.Node) {
		n.MustRun(t, `i=0; while [ -n "$(docker ps -q)" ]; do i=$((i+1)); [ $i -gt 600 ] && { docker ps >&2; exit 1; }; sleep 0.2; done`)
	})
}

// checkRounds reads the db log a task left in a node's share as name and
// checks it holds one line per round, in order.
func checkRounds(t *testing.T, nodes []*node.Node, name string, rounds ...string) {
	t.Helper()
	log := waitShareFile(t, nodes, name)
	lines := strings.Split(strings.TrimSpace(log), "\n")
	if len(lines) != len(rounds) {
		t.Fatalf("%s: %d lines, want %d (%v):\n%s", name, len(lines), len(rounds), rounds, log)
	}
	for i, r := range rounds {
		if !strings.HasPrefix(lines[i], r+" ") {
			t.Fatalf("%s: line %d is %q, want round %s:\n%s", name, i+1, lines[i], r, log)
		}
	}
}

// waitShareFile waits up to three minutes for a file in one of the nodes'
// shares and returns its content.
func waitShareFile(t *testing.T, nodes []*node.Node, name string) string {
	t.Helper()
	for end := time.Now().Add(3 * time.Minute); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		for _, n := range nodes {
			if b, err := os.ReadFile(filepath.Join(n.HostShare(), name)); err == nil {
				return string(b)
			}
		}
	}
	t.Fatalf("no node wrote %s within three minutes", name)
	return ""
}

// swarmWriter is the command of the service "app": it counts the lines
// of /data/log and goes on from there, appending "<host>-<N>" and
// fsyncing it, then noting "ok N" (or "fail N") in the node's share, five
// times a second. It notes "start N" first: the lines it found.
const swarmWriter = `trap 'exit 0' TERM
h=$(hostname)
n=$(cat /data/log 2>/dev/null | wc -l)
echo "start $n" >> /share/notes
while :; do
	n=$((n+1))
	if echo "$h-$n" >> /data/log && sync /data/log; then echo "ok $n"; else echo "fail $n"; fi >> /share/notes
	sleep 0.2
done
`

// notes is what the writer tasks of one node noted, in order.
type notes struct {
	lines []string
}

func readNotes(t *testing.T, n *node.Node) notes {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.HostShare(), "notes"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var ns notes
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if _, _, ok := cutNote(sc.Text()); ok {
			ns.lines = append(ns.lines, sc.Text())
		}
	}
	return ns
}

func cutNote(line string) (verb string, n int, ok bool) {
	verb, num, ok := strings.Cut(line, " ")
	if !ok {
		return "", 0, false
	}
	n, err := strconv.Atoi(num)
	return verb, n, err == nil
}

// since returns the notes after the first k.
func (ns notes) since(k int) notes { return notes{lines: ns.lines[min(k, len(ns.lines)):]} }

// all returns the numbers noted with verb.
func (ns notes) all(verb string) []int {
	var out []int
	for _, l := range ns.lines {
		if v, n, _ := cutNote(l); v == verb {
			out = append(out, n)
		}
	}
	return out
}

// last returns the last number noted with verb, or -1.
func (ns notes) last(verb string) int {
	a := ns.all(verb)
	if len(a) == 0 {
		return -1
	}
	return a[len(a)-1]
}

// waitNotes polls n's notes from index k on until cond holds.
func waitNotes(t *testing.T, n *node.Node, k int, what string, timeout time.Duration, cond func(notes) bool) notes {
	t.Helper()
	end := time.Now().Add(timeout)
	for {
		ns := readNotes(t, n).since(k)
		if cond(ns) {
			return ns
		}
		if time.Now().After(end) {
			t.Fatalf("%s: no %s within %s; its notes since %d: %v", n.Name(), what, timeout, k, ns.lines)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// acked reports whether ns holds at least count "ok" notes after a start.
func acked(count int) func(notes) bool {
	return func(ns notes) bool { return len(ns.all("start")) > 0 && len(ns.all("ok")) >= count }
}

// appService is the writer service, made as docs/swarm.md shows.
const appService = `docker service create --quiet --detach --name app --no-resolve-image --hostname '{{.Node.Hostname}}' \
	--restart-delay 1s --stop-grace-period 5s \
	--mount type=volume,source=db,target=/data,volume-driver=netvol,volume-opt=size=1G \
	--mount type=bind,source=/run/e2e,target=/share ` + node.BusyboxImage + ` sh /share/writer.sh >/dev/null`

func testSwarmDrain(t *testing.T, s1, s2 *node.Node) {
	// The first task goes to s1: s2 is drained while the service is made.
	s1.MustRun(t, "docker node update --availability drain s2 >/dev/null && "+appService)
	first := waitNotes(t, s1, 0, "acknowledged lines", 3*time.Minute, acked(5))
	s1.MustRun(t, "docker node update --availability active s2 >/dev/null")
	if st := first.all("start"); st[0] != 0 {
		t.Fatalf("the first task found %d lines on a new volume", st[0])
	}

	start := time.Now()
	s1.MustRun(t, "docker node update --availability drain s1 >/dev/null")
	moved := waitNotes(t, s2, 0, "task with acknowledged lines", 3*time.Minute, acked(1))
	took := time.Since(start).Round(100 * time.Millisecond)
	before := readNotes(t, s1)
	lastOK := before.last("ok")
	found := moved.all("start")[0]
	t.Logf("TIME drain: the task on s2 fsynced its first line %s after s1 was drained (s1 acknowledged %d lines, s2 found %d)", took, lastOK, found)
	if found < lastOK {
		t.Fatalf("the task on s2 found %d lines; s1 had %d fsynced", found, lastOK)
	}
	if f := before.all("fail"); len(f) > 0 {
		t.Fatalf("s1's writes failed during a drain: %v", f)
	}
	// The drained node let the volume go: no mount, no NBD device.
	if got := s1.MustRun(t, "grep -c 'propagated-mount/db ' /proc/mounts || true; for d in /sys/block/nbd*; do [ -e $d/pid ] && echo $d; done; true"); got != "0\n" {
		t.Fatalf("s1 after the drain: mounts and connected devices: %q", got)
	}
	s1.MustRun(t, "docker node update --availability active s1 >/dev/null")
}

func testSwarmNodeFreeze(t *testing.T, s1, s2 *node.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	waitNotes(t, s2, 0, "acknowledged lines", 2*time.Minute, acked(10))
	s1Before := len(readNotes(t, s1).lines)
	if err := s2.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	s2Frozen := readNotes(t, s2)
	lastOK := s2Frozen.last("ok")

	// Swarm sees s2 down, starts a new task on s1, whose mount waits for
	// s2's lease to lapse and takes the volume over.
	took := waitNotes(t, s1, s1Before, "new task with acknowledged lines", 3*time.Minute, acked(1))
	rec := time.Since(frozen).Round(100 * time.Millisecond)
	found := took.all("start")[0]
	t.Logf("TIME node freeze: the new task on s1 fsynced its first line %s after s2 froze (s2 acknowledged %d, s1 found %d)", rec, lastOK, found)
	if found < lastOK {
		t.Fatalf("the task on s1 found %d lines; s2 had %d fsynced", found, lastOK)
	}
	if found > lastOK+1 {
		t.Fatalf("the task on s1 found %d lines; s2 had at most %d written", found, lastOK+1)
	}
	holder := s1.MustRun(t, "docker volume inspect -f '{{.Status.lease}}' db")
	t.Logf("s1: lease of db: %s", strings.TrimSpace(holder))

	// s2 comes back: its task and its writer still run, its page cache
	// holds writes; the storage daemon refuses its old export, its plugin
	// learns the lease is lost, and Swarm stops the old task.
	if err := s2.Thaw(ctx); err != nil {
		t.Fatal(err)
	}
	thawed := time.Now()
	s2.MustRun(t, `i=0; until [ -z "$(docker ps -q)" ] && ! grep -q 'propagated-mount/db ' /proc/mounts; do
		i=$((i+1)); [ $i -gt 600 ] && { docker ps >&2; grep propagated-mount /proc/mounts >&2; exit 1; }; sleep 0.2; done`)
	t.Logf("s2 back: its old task stopped and the volume let go %s after it thawed", time.Since(thawed).Round(100*time.Millisecond))
	after := readNotes(t, s2).since(len(s2Frozen.lines))
	t.Logf("s2's writer after the thaw noted: %v", after.lines)
	if ok := after.all("ok"); len(ok) > 0 {
		t.Fatalf("s2 had writes acknowledged after s1 took the volume over: %v", ok)
	}
	t.Logf("s2's plugin after the thaw:\n%s", s2.MustRun(t, "grep plugin= /var/log/dockerd.log | grep -E 'lease|released|fenc' | tail -n 8 || true"))

	// The volume: s1's lines go on after s2's, and nothing s2 wrote after
	// the freeze is there (checked at the end of NodeCrash).
	waitNotes(t, s1, s1Before, "more acknowledged lines", time.Minute, acked(len(took.all("ok"))+5))
}

func testSwarmNodeCrash(t *testing.T, s1, s2 *node.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The task back to s2, the worker (the manager must survive).
	s2Before := len(readNotes(t, s2).lines)
	start := time.Now()
	s1.MustRun(t, "docker node update --availability drain s1 >/dev/null")
	waitNotes(t, s2, s2Before, "task with acknowledged lines", 3*time.Minute, acked(1))
	t.Logf("TIME drain (s1 to s2): %s", time.Since(start).Round(100*time.Millisecond))
	s1.MustRun(t, "docker node update --availability active s1 >/dev/null")
	waitNotes(t, s2, s2Before, "acknowledged lines", 2*time.Minute, acked(10))

	s1Before := len(readNotes(t, s1).lines)
	s2.Crash()
	crashed := time.Now()
	lastOK := readNotes(t, s2).last("ok")
	took := waitNotes(t, s1, s1Before, "new task with acknowledged lines", 3*time.Minute, acked(1))
	found := took.all("start")[0]
	t.Logf("TIME node crash: the new task on s1 fsynced its first line %s after s2 was killed (s2 acknowledged %d, s1 found %d)",
		time.Since(crashed).Round(100*time.Millisecond), lastOK, found)
	if found < lastOK || found > lastOK+1 {
		t.Fatalf("the task on s1 found %d lines; s2 had %d fsynced, at most one more written", found, lastOK)
	}

	// s2 comes back with its disk: dockerd, the plugin (enabled, with its
	// records of the volume it had mounted) and its swarm membership.
	if err := s2.Boot(ctx); err != nil {
		t.Fatal(err)
	}
	booted := time.Now()
	s2.StartDocker(t)
	s1.MustRun(t, `i=0; until docker node ls --format '{{.Hostname}} {{.Status}}' | grep -q '^s2 Ready'; do
		i=$((i+1)); [ $i -gt 600 ] && { docker node ls >&2; exit 1; }; sleep 0.2; done`)
	t.Logf("s2 back in the swarm %s after its boot", time.Since(booted).Round(100*time.Millisecond))
	s1Mid := len(readNotes(t, s1).lines)
	time.Sleep(5 * time.Second) // a few of the plugin's and Swarm's rounds
	if got := s2.MustRun(t, "docker ps -q; grep -c 'propagated-mount/db ' /proc/mounts || true; for d in /sys/block/nbd*; do [ -e $d/pid ] && echo $d; done; true"); got != "0\n" {
		t.Fatalf("s2 after its return: containers, mounts of db, connected devices: %q", got)
	}
	if f := readNotes(t, s1).since(s1Mid).all("fail"); len(f) > 0 {
		t.Fatalf("s1's writes failed after s2 came back: %v", f)
	}
	waitNotes(t, s1, s1Mid, "acknowledged lines after s2's return", time.Minute, func(ns notes) bool { return len(ns.all("ok")) >= 5 })
	back := s2.MustRun(t, "grep plugin= /var/log/dockerd.log | grep -E 'db|reconcil' | tail -n 5 || true")
	t.Logf("s2's plugin after its return:\n%s", back)
	if !strings.Contains(back, "releasing a mount nobody uses") {
		t.Fatalf("s2's plugin did not let go of its record of the mount the crash left")
	}

	s1.MustRun(t, "docker service rm app >/dev/null")
	s1.MustRun(t, `i=0; while [ -n "$(docker ps -q)" ]; do i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.2; done`)
	log := s1.MustRun(t, dockerRun("db", "cat /v/log"))
	checkWriterLog(t, log, readNotes(t, s1), readNotes(t, s2))
}

// checkWriterLog checks the writer's file against the nodes' notes: line
// i is "<host>-i"; every acknowledged line is there, written by the node
// that noted it; no line was acknowledged twice (two writers at once); and
// every line belongs to the task that held the volume then.
func checkWriterLog(t *testing.T, log string, byNode ...notes) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(log, "\n"), "\n")
	for i, l := range lines {
		if _, num, ok := strings.Cut(l, "-"); !ok || num != strconv.Itoa(i+1) {
			t.Fatalf("line %d of the volume's log is %q:\n%s", i+1, l, log)
		}
	}
	seen := map[int]string{}
	for i, ns := range byNode {
		host := fmt.Sprintf("s%d", i+1)
		for _, k := range ns.all("ok") {
			if other, dup := seen[k]; dup {
				t.Fatalf("line %d acknowledged to %s and %s: two writers", k, other, host)
			}
			seen[k] = host
			if k > len(lines) || lines[k-1] != fmt.Sprintf("%s-%d", host, k) {
				t.Fatalf("%s's acknowledged line %d is missing; the log holds %d lines:\n%s", host, k, len(lines), log)
			}
		}
	}
	// Each task that had a line acknowledged wrote every line from the
	// count it found to the next such task's: none written by a node after
	// it lost the volume (fenced) is there.
	type start struct {
		found int
		host  string
	}
	var starts []start
	for i, ns := range byNode {
		host := fmt.Sprintf("s%d", i+1)
		cur := -1
		for _, l := range ns.lines {
			switch v, n, _ := cutNote(l); v {
			case "start":
				cur = n
			case "ok":
				if cur >= 0 {
					starts = append(starts, start{cur, host})
					cur = -1
				}
			}
		}
	}
	slices.SortFunc(starts, func(a, b start) int { return a.found - b.found })
	for k, st := range starts {
		end := len(lines)
		if k+1 < len(starts) {
			end = starts[k+1].found
		}
		for i := st.found; i < end; i++ {
			if !strings.HasPrefix(lines[i], st.host+"-") {
				t.Fatalf("line %d is %q, in the lines of the task on %s that found %d lines (tasks by lines found: %v):\n%s",
					i+1, lines[i], st.host, st.found, starts, log)
			}
		}
	}
	t.Logf("the volume's log: %d lines, %d acknowledged, in order; tasks by the lines they found: %v", len(lines), len(seen), starts)
}

// writeFile writes a file for a node to read through its share.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
