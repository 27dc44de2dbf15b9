package server

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runKilledChild runs the test named test of this binary as a child with
// env added, collects the steps it prints ("step NAME") until it prints
// "done" (then it is killed) or dies, and checks that it ended by
// SIGKILL: by its own hand at a step, or by ours once done.
func runKilledChild(t *testing.T, test string, env ...string) (steps []string, done bool) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run", "^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if name, ok := strings.CutPrefix(line, "step "); ok {
				steps = append(steps, name)
			}
			if line == "done" {
				done = true
				cmd.Process.Signal(syscall.SIGKILL)
			}
		}
	}()
	select {
	case <-ended:
	case <-time.After(60 * time.Second):
		t.Fatalf("the child neither finished nor died: %s", stderr.String())
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the child ended with %v, not killed: %s", err, stderr.String())
	}
	return steps, done
}
