#!/bin/bash
# Rootless racker run --rm busybox /bin/true against rootful racker and rootless podman (same
# user, runc, alternating). The user is made once (racker-bench, with subordinate ids); the
# image comes from a local docker-registry.
#   [RACKER=path/to/racker] bench/rootless.sh [N]
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
chmod 755 "$work"
home=$work/home
mkdir -p "$home/xdg" "$home/data"
prun=$(mktemp -d /tmp/rbp.XXXXXX) # podman: a runroot under 50 characters
chmod 755 "$prun"
chmod 700 "$home/xdg"
cp "$racker" "$work/racker"
chown -R "$uid:$gid" "$home" "$prun"
start_registry "$work"
AS="setpriv --reuid=$uid --regid=$gid --clear-groups env HOME=$home XDG_RUNTIME_DIR=$home/xdg XDG_DATA_HOME=$home/data PATH=/usr/bin:/bin"
cleanup() {
  kill $reg 2>/dev/null || true
  $AS podman --root "$home/podman" --runroot "$prun/run" rm -af >/dev/null 2>&1 || true
  pause=$(cut -d' ' -f1 "$home/xdg/racker/pause.pid" 2>/dev/null || true)
  if [ -n "$pause" ]; then kill "$pause" 2>/dev/null || true; fi
  $AS podman unshare rm -rf "$home/podman" >/dev/null 2>&1 || true
  pkill -u "$uid" 2>/dev/null || true # the pause processes of both (the user is the bench's own)
  rm -rf "$work" "$prun"
}
trap cleanup EXIT
push_busybox "$work"
chmod 644 "$work/registries.conf"
R="$racker --root $work/store --registries-conf $work/registries.conf"
U="$AS $work/racker --registries-conf $work/registries.conf"
P="$AS podman --root $home/podman --runroot $prun/run --runtime runc --cgroup-manager cgroupfs --events-backend file"
$R pull -q "$img" >/dev/null
$U pull -q "$img" >/dev/null
podman_ok=1
$P pull -q --tls-verify=false "$img" >/dev/null 2>"$work/podman.err" || podman_ok=0
rows=("racker rootless (none)=$U run --rm --network none $img /bin/true"
  "racker rootful (none)=$R run --rm --network none $img /bin/true")
tun_ok=0
$AS sh -c 'exec 3<>/dev/net/tun' 2>/dev/null && tun_ok=1
if [ $tun_ok = 1 ]; then
  rows+=("racker rootless (pasta)=$U run --rm $img /bin/true" "racker rootful (bridge)=$R run --rm $img /bin/true")
else
  echo "note: /dev/net/tun is not open to $user here: rootless private networks left out"
fi
if [ $podman_ok = 1 ] && $P run --rm --network none "$img" /bin/true >/dev/null 2>>"$work/podman.err"; then
  rows+=("podman rootless (none)=$P run --rm --network none $img /bin/true")
else
  echo "note: rootless podman does not run here: $(tail -1 "$work/podman.err")"
fi
/usr/bin/python3 "$top/bench/run_bench.py" "${1:-30}" "${rows[@]}"
