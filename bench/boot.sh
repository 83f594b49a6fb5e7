#!/bin/bash
# OS container cycle benchmark: bake Debian bookworm with systemd (cached), then alternate
# racker run --rm --boot IMAGE systemctl is-active systemd-journald against
# systemd-nspawn --boot + nsenter probe + SIGRTMIN+3 on a copy of the same root filesystem, and
# print per-tool medians of boot-to-ready, probe and shutdown (racker's from RACKER_TIMINGS=1).
#   [RACKER=path/to/racker] bench/boot.sh [N]
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh" systemd-container
racker=${RACKER:-$top/build/racker}
[ -x "$racker" ] || "$top/scripts/build.sh"
work=$(mktemp -d /var/tmp/racker-bench-boot.XXXXXX)
trap 'rm -rf "$work"' EXIT
store=$work/store
cache=${CACHE:-/var/cache/racker-bench}
image=bench/debian-systemd:bookworm
"$racker" --root "$store" bake -q --cache-dir "$cache/bake" --suite bookworm \
  --include systemd,systemd-sysv,dbus --name "$image" debian
layer=$("$racker" --root "$store" image inspect "$image" | jq -r '.[0].Layers[0].Path')
cp -a "$layer" "$work/rootfs"
: >"$work/rootfs/etc/machine-id"
/usr/bin/python3 "$top/bench/boot_bench.py" "$racker" "$store" "$image" \
  "$work/rootfs" "${1:-10}"
