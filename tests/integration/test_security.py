"""Known container-breakout classes.

CVE-2019-5736: a container process that can reach the runtime's /proc/PID/exe must not be able
to overwrite the host binary; racker-oci re-executes itself from a sealed memfd.
CVE-2024-21626: file descriptors of the runtime or of its caller must not reach the container
(and must not serve as a working directory outside the root).
Path escapes: "..", and symlinks in the rootfs, never lead outside the rootfs.
"""

import hashlib
import json
import os
import re

import pytest

from conftest import drop_namespace, wait_until

MEMFD_EXE = "/memfd:racker-oci (deleted)"
OUTSIDE = "current working directory is outside of the container root"


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def fd_listing(text):
    """{fd: link target or None} from `ls -l /proc/self/fd` output."""
    out = {}
    for line in text.splitlines():
        m = re.search(r"\s(\d+)(?: -> (.*))?$", line)
        if m and line.startswith("l"):
            out[int(m.group(1))] = m.group(2)
    return out


# --- CVE-2019-5736 class -----------------------------------------------------------------------


def test_created_init_exe_is_sealed_memfd(racker, make_bundle):
    b = make_bundle(["sleep", "30"])
    cid, _ = racker.create(b)
    pid = racker.state(cid)["pid"]
    assert os.readlink(f"/proc/{pid}/exe") == MEMFD_EXE
    host = os.stat(racker.binary)
    exe = os.stat(f"/proc/{pid}/exe")
    assert (exe.st_dev, exe.st_ino) != (host.st_dev, host.st_ino)


def test_init_exe_cannot_be_written_from_inside(racker, make_bundle):
    # While the container is created, its pid 1 is still the runtime. A process exec'ed into
    # the container tries to overwrite it through /proc/1/exe.
    before = sha256(racker.binary)
    b = make_bundle(["sleep", "30"])
    cid, _ = racker.create(b)
    r = racker("exec", cid, "sh", "-c",
               "readlink /proc/1/exe || echo unreadable; echo pwned >> /proc/1/exe; echo rc=$?; "
               "echo pwned > /proc/1/exe; echo rc=$?")
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] in (MEMFD_EXE, "unreadable"), r
    assert lines[1:] == ["rc=1", "rc=1"], r
    assert sha256(racker.binary) == before
    racker.ok("start", cid)
    assert racker.status(cid) == "running"


def test_run_parent_exe_from_inside_without_pid_namespace(racker, make_bundle):
    # Without a pid namespace the payload sees `racker-oci run` as its parent.
    before = sha256(racker.binary)
    b = make_bundle(["sh", "-c", "readlink /proc/$PPID/exe || echo unreadable; "
                     "echo pwned >> /proc/$PPID/exe; echo rc=$?"],
                    edit=lambda c: drop_namespace(c, "pid"))
    r = racker.run(b)
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] in (MEMFD_EXE, "unreadable"), r
    assert lines[1] == "rc=1", r
    assert sha256(racker.binary) == before


def test_payload_exe_is_never_the_host_binary(racker, make_bundle):
    b = make_bundle(["sh", "-c", "readlink /proc/self/exe; readlink /proc/1/exe; sleep 30"])
    cid, r = racker.create(b)
    racker.ok("start", cid)
    wait_until(lambda: len(r.stdout.splitlines()) >= 2, what="payload output")
    assert r.stdout.splitlines()[:2] == ["/bin/busybox", "/bin/busybox"]
    e = racker.ok("exec", cid, "readlink", "/proc/self/exe")
    assert e.stdout == "/bin/busybox\n"
    pid = racker.state(cid)["pid"]
    exe = os.stat(f"/proc/{pid}/exe")
    busybox = os.stat(b.rootfs / "bin/busybox")
    host = os.stat(racker.binary)
    assert (exe.st_dev, exe.st_ino) == (busybox.st_dev, busybox.st_ino)
    assert (exe.st_dev, exe.st_ino) != (host.st_dev, host.st_ino)


def test_runtime_processes_run_from_memfd(racker, make_bundle):
    # `run` and `exec` are long-lived runtime processes next to the container: both re-exec
    # from the sealed copy before doing anything else.
    b = make_bundle(["sleep", "30"])
    cid = racker.new_id()
    p, _, _ = racker.popen("run", "--bundle", b.path, cid)
    try:
        racker.wait_status(cid, "running")
        assert os.readlink(f"/proc/{p.pid}/exe") == MEMFD_EXE
        e, _, _ = racker.popen("exec", cid, "sleep", "1")
        try:
            wait_until(lambda: len(json.loads(racker.ok("ps", "--format", "json", cid).stdout)) > 1,
                       what="the exec'ed process")
            assert os.readlink(f"/proc/{e.pid}/exe") == MEMFD_EXE
        finally:
            e.wait(timeout=5)
    finally:
        racker.ok("kill", cid, "KILL")
        p.wait(timeout=5)


# --- CVE-2024-21626 class: fds -----------------------------------------------------------------


@pytest.fixture
def host_dir_fd(tmp_path):
    d = tmp_path / "host-secret-dir"
    d.mkdir()
    (d / "host-secret-file").write_text("secret\n")
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    yield fd, d
    os.close(fd)


def test_caller_fd_not_visible_in_container(racker, make_bundle, host_dir_fd):
    fd, d = host_dir_fd
    b = make_bundle(["ls", "-l", "/proc/self/fd"])
    r = racker.run(b, pass_fds=(fd,))
    assert r.returncode == 0, r
    fds = fd_listing(r.stdout)
    assert fd not in fds or fd == 3, fds
    assert "host-secret-dir" not in r.stdout
    assert sorted(fds)[:3] == [0, 1, 2]
    assert len(fds) <= 4, fds  # 0-2 and the directory ls itself reads


def test_caller_fds_at_several_numbers_not_visible(racker, make_bundle, host_dir_fd):
    fd, d = host_dir_fd
    b = make_bundle(["ls", "-l", "/proc/self/fd"])
    r = racker.run(b, fd_map={3: fd, 4: fd, 9: fd, 200: fd})
    assert r.returncode == 0, r
    fds = fd_listing(r.stdout)
    assert "host-secret-dir" not in r.stdout
    assert set(fds) <= {0, 1, 2, 3}, fds


def test_preserve_fds_passes_fd_3(racker, make_bundle, host_dir_fd):
    fd, d = host_dir_fd
    b = make_bundle(["sh", "-c", "readlink /proc/self/fd/3; ls /proc/self/fd/3/; "
                     "ls /proc/self/fd/4 2>&1 || echo no-fd-4"])
    cid = racker.new_id()
    r = racker("run", "--preserve-fds", "1", "--bundle", b.path, cid, fd_map={3: fd, 4: fd})
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines[0].endswith("host-secret-dir"), r
    assert lines[1] == "host-secret-file"
    assert lines[-1] == "no-fd-4"


def test_exec_does_not_leak_caller_fds(racker, make_bundle, host_dir_fd):
    fd, d = host_dir_fd
    cid, _ = racker.create(make_bundle(["sleep", "30"]))
    racker.ok("start", cid)
    r = racker("exec", cid, "ls", "-l", "/proc/self/fd", fd_map={3: fd, 5: fd})
    assert r.returncode == 0, r
    assert "host-secret-dir" not in r.stdout
    assert set(fd_listing(r.stdout)) <= {0, 1, 2, 3}, r.stdout


def test_exec_preserve_fds_passes_fd_3(racker, make_bundle, host_dir_fd):
    fd, d = host_dir_fd
    cid, _ = racker.create(make_bundle(["sleep", "30"]))
    racker.ok("start", cid)
    r = racker("exec", "--preserve-fds", "1", cid, "sh", "-c",
               "ls /proc/self/fd/3/; ls /proc/self/fd/4 2>/dev/null || echo no-fd-4",
               fd_map={3: fd, 4: fd})
    assert r.returncode == 0, r
    assert r.stdout.splitlines() == ["host-secret-file", "no-fd-4"]


def test_cwd_through_caller_fd_is_refused(racker, make_bundle, host_dir_fd):
    fd, d = host_dir_fd
    b = make_bundle(["sh", "-c", "pwd; ls"],
                    edit=lambda c: c["process"].update(cwd="/proc/self/fd/3"))
    cid = racker.new_id()
    r = racker("run", "--bundle", b.path, cid, fd_map={3: fd})
    assert "host-secret-file" not in r.stdout
    assert (r.returncode, r.stderr) == (1, f"racker-oci: {OUTSIDE}\n"), r
    assert racker.list_ids() == []


@pytest.mark.parametrize("k", range(3, 11))
def test_cwd_through_runtime_fd_never_outside(racker, make_bundle, k):
    # Whatever the runtime itself has open at fd k while it sets up the container must not
    # serve as a working directory outside the root.
    b = make_bundle(["sh", "-c", "pwd; ls -a"],
                    edit=lambda c: c["process"].update(cwd=f"/proc/self/fd/{k}"))
    r = racker.run(b)
    if r.returncode == 0:
        # the fd was a directory inside the container: fine, as long as it is inside
        pwd = r.stdout.splitlines()[0]
        assert pwd.startswith("/") and "unreachable" not in pwd, r
        assert "config.json" not in r.stdout and "exec.fifo" not in r.stdout, r
    else:
        assert r.returncode == 1, r
        assert r.stderr in (
            f"racker-oci: {OUTSIDE}\n",
            f'racker-oci: chdir to cwd ("/proc/self/fd/{k}") set in config.json failed: '
            "No such file or directory\n",
            f'racker-oci: chdir to cwd ("/proc/self/fd/{k}") set in config.json failed: '
            "Not a directory\n"), r
    assert racker.list_ids() == []


@pytest.mark.parametrize("k", [3, 4, 5, 6, 7])
def test_exec_cwd_through_fd_never_outside(racker, make_bundle, host_dir_fd, k):
    fd, d = host_dir_fd
    cid, _ = racker.create(make_bundle(["sleep", "30"]))
    racker.ok("start", cid)
    r = racker("exec", "--cwd", f"/proc/self/fd/{k}", cid, "sh", "-c", "pwd; ls -a",
               fd_map={k: fd})
    assert "host-secret-file" not in r.stdout, r
    if r.returncode == 0:
        assert "unreachable" not in r.stdout, r
    else:
        assert r.returncode == 1, r
        assert f"racker-oci: {OUTSIDE}\n" == r.stderr or "chdir to cwd" in r.stderr, r
    assert racker.status(cid) == "running"


# --- path escapes ------------------------------------------------------------------------------


@pytest.mark.parametrize("cwd", ["/../../", "/..", "/tmp/../../..", "/./../etc/../.."])
def test_cwd_dotdot_resolves_to_root(racker, make_bundle, cwd):
    b = make_bundle(["sh", "-c", "pwd; ls /proc/self/cwd/"],
                    edit=lambda c: c["process"].update(cwd=cwd))
    r = racker.run(b)
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] == "/"
    assert "bin" in lines and "etc" in lines
    assert "rootfs" not in lines and "config.json" not in lines


def test_cwd_relative_symlink_escape_stays_inside(racker, make_bundle):
    b = make_bundle(["sh", "-c", "pwd; ls"], edit=lambda c: c["process"].update(cwd="/escape"))
    os.symlink("../../../../../../../../../..", b.rootfs / "escape")
    r = racker.run(b)
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] == "/"
    assert "bin" in lines and "rootfs" not in lines and "config.json" not in lines


def test_cwd_absolute_symlink_to_host_path_stays_inside(racker, make_bundle, tmp_path):
    host = tmp_path / "host-target"
    host.mkdir()
    (host / "host-marker").write_text("x")
    b = make_bundle(["sh", "-c", "pwd; ls"], edit=lambda c: c["process"].update(cwd="/abs"))
    os.symlink(str(host), b.rootfs / "abs")
    r = racker.run(b)
    assert "host-marker" not in r.stdout
    # the target does not exist inside the rootfs
    assert (r.returncode, r.stderr) == (
        1, 'racker-oci: chdir to cwd ("/abs") set in config.json failed: '
           "No such file or directory\n"), r


@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_mount_destination_symlink_escape_stays_inside(racker, make_bundle, tmp_path, kind):
    host = tmp_path / "host-target"
    host.mkdir()

    def edit(c):
        c["mounts"].append({"destination": "/link/sub", "type": "tmpfs", "source": "tmpfs",
                            "options": ["size=1m"]})

    b = make_bundle(["stat", "-f", "-c", "%T", "/link/sub"], edit=edit)
    target = str(host) if kind == "absolute" else "../" * 20 + str(host).lstrip("/")
    os.symlink(target, b.rootfs / "link")
    r = racker.run(b)
    assert r.returncode == 0, r
    assert r.stdout.strip() == "tmpfs"
    assert os.listdir(host) == [], "the mount point was created on the host"
    # it went below the rootfs instead
    assert (b.rootfs / str(host).lstrip("/") / "sub").is_dir()


def test_bind_mount_destination_symlink_escape(racker, make_bundle, tmp_path):
    src = tmp_path / "bind-src"
    src.mkdir()
    (src / "content").write_text("bound\n")
    host = tmp_path / "host-target"
    host.mkdir()

    def edit(c):
        c["mounts"].append({"destination": "/blink/dir", "type": "bind", "source": str(src),
                            "options": ["rbind", "ro"]})

    b = make_bundle(["cat", "/blink/dir/content"], edit=edit)
    os.symlink(str(host), b.rootfs / "blink")
    r = racker.run(b)
    assert r.returncode == 0, r
    assert r.stdout == "bound\n"
    assert os.listdir(host) == []


def test_device_path_dotdot_stays_inside(racker, make_bundle, tmp_path):
    def edit(c):
        c["linux"]["devices"] = [{"path": "/dev/../../../../../../tmp/mynull", "type": "c",
                                  "major": 1, "minor": 3}]

    b = make_bundle(["sh", "-c", "echo x > /tmp/mynull && echo ok"], edit=edit)
    r = racker.run(b)
    assert r.returncode == 0, r
    assert r.stdout == "ok\n"
    assert os.path.exists(b.rootfs / "tmp/mynull")
    assert not os.path.exists("/tmp/mynull") or not os.path.samefile("/tmp/mynull",
                                                                       b.rootfs / "tmp/mynull")


def test_masked_path_symlink_to_host_file_stays_inside(racker, make_bundle, tmp_path):
    # maskedPaths are applied after pivot_root: a symlink can only point within the rootfs
    secret = tmp_path / "host-secret"
    secret.write_text("host data\n")

    def edit(c):
        c["linux"]["maskedPaths"].append("/mlink")

    b = make_bundle(["sh", "-c", "cat /mlink 2>&1; echo end"], edit=edit)
    os.symlink(str(secret), b.rootfs / "mlink")
    r = racker.run(b)
    assert r.returncode == 0, r
    assert "host data" not in r.stdout
    assert secret.read_text() == "host data\n"


def test_container_cannot_see_host_root(racker, make_bundle):
    b = make_bundle(["sh", "-c", "ls /; echo --; ls /proc/1/root/"])
    r = racker.run(b)
    assert r.returncode == 0, r
    root, proc1_root = r.stdout.split("--")
    assert root.split() == proc1_root.split()
    assert "bin" in root.split()
    assert "rootfs" not in root.split()
    assert "work" not in root.split()  # /work exists on the host, not in busybox
