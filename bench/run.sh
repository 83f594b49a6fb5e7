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
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<YML
version: 0.1
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg=$!
cleanup() {
  kill $reg 2>/dev/null || true
  podman --root "$work/podman" --runroot "/tmp/rbr-$$" rm -af >/dev/null 2>&1 || true
  umount -R "$work/podman/overlay" 2>/dev/null || true
  rm -rf "$work" "/tmp/rbr-$$"
}
trap cleanup EXIT
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
# the busybox image: a bundle rootfs, pushed through an OCI layout
bundle=$work/bundle
"$top/scripts/make-busybox-bundle.sh" "$top/build/racker-oci" "$bundle" /bin/true
umoci init --layout "$work/oci" && umoci new --image "$work/oci:bb"
umoci unpack --image "$work/oci:bb" "$work/u" >/dev/null
cp -a "$bundle/rootfs/." "$work/u/rootfs/"
umoci repack --image "$work/oci:bb" "$work/u"
skopeo copy -q --dest-tls-verify=false "oci:$work/oci:bb" "docker://127.0.0.1:$port/bench/busybox:1"
printf '[[registry]]\nlocation = "127.0.0.1:%s"\ninsecure = true\n' "$port" >"$work/registries.conf"
R="$racker --root $work/store --registries-conf $work/registries.conf"
$R pull -q "127.0.0.1:$port/bench/busybox:1" >/dev/null
P="podman --root $work/podman --runroot /tmp/rbr-$$ --runtime runc --cgroup-manager cgroupfs --events-backend file"
$P pull -q --tls-verify=false "127.0.0.1:$port/bench/busybox:1" >/dev/null
/usr/bin/python3 "$top/bench/run_bench.py" "${1:-30}" \
  "racker run --rm=$R run --rm 127.0.0.1:$port/bench/busybox:1 /bin/true" \
  "racker run --rm (none)=$R run --rm --network none 127.0.0.1:$port/bench/busybox:1 /bin/true" \
  "runc run=runc run --bundle $bundle bench-runc-{i}" \
  "podman run --rm (bridge)=$P run --rm --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 127.0.0.1:$port/bench/busybox:1 /bin/true" \
  "podman run --rm (none)=$P run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 127.0.0.1:$port/bench/busybox:1 /bin/true" \
  "systemd-nspawn=systemd-nspawn --register=no --keep-unit -q -D $bundle/rootfs /bin/true"
