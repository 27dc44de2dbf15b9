//go:build e2e

package node

import (
	"context"
	"fmt"
	"path"
	"strings"
	"testing"
	"time"
)

// GuestServer is `netvol server` running inside a node: a storage node that
// can lose power (Node.Crash) with its images and registry on the node's
// state disk, which Crash keeps and whose unwritten page cache it loses.
// It listens on all of the node's addresses; with its ports in the node's
// Options.HostForward, the host reaches it at 127.0.0.1 and other nodes at
// HostAddr, on the same ports.
type GuestServer struct {
	Node             *Node
	NBDPort, APIPort int
	DataDir          string // in the node, on its state disk
	Token            string
	argv             string
}

// GuestServerLog is the log of a GuestServer, on the node's state disk (the
// lines the node had not written out when it crashed are lost).
const GuestServerLog = GuestStateDir + "/netvol-server.log"

const guestServerPID = "/run/netvol-server.pid"

// StartGuestServer starts bin as a storage daemon in n with its data in
// GuestStateDir/server, and waits until the host sees it healthy through
// the forwarded API port. nbdPort and apiPort must be in n's HostForward
// (FreePort picks them). extra flags are appended.
func StartGuestServer(t testing.TB, n *Node, bin string, nbdPort, apiPort int, extra ...string) *GuestServer {
	t.Helper()
	s := &GuestServer{Node: n, NBDPort: nbdPort, APIPort: apiPort, DataDir: path.Join(GuestStateDir, "server")}
	s.argv = strings.Join(append([]string{bin, "server", "--data", s.DataDir,
		"--nbd-listen", fmt.Sprintf("0.0.0.0:%d", nbdPort), "--api-listen", fmt.Sprintf("0.0.0.0:%d", apiPort)}, extra...), " ")
	s.Start(t)
	s.Token = strings.TrimSpace(n.MustRun(t, "cat "+s.DataDir+"/token"))
	return s
}

// Start starts the daemon (again, after Kill, or after a Crash and Boot of
// its node) on the same data and ports, and waits until it is healthy.
func (s *GuestServer) Start(t testing.TB) {
	t.Helper()
	// Not setsid -f: in a background job of a shell without job control
	// setsid execs in place, so $! is the daemon's pid.
	s.Node.MustRun(t, fmt.Sprintf("mkdir -p %s && setsid %s </dev/null >>%s 2>&1 & echo $! > %s",
		s.DataDir, s.argv, GuestServerLog, guestServerPID))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	url := fmt.Sprintf("http://127.0.0.1:%d", s.APIPort)
	for {
		hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := health(hctx, url)
		hcancel()
		if err == nil && st == "ok" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("netvol server in %s not healthy at %s within two minutes (last: %q, %v)\n%s",
				s.Node.Name(), url, st, err, s.LogTail(t))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop ends the daemon with SIGTERM (kill: SIGKILL, a crash of the process
// alone) and waits until it has exited.
func (s *GuestServer) Stop(t testing.TB, kill bool) {
	t.Helper()
	sig := "TERM"
	if kill {
		sig = "KILL"
	}
	s.Node.MustRun(t, fmt.Sprintf(`p=$(cat %[1]s) && kill -%[2]s $p
i=0
while kill -0 $p 2>/dev/null; do
	i=$((i+1)); [ $i -gt 150 ] && { echo "netvol server still running" >&2; exit 1; }
	sleep 0.2
done`, guestServerPID, sig))
}

// PluginArgs are the flags of `netvol plugin` in another node against this
// server.
func (s *GuestServer) PluginArgs() string {
	return fmt.Sprintf("--server %s:%d --token %s", HostAddr, s.APIPort, s.Token)
}

// LogTail returns the end of the daemon's log, if its node runs.
func (s *GuestServer) LogTail(t testing.TB) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := s.Node.Run(ctx, "tail -n 40 "+GuestServerLog+" 2>&1 | tr -d '\\000'")
	if err != nil {
		return err.Error()
	}
	return res.Stdout
}
