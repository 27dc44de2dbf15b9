//go:build e2e

package node

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// DefaultRunTimeout bounds MustRun. Guests are emulated and slow, but no
// single step of a test should take this long.
const DefaultRunTimeout = 3 * time.Minute

// Result is what a command in a node produced.
type Result struct {
	Stdout, Stderr string
	// ExitCode is the shell's exit status; 128+N when killed by signal N.
	ExitCode int
}

// Run runs script with /bin/sh -c inside the node (as root, in the host's
// root filesystem) and waits for it. A non-zero exit is reported in the
// Result, not as an error; the error is for a node that is down, a channel
// that broke or ctx ending (which kills the command). Background processes a
// script leaves behind keep running but must not keep its stdout or stderr
// (redirect them), or their output is lost.
func (n *Node) Run(ctx context.Context, script string) (Result, error) {
	return n.RunInput(ctx, script, nil)
}

// RunInput is Run with stdin fed from input.
func (n *Node) RunInput(ctx context.Context, script string, input []byte) (Result, error) {
	v, err := n.running()
	if err != nil {
		return Result{}, err
	}
	resp, err := v.agent.run(ctx, script, input)
	if err != nil {
		return Result{}, fmt.Errorf("node %s: running %q: %w", n.opts.Name, script, err)
	}
	if resp.Err != "" {
		return Result{}, fmt.Errorf("node %s: starting %q: %s", n.opts.Name, script, resp.Err)
	}
	return Result{Stdout: string(resp.Stdout), Stderr: string(resp.Stderr), ExitCode: resp.Exit}, nil
}

// MustRun runs script within DefaultRunTimeout and returns its stdout. It
// fails the test, showing the output and the node's console, unless the
// script exits 0.
func (n *Node) MustRun(t testing.TB, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultRunTimeout)
	defer cancel()
	res, err := n.Run(ctx, script)
	if err != nil {
		t.Fatal(n.withConsole(err))
	}
	if res.ExitCode != 0 {
		t.Fatal(n.withConsole(fmt.Errorf("node %s: %q exited %d\nstdout:\n%s\nstderr:\n%s",
			n.opts.Name, script, res.ExitCode, res.Stdout, res.Stderr)))
	}
	return res.Stdout
}

// MustFail runs script and returns its result, failing the test if the
// script exits 0: for checks that something is refused.
func (n *Node) MustFail(t testing.TB, script string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultRunTimeout)
	defer cancel()
	res, err := n.Run(ctx, script)
	if err != nil {
		t.Fatal(n.withConsole(err))
	}
	if res.ExitCode == 0 {
		t.Fatalf("node %s: %q succeeded, want a failure\nstdout:\n%s", n.opts.Name, script, res.Stdout)
	}
	return res
}
