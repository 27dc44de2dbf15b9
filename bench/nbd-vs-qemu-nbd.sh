#!/usr/bin/env bash
# The storage daemon (`netvol server`) against qemu-nbd, with one client for
# both (`qemu-img bench -f raw nbd://...`), over TCP loopback and over a unix
# socket, in one run: every workload runs on both servers back to back (the
# server that goes first alternates from one repetition to the next), REPS
# repetitions, medians and ratios.
#
# Settings:
# - netvol: the real daemon built by `make build` (into the work directory,
#   so bin/netvol is left alone), two instances (--nbd-listen 127.0.0.1:PORT
#   and --nbd-listen unix:PATH), --lease-ttl 1h so no lease runs out during a
#   run; each run gets a fresh volume (qcow2, 64 KiB clusters) created and
#   attached through the control API with the token file, as in the README,
#   and deleted afterwards.
# - qemu-nbd: a fresh qcow2 (qemu-img create, 64 KiB clusters) of the same
#   size for each run, `qemu-nbd -f qcow2 -x disk -t --cache=writeback
#   --aio=threads` (its defaults, spelt out), on 127.0.0.1:PORT or --socket.
# - Neither server is asked to flush during a run (no --flush-interval); the
#   client's flush at disconnect is not timed (qemu-img bench times only its
#   request loop). Written data is the byte 0xa5 (--pattern=165).
# - Workloads (request i goes to (i*step) mod the image size):
#     Write1MSeq        1 MiB writes, depth 8, fresh 1 GiB image
#     Read1MSeq         1 MiB reads, depth 8, 256 MiB image written first
#     Write4KFresh      4 KiB writes, depth 32, step 64 KiB: each to a fresh
#                       cluster of a fresh image
#     Write4KOverwrite  4 KiB writes, depth 32, over a written 256 MiB image,
#                       step 40503*4 KiB (every block once a pass, scattered:
#                       qemu-img bench has no random mode)
#     Read4KRandom      4 KiB reads, depth 32, the same scattered step
#   A written image is filled through the same server with 1 MiB writes
#   before the timed run. Two more rows read a fresh image nothing was
#   written to, where a server may answer without sending data:
#     Read1MUnwritten   1 MiB reads, depth 8, fresh 256 MiB image
#     Read4KUnwritten   4 KiB reads, depth 32, scattered, fresh 256 MiB image
# - qemu-nbd 7.2 over TCP stalls when its replies are small (Nagle and
#   delayed ACK: a few hundred requests/s): at depth 32, and for reads of
#   unwritten data, whose replies carry no data. There it gets
#   QEMU_TCP_COUNT requests instead of the workload's count; rates are per
#   second, so the figures compare.
#
# Usage: bench/nbd-vs-qemu-nbd.sh        (REPS=3 by default)
#        REPS=5 TRANSPORTS=unix bench/nbd-vs-qemu-nbd.sh
# Results: a table on stdout; RAW=FILE keeps the individual runs.
set -euo pipefail
PROG="nbd-vs-qemu-nbd"
cd "$(dirname "$0")/.."
. bench/lib.sh

REPS=${REPS:-3}
TRANSPORTS=${TRANSPORTS:-tcp unix}
QEMU_TCP_COUNT=${QEMU_TCP_COUNT:-1000}
need make "apt-get install make"
need go "install Go (see README)"
need qemu-img "apt-get install qemu-utils"
need qemu-nbd "apt-get install qemu-utils"
need curl "apt-get install curl"
need ss "apt-get install iproute2"
need awk "apt-get install mawk"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/nbd-bench.XXXXXX")
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -f "$work/qemu-nbd.pid" ]; then kill "$(cat "$work/qemu-nbd.pid")" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
on_disk "$work"
results=$work/results

# free_port: a TCP port nothing listens on (racy, but only we start servers here).
free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 40000))
    if [ -z "$(ss -Hltn "sport = :$p")" ]; then
      echo "$p"
      return
    fi
  done
  echo "$PROG: no free TCP port found" >&2
  exit 1
}

log "building netvol"
make -s build BIN="$work/netvol"

# start_netvol transport: starts a daemon serving NBD over transport;
# sets api_<transport>, token_<transport> and url_<transport> (an NBD URL
# with EXPORT in place of the export name).
start_netvol() {
  local t=$1 data=$work/netvol-$1 api nbd url
  api=127.0.0.1:$(free_port)
  if [ "$t" = tcp ]; then
    nbd=127.0.0.1:$(free_port)
    url="nbd://$nbd/EXPORT"
  else
    nbd=unix:$work/netvol.sock
    url="nbd+unix:///EXPORT?socket=$work/netvol.sock"
  fi
  "$work/netvol" server --data "$data" --nbd-listen "$nbd" --api-listen "$api" \
    --lease-ttl 1h --log-level warn >"$work/netvol-$t.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    if curl -fs "http://$api/healthz" >/dev/null 2>&1; then break; fi
    kill -0 "${pids[-1]}" 2>/dev/null || { echo "$PROG: netvol server ($t) exited:" >&2; cat "$work/netvol-$t.log" >&2; exit 1; }
    sleep 0.1
  done
  curl -fs "http://$api/healthz" >/dev/null || { echo "$PROG: netvol server ($t) not ready on $api" >&2; exit 1; }
  printf -v "api_$t" '%s' "$api"
  printf -v "token_$t" '%s' "$(cat "$data/token")"
  printf -v "url_$t" '%s' "$url"
}

# api transport method path [json]: one control API call; prints the body.
api() {
  local t=$1 a tok
  a=api_$t tok=token_$t
  curl -fsS -X "$2" -H "Authorization: Bearer ${!tok}" ${4:+-d "$4"} "http://${!a}$3"
}

# bench url size step rw depth count: one timed qemu-img bench run; prints
# "REQ_PER_S MB_PER_S".
bench() {
  local url=$1 size=$2 step=$3 rw=$4 depth=$5 count=$6 out secs
  local args=(-f raw -c "$count" -d "$depth" -s "$size" -S "$step" -o 0)
  if [ "$rw" = w ]; then args+=(-w --pattern=165); fi
  out=$(qemu-img bench "${args[@]}" "$url" 2>&1) || { echo "$PROG: qemu-img bench $url: $out" >&2; exit 1; }
  secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
  [ -n "$secs" ] || { echo "$PROG: qemu-img bench $url: no timing in: $out" >&2; exit 1; }
  awk -v c="$count" -v s="$size" -v t="$secs" 'BEGIN { printf "%.1f %.2f\n", c / t, c * s / t / 1e6 }'
}

# fill url size: writes the whole image with 1 MiB requests (not timed).
fill() {
  qemu-img bench -f raw -w -s 1M -c $(($2 >> 20)) -d 8 --pattern=165 "$1" >/dev/null
}

# run_netvol transport vol imgsize filled size step rw depth count
run_netvol() {
  local t=$1 vol=$2 imgsize=$3 filled=$4 exp url r u=url_$1
  shift 4
  api "$t" POST /v1/volumes "{\"name\":\"$vol\",\"size\":$imgsize}" >/dev/null
  exp=$(api "$t" POST "/v1/volumes/$vol/attachments" '{"node":"bench","mode":"rw"}' |
    sed -n 's/.*"export":"\([^"]*\)".*/\1/p')
  [ -n "$exp" ] || { echo "$PROG: no export name for $vol" >&2; exit 1; }
  url=${!u/EXPORT/$exp}
  if [ "$filled" = filled ]; then fill "$url" "$imgsize"; fi
  r=$(bench "$url" "$@")
  api "$t" DELETE "/v1/volumes/$vol/attachments/bench" >/dev/null
  api "$t" DELETE "/v1/volumes/$vol" >/dev/null
  echo "$r"
}

# run_qemu transport imgsize filled size step rw depth count
run_qemu() {
  local t=$1 imgsize=$2 filled=$3 img=$work/q.qcow2 url r
  shift 3
  rm -f "$img" "$work/q.sock"
  qemu-img create -q -f qcow2 -o cluster_size=65536 "$img" "$imgsize"
  local args=(-f qcow2 -x disk -t --cache=writeback --aio=threads --fork --pid-file "$work/qemu-nbd.pid")
  if [ "$t" = tcp ]; then
    local port
    port=$(free_port)
    args+=(-b 127.0.0.1 -p "$port")
    url=nbd://127.0.0.1:$port/disk
  else
    args+=(--socket "$work/q.sock")
    url="nbd+unix:///disk?socket=$work/q.sock"
  fi
  qemu-nbd "${args[@]}" "$img"
  if [ "$filled" = filled ]; then fill "$url" "$imgsize"; fi
  r=$(bench "$url" "$@")
  kill "$(cat "$work/qemu-nbd.pid")"
  while kill -0 "$(cat "$work/qemu-nbd.pid")" 2>/dev/null; do sleep 0.05; done
  rm -f "$work/qemu-nbd.pid" "$img"
  echo "$r"
}

# name imgsize(bytes, 0: count*step) filled size step rw depth count
# stall(y: qemu-nbd over TCP stalls, give it QEMU_TCP_COUNT requests)
workloads=(
  "Write1MSeq $((1 << 30)) fresh 1048576 1048576 w 8 1024 n"
  "Read1MSeq $((256 << 20)) filled 1048576 1048576 r 8 2048 n"
  "Write4KFresh 0 fresh 4096 65536 w 32 30000 y"
  "Write4KOverwrite $((256 << 20)) filled 4096 165900288 w 32 50000 y"
  "Read4KRandom $((256 << 20)) filled 4096 165900288 r 32 50000 y"
  "Read1MUnwritten $((256 << 20)) fresh 1048576 1048576 r 8 2048 y"
  "Read4KUnwritten $((256 << 20)) fresh 4096 165900288 r 32 50000 y"
)

for t in $TRANSPORTS; do
  case $t in tcp | unix) start_netvol "$t" ;; *) echo "$PROG: unknown transport $t (tcp, unix)" >&2; exit 1 ;; esac
done
qver=$(qemu-nbd --version | sed -n '1s/.*qemu-nbd \([^ ]*\).*/\1/p')
log "qemu-nbd $qver, $REPS repetitions, transports $TRANSPORTS, in $work ($(stat -f -c %T "$work"))"
n=0
for rep in $(seq 1 "$REPS"); do
  for w in "${workloads[@]}"; do
    read -r name imgsize filled size step rw depth count stall <<<"$w"
    if [ "$imgsize" = 0 ]; then imgsize=$((count * step)); fi
    for t in $TRANSPORTS; do
      sides=(qemu-nbd netvol)
      if [ $((rep % 2)) = 0 ]; then sides=(netvol qemu-nbd); fi
      for side in "${sides[@]}"; do
        if [ "$side" = netvol ]; then
          n=$((n + 1))
          r=$(run_netvol "$t" "bench$n" "$imgsize" "$filled" "$size" "$step" "$rw" "$depth" "$count")
        else
          c=$count
          if [ "$t" = tcp ] && [ "$stall" = y ]; then c=$QEMU_TCP_COUNT; fi
          r=$(run_qemu "$t" "$imgsize" "$filled" "$size" "$step" "$rw" "$depth" "$c")
        fi
        echo "$t/$name/d=$depth $side $rep $r" >>"$results"
        log "rep $rep $t $name d=$depth $side: $r"
      done
    done
  done
done

echo "netvol server vs qemu-nbd $qver, client qemu-img bench -f raw, medians of $REPS runs, $(date -u +%Y-%m-%dT%H:%MZ)"
summarize "$results" qemu-nbd netvol
if [ -n "${RAW:-}" ]; then cp "$results" "$RAW"; fi
