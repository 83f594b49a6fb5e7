"""racker exec and racker cp, on test_run.py's registry and stores (test_containers' leak
checks: no mount, cgroup, runtime state or process left after `racker rm -f`)."""

import os
import time
import uuid

from test_containers import ctx, detach, gone, name, ok  # noqa: F401
from test_run import bb_rootfs, images, racker_exe, run_in_pty  # noqa: F401


def running(ctx, prefix):
    n = name(ctx, prefix)
    cid = detach(ctx, n, "sleep", "1000")
    return n, cid


def test_exec_basics(ctx):
    n, cid = running(ctx, "exec")
    r = ok(ctx, "exec", n, "echo", "hello", "-e", "x")
    assert r.stdout == "hello -e x\n", r
    r = ctx("exec", cid[:10], "sh", "-c", "exit 42")
    assert r.returncode == 42, r
    r = ok(ctx, "exec", "-e", "FOO=bar", "-w", "/etc", n, "sh", "-c", 'echo "$FOO $(pwd)"')
    assert r.stdout == "bar /etc\n", r
    r = ok(ctx, "exec", "-u", "1000", n, "id", "-u")
    assert r.stdout == "1000\n", r
    r = ok(ctx, "exec", "-u", "daemon", n, "id", "-un")
    assert r.stdout == "daemon\n", r
    r = ctx("exec", "-i", n, "sh", "-c", "tr a-z A-Z; echo done", input=b"piped\n")
    assert (r.returncode, r.stdout) == (0, "PIPED\ndone\n"), r
    r = ctx("exec", n, "cat", input=b"ignored\n")
    assert (r.returncode, r.stdout) == (0, ""), r
    r = ctx("exec", n, "no-such-command")
    assert r.returncode == 127, r
    r = ctx("exec", n, "/etc/passwd")
    assert r.returncode == 126, r
    # exec'd processes are in the container: its pid namespace
    r = ok(ctx, "exec", n, "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '")
    assert r.stdout == "sleep 1000 ", r
    ok(ctx, "exec", "-d", n, "sh", "-c", "echo bg > /tmp/bg")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if ctx("exec", n, "cat", "/tmp/bg").stdout == "bg\n":
            break
        time.sleep(0.05)
    else:
        raise AssertionError("exec -d did not run")
    assert ok(ctx, "rm", "-f", n).stdout == f"{n}\n"
    gone(ctx, cid, n)


def test_exec_not_running_or_unknown(ctx):
    n = name(ctx, "exec-done")
    r = ctx("run", "--name", n, ctx.images.bb, "true")
    assert r.returncode == 0, r
    cid = ctx.container_ids()[0]
    r = ctx("exec", n, "true")
    assert r.returncode == 125 and "is not running" in r.stderr and n in r.stderr, r
    r = ctx("exec", "no-such-thing", "true")
    assert r.returncode == 125 and "no such container" in r.stderr, r
    r = ctx("exec", n)
    assert r.returncode == 125 and "missing COMMAND" in r.stderr, r
    ok(ctx, "rm", n)
    gone(ctx, cid, n)


def test_cp_round_trip(ctx, tmp_path):
    n, cid = running(ctx, "cp")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "run.sh").write_text("#!/bin/sh\necho ran\n")
    os.chmod(src / "sub" / "run.sh", 0o750)
    os.symlink("a.txt", src / "link")
    os.utime(src / "a.txt", (1000000000, 1000000000))
    single = tmp_path / "single"
    single.write_bytes(bytes(range(256)) * 100)
    os.chmod(single, 0o604)
    os.utime(single, (1200000000, 1200000000))

    ok(ctx, "cp", single, f"{n}:/tmp/single")
    ok(ctx, "cp", src, f"{n}:/tmp")  # existing dir: gets src's basename
    ok(ctx, "cp", f"{src}/.", f"{n}:/tmp/copy")  # new dir: the contents
    r = ok(ctx, "exec", n, "sh", "-c",
           "cat /tmp/src/a.txt; /tmp/src/sub/run.sh; readlink /tmp/src/link; "
           "stat -c %a /tmp/src/sub/run.sh /tmp/single; cat /tmp/copy/a.txt")
    assert r.stdout == "alpha\nran\na.txt\n750\n604\nalpha\n", r

    back = tmp_path / "back"
    back.mkdir()
    ok(ctx, "cp", f"{n}:/tmp/src", back)
    ok(ctx, "cp", f"{n}:/tmp/single", back / "single2")
    assert (back / "src" / "a.txt").read_text() == "alpha\n"
    assert (back / "src" / "sub" / "run.sh").stat().st_mode & 0o7777 == 0o750
    assert os.readlink(back / "src" / "link") == "a.txt"
    assert int((back / "src" / "a.txt").stat().st_mtime) == 1000000000
    assert (back / "single2").read_bytes() == single.read_bytes()
    assert (back / "single2").stat().st_mode & 0o7777 == 0o604
    assert int((back / "single2").stat().st_mtime) == 1200000000

    r = ctx("cp", f"{n}:/no/such", back)
    assert r.returncode == 1 and "no/such" in r.stderr, r
    r = ctx("cp", single, back)
    assert r.returncode == 1 and "CONTAINER:PATH" in r.stderr, r
    assert ok(ctx, "rm", "-f", n).stdout == f"{n}\n"
    gone(ctx, cid, n)


def test_cp_symlink_stays_inside(ctx, tmp_path):
    n, cid = running(ctx, "cp-link")
    ok(ctx, "exec", n, "sh", "-c",
       "mkdir -p /etc && echo container-shadow > /etc/shadow && "
       "ln -s /etc/shadow /tmp/evil && ln -s ../../../../../ /tmp/up")
    out = tmp_path / "out"
    r = ctx("cp", f"{n}:/tmp/evil", out)
    assert r.returncode == 0, r
    assert out.read_text() == "container-shadow\n"
    r = ctx("cp", f"{n}:/tmp/up/etc/shadow", tmp_path / "out2")
    assert r.returncode == 0, r
    assert (tmp_path / "out2").read_text() == "container-shadow\n"
    # writing through a link lands inside the container too
    f = tmp_path / "f"
    f.write_text("new\n")
    marker = f"/tmp/racker-cp-{uuid.uuid4().hex}"  # /tmp exists on both sides
    ok(ctx, "exec", n, "ln", "-s", str(marker), "/tmp/out-link")
    ok(ctx, "cp", f, f"{n}:/tmp/out-link")
    assert not os.path.lexists(marker)
    assert ok(ctx, "exec", n, "cat", marker).stdout == "new\n"
    ok(ctx, "rm", "-f", n)
    gone(ctx, cid, n)


def test_cp_stopped_container(ctx, tmp_path):
    n = name(ctx, "cp-stopped")
    r = ctx("run", "--name", n, ctx.images.bb, "sh", "-c", "echo kept > /kept")
    assert r.returncode == 0, r
    cid = ctx.container_ids()[0]
    f = tmp_path / "in"
    f.write_text("into stopped\n")
    ok(ctx, "cp", f, f"{n}:/in")
    ok(ctx, "cp", f"{n}:/kept", tmp_path / "kept")
    assert (tmp_path / "kept").read_text() == "kept\n"
    ok(ctx, "cp", f"{n}:/in", tmp_path / "in2")
    assert (tmp_path / "in2").read_text() == "into stopped\n"
    assert (ctx.root / "containers" / cid / "upper" / "in").read_text() == "into stopped\n"
    ok(ctx, "rm", n)
    gone(ctx, cid, n)


def test_exec_tty(ctx):
    n, cid = running(ctx, "exec-tty")
    rc, out = run_in_pty(ctx, "exec", "-t", n, "sh", "-c", "tty; exit 5")
    assert rc == 5 and out.replace(b"\r", b"").startswith(b"/dev/pts/"), (rc, out)
    r = ctx("exec", n, "tty")
    assert (r.returncode, r.stdout) == (1, "not a tty\n"), r
    ok(ctx, "rm", "-f", n)
    gone(ctx, cid, n)
