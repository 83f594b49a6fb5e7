#!/bin/bash
# Makes an OCI bundle (config.json + rootfs) around a busybox rootfs.
#   scripts/make-busybox-bundle.sh RACKER_OCI BUNDLE_DIR [ARGS...]
# ARGS become process.args (default: sh -c 'echo hello from racker-oci; cat /etc/os-release...').
set -euo pipefail
rt=${1:?usage: make-busybox-bundle.sh RACKER_OCI BUNDLE [ARGS...]}
bundle=${2:?usage: make-busybox-bundle.sh RACKER_OCI BUNDLE [ARGS...]}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$bundle"
[ -x "$bundle/rootfs/bin/busybox" ] || "$here/make-busybox-rootfs.sh" "$bundle/rootfs"
rm -f "$bundle/config.json"
"$rt" spec --bundle "$bundle"
if [ $# -eq 0 ]; then set -- sh -c 'echo "hello from racker-oci: $(hostname), pid $$, $(id)"'; fi
args=$(printf '%s\n' "$@" | jq -R . | jq -s .)
jq --argjson a "$args" '.ociVersion = "1.0.2" | .process.terminal = false | .process.args = $a' \
  "$bundle/config.json" >"$bundle/config.json.new"
mv "$bundle/config.json.new" "$bundle/config.json"
