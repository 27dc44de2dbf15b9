#!/usr/bin/env bash
# The userspace attach of block volumes (`netvol plugin --attach userspace`):
# ext4 on a loop device on the FUSE file an attach helper serves over NBD
# from `netvol server` on loopback, beside the reference, the same chain
# (helper, FUSE file, loop device, ext4) over a local qcow2 image that the
# helper opens itself, without the NBD hop and the daemon. In one run:
# sequential 1 MiB writes (with the closing fsync) and reads, 4 KiB random
# writes (with the closing fsync) and reads with QD requests in flight, all
# O_DIRECT inside the mounted ext4, and 4 KiB write+fdatasync pairs one at a
# time; each test runs on both targets back to back, RUNS times; medians and
# the ratio nbd/reference.
#
# Settings: volumes of 2 GiB (qcow2, the daemon's 64 KiB clusters), ext4
# made as the plugin makes it but with inode tables and journal initialised
# at once (no background zeroing during the runs), a FILE_MIB test file.
# Needs root, /dev/fuse, loop devices and mkfs.ext4; the work directory
# (TMPDIR, default /var/tmp) must be on a disk.
set -euo pipefail
PROG=userspace-attach
cd "$(dirname "$0")/.."
. bench/lib.sh
[ "$(id -u)" = 0 ] || { echo "$PROG: needs root (FUSE mounts, loop devices)" >&2; exit 1; }
need mkfs.ext4 "apt-get install e2fsprogs"
need go "Go 1.26"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/netvol-attachbench.XXXXXX")
trap 'rm -rf "$work"' EXIT
on_disk "$work"
log "building netvol and the benchmark into $work"
go build -trimpath -o "$work/netvol" ./cmd/netvol
go build -trimpath -o "$work/attachbench" ./bench/attachbench
"$work/attachbench" -netvol "$work/netvol" -work "$work/run" -runs "${RUNS:-5}" -file-mib "${FILE_MIB:-256}" -qd "${QD:-16}"
