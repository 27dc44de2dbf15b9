// Package blockvol is the backend of block (nbd) volumes: each volume is a
// qcow2 image on a storage daemon, served over NBD, attached on this host as
// a block device and mounted as ext4 (see DESIGN.md, "Data flow").
//
// Read contract.go first: the interfaces the backend needs (API, Attacher,
// Mounter, Formatter), all injected through Config, so the logic runs in
// tests with fakes and a real in-process storage daemon.
//
// # Mount
//
//  1. Attach read-write through the control API: an export name (a secret),
//     a generation and a lease expiry.
//  2. The NBD address comes from Config.NBDAddr, or from GET /healthz: the
//     API's host with the daemon's NBD port, or its unix: socket as is.
//  3. The Attacher dials (TCP without Nagle, or a unix socket), negotiates
//     with the export name (NBD_OPT_GO) and makes a block device of it.
//  4. The device is probed: an ext2/3/4 superblock (magic 0xEF53 at
//     byte 1080) is mounted as it is; a first MiB of zeroes is a blank
//     volume and is formatted (mkfs.ext4, lazy init); anything else is
//     refused, never formatted over.
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
// Renewal failures are retried (every sixth of the lease). A lease counts as
// lost when the server no longer knows the attachment (detached or taken
// over) or when renewal has failed past its expiry; Fenced reports it and
// Get shows "lease": "lost". A later renewal that succeeds makes it "ok"
// again: the server renews a lapsed lease only when nobody took it over.
// What to do about a lost lease (fencing the device) is left to the caller.
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
