#!/bin/bash
# The main job, from a fresh Debian 12 machine as root: install what is needed, build, run a
# busybox container with racker-oci, boot a Debian image baked with racker, and run a postroj
# package probe on it.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/install-deps.sh"
"$top/scripts/build.sh"
bundle=${RACKER_DEMO_BUNDLE:-/var/tmp/racker-demo-bundle}
"$top/scripts/make-busybox-bundle.sh" "$top/build/racker-oci" "$bundle"
echo "== racker-oci run (bundle $bundle)"
"$top/build/racker-oci" run --bundle "$bundle" "racker-demo-$$"
cd "$top"

# an OS container: Debian bookworm with systemd, baked from Debian's archive (cached), booted
echo "== racker bake + racker run --boot"
build/racker bake -q --suite bookworm --include systemd,systemd-sysv,dbus \
  --name racker-demo/debian-systemd:bookworm debian
build/racker run --rm --boot --hostname racker-demo racker-demo/debian-systemd:bookworm \
  sh -c 'grep PRETTY_NAME /etc/os-release; hostnamectl; systemctl is-system-running'

# postroj: the curated debian-bookworm image (same cached rootfs), booted, journald checked,
# a JUnit report written, torn down
echo "== postroj pkgprobe --image=debian-bookworm --check-unit=systemd-journald"
build/postroj pull debian-bookworm
build/postroj pkgprobe --image=debian-bookworm --check-unit=systemd-journald \
  --report=junit:/var/tmp/racker-demo-pkgprobe.xml
echo "JUnit report: /var/tmp/racker-demo-pkgprobe.xml"
