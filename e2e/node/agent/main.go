//go:build e2e

// Command agent runs inside a node VM and executes the harness's commands.
// The node's init starts it last; it talks to the host over a virtio-serial
// port (see package proto) and never touches the network, so it keeps
// working while a test has cut the node's link.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/netvol/netvol/e2e/node/internal/proto"
)

// maxOutput bounds what one command may return per stream, so a runaway
// command cannot exhaust the guest's memory or the host's.
const maxOutput = 8 << 20

func main() {
	// run returns only when the agent cannot go on; init then powers off.
	fmt.Fprintln(os.Stderr, "agent:", run())
	os.Exit(1)
}

func run() error {
	port, err := openPort(60 * time.Second)
	if err != nil {
		return err
	}
	// On the console: the boot's last step, and when the node came up.
	up, _ := os.ReadFile("/proc/uptime")
	fmt.Fprintf(os.Stderr, "agent: serving %s at uptime %s", port.Name(), up)
	a := &agent{enc: json.NewEncoder(port), running: map[uint64]int{}}
	if err := a.send(proto.Response{Hello: true}); err != nil {
		return err
	}
	return a.serve(bufio.NewReaderSize(port, 1<<20))
}

// openPort waits for the kernel to register the agent's virtio-serial port.
// There is no udev in the node, so the port is found by its name in sysfs.
func openPort(timeout time.Duration) (*os.File, error) {
	deadline := time.Now().Add(timeout)
	for {
		names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err == nil && strings.TrimSpace(string(b)) == proto.PortName {
				return os.OpenFile("/dev/"+filepath.Base(filepath.Dir(n)), os.O_RDWR, 0)
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("virtio-serial port %s not found", proto.PortName)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type agent struct {
	mu      sync.Mutex
	enc     *json.Encoder
	running map[uint64]int // request ID → process group ID
}

func (a *agent) send(r proto.Response) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.enc.Encode(r)
}

func (a *agent) serve(r *bufio.Reader) error {
	for {
		line, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) && len(line) == 0 {
			// The host closed its end; it may reconnect, so keep reading.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		var req proto.Request
		if err := json.Unmarshal(line, &req); err != nil {
			fmt.Fprintf(os.Stderr, "agent: bad request: %v\n", err)
			continue
		}
		a.dispatch(req)
	}
}

func (a *agent) dispatch(req proto.Request) {
	switch {
	case req.Poweroff:
		poweroff()
	case req.Cancel != 0:
		a.cancel(req.Cancel)
	default:
		go a.execute(req)
	}
}

func (a *agent) cancel(id uint64) {
	a.mu.Lock()
	pgid, ok := a.running[id]
	a.mu.Unlock()
	if ok {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}

func poweroff() {
	syscall.Sync()
	if err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Fprintln(os.Stderr, "agent: poweroff:", err)
	}
}

func (a *agent) execute(req proto.Request) {
	resp := proto.Response{ID: req.ID}
	if err := a.runScript(req, &resp); err != nil {
		resp.Err = err.Error()
		resp.Exit = -1
	}
	if err := a.send(resp); err != nil {
		fmt.Fprintln(os.Stderr, "agent: send:", err)
	}
}

// runScript runs the request's script with its output in unlinked temporary
// files rather than pipes: a script that leaves a daemon running in the
// background would otherwise hold the pipes open and the request would never
// finish.
func (a *agent) runScript(req proto.Request, resp *proto.Response) error {
	stdout, err := scratchFile()
	if err != nil {
		return err
	}
	defer stdout.Close()
	stderr, err := scratchFile()
	if err != nil {
		return err
	}
	defer stderr.Close()

	cmd := exec.Command("/bin/sh", "-c", req.Script)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if req.Stdin != nil {
		cmd.Stdin = strings.NewReader(string(req.Stdin))
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	a.track(req.ID, cmd.Process.Pid)
	_ = cmd.Wait() // the exit status below says everything Wait's error would
	a.untrack(req.ID)

	resp.Exit = exitStatus(cmd.ProcessState)
	resp.Stdout = readAll(stdout)
	resp.Stderr = readAll(stderr)
	return nil
}

func (a *agent) track(id uint64, pgid int) {
	a.mu.Lock()
	a.running[id] = pgid
	a.mu.Unlock()
}

func (a *agent) untrack(id uint64) {
	a.mu.Lock()
	delete(a.running, id)
	a.mu.Unlock()
}

func scratchFile() (*os.File, error) {
	f, err := os.CreateTemp("/run", "agent-out-")
	if err != nil {
		return nil, err
	}
	// Unlinked at once: nothing is left behind whatever happens next.
	return f, os.Remove(f.Name())
}

func readAll(f *os.File) []byte {
	b, _ := io.ReadAll(io.NewSectionReader(f, 0, maxOutput))
	return b
}

func exitStatus(ps *os.ProcessState) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
