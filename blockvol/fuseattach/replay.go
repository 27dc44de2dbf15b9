package fuseattach

// replayLog keeps the writes and zeroings the server acknowledged since the
// last flush that covers them. The server may hold those in memory only
// (the daemon writes qcow2 metadata back at flush time), so a daemon that
// restarts may have lost them; the session replays the log on every new
// connection before it sends anything else, and a flush then makes them
// durable. Without the log, a flush after a reconnect would claim
// durability for writes the old daemon had dropped.
//
// Not safe for concurrent use: the Session's mutex guards it.
type replayLog struct {
	entries []logEntry
	first   uint64 // seq of entries[0]
	bytes   int64  // memory held, for the limit
}

// logEntry is one acknowledged change: data written at off, or (data nil)
// n bytes zeroed.
type logEntry struct {
	off      int64
	n        int64
	data     []byte
	mayUnmap bool
}

// entryOverhead is what an entry counts against the limit beyond its data.
const entryOverhead = 64

// add appends e (data already copied) and returns its seq.
func (l *replayLog) add(e logEntry) uint64 {
	l.entries = append(l.entries, e)
	l.bytes += int64(len(e.data)) + entryOverhead
	return l.next() - 1
}

// next is the seq the next entry will get; entries below it are in the log
// or were dropped by a flush.
func (l *replayLog) next() uint64 { return l.first + uint64(len(l.entries)) }

// drop forgets the entries below seq: a flush sent after they were
// acknowledged has succeeded.
func (l *replayLog) drop(seq uint64) {
	if seq <= l.first {
		return
	}
	k := int(min(seq-l.first, uint64(len(l.entries))))
	for _, e := range l.entries[:k] {
		l.bytes -= int64(len(e.data)) + entryOverhead
	}
	// Copy the rest down so the dropped entries' buffers can be collected.
	rest := copy(l.entries, l.entries[k:])
	clear(l.entries[rest:])
	l.entries = l.entries[:rest]
	l.first += uint64(k)
}

// since returns a copy of the entries from seq on; their data is shared
// (never written after add).
func (l *replayLog) since(seq uint64) []logEntry {
	seq = max(seq, l.first)
	return append([]logEntry(nil), l.entries[min(int(seq-l.first), len(l.entries)):]...)
}
