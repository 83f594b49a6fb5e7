"""Shared scaffolding for the tests of the racker binary (pull, push/login, load/save/bake, run,
boot): finding and snapshotting the binary, and RackerCtx, one test's racker with its own
--root, environment and registries.

conftest.py holds the racker-oci side (Racker, Bundle, the leak checks of the runtime tests);
registry_util.py the registry and the image builder used here.
"""

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (REPO, make_busybox_rootfs, processes_mentioning, require_root_and_binary,
                      snapshot_binary)
from registry_util import Registry, missing_tools

# variables that would point racker at the host's store, configuration or credentials
HOST_ENV = ("RACKER_ROOT", "RACKER_REGISTRIES_CONF", "DOCKER_CONFIG", "REGISTRY_AUTH_FILE")


def racker_snapshot(tmp_path_factory, root_reason, registry=False, tls_auth=False):
    """The racker binary under test ($RACKER_BUILD/racker, else <repo>/build/racker), copied
    with snapshot_binary (other builds may relink the original while the suite runs) into a
    directory every uid may traverse. Skips without root (root_reason says what for), without
    the binary, and with registry=True without docker-registry (tls_auth=True: also without
    openssl and htpasswd)."""
    build = os.environ.get("RACKER_BUILD")
    path = Path(build) / "racker" if build else REPO / "build" / "racker"
    require_root_and_binary(path, root_reason, "RACKER_BUILD")
    if registry:
        missing = missing_tools(tls=tls_auth, auth=tls_auth)
        if missing:
            pkgs = "docker-registry openssl apache2-utils" if tls_auth else "docker-registry"
            pytest.skip(f"missing {', '.join(missing)} (apt-get install {pkgs})")
    copy = snapshot_binary(path, tmp_path_factory.mktemp("racker-bin"), "racker")
    os.chmod(copy.parent, 0o755)
    return str(copy)


@pytest.fixture(scope="session")
def bb_rootfs(racker_exe, tmp_path_factory):
    """A busybox root filesystem (make_busybox_rootfs), made once the module's racker_exe
    fixture has not skipped. Import it into the test module to use it."""
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox"))


class RackerResult:
    """Outcome of one racker invocation: argv (without the binary), returncode, stdout_bytes,
    stdout (decoded) and stderr."""

    def __init__(self, argv, returncode, stdout_bytes, stderr):
        self.argv, self.returncode, self.stdout_bytes, self.stderr = (argv, returncode,
                                                                      stdout_bytes, stderr)

    @property
    def stdout(self):
        return self.stdout_bytes.decode(errors="replace")

    def __repr__(self):
        out = self.stdout if len(self.stdout_bytes) < 2000 else f"<{len(self.stdout_bytes)} bytes>"
        return (f"<racker {' '.join(self.argv)}: rc={self.returncode} stdout={out!r} "
                f"stderr={self.stderr!r}>")


class RackerCtx:
    """One test's racker: its own --root (tmp/store unless root is given), an environment
    without HOST_ENV and, with registries_conf=True, its own registries.conf (empty), HOME and
    XDG_RUNTIME_DIR (where credentials are looked up). Output goes to files in tmp, so that
    payloads that inherit it never keep the test waiting for EOF.

    ctx(ARGS) runs `racker ARGS` and returns a RackerResult; ctx.ok(ARGS) also asserts that it
    succeeded. The store-inspection methods look into --root (or the root given)."""

    def __init__(self, binary, tmp, root=None, registries_conf=True, timeout=30):
        self.binary = binary
        self.tmp = Path(tmp)
        self.root = Path(root) if root else self.tmp / "store"
        self.timeout = timeout
        self.services = []  # registries and token services, stopped by close()
        self.procs = []  # every racker started, killed by close() if still running
        self._n = 0
        self.env = {k: v for k, v in os.environ.items() if k not in HOST_ENV}
        self.conf = None
        if registries_conf:
            self.conf = self.tmp / "registries.conf"
            self.conf.write_text("")
            home, self.run_dir = self.tmp / "home", self.tmp / "xdg-run"
            home.mkdir()
            self.run_dir.mkdir(mode=0o700)
            # credentials: $XDG_RUNTIME_DIR/containers/auth.json, then ~/.docker/config.json
            self.env.update(HOME=str(home), XDG_RUNTIME_DIR=str(self.run_dir))

    # registries

    def registry(self, name=None, **kw):
        """A started Registry (registry_util) under tmp, stopped by close(); skips when the
        tools it needs are missing."""
        missing = missing_tools(tls=kw.get("tls", False), auth=bool(kw.get("auth")))
        if missing:
            pytest.skip(f"missing {', '.join(missing)}")
        r = Registry(self.tmp / (name or f"registry{len(self.services)}"), **kw)
        self.services.append(r)
        return r.start()

    def insecure_conf(self, *regs, extra=""):
        """registries.conf: regs are plain HTTP (insecure), then extra."""
        self.conf.write_text("".join(f'[[registry]]\nlocation = "{r.host}"\ninsecure = true\n'
                                     for r in regs) + extra)

    # running racker

    def argv(self, args, root=None, globals_=()):
        conf = ["--registries-conf", str(self.conf)] if self.conf else []
        return ([self.binary, "--root", str(root or self.root), *conf, *map(str, globals_)]
                + [str(a) for a in args])

    def popen(self, *args, root=None, globals_=(), stdin=subprocess.DEVNULL, env=None):
        """Starts racker; wait(p) or result(p) once it has finished."""
        self._n += 1
        out, err = self.tmp / f"out.{self._n}", self.tmp / f"err.{self._n}"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            p = subprocess.Popen(self.argv(args, root, globals_), stdin=stdin, stdout=fo,
                                 stderr=fe, env=dict(self.env, **(env or {})))
        p.out_path, p.err_path = out, err
        self.procs.append(p)
        return p

    def result(self, p):
        return RackerResult([str(a) for a in p.args[1:]], p.returncode, p.out_path.read_bytes(),
                            p.err_path.read_text(errors="replace"))

    def wait(self, p, timeout=None, input=None):
        """p's result once it has finished (after writing input, str or bytes, to its stdin);
        kills it and fails after timeout seconds."""
        timeout = timeout or self.timeout
        try:
            if input is None:
                p.wait(timeout=timeout)
            else:
                p.communicate(input.encode() if isinstance(input, str) else input,
                              timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise AssertionError(f"racker did not finish within {timeout}s: {self.result(p)}")
        return self.result(p)

    def __call__(self, *args, root=None, globals_=(), input=None, env=None, timeout=None):
        stdin = subprocess.DEVNULL if input is None else subprocess.PIPE
        p = self.popen(*args, root=root, globals_=globals_, stdin=stdin, env=env)
        return self.wait(p, timeout, input)

    def ok(self, *args, **kw):
        r = self(*args, **kw)
        assert r.returncode == 0, r
        return r

    def close(self):
        """Kills the rackers still running and stops the services."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for s in self.services:
            s.stop()

    # the store

    def images(self, root=None):
        return json.loads(self.ok("images", "--format", "json", root=root).stdout)

    def image_named(self, name, root=None):
        hits = [i for i in self.images(root) if name in i["Names"]]
        assert len(hits) == 1, (name, self.images(root))
        return hits[0]

    def inspect(self, name, root=None):
        return json.loads(self.ok("image", "inspect", name, root=root).stdout)[0]

    def blobs(self, root=None):
        d = Path(root or self.root) / "blobs" / "sha256"
        return {"sha256:" + n for n in os.listdir(d)} if d.exists() else set()

    def partials(self, root=None):
        d = Path(root or self.root) / "ingest"
        return sorted(n for n in os.listdir(d) if n.endswith(".partial")) if d.exists() else []

    def layer_entries(self, root=None):
        d = Path(root or self.root) / "layers"
        return sorted(os.listdir(d)) if d.exists() else []

    def layer_dirs(self, root=None):
        d = Path(root or self.root) / "layers"
        return {n for n in self.layer_entries(root) if (d / n).is_dir()}

    def layer_fs(self, chain, root=None):
        return Path(root or self.root) / "layers" / chain.split(":", 1)[1] / "fs"

    def assert_consistent(self, root=None):
        """Every layer dir is complete (has done), every blob file hashes to its name."""
        base = Path(root or self.root)
        for n in self.layer_dirs(root):
            assert (base / "layers" / n / "done").is_file(), f"layer dir {n} without done"
        for b in self.blobs(root):
            data = (base / "blobs" / "sha256" / b[7:]).read_bytes()
            assert "sha256:" + hashlib.sha256(data).hexdigest() == b, f"corrupt blob {b}"


def closed_after_test(ctx):
    """The body of a ctx fixture: yields ctx, then close()s it and fails the test if a process
    that mentions ctx.tmp is left (after killing it)."""
    yield ctx
    ctx.close()
    time.sleep(0.01)
    left = processes_mentioning(str(ctx.tmp))
    if left:
        for pid, _ in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pytest.fail(f"processes left after the test: {left}", pytrace=False)


STATE_ROOT = Path("/run/racker")  # the runtime's state (not configurable through racker)
NAME_ANNOTATION = "org.racker.container.name"


def state_entries_for(*keys):
    """racker's runtime state entries (keyed by container id) that belong to any of keys: a
    container name (the spec's name annotation) or a part of a container id."""
    if not STATE_ROOT.is_dir():
        return []
    found = []
    for n in os.listdir(STATE_ROOT):
        try:
            with open(STATE_ROOT / n / "state.json") as f:
                name = json.load(f).get("annotations", {}).get(NAME_ANNOTATION, "")
        except (OSError, ValueError):
            name = ""
        if any(k and (k in n or k == name) for k in keys):
            found.append(n)
    return sorted(found)


def monitor_pids(cid=None):
    """racker container monitor processes (of container cid, or all)."""
    out = set()
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"container" in argv and b"monitor" in argv and (cid is None or cid.encode() in argv):
            out.add(int(pid))
    return out
