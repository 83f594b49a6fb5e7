#!/bin/bash
# Pull benchmark: a local docker-registry with a 3-layer Debian bookworm image (mmdebstrap,
# cached), then racker pull vs skopeo copy + umoci unpack (+ podman pull if installed),
# alternating, on tmpfs (/dev/shm) and once into a fresh directory on disk.
#   bench/pull.sh [N]
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh" mmdebstrap time
[ -x "$top/build/racker" ] || "$top/scripts/build.sh"
work=$(mktemp -d /var/tmp/racker-bench-pull.XXXXXX)
start_registry "$work"
trap 'kill $reg 2>/dev/null; rm -rf "$work"' EXIT
ref=127.0.0.1:$port/bench/debian:bookworm
"$top/bench/make-debian-image.sh" "$ref"
shm=$(mktemp -d /dev/shm/racker-bench.XXXXXX)
/usr/bin/python3 "$top/bench/pull.py" "$top/build/racker" "$ref" "$work/registries.conf" "$shm" "${1:-5}"
rm -rf "$shm"
echo
mkdir -p "$work/disk"
/usr/bin/python3 "$top/bench/pull.py" "$top/build/racker" "$ref" "$work/registries.conf" "$work/disk" 1
