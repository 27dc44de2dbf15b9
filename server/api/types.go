package api

import "time"

// The control API's JSON types: what the storage daemon (package server)
// answers and what this package's Client sends, one definition each.

// Volume is a volume as the API shows it.
type Volume struct {
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	Allocated int64     `json:"allocated"`
	CreatedAt time.Time `json:"created_at"`
	From      string    `json:"from"`
	// FromSnapshot: the snapshot of From the volume was cloned from ("" for
	// a clone of From as it was).
	FromSnapshot string            `json:"from_snapshot,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	Attachments  []Attachment      `json:"attachments"`
	Snapshots    []Snapshot        `json:"snapshots"` // oldest first
}

// Snapshot is a snapshot of a volume: its data as it was when the snapshot
// was taken (every write flushed before it, crash-consistent).
type Snapshot struct {
	Name      string    `json:"name"`
	Volume    string    `json:"volume"`
	CreatedAt time.Time `json:"created_at"`
	Size      int64     `json:"size"`      // the volume's size then
	Allocated int64     `json:"allocated"` // bytes its layer holds: the clusters changed between it and the one before
	Clones    []string  `json:"clones,omitempty"`
}

// SnapshotRequest is the body of POST /v1/volumes/{name}/snapshots.
type SnapshotRequest struct {
	Name string `json:"name"`
}

// RollbackRequest is the body of POST /v1/volumes/{name}/rollback.
type RollbackRequest struct {
	Snapshot string `json:"snapshot"`
}

// Attachment is a node's attachment as the API shows it. ExpiresInMS is
// the time its lease has left on the daemon's clock, 0 once it lapsed:
// judge a lease by it, not by comparing Expires with another clock.
type Attachment struct {
	Node        string    `json:"node"`
	Mode        string    `json:"mode"`
	Generation  uint64    `json:"generation"`
	Expires     time.Time `json:"expires"`
	ExpiresInMS int64     `json:"expires_in_ms"`
	// LostWrites: the storage node went down uncleanly while this attachment
	// could write (see Lease); its flushes fail until it detaches.
	LostWrites bool `json:"lost_writes,omitempty"`
	// Grown is the size in bytes the holder last reported its device and
	// file system to have (GrownReport), 0 when it reported none since the
	// storage daemon started; GrowError is why it could not grow them.
	Grown     int64  `json:"grown,omitempty"`
	GrowError string `json:"grow_error,omitempty"`
}

// CreateRequest is the body of POST /v1/volumes. Size may be left zero
// for a clone (From), which then gets its source's size.
type CreateRequest struct {
	Name string `json:"name"`
	Size Size   `json:"size,omitempty"`
	From string `json:"from,omitempty"`
	// FromSnapshot clones a snapshot of From instead of From as it is.
	FromSnapshot string            `json:"from_snapshot,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	// FromBackup restores a backup (its ID) as the new volume, of the
	// backup's size unless Size is larger. Not with From.
	FromBackup string `json:"from_backup,omitempty"`
}

// Backup is a complete backup of a volume on the storage daemon's backup
// target: the volume's data as it was at a snapshot (crash-consistent).
type Backup struct {
	ID        string    `json:"id"`
	Volume    string    `json:"volume"`
	Snapshot  string    `json:"snapshot"` // the (hidden) snapshot it was read from
	CreatedAt time.Time `json:"created_at"`
	Size      int64     `json:"size"` // the volume's
	// StoredBytes is what this backup added to the target (new chunks and
	// its index); DataBytes the volume's data it holds (clusters that are
	// not all zeros), shared with other backups through content addressing.
	StoredBytes int64 `json:"stored_bytes"`
	DataBytes   int64 `json:"data_bytes"`
	Chunks      int64 `json:"chunks"`
	// Parent is the backup this one is incremental to ("" for a full one).
	// Every backup restores on its own; none depends on its parent.
	Parent string `json:"parent"`
}

// BackupVerify answers POST /v1/backups/{id}/verify: every chunk was
// read back and matched its checksum.
type BackupVerify struct {
	ID     string `json:"id"`
	Chunks int64  `json:"chunks"`
	Bytes  int64  `json:"bytes"`
}

// AttachRequest is the body of POST /v1/volumes/{name}/attachments.
type AttachRequest struct {
	Node string `json:"node"`
	Mode string `json:"mode"`
}

// Grant answers an attach: the NBD export name to present, the attachment's
// generation and its lease: the expiry on the daemon's clock and the time
// left, which a client counts on its own clock. Fenced names the nodes
// whose read-write attachments this attach took over: their connections
// are closed and their exports refused, so nothing they still send reaches
// the image.
type Grant struct {
	Export      string    `json:"export"`
	Generation  uint64    `json:"generation"`
	Expires     time.Time `json:"expires"`
	ExpiresInMS int64     `json:"expires_in_ms"`
	Fenced      []string  `json:"fenced,omitempty"`
	// Instance names this run of the daemon (see Lease).
	Instance string `json:"instance,omitempty"`
}

// Lease answers a renew, as in Grant.
type Lease struct {
	Expires     time.Time `json:"expires"`
	ExpiresInMS int64     `json:"expires_in_ms"`
	// Instance names this run of the daemon: when it differs from the one
	// seen before, the daemon restarted and closed every NBD connection, so
	// the client must connect again (the export name stays valid).
	Instance string `json:"instance,omitempty"`
	// LostWrites: the storage node went down uncleanly while this
	// attachment could write; writes it had not flushed may be gone and its
	// flushes fail. A kernel device should be failed, not reconnected.
	LostWrites bool `json:"lost_writes,omitempty"`
	// Size is the volume's size in bytes. When it is larger than the
	// holder's device, the volume was resized: the holder grows the device
	// and the file system on it, then reports (GrownReport).
	Size int64 `json:"size,omitempty"`
}

// GrownReport is the body of POST
// /v1/volumes/{name}/attachments/{node}/grown: the holder's device and
// file system now have Size bytes, or could not grow (Error says why).
type GrownReport struct {
	Size  int64  `json:"size"`
	Error string `json:"error,omitempty"`
}

// ResizeResult answers a resize: the volume (200), and when some holder
// has not grown its device and file system to the new size within the
// daemon's wait, who and why (202). The image has grown either way.
type ResizeResult struct {
	Volume
	Pending []PendingGrowth `json:"pending,omitempty"`
}

// PendingGrowth is a holder that has not reported the new size yet.
type PendingGrowth struct {
	Node  string `json:"node"`
	Grown int64  `json:"grown"` // the size it last reported, 0 for none
	Why   string `json:"why"`
}

// Health is the answer of GET /healthz.
type Health struct {
	Status string `json:"status"`        // "ok"
	NBD    string `json:"nbd,omitempty"` // NBD address: host:port or unix:/path
}

// ResizeRequest is the body of POST /v1/volumes/{name}/resize.
type ResizeRequest struct {
	Size Size `json:"size"`
}
