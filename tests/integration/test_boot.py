"""racker run --boot: the image's systemd as PID 1, the command run inside it once systemd
reports READY=1, then shutdown (SIGRTMIN+3) and cleanup.

One `racker bake --include systemd,systemd-sysv,dbus debian` per session into a store of its
own; the rootfs tarball is cached in /var/cache/racker-tests/bake (as test_load_save_bake.py
does), so reruns take seconds. After every run nothing may be left: no process of the booted
system, no mount under the store, no cgroup made by its systemd, no /run/racker entry.
"""

import concurrent.futures
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import wait_until
from racker_ctx import racker_snapshot, state_entries_for

BAKE_CACHE = Path("/var/cache/racker-tests/bake")
IMAGE = "racker-boot-test:bookworm"
TIMEOUT = 90


@pytest.fixture(scope="session")
def racker_exe(tmp_path_factory):
    return racker_snapshot(tmp_path_factory,
                           "racker run --boot tests need root (mounts, namespaces, cgroups)")


@pytest.fixture(scope="session")
def store(racker_exe, tmp_path_factory):
    """A store holding IMAGE: bookworm with systemd, systemd-sysv and dbus."""
    if not shutil.which("mmdebstrap"):
        print("SKIP: mmdebstrap is missing (apt-get install mmdebstrap)")
        pytest.skip("mmdebstrap not installed (apt-get install mmdebstrap)")
    BAKE_CACHE.mkdir(parents=True, exist_ok=True)
    root = tmp_path_factory.mktemp("boot") / "store"
    argv = [racker_exe, "--root", str(root), "bake", "--cache-dir", str(BAKE_CACHE),
            "--suite", "bookworm", "--include", "systemd,systemd-sysv,dbus", "--name", IMAGE,
            "debian"]
    p = subprocess.run(argv, capture_output=True, timeout=900)
    if p.returncode != 0 and b"mmdebstrap failed" in p.stderr:
        reason = ("mmdebstrap could not build bookworm (no access to the Debian archive?): "
                  + p.stderr.decode(errors="replace")[-500:])
        print("SKIP: " + reason)
        pytest.skip(reason)
    assert p.returncode == 0, p
    return root


def racker_cgroups():
    """Container cgroups: /racker/<id> of cgroupfs, or racker-<id>.scope below machine.slice
    where systemd places them."""
    found = set()
    for pattern in ("/sys/fs/cgroup/*/racker/*/", "/sys/fs/cgroup/*/*/racker/*/",
                    "/sys/fs/cgroup/machine.slice/racker-*.scope/",
                    "/sys/fs/cgroup/*/machine.slice/racker-*.scope/"):
        found |= set(glob.glob(pattern))
    return found


def booted_inits(store=None):
    """Processes whose environment has container=racker (a booted container's init); with
    store, only those whose root filesystem lies in it (other suites boot systems too)."""
    out = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            env = Path(d, "environ").read_bytes().split(b"\0")
            if b"container=racker" not in env:
                continue
            if store and not any(l.split()[4] == "/" and str(store) in l
                                 for l in Path(d, "mountinfo").read_text().splitlines()):
                continue
        except OSError:
            continue
        out.append(int(os.path.basename(d)))
    return out


class Boot:
    def __init__(self, exe, root):
        self.exe = exe
        self.root = root
        self.ready_ms = []

    def run(self, *cmd, flags=(), mode="--boot", image=IMAGE, stdin=None, check=True):
        name = "boot-" + uuid.uuid4().hex[:10]
        before = racker_cgroups()
        argv = [self.exe, "--debug", "--root", str(self.root), "run", *([mode] if mode else []),
                "--rm", "--name", name, *flags, image, *cmd]
        t0 = time.monotonic()
        p = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, input=stdin)
        wall = time.monotonic() - t0
        m = re.search(r"boot: \S+ ready in (\d+) ms", p.stderr)
        if m:
            self.ready_ms.append(int(m.group(1)))
            print(f"\n{' '.join(cmd)}: boot-to-ready {m.group(1)} ms, whole run {wall * 1000:.0f} ms")
        if check:
            self.check_clean(name, before)
        return p

    def check_clean(self, name, before):
        problems = []
        inits = booted_inits(self.root)
        if inits:
            problems.append(f"booted inits left: {inits}")
        with open("/proc/self/mountinfo") as f:
            left = [l.strip() for l in f if str(self.root) in l]
        if left:
            problems.append(f"mounts left: {left}")
        # cgroups our run made: new ones that systemd populated (init.scope, system.slice);
        # other containers (concurrent test suites) come and go under racker/ too
        new = [d for d in racker_cgroups() - before
               if os.path.isdir(d + "init.scope") or os.path.isdir(d + "system.slice")]
        if new:
            problems.append(f"cgroups left: {sorted(new)}")
        if state_entries_for(name):
            problems.append(f"runtime state left: {state_entries_for(name)}")
        containers = self.root / "containers"
        if containers.is_dir() and os.listdir(containers):
            problems.append(f"container dirs left: {os.listdir(containers)}")
        assert not problems, "after the run:\n  " + "\n  ".join(problems)


@pytest.fixture
def boot(racker_exe, store):
    return Boot(racker_exe, store)


def test_boot_systemctl_is_active(boot):
    p = boot.run("systemctl", "is-active", "systemd-journald")
    assert p.returncode == 0, p
    assert p.stdout == "active\n", p
    assert boot.ready_ms, p


def test_boot_exit_status(boot):
    p = boot.run("sh", "-c", "exit 3")
    assert p.returncode == 3, p


def test_notify_socket_never_blocks_its_senders_after_ready(boot):
    """After READY=1 racker reads no more from the notify socket. Messages sent to it then
    (systemd 257 sends some; here the command sends 30) must fail at once, not fill its queue
    (net.unix.max_dgram_qlen = 10) and block the sender: blocked, PID 1 never shut down."""
    p = boot.run("sh", "-c", "for i in $(seq 30); do "
                 "NOTIFY_SOCKET=/run/host/notify timeout 5 systemd-notify STATUS=x$i; "
                 "[ $? = 124 ] && echo blocked; done; echo done")
    assert p.returncode == 0, p
    assert "blocked" not in p.stdout and p.stdout.endswith("done\n"), p


def test_boot_system_running_and_no_failed_units(boot):
    p = boot.run("systemctl", "is-system-running")
    assert p.stdout == "running\n", (p, boot.run("systemctl", "--failed", "--no-legend").stdout)
    assert p.returncode == 0, p


def test_boot_hostnamectl(boot):
    p = boot.run("hostnamectl", flags=("--hostname", "bootbox"))
    assert p.returncode == 0, p
    assert re.search(r"Static hostname: bootbox\n", p.stdout), p
    assert re.search(r"Virtualization: \S+", p.stdout), p


def test_boot_pid1_and_environment(boot):
    p = boot.run("sh", "-c", "cat /proc/1/comm; cat /etc/machine-id; "
                 "cat /run/systemd/container; "
                 # systemd's own hierarchy: name=systemd on hybrid hosts, else cgroup2
                 "d=/sys/fs/cgroup/systemd; [ -d $d ] || d=/sys/fs/cgroup; "
                 "mkdir $d/probe && rmdir $d/probe && echo writable")
    assert p.returncode == 0, p
    comm, machine_id, container, rw = p.stdout.split("\n")[:4]
    assert comm == "systemd", p
    assert re.fullmatch(r"[0-9a-f]{32}", machine_id), p
    assert container == "racker", p
    assert rw == "writable", p  # systemd's own hierarchy: it makes its sub-cgroups there


def test_boot_command_not_found(boot):
    p = boot.run("no-such-command")
    assert p.returncode == 127, p


def test_boot_without_command_runs_the_image_cmd(boot):
    """No COMMAND: the image's Cmd (/bin/bash) runs inside the booted system, stdin with -i."""
    p = boot.run(flags=("-i",), stdin="cat /proc/1/comm; systemctl is-system-running\n")
    assert p.returncode == 0, p
    assert p.stdout == "systemd\nrunning\n", p


def test_distribution_image_boots_by_default(boot):
    p = boot.run("cat", "/proc/1/comm", mode=None)
    assert p.returncode == 0, p
    assert p.stdout == "systemd\n", p
    p = boot.run("cat", "/proc/1/comm", mode="--no-boot")
    assert p.returncode == 0, p
    assert p.stdout == "cat\n", p
    p = boot.run("true", flags=("--no-boot",))
    assert p.returncode == 125 and "--boot and --no-boot contradict" in p.stderr, p


def test_booted_command_gets_a_containers_process_not_the_inits(boot):
    """The command has docker's capability set and environment: no NOTIFY_SOCKET, no
    CAP_SYS_ADMIN (the init has nspawn's set), the image's PATH."""
    p = boot.run("sh", "-c", "grep CapEff /proc/self/status; grep CapEff /proc/1/status; "
                 "env | grep -c NOTIFY_SOCKET; echo $PATH")
    assert p.returncode == 0, p
    mine, init, notify, path = p.stdout.split("\n")[:4]
    cap_sys_admin = 1 << 21
    assert int(mine.split()[1], 16) & cap_sys_admin == 0, p
    assert int(init.split()[1], 16) & cap_sys_admin, p
    assert int(mine.split()[1], 16) & (1 << 0), p  # CAP_CHOWN is in docker's set
    assert notify == "0", p
    assert path.startswith("/usr/local/sbin:"), p


def test_slim_image_gets_systemd_provisioned_once(boot, racker_exe):
    """debian bookworm minbase without systemd: the first run installs systemd with apt in a
    throwaway container and stores a derived image; later runs (also two at once) reuse it."""
    slim = "racker-slim-test:bookworm"
    p = subprocess.run([racker_exe, "--root", str(boot.root), "bake", "-q", "--cache-dir",
                        str(BAKE_CACHE), "--suite", "bookworm", "--name", slim, "debian"],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p
    p = boot.run("sh", "-c", "cat /proc/1/comm; systemctl is-active systemd-journald",
                 mode=None, image=slim)
    if p.returncode != 0 and "apt-get" in p.stderr and "failed" in p.stderr:
        pytest.skip("apt-get cannot reach the Debian archive here: " + p.stderr[-300:])
    assert p.returncode == 0, p
    assert p.stdout == "systemd\nactive\n", p
    assert "provisioning systemd into docker.io/library/racker-slim-test:bookworm with apt" \
        in p.stderr, p
    images = subprocess.run([racker_exe, "--root", str(boot.root), "images"],
                            capture_output=True, text=True).stdout
    assert "racker.local/provisioned/" in images, images

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        before = racker_cgroups()
        runs = list(pool.map(lambda h: boot.run("hostnamectl", "hostname", mode=None,
                                                image=slim, flags=("--hostname", h),
                                                check=False),
                             ["slim-a", "slim-b"]))
    boot.check_clean("slim-", before)
    for p, h in zip(runs, ["slim-a", "slim-b"]):
        assert p.returncode == 0, p
        assert p.stdout == h + "\n", p
        assert "provisioning" not in p.stderr, p


def test_boot_timeout_shows_console(boot, tmp_path):
    """An init that never reports READY=1: racker gives up after --boot-timeout, prints the
    init's last console lines, kills it (it ignores SIGRTMIN+3) and leaves nothing behind."""
    fake = tmp_path / "fake-init"
    fake.write_text("#!/bin/sh\necho hello-from-fake-init\nexec sleep 100\n")
    fake.chmod(0o755)
    os.chmod(tmp_path, 0o755)
    p = boot.run("true", flags=("--boot-timeout", "2", "-v", f"{fake}:/lib/systemd/systemd:ro"))
    assert p.returncode == 125, p
    assert "boot: not ready after 2 s; last console lines:" in p.stderr, p
    assert "hello-from-fake-init" in p.stderr, p


def test_detached_os_container_exec_stop_rm(boot, racker_exe):
    """`racker run -d IMAGE` (no command) boots the system in the background; racker exec runs
    commands in it with a container's process (docker's capabilities, no NOTIFY_SOCKET); racker
    stop shuts systemd down with SIGRTMIN+3; rm leaves nothing."""
    name = "bootd-" + uuid.uuid4().hex[:8]
    before = racker_cgroups()

    def racker(*args, **kw):
        return subprocess.run([racker_exe, "--root", str(boot.root), *args], capture_output=True,
                              text=True, timeout=TIMEOUT, **kw)

    try:
        r = racker("run", "-d", "--name", name, IMAGE)
        assert r.returncode == 0 and re.fullmatch(r"[0-9a-f]{64}\n", r.stdout), r
        r = racker("exec", "-e", "X=y", name, "sh", "-c",
                   "systemctl is-system-running; grep CapEff /proc/self/status; "
                   "env | grep -c NOTIFY_SOCKET; echo $X; cat /proc/1/comm")
        assert r.returncode == 0, r
        state, caps, notify, x, comm = r.stdout.split("\n")[:5]
        assert (state, notify, x, comm) == ("running", "0", "y", "systemd"), r
        assert int(caps.split()[1], 16) & (1 << 21) == 0, r  # no CAP_SYS_ADMIN
        r = racker("exec", name, "sh", "-c", "exit 7")
        assert r.returncode == 7, r
        r = racker("logs", name)  # a booted container's log is its journal
        assert r.returncode == 0 and "Reached target" in r.stdout, r
        t0 = time.monotonic()
        r = racker("stop", name)
        assert r.returncode == 0 and time.monotonic() - t0 < 8, r  # no 10 s SIGKILL wait
        ps = racker("ps", "-a", "--format", "json")
        assert any(c["name"] == name and c["status"].startswith("Exited")
                   for c in json.loads(ps.stdout)), ps
    finally:
        racker("rm", "-f", name)
    boot.check_clean(name, before)
    r = racker("run", "-d", "--boot", IMAGE, "true")
    assert r.returncode == 125 and "takes no command" in r.stderr, r


def test_boot_timeout_shows_the_journal(boot, tmp_path):
    """A real systemd stuck in a boot unit: after --boot-timeout racker names the problem with
    the journal's last lines (systemd does not write them to the console)."""
    dropin = tmp_path / "slow.conf"
    dropin.write_text("[Service]\nExecStartPre=/bin/sh -c 'echo marker-slow-boot; sleep 100'\n")
    os.chmod(tmp_path, 0o755)
    p = boot.run("true", flags=(
        "--boot-timeout", "10",  # time for journald to start on a slow (emulated) machine
        "-v", f"{dropin}:/etc/systemd/system/systemd-user-sessions.service.d/slow.conf:ro"))
    assert p.returncode == 125, p
    assert "boot: not ready after 10 s" in p.stderr, p
    assert "last journal lines:" in p.stderr and "marker-slow-boot" in p.stderr, p


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_boot_removes_the_container(boot, racker_exe, tmp_path, sig):
    """Ctrl-C (or SIGTERM) while the system boots: racker removes the container and exits
    128+N at once instead of dying and leaving it behind."""
    fake = tmp_path / "fake-init"
    fake.write_text("#!/bin/sh\nexec sleep 100\n")
    fake.chmod(0o755)
    os.chmod(tmp_path, 0o755)
    name = "boot-sig-" + uuid.uuid4().hex[:8]
    before = racker_cgroups()
    p = subprocess.Popen([racker_exe, "--root", str(boot.root), "run", "--boot", "--rm",
                          "--name", name, "--boot-timeout", "60",
                          "-v", f"{fake}:/lib/systemd/systemd:ro", IMAGE, "true"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    t0 = time.monotonic()
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 128 + sig, (out, err)
    assert f"boot: interrupted by signal {int(sig)}" in err, err
    assert time.monotonic() - t0 < 5
    boot.check_clean(name, before)


def test_boot_failing_on_the_inotify_limit_names_it(boot):
    """Every container without a user namespace of its own (--userns host) shares root's
    fs.inotify.max_user_instances; with it used up systemd cannot come up, and racker's error
    is one line that names the sysctl and its value and how to raise it.

    The limit is used up by holding inotify instances in this process only for as long as the
    boot takes (its init dies at once: well under a second), not by lowering the sysctl: the
    instances go back to the host however this test ends, even killed. A container with a user
    namespace of its own (the default) is charged to its range's uid instead: it boots all the
    same meanwhile."""
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("would starve the host's own systemd of inotify instances")
    limit = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    held = []
    try:
        while len(held) < limit + 1:
            fd = libc.inotify_init1(os.O_CLOEXEC)
            if fd < 0:
                break
            held.append(fd)
        t0 = time.monotonic()
        p = boot.run("true", flags=("--userns", "host", "--boot-timeout", "5"))
        window = time.monotonic() - t0
        own = boot.run("systemctl", "is-system-running", flags=("--boot-timeout", "20"))
    finally:
        for fd in held:
            os.close(fd)
    print(f"\nheld {len(held)} inotify instances for {window:.2f} s")
    assert p.returncode == 125, p
    lines = [l for l in p.stderr.splitlines() if "fs.inotify.max_user_instances" in l]
    assert len(lines) == 1, p
    assert re.fullmatch(r"racker: container boot-\w+: .*: fs\.inotify\.max_user_instances = "
                        rf"{limit} is exhausted \(\d+ open under uid 0 now; raise it with sysctl -w "
                        r"fs\.inotify\.max_user_instances=\d+\)", lines[0]), lines[0]
    assert own.returncode == 0 and own.stdout.strip() == "running", own


# Runs as uid argv[1], takes every inotify instance that uid may have, says how many, and
# holds them until its stdin closes.
INOTIFY_HOLDER = """
import ctypes, os, sys
uid = int(sys.argv[1])
os.setresgid(uid, uid, uid)
os.setresuid(uid, uid, uid)
libc = ctypes.CDLL(None, use_errno=True)
n = 0
while n < 100000 and libc.inotify_init1(os.O_CLOEXEC) >= 0:
    n += 1
print(n, flush=True)
sys.stdin.read()
"""


def test_boot_in_its_own_user_namespace_names_its_owners_inotify_limit(boot):
    """A container with a user namespace of its own (the default for OS containers) is charged
    to its range's root: with that uid's inotify instances used up - by helpers running as the
    uids of the next free ranges, nobody else's budget touched - the error names the limit and
    that uid."""
    p = boot.run("cat", "/proc/self/uid_map")
    fields = p.stdout.split()
    if p.returncode != 0 or len(fields) != 3 or fields[1] == "0":
        pytest.skip(f"no user namespace of its own: {p.stdout!r} {p.stderr[-300:]!r}")
    size = int(fields[2])
    # the range just released is the lowest free one; others' containers may take it meanwhile
    uids = [int(fields[1]) + i * size for i in range(4)]
    holders = []
    try:
        for uid in uids:
            h = subprocess.Popen(["/usr/bin/python3", "-c", INOTIFY_HOLDER, str(uid)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            holders.append(h)
            assert int(h.stdout.readline()) > 0
        p = boot.run("true", flags=("--boot-timeout", "5"))
    finally:
        for h in holders:
            h.kill()
            h.wait()
    if p.returncode == 0:
        pytest.skip(f"the container got a range other than {uids} (concurrent containers)")
    assert p.returncode == 125, p
    limit = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
    lines = [l for l in p.stderr.splitlines() if "fs.inotify.max_user_instances" in l]
    assert len(lines) == 1, p
    m = re.fullmatch(r"racker: container boot-\w+: .*: fs\.inotify\.max_user_instances = "
                     rf"{limit} is exhausted \(\d+ open under uid (\d+) now; raise it with "
                     r"sysctl -w fs\.inotify\.max_user_instances=\d+\)", lines[0])
    assert m and int(m.group(1)) in uids, lines[0]


def test_kill_racker_during_a_booted_run(boot, racker_exe):
    """kill -9 of `racker run --rm` of an OS container while its command runs: racker's monitor
    stops the booted system (its command went with racker) and removes the container."""
    name = "boot-k9-" + uuid.uuid4().hex[:8]
    before = racker_cgroups()
    p = subprocess.Popen([racker_exe, "--root", str(boot.root), "run", "--rm", "--name", name,
                          IMAGE, "sh", "-c", "echo started; sleep 100"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "started\n"
    p.kill()
    p.wait()
    wait_until(lambda: not booted_inits() and not state_entries_for(name)
               and not os.listdir(boot.root / "containers"), timeout=30,
               what="the booted container stopped and removed")
    boot.check_clean(name, before)


def test_create_and_start_an_os_container(boot, racker_exe):
    """racker create of an OS image: start -a boots it, runs the command inside and shuts it
    down (again on a second start); start without -a leaves the system up in the background."""
    name = "bootc-" + uuid.uuid4().hex[:8]
    before = racker_cgroups()

    def racker(*args):
        return subprocess.run([racker_exe, "--root", str(boot.root), *args], capture_output=True,
                              text=True, timeout=TIMEOUT)

    try:
        r = racker("create", "--name", name, IMAGE, "sh", "-c",
                   "cat /proc/1/comm; cat /etc/count 2>/dev/null; echo x >> /etc/count")
        assert r.returncode == 0, r
        r = racker("start", "-a", name)
        assert (r.returncode, r.stdout) == (0, "systemd\n"), r
        r = racker("start", "-a", name)
        assert (r.returncode, r.stdout) == (0, "systemd\nx\n"), r
        assert not booted_inits(), "start -a shuts the system down"
        r = racker("start", name)
        assert r.returncode == 0, r
        r = racker("exec", name, "systemctl", "is-system-running")
        assert (r.returncode, r.stdout) == (0, "running\n"), r
        r = racker("stop", name)
        assert r.returncode == 0, r
    finally:
        racker("rm", "-f", name)
    boot.check_clean(name, before)
