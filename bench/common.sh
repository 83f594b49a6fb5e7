# shellcheck shell=bash
# Sourced by the bench scripts: strict mode, top (the checkout), racker's build dependencies and
# the extra Debian packages the benchmark names installed.
#   . "$(dirname "$0")/common.sh" [PACKAGE...]
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$top/scripts/install-deps.sh"
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg"
done

# Serves a docker-registry on a free loopback port, its data under WORK, writes
# WORK/registries.conf marking it insecure and waits until it answers: sets port and reg (its
# PID, for the caller's cleanup).
#   start_registry WORK
start_registry() {
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf 'version: 0.1\nstorage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}\nhttp: {addr: 127.0.0.1:%s}\n' \
    "$1/registry" "$port" >"$1/registry.yml"
  docker-registry serve "$1/registry.yml" >"$1/registry.log" 2>&1 &
  # shellcheck disable=SC2034 # the caller kills it
  reg=$!
  printf '[[registry]]\nlocation = "127.0.0.1:%s"\ninsecure = true\n' "$port" >"$1/registries.conf"
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
}

# Pushes busybox (a bundle rootfs of static busybox, through an OCI layout) to the registry of
# start_registry as bench/busybox:1: sets bundle (WORK/bundle, its config running /bin/true)
# and img.
#   push_busybox WORK
push_busybox() {
  bundle=$1/bundle
  "$top/scripts/make-busybox-bundle.sh" "$top/build/racker-oci" "$bundle" /bin/true
  umoci init --layout "$1/oci" && umoci new --image "$1/oci:bb"
  umoci unpack --image "$1/oci:bb" "$1/u" >/dev/null
  cp -a "$bundle/rootfs/." "$1/u/rootfs/"
  umoci repack --image "$1/oci:bb" "$1/u"
  img=127.0.0.1:$port/bench/busybox:1
  skopeo copy -q --dest-tls-verify=false "oci:$1/oci:bb" "docker://$img"
}
