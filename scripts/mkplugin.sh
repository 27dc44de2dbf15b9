#!/usr/bin/env bash
# Builds netvol's managed-plugin directory without a registry or a Docker
# build: config.json (plugin-config.json) and rootfs/ holding the static
# netvol binary and Debian's mkfs.ext4 with the libraries it links.
# Usage: scripts/mkplugin.sh OUTDIR   then: docker plugin create netvol:dev OUTDIR
set -euo pipefail
out=${1:?usage: $0 OUTDIR}
cd "$(dirname "$0")/.."
mke2fs=$(command -v mke2fs || echo /usr/sbin/mke2fs)
[ -x "$mke2fs" ] || { echo "mkplugin: mke2fs not found: install e2fsprogs" >&2; exit 1; }

rm -rf "$out"
root="$out/rootfs"
mkdir -p "$root"/{sbin,etc,tmp,proc,sys,dev,run/docker/plugins,mnt/netvol,var/lib/netvol}
chmod 1777 "$root/tmp"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$root/netvol" ./cmd/netvol

# mkfs.ext4 and its shared libraries, at the paths the loader expects.
cp "$mke2fs" "$root/sbin/mke2fs"
ln -s mke2fs "$root/sbin/mkfs.ext4"
for lib in $(ldd "$mke2fs" | awk '/=> \//{print $3} /^\t\/lib/{print $1}'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp /etc/mke2fs.conf "$root/etc/mke2fs.conf"
cp plugin-config.json "$out/config.json"
echo "mkplugin: $out ($(du -sh "$out" | cut -f1))"
