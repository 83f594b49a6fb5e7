"""racker on an ordinary systemd host: systemd as PID 1, pure cgroup v2. These run in the VM
lane (tests/vm/run.sh boots Debian 12 with systemd 252 and runs them inside); on a host without
systemd every test here is skipped with the reason.

What must hold there: containers are transient scopes racker-<id>.scope under machine.slice
that systemd created with Delegate=yes (visible to systemd-cgls and, when booted, machinectl);
a booted systemd owns the subtree, so commands and `racker exec` join its init's leaf; the root
cgroup's cgroup.subtree_control is never touched and the host stays `running`; racker-oci
--systemd-cgroup makes the runc-style scope with the limits as unit properties.
"""

import json
import os
import re
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from conftest import make_busybox_rootfs, snapshot_binary, wait_until
from test_boot import BAKE_CACHE, IMAGE, booted_inits, racker_exe, store  # noqa: F401

TIMEOUT = 240  # everything is slow under TCG
ROOT_SUBTREE = Path("/sys/fs/cgroup/cgroup.subtree_control")


def systemd_host():
    try:
        return (os.path.isdir("/run/systemd/system")
                and Path("/proc/1/comm").read_text().strip() == "systemd"
                and Path("/sys/fs/cgroup/cgroup.controllers").exists())
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    not systemd_host(),
    reason="needs a host with systemd as PID 1 and pure cgroup v2 (run tests/vm/run.sh)")


def sh(*argv, check=False):
    """Runs argv; its output goes through files, not pipes, so that a container process that
    inherits them (racker-oci create) never keeps us waiting for EOF."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        rc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                            timeout=TIMEOUT).returncode
        out.seek(0)
        err.seek(0)
        p = subprocess.CompletedProcess(argv, rc, out.read().decode(errors="replace"),
                                        err.read().decode(errors="replace"))
    if check:
        assert p.returncode == 0, p
    return p


def unit_property(unit, prop):
    return sh("systemctl", "show", "-p", prop, "--value", unit).stdout.strip()


def racker_scopes():
    return sorted(p.name for p in Path("/sys/fs/cgroup/machine.slice").glob("racker-*.scope"))


@pytest.fixture(autouse=True)
def host_left_alone():
    """Every test: the root cgroup's controllers unchanged, the host still `running`, no
    container scope left."""
    before = ROOT_SUBTREE.read_text()
    scopes = racker_scopes()
    yield
    assert ROOT_SUBTREE.read_text() == before, "racker changed the root cgroup's subtree_control"
    state = sh("systemctl", "is-system-running").stdout.strip()
    failed = sh("systemctl", "--failed", "--no-legend", "--plain").stdout
    assert state == "running", f"host is {state}; failed units:\n{failed}"
    assert racker_scopes() == scopes, "container scopes left behind"


@pytest.fixture
def racker(racker_exe, store):  # noqa: F811
    def run(*args, **kw):
        return subprocess.run([racker_exe, "--root", str(store), *args], capture_output=True,
                              text=True, timeout=TIMEOUT, **kw)
    return run


def container_id(racker, name):
    r = racker("inspect", name)
    assert r.returncode == 0, r
    data = json.loads(r.stdout)
    return (data[0] if isinstance(data, list) else data)["id"]


def test_os_container_runs_a_command(racker):
    r = racker("run", "--rm", IMAGE, "systemctl", "is-system-running")
    assert r.returncode == 0, r
    assert r.stdout.strip() == "running", r
    assert booted_inits() == []


def test_detached_os_container_is_a_delegated_scope_with_exec(racker):
    name = "vm-" + uuid.uuid4().hex[:8]
    try:
        r = racker("run", "-d", "--name", name, IMAGE)
        assert r.returncode == 0, r
        unit = "racker-" + container_id(racker, name) + ".scope"
        scope = Path("/sys/fs/cgroup/machine.slice") / unit
        assert scope.is_dir(), racker_scopes()
        assert unit_property(unit, "Delegate") == "yes"
        assert unit_property(unit, "Slice") == "machine.slice"
        # the container's systemd owns the subtree: it moved itself into init.scope and
        # enabled controllers for its children
        wait_until(lambda: (scope / "init.scope").is_dir(), timeout=30, what="init.scope")
        assert (scope / "cgroup.subtree_control").read_text().split(), "no delegated controllers"
        cgls = sh("systemd-cgls", "--no-pager", "/machine.slice", check=True).stdout
        assert unit in cgls, cgls
        machines = sh("machinectl", "list", "--no-legend", check=True).stdout
        assert name in machines, machines
        r = racker("exec", name, "systemctl", "is-system-running")
        assert (r.returncode, r.stdout.strip()) == (0, "running"), r
        r = racker("exec", name, "cat", "/proc/self/cgroup")
        assert r.returncode == 0 and r.stdout.strip() == "0::/init.scope", r
        r = racker("exec", name, "sh", "-c", "exit 7")
        assert r.returncode == 7, r
        r = racker("stop", name)
        assert r.returncode == 0, r
        # the scope ends with its last process; systemd removes it and the machine
        wait_until(lambda: not scope.exists(), timeout=30, what=f"{unit} to go")
        wait_until(lambda: name not in sh("machinectl", "list", "--no-legend").stdout,
                   timeout=30, what=f"machine {name} to go")
    finally:
        racker("rm", "-f", name)
    assert booted_inits() == []


def test_plain_container_limits_are_unit_properties(racker):
    name = "vm-" + uuid.uuid4().hex[:8]
    try:
        r = racker("run", "-d", "--no-boot", "--name", name, "--memory", "64m",
                   "--pids-limit", "50", IMAGE, "sleep", "300")
        assert r.returncode == 0, r
        unit = "racker-" + container_id(racker, name) + ".scope"
        assert unit_property(unit, "MemoryMax") == str(64 << 20)
        assert unit_property(unit, "TasksMax") == "50"
        scope = Path("/sys/fs/cgroup/machine.slice") / unit
        assert (scope / "memory.max").read_text().strip() == str(64 << 20)
        assert (scope / "pids.max").read_text().strip() == "50"
        r = racker("exec", name, "cat", "/proc/self/cgroup")
        assert r.returncode == 0 and r.stdout.strip() == "0::/", r
    finally:
        r = racker("rm", "-f", name)
        assert r.returncode == 0, r


@pytest.fixture
def oci_bundle(tmp_path, racker_exe):  # noqa: F811
    build = os.environ.get("RACKER_BUILD")
    (tmp_path / "bin").mkdir()
    exe = snapshot_binary(Path(build) / "racker-oci", tmp_path / "bin", "racker-oci")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    make_busybox_rootfs(bundle)
    sh(str(exe), "spec", "--bundle", str(bundle), check=True)
    return str(exe), bundle


def test_racker_oci_systemd_cgroup_scope(oci_bundle, tmp_path):
    exe, bundle = oci_bundle
    cid = "vm" + uuid.uuid4().hex[:10]
    unit = f"racker-{cid}.scope"
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["process"]["args"] = ["sleep", "300"]
    cfg["process"]["terminal"] = False
    cfg["linux"]["cgroupsPath"] = f"system.slice:racker:{cid}"
    cfg["linux"]["resources"] = {"memory": {"limit": 64 << 20}, "pids": {"limit": 42}}
    (bundle / "config.json").write_text(json.dumps(cfg))
    oci = [exe, "--root", str(tmp_path / "state"), "--systemd-cgroup"]
    try:
        sh(*oci, "create", "--bundle", str(bundle), cid, check=True)
        sh(*oci, "start", cid, check=True)
        pid = json.loads(sh(*oci, "state", cid, check=True).stdout)["pid"]
        scope = Path("/sys/fs/cgroup/system.slice") / unit
        assert str(pid) in (scope / "cgroup.procs").read_text().split()
        assert unit_property(unit, "ActiveState") == "active"
        assert unit_property(unit, "ControlGroup") == f"/system.slice/{unit}"
        assert unit_property(unit, "MemoryMax") == str(64 << 20)
        assert unit_property(unit, "TasksMax") == "42"
        assert (scope / "memory.max").read_text().strip() == str(64 << 20)
        r = sh(*oci, "exec", cid, "cat", "/proc/self/cgroup")
        assert r.returncode == 0, r
        features = json.loads(sh(exe, "features", check=True).stdout)
        assert features["linux"]["cgroup"]["systemd"] is True
    finally:
        sh(*oci, "delete", "--force", cid)
    assert unit_property(unit, "LoadState") == "not-found"
    assert not (Path("/sys/fs/cgroup/system.slice") / unit).exists()
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()
    # a second container of the same name: the first one's unit is gone for good
    try:
        sh(*oci, "run", "--bundle", str(bundle), "-d", cid)
    finally:
        sh(*oci, "delete", "--force", cid)


def test_pkgprobe_on_a_systemd_host(racker, store, tmp_path):  # noqa: F811
    """postroj pkgprobe of a package with a unit, on the baked bookworm image (tagged as the
    catalog's debian-bookworm so postroj needs no network)."""
    build = os.environ.get("RACKER_BUILD")
    (tmp_path / "bin").mkdir()
    postroj = snapshot_binary(Path(build) / "postroj", tmp_path / "bin", "postroj")
    pkg = tmp_path / "pkg"
    unit_dir = pkg / "lib/systemd/system"
    unit_dir.mkdir(parents=True)
    (unit_dir / "racker-vm-probe.service").write_text(
        "[Unit]\nDescription=probe\n[Service]\nType=oneshot\nRemainAfterExit=yes\n"
        "ExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n")
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN/control").write_text(
        "Package: racker-vm-probe\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: racker <racker@example.org>\nDescription: probe\n")
    deb = tmp_path / "racker-vm-probe_1.0_all.deb"
    sh("dpkg-deb", "--build", "--root-owner-group", str(pkg), str(deb), check=True)
    r = racker("tag", IMAGE, "postroj.local/debian-bookworm:latest")
    assert r.returncode == 0, r
    report = tmp_path / "report.xml"
    p = subprocess.run([str(postroj), "--store-root", str(store), "--bake-cache", str(BAKE_CACHE),
                        "--package-cache", str(tmp_path / "cache"), "pkgprobe",
                        "--image=debian-bookworm", f"--package={deb}",
                        "--check-unit=racker-vm-probe", f"--report=junit:{report}"],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0, p
    assert re.search(r'failures="0"', report.read_text()), report.read_text()


def test_isolation_on_a_systemd_host(racker):
    """Issue 11 on an ordinary host: seccomp filters and the OS container's own user namespace
    (a range owned by its first uid) under systemd's delegated scopes."""
    probe = ("grep '^Seccomp:' /proc/self/status /proc/1/status | sed 's/.*://' | xargs; "
             "cat /proc/self/uid_map | xargs; unshare -U true 2>/dev/null; echo unshare=$?")
    r = racker("run", "--rm", IMAGE, "sh", "-c", probe)
    assert r.returncode == 0, r
    seccomp, uid_map, unshare = r.stdout.strip().split("\n")
    assert seccomp == "2 2", r  # the command and the booted systemd are both filtered
    inside, outside, count = (int(x) for x in uid_map.split())
    assert (inside, count) == (0, 65536) and outside > 0, r
    assert unshare != "unshare=0", r
    # plain containers: docker's profile, the host's ids unless --userns=auto
    r = racker("run", "--rm", "--no-boot", IMAGE, "sh", "-c", probe)
    assert r.returncode == 0, r
    seccomp, uid_map, unshare = r.stdout.strip().split("\n")
    assert seccomp == "2 2" and uid_map == "0 0 4294967295" and unshare != "unshare=0", r
    r = racker("run", "--rm", "--no-boot", "--userns=auto", "--security-opt",
               "seccomp=unconfined", IMAGE, "sh", "-c", probe)
    assert r.returncode == 0, r
    seccomp, uid_map, _ = r.stdout.strip().split("\n")
    assert seccomp == "0 0" and uid_map.split()[1] != "0", r
    assert booted_inits() == []
