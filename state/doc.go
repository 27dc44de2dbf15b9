// Package state holds netvol's persistent state in BoltDB (bbolt): the
// storage daemon's Registry of volumes and attachments, and each Docker
// host's NodeStore of known volumes and mounts.
//
// The package owns bbolt: callers see typed methods, never a transaction.
// Every method that changes state is one write transaction, so a crash
// leaves the old or the new state, never a mix. Errors wrap ErrNotFound,
// ErrExists, ErrInUse (*InUseError), ErrConflict (*ConflictError),
// ErrInvalid, ErrLocked and ErrSchema; check them with errors.Is/As.
// The package does not log.
//
// Names (volumes, nodes, mount IDs, exports) are opaque: only the empty
// name and names longer than a bbolt key are refused. Each name is a whole
// key of its own, so a '/' in a name is just a byte.
//
// Values are JSON objects with a "v" field (record version). Counters are
// decimal ASCII.
//
// # Registry (netvol server)
//
//	v1/
//	  kind          "registry"
//	  version       migration level, e.g. "4"
//	  volumes/
//	    <volume>/
//	      record        {v, size, file, parent, from_snapshot, template, created, labels}
//	      generation    last attachment generation issued (never reused)
//	      attachments/
//	        <node>      {v, mode, generation, expires, export, token_sha256}
//	      children/
//	        <volume>    snapshot it was made from ("": this volume's own
//	                    image, a clone made before snapshots; it keeps the
//	                    volume immutable until a snapshot freezes the image)
//	      snapshots/    (schema 2)
//	        <snapshot>  {v, file (the frozen layer), created, size, hidden}
//	      backup        (schema 4) {v, base (hidden snapshot: the last backup's
//	                    state), last (its backup ID), last_at, dropping (the
//	                    previous base being merged away), drop_mode}
//	  exports/
//	    <export name>   {v, volume, node}  index of attachments by export
//	  tokens/
//	    <sha256 [32]>   {v, volume, node}  index of attachments by token hash
//	  names/        (schema 3)
//	    <volume>        {v, server, created}  pool name claim: this server is
//	                    the name's home (rendezvous hashing over the pool) and
//	                    records which server of the pool holds the volume
//
// # NodeStore (netvol plugin)
//
//	v1/
//	  kind          "node"
//	  version       migration level, e.g. "1"
//	  volumes/
//	    <volume>    {v, type, options, server, export, created, status, status_at}
//	  mounts/
//	    <volume>    {v, mountpoint, device, method, export, generation, subdir, ids: {id: count}}
//
// # Schema versions
//
// The top bucket names the schema (v1); its version key counts the
// migrations applied. Opening a database runs the pending migrations of
// registrySchema or nodeSchema in one transaction, and refuses a file of
// the other kind, a foreign bbolt file, or a version newer than this
// program (ErrSchema). Opening waits at most the timeout (DefaultTimeout,
// WithTimeout) for another holder of the file and then fails with
// ErrLocked.
package state
