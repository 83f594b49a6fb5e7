"""Fault injection (issue 10): racker pull, racker run and racker run of an OS container are
killed with SIGKILL at moments spread over their whole course (the first 25 ms included); then
racker cleans up by its own means (the run's monitor, rm -f, a pull again). Afterwards nothing
may stay: no mount, cgroup, network namespace, veth, runtime state, container directory,
monitor or container process; no layer marked complete while partial, no corrupt blob; and the
next pull or run works."""
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, wait_until
from racker_ctx import STATE_ROOT, monitor_pids
from registry_util import Dir, File, Image, Layer
from test_boot import IMAGE, booted_inits, racker_cgroups, store  # noqa: F401 (racker_exe: test_run's)
from test_network import host_links, netns_mounts
from test_run import (PATH_ENV, Ctx, _checked, bb_rootfs, images, racker_exe,  # noqa: F401
                      store_mounts)


def host_state():
    """What racker may leave on the host, as sets (compared with a baseline)."""
    return {
        "veth": {n for n in host_links() if n.startswith("rk")},
        "netns": set(netns_mounts()),
        "state": set(os.listdir(STATE_ROOT)) if STATE_ROOT.is_dir() else set(),
        "cgroups": set(racker_cgroups()),
        "monitors": monitor_pids(),
    }


def settled(baseline, ctx_root):
    now = host_state()
    containers = ctx_root / "containers"
    left = {k: sorted(now[k] - baseline[k]) for k in now if now[k] - baseline[k]}
    if containers.is_dir() and os.listdir(containers):
        left["containers"] = os.listdir(containers)
    if store_mounts(ctx_root):
        left["mounts"] = store_mounts(ctx_root)
    return left


def wait_settled(baseline, root, what):
    try:
        wait_until(lambda: not settled(baseline, root), timeout=20, interval=0.05, what=what)
    except AssertionError:
        raise AssertionError(f"{what}: left {settled(baseline, root)}") from None


def kill_points(total_ms, n=20):
    """n moments: every 2 ms over the first 25 ms, the rest spread evenly to total_ms."""
    early = list(range(0, 26, 2))
    rest = n - len(early)
    return early + [25 + (total_ms - 25) * (i + 1) / (rest + 1) for i in range(rest)]


def kill_after(p, ms):
    time.sleep(ms / 1000)
    p.send_signal(signal.SIGKILL)
    p.wait()


@pytest.fixture
def ctx(racker_exe, images, tmp_path):  # noqa: F811
    c = Ctx(racker_exe, tmp_path, images)
    checked = _checked(c, tmp_path)
    yield next(checked)
    c.close()  # its registry
    next(checked, None)  # then the leak check


def test_run_killed_anywhere(ctx):
    """racker run --rm (private network) killed at 20 moments: the monitor removes the
    container once its payload ends; 10 runs without --rm killed the same way are removed by
    rm -f. A run after each works."""
    baseline = host_state()
    t0 = time.monotonic()
    ctx.ok("--rm", ctx.images.bb, "sh", "-c", "sleep 0.2")
    whole = (time.monotonic() - t0) * 1000
    for ms in kill_points(whole):
        p = ctx.popen("run", "--rm", ctx.images.bb, "sh", "-c", "sleep 0.2")
        kill_after(p, ms)
        wait_settled(baseline, ctx.root, f"run --rm killed after {ms:.0f} ms")
        assert ctx.out("--rm", ctx.images.bb, "echo", "ok") == "ok\n"
    for ms in kill_points(whole, 10)[::2] + [whole * 0.6, whole * 0.9]:
        p = ctx.popen("run", ctx.images.bb, "sh", "-c", "sleep 0.2")
        kill_after(p, ms)
        ids = ctx("ps", "-a", "-q").stdout.split()
        for cid in ids:
            r = ctx("rm", "-f", cid)  # the monitor may have removed a half-made one meanwhile
            assert r.returncode == 0 or "no such container" in r.stderr, r
        wait_settled(baseline, ctx.root, f"run killed after {ms:.0f} ms, then rm -f")


def test_pull_killed_anywhere(ctx):
    """racker pull of a 3-layer image killed at 20 moments: the store stays consistent (every
    layer dir complete, every blob hashing to its name) and a pull again completes it."""
    payloads = [os.urandom(3 << 20) for _ in range(3)]
    payload_sha = [hashlib.sha256(p).hexdigest() for p in payloads]
    layers = [Layer([Dir(f"d{i}"), File(f"d{i}/data", payloads[i])]) for i in range(3)]
    img = Image(layers)
    reg = ctx.registry()
    reg.push_image("test/faults", "1", img)
    ctx.insecure_conf(reg)
    ref = f"{reg.host}/test/faults:1"

    def ok(*args):
        r = ctx(*args, timeout=60)
        assert r.returncode == 0, r

    t0 = time.monotonic()
    ok("pull", ref)
    whole = (time.monotonic() - t0) * 1000
    ok("rmi", ref)
    for ms in kill_points(whole):
        p = ctx.popen("pull", ref)
        kill_after(p, ms)
        # every committed blob hashes to its name; a layer dir without done is incomplete (the
        # next pull redoes it), one with done must be the whole layer: checked after the pull
        for b in ctx.blobs():
            data = (ctx.root / "blobs" / "sha256" / b[7:]).read_bytes()
            assert "sha256:" + hashlib.sha256(data).hexdigest() == b, f"corrupt blob {b}"
        done_before = {n for n in ctx.layer_dirs() if (ctx.root / "layers" / n / "done").exists()}
        ok("pull", ref)
        ctx.assert_consistent()
        assert img.blobs <= ctx.blobs()
        assert {c[7:] for c in img.chain_ids} <= ctx.layer_dirs()
        assert ctx.partials() == []
        for i, c in enumerate(img.chain_ids):  # a layer complete at the kill was left as it was
            if c[7:] in done_before:
                data = (ctx.layer_fs(c) / f"d{i}" / "data").read_bytes()
                assert hashlib.sha256(data).hexdigest() == payload_sha[i], f"layer {i} partial"
        ok("rmi", ref)


def test_os_container_run_killed_anywhere(racker_exe, store):  # noqa: F811
    """racker run --rm of an OS container killed at 20 moments of its boot and command: the
    monitor stops the system and removes the container; the next one boots."""
    baseline = host_state()

    def racker(*args):
        return [racker_exe, "--root", str(store), *args]

    t0 = time.monotonic()
    r = subprocess.run(racker("run", "--rm", IMAGE, "true"), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r
    whole = (time.monotonic() - t0) * 1000
    for ms in kill_points(whole):
        p = subprocess.Popen(racker("run", "--rm", IMAGE, "true"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        kill_after(p, ms)
        wait_until(lambda: not booted_inits(), timeout=20, what="no booted init")
        wait_settled(baseline, store, f"OS container run killed after {ms:.0f} ms")
    r = subprocess.run(racker("run", "--rm", IMAGE, "echo", "up"), capture_output=True,
                       text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "up\n"), r


# a package manager that takes its time: the sleep is how the test finds it on the host
SLOW_PM = """#!/bin/sh
mkdir -p /var/log
echo "$(basename "$0") $*" >> /var/log/fake-pm.log
exec sleep 61
"""


def sleeping_pms():
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read() == b"sleep\x0061\x00":
                    found.append(int(pid))
        except (OSError, ValueError):
            pass
    return found


@pytest.fixture
def slow_pm_image(ctx, bb_rootfs):  # noqa: F811
    """An OS image without systemd whose package manager (dnf) takes a minute; pulled."""
    base = Layer.from_dir(bb_rootfs)
    img = Image([base, Layer([File("etc/os-release", b"ID=fake\n"),
                              File("usr/bin/dnf", SLOW_PM.encode(), mode=0o755)])],
                cmd=["sh"], env=[PATH_ENV])
    ctx.images.reg.push_image("test/slow-pm", "1", img)
    ref = f"{ctx.images.reg.host}/test/slow-pm:1"
    assert ctx("pull", ref).returncode == 0
    return ref


def interrupt_provisioning(ctx, p, sig):
    """Sends sig to p once the package manager runs; p's result, and how long it took."""
    try:
        wait_until(lambda: sleeping_pms(), timeout=30, what="the package manager running")
        t0 = time.monotonic()
        p.send_signal(sig)
        r = ctx.wait(p, timeout=20)
        return r, time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()


def assert_nothing_provisioned(ctx, baseline):
    wait_until(lambda: not sleeping_pms(), timeout=10, what="the package manager gone")
    wait_settled(baseline, ctx.root, "interrupted provisioning")
    images = ctx("images")
    assert images.returncode == 0 and "racker.local/provisioned/" not in images.stdout, images


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_provisioning_ends_at_once(ctx, slow_pm_image, sig):
    """Ctrl-C (or SIGTERM) while racker provisions systemd into a slim image: the throwaway
    container's shell, PID 1 of its namespace, ignores the forwarded signal, so racker used to
    wait for the package manager to finish and then carry on. Now it kills the container, exits
    128+N at once and leaves nothing: no container, derived image, process or host state."""
    baseline = host_state()
    r, took = interrupt_provisioning(ctx, ctx.popen("run", "--rm", slow_pm_image, "true"), sig)
    assert r.returncode == 128 + sig and took < 10, (took, r)
    assert "interrupted by signal" in r.stderr, r
    assert_nothing_provisioned(ctx, baseline)


def test_postroj_interrupted_while_provisioning(ctx, slow_pm_image, tmp_path):
    """postroj pkgprobe of a catalog label that needs provisioning, SIGTERM meanwhile: 143
    at once (not 1 as for a failed probe, not after the package manager is done)."""
    postroj = Path(os.environ.get("RACKER_BUILD", REPO / "build")) / "postroj"
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"images": [
        {"label": "slow-pm", "source": {"image": slow_pm_image}, "family": "fedora",
         "package_manager": "dnf"}]}))
    baseline = host_state()
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        p = subprocess.Popen([str(postroj), "--store-root", str(ctx.root), "--registries-conf",
                              str(ctx.conf), "--catalog", str(catalog), "--package-cache",
                              str(tmp_path / "packages"), "pkgprobe", "--image=slow-pm"],
                             stdout=fo, stderr=fe)
    p.out_path, p.err_path = out, err
    r, took = interrupt_provisioning(ctx, p, signal.SIGTERM)
    assert r.returncode == 128 + signal.SIGTERM and took < 10, (took, r)
    assert "interrupted by signal" in r.stderr, r
    assert_nothing_provisioned(ctx, baseline)
