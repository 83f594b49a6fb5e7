#!/bin/bash
# An emulated boot: `racker run --rm --boot` of Debian bookworm with systemd for arm64 (through
# qemu-user, binfmt_misc) against the same image for this machine, a short command inside,
# then the halt. Both images are baked once (rootfs tarballs cached in $CACHE/bake).
#   [RACKER=path/to/racker] bench/foreign_arch.sh [ROUNDS]
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"
racker=${RACKER:-$top/build/racker}
[ -x "$racker" ] || "$top/scripts/build.sh"
work=$(mktemp -d /var/tmp/racker-bench-arch.XXXXXX)
trap 'rm -rf "$work"' EXIT
cache=${CACHE:-/var/cache/racker-bench}
mkdir -p "$cache/bake"
R="$racker --root $work/store"
for arch in "" arm64; do
  $R bake -q --cache-dir "$cache/bake" ${arch:+--arch $arch} \
    --include systemd,systemd-sysv,dbus --name "bench/bookworm:${arch:-native}" debian >/dev/null
done
rounds=${1:-5}
echo "racker run --rm --boot bookworm + 'systemctl is-system-running', median of $rounds:"
declare -A med
for tag in native arm64; do
  times=()
  for _ in $(seq "$rounds"); do
    t0=$(date +%s%N)
    $R run --rm --boot "bench/bookworm:$tag" systemctl is-system-running >/dev/null || true
    times+=("$(( ($(date +%s%N) - t0) / 1000000 ))")
  done
  med[$tag]=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (rounds + 1) / 2 ))p")
  printf '  %-7s %5d ms\n' "$tag" "${med[$tag]}"
done
awk -v a="${med[arm64]}" -v n="${med[native]}" 'BEGIN { printf "  arm64/native: %.1fx\n", a / n }'
