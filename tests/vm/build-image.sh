#!/bin/bash
# Builds (once, cached) the VM image of racker's VM test lane: Debian 12 bookworm with systemd 252
# as PID 1 on pure cgroup v2 and Debian's 6.1 kernel, made with mmdebstrap from Debian's archive.
#
#   tests/vm/build-image.sh [CACHE_DIR]        (default /var/cache/racker-tests/vm; needs root)
#
# Output: CACHE_DIR/vmlinuz, CACHE_DIR/initrd.img, CACHE_DIR/rootfs.img (raw ext4, root on
# /dev/vda). They are symlinks through CACHE_DIR/current to CACHE_DIR/img-<key>/, where <key> is
# a hash of this script (its package list and every bit of guest configuration live here), so
# editing the script builds a new image on the next call and an unchanged one is reused. An image
# directory only gets its final name once complete (built under a temporary name, then renamed),
# so an interrupted build is never taken for a finished one. Prints the image directory last.
#
# Exit status 77 (and "SKIP: ..." on stdout) when the Debian archive cannot be reached.
#
# RACKER_VM_MIRROR (default http://deb.debian.org) picks the archive; it is part of the key.
set -euo pipefail
# The system's tools first: mmdebstrap's helpers (mmtarfilter) are "#!/usr/bin/env python3"
# scripts, and a python shim early in PATH (pyenv) would be started for every package.
export PATH=/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin

MIRROR=${RACKER_VM_MIRROR:-http://deb.debian.org}
SUITE=bookworm
# Free space the guest gets on top of the installed system (container stores, test temp dirs).
FREE_MIB=3584

# What the lane needs in the guest. Recommends are not installed (mmdebstrap's default).
PACKAGES=(
  # the host: systemd as PID 1, D-Bus, machined/machinectl, udev (device units, module autoload)
  systemd systemd-sysv dbus systemd-container udev
  # kernel and its initramfs (initramfs-tools; zstd so it need not fall back to gzip)
  linux-image-amd64 initramfs-tools zstd kmod
  # what racker and its tests call
  python3 python3-pytest busybox-static mmdebstrap iproute2 iptables nftables procps util-linux
  tini e2fsprogs jq
  # runtime libraries of build/racker, racker-oci (static) and postroj (ldd): libisal2,
  # libstdc++6 (pulled in anyway); the others the brief lists for racker's optional features
  libisal2 libcurl4 libseccomp2 libsystemd0 libstdc++6
  # test tools the registry tests look for (else they skip): registry, TLS/htpasswd auth
  docker-registry openssl apache2-utils
  # rootless racker and racker-oci: newuidmap/newgidmap, pasta; useradd (passwd) makes the
  # test user; pam_systemd gives a lingering user's manager (user@UID.service, the cgroup
  # systemd delegates) its XDG_RUNTIME_DIR
  uidmap passt passwd libpam-systemd
)

# --- customize: runs inside mmdebstrap (root mode: /proc, /sys, /dev are mounted in $1) --------
customize() {
  local root=$1
  echo racker-vm >"$root/etc/hostname"
  cat >"$root/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	racker-vm
::1		localhost ip6-localhost ip6-loopback
EOF
  # Root on the virtio disk; the 9p share with the run's files. nofail: a boot without the share
  # (by hand, for debugging) still comes up. The x-systemd.requires makes sure 9p and
  # 9pnet_virtio are loaded (modules-load.d below) before the mount is tried.
  cat >"$root/etc/fstab" <<'EOF'
/dev/vda	/		ext4	rw,errors=remount-ro	0 1
share		/mnt/share	9p	trans=virtio,version=9p2000.L,msize=262144,nofail,x-systemd.requires=systemd-modules-load.service	0 0
EOF
  mkdir -p "$root/mnt/share"
  printf '9p\n9pnet_virtio\n' >"$root/etc/modules-load.d/racker-vm.conf"

  # A fresh machine id of the image (each run boots a copy of the same image: the same id).
  tr -d '-' </proc/sys/kernel/random/uuid >"$root/etc/machine-id"
  chroot "$root" passwd --delete root >/dev/null

  # The initramfs only has to find the root on virtio-blk (virtio_pci + virtio_blk) and mount
  # ext4: MODULES=list keeps it to the modules the hook below names (and their dependencies),
  # force-loaded without waiting for udev. Debian's default (MODULES=most, ~30 MB) makes the
  # kernel spend seconds unpacking it under TCG. 9p and 9pnet_virtio are loaded from the root.
  printf 'MODULES=list\n' >"$root/etc/initramfs-tools/conf.d/racker-vm"
  cat >"$root/etc/initramfs-tools/hooks/racker-vm" <<'EOF2'
#!/bin/sh
[ "$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
for m in virtio_pci virtio_blk crc32c_generic ext4; do
  manual_add_modules "$m"
  force_load "$m"
done
EOF2
  chmod 755 "$root/etc/initramfs-tools/hooks/racker-vm"
  chroot "$root" update-initramfs -u -k all

  # The unit that runs the lane's /mnt/share/guest-run.sh and then powers the VM off whatever
  # the result. Type=exec (not oneshot): the unit is active as soon as the script runs, so the
  # boot transaction ends and `systemctl is-system-running` reports "running" while the tests run
  # (a oneshot would keep the system "starting" until it exits).
  cat >"$root/usr/local/sbin/racker-vm-tests" <<'EOF'
#!/bin/bash
# Runs /mnt/share/guest-run.sh if there is one. The unit powers the VM off afterwards, unless
# the kernel command line has racker_vm.keep (boot by hand, log in as root on the console).
if [ -x /mnt/share/guest-run.sh ] || [ -f /mnt/share/guest-run.sh ]; then
  /bin/bash /mnt/share/guest-run.sh
  rc=$?
else
  echo "racker-vm-tests: no /mnt/share/guest-run.sh (9p share 'share' missing?)"
  rc=0
fi
if grep -qw racker_vm.keep /proc/cmdline; then
  echo "racker-vm-tests: racker_vm.keep on the kernel command line: not powering off"
  exit 0
fi
systemctl --no-block poweroff --force
exit "$rc"
EOF
  chmod 755 "$root/usr/local/sbin/racker-vm-tests"
  cat >"$root/etc/systemd/system/racker-vm-tests.service" <<'EOF'
[Unit]
Description=racker VM test lane (/mnt/share/guest-run.sh)
After=multi-user.target
RequiresMountsFor=/mnt/share

[Service]
Type=exec
ExecStart=/usr/local/sbin/racker-vm-tests
Environment=HOME=/root
WorkingDirectory=/root
StandardOutput=journal+console
StandardError=journal+console
TimeoutStopSec=10

[Install]
WantedBy=multi-user.target
EOF
  chroot "$root" systemctl enable racker-vm-tests.service
  # Timers and units that are of no use in a throwaway test VM (apt downloads, periodic scrubs)
  chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    e2scrub_reap.service fstrim.timer systemd-networkd-wait-online.service
  # journald: keep the journal in memory (the disk is a throwaway overlay anyway)
  mkdir -p "$root/etc/systemd/journald.conf.d"
  printf '[Journal]\nStorage=volatile\n' >"$root/etc/systemd/journald.conf.d/racker-vm.conf"
  # No package lists, docs, man pages in the image
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*

  # Check the initramfs: a root on virtio-blk needs these in it
  # (the listing goes to a variable first: grep -q on a pipe would SIGPIPE lsinitramfs)
  local initrd listing
  initrd=$(ls "$root"/boot/initrd.img-* | head -n1)
  listing=$(chroot "$root" lsinitramfs "${initrd#"$root"}")
  for m in virtio_blk.ko virtio_pci.ko ext4.ko; do
    grep -q "/$m" <<<"$listing" \
      || { echo "build-image: $m missing from $initrd" >&2; return 1; }
  done
  # 9p is loaded after the root mount: it must be in the root's module tree
  for m in 9p 9pnet_virtio; do
    chroot "$root" modinfo -k "$(ls "$root/lib/modules")" "$m" >/dev/null \
      || { echo "build-image: kernel module $m missing" >&2; return 1; }
  done
}

if [ "${1:-}" = --customize ]; then
  customize "$2"
  exit 0
fi

# --- main -----------------------------------------------------------------------------------
cache=${1:-/var/cache/racker-tests/vm}
self=$(readlink -f "$0")
key=$( { sha256sum <"$self"; echo "$MIRROR"; } | sha256sum | cut -c1-16)
img=$cache/img-$key

if [ "$(id -u)" != 0 ]; then
  echo "build-image: needs root (mmdebstrap in root mode, file owners in the image)" >&2
  exit 1
fi
mkdir -p "$cache"

# One build at a time per cache directory; the second caller waits and then finds the image.
exec 9>"$cache/.lock"
flock 9

publish() {
  # CACHE_DIR/current -> img-<key>, and the three stable names through it; each switched by a
  # rename so readers never see a dangling or half-written link.
  ln -sfn "img-$key" "$cache/.current.tmp" && mv -T "$cache/.current.tmp" "$cache/current"
  local f
  for f in vmlinuz initrd.img rootfs.img; do
    [ -L "$cache/$f" ] || { rm -f "$cache/$f"; ln -s "current/$f" "$cache/$f"; }
  done
}

if [ -f "$img/rootfs.img" ] && [ -f "$img/vmlinuz" ] && [ -f "$img/initrd.img" ]; then
  publish
  echo "build-image: cached image $img" >&2
  echo "$img"
  exit 0
fi

# The archive must be reachable (the lane skips, rather than fails, where it is not).
if ! curl -fsS --max-time 20 -o /dev/null "$MIRROR/debian/dists/$SUITE/InRelease" 2>/dev/null; then
  echo "SKIP: the Debian archive ($MIRROR/debian) is unreachable: cannot build the VM image"
  exit 77
fi

# Leftovers of a build that was killed outright (we hold the lock: no build is running)
for stale in "$cache"/.build-*; do
  [ -d "$stale" ] || continue
  umount -l "$stale/root" 2>/dev/null || true
  rm -rf --one-file-system "$stale"
done

start=$(date +%s)
tmp=$(mktemp -d "$cache/.build-$key.XXXXXX")
cleanup() {
  # --one-file-system: never follow into a mount mmdebstrap might have left behind
  umount -l "$tmp/root" 2>/dev/null || true
  rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
echo "build-image: building $img (log: $tmp/build.log)" >&2

mkdir "$tmp/root" "$tmp/out"
mkdir -p "$cache/debs"
# Build the tree in RAM when we may (dpkg's many small files and fsyncs are several times
# slower on disk); mkfs.ext4 -d reads it from there. Falls back to the disk.
mount -t tmpfs -o size=4g,mode=755 racker-vm-build "$tmp/root" 2>/dev/null || true
include=$(IFS=,; echo "${PACKAGES[*]}")
if ! mmdebstrap --mode=root --variant=minbase --format=directory \
    --include="$include" \
    --aptopt='Acquire::Languages "none"' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --skip=essential/unlink \
    --setup-hook="mkdir -p \"\$1/var/cache/apt/archives\"" \
    --setup-hook="sync-in \"$cache/debs\" /var/cache/apt/archives/" \
    --customize-hook="sync-out /var/cache/apt/archives \"$cache/debs\"" \
    --customize-hook="\"$self\" --customize \"\$1\"" \
    "$SUITE" "$tmp/root" \
    "deb $MIRROR/debian $SUITE main" \
    "deb $MIRROR/debian $SUITE-updates main" \
    "deb $MIRROR/debian-security $SUITE-security main" >"$tmp/build.log" 2>&1; then
  tail -n 40 "$tmp/build.log" >&2
  echo "build-image: mmdebstrap failed (log above)" >&2
  # the archive may have gone away during the build: that is a skip too
  if ! curl -fsS --max-time 20 -o /dev/null "$MIRROR/debian/dists/$SUITE/InRelease" 2>/dev/null; then
    echo "SKIP: the Debian archive ($MIRROR/debian) became unreachable while building the VM image"
    exit 77
  fi
  exit 1
fi

kver=$(ls "$tmp/root/lib/modules")
cp "$tmp/root/boot/vmlinuz-$kver" "$tmp/out/vmlinuz"
cp "$tmp/root/boot/initrd.img-$kver" "$tmp/out/initrd.img"

# The raw ext4 image straight from the directory (mkfs.ext4 -d: no loop mount). No reserved
# blocks; the size is what the tree uses plus FREE_MIB plus ~10% for metadata.
used_mib=$(du -sm --apparent-size "$tmp/root" | cut -f1)
size_mib=$(( used_mib * 11 / 10 + FREE_MIB + 256 ))
mkfs.ext4 -q -F -L racker-vm -m 0 -E lazy_itable_init=0,lazy_journal_init=0 \
  -d "$tmp/root" "$tmp/out/rootfs.img" "${size_mib}M" >>"$tmp/build.log" 2>&1 \
  || { tail -n 20 "$tmp/build.log" >&2; echo "build-image: mkfs.ext4 failed" >&2; exit 1; }
{
  echo "key=$key"
  echo "kernel=$kver"
  echo "systemd=$(chroot "$tmp/root" dpkg-query -W -f='${Version}' systemd)"
  echo "rootfs_mib=$size_mib used_mib=$used_mib"
  echo "built=$(date -u +%FT%TZ) seconds=$(( $(date +%s) - start ))"
} >"$tmp/out/info"
mv "$tmp/build.log" "$tmp/out/build.log"
umount "$tmp/root" 2>/dev/null || rm -rf --one-file-system "$tmp/root"

# Complete: give it its final name, point current at it, drop older images.
rm -rf "$img"
mv -T "$tmp/out" "$img"
publish
# run.sh holds CACHE_DIR/.inuse shared while its VM runs (its overlay is backed by an image
# here): older images go only when no run holds it, else the next build drops them.
if flock -n -x "$cache/.inuse" true; then
  for old in "$cache"/img-*; do
    [ "$old" = "$img" ] || { echo "build-image: removing old image $old" >&2; rm -rf "$old"; }
  done
fi
echo "build-image: built $img in $(( $(date +%s) - start )) s (kernel $kver, rootfs ${size_mib} MiB)" >&2
echo "$img"
