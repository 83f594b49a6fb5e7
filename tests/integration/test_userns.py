"""User namespaces per container (--userns=auto, the default of booted OS containers): the
container's own 65536-id range from the subordinate ids of user "containers", the namespace
owned by that range (not by root), image layers id-mapped (never chown-ed on disk), ranges
disjoint and given back by rm. Plain containers on test_run.py's registry images; OS
containers on test_boot.py's baked bookworm."""

import fcntl
import glob
import json
import os
import struct
import subprocess

from test_boot import IMAGE, TIMEOUT, boot, store  # noqa: F401
from test_containers import ctx, detach, gone, name, ok  # noqa: F401
from test_run import bb_rootfs, images, racker_exe  # noqa: F401

NS_GET_OWNER_UID = 0xB704  # _IO(0xb7, 0x4)


def ns_owner(pid):
    """The uid that owns the user namespace of pid (ioctl NS_GET_OWNER_UID)."""
    with open(f"/proc/{pid}/ns/user", "rb") as f:
        buf = fcntl.ioctl(f.fileno(), NS_GET_OWNER_UID, struct.pack("I", 0))
    return struct.unpack("I", buf)[0]


def uid_map(text):
    """/proc/PID/uid_map text as [(inside, outside, count)]."""
    return [tuple(int(x) for x in line.split()) for line in text.strip().splitlines()]


def inspect(ctx, n):
    return json.loads(ok(ctx, "inspect", n).stdout)[0]


def lease_files():
    return set(glob.glob("/run/racker-userns/[0-9]*"))


def test_auto_gives_a_range_of_its_own(ctx):
    r = ok(ctx, "run", "--rm", "--userns=auto", ctx.images.bb, "cat", "/proc/self/uid_map")
    (inside, outside, count), = uid_map(r.stdout)
    assert (inside, count) == (0, 65536) and outside >= 65536, r
    # the host's ids stay the default of plain containers, as in docker
    r = ok(ctx, "run", "--rm", ctx.images.bb, "cat", "/proc/self/uid_map")
    assert uid_map(r.stdout) == [(0, 0, 4294967295)], r


def test_two_containers_get_disjoint_ranges_released_by_rm(ctx):
    before = lease_files()
    a, b = name(ctx, "ua"), name(ctx, "ub")
    ida = ok(ctx, "run", "-d", "--userns=auto", "--name", a, ctx.images.bb, "sleep", "100")
    idb = ok(ctx, "run", "-d", "--userns=auto", "--name", b, ctx.images.bb, "sleep", "100")
    ia, ib = inspect(ctx, a), inspect(ctx, b)
    ra, rb = ia["userns"], ib["userns"]
    assert ra["mode"] == rb["mode"] == "auto", (ia, ib)
    assert ra["size"] == rb["size"] == 65536
    assert ra["uid"] + 65536 <= rb["uid"] or rb["uid"] + 65536 <= ra["uid"], (ra, rb)
    for i, r in ((ia, ra), (ib, rb)):
        with open(f"/proc/{i['pid']}/uid_map") as f:
            assert uid_map(f.read()) == [(0, r["uid"], 65536)]
        with open(f"/proc/{i['pid']}/status") as f:
            uids = [l for l in f if l.startswith("Uid:")][0].split()[1:]
        assert uids == [str(r["uid"])] * 4, uids
        # owned by the range, not by root: per-user limits are its own
        assert ns_owner(i["pid"]) == r["uid"]
    assert len(lease_files() - before) == 2
    ok(ctx, "rm", "-f", a, b)
    gone(ctx, ida.stdout.strip(), a)
    gone(ctx, idb.stdout.strip(), b)
    assert not (lease_files() - before), "rm -f left id range leases"


def test_layers_are_id_mapped_not_chowned(ctx, tmp_path):
    vol = tmp_path / "vol"
    vol.mkdir()
    os.chmod(vol, 0o777)
    n = name(ctx, "idm")
    detach(ctx, n, "sleep", "100")  # a plain one first: the layers are unpacked by now
    ok(ctx, "rm", "-f", n)
    r = ok(ctx, "run", "--rm", "--userns=auto", "-v", f"{vol}:/data", ctx.images.bb, "sh", "-c",
           "cat /proc/self/uid_map; stat -c '%u:%g' / /bin/busybox /etc; touch /data/made; "
           "echo new > /etc/new; stat -c '%u' /etc/new")
    lines = r.stdout.split("\n")
    base = uid_map(lines[0])[0][1]
    # inside, the image's files are root's; the container's root owns what it writes
    assert lines[1:5] == ["0:0", "0:0", "0:0", "0"], r
    # on the host the layers are still owned by real root: nothing was chown-ed
    layer_files = glob.glob(str(ctx.root) + "/layers/*/fs/bin/busybox")
    assert layer_files and all(os.lstat(p).st_uid == 0 for p in layer_files)
    # a bind volume shows what the container wrote with the mapped ids
    st = os.lstat(vol / "made")
    assert (st.st_uid, st.st_gid) == (base, base), (st, base)


def test_exec_and_cp_in_a_userns_container(ctx, tmp_path):
    n = name(ctx, "uexec")
    cid = ok(ctx, "run", "-d", "--userns=auto", "--name", n, ctx.images.bb, "sleep", "100")
    base = inspect(ctx, n)["userns"]["uid"]
    r = ok(ctx, "exec", n, "sh", "-c", "id -u; cat /proc/self/uid_map")
    assert r.stdout.split("\n")[0] == "0" and uid_map("\n".join(r.stdout.split("\n")[1:])) == [
        (0, base, 65536)], r
    r = ok(ctx, "exec", "-u", "1000", n, "id", "-u")
    assert r.stdout == "1000\n", r
    src = tmp_path / "in.txt"
    src.write_text("copied\n")
    ok(ctx, "cp", str(src), f"{n}:/tmp/in.txt")
    r = ok(ctx, "exec", n, "stat", "-c", "%u:%g %n", "/tmp/in.txt")
    assert r.stdout == "0:0 /tmp/in.txt\n", r  # docker cp: the container's root owns it
    ok(ctx, "exec", n, "sh", "-c", "echo out > /tmp/out.txt")
    ok(ctx, "cp", f"{n}:/tmp/out.txt", str(tmp_path / "out.txt"))
    assert (tmp_path / "out.txt").read_text() == "out\n"
    ok(ctx, "rm", "-f", n)
    gone(ctx, cid.stdout.strip(), n)


def test_bad_userns_values(ctx):
    r = ctx("run", "--rm", "--userns=bogus", ctx.images.bb, "true")
    assert r.returncode == 125 and r.stderr.count("\n") <= 1, r
    assert 'invalid --userns "bogus"' in r.stderr, r
    r = ctx("run", "--rm", "--userns=auto", "--privileged", ctx.images.bb, "true")
    assert r.returncode == 125 and "--userns=host" in r.stderr, r
    assert not ctx.container_ids()


def test_os_container_boots_in_its_own_user_namespace(boot, tmp_path):
    before = lease_files()
    p = boot.run("sh", "-c", "cat /proc/self/uid_map; systemctl is-system-running; "
                 "stat -c '%u' /etc/machine-id /usr/bin/passwd; touch /root/x; stat -c '%u' /root/x")
    assert p.returncode == 0, p
    lines = p.stdout.split("\n")
    (inside, outside, count), = uid_map(lines[0])
    assert (inside, count) == (0, 65536) and outside > 0, p
    assert lines[1:5] == ["running", "0", "0", "0"], p
    assert not (lease_files() - before), "--rm left an id range lease"
    # --userns=host still boots with the host's ids
    p = boot.run("cat", "/proc/self/uid_map", flags=("--userns=host",))
    assert p.returncode == 0 and uid_map(p.stdout) == [(0, 0, 4294967295)], p


def test_os_containers_do_not_share_roots_inotify_budget(boot, racker_exe):
    """Two detached OS containers: their systemd's user namespaces are owned by different
    range uids, none by root (whose 128 inotify instances every root-made one shared)."""
    names = []
    try:
        for _ in range(2):
            n = "uboot-" + os.urandom(4).hex()
            p = subprocess.run([racker_exe, "--root", str(boot.root), "run", "-d", "--name", n,
                                IMAGE], capture_output=True, text=True, timeout=TIMEOUT)
            assert p.returncode == 0, p
            names.append(n)
        owners = []
        for n in names:
            p = subprocess.run([racker_exe, "--root", str(boot.root), "inspect", n],
                               capture_output=True, text=True, timeout=TIMEOUT)
            info = json.loads(p.stdout)[0]
            owners.append(ns_owner(info["pid"]))
            assert owners[-1] == info["userns"]["uid"] != 0, info
        assert owners[0] != owners[1]
    finally:
        if names:
            subprocess.run([racker_exe, "--root", str(boot.root), "rm", "-f", *names],
                           capture_output=True, timeout=TIMEOUT)
