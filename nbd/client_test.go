package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

const suiteSize = 64 << 20

// clientSuite checks a Client against a writable export of suiteSize bytes,
// whichever server serves it.
func clientSuite(t *testing.T, c *Client) {
	t.Run("info", func(t *testing.T) {
		i := c.Info()
		if i.Size != suiteSize || i.Flags&FlagHasFlags == 0 || i.Flags&FlagSendFlush == 0 {
			t.Fatalf("info = %+v (flags %s)", i, i.Flags)
		}
	})
	t.Run("write-read", func(t *testing.T) { suiteWriteRead(t, c) })
	t.Run("large", func(t *testing.T) { suiteLarge(t, c) })
	t.Run("zeroes-trim", func(t *testing.T) { suiteZeroes(t, c) })
	t.Run("past-end", func(t *testing.T) { suitePastEnd(t, c) })
	t.Run("concurrent", func(t *testing.T) { suiteConcurrent(t, c) })
}

func suiteWriteRead(t *testing.T, c *Client) {
	ctx := testCtx(t)
	want := pattern(8192, 3)
	if err := c.Write(ctx, want, 4096, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, want[:512], 1<<20, CmdFlagFUA); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if err := c.Read(ctx, got, 4096); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read back differs")
	}
	if err := c.Cache(ctx, 0, 4096); err != nil {
		t.Fatal(err)
	}
}

// suiteLarge moves more than the maximum payload in one call (split by the
// client).
func suiteLarge(t *testing.T, c *Client) {
	ctx := testCtx(t)
	want := pattern(MaxPayloadSize+1<<20, 9)
	if err := c.Write(ctx, want, 0, 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if err := c.Read(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read back differs")
	}
}

func suiteZeroes(t *testing.T, c *Client) {
	ctx := testCtx(t)
	for _, flags := range []CmdFlags{0, CmdFlagNoHole, CmdFlagFUA} {
		if err := c.Write(ctx, pattern(65536, 1), 2<<20, 0); err != nil {
			t.Fatal(err)
		}
		if err := c.WriteZeroes(ctx, 2<<20+4096, 32768, flags); err != nil {
			t.Fatalf("WriteZeroes %s: %v", flags, err)
		}
		got := make([]byte, 65536)
		if err := c.Read(ctx, got, 2<<20); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[4096:4096+32768], make([]byte, 32768)) || !bytes.Equal(got[:4096], pattern(4096, 1)) {
			t.Fatalf("WriteZeroes %s: wrong content", flags)
		}
	}
	if err := c.Trim(ctx, 3<<20, 1<<20, 0); err != nil {
		t.Fatal(err)
	}
}

func suitePastEnd(t *testing.T, c *Client) {
	ctx := testCtx(t)
	buf := make([]byte, 4096)
	err := c.Read(ctx, buf, suiteSize-2048)
	if !errors.Is(err, EINVAL) || !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("read past end: %v, want EINVAL", err)
	}
	if err := c.Write(ctx, buf, suiteSize, 0); err == nil {
		t.Fatal("write past end succeeded")
	}
	if err := c.Read(ctx, buf, suiteSize-4096); err != nil {
		t.Fatalf("next read: %v", err)
	}
}

func suiteConcurrent(t *testing.T, c *Client) {
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 64 {
		wg.Go(func() {
			off := int64(8<<20 + g*16384)
			want := pattern(16384, byte(g))
			if err := c.Write(ctx, want, off, 0); err != nil {
				errs <- err
				return
			}
			got := make([]byte, len(want))
			if err := c.Read(ctx, got, off); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, want) {
				errs <- fmt.Errorf("goroutine %d read back differs", g)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestClientAgainstOurServer(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			_, _, addr := memServer(t, suiteSize, network)
			clientSuite(t, dial(t, network, addr, "disk"))
		})
	}
}

// TestClientAgainstQemuNBD runs the same suite against a server we did not
// write, over a unix socket and over TCP.
func TestClientAgainstQemuNBD(t *testing.T) {
	qemuNBD := needTool(t, "qemu-nbd")
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			file := newFile(t, suiteSize)
			args := []string{"-f", "raw", "-x", "qdisk", "-t"}
			addr := filepath.Join(t.TempDir(), "q.sock")
			if network == "tcp" {
				addr = freePort(t)
				_, port, _ := net.SplitHostPort(addr)
				args = append(args, "-b", "127.0.0.1", "-p", port)
			} else {
				args = append(args, "--socket", addr)
			}
			cmd := exec.Command(qemuNBD, append(args, file)...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			c := dialRetry(t, network, addr, "qdisk")
			defer c.Close()
			t.Logf("qemu-nbd export: %+v flags %s", c.Info(), c.Info().Flags)
			clientSuite(t, c)
		})
	}
}

// freePort returns a loopback address with a port free a moment ago.
func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// dialRetry dials until a server that is starting up answers.
func dialRetry(t *testing.T, network, addr, name string) *Client {
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := Dial(ctx, network, addr, ClientOptions{ExportName: name})
		cancel()
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("server at %s did not come up: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestClientUnknownExport(t *testing.T) {
	_, _, addr := memServer(t, 1<<20, "tcp")
	_, err := Dial(testCtx(t), "tcp", addr, ClientOptions{ExportName: "nope"})
	var oe *OptionError
	if !errors.As(err, &oe) || oe.Reply != RepErrUnknown {
		t.Fatalf("err = %v, want NBD_REP_ERR_UNKNOWN", err)
	}
}

func TestClientCancel(t *testing.T) {
	srv, mem, addr := memServer(t, 1<<20, "unix")
	_ = srv
	mem.delay.Store(int64(200 * time.Millisecond))
	c := dial(t, "unix", addr, "disk")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := c.Write(ctx, pattern(4096, 1), 0, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	// The orphaned reply is consumed and the client goes on.
	got := make([]byte, 4096)
	if err := c.Read(testCtx(t), got, 0); err != nil {
		t.Fatal(err)
	}
}

func TestClientClosed(t *testing.T) {
	_, _, addr := memServer(t, 1<<20, "tcp")
	c := dial(t, "tcp", addr, "disk")
	c.Close()
	if err := c.Flush(testCtx(t)); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("err = %v, want ErrClientClosed", err)
	}
}
