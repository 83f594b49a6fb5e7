"""racker run: images from a real local registry (Debian's docker-registry), run end to end.

One registry per module (127.0.0.1, free port, plain HTTP, marked insecure in a registries.conf)
holds three images built in Python (registry_util), all on the busybox rootfs of
scripts/make-busybox-rootfs.sh as one layer:

  test/busybox:1  Cmd ["sh"], Env PATH
  test/entry:1    Entrypoint ["echo", "entry"], Cmd ["default"], WorkingDir /tmp, User daemon
  test/files:1    busybox plus a layer with /noexec (mode 644) and /evil (#!/proc/self/exe)

The images are pulled once per module into a template store; every test gets its own copy
(--root) and its own registries.conf, except test_pull_through_run, which pulls through
`racker run --pull missing` into an empty store. The teardown checks that nothing leaked: no
mount mentioning the test's directories, no cgroup of a container of the store, no racker
process of the test, no runtime state under /run/racker for the test's containers.

Docker's exit codes: the payload's status, 125 for racker's own errors, 126 when the command
cannot be executed, 127 when it is not found, 128+N when the payload died of signal N.

Needs root and the racker binary ($RACKER_BUILD/racker, else <repo>/build/racker).
"""

import fcntl
import glob
import hashlib
import json
import os
import pty
import struct
import termios
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import (cgroup_mounts, proc_cgroups, processes_mentioning, read_pty,
                      unescape_mountinfo, wait_until)
from racker_ctx import (STATE_ROOT, RackerCtx, bb_rootfs, racker_snapshot,  # noqa: F401
                        state_entries_for)
from registry_util import File, Image, Index, Layer, Registry, sha256

TIMEOUT = 20
# stores live on tmpfs when there is one: thousands of files per run, and ext4 here is slow to
# delete them (see TESTBED.md)
SHM = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# docker's default capability set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
# NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP
DEFAULT_CAPS = sum(1 << b for b in (0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31))
CAP_NET_ADMIN = 12


# --- images ------------------------------------------------------------------------------------


def with_config(img, **fields):
    """img with its config's "config" object extended by fields (Entrypoint, User, ...)."""
    cfg = json.loads(img.config)
    cfg["config"].update(fields)
    img.config = json.dumps(cfg, sort_keys=True).encode()
    img.config_digest = sha256(img.config)
    man = json.loads(img.manifest)
    man["config"]["digest"] = img.config_digest
    man["config"]["size"] = len(img.config)
    img.manifest = json.dumps(man, sort_keys=True).encode()
    img.manifest_digest = sha256(img.manifest)
    return img


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def racker_exe(tmp_path_factory):
    return racker_snapshot(tmp_path_factory, "racker run tests need root (mounts, namespaces, "
                           "cgroups)", registry=True)


class Images:
    """The module's registry, its images' references and a store with all of them pulled."""

    def __init__(self, reg, conf, template):
        self.reg = reg
        self.conf = conf
        self.template = template
        self.bb = f"{reg.host}/test/busybox:1"
        self.entry = f"{reg.host}/test/entry:1"
        self.files = f"{reg.host}/test/files:1"


@pytest.fixture(scope="module")
def images(racker_exe, bb_rootfs, tmp_path_factory):
    work = tmp_path_factory.mktemp("run-registry")
    base = Layer.from_dir(bb_rootfs)
    bb = Image([base], cmd=["sh"], env=[PATH_ENV])
    entry = with_config(Image([base], cmd=["default"], env=[PATH_ENV]),
                        Entrypoint=["echo", "entry"], WorkingDir="/tmp", User="daemon")
    files = Image([base, Layer([File("noexec", b"#!/bin/sh\necho ran\n", mode=0o644),
                                File("evil", b"#!/proc/self/exe\n", mode=0o755)])],
                  cmd=["sh"], env=[PATH_ENV])
    reg = Registry(work / "registry").start()
    try:
        reg.push_image("test/busybox", "1", bb)
        reg.push_image("test/entry", "1", entry)
        reg.push_image("test/files", "1", files)
        conf = work / "registries.conf"
        conf.write_text(f'[[registry]]\nlocation = "{reg.host}"\ninsecure = true\n')
        template_dir = Path(tempfile.mkdtemp(prefix="racker-run-template-", dir=SHM or work))
        template = template_dir / "store"
        imgs = Images(reg, conf, template)
        for ref in (imgs.bb, imgs.entry, imgs.files):
            r = subprocess.run([racker_exe, "--root", str(template), "--registries-conf",
                                str(conf), "pull", "-q", ref], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=60)
            assert r.returncode == 0, f"pre-pull of {ref} failed: {r.stderr.decode()}"
        yield imgs
        shutil.rmtree(template_dir, ignore_errors=True)
    finally:
        reg.stop()


class Ctx(RackerCtx):
    """One test's racker: its own copy of the store (--root) and registries.conf. ctx(ARGS)
    runs `racker ARGS`; ctx.run, ctx.ok and ctx.out run `racker run ARGS`."""

    def __init__(self, binary, tmp, imgs, empty_store=False):
        store_dir = Path(tempfile.mkdtemp(prefix="racker-run-", dir=SHM or tmp))
        super().__init__(binary, tmp, root=store_dir / "store", timeout=TIMEOUT)
        self.store_dir = store_dir
        self.images = imgs  # the module's images (instead of RackerCtx.images())
        if empty_store:
            self.root.mkdir()
        else:
            subprocess.run(["cp", "-a", str(imgs.template), str(self.root)], check=True)
        shutil.copy(imgs.conf, self.conf)

    def run(self, *args, **kw):
        return self("run", *args, **kw)

    def ok(self, *args, **kw):
        r = self.run(*args, **kw)
        assert r.returncode == 0, r
        return r

    def out(self, *args, **kw):
        """stdout of a successful `racker run ARGS`."""
        return self.ok(*args, **kw).stdout

    def container_ids(self):
        d = self.root / "containers"
        return sorted(os.listdir(d)) if d.is_dir() else []


def store_mounts(*paths):
    """mountinfo lines whose mount point, root or options mention one of paths."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            text = unescape_mountinfo(line)
            if any(str(p) in text for p in paths):
                out.append(line.strip())
    return out


def cgroup_dirs_for(cid):
    """Existing cgroup directories of container cid (or of every id starting with cid): at
    racker/<id> on top of each hierarchy, and below our own cgroup."""
    own = proc_cgroups()
    found = set()
    for mp, fstype, ctrls in cgroup_mounts():
        key = "" if fstype == "cgroup2" else ctrls
        for base in {"/", own.get(key, "/")}:
            found.update(glob.glob(os.path.normpath(f"{mp}/{base}/racker/{cid}") + "*"))
    return sorted(found)


@pytest.fixture
def ctx(racker_exe, images, tmp_path):
    c = Ctx(racker_exe, tmp_path, images)
    yield from _checked(c, tmp_path)


@pytest.fixture
def empty_ctx(racker_exe, images, tmp_path):
    c = Ctx(racker_exe, tmp_path, images, empty_store=True)
    yield from _checked(c, tmp_path)


def container_pids(ctx):
    """The pid of each process in the cgroups of the store's containers (a cgroup that is gone
    has none)."""
    for cid in ctx.container_ids():
        for d in cgroup_dirs_for(cid):
            try:
                yield from [int(x) for x in Path(d, "cgroup.procs").read_text().split()]
            except OSError:
                continue


def container_procs(ctx):
    """(pid, /proc/PID/cmdline) of each process in the cgroups of the store's containers."""
    for pid in container_pids(ctx):
        try:
            yield pid, Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            pass


def kill_containers(ctx):
    """SIGKILLs every process in the cgroups of the store's containers: {pid: cmdline}."""
    killed = {}
    for pid, cmdline in container_procs(ctx):
        killed[pid] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return killed


def _checked(c, tmp_path):
    yield c
    problems = []
    if any(p.poll() is None for p in c.procs):
        left = kill_containers(c)
        if left:
            problems.append(f"container processes left: {left}")
        time.sleep(0.2)
    for p in c.procs:
        if p.poll() is None:
            problems.append(f"racker still running: {c.result(p)}")
            p.kill()
            p.wait()
    def procs():
        return processes_mentioning(str(tmp_path)) + processes_mentioning(str(c.store_dir))

    left = procs()
    if left:
        time.sleep(0.2)
        left = procs()
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if left:
        problems.append(f"processes left: {left}")
    mounts = store_mounts(tmp_path, c.store_dir)
    if mounts:
        problems.append(f"mounts left: {mounts}")
        for line in sorted(mounts, key=lambda l: -len(l.split()[4])):
            subprocess.run(["umount", "-l", unescape_mountinfo(line.split()[4])],
                           stderr=subprocess.DEVNULL)
    for cid in c.container_ids():
        cg = cgroup_dirs_for(cid)
        if cg:
            problems.append(f"cgroups left for {cid}: {cg}")
            kill_containers(c)
            for d in sorted(cg, key=len, reverse=True):
                try:
                    time.sleep(0.05)
                    os.rmdir(d)
                except OSError:
                    pass
        st = state_entries_for(cid[:12])
        if st:
            problems.append(f"runtime state left for {cid}: {st}")
            for n in st:
                shutil.rmtree(STATE_ROOT / n, ignore_errors=True)
    if not store_mounts(c.store_dir):
        shutil.rmtree(c.store_dir, ignore_errors=True)
    if problems:
        pytest.fail("leak check after test:\n  " + "\n  ".join(problems), pytrace=False)


def one_line_error(r, *needles):
    """r failed with 125 and one line on stderr that mentions every needle."""
    assert r.returncode == 125, r
    assert r.stdout == "", r
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and r.stderr.endswith("\n"), r
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, r)


def unique(name):
    """A container name no concurrent run of racker on this host uses."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def proc_net_dev_names(text):
    return sorted(line.split(":", 1)[0].strip() for line in text.splitlines()[2:] if ":" in line)


def cap_eff(status_text):
    m = re.search(r"^CapEff:\s*([0-9a-f]+)$", status_text, re.M)
    assert m, status_text
    return int(m.group(1), 16)


# --- 1. exit codes ----------------------------------------------------------------------------


@pytest.mark.parametrize("cmd,code", [
    (["true"], 0),
    (["false"], 1),
    (["sh", "-c", "exit 42"], 42),
])
def test_exit_status_of_payload(ctx, cmd, code):
    r = ctx.run(ctx.images.bb, *cmd)
    assert r.returncode == code, r
    assert r.stdout == "" and r.stderr == "", r


@pytest.mark.parametrize("path,why", [("/noexec", "permission denied"), ("/tmp", "")])
def test_not_executable_is_126(ctx, path, why):
    """A file without x permission, a directory: docker says e.g. `exec: "/noexec": permission
    denied` and exits 126."""
    r = ctx.run(ctx.images.files, path)
    assert r.returncode == 126, r
    assert r.stdout == "", r
    assert path in r.stderr and why in r.stderr.lower(), r


def test_not_found_is_127(ctx):
    r = ctx.run(ctx.images.bb, "no-such-command", "arg")
    assert r.returncode == 127, r
    assert r.stdout == "", r
    assert "no-such-command" in r.stderr, r
    r = ctx.run(ctx.images.bb, "/no/such/file")
    assert r.returncode == 127, r
    assert "/no/such/file" in r.stderr, r


def test_pid1_cannot_sigkill_itself(ctx):
    """sh is the container's pid 1 (no init by default, as in docker). The kernel drops a
    signal without a handler that a pid namespace's init gets from inside its namespace, even
    SIGKILL from itself: `kill -9 $$` returns and sh exits 0 (so does `docker run busybox sh -c
    'kill -9 $$'`). A payload really killed by SIGKILL: the tests below."""
    r = ctx.run(ctx.images.bb, "sh", "-c", "kill -9 $$; echo survived")
    assert (r.returncode, r.stdout) == (0, "survived\n"), r
    # below pid 1 the signal works, and the shell reports 128+9
    r = ctx.run(ctx.images.bb, "sh", "-c", "sh -c 'kill -9 $$'; echo $?")
    assert (r.returncode, r.stdout) == (0, "137\n"), r


def test_oom_killed_is_137(ctx):
    # the kernel's SIGKILL reaches pid 1: 128 + 9
    r = ctx.run("--memory", "32m", ctx.images.bb, "sh", "-c",
                "a=0123456789; while :; do a=$a$a; done")
    assert r.returncode == 137, r


def test_payload_killed_from_outside_is_137(ctx):
    p = ctx.popen("run", "--name", unique("kill-me"), ctx.images.bb, "sleep", "30")
    pid1 = wait_until(lambda: _container_pid1(ctx), timeout=5, what="the container to start")
    os.kill(pid1, signal.SIGKILL)
    r = ctx.wait(p, timeout=10)
    assert r.returncode == 137, r


def _container_pid1(ctx):
    """Host pid of the (only) running container's pid 1, from its cgroup."""
    return next((pid for pid, cmdline in container_procs(ctx) if cmdline.startswith(b"sleep\0")),
                None)


# --- 2. stdin ----------------------------------------------------------------------------------


def test_stdin_with_i(ctx):
    r = ctx.run("-i", ctx.images.bb, "cat", input=b"hi\n")
    assert (r.returncode, r.stdout) == (0, "hi\n"), r


def test_stdin_binary_1mib(ctx):
    data = os.urandom(1 << 20)
    r = ctx.run("-i", ctx.images.bb, "cat", input=data, timeout=30)
    assert r.returncode == 0, r
    assert len(r.stdout_bytes) == len(data) and r.stdout_bytes == data, (
        f"{len(r.stdout_bytes)} bytes out of {len(data)}, equal={r.stdout_bytes == data}")


def test_stdin_empty_without_i(ctx):
    r = ctx.run(ctx.images.bb, "sh", "-c", "cat; echo end", input=b"must not arrive\n")
    assert (r.returncode, r.stdout) == (0, "end\n"), r


# --- 3. command line ---------------------------------------------------------------------------


def test_args_after_image_untouched(ctx):
    out = ctx.out(ctx.images.bb, "echo", "a  b", "$HOME", "--", "--x")
    assert out == "a  b $HOME -- --x\n"
    # racker's own flags after the image belong to the payload
    out = ctx.out(ctx.images.bb, "sh", "-c", 'for a in "$@"; do echo "[$a]"; done', "sh",
                  "--rm", "-i", "--name", "x", "-e", "A=1", "")
    assert out == "[--rm]\n[-i]\n[--name]\n[x]\n[-e]\n[A=1]\n[]\n"


def test_image_cmd_default(ctx):
    # Cmd ["sh"] with stdin /dev/null: sh reads nothing and exits 0
    r = ctx.run(ctx.images.bb)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), r
    r = ctx.run("-i", ctx.images.bb, input=b"echo from-stdin; exit 3\n")
    assert (r.returncode, r.stdout) == (3, "from-stdin\n"), r


def test_env_default_and_flags(ctx, tmp_path):
    r = ctx.ok(ctx.images.bb, "env")
    env = sorted(r.stdout.splitlines())
    host = [e for e in env if e.startswith("HOSTNAME=")]
    assert len(host) == 1 and re.fullmatch(r"HOSTNAME=[0-9a-f]{12}", host[0]), env
    assert [e for e in env if e != host[0] and not e.startswith("HOME=")] == [PATH_ENV], env

    envfile = tmp_path / "env.list"
    envfile.write_text("# a comment\n\nA=from-file\nB=two  words\nFROMHOST\nC=c\n")
    out = ctx.out("--env-file", envfile, "-e", "C=override", "-e", "FOO=bar", "-e", "EMPTY=",
                  "-e", "FROMHOST2", "-e", "NOTONHOST", "-e", "PATH=/bin:/usr/bin",
                  ctx.images.bb, "sh", "-c",
                  'echo "$A|$B|$C|$FOO|${EMPTY-unset}|$FROMHOST|$FROMHOST2|'
                  '${NOTONHOST-unset}|$PATH"',
                  env={"FROMHOST": "h1", "FROMHOST2": "h 2"})
    assert out == "from-file|two  words|override|bar||h1|h 2|unset|/bin:/usr/bin\n"


def test_home_from_passwd(ctx):
    """docker sets HOME from the user's passwd entry (/ without one) unless Env has it."""
    assert ctx.out(ctx.images.bb, "sh", "-c", "echo $HOME") == "/root\n"
    assert ctx.out("-u", "daemon", ctx.images.bb, "sh", "-c", "echo $HOME") == "/usr/sbin\n"
    assert ctx.out("-u", "1000", ctx.images.bb, "sh", "-c", "echo $HOME") == "/\n"
    assert ctx.out("-e", "HOME=/h", ctx.images.bb, "sh", "-c", "echo $HOME") == "/h\n"
    assert ctx.out("--entrypoint", "sh", ctx.images.entry, "-c", "echo $HOME") == "/usr/sbin\n"


def test_workdir(ctx):
    assert ctx.out(ctx.images.bb, "pwd") == "/\n"
    assert ctx.out("-w", "/etc", ctx.images.bb, "pwd") == "/etc\n"
    # docker creates a missing working directory
    assert ctx.out("--workdir", "/new/dir", ctx.images.bb, "pwd") == "/new/dir\n"


def test_user(ctx):
    assert ctx.out(ctx.images.bb, "sh", "-c", "id -u; id -g") == "0\n0\n"
    assert ctx.out("-u", "1000:1000", ctx.images.bb, "sh", "-c", "id -u; id -g") == "1000\n1000\n"
    assert ctx.out("-u", "daemon", ctx.images.bb, "sh", "-c", "id -u; id -g") == "1\n1\n"
    assert ctx.out("--user", "1000", ctx.images.bb, "sh", "-c", "id -u; id -g") == "1000\n0\n"
    assert ctx.out("-u", "daemon:tty", ctx.images.bb, "sh", "-c", "id -u; id -g") == "1\n5\n"
    r = ctx.run("-u", "nosuchuser", ctx.images.bb, "true")
    one_line_error(r, "nosuchuser")


def test_image_entrypoint_cmd_user_workdir(ctx):
    e = ctx.images.entry
    assert ctx.out(e) == "entry default\n"
    assert ctx.out(e, "x", "y z") == "entry x y z\n"
    # --entrypoint replaces the image's Entrypoint and drops its Cmd
    assert ctx.out("--entrypoint", "sh", e, "-c", "id -u; id -g; pwd") == "1\n1\n/tmp\n"
    assert ctx.out("--entrypoint", "pwd", e) == "/tmp\n"
    assert ctx.out("--entrypoint", "", e, "echo", "no", "entry") == "no entry\n"
    assert ctx.out("-u", "0", "-w", "/", "--entrypoint", "sh", e, "-c", "id -u; pwd") == "0\n/\n"


def test_entrypoint_empty_without_command_is_125(ctx):
    # docker: "No command specified"
    r = ctx.run("--entrypoint", "", ctx.images.entry)
    one_line_error(r, "command")


# --- 4. mounts ---------------------------------------------------------------------------------


def test_volume_rw_and_ro(ctx, tmp_path):
    host = tmp_path / "vol"
    host.mkdir()
    (host / "in").write_text("from host\n")
    out = ctx.out("-v", f"{host}:/data/vol", ctx.images.bb, "sh", "-c",
                  "cat /data/vol/in; echo from container > /data/vol/out")
    assert out == "from host\n"
    assert (host / "out").read_text() == "from container\n"

    r = ctx.run("-v", f"{host}:/mnt:ro", ctx.images.bb, "sh", "-c",
                "cat /mnt/in; touch /mnt/new")
    assert r.returncode == 1, r
    assert r.stdout == "from host\n", r
    assert "Read-only file system" in r.stderr, r
    assert not (host / "new").exists()


def test_tmpfs(ctx):
    out = ctx.out("--tmpfs", "/scratch", "--tmpfs", "/sized:size=1m", ctx.images.bb, "sh", "-c",
                  "echo x > /scratch/f && cat /scratch/f; awk '$2 == \"/scratch\" || "
                  "$2 == \"/sized\" {print $2, $3}' /proc/mounts; "
                  "grep ' /sized ' /proc/mounts | grep -o 'size=[0-9a-z]*'")
    assert out == "x\n/scratch tmpfs\n/sized tmpfs\nsize=1024k\n"


def test_read_only_root(ctx):
    r = ctx.run("--read-only", ctx.images.bb, "touch", "/x")
    assert r.returncode == 1, r
    assert "Read-only file system" in r.stderr, r
    out = ctx.out("--read-only", "--tmpfs", "/tmp", ctx.images.bb, "sh", "-c",
                  "touch /tmp/x && echo ok; touch /etc/x 2>/dev/null || echo ro")
    assert out == "ok\nro\n"


# --- 5. hostname, network --------------------------------------------------------------------


def test_hostname(ctx):
    out = ctx.out("--hostname", "box", ctx.images.bb, "sh", "-c",
                  "hostname; cat /etc/hostname; echo $HOSTNAME; grep -c box /etc/hosts")
    assert out == "box\nbox\nbox\n1\n"


def test_default_hostname_is_short_id(ctx):
    out = ctx.out(ctx.images.bb, "sh", "-c", "hostname; cat /etc/hostname; echo $HOSTNAME")
    lines = out.splitlines()
    assert len(lines) == 3 and len(set(lines)) == 1, out
    assert re.fullmatch(r"[0-9a-f]{12}", lines[0]), out
    ids = ctx.container_ids()  # without --rm the container dir may remain
    if ids:
        assert len(ids) == 1 and ids[0].startswith(lines[0]), (ids, out)


def test_network_none_and_default(ctx):
    out = ctx.out("--network", "none", ctx.images.bb, "cat", "/proc/net/dev")
    assert proc_net_dev_names(out) == ["lo"], out
    # the default is private: loopback plus, where the host allows, eth0 (test_network.py)
    out = ctx.out(ctx.images.bb, "cat", "/proc/net/dev")
    assert proc_net_dev_names(out) in (["eth0", "lo"], ["lo"]), out


def test_network_host(ctx):
    out = ctx.out("--network", "host", ctx.images.bb, "cat", "/proc/net/dev")
    host = proc_net_dev_names(Path("/proc/self/net/dev").read_text())
    assert len(host) > 1, host

    def stable(names):
        # host ends of other containers' veths (rk...) come and go: the kernel deletes them
        # asynchronously once a private network namespace is released
        return [n for n in names if not n.startswith("rk")]

    assert stable(proc_net_dev_names(out)) == stable(host)


# --- 6. resources ------------------------------------------------------------------------------


CG_READ = (
    "for f in memory/memory.limit_in_bytes memory.max pids/pids.max pids.max "
    "cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us cpu,cpuacct/cpu.cfs_quota_us "
    "cpu,cpuacct/cpu.cfs_period_us cpu.max; do "
    "[ -r /sys/fs/cgroup/$f ] && echo \"$f=$(cat /sys/fs/cgroup/$f)\"; done; true")


def test_resource_limits(ctx):
    out = ctx.out("--memory", "64m", "--pids-limit", "20", "--cpus", "0.5", ctx.images.bb,
                  "sh", "-c", CG_READ)
    vals = dict(line.split("=", 1) for line in out.splitlines())
    if not vals:
        # no cgroup files inside: read the host's directories while the container runs
        p = ctx.popen("run", "--memory", "64m", "--pids-limit", "20", "--cpus", "0.5",
                      ctx.images.bb, "sleep", "2")
        try:
            cid = wait_until(lambda: ctx.container_ids(), timeout=5)[0]
            dirs = wait_until(lambda: cgroup_dirs_for(cid), timeout=5)
            for d in dirs:
                for name in ("memory.limit_in_bytes", "memory.max", "pids.max",
                             "cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.max"):
                    f = Path(d, name)
                    if f.exists():
                        vals[name] = f.read_text().strip()
        finally:
            ctx.wait(p)
    if not vals:
        pytest.skip("no cgroup files of the container, neither inside nor on the host")
    vals = {k.rsplit("/", 1)[-1]: v for k, v in vals.items()}
    checked = []
    if "memory.limit_in_bytes" in vals:
        assert vals["memory.limit_in_bytes"] == str(64 << 20), vals
        checked.append("memory")
    elif "memory.max" in vals:
        assert vals["memory.max"] == str(64 << 20), vals
        checked.append("memory")
    if "pids.max" in vals:
        assert vals["pids.max"] == "20", vals
        checked.append("pids")
    if "cpu.cfs_quota_us" in vals:
        assert (vals["cpu.cfs_quota_us"], vals["cpu.cfs_period_us"]) == ("50000", "100000"), vals
        checked.append("cpu")
    elif "cpu.max" in vals:
        assert vals["cpu.max"] == "50000 100000", vals
        checked.append("cpu")
    missing = {"memory", "pids", "cpu"} - set(checked)
    if missing:
        pytest.skip(f"checked {checked}; no cgroup files for {sorted(missing)}: {vals}")


# --- 7. capabilities, privileged -------------------------------------------------------------


def test_capabilities(ctx):
    st = ctx.out(ctx.images.bb, "cat", "/proc/self/status")
    assert cap_eff(st) == DEFAULT_CAPS, hex(cap_eff(st))
    st = ctx.out("--cap-drop", "ALL", ctx.images.bb, "cat", "/proc/self/status")
    assert cap_eff(st) == 0, st
    assert re.search(r"^CapBnd:\s*0+$", st, re.M), st
    st = ctx.out("--cap-add", "NET_ADMIN", ctx.images.bb, "cat", "/proc/self/status")
    assert cap_eff(st) == DEFAULT_CAPS | (1 << CAP_NET_ADMIN), hex(cap_eff(st))
    # and it works: NET_ADMIN is needed to change lo's MTU in the container's namespace
    r = ctx.run(ctx.images.bb, "ip", "link", "set", "lo", "mtu", "1400")
    assert r.returncode != 0, r
    r = ctx.run("--cap-add", "NET_ADMIN", ctx.images.bb, "sh", "-c",
                "ip link set lo mtu 1400 && cat /sys/class/net/lo/mtu")
    assert (r.returncode, r.stdout) == (0, "1400\n"), r
    r = ctx.run("--cap-add", "NO_SUCH_CAP", ctx.images.bb, "true")
    one_line_error(r, "NO_SUCH_CAP")


def test_privileged(ctx):
    mknod_kmsg = ("mknod /tmp/kmsg c 1 11 && { ( : < /tmp/kmsg ) 2>/dev/null && echo opened "
                  "|| echo denied; }")
    script = ("grep CapEff /proc/self/status; " + mknod_kmsg +
              "; grep -c ' /proc/timer_list ' /proc/mounts; "
              "awk '$2 == \"/sys\" {print $4}' /proc/mounts | cut -d, -f1")
    # without --privileged: device cgroup, masked /proc/timer_list, read-only /sys
    out = ctx.out(ctx.images.bb, "sh", "-c", script)
    assert out.splitlines()[1:] == ["denied", "1", "ro"], out
    # --privileged: every capability racker itself has (root here lacks CAP_SYS_RESOURCE, see
    # TESTBED.md), every device, nothing masked, /sys writable
    own = cap_eff(Path("/proc/self/status").read_text())
    out = ctx.out("--privileged", ctx.images.bb, "sh", "-c", script)
    lines = out.splitlines()
    assert cap_eff(lines[0]) == own, (hex(cap_eff(lines[0])), hex(own))
    assert lines[1:] == ["opened", "0", "rw"], out


# --- 8. names, concurrency -------------------------------------------------------------------


def test_name_in_use(ctx):
    name = unique("same-name")
    first = ctx.popen("run", "-i", "--name", name, ctx.images.bb, "cat",
                      stdin=subprocess.PIPE)
    try:
        wait_until(lambda: state_entries_for(name) or first.poll() is not None,
                   timeout=5, what="the first container")
        assert first.poll() is None, ctx.result(first)
        r = ctx.run("--name", name, ctx.images.bb, "true")
        one_line_error(r, name, "already in use")
        assert first.poll() is None, "the second run disturbed the first"
    finally:
        first.stdin.write(b"first\n")
        first.stdin.close()
    r = ctx.wait(first)
    assert (r.returncode, r.stdout) == (0, "first\n"), r
    # as in docker, the exited container keeps its name until it is removed
    one_line_error(ctx.run("--name", name, ctx.images.bb, "true"), name, "already in use")
    assert ctx("rm", name).returncode == 0
    assert ctx.out("--rm", "--name", name, ctx.images.bb, "echo", "again") == "again\n"


def test_two_runs_at_once(ctx):
    ps = [ctx.popen("run", "-i", ctx.images.bb, "sh", "-c", "read x; hostname; echo $x",
                    stdin=subprocess.PIPE) for _ in range(2)]
    # both are running at the same time: each waits for its line
    wait_until(lambda: len(ctx.container_ids()) == 2 or any(p.poll() is not None for p in ps),
               timeout=5, what="two containers")
    time.sleep(0.1)
    assert all(p.poll() is None for p in ps), [ctx.result(p) for p in ps if p.poll() is not None]
    for i, p in enumerate(ps):
        p.stdin.write(f"run{i}\n".encode())
        p.stdin.close()
    rs = [ctx.wait(p) for p in ps]
    for i, r in enumerate(rs):
        assert r.returncode == 0, r
        assert r.stdout.splitlines()[1:] == [f"run{i}"], r
    assert rs[0].stdout.splitlines()[0] != rs[1].stdout.splitlines()[0], rs


# --- 9. terminal -------------------------------------------------------------------------------


def run_in_pty(ctx, *args, timeout=10, signal_at=None):
    """racker ARGS on a new pty; (exit code, output). signal_at=(marker, sig): once the output
    holds marker, sig goes to racker itself (as from another shell, not typed)."""
    pid, fd = pty.fork()
    if pid == 0:
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
            os.execve(ctx.binary, ctx.argv(args), ctx.env)
        finally:
            os._exit(255)
    def send_signal(out):
        nonlocal signal_at
        if signal_at and signal_at[0] in out:
            os.kill(pid, signal_at[1])
            signal_at = None

    try:
        out = read_pty(fd, timeout, send_signal)
    finally:
        os.close(fd)
    for _ in range(int(timeout * 100)):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), out
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"racker {args} did not finish within {timeout}s: {out!r}")


def test_tty(ctx):
    # -i -t: racker puts our terminal into raw mode (as docker does), so \n reaches us as the
    # container's pty makes it, \r\n; the pty has our window size; TERM is set
    rc, out = run_in_pty(ctx, "run", "-i", "-t", "--rm", ctx.images.bb, "sh", "-c",
                         "tty; echo $TERM; stty size; exit 3")
    assert (rc, out) == (3, b"/dev/pts/0\r\nxterm\r\n30 100\r\n")
    # -t alone: our terminal is left as it is (its own \n -> \r\n adds a \r)
    rc, out = run_in_pty(ctx, "run", "-t", "--rm", ctx.images.bb, "tty")
    assert (rc, out.replace(b"\r", b"")) == (0, b"/dev/pts/0\n")
    # without a terminal: none in the container
    r = ctx.run(ctx.images.bb, "tty")
    assert (r.returncode, r.stdout) == (1, "not a tty\n"), r
    # -t alone still gives the container our window size (docker takes it from stdout)
    rc, out = run_in_pty(ctx, "run", "-t", "--rm", ctx.images.bb, "stty", "size")
    assert (rc, out.replace(b"\r", b"")) == (0, b"30 100\n")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_tty_signal_to_racker_reaches_the_payload(ctx, sig):
    """A signal sent to `racker run -it` itself (kill, not typed) goes on to the payload as it
    does without -t: its trap runs, racker exits with the payload's status and --rm happens."""
    name = unique("tty-sig")
    script = (f"trap 'echo caught-{int(sig)}; exit 3' {sig.name[3:]}; echo armed; "
              "while :; do sleep 0.1; done")
    rc, out = run_in_pty(ctx, "run", "-i", "-t", "--rm", "--name", name, ctx.images.bb,
                         "sh", "-c", script, signal_at=(b"armed", sig))
    assert (rc, out) == (3, f"armed\r\ncaught-{int(sig)}\r\n".encode()), out
    assert ctx.container_ids() == []
    assert state_entries_for(name) == []


# --- 10. cleanup -------------------------------------------------------------------------------


def test_rm_leaves_nothing(ctx):
    out = ctx.out("--rm", ctx.images.bb, "hostname")
    short_id = out.strip()
    assert re.fullmatch(r"[0-9a-f]{12}", short_id), out
    assert ctx.container_ids() == []
    assert store_mounts(ctx.root) == []
    assert cgroup_dirs_for(short_id) == []
    assert state_entries_for(short_id) == []

    name = unique("rm-named")
    ctx.out("--rm", "--name", name, ctx.images.bb, "true")
    assert ctx.container_ids() == []
    assert state_entries_for(name) == []
    assert store_mounts(ctx.root) == []


def test_without_rm_overlay_unmounted(ctx):
    out = ctx.out(ctx.images.bb, "sh", "-c", "echo data > /created; hostname")
    short_id = out.strip()
    assert store_mounts(ctx.root) == []
    assert cgroup_dirs_for(short_id) == []
    assert state_entries_for(short_id) == []
    ids = ctx.container_ids()
    assert all(i.startswith(short_id) for i in ids), ids


def test_failed_runs_leave_nothing(ctx):
    for args in (["no-such-command"], ["/noexec"]):
        r = ctx.run("--rm", ctx.images.files, *args)
        assert r.returncode in (126, 127), r
        assert ctx.container_ids() == [], r
        assert store_mounts(ctx.root) == [], r


# --- 11. bad input -----------------------------------------------------------------------------


def test_bad_flags_and_refs(ctx):
    missing = f"{ctx.images.reg.host}/test/absent:1"
    cases = [
        (["--no-such-flag", ctx.images.bb, "true"], ["no-such-flag"]),
        (["--memory", "lots", ctx.images.bb, "true"], ["lots"]),
        (["--memory", "-5m", ctx.images.bb, "true"], ["-5m"]),
        (["--cpus", "half", ctx.images.bb, "true"], ["half"]),
        (["--cpus", "0", ctx.images.bb, "true"], ["cpus"]),
        (["--pids-limit", "x", ctx.images.bb, "true"], ["x"]),
        (["--network", "bridge0", ctx.images.bb, "true"], ["bridge0"]),
        (["-v", "relative:/x", ctx.images.bb, "true"], ["relative:/x"]),
        (["--tmpfs", "rel", ctx.images.bb, "true"], ["rel"]),
        (["-w", "relative", ctx.images.bb, "true"], ["relative"]),
        (["--pull", "sometimes", ctx.images.bb, "true"], ["sometimes"]),
        (["Invalid//Ref:", "true"], ["Invalid//Ref:"]),
        (["UPPER/case"], ["UPPER/case"]),
        ([], ["image"]),
        (["--pull", "never", missing, "true"], [missing]),
        (["--pull", "never", "localhost/nothing-here", "true"], ["localhost/nothing-here"]),
    ]
    failures = []
    for args, needles in cases:
        r = ctx.run(*args)
        try:
            one_line_error(r, *needles)
        except AssertionError:
            failures.append(repr(r).split(" run ", 1)[-1])
    assert failures == [], "not a one-line error with exit 125:\n  " + "\n  ".join(failures)
    assert ctx.container_ids() == []


def test_missing_image_in_registry_is_125(ctx):
    r = ctx.run(f"{ctx.images.reg.host}/test/absent:1", "true")
    one_line_error(r, "test/absent")


def test_pull_through_run(empty_ctx):
    ctx = empty_ctx
    since = ctx.images.reg.log_offset()
    r = ctx.run("--pull", "missing", ctx.images.bb, "echo", "pulled")
    assert r.returncode == 0, r
    assert r.stdout == "pulled\n", r  # pull progress does not mix with the payload's output
    layers = [d for d in (ctx.root / "layers").iterdir() if d.is_dir()]
    assert len(layers) == 1, layers
    # the second run uses the store
    mid = ctx.images.reg.log_offset()
    assert ctx.out("--pull", "never", ctx.images.bb, "echo", "again") == "again\n"
    assert ctx.out(ctx.images.bb, "echo", "again") == "again\n"
    time.sleep(0.05)
    assert [x for x in ctx.images.reg.requests(mid) if "/blobs/" in x[1]] == []
    assert ctx.images.reg.requests(since)


# --- 12. breakouts -----------------------------------------------------------------------------


def test_proc_self_exe_payload_cannot_touch_racker(ctx):
    """CVE-2019-5736: /evil's interpreter is /proc/self/exe, which is whatever executes /evil
    at that moment: for the container's first process, racker's exec stub. racker's binary
    must not be what runs then (nor be changed), and the run must end with an error (runc:
    its binary runs with "/evil" as argument and fails)."""
    before = file_sha256(ctx.binary)
    st = os.stat(ctx.binary)
    p = ctx.popen("run", ctx.images.files, "/evil")
    seen = {}  # pid -> exe link of the container's processes while it runs
    deadline = time.monotonic() + 5
    while p.poll() is None and time.monotonic() < deadline:
        for pid in container_pids(ctx):
            try:
                # command line first: read after it, the binary is never older than the command
                # line (a fork that executes in between would otherwise pair racker's binary
                # with the payload's command line)
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                exe = os.stat(f"/proc/{pid}/exe")
                seen[pid] = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                continue
            # The container's init is a fork of racker until it executes the payload
            # (non-dumpable meanwhile): same binary, same command line. Anything else running
            # racker's binary would be the escape.
            if cmdline.split(b"\0")[:-1] == [os.fsencode(str(a)) for a in p.args]:
                continue
            assert (exe.st_dev, exe.st_ino) != (st.st_dev, st.st_ino), (
                f"the container's process {pid} runs racker's own binary")
        time.sleep(0.02)
    if p.poll() is None:
        pids = kill_containers(ctx)  # racker then cleans up after its container
        ctx.wait(p, timeout=5)
        r = (f"did not finish within 5 s; its container's processes: {pids}, their exe: "
             f"{sorted(set(seen.values()))}")
    else:
        r = ctx.result(p)
    after = os.stat(ctx.binary)
    assert file_sha256(ctx.binary) == before, r
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert not isinstance(r, str), f"racker run {ctx.images.files} /evil {r}"
    assert r.returncode != 0, r


def test_pid1_is_the_payload(ctx):
    assert ctx.out(ctx.images.bb, "sh", "-c", "readlink /proc/1/exe") == "/bin/busybox\n"
    # no fd of racker's reaches the payload
    out = ctx.out(ctx.images.bb, "sh", "-c", "ls /proc/self/fd")
    assert sorted(out.split()) == ["0", "1", "2", "3"], out  # 3: ls's own directory fd


def test_init(ctx):
    """--init: tini (mounted read-only from the host) is PID 1, the payload below it; exit
    status, signals and zombie reaping go through it."""
    out = ctx.out("--init", ctx.images.bb, "sh", "-c",
                  "cat /proc/1/comm; echo $$; cat /proc/1/cmdline | tr '\\0' ' '; echo")
    comm, pid, cmdline = out.split("\n")[:3]
    assert comm == "racker-init", out
    assert pid != "1", out
    assert cmdline == "/sbin/racker-init -- sh -c " + cmdline.split(" -c ", 1)[1], out
    r = ctx.run("--init", ctx.images.bb, "sh", "-c", "exit 42")
    assert r.returncode == 42, r
    # SIGKILL of the payload by itself works below an init (cf. test_pid1_cannot_sigkill_itself)
    r = ctx.run("--init", ctx.images.bb, "sh", "-c", "kill -9 $$; echo survived")
    assert (r.returncode, r.stdout) == (137, ""), r
    # an orphan's zombie is reaped by the init: none left after its parent is gone
    out = ctx.out("--init", ctx.images.bb, "sh", "-c",
                  "sh -c 'sleep 0.2 & exit 0'; sleep 1; "
                  "grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l")
    assert out.strip() == "0", out
    r = ctx.run("--init", ctx.images.bb, "sh", "-c", "echo x > /sbin/racker-init")
    assert r.returncode != 0 and "Read-only" in r.stderr, r


def test_store_on_overlayfs_copies_the_layers(ctx):
    """Where the kernel refuses an overlay mount (here: the store itself lies on overlayfs, which
    cannot be an upper dir), racker copies the layers into the container with a warning; the
    container works, keeps its changes across start, and rm leaves nothing."""
    base = ctx.store_dir / "ovl"
    for d in ("lower", "upper", "work", "merged"):
        (base / d).mkdir(parents=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work",
                    str(base / "merged")], check=True)
    try:
        subprocess.run(["cp", "-a", str(ctx.root), str(base / "merged" / "store")], check=True)
        ctx.root = base / "merged" / "store"
        r = ctx.run("--rm", ctx.images.bb, "sh", "-c", "echo changed > /etc/x; cat /etc/x")
        assert (r.returncode, r.stdout) == (0, "changed\n"), r
        assert "copying the layers into the container instead" in r.stderr, r
        name = unique("flat")
        script = "cat /etc/y 2>/dev/null || echo missing; echo kept > /etc/y"
        r = ctx.run("--name", name, ctx.images.bb, "sh", "-c", script)
        assert (r.returncode, r.stdout) == (0, "missing\n"), r
        r = ctx("start", "-a", name)
        assert (r.returncode, r.stdout) == (0, "kept\n"), r
        assert ctx("rm", name).returncode == 0
        assert not list((ctx.root / "containers").iterdir())
    finally:
        ctx.root = ctx.store_dir / "store"
        subprocess.run(["umount", "-l", str(base / "merged")])


FAKE_PM = """#!/bin/sh
# a stand-in package manager: logs how it was called; "installing" systemd leaves an init
mkdir -p /var/log
echo "$(basename "$0") $*" >> /var/log/fake-pm.log
case " $* " in *" systemd "*)
  mkdir -p /usr/lib/systemd
  printf '#!/bin/sh\\nexec sleep 100\\n' > /usr/lib/systemd/systemd
  chmod 755 /usr/lib/systemd/systemd;;
esac
"""


@pytest.mark.parametrize("pm,expected", [
    ("dnf", ["dnf install -y systemd", "dnf clean all"]),
    ("microdnf", ["microdnf install -y systemd", "microdnf clean all"]),
    ("zypper", ["zypper --non-interactive install --no-recommends systemd",
                "zypper clean --all"]),
    ("pacman", ["pacman -Sy --noconfirm --needed systemd", "pacman -Scc --noconfirm"]),
])
def test_provisioning_uses_the_images_package_manager(ctx, bb_rootfs, pm, expected):
    """An OS image (os-release + a package manager) without systemd: racker run boots it, so
    it provisions systemd first with that package manager in a throwaway container and stores
    a derived image. The package manager here is a fake that logs its calls."""
    base = Layer.from_dir(bb_rootfs)
    img = Image([base, Layer([File("etc/os-release", b"ID=fake\n"),
                              File(f"usr/bin/{pm}", FAKE_PM.encode(), mode=0o755)])],
                cmd=["sh"], env=[PATH_ENV])
    ctx.images.reg.push_image(f"test/fake-{pm}", "1", img)
    ref = f"{ctx.images.reg.host}/test/fake-{pm}:1"
    # the fake init never reports READY=1: the boot times out after provisioning
    r = ctx.run("--rm", "--boot-timeout", "1", ref, "true")
    assert r.returncode == 125 and "boot: not ready after 1 s" in r.stderr, r
    assert f"provisioning systemd into {ref} with {pm}" in r.stderr, r
    images = ctx("images")
    assert images.returncode == 0, images
    derived = [line.split()[0] for line in images.stdout.splitlines()
               if line.startswith("racker.local/provisioned/")]
    assert len(derived) == 1, derived
    log = ctx.out("--rm", "--no-boot", derived[0], "cat", "/var/log/fake-pm.log")
    assert log.splitlines() == expected, log


def test_platform(ctx, bb_rootfs):
    """--platform picks the image of a multi-platform index to pull and run (the busybox binary
    is this host's either way: only the labels differ); a platform the index lacks is 125."""
    base = Layer.from_dir(bb_rootfs)
    imgs = {arch: Image([base, Layer([File("arch", f"{arch}\n".encode())])], architecture=arch,
                        cmd=["sh"], env=[PATH_ENV])
            for arch in ("amd64", "arm64")}
    ctx.images.reg.push_image("test/multi", "1", Index(list(imgs.values())))
    ref = f"{ctx.images.reg.host}/test/multi:1"
    assert ctx.out("--rm", "--platform", "linux/arm64", ref, "cat", "/arch") == "arm64\n"
    assert ctx.out("--rm", "--pull", "always", "--platform", "linux/amd64", ref,
                   "cat", "/arch") == "amd64\n"
    r = ctx.run("--rm", "--pull", "always", "--platform", "linux/s390x", ref, "true")
    assert r.returncode == 125 and "linux/s390x" in r.stderr, r


def test_odd_image_configs(ctx, bb_rootfs):
    """An Env entry that is no KEY=VALUE ("" pulled fine and then could not run) is left out,
    as docker does; a config field of the wrong type is a one-line error naming the image,
    never nlohmann's raw exception text."""
    base = Layer.from_dir(bb_rootfs)
    reg = ctx.images.reg
    odd_env = Image([base], cmd=["sh", "-c", "echo $A"], env=[PATH_ENV, "", "=x", "A=b"])
    reg.push_image("test/odd-env", "1", odd_env)
    assert ctx.out("--rm", f"{reg.host}/test/odd-env:1") == "b\n"
    bad_user = with_config(Image([base], cmd=["true"], env=[PATH_ENV]), User=["root"])
    reg.push_image("test/bad-user", "1", bad_user)
    ref = f"{reg.host}/test/bad-user:1"
    r = ctx.run("--rm", ref)
    assert r.returncode == 125, r
    assert len(r.stderr.splitlines()) == 1, r
    assert r.stderr.startswith(f"racker: image {ref}: malformed config: type must be "), r
    assert "json.exception" not in r.stderr, r
