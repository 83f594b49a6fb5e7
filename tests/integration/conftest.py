"""Fixtures for racker-oci's integration tests.

Every test gets its own state root (--root), its own bundles (a copy of one busybox rootfs
made per session) and unique container ids. After the test, anything left is force-deleted
and the teardown asserts that nothing leaked: no container listed, no mount under the test's
directories, no process that belongs to the test, no cgroup named after one of its ids.

The tests run the real binary and need root; without it every test is skipped.
"""

import copy
import itertools
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MARK = "RACKER_TEST_BUNDLE"  # env var put into every payload so leaked processes can be found
DEFAULT_TIMEOUT = 10


# --- helpers usable from the tests ---------------------------------------------------------


def unescape_mountinfo(field):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(*dirs):
    """Mount points in /proc/self/mountinfo at or below one of dirs."""
    roots = [os.path.realpath(str(d)) for d in dirs]
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = unescape_mountinfo(line.split()[4])
            if any(mp == r or mp.startswith(r + "/") for r in roots):
                out.append(mp)
    return out


def cgroup_mounts():
    """(mount point, fstype, controllers as in /proc/self/cgroup) for each cgroup mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, post = line.rstrip("\n").split(" - ", 1)
            pre, post = pre.split(), post.split()
            if post[0] not in ("cgroup", "cgroup2"):
                continue
            ctrls = ""
            if post[0] == "cgroup":
                opts = [o for o in post[2].split(",")
                        if o not in ("rw", "ro", "xattr", "noprefix", "clone_children",
                                     "cpuset_v2_mode") and not o.startswith("release_agent")]
                ctrls = ",".join(sorted(opts))
            out.append((unescape_mountinfo(pre[4]), post[0], ctrls))
    return out


def proc_cgroups(pid="self"):
    """Controllers (sorted, comma-joined; "" for cgroup2) -> path, from /proc/PID/cgroup."""
    out = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            out[",".join(sorted(ctrls.split(","))) if ctrls else ""] = path
    return out


def cgroup_dirs_of(pid):
    """Host directories of pid's cgroups, keyed by controllers ("" = cgroup2)."""
    own = proc_cgroups(pid)
    out = {}
    for mp, fstype, ctrls in cgroup_mounts():
        key = "" if fstype == "cgroup2" else ctrls
        if key in own:
            out[key] = os.path.normpath(mp + "/" + own[key])
    return out


def cgroup_dirs_named(container_id):
    """Existing cgroup directories where racker-oci puts container_id by default (below our
    own cgroup in each hierarchy) or at the top of a hierarchy."""
    own = proc_cgroups()
    found = []
    for mp, fstype, ctrls in cgroup_mounts():
        key = "" if fstype == "cgroup2" else ctrls
        for base in {own.get(key, "/"), "/"}:
            d = os.path.normpath(f"{mp}/{base}/{container_id}")
            if os.path.isdir(d):
                found.append(d)
    return sorted(set(found))


def processes_mentioning(needle):
    """(pid, cmdline) of live processes whose cmdline or environment contains needle."""
    needle_b = needle.encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            continue
        if needle_b in cmd or needle_b in env:
            out.append((int(entry), cmd.replace(b"\0", b" ").decode(errors="replace").strip()))
    return out


def wait_until(predicate, timeout=5.0, interval=0.01, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def read_pty(fd, timeout=5, on_output=None):
    """The bytes the pty master fd yields until its slave side is closed or timeout seconds have
    passed; on_output(all so far) is called after each chunk."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.1)
        if not r:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the slave side is closed
            break
        if not chunk:
            break
        out += chunk
        if on_output:
            on_output(out)
    return out


def require(feature):
    """Skips the calling test, with the reason, when the kernel lacks a feature."""
    checks = {
        "userns": (lambda: os.path.exists("/proc/self/ns/user"), "kernel without user namespaces"),
        "seccomp": (lambda: os.path.exists("/proc/sys/kernel/seccomp/actions_avail"),
                    "kernel without seccomp filters"),
        "pty": (lambda: os.path.exists("/dev/ptmx"), "no /dev/ptmx (kernel without ptys)"),
        "freezer": (lambda: any(t == "cgroup2" or "freezer" in c.split(",")
                                for _, t, c in cgroup_mounts()),
                    "no cgroup freezer (neither a v1 freezer hierarchy nor cgroup2)"),
    }
    ok, reason = checks[feature]
    if not ok():
        pytest.skip(reason)


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False


# --- running the binary --------------------------------------------------------------------


class Result:
    """Outcome of one racker-oci invocation. Output goes to files, not pipes, so that
    container processes that inherit it never keep the test waiting for EOF."""

    def __init__(self, argv, returncode, stdout_path, stderr_path):
        self.argv = argv
        self.returncode = returncode
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path

    @property
    def stdout(self):
        return Path(self.stdout_path).read_text(errors="replace")

    @property
    def stderr(self):
        return Path(self.stderr_path).read_text(errors="replace")

    def __repr__(self):
        return (f"<racker-oci {' '.join(map(str, self.argv))}: rc={self.returncode} "
                f"stdout={self.stdout!r} stderr={self.stderr!r}>")


class Racker:
    """Runs racker-oci with this test's --root."""

    def __init__(self, binary, root, workdir):
        self.binary = binary
        self.root = Path(root)
        self.workdir = Path(workdir)
        self._n = itertools.count()
        self.ids = []  # every id handed out, for the teardown's cgroup check
        self.dirs = []  # directories outside tmp_path that belong to the test (leak checks)

    def argv(self, *args, root=True):
        pre = [self.binary] + (["--root", str(self.root)] if root else [])
        return pre + [str(a) for a in args]

    def popen(self, *args, root=True, stdin=subprocess.DEVNULL, pass_fds=(), fd_map=None):
        """Starts racker-oci; returns (Popen, stdout path, stderr path).

        fd_map {target: source} places extra fds at fixed numbers in the child (and nothing
        else beyond 0-2 and pass_fds is inherited)."""
        n = next(self._n)
        out = self.workdir / f"out.{n}"
        err = self.workdir / f"err.{n}"
        argv = self.argv(*args, root=root)
        preexec = None
        close_fds = True
        if fd_map:
            close_fds = False

            def preexec():
                for target, source in fd_map.items():
                    if target == source:
                        os.set_inheritable(target, True)
                    else:
                        os.dup2(source, target, inheritable=True)
                keep = sorted(set(fd_map) | set(pass_fds) | {0, 1, 2})
                lo = 0
                for k in keep + [65536]:
                    if k > lo:
                        os.closerange(lo, k)
                    lo = k + 1
        with open(out, "wb") as fo, open(err, "wb") as fe:
            p = subprocess.Popen(argv, stdin=stdin, stdout=fo, stderr=fe, pass_fds=pass_fds,
                                 close_fds=close_fds, preexec_fn=preexec)
        return p, out, err

    def __call__(self, *args, timeout=DEFAULT_TIMEOUT, root=True, **kw):
        p, out, err = self.popen(*args, root=root, **kw)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise AssertionError(f"racker-oci {args} did not finish within {timeout}s")
        return Result(args, rc, out, err)

    def ok(self, *args, **kw):
        """Runs and asserts exit status 0."""
        r = self(*args, **kw)
        assert r.returncode == 0, r
        return r

    def new_id(self, hint="c"):
        hint = re.sub(r"[^A-Za-z0-9_.-]", "-", hint)[:24].strip("-.") or "c"
        cid = f"{hint}-{uuid.uuid4().hex[:10]}"
        self.ids.append(cid)
        return cid

    def state(self, cid):
        r = self.ok("state", cid)
        return json.loads(r.stdout)

    def status(self, cid):
        r = self("state", cid)
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)["status"]

    def wait_status(self, cid, want, timeout=5.0):
        wait_until(lambda: self.status(cid) == want, timeout=timeout,
                   what=f"container {cid} to be {want} (now {self.status(cid)})")

    def list_ids(self):
        r = self.ok("list", "--quiet")
        return [line for line in r.stdout.splitlines() if line.strip()]

    def create(self, bundle, cid=None, *extra, **kw):
        cid = cid or self.new_id()
        r = self("create", "--bundle", bundle.path, *extra, cid, **kw)
        assert r.returncode == 0, r
        return cid, r

    def run(self, bundle, cid=None, *extra, **kw):
        cid = cid or self.new_id()
        return self("run", "--bundle", bundle.path, *extra, cid, **kw)


# --- bundles ---------------------------------------------------------------------------------


class Bundle:
    def __init__(self, path, config):
        self.path = Path(path)
        self.config = config

    @property
    def rootfs(self):
        return self.path / "rootfs"

    def write(self):
        (self.path / "config.json").write_text(json.dumps(self.config, indent=2))

    def edit(self, fn):
        fn(self.config)
        self.write()
        return self


def set_namespaces(config, *types):
    config["linux"]["namespaces"] = [{"type": t} for t in types]


def drop_namespace(config, ns_type):
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                     if n["type"] != ns_type]


# --- fixtures --------------------------------------------------------------------------------


def snapshot_binary(path, dest_dir, name):
    """Copies a built binary into dest_dir and checks that the copy runs. Tests use the copy:
    other builds may relink the original while the suite runs (a concurrent link may even
    leave it half-written, hence the retries)."""
    copy = Path(dest_dir) / name
    for attempt in range(50):
        try:
            shutil.copy2(path, copy)
            subprocess.run([str(copy), "--version"], check=True, stdout=subprocess.DEVNULL)
            return copy
        except (OSError, subprocess.CalledProcessError):
            if attempt == 49:
                raise
            time.sleep(0.2)


def make_busybox_rootfs(dest_dir):
    """A busybox root filesystem at dest_dir/rootfs (scripts/make-busybox-rootfs.sh); skips
    the test when busybox-static is not installed."""
    if not os.access("/bin/busybox", os.X_OK):
        pytest.skip("/bin/busybox missing (apt-get install busybox-static)")
    d = Path(dest_dir) / "rootfs"
    subprocess.run([str(REPO / "scripts" / "make-busybox-rootfs.sh"), str(d)], check=True,
                   stdout=subprocess.DEVNULL)
    return d


def require_root_and_binary(path, root_reason, env_var):
    """Skips the test without root (root_reason says what for) or without the built binary at
    path (env_var is where the user can point at another build)."""
    if os.geteuid() != 0:
        pytest.skip(root_reason)
    if not os.access(path, os.X_OK):
        pytest.skip(f"{Path(path).name} binary not found at {path} (build it or set {env_var})")


@pytest.fixture(scope="session")
def racker_bin(tmp_path_factory):
    """A snapshot of the binary under test (RACKER_OCI, else <repo>/build/racker-oci): other
    builds may relink the original while the suite runs."""
    path = os.environ.get("RACKER_OCI") or str(REPO / "build" / "racker-oci")
    require_root_and_binary(path, "racker-oci integration tests need root (namespaces, mounts, "
                            "cgroups)", "RACKER_OCI")
    copy_path = snapshot_binary(path, tmp_path_factory.mktemp("bin"), "racker-oci")
    os.chmod(copy_path.parent, 0o755)
    return str(copy_path)


@pytest.fixture(scope="session")
def busybox_rootfs(racker_bin, tmp_path_factory):
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox"))


@pytest.fixture(scope="session")
def spec_template(racker_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("spec")
    subprocess.run([racker_bin, "spec", "--bundle", str(d)], check=True)
    return json.loads((d / "config.json").read_text())


@pytest.fixture
def racker(racker_bin, tmp_path, request):
    """racker-oci with a private --root; the teardown cleans up and checks for leaks."""
    work = tmp_path / "work"
    work.mkdir()
    rk = Racker(racker_bin, tmp_path / "state", work)
    yield rk
    problems = _cleanup_and_check(rk, [tmp_path] + rk.dirs)
    for d in rk.dirs:
        if not mounts_under(d):
            shutil.rmtree(d, ignore_errors=True)
    if problems:
        pytest.fail("leak check after test:\n  " + "\n  ".join(problems), pytrace=False)


def _cleanup_and_check(rk, dirs):
    problems = []
    # 1. force-delete whatever is left (not a failure in itself)
    if rk.root.exists():
        for cid in rk.list_ids():
            r = rk("delete", "--force", cid)
            if r.returncode != 0:
                problems.append(f"delete --force {cid} failed: {r.stderr.strip()}")
        left = rk.list_ids()
        if left:
            problems.append(f"containers still listed after delete --force: {left}")
    # 2. processes of this test
    def find():
        return [p for d in dirs for p in processes_mentioning(str(d))]

    procs = find()
    if procs:
        time.sleep(0.2)  # SIGKILLed ones may still be on their way out
        procs = find()
    if procs:
        problems.append(f"processes left: {procs}")
        for pid, _ in procs:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    # 3. mounts under the test's directories
    left = mounts_under(*dirs)
    if left:
        problems.append(f"mounts left: {left}")
        for mp in sorted(left, key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], stderr=subprocess.DEVNULL)
    # 4. cgroups named after the test's containers
    for cid in rk.ids:
        dirs = cgroup_dirs_named(cid)
        if dirs:
            problems.append(f"cgroups left for {cid}: {dirs}")
            for d in sorted(dirs, key=len, reverse=True):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
    return problems


@pytest.fixture
def make_bundle(racker, busybox_rootfs, spec_template, tmp_path):
    """make_bundle(args, edit=None, traversable=False) -> Bundle: a fresh copy of the busybox
    rootfs and a config.json from `racker-oci spec` with terminal=false, the given args, and
    edit(config) applied (a function that changes the dict in place).

    traversable=True puts the bundle in a directory every uid may traverse (pytest's are 0700),
    which a container whose root is mapped to an unprivileged host uid needs."""
    counter = itertools.count()

    def make(args=("true",), edit=None, traversable=False):
        if traversable:
            base = Path(tempfile.mkdtemp(prefix="rk-bundle-"))
            os.chmod(base, 0o711)
            racker.dirs.append(base)
            path = base / "bundle"
        else:
            path = tmp_path / f"bundle{next(counter)}"
        path.mkdir()
        subprocess.run(["cp", "-a", str(busybox_rootfs), str(path / "rootfs")], check=True)
        config = copy.deepcopy(spec_template)
        config["process"]["terminal"] = False
        config["process"]["args"] = list(args)
        config["process"]["env"].append(f"{MARK}={path}")
        if edit:
            edit(config)
        b = Bundle(path, config)
        b.write()
        return b

    return make


@pytest.fixture
def short_tmp():
    """A short directory path for unix sockets (sun_path is limited to 107 bytes)."""
    d = tempfile.mkdtemp(prefix="rk-")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


# --- reporting -------------------------------------------------------------------------------


def pytest_terminal_summary(terminalreporter):
    # CTest treats a file whose tests were all skipped (e.g. not root) as skipped.
    stats = terminalreporter.stats
    ran = sum(len(stats.get(k, [])) for k in ("passed", "failed", "error", "xfailed", "xpassed"))
    if ran == 0 and stats.get("skipped"):
        terminalreporter.write_line("SKIPPED_ALL")
