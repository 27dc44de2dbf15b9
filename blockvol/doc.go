// Package blockvol is the backend of block (nbd) volumes: each volume is a
// qcow2 image on a storage daemon, served over NBD, attached on this host as
// a block device and mounted as ext4 (see docs/design.md, "Data flow").
//
// Read contract.go first: the interfaces the backend needs (API, Attacher,
// Mounter, Formatter), all injected through Config, so the logic runs in
// tests with fakes and a real in-process storage daemon.
//
// # Mount
//
//  1. Attach read-write through the control API: an export name (a secret),
//     a generation and a lease. While another node holds the volume, Mount
//     waits for its lease to lapse (asking again every second) as long as
//     that fits in the call's deadline less a margin (held.go); otherwise
//     it fails with a *HeldError naming the holder and when to retry.
//  2. The NBD address comes from Config.NBDAddr, or from GET /healthz: the
//     API's host with the daemon's NBD port, or its unix: socket as is.
//  3. The Attacher dials (TCP without Nagle, or a unix socket), negotiates
//     with the export name (NBD_OPT_GO) and makes a block device of it.
//  4. The device is probed: an ext2/3/4 superblock (magic 0xEF53 at
//     byte 1080) is mounted as it is; a first MiB of zeroes is a blank
//     volume and is formatted (mkfs.ext4, lazy init, multi-mount
//     protection); anything else is refused, never formatted over. A
//     multi-mount protection block left unclean by a node this attach
//     fenced, or by this host when its own mount of the volume is gone
//     (an attach helper that died with a managed plugin's container), is
//     reset to clean; any other unclean block is checked within the
//     call's deadline (mmp.go).
//  5. ext4 is mounted at the target with errors=remount-ro unless the
//     options say otherwise; <target>/data is made (mode, owner) when
//     missing, so Docker gets a directory without lost+found.
//  6. From step 1 on, a goroutine renews the lease every third of its
//     duration (formatting may outlast a lease), until Unmount or Close.
//
// A failure undoes the steps done so far, in reverse order (unmount, release
// the device, detach), and the error names the volume and the step.
//
// # Unmount
//
// Unmount unmounts first and stops renewing only once that worked: a file
// system still mounted keeps its lease. Then it releases the device and
// detaches; each step succeeds when there is nothing to undo, so Unmount
// also cleans up after a crash.
//
// # Leases
//
// Lease timing counts the time left that the server reports on this
// host's clock; no clock is compared with the server's. Renewal failures
// are retried (every sixth of the lease). A lease counts as lost when
// renewal has failed past its term; Fenced reports it, Get shows "lease":
// "lost" and "lease_lost" (why), and the log says so. A later renewal that
// succeeds makes it "ok" again: the server renews a lapsed lease only when
// nobody took it over or cloned the volume.
//
// When the server no longer knows the attachment (taken over by another
// node, detached, or removed by a clone of the volume made while the lease
// had lapsed) or refuses to renew it (in_use: a read-write attachment of a
// volume that has clones) the volume is fenced for good: renewal stops, and the
// device is released at once, so that I/O on it fails now rather than when
// the kernel gives up on the closed connections (request timeout, then
// dead-connection timeout). The file system stays mounted, failing, until
// Docker's Unmount, which then succeeds: unmount, release (already done),
// detach (already gone).
//
// # Errors
//
// Failures of the control API are mapped to the backend's vocabulary
// (backend.ErrNotFound, ErrExists, ErrInUse, ErrInvalid, ErrUnavailable)
// while keeping the server's message; export names never appear in errors
// or logs (they are credentials).
//
// # Not supported
//
//   - NBD over TLS: the kernel cannot take a TLS connection.
//   - File systems other than ext4, read-only mounts, a per-volume server
//     (Options.Server): one backend talks to one storage daemon.
package blockvol
