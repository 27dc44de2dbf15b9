#!/usr/bin/env bash
# bench/pool.sh: what a pool of storage servers costs Docker's calls.
# Runs a plugin through a dockerd of its own on this host (userspace attach)
# against (1) one server holding N volumes, (2) three servers holding N each,
# (3) one server holding 3N, and prints the median wall time of
#   docker volume ls         (REPS times)
#   docker volume create     (REPS new volumes)
#   docker run -v VOL true   (REPS mounts and unmounts of one volume)
# Needs root, dockerd, busybox-static, FUSE and loop devices; hold
# /tmp/netvol-e2e.lock around it on shared machines. N=1000 REPS=15 by default.
set -euo pipefail
PROG=pool.sh
source "$(dirname "$0")/lib.sh"
N=${N:-1000}
REPS=${REPS:-15}
BIN=$(cd "$(dirname "$0")/.." && pwd)/bin/netvol
need dockerd "apt-get install docker.io"
need curl "apt-get install curl"
W=$(mktemp -d /var/tmp/netvol-pool-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in $(pgrep -f "$W/" || true); do kill -9 "$p" 2>/dev/null || true; done
  grep " $W/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# server NAME: starts a storage daemon; prints its API address.
server() {
  local d=$W/$1 api nbd
  mkdir -p "$d"
  api=$(port); nbd=$(port)
  "$BIN" server --data "$d/data" --token-file "$W/token" --api-listen "127.0.0.1:$api" --nbd-listen "127.0.0.1:$nbd" \
    --log-level warn >"$d/log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$api/healthz" >/dev/null && break; sleep 0.1; done
  echo "127.0.0.1:$api"
}

# fill ADDR COUNT PREFIX: COUNT volumes straight through the API.
fill() {
  seq "$2" | xargs -P 4 -I{} curl -sf -o /dev/null -H "Authorization: Bearer $(cat "$W/token")" \
    -d "{\"name\":\"$3{}\",\"size\":\"1G\"}" "http://$1/v1/volumes"
}

# dockerd LABEL: a dockerd of its own for one run; sets DOCK.
start_dockerd() {
  DOCK=$W/$1-docker.sock
  dockerd --iptables=false --bridge=none --data-root "$W/$1-docker" --exec-root "$W/$1-exec" --pidfile "$W/$1-dockerd.pid" \
    -H "unix://$DOCK" --containerd-namespace netvol-bench --containerd-plugins-namespace netvol-bench-p >"$W/$1-dockerd.log" 2>&1 &
  DOCKERD=$!
  PIDS+=("$DOCKERD")
  for _ in $(seq 300); do docker -H "unix://$DOCK" version >/dev/null 2>&1 && break; sleep 0.2; done
  mkdir -p "$W/bb/bin"; cp /bin/busybox "$W/bb/bin/"; for cmd in sh true; do ln -sf busybox "$W/bb/bin/$cmd"; done
  tar -C "$W/bb" -c . | docker -H "unix://$DOCK" import - busybox:bench >/dev/null
}

# timed CMD...: wall seconds of CMD.
timed() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# run LABEL SERVERS: a plugin over SERVERS, the three measurements.
run() {
  local label=$1 servers=$2 st=$W/state-$1 pid d
  mkdir -p "$st"
  start_dockerd "$label"
  "$BIN" plugin --socket /run/docker/plugins/netvol.sock --state-dir "$st" --node bench --server "$servers" \
    --token-file "$W/token" --attach userspace --log-level warn >"$st/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do [ -S /run/docker/plugins/netvol.sock ] && break; sleep 0.1; done
  d=(docker -H "unix://$DOCK")
  "${d[@]}" volume ls >/dev/null # warm: the plugin caches the list
  local ls create mount
  ls=$(for _ in $(seq "$REPS"); do timed "${d[@]}" volume ls; done | median)
  create=$(for i in $(seq "$REPS"); do timed "${d[@]}" volume create -d netvol -o size=64M "new-$label-$i"; done | median)
  "${d[@]}" run --rm --network none -v "new-$label-1:/v" busybox:bench true # formats it
  mount=$(for _ in $(seq "$REPS"); do timed "${d[@]}" run --rm --network none -v "new-$label-1:/v" busybox:bench true; done | median)
  printf '%-28s ls %6.3f s   create %6.3f s   run -v (mount+unmount) %6.3f s   (%s volumes listed)\n' \
    "$label" "$ls" "$create" "$mount" "$("${d[@]}" volume ls -q | wc -l)"
  kill "$pid" "$DOCKERD"; wait "$pid" "$DOCKERD" 2>/dev/null || true
  rm -f /run/docker/plugins/netvol.sock
}

log "filling: 1 server x $N, 3 servers x $N, 1 server x $((3 * N))"
one=$(server one); fill "$one" "$N" v
a=$(server a); b=$(server b); c=$(server c)
fill "$a" "$N" a; fill "$b" "$N" b; fill "$c" "$N" c
big=$(server big); fill "$big" "$((3 * N))" v
run "1-server-${N}" "$one"
run "3-servers-$((3 * N))" "$a,$b,$c"
run "1-server-$((3 * N))" "$big"
