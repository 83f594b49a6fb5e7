#!/bin/bash
# racker's VM test lane: boots Debian 12 (systemd 252 as PID 1, pure cgroup v2, kernel 6.1) in
# qemu and runs the integration tests (pytest) inside it, then hands the results back.
#
#   tests/vm/run.sh --build-dir DIR --out OUTDIR [--timeout SEC] [--memory MB] [--cpu MODEL]
#                   [--cache DIR] [--keep-disk] -- PYTEST_ARGS...
#
#   --build-dir  where racker, racker-oci and postroj were built (default: <repo>/build)
#   --out        results: console.log, share/out/{state,facts.txt,pytest.log,junit.xml,
#                journal.txt,rc}; the per-run disk overlay.qcow2 (removed unless --keep-disk)
#   --timeout    for the VM run, boot to power-off (default 1500 s); on expiry qemu is killed
#   --boot-timeout  until the guest has booted and started guest-run.sh (default 600 s)
#   --memory     guest RAM in MiB (default 3072)
#   --cpu        qemu -cpu model (default: host with KVM, max under TCG)
#   --cache      image cache (default /var/cache/racker-tests/vm; tests/vm/build-image.sh)
#
# Exit status: pytest's inside the guest; 1 if the guest never reported one (boot failure,
# timeout); 3 if its kernel locked up or panicked (the console's trace is printed); 77 with one "SKIP: reason" line when qemu is missing, we are not root, or the image
# cannot be built because the Debian archive is unreachable.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build_dir=$repo/build
out=
timeout=1500
boot_timeout=600
memory=3072
cpu=
cache=/var/cache/racker-tests/vm
keep_disk=0
usage() { sed -n '5,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --build-dir) build_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --boot-timeout) boot_timeout=$2; shift 2 ;;
    --memory) memory=$2; shift 2 ;;
    --cpu) cpu=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --keep-disk) keep_disk=1; shift ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown option $1" >&2; usage ;;
  esac
done
[ -n "$out" ] || { echo "run.sh: --out OUTDIR is required" >&2; usage; }
pytest_args=("$@")

qemu=${QEMU:-$(command -v qemu-system-x86_64 || true)} # $QEMU: another qemu-system-x86_64
if [ -z "$qemu" ] || [ ! -x "$qemu" ]; then echo "SKIP: qemu-system-x86_64 is missing (apt-get install qemu-system-x86)"; exit 77; fi
if ! command -v qemu-img >/dev/null; then echo "SKIP: qemu-img is missing (apt-get install qemu-utils)"; exit 77; fi
if [ "$(id -u)" != 0 ]; then echo "SKIP: the VM lane needs root (image build, 9p share with file owners)"; exit 77; fi
if ! command -v mmdebstrap >/dev/null && [ ! -e "$cache/rootfs.img" ]; then
  echo "SKIP: mmdebstrap is missing (apt-get install mmdebstrap) and no cached VM image"; exit 77
fi

t_start=$(date +%s)
secs() { echo $(( $(date +%s) - $1 )); }

# 1. The image (cached; built once, a few minutes under mmdebstrap)
mkdir -p "$out" "$cache"
out=$(cd "$out" && pwd)
cache=$(cd "$cache" && pwd) # absolute: the overlay names its backing file by this path
brc=0
"$here/build-image.sh" "$cache" >"$out/build-image.out" 2>&1 || brc=$?
if [ "$brc" = 77 ] && grep -q '^SKIP: ' "$out/build-image.out"; then
  grep -m1 '^SKIP: ' "$out/build-image.out"
  exit 77
fi
# Held (shared) from here until we exit: a build-image.sh of a newer image meanwhile then
# leaves the one our overlay is backed by in place.
exec 8>"$cache/.inuse"
flock -s 8
# build-image.sh prints the image directory last (CACHE_DIR/current may move on meanwhile)
img=$(tail -n1 "$out/build-image.out")
case $img in "$cache"/img-*) ;; *) img=$(readlink -f "$cache/current" 2>/dev/null || true) ;; esac
if [ "$brc" != 0 ] || [ -z "$img" ] || [ ! -f "$img/rootfs.img" ]; then
  cat "$out/build-image.out" >&2
  echo "run.sh: building the VM image failed" >&2
  exit 1
fi
grep '^build-image: built' "$out/build-image.out" >&2 || true
t_image=$(secs "$t_start")

# 2. Per-run files: the disk overlay (the cached image stays pristine) and the share
rm -rf "$out/share" "$out/overlay.qcow2" "$out/console.log"
qemu-img create -q -f qcow2 -b "$img/rootfs.img" -F raw "$out/overlay.qcow2"
share=$out/share
mkdir -p "$share/bin" "$share/out" "$share/repo/tests"
for b in racker racker-oci postroj syscall_probe; do
  if [ -x "$build_dir/$b" ]; then
    cp "$build_dir/$b" "$share/bin/"
  else
    echo "run.sh: warning: $build_dir/$b missing (its tests will skip)" >&2
  fi
done
# conftest.py takes tests/integration/../.. for the repository (scripts/make-busybox-rootfs.sh,
# data/postroj/catalog.json): ship those beside the tests
cp -a "$here/../integration" "$share/repo/tests/integration"
find "$share/repo/tests/integration" -name __pycache__ -prune -exec rm -rf {} +
cp -a "$repo/scripts" "$share/repo/scripts"
[ -d "$repo/data" ] && cp -a "$repo/data" "$share/repo/data"
cp "$here/guest-run.sh" "$share/guest-run.sh"
# NUL-separated (guest-run.sh: mapfile -d ''); none at all is an empty file
: >"$share/args"
[ ${#pytest_args[@]} -eq 0 ] || printf '%s\0' "${pytest_args[@]}" >"$share/args"

# 3. qemu: KVM where /dev/kvm is usable, else TCG (multi-threaded)
kvm_usable() {
  # KVM_GET_API_VERSION (ioctl 0xAE00) answers 12 where /dev/kvm really works
  [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] &&
    python3 -c 'import fcntl, os; fd = os.open("/dev/kvm", os.O_RDWR); assert fcntl.ioctl(fd, 0xAE00) == 12' 2>/dev/null ||
    return 1
  # and a machine starts on it (stopped, -S): a nested KVM may refuse the vCPU's MSRs, and
  # qemu aborts at once; a working one is still up when the probe's 2 s are over
  local rc=0
  (timeout 2 "$qemu" -machine q35 -accel kvm -cpu "${cpu:-host}" -display none -nodefaults \
    -no-user-config -S -monitor none -serial none </dev/null >/dev/null 2>&1; exit $?) \
    2>/dev/null || rc=$? # (the exit keeps the subshell, which reports an abort to /dev/null)
  [ $rc = 124 ]
}
if kvm_usable; then
  accel=(-accel kvm); cpu=${cpu:-host}
else
  # shellcheck disable=SC2054 # the comma belongs to qemu's option
  accel=(-accel tcg,thread=multi); cpu=${cpu:-max}
fi
# The guest copies what it is given onto its disk, which a cache of every release (and foreign
# architectures) would fill: it gets the bookworm rootfs tarballs of this machine's
# architecture only (what its tests bake), hard-linked into a directory of their own.
bake=()
bake_src=/var/cache/racker-tests/bake
bake_vm=/var/cache/racker-tests/bake-vm
if [ -d "$bake_src" ]; then
  rm -rf "$bake_vm"
  mkdir -p "$bake_vm"
  python3 - "$bake_src" "$bake_vm" <<'PY'
import json, os, sys
src, dst = sys.argv[1], sys.argv[2]
arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
for f in os.listdir(src):
    if not f.endswith(".json"):
        continue
    try:
        meta = json.load(open(os.path.join(src, f)))
    except (OSError, ValueError):
        continue
    tar = f[:-5] + ".tar"
    if meta.get("suite") != "bookworm" or meta.get("arch", arch) != arch:
        continue
    if not os.path.exists(os.path.join(src, tar)):
        continue
    for name in (f, tar):
        try:
            os.link(os.path.join(src, name), os.path.join(dst, name))
        except OSError:
            import shutil
            shutil.copy2(os.path.join(src, name), os.path.join(dst, name))
PY
  bake=(-virtfs "local,path=$bake_vm,mount_tag=bake,security_model=none,readonly=on,id=bake")
fi
# panic=1 + -no-reboot: a kernel panic (or an initramfs that cannot find the root) ends qemu.
# A soft lockup (a CPU stuck in the kernel for 20 s) panics too, after a backtrace of every CPU:
# the guest cannot get out of one, and the backtraces say where it hung.
cmdline="root=/dev/vda rw console=ttyS0 quiet systemd.show_status=0 panic=1"
cmdline+=" softlockup_panic=1 softlockup_all_cpu_backtrace=1"
qemu_argv=("$qemu" -machine q35 "${accel[@]}" -cpu "$cpu" -smp 2 -m "$memory"
  -nodefaults -no-user-config -display none -vga none -monitor none -no-reboot
  -serial "file:$out/console.log"
  -kernel "$img/vmlinuz" -initrd "$img/initrd.img" -append "$cmdline"
  -drive "file=$out/overlay.qcow2,if=virtio,format=qcow2,cache=unsafe,discard=unmap"
  -virtfs "local,path=$share,mount_tag=share,security_model=none,id=share"
  "${bake[@]}"
  -device virtio-rng-pci -nic user,model=virtio-net-pci)
echo "${qemu_argv[*]}" >"$out/qemu.cmdline"

qpid=
kill_qemu() {
  [ -n "$qpid" ] || return 0
  if kill -0 "$qpid" 2>/dev/null; then
    kill -TERM "$qpid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qpid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$qpid" 2>/dev/null || true
  fi
  wait "$qpid" 2>/dev/null || true
  qpid=
}
finish() {
  kill_qemu
  [ "$keep_disk" = 1 ] || rm -f "$out/overlay.qcow2"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "run.sh: booting the VM (${accel[*]} -cpu $cpu, $memory MiB); console: $out/console.log" >&2
t_boot=$(date +%s)
# setpriv --pdeathsig: qemu gets SIGKILL should this script die without running its traps
pdeath=()
setpriv --help 2>/dev/null | grep -q -- --pdeathsig && pdeath=(setpriv --pdeathsig KILL --)
"${pdeath[@]}" "${qemu_argv[@]}" </dev/null >"$out/qemu.log" 2>&1 &
qpid=$!
why=
while kill -0 "$qpid" 2>/dev/null; do
  if [ "$(secs "$t_boot")" -ge "$timeout" ]; then why="timed out after $timeout s"; break; fi
  # guest-run.sh writes the state right after boot: no state after boot_timeout means the
  # guest hangs in its boot (or could not mount the share and so never started the tests)
  if [ ! -e "$share/out/state" ] && [ "$(secs "$t_boot")" -ge "$boot_timeout" ]; then
    why="the guest did not come up within $boot_timeout s"; break
  fi
  # The guest cannot get out of these by itself: stop waiting for the timeout
  if grep -q -e 'You are in emergency mode' -e 'Give root password for maintenance' \
      "$out/console.log" 2>/dev/null; then
    why="the guest fell into emergency mode"; break
  fi
  if grep -q -e 'watchdog: BUG: soft lockup' -e 'rcu_preempt self-detected stall' \
      -e 'rcu: INFO: rcu_preempt detected stalls' "$out/console.log" 2>/dev/null; then
    sleep 5 # the backtraces (then the panic) follow the first line
    why="the guest's kernel locked up"; break
  fi
  if [ -z "${t_running:-}" ] && [ -s "$share/out/state" ]; then
    t_running=$(secs "$t_boot")
    echo "run.sh: guest reached '$(cat "$share/out/state")' after $t_running s" >&2
  fi
  sleep 1
done
if [ -n "$why" ]; then
  kill_qemu
else
  qrc=0; wait "$qpid" || qrc=$?; qpid=
  [ "$qrc" = 0 ] || why="qemu exited with status $qrc: $(tail -n 5 "$out/qemu.log" | tr '\n' ' ')"
fi
t_vm=$(secs "$t_boot")

# 4. Results
res=$share/out
if [ -s "$res/pytest.log" ]; then
  echo "===== pytest (guest) =====" && cat "$res/pytest.log"
fi
if [ -s "$res/facts.txt" ]; then
  echo "===== facts (guest) =====" && cat "$res/facts.txt"
fi
echo "===== times =====" >&2
echo "image: ${t_image} s; boot to '$(cat "$res/state" 2>/dev/null || echo '?')': ${t_running:-?} s" \
  "(host clock, polled); VM total: ${t_vm} s; run.sh total: $(secs "$t_start") s" >&2
if [ ! -s "$res/rc" ]; then
  # The guest's kernel gave up: its first report (with the backtraces) says where
  first=$(grep -n -m1 -e 'watchdog: BUG: soft lockup' -e 'rcu_preempt self-detected stall' \
    -e 'rcu: INFO: rcu_preempt detected stalls' -e 'Kernel panic' -e 'BUG: ' \
    "$out/console.log" 2>/dev/null | cut -d: -f1 || true)
  if [ -n "$first" ]; then
    echo "run.sh: the guest reported no result (${why:-its kernel panicked}); the console from" \
      "its kernel's first report:" >&2
    sed -n "$first,$((first + 150))p" "$out/console.log" >&2
    exit 3
  fi
  echo "run.sh: the guest reported no result${why:+ ($why)}; the console's last lines:" >&2
  if [ -s "$out/console.log" ]; then tail -n 40 "$out/console.log" >&2; else echo "(console.log is empty)" >&2; fi
  exit 1
fi
rc=$(cat "$res/rc")
if [ "$rc" != 0 ] || [ -e "$res/junit-rerun.xml" ]; then
  # last, so that a log cut to its head and tail still names what failed, and why
  python3 "$here/digest.py" "$res/junit.xml" >&2 || true
fi
if [ "$rc" != 0 ]; then
  echo "run.sh: pytest in the guest exited $rc (console: $out/console.log, journal: $res/journal.txt)" >&2
fi
exit "$rc"
