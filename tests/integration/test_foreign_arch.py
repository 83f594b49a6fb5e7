"""racker run --platform linux/arm64: an image of another architecture runs through qemu-user,
which the kernel starts for its programs (binfmt_misc, registered with the fix-binary flag so
nothing is copied into the image). Root's racker mounts binfmt_misc and loads qemu-user-static's
registration where nobody did (this host: its PID 1 is not systemd).

The arm64 image: Debian's busybox-static for arm64, fetched with apt into a private state
directory (the host's apt configuration stays as it was), pushed with the amd64 busybox as one
multi-platform index to a local registry.
"""

import os
import subprocess
from pathlib import Path

import pytest

from racker_ctx import RackerCtx, bb_rootfs, closed_after_test, racker_snapshot  # noqa: F401
from registry_util import Dir, File, Image, Index, Layer, Symlink

BINFMT = Path("/proc/sys/fs/binfmt_misc")


@pytest.fixture(scope="session")
def racker_exe(tmp_path_factory):
    return racker_snapshot(tmp_path_factory, "foreign architectures: binfmt_misc is root's",
                           registry=True)


@pytest.fixture(scope="session")
def arm64_busybox(tmp_path_factory):
    """bin/busybox of Debian's busybox-static:arm64 (bytes)."""
    if not Path("/usr/lib/binfmt.d/qemu-aarch64.conf").exists():
        pytest.skip("qemu-user-static is not installed (apt-get install qemu-user-static)")
    d = tmp_path_factory.mktemp("arm64")
    for sub in ("lists/partial", "cache/archives/partial", "dl"):
        (d / sub).mkdir(parents=True)
    opts = ["-o", "APT::Architecture=arm64", "-o", "APT::Architectures=arm64",
            "-o", f"Dir::State::Lists={d}/lists", "-o", f"Dir::Cache={d}/cache",
            "-o", "Dir::State::status=/dev/null", "-o", "Debug::NoLocking=1",
            "-o", "APT::Sandbox::User=root"]
    for args in (["update", "-qq"], ["download", "busybox-static"]):
        p = subprocess.run(["apt-get", *opts, *args], cwd=d / "dl", capture_output=True,
                           text=True, timeout=300)
        if p.returncode != 0:
            pytest.skip("apt-get could not fetch busybox-static:arm64 (no Debian archive?): "
                        + p.stderr[-300:])
    (deb,) = (d / "dl").glob("busybox-static_*_arm64.deb")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(d / "x")], check=True)
    return (d / "x" / "bin" / "busybox").read_bytes()


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
