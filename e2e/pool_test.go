//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netvol/netvol/e2e/node"
)

// poolEnv is three storage daemons on this host and two Docker "hosts":
// two dockerds, each with its own plugin (state, node name), both over the
// whole pool. Plugin B answers Docker as driver netvolb (its own socket),
// so that both run at once.
type poolEnv struct {
	t       *testing.T
	servers []*node.NetvolServer
	a, b    *dockerCLI
	pa, pb  *node.Daemon
	args    []string // the plugins' pool flags
}

const poolSocketB = "/run/docker/plugins/netvolb.sock"

// TestPool: one namespace of block volumes over three storage daemons,
// through the real dockerd and the userspace attach.
func TestPool(t *testing.T) {
	t.Parallel()
	node.LockPluginSocket(t)
	requireUserspaceAttach(t)
	p := startPool(t)
	t.Run("PlacementSpreads", p.testPlacementSpreads)
	t.Run("ConcurrentCreate", p.testConcurrentCreate)
	t.Run("ServerKilled", p.testServerKilled)
	t.Run("MoveKilledMidway", p.testMoveKilledMidway)
}

func startPool(t *testing.T) *poolEnv {
	p := &poolEnv{t: t}
	var urls, tokens []string
	for range 3 {
		s := node.StartNetvolServer(t, "--lease-ttl", "5s")
		p.servers = append(p.servers, s)
		urls = append(urls, s.URL(""))
		tokens = append(tokens, s.TokenFile)
	}
	p.args = []string{"--server", strings.Join(urls, ","), "--token-file", strings.Join(tokens, ","), "--attach", "userspace"}
	dA, dB := node.StartHostDocker(t), node.StartHostDocker(t)
	dA.ImportBusybox(t)
	dB.ImportBusybox(t)
	stateA, stateB := t.TempDir(), t.TempDir()
	cleanupAttachments(t, stateA, stateB)
	p.pa = startHostPlugin(t, stateA, "host-a", p.args...)
	p.pb = startPoolPlugin(t, stateB, "host-b", poolSocketB, p.args...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	t.Cleanup(cancel)
	logs := []*node.Daemon{p.pa, p.pb}
	for _, s := range p.servers {
		logs = append(logs, s.Daemon)
	}
	p.a = &dockerCLI{t: t, ctx: ctx, docker: dA, logs: logs}
	p.b = &dockerCLI{t: t, ctx: ctx, docker: dB, logs: logs}
	return p
}

func startPoolPlugin(t *testing.T, state, name, socket string, args ...string) *node.Daemon {
	t.Helper()
	argv := append([]string{node.NetvolBinary(t), "plugin", "--socket", socket, "--state-dir", state, "--node", name}, args...)
	d := node.StartDaemon(t, filepath.Join(state, "plugin.log"), argv...)
	for end := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			return d
		}
		if time.Now().After(end) {
			t.Fatalf("plugin %s did not listen on %s within a minute\n%s", name, socket, d.LogTail(30))
		}
	}
}

// server is the pool's name of server i (host:port).
func (p *poolEnv) server(i int) string { return strings.TrimPrefix(p.servers[i].URL(""), "http://") }

// holders lists the servers that hold a volume of name, asking each
// daemon's API.
func (p *poolEnv) holders(name string) []int {
	p.t.Helper()
	var out []int
	for i, s := range p.servers {
		req, _ := http.NewRequest(http.MethodGet, s.URL("")+"/v1/volumes/"+name, nil)
		req.Header.Set("Authorization", "Bearer "+s.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue // a server that is down holds nothing we can see
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			out = append(out, i)
		}
	}
	return out
}

// inspect is docker volume inspect's Status of name.
func inspectStatus(d *dockerCLI, name string) map[string]any {
	var vols []struct{ Status map[string]any }
	if err := json.Unmarshal([]byte(d.run("volume", "inspect", name)), &vols); err != nil || len(vols) != 1 {
		d.t.Fatalf("inspect %s: %v %+v", name, err, vols)
	}
	return vols[0].Status
}

// 30 volumes created through the two hosts spread over the three servers;
// each is on one server, and both hosts list and inspect every one there.
func (p *poolEnv) testPlacementSpreads(t *testing.T) {
	per := map[int]int{}
	for i := range 30 {
		name := fmt.Sprintf("sp%02d", i)
		if i%2 == 0 {
			p.a.run("volume", "create", "-d", "netvol", "-o", "size=64M", name)
		} else {
			p.b.run("volume", "create", "-d", "netvolb", "-o", "size=64M", name)
		}
		hs := p.holders(name)
		if len(hs) != 1 {
			t.Fatalf("%s is on servers %v", name, hs)
		}
		per[hs[0]]++
		if got := inspectStatus(p.a, name)["server"]; got != p.server(hs[0]) {
			t.Fatalf("inspect %s on host A: server %v, it is on %s", name, got, p.server(hs[0]))
		}
	}
	for i := range p.servers {
		if per[i] < 5 {
			t.Errorf("server %s got %d of 30 volumes: %v", p.server(i), per[i], per)
		}
	}
	t.Logf("placement of 30 volumes: %v", per)
	// Both dockerds find both plugins in /run/docker/plugins, so a dockerd
	// may list a name under each driver: count names.
	for _, d := range []*dockerCLI{p.a, p.b} {
		ls := d.run("volume", "ls", "-q")
		names := map[string]bool{}
		for _, n := range strings.Fields(ls) {
			if strings.HasPrefix(n, "sp") {
				names[n] = true
			}
		}
		if len(names) != 30 {
			t.Fatalf("docker volume ls lists %d of the 30:\n%s", len(names), ls)
		}
	}
	for i := range 30 {
		p.a.run("volume", "rm", fmt.Sprintf("sp%02d", i))
	}
}

// Both hosts create one name at the same moment: both calls succeed, one
// volume exists, and both hosts see it on the same server.
func (p *poolEnv) testConcurrentCreate(t *testing.T) {
	for i := range 5 {
		name := fmt.Sprintf("same%d", i)
		var wg sync.WaitGroup
		var errA, errB error
		wg.Go(func() {
			_, errA = p.a.docker.Docker(p.a.ctx, "volume", "create", "-d", "netvol", "-o", "size=64M", name)
		})
		wg.Go(func() {
			_, errB = p.b.docker.Docker(p.b.ctx, "volume", "create", "-d", "netvolb", "-o", "size=64M", name)
		})
		wg.Wait()
		if errA != nil || errB != nil {
			t.Fatalf("%s: host A: %v; host B: %v", name, errA, errB)
		}
		hs := p.holders(name)
		if len(hs) != 1 {
			t.Fatalf("%s is on servers %v after two concurrent creates", name, hs)
		}
		if sa, sb := inspectStatus(p.a, name)["server"], inspectStatus(p.b, name)["server"]; sa != p.server(hs[0]) || sb != sa {
			t.Fatalf("%s: host A sees it on %v, host B on %v; it is on %s", name, sa, sb, p.server(hs[0]))
		}
	}
	for i := range 5 {
		p.a.run("volume", "rm", fmt.Sprintf("same%d", i))
	}
}

// A server SIGKILLed: its volume fails naming it; a volume on another
// server mounts and takes writes; ls still lists both.
func (p *poolEnv) testServerKilled(t *testing.T) {
	p.a.run("volume", "create", "-d", "netvol", "-o", "size=64M", "-o", "server="+p.server(2), "ondead")
	p.a.run("volume", "create", "-d", "netvol", "-o", "size=64M", "-o", "server="+p.server(0), "onlive")
	p.servers[2].Kill()
	defer p.servers[2].Restart(t)
	out, err := p.a.docker.Docker(p.a.ctx, "run", "--rm", "--network", "none", "-v", "ondead:/v", node.BusyboxImage, "true")
	if err == nil || !strings.Contains(out, p.server(2)) {
		t.Fatalf("a container on a volume of the killed server: %v\n%s", err, out)
	}
	t.Logf("the killed server's volume: %s", strings.TrimSpace(out))
	if got := p.a.run("run", "--rm", "--network", "none", "-v", "onlive:/v", node.BusyboxImage, "sh", "-c",
		"echo alive > /v/f && sync && cat /v/f"); got != "alive\n" {
		t.Fatalf("a volume on a live server: %q", got)
	}
	ls := p.a.run("volume", "ls", "-q")
	if !strings.Contains(ls, "ondead") || !strings.Contains(ls, "onlive") {
		t.Fatalf("ls with a server down: %q", ls)
	}
	if st := fmt.Sprint(inspectStatus(p.a, "ondead")["status"]); !strings.Contains(st, "unreachable") {
		t.Fatalf("inspect of the killed server's volume: status %q", st)
	}
	p.servers[2].Restart(t)
	p.a.run("volume", "rm", "ondead")
	p.a.run("volume", "rm", "onlive")
}

// A move killed in the middle leaves the volume on its source with its
// data; running it again moves it, with its data, to the target only.
func (p *poolEnv) testMoveKilledMidway(t *testing.T) {
	p.a.run("volume", "create", "-d", "netvol", "-o", "size=512M", "-o", "server="+p.server(0), "mv")
	sum := md5Field(p.a.run("run", "--rm", "--network", "none", "-v", "mv:/v", node.BusyboxImage, "sh", "-c",
		"dd if=/dev/urandom of=/v/big bs=1M count=300 conv=fsync 2>/dev/null && md5sum /v/big"))
	move := func() *exec.Cmd {
		return exec.Command(node.NetvolBinary(t), append([]string{"volume", "move", "mv", "--to", p.server(1), "--timeout", "5m"},
			p.args[:4]...)...)
	}
	cmd := move()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var seen []string
	for sc.Scan() {
		seen = append(seen, sc.Text())
		if strings.Contains(sc.Text(), "incoming copy created") {
			time.Sleep(200 * time.Millisecond) // into the copy
			break
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	t.Logf("move killed after: %q", seen)
	if hs := p.holders("mv"); len(hs) != 2 || hs[0] != 0 || hs[1] != 1 {
		t.Fatalf("killed mid-copy: the volume is on servers %v, want the source and a partial copy", hs)
	}
	// The source is the volume for every host, with every byte.
	if st := inspectStatus(p.b, "mv"); st["server"] != p.server(0) {
		t.Fatalf("after the killed move host B sees it on %v", st["server"])
	}
	// The killed mover's lease lapses (5 s) before a host may mount it.
	var got string
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(time.Second) {
		out, err := p.b.docker.Docker(p.b.ctx, "run", "--rm", "--network", "none", "-v", "mv:/v", node.BusyboxImage, "md5sum", "/v/big")
		if err == nil {
			got = md5Field(out)
			break
		}
	}
	if got != sum {
		t.Fatalf("after the killed move: md5 %q, want %q", got, sum)
	}
	var out []byte
	var err error
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(time.Second) {
		if out, err = move().CombinedOutput(); err == nil || !strings.Contains(string(out), "conflict") {
			break
		}
	}
	if err != nil {
		t.Fatalf("move again: %v\n%s", err, out)
	}
	t.Logf("move:\n%s", out)
	if hs := p.holders("mv"); len(hs) != 1 || hs[0] != 1 {
		t.Fatalf("after the move: on servers %v", hs)
	}
	if got := md5Field(p.a.run("run", "--rm", "--network", "none", "-v", "mv:/v", node.BusyboxImage, "md5sum", "/v/big")); got != sum {
		t.Fatalf("after the move: md5 %q, want %q", got, sum)
	}
	if st := inspectStatus(p.a, "mv"); st["server"] != p.server(1) {
		t.Fatalf("after the move host A sees it on %v", st["server"])
	}
	p.a.run("volume", "rm", "mv")
}
