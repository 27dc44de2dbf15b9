package fuseattach

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// The control socket: a helper listens on <dir>/ctl.sock; the plugin sends
// one line, "status", "stop" or "grow" (take the export's new size), and
// reads one JSON line back. Files in a
// helper's directory:
//
//	ctl.sock  the control socket
//	pid       the helper's process id
//	device    the loop device, once attached
//	fuse/     the FUSE mount; fuse/disk is the export
//
// and beside the directory, <dir>.log is the helper's log.
const (
	ctlName    = "ctl.sock"
	pidName    = "pid"
	deviceName = "device"
	fuseName   = "fuse"

	cmdStatus = "status"
	cmdStop   = "stop"
	cmdGrow   = "grow"

	maxReply = 64 << 10
	// sunPathMax is the room for a unix socket path (sun_path less its NUL).
	sunPathMax = 107
)

// Reply is a helper's answer on the control socket.
type Reply struct {
	OK      bool    `json:"ok"`
	Error   string  `json:"error,omitempty"`
	Volume  string  `json:"volume,omitempty"`
	Device  string  `json:"device,omitempty"`
	DIO     bool    `json:"dio,omitempty"` // the loop device does direct I/O
	PID     int     `json:"pid,omitempty"`
	Size    int64   `json:"size,omitempty"`    // the device's, after "grow"
	Session *Status `json:"session,omitempty"` // nil for a local image
}

// errNoHelper means no helper answers in a directory: it died, or never
// got as far as listening.
var errNoHelper = errors.New("no attach helper answers")

// call sends cmd to the helper of dir and returns its reply; errNoHelper
// when nothing listens there.
func call(ctx context.Context, dir, cmd string) (Reply, error) {
	conn, err := dialCtl(ctx, dir)
	if err != nil {
		if errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, os.ErrNotExist) {
			return Reply{}, fmt.Errorf("%s: %w", dir, errNoHelper)
		}
		return Reply{}, err
	}
	defer conn.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := conn.Write([]byte(cmd + "\n")); err != nil {
		return Reply{}, fmt.Errorf("attach helper of %s: %w", dir, err)
	}
	line, err := bufio.NewReaderSize(conn, maxReply).ReadSlice('\n')
	if err != nil {
		return Reply{}, fmt.Errorf("attach helper of %s: no answer to %q: %w", dir, cmd, err)
	}
	var r Reply
	if err := json.Unmarshal(line, &r); err != nil {
		return Reply{}, fmt.Errorf("attach helper of %s: %w", dir, err)
	}
	return r, nil
}

// dialCtl connects to <dir>/ctl.sock. A path too long for a unix socket
// address goes through /proc/self/fd/N/ctl.sock, N being dir held open.
func dialCtl(ctx context.Context, dir string) (net.Conn, error) {
	var d net.Dialer
	path := filepath.Join(dir, ctlName)
	if len(path) <= sunPathMax {
		return d.DialContext(ctx, "unix", path)
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	return d.DialContext(ctx, "unix", "/proc/self/fd/"+strconv.Itoa(fd)+"/"+ctlName)
}

// stopReq is a "stop" from the control socket: the reply goes back on
// reply, and sent is closed once it is on the wire.
type stopReq struct {
	reply chan Reply
	sent  chan struct{}
}

// growReq is a "grow" from the control socket: the reply goes back on
// reply.
type growReq struct{ reply chan Reply }

// serveCtl answers control connections on l, handing stop and grow
// requests to stops and grows, until l is closed.
func serveCtl(l net.Listener, status func() Reply, stops chan<- stopReq, grows chan<- growReq) {
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		go answer(conn, status, stops, grows)
	}
}

func answer(conn net.Conn, status func() Reply, stops chan<- stopReq, grows chan<- growReq) {
	defer conn.Close()
	sent := make(chan struct{})
	defer close(sent)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReaderSize(conn, 256).ReadSlice('\n')
	if err != nil {
		return
	}
	var r Reply
	switch string(line[:len(line)-1]) {
	case cmdStatus:
		r = status()
	case cmdStop:
		req := stopReq{reply: make(chan Reply, 1), sent: sent}
		stops <- req
		r = <-req.reply
	case cmdGrow:
		req := growReq{reply: make(chan Reply, 1)}
		grows <- req
		r = <-req.reply
	default:
		r = Reply{Error: fmt.Sprintf("unknown command %q", line)}
	}
	b, _ := json.Marshal(r)
	_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, _ = conn.Write(append(b, '\n'))
}
