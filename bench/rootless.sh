#!/bin/bash
# Rootless racker run --rm busybox /bin/true against rootful racker and rootless podman (same
# user, runc, alternating). The user is made once (racker-bench, with subordinate ids); the
# image comes from a local docker-registry.
#   [RACKER=path/to/racker] [NO_PKGPROBE=1] bench/rootless.sh [N] [N_PKGPROBE]
# Then a warm pkgprobe cycle, rootless against rootful (both in a cgroup delegated to the user
# as systemd's user@UID.service is; the user's image baked once in the user's namespace).
# Private networks need /dev/net/tun open to the user (pasta, slirp4netns): where it is root's
# only (this host), the private rows are left out and the header says so.
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh" runc podman uidmap passt slirp4netns
racker=${RACKER:-$top/build/racker}
[ -x "$racker" ] || "$top/scripts/build.sh"
user="racker-bench"
id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$user"
if ! grep -q "^$user:" /etc/subuid || ! grep -q "^$user:" /etc/subgid; then
  base=$(awk -F: 'BEGIN{m=400000} {e=$2+$3; if (e>m && $2<2147483648) m=e} END{print m}' \
    /etc/subuid /etc/subgid)
  usermod --add-subuids "$base-$((base + 65535))" --add-subgids "$base-$((base + 65535))" "$user"
fi
uid=$(id -u "$user")
gid=$(id -g "$user")
work=$(mktemp -d /var/tmp/racker-bench-rootless.XXXXXX)
tun_mode=
chmod 755 "$work"
home=$work/home
mkdir -p "$home/xdg" "$home/data"
prun=$(mktemp -d /tmp/rbp.XXXXXX) # podman: a runroot under 50 characters
chmod 755 "$prun"
chmod 700 "$home/xdg"
cp "$racker" "$work/racker"
chown -R "$uid:$gid" "$home" "$prun"
start_registry "$work"
# a cgroup delegated to the user, as systemd's user@UID.service is on a cgroup v2 host (a
# rootless boot needs one): made by root in every hierarchy with memory, pids, cpu or
# systemd's; the benchmarked commands start in it (in_leaf)
deleg=()
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
  hier=(/sys/fs/cgroup)
else
  mapfile -t hier < <(awk '{for (i = 7; i < NF; i++) if ($i == "-") { t = $(i + 1); o = $(i + 3); break }
    if (t == "cgroup2" || (t == "cgroup" && o ~ /(^|,)(memory|pids|cpu|name=systemd)(,|$)/)) print $5}' /proc/self/mountinfo)
fi
for h in "${hier[@]}"; do
  mkdir -p "$h/racker-bench-$uid/leaf"
  chown -R "$uid:$gid" "$h/racker-bench-$uid" 2>/dev/null || true
  deleg+=("$h/racker-bench-$uid/leaf")
done
cat >"$work/as-user.sh" <<SH
#!/bin/sh
exec setpriv --reuid=$uid --regid=$gid --clear-groups env HOME=$home XDG_RUNTIME_DIR=$home/xdg XDG_DATA_HOME=$home/data XDG_CACHE_HOME=$home/cache PATH=/usr/bin:/bin "\$@"
SH
chmod 755 "$work/as-user.sh"
AS="$work/as-user.sh"
# the benchmark itself runs in the delegated leaf, so every command it starts (root's and the
# user's) is born there, as in a user's session: moving a process between cgroups costs
# milliseconds (v1: an RCU grace period), which no row should pay
in_leaf() {
  sh -c 'for d in "$@"; do case $d in --) break ;; esac; echo $$ > "$d/cgroup.procs" || exit 99; done
    while [ "$1" != -- ]; do shift; done; shift; exec "$@"' sh "${deleg[@]}" -- "$@"
}
cleanup() {
  kill $reg 2>/dev/null || true
  $AS podman --root "$home/podman" --runroot "$prun/run" rm -af >/dev/null 2>&1 || true
  pause=$(cut -d' ' -f1 "$home/xdg/racker/pause.pid" 2>/dev/null || true)
  if [ -n "$pause" ]; then kill "$pause" 2>/dev/null || true; fi
  $AS podman unshare rm -rf "$home/podman" >/dev/null 2>&1 || true
  pkill -u "$uid" 2>/dev/null || true # the pause processes of both (the user is the bench's own)
  sleep 0.5
  for d in "${deleg[@]}"; do
    find "$(dirname "$d")" -depth -mindepth 1 -type d -exec rmdir {} + 2>/dev/null || true
    rmdir "$(dirname "$d")" 2>/dev/null || true
  done
  if [ -n "$tun_mode" ]; then chmod "$tun_mode" /dev/net/tun; fi
  rm -rf "$work" "$prun"
}
trap cleanup EXIT
push_busybox "$work"
chmod 644 "$work/registries.conf"
R="$racker --root $work/store --registries-conf $work/registries.conf"
U="$AS $work/racker --registries-conf $work/registries.conf"
# the rows: the user's commands started by the benchmark itself as the user (no wrapper)
export BENCH_USER_ENV="HOME=$home XDG_RUNTIME_DIR=$home/xdg XDG_DATA_HOME=$home/data XDG_CACHE_HOME=$home/cache PATH=/usr/bin:/bin"
UR="as:$uid:$gid $work/racker --registries-conf $work/registries.conf"
P="$AS podman --root $home/podman --runroot $prun/run --runtime runc --cgroup-manager cgroupfs --events-backend file"
PB="as:$uid:$gid podman --root $home/podman --runroot $prun/run --runtime runc --cgroup-manager cgroupfs --events-backend file"
$R pull -q "$img" >/dev/null
$U pull -q "$img" >/dev/null
podman_ok=1
$P pull -q --tls-verify=false "$img" >/dev/null 2>"$work/podman.err" || podman_ok=0
rows=("racker rootless (none)=$UR run --rm --network none $img /bin/true"
  "racker rootful (none)=$R run --rm --network none $img /bin/true")
tun_ok=0
$AS sh -c 'exec 3<>/dev/net/tun' 2>/dev/null && tun_ok=1
if [ $tun_ok = 1 ]; then
  rows+=("racker rootless (pasta)=$UR run --rm $img /bin/true" "racker rootful (bridge)=$R run --rm $img /bin/true")
else
  echo "note: /dev/net/tun is not open to $user here: rootless private networks left out"
fi
in_leaf /usr/bin/python3 "$top/bench/run_bench.py" "${1:-30}" "${rows[@]}"
# PHASES=N: where a run's time goes, rootless and rootful (racker's RACKER_TIMINGS marks, the
# median of N runs of each phase)
if [ -n "${PHASES:-}" ]; then
  for side in rootless rootful; do
    if [ $side = rootless ]; then cmd=(in_leaf $U); else cmd=(in_leaf $R); fi
    for _ in $(seq "$PHASES"); do
      # shellcheck disable=SC2068 # (a command line, split on purpose)
      RACKER_TIMINGS=1 ${cmd[@]} run --rm --network none "$img" /bin/true 2>&1 >/dev/null |
        grep '^racker-timing:' || true
    done | python3 -c '
import re, statistics, sys
rows = {}
for line in sys.stdin:
    for k, v in re.findall(r"(\w+)=([\d.]+)", line):
        if k != "t0_mono_ms":
            rows.setdefault(k, []).append(float(v))
print(sys.argv[1] + ": " + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in rows.items()) + " (ms, medians)")
' "$side"
  done
  echo
fi
# podman apart, one tool after the other: its run returns before its cleanup (podman container
# cleanup, conmon) is done, which would run into whatever comes next
echo
if [ $podman_ok = 1 ] && $P run --rm --network none "$img" /bin/true >/dev/null 2>>"$work/podman.err"; then
  in_leaf /usr/bin/python3 "$top/bench/run_bench.py" --blocks "${1:-30}" \
    "racker rootless (none)=$UR run --rm --network none $img /bin/true" \
    "podman rootless (none)=$PB run --rm --network none $img /bin/true"
else
  echo "note: rootless podman does not run here: $(tail -1 "$work/podman.err")"
fi

# a warm pkgprobe cycle (boot debian-bookworm, check journald, shut down), rootless against
# rootful; each side bakes and provisions the image once first (BAKE_CACHE: root's cache)
if [ -n "${NO_PKGPROBE:-}" ] || ! command -v mmdebstrap >/dev/null; then
  echo "note: pkgprobe rows left out (NO_PKGPROBE set or mmdebstrap missing)"
  exit 0
fi
postroj=${POSTROJ:-$(dirname "$racker")/postroj}
cp "$postroj" "$work/postroj"
tun_mode=$(stat -c %a /dev/net/tun)
chmod 666 /dev/net/tun # a private network for the probe (ordinary hosts have it so)
PR="$top/build/postroj -q --store-root $work/store --bake-cache ${BAKE_CACHE:-/var/cache/racker-bench/bake}"
PU="$AS $work/postroj -q --bake-cache $home/data/bake-cache"
PUB="as:$uid:$gid $work/postroj -q --bake-cache $home/data/bake-cache"
$PR pull debian-bookworm >/dev/null
# shellcheck disable=SC2086 # (a command line, split on purpose)
in_leaf $PU pull debian-bookworm >/dev/null
echo
echo "pkgprobe --image=debian-bookworm --check-unit=systemd-journald (run = one probe cycle):"
in_leaf /usr/bin/python3 "$top/bench/run_bench.py" "${2:-10}" \
  "pkgprobe rootless=$PUB pkgprobe --image=debian-bookworm --check-unit=systemd-journald" \
  "pkgprobe rootful=$PR pkgprobe --image=debian-bookworm --check-unit=systemd-journald"
