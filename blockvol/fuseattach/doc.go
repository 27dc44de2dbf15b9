// Package fuseattach attaches NBD exports as block devices in userspace,
// for kernels without the NBD driver (WSL2, many cloud and microVM kernels):
// the export is served as the one file of a FUSE file system, and a loop
// device is put on that file. blockvol then formats and mounts it as it
// does a /dev/nbdN. The Device is {Path: "/dev/loopN", Method:
// "userspace"}.
//
// # The chain, and durability
//
//	ext4 → /dev/loopN → <dir>/fuse/disk (FUSE) → attach helper → NBD → storage daemon
//
// The loop device opens the file O_DIRECT (direct, asynchronous I/O: no
// second page cache, many requests in flight; FUSE_ASYNC_DIO, 128
// background requests, requests up to 1 MiB). A flush of the block device
// becomes fsync of the file in the loop driver (with direct I/O or not),
// FUSE_FSYNC to the helper, and NBD_CMD_FLUSH to the server; fsync returns
// only after the server answered the flush. The FUSE writeback cache is not
// used: the loop device never goes through the page cache. Discard and
// write-zeroes become fallocate (PUNCH_HOLE, ZERO_RANGE) and then
// NBD_CMD_WRITE_ZEROES, never TRIM (whose blocks may read back as
// anything).
//
// # The helper process
//
// Each attachment is served by its own process (netvol attach-helper,
// argv[0] "@netvol-attach-helper"), started by the plugin in a session of
// its own, so it outlives a restart or crash of the plugin. It reads its
// configuration, which holds the export name (a credential), as JSON on
// stdin, never from argv or the environment; it reports the device on fd 3.
// Its directory <state-dir>/attach/<id> holds its control socket (ctl.sock:
// "status", "stop"), its pid, the device and the FUSE mount; its log is
// <id>.log beside it.
//
// Attacher (the plugin side) finds a helper again from a device alone: the
// loop device's backing file (sysfs) lies in the helper's directory. So
// Detach works on devices of earlier runs (the mount record keeps the
// device path), and a device bound to another file is never touched. At
// start, Adopt keeps the helpers whose device a file system uses, stops
// those whose device nothing uses, and cleans up after helpers that died
// (lazy unmount of the FUSE file system, loop device cleared; a file system
// still mounted on it gets I/O errors until remounted, as with a dead
// kernel NBD connection).
//
// Detach of a device still mounted (the plugin fencing a volume whose lease
// it lost) releases it at once: its I/O fails from then on, and the loop
// device, marked autoclear, goes when the file system is unmounted. A
// SIGTERM stops a helper only while its device is unused, so a shutdown
// that signals every process does not fail a file system about to be
// unmounted through it.
//
// # Lost connections
//
// Session keeps the export, over two connections when the server allows
// several (NBD_FLAG_CAN_MULTI_CONN). Requests on a broken connection (an
// error, or no answer within RequestTimeout) wait while it dials again and
// negotiates the same export name, then go out again; past
// ReconnectTimeout they fail with EIO (the file system then goes
// read-only), and dialing goes on in the background. Writes the server
// acknowledged but no flush has covered are kept (up to ReplayLimit bytes;
// past it the session flushes by itself) and replayed on every new
// connection first: a daemon that restarted may have lost them (qcow2
// metadata is written at flush), and a flush after the
// reconnect must cover them too.
//
// # Growing
//
// A "grow" on the control socket (Attacher.Grow, when the volume was
// resized) makes the helper ask the server for the export's size on a
// connection of its own (Session.Refresh); the FUSE file takes it, the
// kernel is told its attributes are stale, and LOOP_SET_CAPACITY makes
// the loop device take the file's new size. The server serves the grown
// range on the connections already open.
//
// # Not supported
//
//   - Servers with a minimum block size above 1 for unaligned requests
//     (the loop device's are aligned to its 4096-byte blocks).
//   - Helpers inside a managed plugin's container outlive the plugin only as
//     long as that container.
package fuseattach
