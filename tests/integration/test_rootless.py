"""racker as an ordinary user (issue 12, first part): the user's own store and runtime
directory, one user namespace with the user's subordinate ids (held by a pause process),
pull and unpack with the image's owners mapped, `run --rm` with ids inside as in the image,
binds whose files land on the host with mapped ids, and one-line errors for what is missing.

Made here by root for the test: a user with subordinate ranges (rootless_user.py), a
registry on 127.0.0.1 with a multi-layer image (whiteouts, an opaque directory, hardlinks,
a setuid file, files of several owners, a device node)."""

import io
import json
import os
import pty
import pwd
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import read_pty
from racker_ctx import bb_rootfs, racker_snapshot  # noqa: F401 (fixture)
from registry_util import (Dir, File, Hardlink, Image, Layer, Opaque, RawTar, Registry,
                           Whiteout)
from rootless_user import User, ensure_user, subid_range

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="session")
def racker_exe(tmp_path_factory):
    exe = racker_snapshot(tmp_path_factory, "the rootless tests make their user as root",
                          registry=True)
    d = Path(tempfile.mkdtemp(prefix="rk-rootless-bin-"))  # pytest's dirs are root's 0700
    os.chmod(d, 0o755)
    shutil.copy2(exe, d / "racker")
    yield str(d / "racker")
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def user():
    return ensure_user()


def device_layer():
    """A layer with a character device (/dev/null's numbers): a user namespace cannot make it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("devnull")
        ti.type, ti.mode, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 0o666, 1, 3
        tf.addfile(ti)
        ti = tarfile.TarInfo("after-device")
        ti.size = 2
        tf.addfile(ti, io.BytesIO(b"ok"))
    return Layer(RawTar(buf.getvalue()))


@pytest.fixture(scope="module")
def registry(racker_exe, bb_rootfs, user):  # noqa: F811
    base = Path(tempfile.mkdtemp(prefix="rk-rootless-reg-"))
    base_layer = Layer.from_dir(bb_rootfs)
    owners = Layer([
        Dir("owned"),
        File("owned/by0", "0", uid=0, gid=0),
        File("owned/by1000", "1000", uid=1000, gid=1001),
        File("owned/by65534", "n", uid=65534, gid=65534),
        File("owned/suid", "#!/bin/sh\n", mode=0o4755),
        File("owned/link-src", "same"),
        Hardlink("owned/link-dst", "owned/link-src"),
        Dir("opq"),
        File("opq/old", "old"),
        File("gone", "gone"),
    ])
    upper = Layer([Whiteout("gone"), Opaque("opq"), File("opq/new", "new")])
    img = Image([base_layer, owners, upper, device_layer()], cmd=["sh"], env=[PATH_ENV])
    reg = Registry(base / "registry").start()
    reg.push_image("test/rootless", "1", img)
    # ids past the user's 65536: kept as the user's own (root inside), with one warning
    wide = Layer([Dir("wide"), File("wide/by100000", "w", uid=100000, gid=100000),
                  File("wide/by5", "5", uid=5, gid=5)])
    reg.push_image("test/rootless-wide", "1",
                   Image([base_layer, wide], cmd=["sh"], env=[PATH_ENV]))
    conf = base / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{reg.host}"\ninsecure = true\n')
    os.chmod(base, 0o755)
    os.chmod(conf, 0o644)
    try:
        yield reg, conf, f"{reg.host}/test/rootless:1"
    finally:
        reg.stop()
        shutil.rmtree(base, ignore_errors=True)


class UserRacker:
    """racker run as the test user with a data and a runtime directory of its own."""

    def __init__(self, user, exe, conf, base):
        self.user, self.exe, self.conf = user, exe, conf
        self.data = base / "data"
        self.runtime = base / "xdg"
        for d in (self.data, self.runtime):
            d.mkdir(mode=0o700)
            os.chown(d, user.uid, user.gid)
        self.store = self.data / "racker"

    def env(self, **extra):
        return self.user.env(self.runtime, XDG_DATA_HOME=str(self.data), **extra)

    def __call__(self, *args, env=None, timeout=60, cgroups=()):
        return self.user.run([self.exe, "--registries-conf", str(self.conf), *args],
                             env or self.env(), timeout=timeout, cgroups=cgroups)

    def ok(self, *args, **kw):
        r = self(*args, **kw)
        assert r.returncode == 0, f"racker {' '.join(args)}: {r.stderr}"
        return r

    def pause_pid(self):
        try:
            return int((self.runtime / "racker" / "pause.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def stop(self):
        pid = self.pause_pid()
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def rk(user, racker_exe, registry):
    base = Path(tempfile.mkdtemp(prefix="rk-rootless-"))
    os.chmod(base, 0o755)
    r = UserRacker(user, racker_exe, registry[1], base)
    r.ref = registry[2]
    yield r
    r.stop()
    shutil.rmtree(base, ignore_errors=True)


def files_named(root, name):
    return [Path(d) / name for d, _, files in os.walk(root) if name in files]


# --- nothing outside the user's paths: a snapshot before the module's first test, compared
# after its last (the user writes only below its store, runtime and cache directories, which
# live under /tmp here, and what it binds) -----------------------------------------------------

HOST_TREES = ["/etc", "/usr", "/var", "/home", "/root", "/opt", "/srv", "/boot"]
# what root itself touches meanwhile (the bake cache, apt's lists for apt-get download,
# systemd's linger flag, logs), and the checkout (pytest's caches)
NOT_THE_USERS = ["/var/tmp", "/var/log", "/var/cache/racker-tests", "/var/cache/apt",
                 "/var/lib/apt", "/var/lib/systemd", "/var/cache/man", "/var/lib/dpkg",
                 str(Path(__file__).resolve().parents[2])]
_snapshot = {}


def host_files(skip):
    """path -> (uid, gid, mode, size, mtime) of every file below HOST_TREES but skip."""
    out = {}
    for top in HOST_TREES:
        for d, dirs, files in os.walk(top):
            dirs[:] = [x for x in dirs if not any(os.path.join(d, x) == p or
                                                   os.path.join(d, x).startswith(p + "/")
                                                   for p in skip)]
            for name in dirs + files:
                path = os.path.join(d, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                out[path] = (st.st_uid, st.st_gid, st.st_mode, st.st_size,
                             0 if name in dirs else st.st_mtime_ns)
    return out


class NoRangeUser(User):
    """A second user, without subordinate ids (made by root with useradd's counts at 0)."""

    NAME = "racker-norange"

    def __init__(self):
        try:
            pwd.getpwnam(self.NAME)
        except KeyError:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", "-K",
                            "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", self.NAME], check=True,
                           capture_output=True)
        pw = pwd.getpwnam(self.NAME)
        self.name, self.uid, self.gid, self.home = self.NAME, pw.pw_uid, pw.pw_gid, pw.pw_dir
        self.subuid = subid_range("/etc/subuid", self.NAME)
        self.subgid = subid_range("/etc/subgid", self.NAME)


@pytest.fixture(scope="module")
def norange_user(user):
    return NoRangeUser()


def test_00_snapshot_of_the_host(user, norange_user):
    _snapshot["skip"] = NOT_THE_USERS + [user.home, norange_user.home]
    _snapshot["files"] = host_files(_snapshot["skip"])
    assert len(_snapshot["files"]) > 1000


def test_pull_maps_the_owners(rk, user):
    r = rk.ok("pull", rk.ref)
    assert "device nodes cannot be made here" in r.stderr and "devnull" in r.stderr, r.stderr
    # the store is the user's, below XDG_DATA_HOME
    assert rk.store.is_dir() and rk.store.stat().st_uid == user.uid
    su, sg = user.subuid[0], user.subgid[0]
    # on the host: container id 0 is the user, id N > 0 is subuid + N - 1
    (by0,) = files_named(rk.store, "by0")
    (by1000,) = files_named(rk.store, "by1000")
    (by65534,) = files_named(rk.store, "by65534")
    assert (by0.stat().st_uid, by0.stat().st_gid) == (user.uid, user.gid)
    assert (by1000.stat().st_uid, by1000.stat().st_gid) == (su + 999, sg + 1000)
    assert by65534.stat().st_uid == su + 65533
    # the pause process holds the namespace; a second command reuses it
    pid = rk.pause_pid()
    assert pid and Path(f"/proc/{pid}").exists()
    rk.ok("images")
    assert rk.pause_pid() == pid


def test_run_sees_the_image_owners(rk):
    rk.ok("pull", "-q", rk.ref)
    out = rk.ok("run", "--rm", "--network", "none", rk.ref, "sh", "-c",
                "stat -c '%u:%g' /owned/by0 /owned/by1000 /owned/by65534; "
                "stat -c %a /owned/suid; "
                "[ $(stat -c %i /owned/link-src) = $(stat -c %i /owned/link-dst) ] && echo hard; "
                "ls /opq; [ -e /gone ] || echo whited-out; cat /after-device; echo; id -u").stdout
    assert out.split() == ["0:0", "1000:1001", "65534:65534", "4755", "hard", "new",
                           "whited-out", "ok", "0"], out


def test_owners_beyond_the_range_are_kept_with_one_warning(rk, registry):
    ref = f"{registry[0].host}/test/rootless-wide:1"
    r = rk.ok("pull", ref)
    warnings = [l for l in r.stderr.splitlines() if "owners beyond the ids" in l]
    assert len(warnings) == 1 and "wide/by100000" in warnings[0], r.stderr
    assert "wide/by5" not in warnings[0]
    out = rk.ok("run", "--rm", "--network", "none", ref, "stat", "-c", "%u:%g",
                "/wide/by100000", "/wide/by5").stdout
    assert out.split() == ["0:0", "5:5"], out
    rk.ok("rmi", ref)


def test_bind_volume_files_land_mapped(rk, user):
    vol = Path(tempfile.mkdtemp(prefix="rk-rootless-vol-"))
    try:
        os.chown(vol, user.uid, user.gid)
        rk.ok("run", "--rm", "--network", "none", "-v", f"{vol}:/data", rk.ref, "sh", "-c",
              "echo a > /data/root-file && echo b > /data/u1000 && chown 1000:1000 /data/u1000")
        st = (vol / "root-file").stat()
        assert (st.st_uid, st.st_gid) == (user.uid, user.gid)
        assert (vol / "u1000").stat().st_uid == user.subuid[0] + 999
    finally:
        shutil.rmtree(vol, ignore_errors=True)


def test_run_and_exec_with_a_tty(rk):
    """-it as an ordinary user: run's and exec's ttys are the container's own ptys."""
    def with_pty(*args, send):
        master, slave = pty.openpty()
        p = subprocess.Popen([rk.exe, "--registries-conf", str(rk.conf), *args], stdin=slave,
                             stdout=slave, stderr=slave, env=rk.env(TERM="dumb"), cwd="/",
                             user=rk.user.uid, group=rk.user.gid, extra_groups=[],
                             start_new_session=True)
        os.close(slave)
        try:
            os.write(master, send)
            out = read_pty(master, timeout=30)
            return p.wait(timeout=30), out
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            os.close(master)

    rc, out = with_pty("run", "-it", "--rm", "--network", "none", rk.ref, "sh",
                       send=b"echo in=$((40+2)); tty; exit 4\n")
    assert rc == 4 and b"in=42" in out and b"/dev/pts/0" in out, out
    rk.ok("run", "-d", "--name", "tty1", "--network", "none", rk.ref, "sleep", "60")
    try:
        rc, out = with_pty("exec", "-it", "tty1", "sh",
                           send=b"echo ex=$((50+5)); tty; id -u; exit 6\n")
        assert rc == 6 and b"ex=55" in out and b"/dev/pts/" in out, out
    finally:
        rk.ok("rm", "-f", "tty1")


def test_exit_status_and_rm_leave_nothing(rk):
    r = rk("run", "--rm", "--network", "none", rk.ref, "sh", "-c", "exit 5")
    assert r.returncode == 5, r.stderr
    assert rk.ok("ps", "-a", "-q").stdout.strip() == ""


def test_missing_helper_is_one_line(rk, user, tmp_path):
    # a fresh runtime directory: the namespace must be made again, without newuidmap on PATH
    other = UserRacker(user, rk.exe, rk.conf, Path(tempfile.mkdtemp(prefix="rk-rootless-")))
    os.chmod(other.data.parent, 0o755)
    try:
        empty = other.data.parent / "bin"
        empty.mkdir()
        r = other("images", env=other.env(PATH=str(empty)))
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert "newuidmap" in lines[0] and "apt-get install uidmap" in lines[0], lines
        assert other.pause_pid() is None
    finally:
        other.stop()
        shutil.rmtree(other.data.parent, ignore_errors=True)


def test_no_subordinate_ids_is_one_warning(norange_user, racker_exe, registry):
    """Without ranges the user alone is mapped (root inside): one warning says what is lost and
    how to add a range; the image's other owners become the user's, said once too."""
    if norange_user.subuid or norange_user.subgid:
        pytest.skip(f"{norange_user.name} has subordinate ids here")
    base = Path(tempfile.mkdtemp(prefix="rk-norange-"))
    os.chmod(base, 0o755)
    r = UserRacker(norange_user, racker_exe, registry[1], base)
    try:
        out = r("run", "--rm", "--network", "none", registry[2], "sh", "-c",
                "id -u; stat -c %u /owned/by1000; cat /proc/self/uid_map")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.split("\n")
        assert lines[:2] == ["0", "0"], out.stdout
        assert lines[2].split() == ["0", str(norange_user.uid), "1"], out.stdout
        warn = [l for l in out.stderr.splitlines() if "has no subordinate ids" in l]
        assert len(warn) == 1 and "usermod --add-subuids" in warn[0], out.stderr
        # the namespace is made once: the next command says nothing
        again = r("run", "--rm", "--network", "none", registry[2], "true")
        assert again.returncode == 0 and "subordinate" not in again.stderr, again.stderr
    finally:
        r.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def tun_for_users():
    """/dev/net/tun as ordinary hosts have it (udev: 0666); this host's is root's 0600."""
    st = os.stat("/dev/net/tun")
    os.chmod("/dev/net/tun", 0o666)
    yield
    os.chmod("/dev/net/tun", st.st_mode & 0o7777)


@pytest.fixture
def host_server():
    """A TCP server on the host's 127.0.0.1 that greets and closes: (port, accepted count)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    seen = []

    def serve():
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            seen.append(1)
            c.sendall(b"hello-from-host\n")
            c.close()

    threading.Thread(target=serve, daemon=True).start()
    yield s.getsockname()[1], seen
    s.close()


def test_private_network_through_pasta(rk, user, tun_for_users, host_server):
    if not shutil.which("pasta"):
        pytest.skip("pasta missing (apt-get install passt)")
    port, seen = host_server

    # (pasta runs as passt or passt.avx2: found by its arguments; a zombie has none)
    def pastas():
        return subprocess.run(["pgrep", "-a", "-u", str(user.uid), "-f", "--", "--config-net"],
                              capture_output=True, text=True).stdout

    if not subprocess.run(["ip", "route", "show", "default"], capture_output=True,
                          text=True).stdout.strip():
        # (the VM lane's guest has no network): the container keeps loopback only, as root's
        # does without a bridge
        out = rk.ok("run", "--rm", rk.ref, "sh", "-c", "ls /sys/class/net").stdout
        assert out.split() == ["lo"], out
        assert pastas() == ""
        pytest.skip("the host has no default route: pasta has no uplink to offer")
    # the default network: eth0 with the host's address; the gateway is the host's loopback
    out = rk.ok("run", "--rm", rk.ref, "sh", "-c",
                "ip addr show eth0 | grep -c 'inet '; gw=$(ip route | awk '/default/{print $3}'); "
                f"timeout 5 nc $gw {port} </dev/null; true").stdout
    assert out.split()[0] == "1", out
    assert "hello-from-host" in out and seen, out
    r = rk("run", "-d", "--name", "p1", rk.ref, "sleep", "60")
    assert r.returncode == 0, r.stderr
    assert "--config-net" in pastas()
    rk.ok("rm", "-f", "p1")
    # pasta goes with the container
    deadline = time.time() + 3
    while time.time() < deadline and pastas():
        time.sleep(0.05)
    assert pastas() == ""


def http_get(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /who HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[-1]


def live_proxies(user):
    """The user's racker-ports processes that have not ended (this host leaves zombies)."""
    out = []
    for pid in subprocess.run(["pgrep", "-u", str(user.uid), "-x", "racker-ports"],
                              capture_output=True, text=True).stdout.split():
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                out.append(pid)
        except (FileNotFoundError, IndexError):
            pass
    return out


def test_publish_a_port_as_user(rk, user, tun_for_users):
    """-p for an ordinary user's container: the proxy is the user's, in the user's namespace."""
    if not shutil.which("pasta"):
        pytest.skip("pasta missing (apt-get install passt)")
    r = rk("run", "-d", "--name", "pub", "-p", "8080", rk.ref, "sh", "-c",
           "mkdir -p /www && echo published > /www/who && exec httpd -f -p 8080 -h /www")
    assert r.returncode == 0, r.stderr
    try:
        hostport = rk.ok("port", "pub", "8080").stdout.strip()
        port = int(hostport.rsplit(":", 1)[1])
        deadline = time.time() + 10
        got = b""
        while time.time() < deadline and got != b"published\n":
            try:
                got = http_get(port)
            except OSError:
                time.sleep(0.05)
        assert got == b"published\n", got
        assert len(live_proxies(user)) == 1, live_proxies(user)
    finally:
        rk.ok("rm", "-f", "pub")
    with pytest.raises(OSError):
        http_get(port)
    assert live_proxies(user) == []
    # a privileged host port is root's: one line
    start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    if start > 80:
        r = rk("run", "--rm", "-p", "80:8080", rk.ref, "true")
        assert r.returncode == 125, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "host ports below" in lines[0], r.stderr
    assert rk.ok("ps", "-a", "-q").stdout.strip() == ""


def pure_v2():
    return (subprocess.run(["stat", "-fc", "%T", "/sys/fs/cgroup"], capture_output=True,
                           text=True).stdout.strip() == "cgroup2fs")


def v1_hierarchies(*controllers):
    """Mount points of the cgroup v1 hierarchies holding any of controllers."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fstype, _, opts = right.split()[:3]
            if fstype == "cgroup" and set(opts.split(",")) & set(controllers):
                out.append(left.split()[4])
    return out


@pytest.fixture(scope="module")
def delegated(user):
    """A cgroup delegated to the user: (directories to run racker in, the delegated cgroup's
    path in the unified hierarchy, the unified mount). On a systemd host it is systemd's own:
    user@UID.service of a lingering user (racker runs in a leaf below it, as `systemd-run
    --user --scope` puts it); elsewhere root makes one and gives it to the user in every
    hierarchy with memory, pids or cpu and systemd's own, as systemd's user manager would have
    it."""
    made = []
    if pure_v2():
        if not Path("/run/systemd/system").is_dir():
            pytest.skip("a cgroup v2 host without systemd: no user@.service to delegate")
        subprocess.run(["loginctl", "enable-linger", user.name], check=True)
        # (linger starts it too, in the background: wait for it here)
        subprocess.run(["systemctl", "start", f"user@{user.uid}.service"], check=True,
                       timeout=300)
        rel = f"/user.slice/user-{user.uid}.slice/user@{user.uid}.service"
        svc = Path("/sys/fs/cgroup" + rel)
        deadline = time.time() + 60
        while time.time() < deadline and not (svc.is_dir() and svc.stat().st_uid == user.uid):
            time.sleep(0.2)
        assert svc.is_dir() and svc.stat().st_uid == user.uid, f"{svc} is not the user's"
        leaf = svc / "racker-tests"
        leaf.mkdir(exist_ok=True)
        # what systemd gives a delegated unit's user: the directory and these three files
        for f in (leaf, leaf / "cgroup.procs", leaf / "cgroup.subtree_control",
                  leaf / "cgroup.threads"):
            os.chown(f, user.uid, user.gid)
        made.append(leaf)
        yield [str(leaf)], rel, "/sys/fs/cgroup"
    else:
        name = f"/racker-deleg-{user.uid}"
        unified = "/sys/fs/cgroup/unified"
        dirs = [d for d in [unified] + v1_hierarchies("memory", "pids", "cpu", "name=systemd")
                if os.path.isdir(d)]
        for d in dirs:
            Path(d + name).mkdir(exist_ok=True)
            user.chown(d + name)
            made.append(Path(d + name))
        yield [d + name for d in dirs], name, unified
    for d in made:  # children first (racker/<id> are gone with their containers)
        for sub in sorted(d.rglob("*"), key=lambda p: -len(p.parts)):
            if sub.is_dir():
                sub.rmdir()
        try:
            d.rmdir()
        except OSError:
            pass
    if pure_v2():
        subprocess.run(["loginctl", "disable-linger", user.name], check=False)


def test_limits_in_a_delegated_cgroup(rk, user, delegated):
    leaves, base, unified = delegated
    r = rk("run", "-d", "--name", "lim", "--network", "none", "--memory", "64m",
           "--pids-limit", "20", rk.ref, "sleep", "60", cgroups=leaves)
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    try:
        cg = f"{base}/racker/{cid}"
        if pure_v2():
            d = Path(unified + cg)
            assert (d / "memory.max").read_text().strip() == str(64 << 20)
            assert (d / "pids.max").read_text().strip() == "20"
            assert (d / "cgroup.procs").read_text().split(), "the container's processes"
        else:
            (mem,) = [h for h in v1_hierarchies("memory")]
            (pids,) = [h for h in v1_hierarchies("pids")]
            assert Path(mem + cg + "/memory.limit_in_bytes").read_text().strip() == str(64 << 20)
            assert Path(pids + cg + "/pids.max").read_text().strip() == "20"
            assert Path(pids + cg + "/cgroup.procs").read_text().split()
        # the container sees its limit
        r = rk("exec", "lim", "sh", "-c", "cat /sys/fs/cgroup/pids.max "
               "/sys/fs/cgroup/pids/pids.max 2>/dev/null")
        assert "20" in r.stdout.split(), (r.stdout, r.stderr)
    finally:
        rk.ok("rm", "-f", "lim")
    assert not Path(unified + f"{base}/racker/{cid}").exists()
    for h in v1_hierarchies("memory", "pids"):
        assert not Path(h + f"{base}/racker/{cid}").exists()


BAKE_CACHE = Path("/var/cache/racker-tests/bake")
OS_IMAGE = "racker-rootless-os:bookworm"


@pytest.fixture(scope="module")
def os_image(rk, racker_exe):
    """Debian bookworm with systemd in the user's store: baked by root (the rootfs cached as
    test_boot.py has it), saved, and loaded by the user."""
    if not shutil.which("mmdebstrap"):
        pytest.skip("mmdebstrap not installed (apt-get install mmdebstrap)")
    BAKE_CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rk-rootless-os-"))
    os.chmod(work, 0o755)
    try:
        p = subprocess.run([racker_exe, "--root", str(work / "store"), "bake", "-q",
                            "--cache-dir", str(BAKE_CACHE), "--suite", "bookworm", "--include",
                            "systemd,systemd-sysv,dbus", "--name", OS_IMAGE, "debian"],
                           capture_output=True, text=True, timeout=900)
        if p.returncode != 0 and "mmdebstrap failed" in p.stderr:
            pytest.skip("mmdebstrap could not build bookworm (no Debian archive?): "
                        + p.stderr[-300:])
        assert p.returncode == 0, p.stderr
        tar = work / "os.tar"
        subprocess.run([racker_exe, "--root", str(work / "store"), "save", "-o", str(tar),
                        OS_IMAGE], check=True, capture_output=True, timeout=300)
        os.chmod(tar, 0o644)
        rk.ok("load", "-q", "-i", str(tar), timeout=300)
    finally:
        subprocess.run([racker_exe, "--root", str(work / "store"), "rmi", "-f", OS_IMAGE],
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return OS_IMAGE


def cgroups_below(base, unified):
    """Container cgroups left below the delegated cgroup, in any hierarchy."""
    found = []
    for h in [unified] + v1_hierarchies("memory", "pids", "cpu", "name=systemd"):
        d = Path(h + base + "/racker")
        if d.is_dir():
            found += [str(c) for c in d.iterdir() if c.is_dir()]
    return found


def test_boot_as_user(rk, delegated, os_image):
    """systemd boots in the user's namespace (what systemd-nspawn -U does) below the cgroup
    delegated to the user; the command runs in the booted system, which then shuts down."""
    leaves, base, unified = delegated
    r = rk("run", "--rm", "--network", "none", os_image, "sh", "-c",
           "systemctl is-system-running --wait; cat /proc/1/comm; id -u; "
           "cat /proc/self/uid_map | head -1; exit 7", cgroups=leaves, timeout=120)
    assert r.returncode == 7, r.stderr
    lines = r.stdout.split("\n")
    assert lines[:3] == ["running", "systemd", "0"], r.stdout
    assert lines[3].split()[:2] == ["0", str(rk.user.uid)], r.stdout  # root inside is the user
    assert cgroups_below(base, unified) == []
    assert rk.ok("ps", "-a", "-q").stdout.strip() == ""


def test_boot_detached_exec_and_stop_as_user(rk, delegated, os_image):
    leaves, base, unified = delegated
    r = rk("run", "-d", "--name", "os1", "--network", "none", os_image, cgroups=leaves,
           timeout=120)
    assert r.returncode == 0, r.stderr
    try:
        out = rk("exec", "os1", "systemctl", "is-system-running", "--wait", cgroups=leaves,
                 timeout=60)
        assert out.stdout.strip() == "running", (out.stdout, out.stderr)
        assert cgroups_below(base, unified), "the system's cgroup is below the delegated one"
        rk.ok("stop", "os1", timeout=60)
    finally:
        rk.ok("rm", "-f", "os1", timeout=60)
    assert cgroups_below(base, unified) == []


def test_boot_interactive_as_user(rk, delegated, os_image):
    """racker run -it --rm IMAGE bash as an ordinary user."""
    leaves, _, _ = delegated
    master, slave = pty.openpty()
    script = ("for d in " + " ".join(f"'{c}'" for c in leaves) + "; do "
              "echo $$ > \"$d/cgroup.procs\" || exit 99; done; "
              f"exec setpriv --reuid={rk.user.uid} --regid={rk.user.gid} --clear-groups -- "
              '"$@"')
    p = subprocess.Popen(["sh", "-c", script, "sh", rk.exe, "--registries-conf", str(rk.conf),
                          "run", "-it", "--rm", "--network", "none", os_image, "bash"],
                         stdin=slave, stdout=slave, stderr=slave, env=rk.env(TERM="dumb"),
                         cwd="/", start_new_session=True)
    os.close(slave)
    try:
        os.write(master, b"echo answer=$((6*7)); tty; exit 3\n")
        out = read_pty(master, timeout=60)
        assert p.wait(timeout=30) == 3, out
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    assert b"answer=42" in out and b"/dev/pts/" in out, out
    assert rk.ok("ps", "-a", "-q").stdout.strip() == ""


@pytest.fixture(scope="module")
def postroj_exe(racker_exe):
    build = os.environ.get("RACKER_BUILD")
    path = Path(build) / "postroj" if build else Path(__file__).parents[2] / "build" / "postroj"
    if not os.access(path, os.X_OK):
        pytest.skip(f"postroj binary not found at {path}")
    copy = Path(racker_exe).parent / "postroj"
    shutil.copy2(path, copy)
    return str(copy)


def test_pkgprobe_of_a_real_package_as_user(rk, delegated, tun_for_users, postroj_exe):
    """postroj pkgprobe as an ordinary user: its own store, bake cache and package cache; the
    catalog's debian-bookworm baked (mmdebstrap in the user's namespace) and provisioned,
    lighttpd's .debs installed, its unit and its port checked."""
    leaves, _, _ = delegated
    debs = rk.data.parent / "debs"
    debs.mkdir(exist_ok=True)
    p = subprocess.run(["apt-get", "download", "lighttpd", "media-types", "lsb-base"], cwd=debs,
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        pytest.skip("apt-get download lighttpd failed (no Debian archive?): "
                    + p.stderr[-300:])
    os.chmod(debs, 0o755)
    seed = os.environ.get("RACKER_TEST_BAKE_SEED")
    if seed:
        # (the VM lane's guest, where mmdebstrap under TCG would take many minutes: the user's
        # bake cache starts with root's bookworm rootfs tarballs; the bake itself is the host's)
        cache = rk.data / "bake-cache"
        cache.mkdir(exist_ok=True)
        for j in Path(seed).glob("*.json"):
            tar = j.with_suffix(".tar")
            if json.loads(j.read_text()).get("suite") == "bookworm" and tar.exists():
                shutil.copy(j, cache)
                shutil.copy(tar, cache)
        for f in [cache, *cache.iterdir()]:
            os.chown(f, rk.user.uid, rk.user.gid)
    report = rk.data / "probe.xml"  # (rk.data is the user's; its parent root's)
    r = rk.user.run([postroj_exe, "--bake-cache", rk.data / "bake-cache", "pkgprobe",
                     "--image=debian-bookworm",
                     *[f"--package={f}" for f in sorted(debs.glob("*.deb"))],
                     "--check-unit=lighttpd", "--check-network=http://127.0.0.1:80/",
                     "--network-timeout=20", f"--report=junit:{report}"],
                    rk.env(XDG_CACHE_HOME=str(rk.data / "cache")), timeout=900,
                    cgroups=leaves)
    if r.returncode != 0 and ("mmdebstrap failed" in r.stderr or "apt" in r.stdout
                              and "Could not resolve" in r.stdout + r.stderr):
        pytest.skip("no Debian archive to bake and provision from: " + r.stderr[-300:])
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "PASSED: " in r.stdout and " 0 failed" in r.stdout, r.stdout  # (+ pull image: 5)
    assert "unit lighttpd.service" in r.stdout and "network http://127.0.0.1:80/" in r.stdout
    assert report.stat().st_uid == rk.user.uid
    assert rk.ok("ps", "-a", "-q").stdout.strip() == ""


def test_private_network_without_pasta_is_one_line(rk):
    empty = rk.data.parent / "nopasta"
    empty.mkdir(exist_ok=True)
    # newuidmap is not needed: the namespace exists already
    rk.ok("images")
    r = rk("run", "--rm", rk.ref, "true", env=rk.env(PATH=str(empty)))
    assert r.returncode == 125
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "needs pasta (apt-get install passt)" in lines[0], lines
    assert rk.ok("ps", "-a", "-q").stdout.strip() == ""


def test_users_own_registries_conf(rk, user, registry):
    reg = registry[0]
    cfg = rk.data.parent / "config"
    (cfg / "containers").mkdir(parents=True)
    (cfg / "containers" / "registries.conf").write_text(
        f'unqualified-search-registries = ["{reg.host}"]\n'
        f'[[registry]]\nlocation = "{reg.host}"\ninsecure = true\n')
    user.chown(cfg)
    # a short name resolves through the user's file (the system's knows nothing of it)
    r = user.run([rk.exe, "pull", "-q", "test/rootless:1"],
                 rk.env(XDG_CONFIG_HOME=str(cfg)), timeout=60)
    assert r.returncode == 0, r.stderr
    r = user.run([rk.exe, "pull", "-q", "test/rootless:1"], rk.env(), timeout=60)
    assert r.returncode != 0


def test_what_is_not_rootless_yet_says_so(rk):
    for args, want in ((["--boot"], "booting an OS container as an ordinary user needs a "
                                    "cgroup delegated to you"),
                       (["--userns", "auto"], "--userns=auto needs root"),
                       (["--memory", "64m", "--network", "none"],
                        f"has no cgroup: none here is writable by uid {rk.user.uid}")):
        r = rk("run", "--rm", *args, rk.ref, "true")
        assert r.returncode == 125, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and want in lines[0], (args, r.stderr)
    assert rk.ok("ps", "-a", "-q").stdout.strip() == ""


def test_zz_nothing_changed_outside_the_users_paths(user):
    """After every test above: no file outside the user's own paths (and root's, listed in
    NOT_THE_USERS) appeared, went, or changed owner, mode, size or contents (mtime)."""
    if "files" not in _snapshot:
        pytest.skip("no snapshot (test_00 did not run)")
    after = host_files(_snapshot["skip"])
    before = _snapshot["files"]
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert changed == [], changed[:20]
