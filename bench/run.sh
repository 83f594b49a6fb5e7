#!/bin/bash
# racker run --rm busybox /bin/true (private network with a bridge, and --network none) vs runc
# run (same rootfs as a bundle) vs podman run --rm (bridge, and --network none) vs
# systemd-nspawn, alternating. The image comes from a local docker-registry, pulled once.
#   [RACKER=path/to/racker] bench/run.sh [N]
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh" runc podman systemd-container
racker=${RACKER:-$top/build/racker}
[ -x "$racker" ] || "$top/scripts/build.sh"
work=$(mktemp -d /var/tmp/racker-bench-run.XXXXXX)
start_registry "$work"
cleanup() {
  kill $reg 2>/dev/null || true
  podman --root "$work/podman" --runroot "/tmp/rbr-$$" rm -af >/dev/null 2>&1 || true
  umount -R "$work/podman/overlay" 2>/dev/null || true
  rm -rf "$work" "/tmp/rbr-$$"
}
trap cleanup EXIT
push_busybox "$work"
R="$racker --root $work/store --registries-conf $work/registries.conf"
$R pull -q "$img" >/dev/null
P="podman --root $work/podman --runroot /tmp/rbr-$$ --runtime runc --cgroup-manager cgroupfs --events-backend file"
$P pull -q --tls-verify=false "$img" >/dev/null
/usr/bin/python3 "$top/bench/run_bench.py" "${1:-30}" \
  "racker run --rm=$R run --rm $img /bin/true" \
  "racker run --rm (none)=$R run --rm --network none $img /bin/true" \
  "runc run=runc run --bundle $bundle bench-runc-{i}" \
  "podman run --rm (bridge)=$P run --rm --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 $img /bin/true" \
  "podman run --rm (none)=$P run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 $img /bin/true" \
  "systemd-nspawn=systemd-nspawn --register=no --keep-unit -q -D $bundle/rootfs /bin/true"
