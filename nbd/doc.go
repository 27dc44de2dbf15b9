// Package nbd implements the Network Block Device protocol: the wire messages,
// a server that serves Backends (qcow2 images) to many clients, and a
// userspace client.
//
// Specification: https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md
//
// Read export.go first: it holds the contracts (Backend, Exports, Export).
// The wire protocol lives in proto_const.go (constants named as in the spec,
// with String giving the spec names) and proto_msg.go (one struct per message
// with encode and decode; every length is checked against a limit before
// anything is allocated).
//
// # Server
//
// Fixed newstyle handshake with NBD_OPT_GO, NBD_OPT_INFO (answering
// NBD_INFO_EXPORT, NBD_INFO_NAME, NBD_INFO_DESCRIPTION and
// NBD_INFO_BLOCK_SIZE: minimum 1, preferred 4096, maximum payload 32 MiB),
// NBD_OPT_EXPORT_NAME, NBD_OPT_ABORT, NBD_OPT_LIST (empty unless
// Server.ListExports) and NBD_OPT_STARTTLS (with Server.TLSConfig;
// Server.TLSRequired is the spec's FORCEDTLS mode). Other options are answered
// NBD_REP_ERR_UNSUP and negotiation goes on.
//
// Commands: READ, WRITE, FLUSH, TRIM, WRITE_ZEROES (NO_HOLE honoured), CACHE
// (accepted, no effect) and DISC, with FUA on any of them (the Backend is
// flushed after the write and before the reply). Every export advertises
// HAS_FLAGS, SEND_FLUSH, CAN_MULTI_CONN and SEND_CACHE; writable ones also
// SEND_FUA, SEND_TRIM and SEND_WRITE_ZEROES; read-only ones READ_ONLY, and
// writes to them are answered NBD_EPERM.
//
// Requests of one connection run concurrently (at most Server.MaxInFlight)
// and are answered as they complete, one whole reply at a time; a reply
// header goes out only after its operation succeeded, followed by its data.
//
// Flush: NBD_CMD_FLUSH calls Backend.Flush, which covers every write that
// returned before it. A write is answered only after it returned, so a flush
// covers every write answered before the flush was received, as the spec
// requires; it does not wait for writes still in flight (the spec does not
// ask it to, and the kernel waits for those replies before flushing).
//
// Errors: Backend errors become NBD errors in one place (errnoOf in
// errors.go). A request that reaches past the end of the export is answered
// NBD_EINVAL, or NBD_ENOSPC for WRITE and WRITE_ZEROES as the spec asks; a
// READ or WRITE over MaxPayloadSize, an unknown command or flag, NBD_EINVAL.
// The stream stays in sync: the payload of a refused WRITE is read and
// dropped, up to 128 MiB; a longer one, a bad magic or a malformed handshake
// closes that connection only.
//
// Limits: the buffers of the requests in flight of all connections to one
// export share one budget (Server.MaxExportBuffered, 64 MiB); an export
// takes at most Server.MaxExportConns connections (NBD_REP_ERR_POLICY
// beyond). The handshake has one deadline for reads and writes
// (HandshakeTimeout) and at most MaxHandshakes run at once; a transmission
// reply that cannot go out within ReplyTimeout closes the connection.
// Export names are never logged or put in errors whole: the part after the
// last '.' (the storage daemon's token) is redacted.
//
// Fencing: Export.Revoke closes the connections serving an export, waits for
// their requests in flight and refuses the export afterwards.
//
// # Client
//
// Negotiate runs the handshake (STARTTLS optionally, then NBD_OPT_GO asking
// for block sizes, name and description, falling back to
// NBD_OPT_EXPORT_NAME); NewClient runs the transmission phase with many
// requests in flight; Dial does both.
//
// # Kernel attach
//
// KernelConnect hands connections that Negotiate returned (not a Client's:
// its reply reader would compete with the kernel) to the Linux NBD driver
// over generic netlink and returns the device index (/dev/nbdN);
// KernelReconfigure replaces dead connections; KernelDisconnect ends it. It
// uses only the syscall package. The host has no NBD driver, so its tests
// here cover the netlink plumbing only; the attach was checked by hand in a
// guest (see kernel_linux_test.go).
//
// # Not supported
//
//   - Oldstyle and non-fixed newstyle negotiation on the client side (the
//     server still accepts NBD_OPT_EXPORT_NAME from such clients).
//   - NBD_OPT_STRUCTURED_REPLY and everything that needs it: NBD_CMD_FLAG_DF,
//     NBD_OPT_LIST_META_CONTEXT, NBD_OPT_SET_META_CONTEXT,
//     NBD_CMD_BLOCK_STATUS (answered NBD_REP_ERR_UNSUP / NBD_EINVAL).
//   - NBD_CMD_FLAG_FAST_ZERO (NBD_FLAG_SEND_FAST_ZERO is not advertised).
//   - Experimental extensions: EXTENDED_HEADERS, RESIZE.
//   - TLS-PSK, and SELECTIVETLS with per-export TLS requirements.
//   - Block sizes other than the defaults (minimum 1, preferred 4096).
package nbd
