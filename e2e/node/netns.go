//go:build e2e

package node

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ForwardLoopback makes 127.0.0.1:port inside dockerd's network namespace
// reach 127.0.0.1:port on the host, for each port. What runs in that
// namespace and talks to servers on the host's loopback needs it: a managed
// plugin (host networking means dockerd's namespace) reaching a storage
// daemon's API and NBD ports. The listeners are made in the namespace (one
// locked thread enters it only for the listen call) and the connections
// are relayed from the host's; both end with the test.
func (d *HostDocker) ForwardLoopback(t testing.TB, ports ...int) {
	t.Helper()
	pid := d.cmd.Process.Pid
	nsPath := "/proc/" + strconv.Itoa(pid) + "/ns/net"
	if out, err := exec.Command("nsenter", "--net="+nsPath, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("bringing up lo in dockerd's namespace: %v: %s", err, out)
	}
	for _, port := range ports {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := listenInNetns(nsPath, addr)
		if err != nil {
			t.Fatalf("listening on %s in dockerd's namespace: %v", addr, err)
		}
		var wg sync.WaitGroup
		t.Cleanup(func() { l.Close(); wg.Wait() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			relay(l, addr)
		}()
	}
}

// listenInNetns listens on addr in the network namespace at nsPath. The
// socket keeps its namespace after the thread goes back.
func listenInNetns(nsPath, addr string) (net.Listener, error) {
	type result struct {
		l   net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread is left locked on purpose if it cannot go back: the
		// runtime then retires it instead of reusing it in the namespace.
		runtime.LockOSThread()
		self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer unix.Close(self)
		target, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("setns: %w", err)}
			return
		}
		l, lerr := net.Listen("tcp", addr)
		if err := unix.Setns(self, unix.CLONE_NEWNET); err != nil {
			if l != nil {
				l.Close()
			}
			ch <- result{err: fmt.Errorf("setns back: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{l: l, err: lerr}
	}()
	r := <-ch
	return r.l, r.err
}

// relay copies every connection accepted on l to and from addr on the
// host, until l is closed.
func relay(l net.Listener, addr string) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			up, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			cancel()
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			go func() { io.Copy(c, up); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}
