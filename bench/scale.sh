#!/bin/bash
# Many booted OS containers at once: bake Debian bookworm with systemd (cached), then boot N
# containers with racker run -d and N with systemd-nspawn -U --boot (on overlays of a copy of
# the same root filesystem whose owners are shifted into nspawn's uid range), one after another
# and 5 at a time; prints time to all up, memory per container, failures and why, teardown
# time, anything left behind, and racker / nspawn ratios (bench/scale_bench.py).
#   [RACKER=path/to/racker] [TOOLS=racker,nspawn] [RACKER_RUN_FLAGS='--userns host'] bench/scale.sh [N]
# Containers without a user namespace of their own (--userns host, and nspawn -U: its
# namespaces are root's) share root's fs.inotify.max_user_instances (128 here): ~20 booted
# systems use it up, and the next ones fail; the script says why and cleans up all the same.
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh" systemd-container jq
racker=${RACKER:-$top/build/racker}
[ -x "$racker" ] || "$top/scripts/build.sh"
work=$(mktemp -d /var/tmp/racker-bench-scale.XXXXXX)
store=$work/store
bench_pid=
# shellcheck disable=SC2317  # run by the trap
cleanup() {
  trap - EXIT INT TERM
  set +e
  if [ -n "$bench_pid" ]; then kill -TERM "$bench_pid" 2>/dev/null; wait "$bench_pid"; fi
  # whatever the benchmark did not get to: containers, overlays, nspawn's cgroups
  mapfile -t ids < <("$racker" --root "$store" ps -aq --no-trunc 2>/dev/null)
  [ ${#ids[@]} -gt 0 ] && "$racker" --root "$store" rm -f "${ids[@]}" >/dev/null 2>&1
  awk -v w="$work" '$5 ~ "^"w {print $5}' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l
  for h in systemd unified memory; do
    [ -d "/sys/fs/cgroup/$h/racker-bench-scale" ] &&
      find "/sys/fs/cgroup/$h/racker-bench-scale" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cache=${CACHE:-/var/cache/racker-bench}
image=bench/debian-systemd:bookworm
"$racker" --root "$store" bake -q --cache-dir "$cache/bake" --suite bookworm \
  --include systemd,systemd-sysv,dbus --name "$image" debian
layer=$("$racker" --root "$store" image inspect "$image" | jq -r '.[0].Layers[0].Path')
cp -a "$layer" "$work/rootfs"
: >"$work/rootfs/etc/machine-id"
# nspawn -U would chown the tree on every start (a full copy-up on an overlay): shift it once
/usr/bin/python3 - "$work/rootfs" <<'PY'
import os, stat, sys
base = 0x60000000  # scale_bench.NSPAWN_UID_BASE
for d, dirs, files in os.walk(sys.argv[1]):
    for p in [d] + [os.path.join(d, f) for f in dirs + files]:
        st = os.lstat(p)
        os.lchown(p, base + st.st_uid, base + st.st_gid)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o6000:
            os.chmod(p, stat.S_IMODE(st.st_mode))  # chown dropped setuid/setgid
PY
echo "fs.inotify.max_user_instances = $(sysctl -n fs.inotify.max_user_instances)," \
  "open under uid 0 now: $(find /proc/[0-9]*/fd -lname anon_inode:inotify 2>/dev/null | wc -l)" >&2
/usr/bin/python3 "$top/bench/scale_bench.py" "$racker" "$store" "$image" "$work/rootfs" "$work" \
  "${1:-10}" "${TOOLS:-racker,nspawn}" &
bench_pid=$!
rc=0
wait "$bench_pid" || rc=$?
bench_pid=
exit $rc
