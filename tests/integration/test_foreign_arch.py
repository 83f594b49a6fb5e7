"""racker run --platform linux/arm64: an image of another architecture runs through qemu-user,
which the kernel starts for its programs (binfmt_misc, registered with the fix-binary flag so
nothing is copied into the image). Root's racker mounts binfmt_misc and loads qemu-user-static's
registration where nobody did (this host: its PID 1 is not systemd).

The arm64 image: Debian's busybox-static for arm64, fetched with apt into a private state
directory (the host's apt configuration stays as it was), pushed with the amd64 busybox as one
multi-platform index to a local registry.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from racker_ctx import RackerCtx, bb_rootfs, closed_after_test, racker_snapshot  # noqa: F401
from registry_util import Dir, File, Image, Index, Layer, Symlink

BINFMT = Path("/proc/sys/fs/binfmt_misc")
BAKE_CACHE = Path("/var/cache/racker-tests/bake")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def racker_exe(tmp_path_factory):
    return racker_snapshot(tmp_path_factory, "foreign architectures: binfmt_misc is root's",
                           registry=True)


@pytest.fixture(scope="session")
def arm64_apt(tmp_path_factory):
    """apt-get download for arm64 packages, with a private state directory: returns a function
    of a package name giving the .deb's path."""
    if not Path("/usr/lib/binfmt.d/qemu-aarch64.conf").exists():
        pytest.skip("qemu-user-static is not installed (apt-get install qemu-user-static)")
    d = tmp_path_factory.mktemp("arm64")
    for sub in ("lists/partial", "cache/archives/partial", "dl"):
        (d / sub).mkdir(parents=True)
    opts = ["-o", "APT::Architecture=arm64", "-o", "APT::Architectures=arm64",
            "-o", f"Dir::State::Lists={d}/lists", "-o", f"Dir::Cache={d}/cache",
            "-o", "Dir::State::status=/dev/null", "-o", "Debug::NoLocking=1",
            "-o", "APT::Sandbox::User=root"]

    def apt(*args):
        p = subprocess.run(["apt-get", *opts, *args], cwd=d / "dl", capture_output=True,
                           text=True, timeout=300)
        if p.returncode != 0:
            pytest.skip(f"apt-get {args[0]} for arm64 failed (no Debian archive?): "
                        + p.stderr[-300:])
    apt("update", "-qq")

    def download(name):
        apt("download", name)
        (deb,) = (d / "dl").glob(f"{name}_*_arm64.deb")
        return deb
    return download


@pytest.fixture(scope="session")
def arm64_busybox(arm64_apt, tmp_path_factory):
    """bin/busybox of Debian's busybox-static:arm64 (bytes)."""
    deb = arm64_apt("busybox-static")
    x = tmp_path_factory.mktemp("arm64-busybox")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(x)], check=True)
    return (x / "bin" / "busybox").read_bytes()


@pytest.fixture
def ctx(racker_exe, tmp_path):
    yield from closed_after_test(RackerCtx(racker_exe, tmp_path, timeout=120))


def busybox_layer(busybox):
    return Layer([Dir("bin"), File("bin/busybox", busybox, mode=0o755),
                  *[Symlink(f"bin/{a}", "busybox") for a in ("sh", "uname", "cat", "echo")]])


def test_run_an_arm64_image_through_qemu_user(ctx, arm64_busybox, bb_rootfs):  # noqa: F811
    if os.uname().machine != "x86_64":
        pytest.skip("the test's native half is an amd64 busybox")
    amd = Image([Layer.from_dir(bb_rootfs)], architecture="amd64")
    arm = Image([busybox_layer(arm64_busybox)], architecture="arm64")
    reg = ctx.registry()
    reg.push_image("test/multi", "1", Index([amd, arm]))
    ctx.insecure_conf(reg)
    ref = f"{reg.host}/test/multi:1"
    r = ctx.ok("run", "--rm", "--network", "none", "--platform", "linux/arm64", ref,
               "sh", "-c", "uname -m; echo from arm64")
    assert r.stdout.split("\n")[:2] == ["aarch64", "from arm64"], (r.stdout, r.stderr)
    # registered with the fix-binary flag: the interpreter is not in the image
    entry = (BINFMT / "qemu-aarch64").read_text()
    assert "enabled" in entry and "F" in next(l for l in entry.splitlines()
                                              if l.startswith("flags:")), entry
    # the host's own platform from the same index runs natively
    r = ctx.ok("run", "--rm", "--network", "none", "--pull", "always", "--platform",
               "linux/amd64", ref, "uname", "-m")
    assert r.stdout.strip() == "x86_64", r.stdout


def test_an_architecture_qemu_does_not_emulate_is_one_line(ctx, arm64_busybox):
    img = Image([busybox_layer(arm64_busybox)], architecture="sparc")
    reg = ctx.registry()
    reg.push_image("test/sparc", "1", img)
    ctx.insecure_conf(reg)
    r = ctx("run", "--rm", "--network", "none", f"{reg.host}/test/sparc:1", "true")
    assert r.returncode == 126, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "architecture \"sparc\" is not one qemu-user emulates" in lines[0]
    d = ctx.root / "containers"
    assert not d.is_dir() or os.listdir(d) == []


@pytest.fixture(scope="session")
def arm64_store(racker_exe, tmp_path_factory):
    """A store with Debian bookworm for arm64 with systemd, baked by mmdebstrap through
    qemu-user (its rootfs tarball cached with test_boot's: a cold bake takes ~4 min here)."""
    if not Path("/usr/lib/binfmt.d/qemu-aarch64.conf").exists():
        pytest.skip("qemu-user-static is not installed (apt-get install qemu-user-static)")
    BAKE_CACHE.mkdir(parents=True, exist_ok=True)
    root = tmp_path_factory.mktemp("arm64-store") / "store"
    p = subprocess.run([racker_exe, "--root", str(root), "bake", "-q", "--cache-dir",
                        str(BAKE_CACHE), "--arch", "arm64", "--include",
                        "systemd,systemd-sysv,dbus", "debian"],
                       capture_output=True, text=True, timeout=1200)
    if p.returncode != 0 and "mmdebstrap failed" in p.stderr:
        pytest.skip("mmdebstrap could not build bookworm for arm64 (no archive?): " + p.stderr)
    assert p.returncode == 0, p
    assert p.stdout.startswith("Baked image: docker.io/library/debian:bookworm-arm64"), p
    return root


def test_an_emulated_boot(racker_exe, arm64_store):
    """systemd for arm64 boots as PID 1 through qemu-user, runs the command and halts cleanly:
    the halt goes through the guest's own kill, since qemu maps real-time signals elsewhere."""
    t0 = time.monotonic()
    p = subprocess.run([racker_exe, "--debug", "--root", str(arm64_store), "run", "--rm",
                        "--boot", "debian:bookworm-arm64", "sh", "-c",
                        "uname -m; systemctl is-system-running; cat /proc/1/comm"],
                       capture_output=True, text=True, timeout=300)
    took = time.monotonic() - t0
    print(f"emulated boot + command + halt: {took:.1f} s; {p.stderr[-400:]}")
    assert p.returncode == 0, p
    arch, state, comm = p.stdout.split("\n")[:3]
    # degraded: units that set up credentials fail under qemu-user (an ioctl it lacks)
    assert (arch, comm) == ("aarch64", "systemd") and state in ("running", "degraded"), p
    assert "did not stop" not in p.stderr, p  # halted, not killed after 10 s
    left = subprocess.run(["pgrep", "-f", "qemu-binfmt/aarch64"], capture_output=True, text=True)
    assert str(arm64_store) not in left.stdout


def test_a_detached_emulated_system_stops_cleanly(racker_exe, arm64_store):
    """racker run -d of the arm64 system, exec into it, racker stop: the halt goes in through
    the guest's own kill (SIGRTMIN+3 from the host would reach systemd as another signal),
    so the system is down well before the 10 s after which SIGKILL would come."""
    def racker(*args):
        return subprocess.run([racker_exe, "--root", str(arm64_store), *args],
                              capture_output=True, text=True, timeout=120)
    name = "emu-" + os.urandom(4).hex()
    r = racker("run", "-d", "--boot", "--name", name, "debian:bookworm-arm64")
    assert r.returncode == 0, r
    try:
        r = racker("exec", name, "uname", "-m")
        assert r.stdout == "aarch64\n", r
        t0 = time.monotonic()
        r = racker("stop", name)
        took = time.monotonic() - t0
        assert r.returncode == 0, r
        assert took < 8, f"stop took {took:.1f} s (SIGKILL after the timeout?)"
        ps = json.loads(racker("ps", "-a", "--format", "json").stdout or "[]")
        mine = [c for c in ps if c.get("name", c.get("Names")) == name]
        assert mine and "Up" not in json.dumps(mine), ps
    finally:
        racker("rm", "-f", name)


def test_pkgprobe_installs_an_arm64_package(racker_exe, arm64_store, arm64_apt, tmp_path):
    """postroj --arch arm64 pkgprobe: the catalog's debian-bookworm for arm64 (baked through
    qemu-user, provisioned), booted under emulation, an arm64 .deb installed with apt."""
    postroj = Path(racker_exe).parent / "postroj"
    if not postroj.exists():
        postroj = Path(os.environ.get("RACKER_BUILD") or REPO / "build") / "postroj"
    deb = arm64_apt("hello")
    rep = tmp_path / "r.json"
    p = subprocess.run([str(postroj), "--store-root", str(arm64_store), "--bake-cache",
                        str(BAKE_CACHE), "--package-cache", str(tmp_path / "pkgs"),
                        "--arch", "arm64", "pkgprobe", "--image=debian-bookworm",
                        f"--package={deb}", "--check-unit=systemd-journald",
                        f"--report=json:{rep}"],
                       capture_output=True, text=True, timeout=1200)
    print(p.stdout, p.stderr[-2000:])
    assert p.returncode == 0, p
    j = json.loads(rep.read_text())
    names = [c["name"] for c in j["suites"][0]["checks"]]
    assert any(n.startswith("install hello_") for n in names), names
    assert "unit systemd-journald.service" in names, names
    images = subprocess.run([racker_exe, "--root", str(arm64_store), "images"],
                            capture_output=True, text=True).stdout
    assert "postroj.local/debian-bookworm" in images and "arm64" in images, images
