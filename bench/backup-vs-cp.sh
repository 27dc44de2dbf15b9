#!/usr/bin/env bash
# Backups against cp: a full backup of a 1 GiB volume holding 512 MiB of
# random data to a directory target, beside `cp` of the same qcow2 image to
# the same file system (then sync: the backup syncs its target too), side
# by side, REPS repetitions (the one that goes first alternates), medians
# and the ratio of throughputs; then incrementals after writing 1% of the
# written clusters (82 of 8192) and 1% of the volume's clusters (164 of
# 16384), with what each stored against the full backup's bytes.
#
# Settings: the real daemon built by `make build` (into the work directory),
# --backup-target file://WORK/target on the same file system as the cp
# copy; the volume's image is written offline by qemu-img convert (the
# daemon stopped), random data in its first 512 MiB. Every full backup
# starts from an empty target (the previous run's chunks and manifests
# removed, untimed), so it stores every chunk. The image is in the page
# cache for both sides (each run reads it whole). Incremental writes go
# through NBD (qemu-io, an attachment made through the control API), each
# cluster random data of its own (nothing to deduplicate).
set -euo pipefail
PROG=backup-vs-cp
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
REPS=${REPS:-5}
need qemu-img "apt-get install qemu-utils"
need qemu-io "apt-get install qemu-utils"
need curl "apt-get install curl"
need go "install Go 1.26"

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/var/tmp}/netvol-backup-bench.XXXXXX")
on_disk "$work"
trap 'kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
(cd "$root" && go build -trimpath -o "$work/netvol" ./cmd/netvol)
nbd=$((20000 + RANDOM % 10000)); api=$((nbd + 1))
data=$work/data target=$work/target
start() {
  "$work/netvol" server --data "$data" --nbd-listen "127.0.0.1:$nbd" --api-listen "127.0.0.1:$api" \
    --lease-ttl 1h --backup-target "file://$target" --log-level warn >>"$work/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$api/healthz" >/dev/null && return; sleep 0.1; done
  echo "$PROG: the daemon did not start" >&2; cat "$work/server.log" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" || true; }
nv() { "$work/netvol" volume --server "127.0.0.1:$api" --token-file "$data/token" "$@"; }
now() { date +%s.%N; }

log "writing the volume (1 GiB, 512 MiB of random data)"
start
nv create db --size 1G >/dev/null
stop
head -c $((512 << 20)) /dev/urandom >"$work/random.raw"
truncate -s 1G "$work/random.raw"
qemu-img convert -n -f raw -O qcow2 "$work/random.raw" "$data/volumes/db.qcow2"
rm "$work/random.raw"
img=$data/volumes/db.qcow2
bytes=$((512 << 20))
start
results=$work/results
: >"$results"
run_cp() {
  local t0 t1
  t0=$(now); cp "$img" "$target.cp"; sync; t1=$(now)
  rm -f "$target.cp"
  echo "$1 cp $(echo "$t1 - $t0" | bc)" >>"$results"
}
run_backup() {
  local t0 t1
  rm -rf "${target:?}"/*
  t0=$(now); nv backup create db >/dev/null; t1=$(now)
  echo "$1 backup $(echo "$t1 - $t0" | bc)" >>"$results"
}
cat "$img" >/dev/null # into the page cache for both
for rep in $(seq "$REPS"); do
  if ((rep % 2)); then run_cp "$rep"; run_backup "$rep"; else run_backup "$rep"; run_cp "$rep"; fi
  log "rep $rep: $(tail -2 "$results" | tr '\n' ' ')"
done
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
mcp=$(awk '$2=="cp"{print $3}' "$results" | median)
mbk=$(awk '$2=="backup"{print $3}' "$results" | median)
full=$(nv backup ls db --json | awk -F': ' '/"stored_bytes"/{gsub(",","",$2); v=$2} END{print v}')
printf '%-40s %10s %10s %8s\n' "full backup, 512 MiB of data" "cp s" "backup s" "ratio"
printf '%-40s %10.3f %10.3f %8.2f   (backup MB/s %.0f, cp MB/s %.0f; ratio = backup throughput / cp throughput)\n' \
  "medians of $REPS" "$mcp" "$mbk" "$(echo "$mcp / $mbk" | bc -l)" \
  "$(echo "$bytes / 1000000 / $mbk" | bc -l)" "$(echo "$bytes / 1000000 / $mcp" | bc -l)"

# Incrementals: the last full backup is the parent.
export_name=$(curl -fs -H "Authorization: Bearer $(cat "$data/token")" -X POST \
  -d '{"node":"bench","mode":"rw"}' "http://127.0.0.1:$api/v1/volumes/db/attachments" | sed 's/.*"export":"\([^"]*\)".*/\1/')
incremental() { # N clusters within the first SPAN bytes
  local n=$1 span=$2 cmds=() i off
  for i in $(seq 0 $((n - 1))); do
    off=$(( (RANDOM * 32768 + RANDOM) % (span / 65536) * 65536 ))
    head -c 65536 /dev/urandom >"$work/w$i"
    cmds+=(-c "write -s $work/w$i $off 64k")
  done
  qemu-io -f raw "${cmds[@]}" "nbd://127.0.0.1:$nbd/$export_name" >/dev/null
  nv backup create db --json | awk -F': ' '/"stored_bytes"/{gsub(",","",$2); print $2}'
}
inc1=$(incremental 82 $((512 << 20)))
inc2=$(incremental 164 $((1 << 30)))
printf '\n%-48s %14s %10s\n' "incremental" "stored bytes" "of full"
printf '%-48s %14d %9.2f%%\n' "full backup" "$full" 100
printf '%-48s %14d %9.2f%%\n' "82 clusters (1% of the written clusters)" "$inc1" "$(echo "100 * $inc1 / $full" | bc -l)"
printf '%-48s %14d %9.2f%%\n' "164 clusters (1% of the volume's clusters)" "$inc2" "$(echo "100 * $inc2 / $full" | bc -l)"
stop
