// Package server is the storage daemon's service (netvol server): it owns the
// data directory, the registry (state.Registry) and the open qcow2 images,
// serves the images to the NBD server as nbd.Exports, and exposes the control
// API v1 over HTTP (see docs/design.md, "Control API").
//
// # Data directory
//
//	<data>/registry.db          the registry (BoltDB)
//	<data>/volumes/<name>.qcow2 one image per volume
//	<data>/volumes/.tmp-*       images being created
//
// Creating a volume writes its image under a temporary name, renames it into
// place without replacing anything (RENAME_NOREPLACE), then commits the
// registry entry; when the commit fails the image is removed. A crash
// between the rename and the commit leaves an image the registry does not
// know: Open removes those, and any temporary image, before serving.
// Deleting commits first and removes the image after the commit.
//
// # Export names and fencing
//
// Attach issues an export name "<volume>.<token>", the token 32 random bytes
// in unpadded base64url. The registry keeps only the token's SHA-256. The NBD
// server's Open resolves a name by that hash and serves it only while the
// attachment is recorded and its lease is live; read-only attachments get a
// read-only export. Detach, a takeover (state.AddAttachment) and Delete
// revoke the export, which closes its connections (nbd.Export.Revoke).
// Revoking waits for the requests the old connections had in flight, so
// once the taker's Attach has returned nothing of the old holder lands.
// All connections to a volume share one *qcow2.Image, opened on first use
// and kept open until the volume is deleted or the service closed.
//
// # Leases
//
// Leases run on the daemon's own clock and survive a restart with a fresh
// term (see lease.go). A conflict answer names the holder, its mode, its
// expiry and the time its lease has left (errorBody).
//
// # Clones
//
// A volume created with "from" is a qcow2 overlay whose backing file is the
// source image (a relative name). A clone reads its source through an
// image handle of its own, with its own cached tables, so the source must
// not change under its clones: a volume with clones is immutable.
//
// Cloning makes the source immutable in the clone's own registry
// transaction (state.Registry.CloneVolume): it is refused (in_use, naming
// the holder) while a read-write attachment of the source is live, and
// removes the source's lapsed read-write attachments, whose holders may
// still be connected and writing (a plugin down or cut off for longer than
// the lease). After the commit, and before the service lock is released
// (so before anyone can attach or read the clone), their exports are
// revoked, which closes their connections and waits for their requests in
// flight, and the source's shared image is flushed: the clone reads the
// source as it was then. Their holders' renewals get not_found from then
// on, and their export names are refused.
//
// A read-write attach of a volume with clones is refused (in_use), and so
// are a resize, the renewal of a read-write attachment (in_use) and the
// opening of a read-write export (nbd.ErrUnknownExport); the last two
// matter only for an attachment recorded before cloning removed them.
// Read-only attachments of a source are unaffected.
package server
