"""racker ps, logs, stop, kill, rm, inspect and run -d, on test_run.py's registry and stores.

Every test removes its containers; the teardown (test_run's leak check, plus the named
containers' runtime state) finds nothing left: no mount mentioning the store, no cgroup, no
/run/racker entry, no racker process.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import wait_until
from racker_ctx import monitor_pids
from test_run import (STATE_ROOT, Ctx, _checked, bb_rootfs, cgroup_dirs_for,  # noqa: F401
                      images, racker_exe, state_entries_for, store_mounts, unique)


@pytest.fixture
def ctx(racker_exe, images, tmp_path):  # noqa: F811
    c = Ctx(racker_exe, tmp_path, images)
    c.names = []
    yield from _checked(c, tmp_path)
    left = state_entries_for(*c.names)
    assert left == [], f"runtime state left: {left}"


def name(ctx, prefix):
    n = unique(prefix)
    ctx.names.append(n)
    return n


def ok(ctx, *args, **kw):
    r = ctx(*args, **kw)
    assert r.returncode == 0, r
    return r


def detach(ctx, n, *cmd):
    r = ok(ctx, "run", "-d", "--name", n, ctx.images.bb, *cmd)
    cid = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid), r
    return cid


def detach_trapping(ctx, prefix, sig, action):
    """A detached sh, named after prefix, that runs action on sig and idles until then, once it
    has had time to set its trap: (name, id)."""
    n = name(ctx, prefix)
    cid = detach(ctx, n, "sh", "-c", f"trap '{action}' {sig}; while :; do sleep 0.1; done")
    time.sleep(0.3)
    return n, cid


def ps_json(ctx, *flags):
    return json.loads(ok(ctx, "ps", "--format", "json", *flags).stdout)


def status_of(ctx, n):
    return next((c["status"] for c in ps_json(ctx, "-a") if c["name"] == n), None)


def gone(ctx, cid, n):
    assert cid not in ctx.container_ids()
    assert store_mounts(ctx.root) == []
    assert cgroup_dirs_for(cid) == []
    assert state_entries_for(n) == []


def test_rm_happens_after_racker_run_is_killed(ctx):
    """kill -9 of `racker run --rm`: the payload runs on (as under docker when the client goes),
    and when it ends the container is removed all the same (racker's monitor); no monitor
    stays behind."""
    n = name(ctx, "rm-killed")
    p = ctx.popen("run", "--rm", "--name", n, ctx.images.bb, "sleep", "3")
    wait_until(lambda: status_of(ctx, n) == "Up", timeout=10, what="the container")
    cid = ctx.container_ids()[0]
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert status_of(ctx, n) == "Up"
    # (the run's watcher becomes `racker container monitor` once racker is gone)
    wait_until(lambda: monitor_pids(cid), timeout=5, what="the monitor proper")
    wait_until(lambda: ctx.container_ids() == [], timeout=20, what="the container removed")
    gone(ctx, cid, n)
    wait_until(lambda: not monitor_pids(cid), timeout=5, what="the monitor gone")


def watchers_of(pid):
    """racker's monitor watchers: its children named racker-monitor."""
    found = []
    for c in os.listdir("/proc"):
        try:
            with open(f"/proc/{c}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if comm == "racker-monitor" and ppid == pid:
            found.append(int(c))
    return found


def test_monitor_watcher_holds_none_of_rackers_files(ctx):
    """While racker run waits for its payload, its monitor is a watcher that shares racker's
    memory: it must hold none of racker's descriptors (the image lease's lock, the store's
    directories), only /dev/null, its pipe and racker's pidfd; when racker is done it goes."""
    n = name(ctx, "watcher")
    p = ctx.popen("run", "--rm", "--name", n, ctx.images.bb, "sleep", "2")
    wait_until(lambda: status_of(ctx, n) == "Up", timeout=10, what="the container")
    cid = ctx.container_ids()[0]
    w = watchers_of(p.pid)
    assert len(w) == 1, w
    fds = {int(fd): os.readlink(f"/proc/{w[0]}/fd/{fd}") for fd in os.listdir(f"/proc/{w[0]}/fd")}
    assert [fds.get(i) for i in range(3)] == ["/dev/null"] * 3, fds
    rest = sorted(t.split(":")[0] for fd, t in fds.items() if fd > 2)
    assert rest == ["anon_inode", "pipe"], fds
    assert p.wait(timeout=20) == 0
    assert not os.path.exists(f"/proc/{w[0]}") or watchers_of(p.pid) == []
    assert not monitor_pids(cid)  # it left without starting the monitor proper


def test_detached_rm_container_goes_when_it_ends(ctx):
    """racker run -d --rm, as docker's: the container is removed once its payload ends, by
    itself or through racker stop (the monitor takes it over from racker, then leaves); without
    --rm a detached container stays, exited."""
    n = name(ctx, "drm-ends")
    cid = ok(ctx, "run", "-d", "--rm", "--name", n, ctx.images.bb, "sleep", "1").stdout.strip()
    assert status_of(ctx, n) == "Up"
    # (the run's watcher becomes `racker container monitor` once racker is gone)
    wait_until(lambda: monitor_pids(cid), timeout=5, what="the monitor proper")
    wait_until(lambda: cid not in ctx.container_ids(), timeout=20, what="the container removed")
    gone(ctx, cid, n)
    wait_until(lambda: not monitor_pids(cid), timeout=5, what="the monitor gone")
    n = name(ctx, "drm-stopped")
    cid = ok(ctx, "run", "-d", "--rm", "--name", n, ctx.images.bb, "sleep", "60").stdout.strip()
    ok(ctx, "stop", "-t", "1", n)
    wait_until(lambda: cid not in ctx.container_ids(), timeout=20, what="the container removed")
    gone(ctx, cid, n)
    wait_until(lambda: not monitor_pids(cid), timeout=5, what="the monitor gone")
    n = name(ctx, "d-kept")
    cid = detach(ctx, n, "true")
    assert not monitor_pids(cid)
    wait_until(lambda: status_of(ctx, n).startswith("Exited"), timeout=10, what="exited")
    time.sleep(0.5)
    assert status_of(ctx, n).startswith("Exited")
    ok(ctx, "rm", n)


def test_start_attached_killed_releases_after_the_end(ctx):
    """kill -9 of `racker start -a`: the container runs on, and when it ends its monitor
    releases its mount and runtime state; the container stays, exited, and starts again."""
    n = name(ctx, "start-killed")
    ok(ctx, "create", "--name", n, ctx.images.bb, "sleep", "2")
    p = ctx.popen("start", "-a", n)
    wait_until(lambda: status_of(ctx, n) == "Up", timeout=10, what="the container")
    cid = ctx.container_ids()[0]
    p.send_signal(signal.SIGKILL)
    p.wait()
    # (the run's watcher becomes `racker container monitor` once racker is gone)
    wait_until(lambda: monitor_pids(cid), timeout=5, what="the monitor proper")
    wait_until(lambda: status_of(ctx, n).startswith("Exited") and not store_mounts(ctx.root)
               and not state_entries_for(n), timeout=20, what="released")
    wait_until(lambda: not monitor_pids(cid), timeout=5, what="the monitor gone")
    assert cgroup_dirs_for(cid) == []
    r = ctx("start", "-a", n)
    assert r.returncode == 0, r
    ok(ctx, "rm", n)


@pytest.mark.parametrize("delay_ms", [0, 2, 5, 10, 15, 20, 25, 35, 50, 80])
def test_kill_racker_run_early_leaves_nothing(ctx, delay_ms):
    """kill -9 of `racker run --rm` at an early moment (while it mounts, makes the network,
    creates the container): nothing stays (mount, cgroup, state, netns, directory), and the
    same name runs again."""
    n = name(ctx, "early")
    p = ctx.popen("run", "--rm", "--name", n, ctx.images.bb, "true")
    time.sleep(delay_ms / 1000)
    p.send_signal(signal.SIGKILL)
    p.wait()
    wait_until(lambda: ctx.container_ids() == [] and state_entries_for(n) == []
               and store_mounts(ctx.root) == [], timeout=20, what="everything cleaned up")
    r = ctx("run", "--rm", "--name", n, ctx.images.bb, "echo", "again")
    assert (r.returncode, r.stdout) == (0, "again\n"), r


def test_run_races_rmi(ctx):
    """racker run and racker rmi of its image at the same moment, 15 times: the run either
    works or fails with one line about the image (never a broken rootfs or a raw mount
    error), and the store stays consistent."""
    bb = ctx.images.bb
    for _ in range(15):
        run = ctx.popen("run", "--rm", bb, "true")
        ctx("rmi", bb)
        r = ctx.wait(run)
        assert r.returncode == 0 or (r.returncode == 125 and r.stderr.count("\n") == 1
                                     and bb in r.stderr), r
        if ctx("images", "-q").stdout.strip() == "":
            assert ctx("pull", bb).returncode == 0
        ctx.assert_consistent()
    assert ctx.container_ids() == []


def test_same_name_in_two_stores(ctx, racker_exe, images, tmp_path):  # noqa: F811
    """Two stores (--root) each have their own names: the runtime's state is keyed by container
    id, so a name running in one store is free in the other."""
    n = name(ctx, "tworoots")
    cid = detach(ctx, n, "sleep", "100")
    (tmp_path / "other").mkdir()
    other = Ctx(racker_exe, tmp_path / "other", images)
    try:
        r = other("run", "--rm", "--name", n, images.bb, "echo", "second")
        assert (r.returncode, r.stdout) == (0, "second\n"), r
        r = other("run", "-d", "--name", n, images.bb, "sleep", "100")
        assert r.returncode == 0, r
        assert [c["name"] for c in ps_json(other)] == [n]
        assert [c["id"][:12] for c in ps_json(ctx)] == [cid[:12]]
        ok(other, "rm", "-f", n)
        assert ps_json(other, "-a") == []
        assert status_of(ctx, n) == "Up"
    finally:
        other("rm", "-f", n)
        shutil.rmtree(other.store_dir, ignore_errors=True)
    ok(ctx, "rm", "-f", n)
    gone(ctx, cid, n)


def test_detach_logs_and_follow(ctx):
    n = name(ctx, "logs")
    cid = detach(ctx, n, "sh", "-c", "echo out; echo err >&2; sleep 1; echo late")
    assert (ctx.root / "containers" / cid / "log").exists()
    wait_until(lambda: "err" in ok(ctx, "logs", n).stdout, what="log output")
    first = ok(ctx, "logs", cid[:8]).stdout
    assert first.startswith("out\nerr\n") or first.startswith("err\nout\n"), first
    t0 = time.monotonic()
    r = ok(ctx, "logs", "-f", n)
    assert sorted(r.stdout.splitlines()) == ["err", "late", "out"], r
    assert r.stdout.endswith("late\n"), r
    assert time.monotonic() - t0 < 10
    assert status_of(ctx, n).startswith("Exited"), ps_json(ctx, "-a")
    ok(ctx, "rm", n)
    gone(ctx, cid, n)


def test_ps(ctx):
    running = name(ctx, "ps-up")
    cid = detach(ctx, running, "sleep", "1000")
    done = name(ctx, "ps-done")
    r = ctx("run", "--name", done, ctx.images.bb, "sh", "-c", "exit 3")
    assert r.returncode == 3, r
    ids = ctx.container_ids()
    done_id = next(i for i in ids if i != cid)
    # the finished foreground run kept its dir, unmounted, and its exit code
    assert json.loads((ctx.root / "containers" / done_id / "meta.json").read_text())[
        "exit_code"] == 3
    table = ok(ctx, "ps").stdout.splitlines()
    assert table[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS",
                                "PORTS", "NAMES"], table
    assert len(table) == 2 and table[1].startswith(cid[:12] + " "), table
    assert ctx.images.bb in table[1] and " Up " in table[1] and table[1].endswith(running)
    assert '"sleep 1000"' in table[1], table
    table = ok(ctx, "ps", "-a").stdout.splitlines()
    assert len(table) == 3, table
    line = next(l for l in table if l.endswith(done))
    assert "Exited (3)" in line and line.startswith(done_id[:12]), table
    assert ok(ctx, "ps", "-q").stdout.split() == [cid[:12]]
    assert sorted(ok(ctx, "ps", "-a", "-q").stdout.split()) == sorted(i[:12] for i in ids)
    js = ps_json(ctx)
    assert [(c["id"], c["name"], c["state"], c["status"]) for c in js] == [
        (cid, running, "running", "Up")], js
    assert {c["name"]: c["status"] for c in ps_json(ctx, "-a")} == {
        running: "Up", done: "Exited (3)"}
    info = json.loads(ok(ctx, "inspect", running).stdout)
    assert len(info) == 1 and info[0]["id"] == cid and info[0]["name"] == running
    assert info[0]["state"]["status"] == "running" and info[0]["pid"] > 0
    assert info[0]["image"] == ctx.images.bb
    assert info[0]["config"] == str(ctx.root / "containers" / cid / "config.json")
    assert ok(ctx, "rm", "-f", running, done).stdout.split() == [running, done]
    gone(ctx, cid, running)
    gone(ctx, done_id, done)
    assert ok(ctx, "ps", "-a", "-q").stdout == ""


def test_stop_falls_back_to_sigkill(ctx):
    n = name(ctx, "stop")
    cid = detach(ctx, n, "sleep", "1000")
    t0 = time.monotonic()
    r = ok(ctx, "stop", "-t", "1", n)
    took = time.monotonic() - t0
    assert r.stdout == f"{n}\n", r
    assert 0.9 < took < 8, took
    assert status_of(ctx, n).startswith("Exited"), ps_json(ctx, "-a")
    assert ps_json(ctx) == []
    # stopping a stopped container is fine
    ok(ctx, "stop", n)
    ok(ctx, "rm", n)
    gone(ctx, cid, n)


def test_stop_graceful(ctx):
    n, cid = detach_trapping(ctx, "stop-trap", "TERM", "echo bye; exit 0")
    t0 = time.monotonic()
    ok(ctx, "stop", n)
    assert time.monotonic() - t0 < 5
    assert "bye" in ok(ctx, "logs", n).stdout
    ok(ctx, "rm", n)
    gone(ctx, cid, n)


def test_kill_signal(ctx):
    n, cid = detach_trapping(ctx, "kill", "USR1", "echo got-usr1; exit 0")
    assert ok(ctx, "kill", "-s", "USR1", n).stdout == f"{n}\n"
    wait_until(lambda: "got-usr1" in ok(ctx, "logs", n).stdout, what="USR1 handled")
    wait_until(lambda: status_of(ctx, n).startswith("Exited"), what="container exit")
    r = ctx("kill", n)
    assert r.returncode == 1 and "not running" in r.stderr, r
    ok(ctx, "rm", n)
    gone(ctx, cid, n)


def test_rm_refuses_running(ctx):
    n = name(ctx, "rm")
    cid = detach(ctx, n, "sleep", "1000")
    r = ctx("rm", n)
    assert r.returncode == 1 and "running" in r.stderr, r
    assert status_of(ctx, n) == "Up"
    assert ok(ctx, "rm", "-f", cid[:10]).stdout == f"{cid[:10]}\n"
    gone(ctx, cid, n)


def test_rm_after_racker_killed(ctx):
    n = name(ctx, "killed")
    p = ctx.popen("run", "--name", n, ctx.images.bb, "sleep", "1000")
    wait_until(lambda: status_of(ctx, n) == "Up", timeout=10, what="the container")
    p.send_signal(signal.SIGKILL)
    p.wait()
    cid = ctx.container_ids()[0]
    assert store_mounts(ctx.root) != []
    assert state_entries_for(n) == [cid]  # the runtime knows it by its id
    ok(ctx, "rm", "-f", n)
    gone(ctx, cid, n)
    assert ctx.container_ids() == []


def test_no_such_container(ctx):
    for verb in (["rm"], ["rm", "-f"], ["stop"], ["kill"], ["logs"], ["inspect"]):
        r = ctx(*verb, "no-such-thing")
        assert r.returncode == 1, r
        assert "no such container" in r.stderr, r


def test_create_start_attach_and_restart(ctx):
    """create makes the container (listed as Created, nothing mounted or running), start -a
    runs it with its output and exit status, a second start runs it again on the same upper
    dir; the name stays taken until rm."""
    n = name(ctx, "created")
    r = ok(ctx, "create", "--name", n, "-e", "X=1", ctx.images.bb, "sh", "-c",
           "echo run $X; cat /count 2>/dev/null; echo again >> /count; exit 3")
    cid = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid), r
    assert status_of(ctx, n) == "Created", ps_json(ctx, "-a")
    assert n not in [c["name"] for c in ps_json(ctx)], "a created container is not running"
    assert state_entries_for(n) == []
    r = ctx("start", "-a", n)
    assert (r.returncode, r.stdout) == (3, "run 1\n"), r
    assert status_of(ctx, n) == "Exited (3)"
    r = ctx("start", "-a", cid[:10])
    assert (r.returncode, r.stdout) == (3, "run 1\nagain\n"), r
    r = ctx("run", "--name", n, ctx.images.bb, "true")
    assert r.returncode == 125 and f'container name "{n}" is already in use' in r.stderr, r
    r = ctx("create", "--name", n, ctx.images.bb, "true")
    assert r.returncode == 125 and "already in use" in r.stderr, r
    ok(ctx, "rm", n)
    gone(ctx, cid, n)


def test_start_detached_then_logs_and_bad_input(ctx):
    n = name(ctx, "startd")
    cid = ok(ctx, "create", "--name", n, ctx.images.bb, "sh", "-c", "echo hello; sleep 30"
             ).stdout.strip()
    r = ok(ctx, "start", n)
    assert r.stdout == n + "\n", r
    wait_until(lambda: status_of(ctx, n) == "Up", what="started container running")
    wait_until(lambda: ok(ctx, "logs", n).stdout == "hello\n", what="log output")
    ok(ctx, "start", n)  # already running: nothing to do, as docker
    ok(ctx, "rm", "-f", n)
    gone(ctx, cid, n)
    r = ctx("start", "no-such-container-xyz")
    assert r.returncode != 0 and "no such container: no-such-container-xyz" in r.stderr, r
    r = ctx("create", "--rm", ctx.images.bb, "true")
    assert r.returncode == 125 and "-d and --rm are options of racker run" in r.stderr, r
    r = ctx("create")
    assert r.returncode == 125 and "create: missing IMAGE" in r.stderr, r


def test_rmi_refuses_an_image_a_container_uses(ctx):
    """rmi of the image under a container's rootfs used to succeed, and the container then lost
    its layers ("executable file not found"; a stopped one could not start). As docker: refused
    while a container (running or stopped) uses it, with the container named."""
    n = name(ctx, "rmi")
    cid = detach(ctx, n, "sleep", "600")
    stopped = name(ctx, "rmi-stopped")
    ok(ctx, "create", "--name", stopped, ctx.images.bb, "true")
    image_id = json.loads(ok(ctx, "image", "inspect", ctx.images.bb).stdout)[0]["Id"]
    for ref in (ctx.images.bb, image_id[7:19]):
        r = ctx("rmi", ref)
        assert r.returncode == 1, r
        assert f"unable to remove image {ref}: container " in r.stderr, r
        assert "remove the container first" in r.stderr, r
    ok(ctx, "image", "prune")
    assert ok(ctx, "exec", n, "ls", "/bin/sh").stdout == "/bin/sh\n"
    ok(ctx, "rm", "-f", n)
    assert cid not in ctx.container_ids()
    assert not [m for m in store_mounts(ctx.root) if cid in m]
    r = ctx("rmi", ctx.images.bb)
    assert r.returncode == 1 and f"container {stopped} " in r.stderr, r
    ok(ctx, "start", "-a", stopped)
    ok(ctx, "rm", stopped)
    ok(ctx, "rmi", ctx.images.bb)
    assert ctx("image", "inspect", ctx.images.bb).returncode != 0
    assert store_mounts(ctx.root) == []
