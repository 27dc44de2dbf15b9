// Package qcow2 reads and writes QEMU's qcow2 disk image format, the format
// every netvol block volume lives in.
//
// The format is specified in QEMU's docs/interop/qcow2.txt. In short: a header
// in cluster 0; a two-level table (L1 → L2 → data cluster) maps guest clusters
// to host clusters; a two-level refcount structure (refcount table → refcount
// blocks) counts the references to every host cluster; an optional backing file
// supplies the data of clusters the image does not hold (linked clones).
//
// What this package writes: version 3 images, 16-bit refcounts, no internal
// snapshots, zlib-free (it never compresses). It reads version 2 and 3 images,
// deflate and zstd compressed clusters, zero clusters, cluster sizes from 512
// bytes to 2 MiB and backing chains of qcow2 or raw images.
//
// Not supported, refused at Open with an error naming the feature: encryption,
// external data files, extended L2 entries (subclusters), unknown incompatible
// feature bits. Images with internal snapshots, refcount widths other than 16
// bits, or version 2 open read-only only.
//
// # Discard and WriteZeroes
//
// Both change exactly the bytes of their range, on any size and alignment.
// Clusters the range covers whole (the disk's last, partial cluster when the
// range covers it up to the disk end) are unmapped, or with WriteZeroes
// without mayTrim zeroed in place where the image owns them; the pieces of
// clusters covered in part are written with zeros unless they read as zeros
// already. Zero-length ranges change nothing. Host clusters WriteZeroes
// unmaps are released as Discard's are (step 4 under Crash safety).
//
// # Concurrency
//
// ReadAt and WriteAt may be called from many goroutines. Data I/O to clusters
// that are already allocated takes no lock beyond a short table lookup.
// Metadata (L1, L2 cache, refcounts) is guarded by one mutex, held only for
// in-memory updates and during Flush. Allocating a fresh cluster reserves it
// under the mutex, fills it without the mutex, then publishes the L2 entry, so
// readers of other clusters (and of the same cluster, which see the old data
// until the write completes) are never serialised behind the copy.
//
// # Crash safety
//
// Metadata is written back only at Flush (and when a dirty L2 table is evicted,
// which runs the same sequence), in an order that never lets a durable table
// point at something that is not durable:
//
//  1. refcount blocks and the refcount table, then fsync (this also makes every
//     data write before the Flush durable);
//  2. L2 tables, then fsync;
//  3. the L1 table, then fsync;
//  4. clusters freed by Discard are released (refcount decremented, hole
//     punched) only now, after the tables that stopped referencing them are
//     durable, so a crash can leak a cluster but never leave a reference to a
//     free one.
//
// A writable Open sets the header's dirty bit (incompatible feature bit 0) and
// Close clears it. Opening an image whose dirty bit is set rebuilds the
// refcounts from the tables, which repairs the clusters a crash leaked.
//
// # Acknowledged writes and crashes
//
// The ordered write-back makes flushed data survive any crash. Writes
// acknowledged since the last Flush need more, because the table entries
// that point at newly allocated clusters live in memory until then:
//
//   - A crash of the process (SIGKILL, a panic) keeps the page cache. Every L2
//     entry change is appended, before the write returns, to an intent log
//     beside the image (<image>.wal, see WALPath), in the page cache only, never
//     synced. The data itself was written to the file before the entry
//     changed. Open on the same boot replays the log on top of the durable
//     tables, writes them back and recounts the references, so every
//     acknowledged write is there. The log is emptied after every write-back
//     and removed by Close. The image file is never written out of order for
//     it, so a power cut still finds only what the ordered write-back made
//     durable.
//   - A crash of the machine loses the page cache and with it what was not
//     flushed. The log names the boot that opened the image (and is synced
//     when created); Open on another boot ignores the records and
//     LostWrites reports true (CheckLostWrites asks without opening).
//     Whoever served the image must then not let its clients believe that
//     their unflushed writes are durable: the storage daemon fails their
//     flushes.
//
// A failed fdatasync is remembered: Linux reports a writeback error only
// once, so every later Flush and write fails until the image is reopened.
//
// # Snapshots as external layers
//
// The storage daemon's snapshots are backing files, not internal qcow2
// snapshots, for four reasons. A snapshot must be taken under a writer
// that goes on writing: with layers the writer's image is closed and a
// new overlay opened in its place, and the layer never changes again, so
// no refcount of a shared cluster is ever touched under a running writer
// (internal snapshots would make every cluster's refcount 2 and the live
// writer copy on write through the same refcount structures the snapshot
// table depends on). Clones are overlays of a layer, which is what a
// linked clone already was. qemu-img info --backing-chain shows the
// structure and qemu-img check each file on its own. And deleting a
// snapshot is a merge that never changes what anything reads, so it is
// crash safe step by step (StreamBacking: PullBacking, then DropBacking,
// whose header change is one sector-sized write).
//
// Cost: a cluster the top image does not hold is read from the layer that
// does. Walking down the chain level by level would cost a lookup, a lock
// and a buffer clear per level; an image instead resolves each such
// cluster once to the layer holding it and remembers the answer (one byte
// per guest cluster of the ranges read; layers are read-only, so it never
// goes stale). Reads of a volume with twenty snapshots then cost one
// lookup more than without (BenchmarkChainRead4K). Writes to clusters the
// top holds cost the same; the first write to a cluster after a snapshot
// copies it up once (BenchmarkChainFirstWrite4K), as with any snapshot.
// Chains stay bounded: deleting a snapshot merges its layer away.
package qcow2
