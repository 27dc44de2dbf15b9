//go:build e2e

package node

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"time"
)

// qmpExecute runs one QEMU Machine Protocol command on the monitor socket at
// path and returns its error reply, if any. QMP rather than the human monitor
// because it answers every command with a machine-readable success or error.
func qmpExecute(ctx context.Context, path, command string, args any) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("qmp: %w", err)
	}
	defer conn.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	if _, err := r.ReadBytes('\n'); err != nil { // the greeting
		return fmt.Errorf("qmp greeting: %w", err)
	}
	if err := qmpCall(conn, r, "qmp_capabilities", nil); err != nil {
		return err
	}
	return qmpCall(conn, r, command, args)
}

type qmpReply struct {
	Return *json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

func qmpCall(conn net.Conn, r *bufio.Reader, command string, args any) error {
	msg := map[string]any{"execute": command}
	if args != nil {
		msg["arguments"] = args
	}
	if err := json.NewEncoder(conn).Encode(msg); err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("qmp %s: %w", command, err)
		}
		var rep qmpReply
		if err := json.Unmarshal(line, &rep); err != nil {
			return fmt.Errorf("qmp %s: %w", command, err)
		}
		switch {
		case rep.Error != nil:
			return fmt.Errorf("qmp %s: %s: %s", command, rep.Error.Class, rep.Error.Desc)
		case rep.Return != nil:
			return nil
		}
		// Anything else is an asynchronous event: skip it.
	}
}
