package nbd

import (
	"sync"
	"sync/atomic"
	"time"
)

// LatencyBucketCount is the number of bounded buckets of the latency histogram.
const LatencyBucketCount = 14

// LatencyBuckets returns the upper bounds of the latency histogram in
// CmdStats; the last bucket of Histogram counts everything slower.
func LatencyBuckets() [LatencyBucketCount]time.Duration {
	return [...]time.Duration{
		50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond,
		500 * time.Microsecond, time.Millisecond, 2500 * time.Microsecond,
		5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond,
		50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
		500 * time.Millisecond, time.Second,
	}
}

// CmdStats counts the requests of one command type.
type CmdStats struct {
	Requests uint64        // answered requests, failed ones included
	Errors   uint64        // answered with an error
	Bytes    uint64        // length of the successful requests
	Latency  time.Duration // total time from dispatch to reply
	// Histogram counts requests by latency: Histogram[i] those not slower
	// than LatencyBuckets()[i], the last one the rest.
	Histogram [LatencyBucketCount + 1]uint64
}

// Stats is a snapshot of a Server's counters. Requests refused before they
// ran (past the end, read-only) count as errors with zero latency.
type Stats struct {
	Connections int64 // connections in the transmission phase now
	InFlight    int64 // requests being served now
	Commands    map[Cmd]CmdStats
}

// stats holds the live counters, updated atomically.
type stats struct {
	conns    atomic.Int64
	inflight atomic.Int64
	cmds     [CmdWriteZeroes + 1]cmdCounters
}

type cmdCounters struct {
	requests, errors, bytes, nanos atomic.Uint64
	hist                           [LatencyBucketCount + 1]atomic.Uint64
}

func (s *stats) connected(delta int64) { s.conns.Add(delta) }

func (s *stats) record(cmd Cmd, length uint32, errno Errno, d time.Duration) {
	if int(cmd) >= len(s.cmds) {
		return
	}
	c := &s.cmds[cmd]
	c.requests.Add(1)
	if errno != 0 {
		c.errors.Add(1)
	} else {
		c.bytes.Add(uint64(length))
	}
	c.nanos.Add(uint64(d))
	bounds, i := LatencyBuckets(), 0
	for i < len(bounds) && d > bounds[i] {
		i++
	}
	c.hist[i].Add(1)
}

func (s *stats) snapshot() Stats {
	out := Stats{Connections: s.conns.Load(), InFlight: s.inflight.Load(), Commands: make(map[Cmd]CmdStats)}
	for i := range s.cmds {
		c := &s.cmds[i]
		cs := CmdStats{
			Requests: c.requests.Load(),
			Errors:   c.errors.Load(),
			Bytes:    c.bytes.Load(),
			Latency:  time.Duration(c.nanos.Load()),
		}
		for j := range c.hist {
			cs.Histogram[j] = c.hist[j].Load()
		}
		if cs.Requests > 0 {
			out.Commands[Cmd(i)] = cs
		}
	}
	return out
}

// bufferPool recycles request and reply buffers in power-of-two classes
// from 4 KiB to MaxPayloadSize.
type bufferPool struct {
	classes [14]sync.Pool
}

const minBufferShift = 12

func bufferClass(n int) int {
	c := 0
	for (1<<(minBufferShift+c)) < n && c < 13 {
		c++
	}
	return c
}

func (p *bufferPool) get(n int) []byte {
	if n > MaxPayloadSize {
		return make([]byte, n)
	}
	c := bufferClass(n)
	if b, ok := p.classes[c].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 1<<(minBufferShift+c))
}

func (p *bufferPool) put(b []byte) {
	if cap(b) < 1<<minBufferShift || cap(b) > MaxPayloadSize || cap(b)&(cap(b)-1) != 0 {
		return
	}
	c := bufferClass(cap(b))
	b = b[:cap(b)]
	p.classes[c].Put(&b)
}
