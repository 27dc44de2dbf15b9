//go:build e2e

package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/netvol/netvol/e2e/node/internal/proto"
)

// agentClient is the host's end of a node's virtio-serial agent channel.
// Requests are multiplexed: several commands may run in a node at once.
type agentClient struct {
	conn net.Conn

	wmu sync.Mutex // serialises writes to conn
	enc *json.Encoder

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan proto.Response
	err     error // why the read loop stopped; set before done is closed

	hello chan struct{}
	done  chan struct{}
}

// dialAgent connects to the unix socket qemu serves the agent's port on. qemu
// creates it shortly after it starts, so the dial is retried until ctx ends.
func dialAgent(ctx context.Context, path string, exited <-chan struct{}) (*agentClient, error) {
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			return newAgentClient(conn), nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connecting to the agent socket: %w (last error: %v)", ctx.Err(), err)
		case <-exited:
			return nil, errors.New("qemu exited before its agent socket was up")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func newAgentClient(conn net.Conn) *agentClient {
	a := &agentClient{
		conn:    conn,
		enc:     json.NewEncoder(conn),
		pending: map[uint64]chan proto.Response{},
		hello:   make(chan struct{}),
		done:    make(chan struct{}),
	}
	go a.readLoop()
	return a
}

func (a *agentClient) readLoop() {
	r := bufio.NewReaderSize(a.conn, 1<<20)
	helloSeen := false
	var err error
	for {
		var line []byte
		if line, err = r.ReadBytes('\n'); err != nil {
			break
		}
		var resp proto.Response
		if err = json.Unmarshal(line, &resp); err != nil {
			err = fmt.Errorf("bad message from agent: %w", err)
			break
		}
		if resp.Hello && !helloSeen {
			helloSeen = true
			close(a.hello)
			continue
		}
		a.deliver(resp)
	}
	a.fail(err)
}

func (a *agentClient) deliver(resp proto.Response) {
	a.mu.Lock()
	ch, ok := a.pending[resp.ID]
	delete(a.pending, resp.ID)
	a.mu.Unlock()
	if ok {
		ch <- resp // buffered: never blocks
	}
}

// fail ends every pending request: the node is gone.
func (a *agentClient) fail(err error) {
	a.mu.Lock()
	a.err = fmt.Errorf("agent connection lost: %w", err)
	a.pending = map[uint64]chan proto.Response{}
	a.mu.Unlock()
	close(a.done)
}

func (a *agentClient) waitHello(ctx context.Context) error {
	select {
	case <-a.hello:
		return nil
	case <-a.done:
		return a.lostErr()
	case <-ctx.Done():
		return fmt.Errorf("waiting for the agent to start: %w", ctx.Err())
	}
}

func (a *agentClient) lostErr() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

func (a *agentClient) send(req proto.Request) error {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	return a.enc.Encode(req)
}

// run executes script in the node. When ctx ends first, the command's process
// group in the node is killed.
func (a *agentClient) run(ctx context.Context, script string, stdin []byte) (proto.Response, error) {
	ch := make(chan proto.Response, 1)
	a.mu.Lock()
	if a.err != nil {
		a.mu.Unlock()
		return proto.Response{}, a.err
	}
	a.nextID++
	id := a.nextID
	a.pending[id] = ch
	a.mu.Unlock()

	if err := a.send(proto.Request{ID: id, Script: script, Stdin: stdin}); err != nil {
		return proto.Response{}, fmt.Errorf("sending to agent: %w", err)
	}
	select {
	case resp := <-ch:
		return resp, nil
	case <-a.done:
		return proto.Response{}, a.lostErr()
	case <-ctx.Done():
		_ = a.send(proto.Request{Cancel: id})
		return proto.Response{}, ctx.Err()
	}
}

func (a *agentClient) poweroff() error {
	return a.send(proto.Request{Poweroff: true})
}

func (a *agentClient) close() { a.conn.Close() }
