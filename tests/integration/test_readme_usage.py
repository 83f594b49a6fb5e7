"""The original racker/postroj README's Usage lines, replayed unchanged where they need only
Debian images: each line runs as written through bash, with racker and postroj on PATH, a store
of the test's own ($RACKER_ROOT) and a registries.conf ($RACKER_REGISTRIES_CONF) whose mirror
for docker.io is a local registry holding debian:bullseye-slim, debian:11-slim and
debian:trixie-slim (Debian minbase, baked here). The original's fedora:37 lines use
debian:trixie-slim instead, its stretch webfs line debian-bookworm and the package's current URL
(stretch is off the archive, and so is that exact .deb).

Lines that need a terminal (-it and an interactive shell) run on a pty; the stdin pipe runs as
written, `-it` with a pipe for stdin."""

import os
import pty
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import read_pty
from racker_ctx import racker_snapshot
from registry_util import Registry
from test_boot import BAKE_CACHE

TIMEOUT = 600
WEBFS = "http://deb.debian.org/debian/pool/main/w/webfs/webfs_1.21+ds1-12+b1_amd64.deb"


@pytest.fixture(scope="module")
def racker_exe(tmp_path_factory):
    return racker_snapshot(tmp_path_factory, "racker runs OS containers as root here",
                           registry=True)


@pytest.fixture(scope="module")
def env(racker_exe, tmp_path_factory):
    """The user's environment: PATH with racker and postroj, the store and the mirror."""
    if not shutil.which("mmdebstrap"):
        pytest.skip("mmdebstrap not installed")
    build = os.environ.get("RACKER_BUILD")
    postroj = Path(build) / "postroj" if build else Path(__file__).parents[2] / "build" / "postroj"
    d = tmp_path_factory.mktemp("readme")
    bindir = d / "bin"
    bindir.mkdir()
    os.symlink(racker_exe, bindir / "racker")
    shutil.copy(postroj, bindir / "postroj")
    BAKE_CACHE.mkdir(parents=True, exist_ok=True)
    maker = d / "maker"  # where the slim images are baked and pushed from
    for suite in ("bullseye", "trixie"):
        p = subprocess.run([racker_exe, "--root", str(maker), "bake", "-q", "--cache-dir",
                            str(BAKE_CACHE), "--suite", suite, "--name", f"debian:{suite}-slim",
                            "debian"], capture_output=True, text=True, timeout=900)
        if p.returncode != 0 and "mmdebstrap failed" in p.stderr:
            pytest.skip("mmdebstrap could not reach the Debian archive: " + p.stderr[-300:])
        assert p.returncode == 0, p
    reg = Registry(d / "reg").start()
    push_conf = d / "push.conf"
    push_conf.write_text(f'[[registry]]\nlocation = "{reg.host}"\ninsecure = true\n')
    for src, dst in [("debian:bullseye-slim", "debian:bullseye-slim"),
                     ("debian:bullseye-slim", "debian:11-slim"),
                     ("debian:trixie-slim", "debian:trixie-slim")]:
        p = subprocess.run([racker_exe, "--root", str(maker), "--registries-conf",
                            str(push_conf), "push", "-q", src, f"{reg.host}/library/{dst}"],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p
    conf = d / "registries.conf"
    conf.write_text('[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n'
                    f'[[registry.mirror]]\nlocation = "{reg.host}"\ninsecure = true\n')
    store = d / "store"
    store.mkdir()
    os.symlink(BAKE_CACHE, store / "bake-cache")  # postroj's bakes: the suite's cached rootfs
    e = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", RACKER_ROOT=str(store),
             RACKER_REGISTRIES_CONF=str(conf), TERM="dumb")
    e.pop("RACKER_BUILD", None)
    yield e
    reg.stop()
    subprocess.run([racker_exe, "--root", str(store), "rm", "-f", "-a"], capture_output=True)


def sh(env, line, cwd):
    """One README line through bash, as a user would type it (no terminal)."""
    p = subprocess.run(["bash", "-c", line], env=env, cwd=cwd, capture_output=True, text=True,
                       timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    print(f"\n$ {line}\n{p.stdout}{p.stderr[-3000:]}")
    return p


def on_pty(env, line, send=b"", cwd="/"):
    """One README line on a terminal; send is typed once the line's program waits for input
    (it is typed ahead: the terminal keeps it)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(["bash", "-c", line], stdin=slave, stdout=slave, stderr=slave, env=env,
                         cwd=cwd, start_new_session=True)
    os.close(slave)
    try:
        if send:
            os.write(master, send)
        out = read_pty(master, timeout=TIMEOUT)
        rc = p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    # hostnamectl colours its labels and links the OS name (OSC 8) on a terminal
    text = re.sub(r"\x1b\]8;[^\x07\x1b]*(\x07|\x1b\\)|\x1b\[[0-9;]*m", "",
                  out.decode(errors="replace"))
    print(f"\n$ {line}   (on a pty)\n{text[-3000:]}")
    return rc, text


def test_racker_usage_lines(env, tmp_path):
    # Acquire rootfs images.
    p = sh(env, "racker pull debian:bullseye-slim", tmp_path)
    assert p.returncode == 0, p

    # Launch an interactive shell.
    rc, out = on_pty(env, "racker run -it --rm debian:bullseye-slim bash",
                     send=b"echo in-$((6*7)); cat /etc/debian_version; tty; exit 3\n")
    assert rc == 3, out
    assert "in-42" in out and re.search(r"\n11\.\d+", out) and "/dev/pts/" in out, out

    # Launch a single command.
    rc, out = on_pty(env, "racker run -it --rm debian:11-slim hostnamectl")
    assert rc == 0, out
    assert "Operating System: Debian GNU/Linux 11 (bullseye)" in out, out

    # Verbose mode.
    rc, out = on_pty(env, "racker --verbose run -it --rm debian:trixie-slim hostnamectl")
    assert rc == 0, out
    assert "Operating System: Debian GNU/Linux 13 (trixie)" in out, out
    assert re.search(r"boot: \S+ ready in \d+ ms", out), out  # what --verbose adds

    # Use stdin and stdout, with timing.
    p = sh(env, 'time echo "hello world" | racker run -it --rm debian:trixie-slim cat /dev/stdin '
                "> hello", tmp_path)
    assert p.returncode == 0, p
    assert (tmp_path / "hello").read_text() == "hello world\n", p
    assert "real" in p.stderr, p

    ps = sh(env, "racker ps -a -q", tmp_path)
    assert ps.stdout == "", ps  # --rm: nothing left


def test_postroj_usage_lines(env, tmp_path):
    p = sh(env, "postroj list-images", tmp_path)
    assert p.returncode == 0 and "debian-bullseye" in p.stdout, p
    p = sh(env, "postroj pull debian-bullseye", tmp_path)
    assert p.returncode == 0 and "ok     debian-bullseye" in p.stdout, p
    for label in ("debian-bullseye", "debian-bookworm"):
        p = sh(env, f"postroj pkgprobe --image={label} --check-unit=systemd-journald", tmp_path)
        assert p.returncode == 0, p
        assert "unit systemd-journald.service" in p.stdout, p
    p = sh(env, "postroj pkgprobe \\\n    --image=debian-bookworm \\\n"
                f"    --package={WEBFS} \\\n    --check-unit=webfs \\\n"
                "    --check-network=http://localhost:8000", tmp_path)
    if p.returncode != 0 and "package " + WEBFS in p.stderr + p.stdout and \
            ("HTTP" in p.stderr + p.stdout or "connect" in p.stderr + p.stdout):
        pytest.skip("the Debian archive's webfs .deb cannot be downloaded here: " + p.stderr[-300:])
    assert p.returncode == 0, p
    assert "unit webfs.service" in p.stdout and "network http://localhost:8000" in p.stdout, p
