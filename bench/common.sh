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
