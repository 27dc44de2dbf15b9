//go:build e2e

package e2e

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netvol/netvol/e2e/node"
)

// TestHarness checks the command channel the other suites build on: exit
// statuses, both output streams, stdin, concurrent commands, a deadline that
// kills the command, and a script that leaves a daemon behind.
func TestHarness(t *testing.T) {
	t.Parallel()
	n := node.Start(t, node.Options{Name: "h1"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	res, err := n.Run(ctx, "echo out; echo err >&2; exit 3")
	if err != nil || res.Stdout != "out\n" || res.Stderr != "err\n" || res.ExitCode != 3 {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	res, err = n.RunInput(ctx, "tr a-z A-Z", []byte("stdin"))
	if err != nil || res.Stdout != "STDIN" {
		t.Fatalf("RunInput = %+v, %v", res, err)
	}
	if got := n.MustRun(t, "sleep 600 </dev/null >/dev/null 2>&1 & echo started"); got != "started\n" {
		t.Fatalf("a script leaving a background process: %q", got)
	}
	testConcurrentRuns(t, n)
	testRunDeadline(t, n)
	if got := n.MustRun(t, "hostname"); got != "h1\n" {
		t.Fatalf("hostname = %q", got)
	}
}

func testConcurrentRuns(t *testing.T, n *node.Node) {
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() { // no t.Fatal off the test's goroutine: Run, not MustRun
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := n.Run(ctx, "sleep 2; echo "+itoa(i))
			if err != nil || res.Stdout != itoa(i)+"\n" {
				t.Errorf("concurrent run %d = %+v, %v", i, res, err)
			}
		})
	}
	wg.Wait()
	// Serialised, three 2 s sleeps would take 6 s.
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("three concurrent 2 s commands took %s", d)
	}
}

func testRunDeadline(t *testing.T, n *node.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := n.Run(ctx, "touch /tmp/deadline; sleep 601")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run past its deadline: %v", err)
	}
	// The killed command's process group must be gone.
	n.MustRun(t, `for i in $(seq 50); do busybox pgrep -f "sleep 601$" >/dev/null || exit 0; sleep 0.1; done; busybox ps >&2; exit 1`)
	if got := n.MustRun(t, "ls /tmp/deadline"); !strings.Contains(got, "deadline") {
		t.Fatalf("the command did not run: %q", got)
	}
}
