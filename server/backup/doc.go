// Package backup stores backups of block volumes off the storage node and
// reads them back: the format (docs/backup-format.md), the targets (a
// directory, an S3 bucket) and the engine that takes, lists, verifies,
// restores and removes backups. It knows nothing of the registry or of
// qcow2: the storage daemon (package server) gives it a frozen image to
// read and the clusters that changed since the previous backup.
//
// # Layout on a target
//
//	chunks/<h[:2]>/<h>               a chunk's data; h is its SHA-256 in hex
//	backups/<volume>/<id>.index      a backup's chunk list (written first)
//	backups/<volume>/<id>.json       its manifest (written last: the commit)
//
// A backup is the chunks of every cluster of the volume that is not all
// zeros, each named by its checksum, so identical data is stored once,
// across backups and volumes. Its manifest lists every chunk of the
// volume (through its index): a backup restores on its own, and removing
// one never breaks another. An incremental backup reads only the
// clusters changed since its parent and takes the others' checksums from
// the parent's index.
//
// # Crash safety
//
// Chunks and the index are put first, the target is synced (a directory's
// file system: one syncfs), and the manifest is put last in one atomic
// put (a rename into place, synced with its directory; one S3 PUT). A
// backup cut short leaves chunks and maybe an index, never a manifest: it
// is not listed, and GC removes what it left once older than the grace
// period. Restore and Verify check every chunk's length and checksum and
// fail naming the first that is missing or wrong (errdefs.ErrCorrupt).
//
// The package does not log; every call to a target has a deadline
// (EngineOptions.CallTimeout).
package backup
