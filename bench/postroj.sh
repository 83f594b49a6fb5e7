#!/bin/bash
# Warm pkgprobe cycle benchmark: `postroj pull debian-bookworm` (baked once, cached), then
# alternate `postroj pkgprobe --image=debian-bookworm --check-unit=systemd-journald` against
# systemd-nspawn --boot + nsenter probe + SIGRTMIN+3 on a copy of the same root filesystem.
#   [POSTROJ=path/to/postroj] bench/postroj.sh [N]
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh" systemd-container
postroj=${POSTROJ:-$top/build/postroj}
racker=${RACKER:-$(dirname "$postroj")/racker}
[ -x "$postroj" ] || "$top/scripts/build.sh"
work=$(mktemp -d /var/tmp/postroj-bench.XXXXXX)
trap 'umount "$work/merged" 2>/dev/null; rm -rf "$work"' EXIT
store=$work/store
cache=${CACHE:-/var/cache/racker-bench}
"$postroj" -q --store-root "$store" --bake-cache "$cache/bake" pull debian-bookworm >/dev/null
# the image's layers (base + provisioning) merged into one directory for nspawn
mapfile -t layers < <("$racker" --root "$store" image inspect postroj.local/debian-bookworm |
  jq -r '.[0].Layers | reverse | .[].Path')
if [ "${#layers[@]}" -eq 1 ]; then
  cp -a "${layers[0]}" "$work/rootfs"
else
  mkdir "$work/merged"
  mount -t overlay overlay -o "lowerdir=$(IFS=:; echo "${layers[*]}")" "$work/merged"
  cp -a "$work/merged" "$work/rootfs"
  umount "$work/merged"
fi
: >"$work/rootfs/etc/machine-id"
/usr/bin/python3 "$top/bench/postroj_bench.py" "$postroj" "$store" "$work/rootfs" "${1:-10}"
