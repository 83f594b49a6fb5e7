#!/bin/bash
# Pull benchmark: a local docker-registry with a 3-layer Debian bookworm image (mmdebstrap,
# cached), then racker pull vs skopeo copy + umoci unpack (+ podman pull if installed),
# alternating, on tmpfs (/dev/shm) and once into a fresh directory on disk.
#   bench/pull.sh [N]
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh" mmdebstrap time
[ -x "$top/build/racker" ] || "$top/scripts/build.sh"
work=$(mktemp -d /var/tmp/racker-bench-pull.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<YML
version: 0.1
storage: {filesystem: {rootdirectory: $work/registry}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg=$!
trap 'kill $reg 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
ref=127.0.0.1:$port/bench/debian:bookworm
"$top/bench/make-debian-image.sh" "$ref"
printf '[[registry]]\nlocation = "127.0.0.1:%s"\ninsecure = true\n' "$port" >"$work/registries.conf"
shm=$(mktemp -d /dev/shm/racker-bench.XXXXXX)
/usr/bin/python3 "$top/bench/pull.py" "$top/build/racker" "$ref" "$work/registries.conf" "$shm" "${1:-5}"
rm -rf "$shm"
echo
mkdir -p "$work/disk"
/usr/bin/python3 "$top/bench/pull.py" "$top/build/racker" "$ref" "$work/registries.conf" "$work/disk" 1
