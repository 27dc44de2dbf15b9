#!/usr/bin/env bash
# qcow2 library against QEMU's own qcow2 driver, on the same workloads in one
# run: `qemu-img bench -f qcow2` (the reference) and the Go benchmarks of
# qcow2/bench_test.go, interleaved (the side that runs first alternates from
# one repetition to the next), REPS repetitions, medians and ratios.
#
# Settings, the same on both sides:
# - images: qcow2 v3, 64 KiB clusters, no backing file, in TMPDIR (default
#   /var/tmp), which must be a disk file system, not tmpfs;
# - cache mode writeback (qemu-img bench's default -t writeback; the Go side
#   writes through the page cache): no O_DIRECT, no fsync per write, no flush
#   during a run (no --flush-interval); opening the image and the closing
#   flush are outside the timed part on both sides (qemu-img bench times only
#   its request loop);
# - qemu's default aio=threads and L2 cache; the library's default L2 cache;
# - depth: qemu-img bench -d D requests in flight against D goroutines each
#   sending its next request when one ends, for D in DEPTHS;
# - request i goes to (i*step) mod image size (qemu-img bench -s SIZE -S STEP
#   -o 0; the Go benchmarks compute the same offsets):
#     Write1MSeq        1 MiB writes, step 1 MiB, fresh image of COUNT MiB
#     Read1MSeq         1 MiB reads, step 1 MiB, 256 MiB image written before
#     Write4KFresh      4 KiB writes, step 64 KiB: each to a fresh cluster of
#                       a fresh image of COUNT*64 KiB
#     Write4KOverwrite  4 KiB writes over the written 256 MiB image, step
#                       40503*4 KiB (visits every 4 KiB block once a pass, in
#                       an order without locality: qemu-img bench has no
#                       random mode, this is its scattered equivalent)
#     Read4KRandom      4 KiB reads, same scattered step
#   A written image is filled with 1 MiB writes before the timed run, by
#   qemu-img bench for qemu and by the library for netvol.
# - data: the byte 0xa5 (--pattern=165), so no side can skip zero writes.
#
# Usage: bench/qcow2-vs-qemu.sh      (REPS=5, DEPTHS="1 4 16" by default)
#        REPS=3 DEPTHS=16 bench/qcow2-vs-qemu.sh
# Results: a table on stdout; RAW=FILE keeps the individual runs.
set -euo pipefail
PROG="qcow2-vs-qemu"
cd "$(dirname "$0")/.."
. bench/lib.sh

REPS=${REPS:-5}
DEPTHS=${DEPTHS:-1 4 16}
need go "install Go (see README)"
need qemu-img "apt-get install qemu-utils"
need awk "apt-get install mawk"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/qcow2-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
on_disk "$work"
results=$work/results

log "building the benchmark binary"
go test -c -o "$work/qcow2.test" ./qcow2

# name size step write(w|r) image(fresh|filled) count
workloads=(
  "Write1MSeq 1048576 1048576 w fresh 1024"
  "Read1MSeq 1048576 1048576 r filled 2048"
  "Write4KFresh 4096 65536 w fresh 40000"
  "Write4KOverwrite 4096 165900288 w filled 80000"
  "Read4KRandom 4096 165900288 r filled 80000"
)
region=$((256 << 20)) # bench_test.go's benchRegion

# run_qemu name size step rw image count depth: one qemu-img bench run;
# prints "REQ_PER_S MB_PER_S".
run_qemu() {
  local name=$1 size=$2 step=$3 rw=$4 image=$5 count=$6 depth=$7 img=$work/q.qcow2 out secs
  rm -f "$img"
  if [ "$image" = filled ]; then
    qemu-img create -q -f qcow2 -o cluster_size=65536 "$img" "$region"
    qemu-img bench -f qcow2 -w -s 1M -c $((region >> 20)) -d 16 --pattern=165 "$img" >/dev/null
  else
    qemu-img create -q -f qcow2 -o cluster_size=65536 "$img" $((count * step))
  fi
  local args=(-f qcow2 -t writeback -c "$count" -d "$depth" -s "$size" -S "$step" -o 0)
  if [ "$rw" = w ]; then args+=(-w --pattern=165); fi
  out=$(qemu-img bench "${args[@]}" "$img")
  rm -f "$img"
  secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
  [ -n "$secs" ] || { echo "$PROG: qemu-img bench $name: no timing in: $out" >&2; exit 1; }
  awk -v c="$count" -v s="$size" -v t="$secs" 'BEGIN { printf "%.1f %.2f\n", c / t, c * s / t / 1e6 }'
}

# run_go name count depth: one Go benchmark run of exactly count requests;
# prints "REQ_PER_S MB_PER_S".
run_go() {
  local name=$1 count=$2 depth=$3 out line
  out=$(cd qcow2 && TMPDIR=$work "$work/qcow2.test" -test.run '^$' \
    -test.bench "^Benchmark$name\$/^g=$depth\$" -test.benchtime "${count}x" -test.count 1 2>&1) ||
    { echo "$PROG: go benchmark $name failed: $out" >&2; exit 1; }
  line=$(grep -E "^Benchmark$name/g=$depth(-[0-9]+)?[[:space:]]" <<<"$out" || true)
  [ -n "$line" ] || { echo "$PROG: go benchmark $name: no result in: $out" >&2; exit 1; }
  awk '{ for (i = 1; i <= NF; i++) { if ($(i+1) == "ns/op") ns = $i; if ($(i+1) == "MB/s") mb = $i }
         printf "%.1f %.2f\n", 1e9 / ns, mb }' <<<"$line"
}

log "qemu-img $(qemu-img --version | sed -n '1s/.*version \([^ ]*\).*/\1/p'), $REPS repetitions, depths $DEPTHS, in $work ($(stat -f -c %T "$work"))"
for rep in $(seq 1 "$REPS"); do
  for w in "${workloads[@]}"; do
    read -r name size step rw image count <<<"$w"
    for d in $DEPTHS; do
      sides=(qemu netvol)
      if [ $((rep % 2)) = 0 ]; then sides=(netvol qemu); fi
      for side in "${sides[@]}"; do
        if [ "$side" = qemu ]; then
          r=$(run_qemu "$name" "$size" "$step" "$rw" "$image" "$count" "$d")
        else
          r=$(run_go "$name" "$count" "$d")
        fi
        echo "$name/d=$d $side $rep $r" >>"$results"
        log "rep $rep $name d=$d $side: $r"
      done
    done
  done
done

echo "qcow2 library (netvol) vs qemu-img bench -f qcow2 (qemu $(qemu-img --version | sed -n '1s/.*version \([^ ]*\).*/\1/p')), medians of $REPS runs, $(date -u +%Y-%m-%dT%H:%MZ)"
summarize "$results" qemu netvol
[ -z "${RAW:-}" ] || cp "$results" "$RAW"
