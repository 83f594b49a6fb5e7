#!/bin/bash
# Makes a minimal busybox root filesystem from Debian's busybox-static: DIR/bin/busybox,
# one symlink per applet, /etc/passwd and /etc/group, /tmp (1777).
#   scripts/make-busybox-rootfs.sh DIR
set -euo pipefail
dir=${1:?usage: make-busybox-rootfs.sh DIR}
bb=/bin/busybox
[ -x "$bb" ] || { echo "make-busybox-rootfs: $bb missing (apt-get install busybox-static)" >&2; exit 1; }
mkdir -p "$dir"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,root,var}
chmod 1777 "$dir/tmp"
cp "$bb" "$dir/bin/busybox"
"$bb" --list-full | while read -r applet; do
  [ -e "$dir/$applet" ] || ln -s /bin/busybox "$dir/$applet"
done
cat >"$dir/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat >"$dir/etc/group" <<'G'
root:x:0:
daemon:x:1:
tty:x:5:
nogroup:x:65534:
G
echo "racker" >"$dir/etc/hostname"
