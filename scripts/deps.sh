#!/usr/bin/env bash
# Installs what `make test` needs on a Debian machine, and only what is
# missing: the Debian packages below and staticcheck. On a machine that has
# everything it installs nothing, needs no root and takes a second. Called by
# `make deps` (which `make test` runs first) and by .ci/run.
set -euo pipefail

STATICCHECK_VERSION=v0.8.2
# The S3 server the backup tests run against (internal/s3test.Version):
# built from source with go install (about 2.5 minutes the first time, then
# from Go's build cache), since no Debian package serves S3.
VERSITYGW_VERSION=v1.8.0

# A C compiler for `go test -race` (it needs cgo), the qcow2/NBD oracles,
# and the e2e environment: node VMs with Debian's kernel (qemu, kernel,
# busybox, kmod, cpio, xz), dockerd, nfs-ganesha and rpcbind, and the tools
# the fixtures and nodes run.
PKGS=(
  gcc libc6-dev
  qemu-utils libnbd-bin
  qemu-system-x86 linux-image-amd64 busybox-static kmod cpio xz-utils
  docker.io docker-compose e2fsprogs nbd-client nfs-common
  nfs-ganesha nfs-ganesha-vfs rpcbind
  iproute2
)

go=${GO:-go}
if ! command -v "$go" >/dev/null; then
  echo "deps: $go not found: install Go 1.26 (https://go.dev/dl/) and put it on PATH" >&2
  exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
gobin=$("$go" env GOPATH)/bin
need_staticcheck=
command -v staticcheck >/dev/null || [ -x "$gobin/staticcheck" ] || need_staticcheck=1
need_versitygw=
command -v versitygw >/dev/null || [ -x "$gobin/versitygw" ] || need_versitygw=1

if [ "${#missing[@]}" -eq 0 ] && [ -z "$need_staticcheck" ] && [ -z "$need_versitygw" ]; then
  exit 0
fi

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing Debian packages: ${missing[*]}" >&2
    echo "deps: run 'make deps' as root to install them" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}"
  log=$(mktemp /tmp/netvol-deps-apt.XXXXXX)
  export DEBIAN_FRONTEND=noninteractive
  # The package lists are fetched only when something is to be installed,
  # and again only if the first try finds a package missing from them.
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
    apt-get update -qq >>"$log" 2>&1 || { tail -50 "$log" >&2; exit 1; }
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$log" 2>&1 \
      || { tail -50 "$log" >&2; exit 1; }
  fi
  rm -f "$log"
fi

if [ -n "$need_staticcheck" ]; then
  echo "deps: installing staticcheck $STATICCHECK_VERSION into $gobin"
  "$go" install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi

if [ -n "$need_versitygw" ]; then
  echo "deps: building versitygw $VERSITYGW_VERSION into $gobin (the S3 server of the backup tests)"
  "$go" install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
fi
