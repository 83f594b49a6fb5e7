#!/bin/bash
# Benchmark racker-oci run vs runc run vs crun run of /bin/true (see oci_run.py).
#   bench/oci-run.sh [N]      (as root; installs runc and crun from Debian if missing)
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh" runc crun time
[ -x "$top/build/racker-oci" ] || "$top/scripts/build.sh"
bundle=/var/tmp/racker-bench-bundle
"$top/scripts/make-busybox-bundle.sh" "$top/build/racker-oci" "$bundle" /bin/true
# the same bundle for all three: no terminal, no network namespace setup differences
exec /usr/bin/python3 "$top/bench/oci_run.py" "$top/build/racker-oci" "$bundle" "${1:-60}"
