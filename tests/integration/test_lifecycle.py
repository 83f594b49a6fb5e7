"""The container lifecycle through racker-oci's runc-style command line."""

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from conftest import cgroup_dirs_of, drop_namespace, pid_alive, require, wait_until

SLEEP = ("sleep", "30")


def started(racker, make_bundle, args=SLEEP, edit=None):
    """A running container: create + start. Returns (id, bundle, create result)."""
    b = make_bundle(args, edit)
    cid, r = racker.create(b)
    racker.ok("start", cid)
    return cid, b, r


def stopped(racker, make_bundle):
    """The id of a container that was started and whose payload (true) has exited."""
    cid, _, _ = started(racker, make_bundle, ["true"])
    racker.wait_status(cid, "stopped")
    return cid


# --- run -------------------------------------------------------------------------------------


def test_run_true_exits_0(racker, make_bundle):
    b = make_bundle(["/bin/true"])
    r = racker.run(b)
    assert r.returncode == 0, r
    assert r.stderr == ""
    assert racker.list_ids() == []  # run deletes the container when it ends


def test_run_propagates_exit_status(racker, make_bundle):
    b = make_bundle(["sh", "-c", "exit 42"])
    r = racker.run(b)
    assert r.returncode == 42, r
    assert racker.list_ids() == []


def test_run_payload_output(racker, make_bundle):
    b = make_bundle(["sh", "-c", "echo out; echo err >&2"])
    r = racker.run(b)
    assert r.returncode == 0, r
    assert r.stdout == "out\n"
    assert r.stderr == "err\n"


def test_run_payload_killed_by_signal_gives_128_plus_n(racker, make_bundle):
    # Without a pid namespace the payload is not an init, so its own signal kills it.
    b = make_bundle(["sh", "-c", "kill -SEGV $$; sleep 5"],
                    edit=lambda c: drop_namespace(c, "pid"))
    r = racker.run(b)
    assert r.returncode == 128 + signal.SIGSEGV, r


def test_run_killed_from_racker_kill_gives_128_plus_n(racker, make_bundle):
    b = make_bundle(SLEEP, edit=lambda c: drop_namespace(c, "pid"))
    cid = racker.new_id()
    p, out, err = racker.popen("run", "--bundle", b.path, cid)
    try:
        racker.wait_status(cid, "running")
        racker.ok("kill", cid, "USR1")
        assert p.wait(timeout=5) == 128 + signal.SIGUSR1
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert racker.list_ids() == []


def test_run_detach(racker, make_bundle):
    b = make_bundle(SLEEP)
    cid = racker.new_id()
    t0 = time.monotonic()
    r = racker("run", "--detach", "--bundle", b.path, cid)
    assert r.returncode == 0, r
    assert time.monotonic() - t0 < 5
    st = racker.state(cid)
    assert st["status"] == "running"
    assert pid_alive(st["pid"])
    racker.ok("delete", "--force", cid)
    assert racker.list_ids() == []


# --- create / start / state ------------------------------------------------------------------


def test_create_state_created_with_pid_file(racker, make_bundle, tmp_path):
    b = make_bundle(SLEEP)
    pid_file = tmp_path / "pid"
    cid, _ = racker.create(b, None, "--pid-file", pid_file)
    st = racker.state(cid)
    assert st["id"] == cid
    assert st["status"] == "created"
    assert st["bundle"] == str(b.path)
    assert st["ociVersion"].startswith("1.")
    pid = st["pid"]
    assert isinstance(pid, int) and pid > 0
    assert pid_alive(pid)
    assert pid_file.read_text() == str(pid)  # exactly the pid: no trailing newline
    racker.ok("delete", "--force", cid)


def test_start_makes_it_running(racker, make_bundle):
    b = make_bundle(SLEEP)
    cid, _ = racker.create(b)
    pid = racker.state(cid)["pid"]
    r = racker("start", cid)
    assert r.returncode == 0, r
    st = racker.state(cid)
    assert st["status"] == "running"
    assert st["pid"] == pid
    assert open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0] == b"sleep"


def test_start_twice_fails(racker, make_bundle):
    cid, _, _ = started(racker, make_bundle)
    r = racker("start", cid)
    assert r.returncode == 1
    assert r.stderr == f'racker-oci: cannot start container "{cid}": it is running, not created\n'


def test_payload_output_of_created_container_after_start(racker, make_bundle):
    b = make_bundle(["sh", "-c", "echo hello from $(hostname)"])
    cid, r = racker.create(b)
    racker.ok("start", cid)
    racker.wait_status(cid, "stopped")
    assert r.stdout == "hello from racker\n"
    racker.ok("delete", cid)


def test_state_stopped_after_payload_exits(racker, make_bundle):
    cid, _, _ = started(racker, make_bundle, ["sh", "-c", "exit 3"])
    racker.wait_status(cid, "stopped")
    st = racker.state(cid)
    assert st["status"] == "stopped"
    assert "pid" not in st or st["pid"] == 0
    r = racker("delete", cid)  # no --force needed
    assert r.returncode == 0, r
    assert racker.list_ids() == []


def test_state_stopped_after_outside_kill(racker, make_bundle):
    cid, _, _ = started(racker, make_bundle)
    pid = racker.state(cid)["pid"]
    os.kill(pid, signal.SIGKILL)  # plain kill -9 from the host
    racker.wait_status(cid, "stopped")
    racker.ok("delete", cid)
    assert racker.list_ids() == []


# --- kill --------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig,num", [("TERM", 15), ("SIGTERM", 15), ("SIGKILL", 9), ("KILL", 9),
                                     ("9", 9), ("15", 15), ("sigusr1", 10), ("HUP", 1)])
def test_kill_signal_names_and_numbers(racker, make_bundle, sig, num):
    # No pid namespace: the payload is no init, so default dispositions apply.
    b = make_bundle(SLEEP, edit=lambda c: drop_namespace(c, "pid"))
    cid = racker.new_id()
    p, out, err = racker.popen("run", "--bundle", b.path, cid)
    try:
        racker.wait_status(cid, "running")
        r = racker("kill", cid, sig)
        assert r.returncode == 0, r
        assert p.wait(timeout=5) == 128 + num
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_kill_default_is_term(racker, make_bundle):
    b = make_bundle(["sh", "-c", "trap 'echo got-term; exit 0' TERM; echo ready; "
                     "while :; do sleep 0.05; done"])
    cid, r = racker.create(b)
    racker.ok("start", cid)
    wait_until(lambda: "ready" in r.stdout, what="the trap to be installed")
    racker.ok("kill", cid)
    racker.wait_status(cid, "stopped")
    assert "got-term" in r.stdout


def test_kill_pid_ns_init_with_sigkill(racker, make_bundle):
    cid, _, _ = started(racker, make_bundle)
    racker.ok("kill", cid, "KILL")
    racker.wait_status(cid, "stopped")


def test_kill_all(racker, make_bundle):
    cid, _, _ = started(racker, make_bundle, ["sh", "-c", "sleep 30 & sleep 30 & wait"])
    wait_until(lambda: len(json.loads(racker.ok("ps", "--format", "json", cid).stdout)) == 3,
               what="three processes")
    pids = json.loads(racker.ok("ps", "--format", "json", cid).stdout)
    racker.ok("kill", "--all", cid, "KILL")
    racker.wait_status(cid, "stopped")
    wait_until(lambda: not any(pid_alive(p) for p in pids), what="every process to die")


def test_run_without_pid_namespace_leaves_no_orphans(racker, make_bundle):
    # the payload's background child outlives it; `run` must not leave it behind (the
    # teardown's leak check finds it by the marker in its environment)
    b = make_bundle(["sh", "-c", "sleep 30 & echo $!"], edit=lambda c: drop_namespace(c, "pid"))
    r = racker.run(b)
    assert r.returncode == 0, r
    child = int(r.stdout)
    wait_until(lambda: not pid_alive(child), what="the orphaned sleep to be killed")


def test_kill_stopped_container_fails(racker, make_bundle):
    cid = stopped(racker, make_bundle)
    r = racker("kill", cid, "KILL")
    assert r.returncode == 1
    assert r.stderr == f'racker-oci: container "{cid}" is not running\n'


# --- delete ----------------------------------------------------------------------------------


def test_delete_running_needs_force(racker, make_bundle):
    cid, _, _ = started(racker, make_bundle)
    pid = racker.state(cid)["pid"]
    r = racker("delete", cid)
    assert r.returncode == 1
    assert r.stderr == (f'racker-oci: cannot delete container "{cid}" that is not stopped: '
                        "running\n")
    assert racker.status(cid) == "running"
    r = racker("delete", "--force", cid)
    assert r.returncode == 0, r
    assert racker.list_ids() == []
    wait_until(lambda: not pid_alive(pid), what="container init to die")


def test_delete_created_needs_force(racker, make_bundle):
    b = make_bundle(SLEEP)
    cid, _ = racker.create(b)
    r = racker("delete", cid)
    assert r.returncode == 1
    assert r.stderr == (f'racker-oci: cannot delete container "{cid}" that is not stopped: '
                        "created\n")
    assert racker.status(cid) == "created"
    racker.ok("delete", "-f", cid)
    assert racker.list_ids() == []


def test_delete_several(racker, make_bundle):
    ids = [racker.create(make_bundle(SLEEP))[0] for _ in range(2)]
    r = racker("delete", "--force", *ids)
    assert r.returncode == 0, r
    assert racker.list_ids() == []


@pytest.mark.parametrize("verb", ["state", "start", "kill", "delete", "pause", "resume", "ps"])
def test_unknown_id(racker, verb):
    r = racker(verb, "no-such-container")
    assert r.returncode == 1
    assert r.stderr == 'racker-oci: container "no-such-container" does not exist\n'


def test_unknown_id_exec(racker):
    r = racker("exec", "no-such-container", "true")
    assert r.returncode == 1
    assert 'container "no-such-container" does not exist' in r.stderr


# --- list / ps -------------------------------------------------------------------------------


def test_list_table_json_quiet(racker, make_bundle):
    b1, b2 = make_bundle(SLEEP), make_bundle(SLEEP)
    c1, _ = racker.create(b1, racker.new_id("a"))
    c2, _ = racker.create(b2, racker.new_id("b"))
    racker.ok("start", c2)
    pid1, pid2 = racker.state(c1)["pid"], racker.state(c2)["pid"]

    quiet = racker.ok("list", "-q").stdout
    assert quiet.splitlines() == sorted([c1, c2])

    table = racker.ok("list").stdout.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows[c1][1:4] == [str(pid1), "created", str(b1.path)]
    assert rows[c2][1:4] == [str(pid2), "running", str(b2.path)]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", rows[c1][4])
    assert rows[c1][5] == "root"

    js = json.loads(racker.ok("list", "--format", "json").stdout)
    by_id = {c["id"]: c for c in js}
    assert set(by_id) == {c1, c2}
    assert by_id[c1]["status"] == "created" and by_id[c1]["pid"] == pid1
    assert by_id[c2]["status"] == "running" and by_id[c2]["pid"] == pid2
    assert by_id[c1]["bundle"] == str(b1.path)
    assert by_id[c1]["rootfs"] == str(b1.rootfs)


def test_list_empty(racker):
    assert racker.ok("list", "--format", "json").stdout.strip() in ("[]", "null")
    assert racker.ok("list", "-q").stdout == ""


def test_ps_json_contains_pid(racker, make_bundle):
    cid, _, _ = started(racker, make_bundle, ["sh", "-c", "sleep 30 & wait"])
    pid = racker.state(cid)["pid"]
    pids = json.loads(racker.ok("ps", "--format", "json", cid).stdout)
    assert pid in pids
    wait_until(lambda: len(json.loads(racker.ok("ps", "--format", "json", cid).stdout)) == 2,
               what="the background sleep to show up in ps")
    table = racker.ok("ps", cid).stdout.splitlines()
    assert table[0].split() == ["PID", "CMD"]
    assert any(line.split()[0] == str(pid) for line in table[1:])


# --- pause / resume --------------------------------------------------------------------------


def test_pause_resume(racker, make_bundle):
    require("freezer")
    cid, _, _ = started(racker, make_bundle)
    pid = racker.state(cid)["pid"]
    racker.ok("pause", cid)
    assert racker.status(cid) == "paused"
    freezer = cgroup_dirs_of(pid).get("freezer")
    if freezer:  # v1 freezer on the host: check the kernel's view too
        with open(f"{freezer}/freezer.state") as f:
            assert f.read().strip() == "FROZEN"
    r = racker("pause", cid)
    assert r.returncode == 1
    assert r.stderr == f'racker-oci: cannot pause container "{cid}": it is paused\n'
    racker.ok("resume", cid)
    assert racker.status(cid) == "running"
    r = racker("resume", cid)
    assert r.returncode == 1
    assert r.stderr == f'racker-oci: cannot resume container "{cid}": it is running, not paused\n'


def test_delete_force_paused(racker, make_bundle):
    require("freezer")
    cid, _, _ = started(racker, make_bundle)
    racker.ok("pause", cid)
    racker.ok("delete", "--force", cid)
    assert racker.list_ids() == []


# --- exec ------------------------------------------------------------------------------------


@pytest.fixture
def running(racker, make_bundle):
    cid, b, _ = started(racker, make_bundle, edit=lambda c: c["root"].update(readonly=False))
    return cid


def test_exec_args(racker, running):
    r = racker("exec", running, "sh", "-c", "echo $((6*7)) $$")
    assert r.returncode == 0, r
    out = r.stdout.split()
    assert out[0] == "42"
    assert out[1] != "1"  # joined the pid namespace, not its init


def test_exec_joins_the_inits_leaf_when_the_cgroup_has_child_controllers(racker, running):
    """A booted systemd moves itself into <cgroup>/init.scope and enables controllers for its
    sub-cgroups; cgroup v2 then refuses processes in <cgroup> itself (EBUSY). exec must join
    the init's own leaf instead of failing (on systemd hosts every racker exec did)."""
    init = racker.state(running)["pid"]
    cg = cgroup_dirs_of(init).get("")
    if not cg:
        pytest.skip("no cgroup2 hierarchy on this host")
    # a controller the container's cgroup may enable for its children: one its parent has
    # enabled already, else one the parent offers (turned on there for this test, then off)
    parent = os.path.dirname(cg)
    avail = Path(cg, "cgroup.controllers").read_text().split()
    enabled_here = []
    if not avail:
        offered = Path(parent, "cgroup.controllers").read_text().split()
        for c in offered:
            try:
                Path(parent, "cgroup.subtree_control").write_text("+" + c)
                enabled_here.append(c)
                break
            except OSError:
                continue
        avail = Path(cg, "cgroup.controllers").read_text().split()
    if not avail:
        pytest.skip(f"no cgroup2 controller can be enabled below {parent}")
    try:
        leaf = Path(cg, "init.scope")
        leaf.mkdir()
        (leaf / "cgroup.procs").write_text(str(init))
        Path(cg, "cgroup.subtree_control").write_text("+" + avail[0])
        # the rule this test is about: no process may join the container's cgroup itself
        with pytest.raises(OSError):
            Path(cg, "cgroup.procs").write_text(str(os.getpid()))
        r = racker("--debug", "exec", running, "cat", "/proc/self/cgroup")
        assert r.returncode == 0, r
        assert r.stdout.strip().endswith("/init.scope") or "0::/init.scope" in r.stdout, r.stdout
        assert "is busy, joining" in r.stderr, r.stderr
        r = racker.ok("exec", running, "sh", "-c", "echo $((6*7))")
        assert r.stdout == "42\n"
    finally:
        racker("delete", "--force", running)
        for c in enabled_here:
            try:
                Path(parent, "cgroup.subtree_control").write_text("-" + c)
            except OSError:
                pass


def test_exec_sees_container_not_host(racker, running):
    r = racker.ok("exec", running, "hostname")
    assert r.stdout == "racker\n"
    r = racker.ok("exec", running, "cat", "/proc/1/cmdline")
    assert r.stdout.split("\0")[0] == "sleep"


def test_exec_env(racker, running):
    r = racker("exec", "--env", "FOO=bar", "-e", "BAZ=qux quux", running,
               "sh", "-c", 'echo "$FOO|$BAZ|$TERM"')
    assert r.returncode == 0, r
    assert r.stdout == "bar|qux quux|xterm\n"


def test_exec_cwd(racker, running):
    r = racker.ok("exec", "--cwd", "/tmp", running, "pwd")
    assert r.stdout == "/tmp\n"


def test_exec_user(racker, running):
    r = racker.ok("exec", "--user", "1000:1000", running, "sh", "-c", "id -u; id -g")
    assert r.stdout == "1000\n1000\n"
    r = racker.ok("exec", "-u", "1000", running, "id", "-u")
    assert r.stdout == "1000\n"


def test_exec_exit_status(racker, running):
    r = racker("exec", running, "sh", "-c", "exit 7")
    assert r.returncode == 7, r


def test_exec_missing_binary(racker, running):
    r = racker("exec", running, "/no/such/binary")
    assert r.returncode != 0
    assert "/no/such/binary" in r.stderr


def test_exec_process_json(racker, running, tmp_path):
    proc = {
        "terminal": False,
        "user": {"uid": 1000, "gid": 1000},
        "args": ["sh", "-c", 'echo "$X $(pwd) $(id -u)"; exit 5'],
        "env": ["PATH=/bin:/usr/bin", "X=from-process-json"],
        "cwd": "/tmp",
    }
    pf = tmp_path / "process.json"
    pf.write_text(json.dumps(proc))
    r = racker("exec", "--process", pf, running)
    assert r.returncode == 5, r
    assert r.stdout == "from-process-json /tmp 1000\n"


def test_exec_pid_file_and_detach(racker, running, tmp_path):
    pf = tmp_path / "exec.pid"
    r = racker.ok("exec", "--detach", "--pid-file", pf, running, "sleep", "30")
    pid = int(pf.read_text())
    assert pid_alive(pid)
    pids = json.loads(racker.ok("ps", "--format", "json", running).stdout)
    assert pid in pids
    assert r.stdout == ""


def test_exec_in_stopped_container_fails(racker, make_bundle):
    cid = stopped(racker, make_bundle)
    r = racker("exec", cid, "true")
    assert r.returncode == 1
    assert r.stderr == f'racker-oci: cannot exec in container "{cid}": it is stopped\n'


# --- misc commands ---------------------------------------------------------------------------


def test_version(racker):
    r = racker("--version", root=False)
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert re.fullmatch(r"racker-oci version \d+\.\d+\.\d+\S*", lines[0])
    assert lines[1].startswith("spec: 1.")


def test_features(racker):
    r = racker.ok("features", root=False)
    f = json.loads(r.stdout)
    assert f["ociVersionMin"].startswith("1.")
    assert set(f["hooks"]) >= {"prestart", "createRuntime", "createContainer", "startContainer",
                               "poststart", "poststop"}
    assert "rbind" in f["mountOptions"]
    assert set(f["linux"]["namespaces"]) >= {"pid", "network", "mount", "user", "uts", "ipc"}
    assert f["linux"]["seccomp"]["enabled"] is True


def test_spec_writes_and_refuses_to_overwrite(racker, tmp_path):
    d = tmp_path / "specdir"
    d.mkdir()
    r = racker("spec", "--bundle", d, root=False)
    assert r.returncode == 0, r
    config = json.loads((d / "config.json").read_text())
    assert config["ociVersion"].startswith("1.")
    assert config["root"]["path"] == "rootfs"
    assert config["process"]["args"] == ["sh"]
    before = (d / "config.json").read_bytes()
    r = racker("spec", "--bundle", d, root=False)
    assert r.returncode == 1
    assert r.stderr == f"racker-oci: file {d}/config.json already exists\n"
    assert (d / "config.json").read_bytes() == before


def test_help_and_no_command(racker):
    r = racker("--help", root=False)
    assert r.returncode == 0
    assert "create" in r.stdout and "delete" in r.stdout
    r = racker(root=False)
    assert r.returncode == 1


def test_unknown_command(racker):
    r = racker("frobnicate")
    assert r.returncode == 1
    assert r.stderr == 'racker-oci: unknown command "frobnicate" (see racker-oci --help)\n'


@pytest.mark.parametrize("delay_ms", [0, 1, 2, 3, 5, 8, 12, 16, 20, 25, 30, 40])
def test_create_killed_early_is_cleaned_by_delete(racker, make_bundle, delay_ms):
    """kill -9 of `create` at an early moment: state does not say "still being created"
    forever, and delete --force removes everything it had made (cgroups, the blocked init,
    the state dir); the teardown's leak check looks for each."""
    b = make_bundle(SLEEP)
    cid = racker.new_id("early")
    p, _, _ = racker.popen("create", "--bundle", b.path, cid)
    time.sleep(delay_ms / 1000)
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = racker("state", cid)
    assert "still being created" not in r.stderr, r
    if r.returncode == 0:
        assert json.loads(r.stdout)["status"] in ("created", "stopped"), r
    r = racker("delete", "--force", cid)
    assert r.returncode == 0 or "does not exist" in r.stderr, r
    assert cid not in racker.list_ids()
