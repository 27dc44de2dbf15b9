package nfs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/netvol/netvol/volume/backend"
)

// words encodes XDR words.
func words(ws ...uint32) []byte {
	b := make([]byte, 4*len(ws))
	for i, w := range ws {
		binary.BigEndian.PutUint32(b[4*i:], w)
	}
	return b
}

func join(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// TestAuthSys checks the credential byte for byte: an empty group list,
// where the library's helper sends group 0.
func TestAuthSys(t *testing.T) {
	a := authSys("host1", 1000, 100, 7)
	want := join(words(7, 5), []byte("host1\x00\x00\x00"), words(1000, 100, 0))
	if a.Flavor != 1 || !bytes.Equal(a.Body, want) {
		t.Fatalf("authSys = %d %x, want 1 %x", a.Flavor, a.Body, want)
	}
}

func record(last bool, body []byte) []byte {
	mark := uint32(len(body))
	if last {
		mark |= lastFragment
	}
	return join(words(mark), body)
}

func TestReadRecord(t *testing.T) {
	in := join(record(false, []byte("abcd")), record(true, []byte("efgh")))
	got, err := readRecord(bytes.NewReader(in))
	if err != nil || string(got) != "abcdefgh" {
		t.Fatalf("two fragments: %q, %v", got, err)
	}
	if _, err := readRecord(bytes.NewReader(words(lastFragment | (maxRecord + 1)))); err == nil {
		t.Fatal("a record over the limit was accepted")
	}
	big := join(record(false, make([]byte, maxRecord)), record(true, []byte("x")))
	if _, err := readRecord(bytes.NewReader(big)); err == nil {
		t.Fatal("fragments over the limit together were accepted")
	}
	if _, err := readRecord(bytes.NewReader(record(true, []byte("abcd"))[:6])); err == nil {
		t.Fatal("a truncated record was accepted")
	}
}

// acceptedReply is a successful reply header followed by results.
func acceptedReply(xid uint32, results ...uint32) []byte {
	return join(words(xid, msgReply, rpc.MsgAccepted, 0, 0, rpc.Success), words(results...))
}

func TestParseReply(t *testing.T) {
	r, err := parseReply(acceptedReply(9, 2049), 9)
	if err != nil || r.Len() != 4 {
		t.Fatalf("good reply: %v", err)
	}
	if _, err := parseReply(acceptedReply(8), 9); !errors.Is(err, errOtherXID) {
		t.Fatalf("other xid: %v", err)
	}
	bad := map[string][]byte{
		"PROG_MISMATCH": words(9, msgReply, rpc.MsgAccepted, 0, 0, rpc.ProgMismatch, 4, 4),
		"PROG_UNAVAIL":  words(9, msgReply, rpc.MsgAccepted, 0, 0, rpc.ProgUnavail),
		"AUTH_TOOWEAK":  words(9, msgReply, rpc.MsgDenied, rejectAuthError, authTooWeak),
		"RPC_MISMATCH":  words(9, msgReply, rpc.MsgDenied, 0, 2, 2),
		"malformed":     words(9, msgReply, rpc.MsgAccepted, 0, 1000),
		"where a reply": words(9, msgCall, 0),
	}
	for want, rec := range bad {
		if _, err := parseReply(rec, 9); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseReply: %v, want %q", err, want)
		}
	}
}

// fakeServer answers each call record with what reply returns for it,
// nothing when that is nil.
func fakeServer(t *testing.T, reply func(xid uint32, call []byte) []byte) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serveFake(c, reply)
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

func serveFake(c net.Conn, reply func(xid uint32, call []byte) []byte) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		call, err := readRecord(r)
		if err != nil || len(call) < 4 {
			return
		}
		if out := reply(binary.BigEndian.Uint32(call), call); out != nil {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
	}
}

func testConfig() *Config {
	c := Config{Server: "127.0.0.1", Export: "/srv"}
	c.fill()
	return &c
}

// TestCall sends a GETPORT; the server first sends a stray reply to
// another xid, which the client must skip.
func TestCall(t *testing.T) {
	calls := make(chan []byte, 1)
	port := fakeServer(t, func(xid uint32, call []byte) []byte {
		calls <- call
		return join(record(true, acceptedReply(xid-1, 1)), record(true, acceptedReply(xid, 2049)))
	})
	auth := authSys("h", 0, 0, 1)
	c, err := dialRPC(context.Background(), "portmapper", "127.0.0.1", port, auth, testConfig(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	p, err := c.getport(context.Background(), 100003, 3)
	if err != nil || p != 2049 {
		t.Fatalf("getport = %d, %v", p, err)
	}
	// xid, CALL, RPC 2, PMAP 100000 v2 GETPORT, AUTH_SYS cred, null verf, mapping.
	want := join(words(c.xid, msgCall, 2, rpc.PmapProg, rpc.PmapVers, rpc.PmapProcGetPort, 1, uint32(len(auth.Body))),
		auth.Body, words(0, 0, 100003, 3, rpc.IPProtoTCP, 0))
	if got := <-calls; !bytes.Equal(got, want) {
		t.Fatalf("call\n got %x\nwant %x", got, want)
	}
}

// TestCallDeadline: a server that never answers costs the caller its
// deadline, no more, and the error wraps ErrUnavailable and names it.
func TestCallDeadline(t *testing.T) {
	port := fakeServer(t, func(uint32, []byte) []byte { return nil })
	cfg := testConfig()
	cfg.CallTimeout = 300 * time.Millisecond
	cases := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"ctx deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 200*time.Millisecond)
		}, context.DeadlineExceeded},
		{"ctx cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(200*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"call timeout", func() (context.Context, context.CancelFunc) {
			return context.WithCancel(context.Background())
		}, nil},
	}
	for _, c := range cases {
		ctx, cancel := c.ctx()
		conn, err := dialRPC(ctx, "NFS", "127.0.0.1", port, rpc.AuthNull, cfg, false)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = conn.getport(ctx, 1, 1)
		took := time.Since(start)
		conn.close()
		cancel()
		if !errors.Is(err, backend.ErrUnavailable) || !strings.Contains(err.Error(), "NFS service at 127.0.0.1:") ||
			c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: %v", c.name, err)
		}
		if took > 250*time.Millisecond+cfg.CallTimeout {
			t.Errorf("%s: took %s", c.name, took)
		}
	}
}
