#!/bin/bash
# postroj matrix wall time: 3 Debian releases x 2 probes (units of the images themselves, so
# nothing is downloaded per probe) at --jobs 1, 2 and 4, after one `postroj pull` of each.
#   [POSTROJ=path/to/postroj] bench/matrix.sh [ROUNDS]
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"
postroj=${POSTROJ:-$top/build/postroj}
[ -x "$postroj" ] || "$top/scripts/build.sh"
work=$(mktemp -d /var/tmp/postroj-bench-matrix.XXXXXX)
trap 'rm -rf "$work"' EXIT
cache=${CACHE:-/var/cache/racker-bench}
P="$postroj -q --store-root $work/store --bake-cache $cache/bake"
labels=(debian-bookworm debian-trixie debian-bullseye)
$P pull "${labels[@]}" >/dev/null
cat >"$work/m.json" <<JSON
{"images": ["debian-bookworm", "debian-trixie", "debian-bullseye"],
 "probes": [{"name": "journald", "units": ["systemd-journald"]},
            {"name": "dbus", "units": ["dbus"]}]}
JSON
echo "postroj matrix, 3 images x 2 probes (6 cells), wall time in seconds (median of ${1:-3}):"
for jobs in 1 2 4; do
  times=()
  for _ in $(seq "${1:-3}"); do
    t0=$(date +%s%N)
    $P matrix "$work/m.json" --jobs "$jobs" >/dev/null
    times+=("$(( ($(date +%s%N) - t0) / 1000000 ))")
  done
  median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (${#times[@]} + 1) / 2 ))p")
  printf '  --jobs %s  %d.%03d s\n' "$jobs" $((median / 1000)) $((median % 1000))
done
