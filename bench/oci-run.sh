#!/bin/bash
# Benchmark racker-oci run vs runc run vs crun run of /bin/true (see oci_run.py).
#   bench/oci-run.sh [N]      (as root; installs runc and crun from Debian if missing)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/install-deps.sh"
for p in runc crun time; do
  dpkg -s $p >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $p
done
[ -x "$top/build/racker-oci" ] || "$top/scripts/build.sh"
bundle=/var/tmp/racker-bench-bundle
"$top/scripts/make-busybox-bundle.sh" "$top/build/racker-oci" "$bundle" /bin/true
# the same bundle for all three: no terminal, no network namespace setup differences
exec /usr/bin/python3 "$top/bench/oci_run.py" "$top/build/racker-oci" "$bundle" "${1:-60}"
