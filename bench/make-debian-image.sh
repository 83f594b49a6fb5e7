#!/bin/bash
# Builds a Debian bookworm minbase rootfs with mmdebstrap (cached in $CACHE, default
# /var/cache/racker-bench) and pushes it, split into three layers, to a registry as
# NAME (e.g. 127.0.0.1:5000/bench/debian:bookworm), with skopeo from an OCI layout made by umoci.
#   bench/make-debian-image.sh NAME
set -euo pipefail
name=${1:?usage: make-debian-image.sh REGISTRY/REPO:TAG}
cache=${CACHE:-/var/cache/racker-bench}
mkdir -p "$cache"
tarball=$cache/bookworm-minbase.tar
if [ ! -s "$tarball" ]; then
  mmdebstrap --variant=minbase --format=tar \
    --components=main bookworm "$tarball.tmp" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main"
  mv "$tarball.tmp" "$tarball"
fi
layout=$cache/oci-layout
if [ ! -d "$layout" ]; then
  work=$(mktemp -d)
  umoci init --layout "$layout.tmp"
  umoci new --image "$layout.tmp:bookworm"
  umoci unpack --image "$layout.tmp:bookworm" "$work/b" >/dev/null
  # three layers: /usr; then /etc and /var; then the rest (dev entries dropped)
  tar -xf "$tarball" -C "$work/b/rootfs" --exclude='./dev/*' ./usr
  umoci repack --image "$layout.tmp:bookworm" "$work/b"
  umoci unpack --image "$layout.tmp:bookworm" "$work/c" >/dev/null
  tar -xf "$tarball" -C "$work/c/rootfs" ./etc ./var
  umoci repack --image "$layout.tmp:bookworm" "$work/c"
  umoci unpack --image "$layout.tmp:bookworm" "$work/d" >/dev/null
  tar -xf "$tarball" -C "$work/d/rootfs" --exclude='./dev/*' --exclude=./usr --exclude=./etc --exclude=./var
  umoci repack --image "$layout.tmp:bookworm" "$work/d"
  rm -rf "$work"
  mv "$layout.tmp" "$layout"
fi
skopeo copy -q --dest-tls-verify=false "oci:$layout:bookworm" "docker://$name"
