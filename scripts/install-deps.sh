#!/bin/bash
# Installs everything racker needs to build and test, from Debian's archive only.
set -euo pipefail
pkgs=(build-essential cmake g++ pkg-config clang-format
  libseccomp-dev nlohmann-json3-dev libcli11-dev libgtest-dev
  busybox-static python3 python3-pytest jq iproute2 util-linux iptables nftables
  libcurl4-openssl-dev libsystemd-dev libssl-dev libzstd-dev libisal-dev libtomlplusplus-dev liblzma-dev
  docker-registry apache2-utils openssl skopeo umoci mmdebstrap tini
  qemu-system-x86 qemu-utils e2fsprogs
  clang libclang-rt-14-dev llvm
  uidmap passt slirp4netns
  qemu-user-static arch-test)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The real engines tests/integration/test_engines.py drives racker-oci through, with runc as the
# control (issue 10). The test starts its own private daemons; none may start on the host here,
# so a policy-rc.d that forbids it is put in place for the install if the machine has none.
engines=(docker.io podman containerd runc)
missing=()
for p in "${engines[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
