//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/netvol/netvol/e2e/node"
)

// TestHostFixturesLeaveTheHostAlone: the host fixtures run on the machine
// the suites run on, beside its own services (issue 13). The host's docker0
// (made here when the host has none) is still there, the same interface
// with the same addresses, while the host dockerd fixture runs and after it
// stopped. The rpcbind that answers while the NFS fixture runs is the one
// that ran before it, if one did, and is still the same process after the
// fixture stopped: one the fixture started serves the NFS servers other
// tests started meanwhile, so it outlives the test that started it.
//
// Not checked: that the registrations of an NFS server the host runs
// survive. ganesha takes rpcbind's NFS and MOUNT registrations over as it
// starts and removes them as it stops, whoever made them (see StartNFSServer).
func TestHostFixturesLeaveTheHostAlone(t *testing.T) {
	t.Parallel()
	node.RequireRoot(t)
	node.RequireTools(t, "ip")
	bridge := ensureDocker0(t)
	rpcbindBefore := listeners(t, 111)

	f := newFixtures(t)
	node.StartNFSServer(f)
	rpcbindPids := listeners(t, 111)
	if len(rpcbindPids) == 0 {
		t.Fatal("no rpcbind listens on port 111 while an NFS server runs")
	}
	if len(rpcbindBefore) > 0 && !slices.Equal(rpcbindPids, rpcbindBefore) {
		t.Fatalf("the NFS fixture replaced the running rpcbind: pids %v before, %v now", rpcbindBefore, rpcbindPids)
	}
	node.StartHostDocker(f)
	bridge.check(t, "while the host dockerd fixture runs")
	f.stop()

	bridge.check(t, "after the host dockerd fixture stopped")
	if got := listeners(t, 111); !slices.Equal(got, rpcbindPids) {
		t.Errorf("rpcbind after the fixtures stopped: pids %v, want %v (the same process)", got, rpcbindPids)
	}
}

// fixtures is a testing.TB whose cleanups run when stop is called rather
// than when the test ends: fixtures started with it stop then, those
// started with the test itself run on.
type fixtures struct {
	testing.TB
	mu       sync.Mutex
	cleanups []func()
}

func newFixtures(t *testing.T) *fixtures {
	f := &fixtures{TB: t}
	// After a failure. TempDir first: its removal, registered with its
	// first call, must come after the fixtures' unmounts.
	t.TempDir()
	t.Cleanup(f.stop)
	return f
}

func (f *fixtures) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

// stop runs the cleanups, last registered first, as the testing package
// does.
func (f *fixtures) stop() {
	f.mu.Lock()
	fns := f.cleanups
	f.cleanups = nil
	f.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// docker0 is what the test knows of the host's docker0 bridge.
type docker0 struct {
	index int
	addrs []string
}

// ensureDocker0 returns the host's docker0, creating one (a bridge with a
// link-local address, down) when the host has none; the test deletes only
// the one it created.
func ensureDocker0(t *testing.T) docker0 {
	t.Helper()
	if _, err := net.InterfaceByName("docker0"); err != nil {
		ip(t, "link", "add", "docker0", "type", "bridge")
		created := readDocker0(t)
		t.Cleanup(func() {
			if now, err := net.InterfaceByName("docker0"); err == nil && now.Index == created.index {
				if out, err := exec.Command("ip", "link", "del", "docker0").CombinedOutput(); err != nil {
					t.Errorf("ip link del docker0: %v\n%s", err, out)
				}
			}
		})
		ip(t, "addr", "add", "169.254.77.1/32", "dev", "docker0")
	}
	return readDocker0(t)
}

func readDocker0(t *testing.T) docker0 {
	t.Helper()
	ifi, err := net.InterfaceByName("docker0")
	if err != nil {
		t.Fatalf("docker0: %v", err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		t.Fatal(err)
	}
	b := docker0{index: ifi.Index}
	for _, a := range addrs {
		b.addrs = append(b.addrs, a.String())
	}
	slices.Sort(b.addrs)
	return b
}

// check marks the test failed unless docker0 is still the same interface
// with the same addresses.
func (b docker0) check(t *testing.T, when string) {
	t.Helper()
	if _, err := net.InterfaceByName("docker0"); err != nil {
		t.Errorf("docker0 %s: %v (it was there: index %d, addresses %v)", when, err, b.index, b.addrs)
		return
	}
	now := readDocker0(t)
	if now.index != b.index || !slices.Equal(now.addrs, b.addrs) {
		t.Errorf("docker0 %s: index %d, addresses %v; want index %d, %v", when, now.index, now.addrs, b.index, b.addrs)
	}
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// listeners returns the processes, in order, holding a TCP socket that
// listens on port in the test's network namespace (the host's).
func listeners(t *testing.T, port int) []int {
	t.Helper()
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(table)
		if err != nil {
			continue // no IPv6
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			f := strings.Fields(sc.Text())
			if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
				continue
			}
			if i := strings.LastIndexByte(f[1], ':'); i >= 0 && strings.EqualFold(f[1][i+1:], fmt.Sprintf("%04X", port)) {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
		fh.Close()
	}
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/fd")
	for _, fds := range procs {
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(fds)))
		entries, _ := os.ReadDir(fds) // processes come and go
		for _, e := range entries {
			if link, err := os.Readlink(filepath.Join(fds, e.Name())); err == nil && inodes[link] {
				pids = append(pids, pid)
				break
			}
		}
	}
	slices.Sort(pids)
	return pids
}
