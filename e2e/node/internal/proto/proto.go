//go:build e2e

// Package proto is the wire format between the e2e harness on the host and
// the agent inside a node VM. Both ends exchange newline-delimited JSON
// objects over a virtio-serial port, which stays up when the node's network
// is cut, so a test can still drive a partitioned node.
package proto

// PortName is the virtio-serial port name the agent looks for in
// /sys/class/virtio-ports/*/name.
const PortName = "netvol.e2e.agent"

// Request asks the agent to run Script with /bin/sh -c, or to act on an
// earlier request.
type Request struct {
	ID     uint64 `json:"id"`
	Script string `json:"script,omitempty"`
	Stdin  []byte `json:"stdin,omitempty"`
	// Cancel kills the process group of the running request with this ID.
	Cancel uint64 `json:"cancel,omitempty"`
	// Poweroff syncs and powers the node off; no response follows.
	Poweroff bool `json:"poweroff,omitempty"`
}

// Response carries the outcome of one Request. The agent sends one Response
// with ID 0 and Hello set when it starts.
type Response struct {
	ID     uint64 `json:"id"`
	Hello  bool   `json:"hello,omitempty"`
	Stdout []byte `json:"stdout,omitempty"`
	Stderr []byte `json:"stderr,omitempty"`
	// Exit is the shell-style exit status: 128+N when killed by signal N.
	Exit int `json:"exit"`
	// Err is set when the command could not be started at all.
	Err string `json:"err,omitempty"`
}
