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
// # Snapshots, rollback and clones
//
// External qcow2 layers (the "why" is in package qcow2's doc). A volume is
// its image (the registry's File, the top of a chain) and the layers
// below it, each a frozen snapshot:
//
//	<data>/volumes/db.qcow2            s1's layer (the volume's first image)
//	<data>/volumes/db.3f9a01c2d4e5.qcow2  s2's layer, backed by db.qcow2
//	<data>/volumes/db.77b0e1aa0c12.qcow2  db's image, backed by s2's layer
//
// Taking a snapshot freezes the volume's image under its open exports
// (freeze, in snapshot.go): every export serves a liveImage, which the
// daemon switches between requests; the requests in flight finish, the
// image is closed (flushed, intent log emptied, dirty bit cleared), a new
// empty image over it is created and opened, one registry transaction
// records the snapshot and the new image, and requests go on against the
// new image. The client sees one slower request: no error, no reconnect,
// and its writer is never on the frozen layer again (issue 12's fencing
// rule: nothing that makes a layer immutable leaves a writer on it).
//
// A clone is an overlay of a snapshot's layer (from_snapshot), or of the
// volume as it is: that takes a hidden snapshot (named "@<clone>.<time>",
// a name users cannot give) in the clone's own transaction. The source
// goes on, read-write, attached or not. A hidden snapshot is merged away
// when its last clone is deleted (and at start, should a crash have come
// in between).
//
// Rollback (of a detached volume) replaces the volume's image with a new
// empty one over the snapshot's layer and deletes the old image; later
// snapshots stay, their layers a branch beside the volume's chain.
//
// Deleting a snapshot merges its layer into the images that read it (the
// volume's image or the next snapshot's layer): each pulls in the clusters
// the layer holds and it does not, then names the layer's own backing
// file (qcow2.Image.StreamBacking), so what every image reads stays the
// same at every step. Only then does the registry forget the snapshot,
// and then its file goes and the open images that read it are reopened.
// A snapshot clones were made from is kept (in_use, naming them). A volume
// deleted takes its snapshots along, refused while clones depend on any.
//
// Crash safety: every step is ordered so that a SIGKILL anywhere leaves
// every volume and snapshot as before or as after (TestKillAtEachSnapshotStep
// kills the daemon at each step named by Config.AtStep): new images are
// created under temporary names and renamed into place before the
// transaction that names them, files are deleted after the transaction
// that stops naming them, the start-up sweep removes images the registry
// does not know, and a layer left open for writing by a merge is
// recovered at start (its intent log replayed).
//
// # Backups
//
// backups.go, with package backup for the format, targets and engine
// (docs/design.md, "Backups"). A run: under the lock, finish a drop an
// earlier run left, then freeze the volume as hidden snapshot
// "@backup.<id>"; without the lock, read that layer's chain read-only and
// store it (only the clusters the layers above the volume's base hold,
// when the base is in the chain); under the lock again, one transaction
// makes the run's snapshot the base and records the previous base as
// being dropped (DropCommit: copy the new layer down into the old base's
// file, point the new layer's readers at it, FinishCommitDrop, delete the
// new layer's file; DropMerge: deleteSnapshot). recoverBackups finishes
// drops and merges away the snapshots of runs cut short at start;
// TestKillDuringBackup kills the daemon at each step (Config.AtStep) and
// mid-upload. recoverLayers leaves "@backup." snapshots alone.
//
// Clones made before snapshots existed (schema 1) read their source's own
// image: that source stays immutable for them (read-write attach, renewal
// and export refused, as issue 12 required) until a snapshot of it, which
// freezes that image as a layer and points those clones at it.
package server
