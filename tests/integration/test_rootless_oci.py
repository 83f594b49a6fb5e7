"""racker-oci run by an ordinary user, as runc runs rootless: `spec --rootless` bundles (the
user as root inside), wider mappings through newuidmap/newgidmap from the user's subordinate
ranges, state under $XDG_RUNTIME_DIR/racker-oci, no cgroup where none is the user's, and a
one-line error for each thing that is missing (helper, range, cgroup, state directory)."""

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import make_busybox_rootfs, processes_mentioning, snapshot_binary
from rootless_user import ensure_user

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def user():
    return ensure_user()


@pytest.fixture(scope="module")
def base(user):
    """A directory the user can traverse (pytest's are 0700 root's)."""
    d = Path(tempfile.mkdtemp(prefix="rk-rootless-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def oci_bin(user, base):
    path = os.environ.get("RACKER_OCI") or str(REPO / "build" / "racker-oci")
    if not os.access(path, os.X_OK):
        pytest.skip(f"racker-oci not built at {path}")
    return str(snapshot_binary(path, base, "racker-oci"))


@pytest.fixture(scope="module")
def rootfs_template(user, tmp_path_factory):
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox"))


class Rootless:
    """racker-oci as the test user, with a runtime directory and bundles of its own."""

    def __init__(self, user, binary, work, template):
        self.user, self.binary, self.work, self.template = user, binary, work, template
        self.runtime_dir = work / "xdg"
        self.runtime_dir.mkdir(mode=0o700)
        user.chown(self.runtime_dir)
        self.n = 0
        self.mark = f"RK_ROOTLESS_{os.getpid()}_{id(self)}"

    def env(self, **extra):
        return self.user.env(self.runtime_dir, **extra)

    def __call__(self, *args, env=None, timeout=30):
        return self.user.run([self.binary, *args], env or self.env(), timeout=timeout)

    def detached(self, *args):
        """A command whose payload keeps running with our stdio: no pipes to wait on."""
        err = self.work / "detached.err"
        with open(err, "w") as f:
            r = subprocess.run([self.binary, *args], env=self.env(), user=self.user.uid,
                               group=self.user.gid, extra_groups=[], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=f, timeout=30, cwd="/")
        assert r.returncode == 0, err.read_text()

    def bundle(self, args, edit=None):
        self.n += 1
        b = self.work / f"b{self.n}"
        b.mkdir()
        subprocess.run(["cp", "-a", str(self.template), str(b / "rootfs")], check=True)
        self.user.chown(b)
        r = self("spec", "--rootless", "--bundle", str(b))
        assert r.returncode == 0, r.stderr
        cfg = json.loads((b / "config.json").read_text())
        cfg["process"]["terminal"] = False
        cfg["process"]["args"] = list(args)
        cfg["process"]["env"].append(f"{self.mark}=1")
        if edit:
            edit(cfg)
        (b / "config.json").write_text(json.dumps(cfg))
        self.user.chown(b / "config.json")
        return b

    def ids(self):
        r = self("list", "-q")
        assert r.returncode == 0, r.stderr
        return r.stdout.split()


@pytest.fixture
def rl(user, oci_bin, rootfs_template, base, request):
    work = base / request.node.name
    work.mkdir(mode=0o755)
    r = Rootless(user, oci_bin, work, rootfs_template)
    yield r
    for cid in r.ids():
        r("delete", "--force", cid)
    left = r.ids()
    time.sleep(0.1)
    procs = processes_mentioning(r.mark)
    for pid, _ in procs:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    assert not left, f"containers left: {left}"
    assert not procs, f"processes left: {procs}"


def one_line(text):
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_spec_rootless_runs_as_the_user(rl, user):
    b = rl.bundle(["sh", "-c", "id -u; cat /proc/self/uid_map /proc/self/gid_map; exit 7"])
    r = rl("run", "--bundle", str(b), "c1")
    assert r.returncode == 7, r.stderr
    out = r.stdout.split()
    assert out[0] == "0"
    assert out[1:4] == ["0", str(user.uid), "1"]
    assert out[4:7] == ["0", str(user.gid), "1"]
    # state lives in the user's runtime directory, and is the user's
    st = rl.runtime_dir / "racker-oci"
    assert st.is_dir() and st.stat().st_uid == user.uid
    assert rl.ids() == []


def test_detached_exec_kill_delete(rl, user):
    b = rl.bundle(["sleep", "60"])
    rl.detached("run", "-d", "--bundle", str(b), "d1")
    lst = rl("list")
    assert "d1" in lst.stdout and user.name in lst.stdout, lst.stdout
    assert json.loads(rl("state", "d1").stdout)["status"] == "running"
    # exec joins the container's user and pid namespaces (the process is pid > 1 inside)
    r = rl("exec", "d1", "sh", "-c", "id -u; echo $$; exit 4")
    assert r.returncode == 4, r.stderr
    uid, pid = r.stdout.split()
    assert uid == "0" and int(pid) > 1
    rl.detached("exec", "-d", "d1", "sleep", "30")
    assert rl("kill", "d1", "KILL").returncode == 0
    deadline = time.time() + 5
    while json.loads(rl("state", "d1").stdout)["status"] != "stopped":
        assert time.time() < deadline, "not stopped after kill"
        time.sleep(0.05)
    assert rl("delete", "d1").returncode == 0
    assert rl.ids() == []
    deadline = time.time() + 3
    while processes_mentioning(rl.mark) and time.time() < deadline:
        time.sleep(0.05)
    assert processes_mentioning(rl.mark) == []


def test_subordinate_ranges_through_newuidmap(rl, user):
    if not shutil.which("newuidmap"):
        pytest.skip("newuidmap missing (apt-get install uidmap)")
    su, sg = user.subuid, user.subgid

    def edit(cfg):
        cfg["linux"]["uidMappings"] = [
            {"containerID": 0, "hostID": user.uid, "size": 1},
            {"containerID": 1, "hostID": su[0], "size": 65536}]
        cfg["linux"]["gidMappings"] = [
            {"containerID": 0, "hostID": user.gid, "size": 1},
            {"containerID": 1, "hostID": sg[0], "size": 65536}]
        cfg["root"]["readonly"] = False
        for kind in ("bounding", "effective", "permitted"):
            cfg["process"]["capabilities"][kind].append("CAP_CHOWN")

    b = rl.bundle(["sh", "-c", "cat /proc/self/uid_map; touch /tmp-f && chown 1000:1001 /tmp-f"],
                  edit)
    r = rl("run", "--bundle", str(b), "m1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", str(user.uid), "1", "1", str(su[0]), "65536"]
    st = os.stat(b / "rootfs" / "tmp-f")
    # container id 1000 is host id su+999
    assert (st.st_uid, st.st_gid) == (su[0] + 999, sg[0] + 1000)


def test_range_not_the_users_is_one_line(rl, user):
    if not shutil.which("newuidmap"):
        pytest.skip("newuidmap missing (apt-get install uidmap)")

    def edit(cfg):
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1900000000, "size": 65536}]

    b = rl.bundle(["true"], edit)
    r = rl("run", "--bundle", str(b), "x1")
    assert r.returncode == 1
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("racker-oci:")]
    assert len(line) == 1, r.stderr
    assert "newuidmap refused the id mapping" in line[0] and "/etc/subuid" in line[0]
    assert rl.ids() == []
    assert list((rl.runtime_dir / "racker-oci").iterdir()) == []


def test_missing_helper_says_what_to_install(rl, user):
    def edit(cfg):
        cfg["linux"]["uidMappings"] = [
            {"containerID": 0, "hostID": user.uid, "size": 1},
            {"containerID": 1, "hostID": user.subuid[0], "size": 10}]

    b = rl.bundle(["true"], edit)
    empty = rl.work / "nohelpers"
    empty.mkdir()
    r = rl("run", "--bundle", str(b), "x2", env=rl.env(PATH=str(empty)))
    assert r.returncode == 1
    line = one_line(r.stderr)
    assert "needs newuidmap, which is not installed (apt-get install uidmap)" in line, line
    assert rl.ids() == []


def test_limits_without_a_cgroup_of_ones_own(rl, user):
    def edit(cfg):
        cfg["linux"]["resources"] = {"memory": {"limit": 64 << 20}}

    b = rl.bundle(["true"], edit)
    r = rl("run", "--bundle", str(b), "x3")
    assert r.returncode == 1
    line = one_line(r.stderr)
    assert "linux.resources.memory" in line and "no cgroup" in line, line
    assert f"writable by uid {user.uid}" in line and "systemd-run --user --scope" in line, line
    assert rl.ids() == []


def test_state_directory_someone_else_made(rl, user):
    # no XDG_RUNTIME_DIR: /tmp/racker-oci-UID, which another user got to first
    d = Path(f"/tmp/racker-oci-{user.uid}")
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(mode=0o777)
    os.chmod(d, 0o777)
    try:
        b = rl.bundle(["true"])
        r = rl("run", "--bundle", str(b), "x4", env=rl.env(XDG_RUNTIME_DIR=None))
        assert r.returncode == 1
        line = one_line(r.stderr)
        assert f"state directory {d} is not a directory of yours" in line, line
        assert list(d.iterdir()) == []
    finally:
        shutil.rmtree(d, ignore_errors=True)
    # and once it is gone, the user's own is made there
    b = rl.bundle(["true"])
    r = rl("run", "--bundle", str(b), "x5", env=rl.env(XDG_RUNTIME_DIR=None))
    try:
        assert r.returncode == 0, r.stderr
        assert d.stat().st_uid == user.uid
    finally:
        shutil.rmtree(d, ignore_errors=True)
