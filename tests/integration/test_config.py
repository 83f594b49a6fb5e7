"""config.json fields, observed from inside the container (the payload prints, the test
checks) and, for cgroups and hooks, from the host."""

import fcntl
import json
import os
import re
import socket
import struct
import subprocess
import time

import pytest

from conftest import (cgroup_dirs_named, cgroup_dirs_of, cgroup_mounts, drop_namespace,
                      pid_alive, read_pty, require, wait_until)


def writable_root(c):
    c["root"]["readonly"] = False


def run_ok(racker, bundle):
    """Runs the bundle in the foreground; asserts exit 0; returns stdout."""
    r = racker.run(bundle)
    assert r.returncode == 0, r
    return r.stdout


def status_field(text, name):
    return re.search(rf"^{name}:\s*(.*)$", text, re.M).group(1).strip()


# --- process ---------------------------------------------------------------------------------


def test_hostname(racker, make_bundle):
    b = make_bundle(["hostname"], edit=lambda c: c.update(hostname="box-42"))
    assert run_ok(racker, b) == "box-42\n"


def test_domainname(racker, make_bundle):
    b = make_bundle(["cat", "/proc/sys/kernel/domainname"],
                    edit=lambda c: c.update(domainname="example.org"))
    assert run_ok(racker, b) == "example.org\n"


def test_env_is_exactly_process_env(racker, make_bundle):
    # with a HOME of its own: without one the runtime adds HOME from /etc/passwd, as runc does
    # (test_engines.py::test_runtime_sets_home_from_passwd)
    env = ["PATH=/bin:/usr/bin", "FOO=bar baz", "EMPTY=", "WITH_EQ=a=b", "HOME=/nowhere"]

    def edit(c):
        c["process"]["env"] = env + [e for e in c["process"]["env"]
                                     if e.startswith("RACKER_TEST_BUNDLE=")]

    b = make_bundle(["env"], edit=edit)
    got = run_ok(racker, b).splitlines()
    assert sorted(got) == sorted(b.config["process"]["env"])


def test_cwd(racker, make_bundle):
    b = make_bundle(["pwd"], edit=lambda c: c["process"].update(cwd="/usr/bin"))
    assert run_ok(racker, b) == "/usr/bin\n"


def test_user_uid_gid_additional_gids(racker, make_bundle):
    def edit(c):
        c["process"]["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [5, 2000]}

    b = make_bundle(["sh", "-c", "id -u; id -g; grep -E '^(Uid|Gid|Groups):' /proc/self/status"],
                    edit=edit)
    out = run_ok(racker, b).splitlines()
    assert out[0] == "1000"
    assert out[1] == "1001"
    status = "\n".join(out[2:])
    assert status_field(status, "Uid").split() == ["1000"] * 4
    assert status_field(status, "Gid").split() == ["1001"] * 4
    assert sorted(map(int, status_field(status, "Groups").split())) == [5, 2000]


def test_user_without_additional_gids_has_no_groups(racker, make_bundle):
    b = make_bundle(["grep", "^Groups:", "/proc/self/status"],
                    edit=lambda c: c["process"].update(user={"uid": 1000, "gid": 1000}))
    assert status_field(run_ok(racker, b), "Groups") == ""


def test_umask(racker, make_bundle):
    def edit(c):
        writable_root(c)
        c["process"]["user"]["umask"] = 0o077

    b = make_bundle(["sh", "-c", "umask; touch /tmp/f; stat -c %a /tmp/f"], edit=edit)
    assert run_ok(racker, b).split() == ["0077", "600"]


def test_rlimit_nofile(racker, make_bundle):
    def edit(c):
        c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024}]

    b = make_bundle(["sh", "-c", "ulimit -n; ulimit -Hn"], edit=edit)
    assert run_ok(racker, b).split() == ["512", "1024"]


def test_rlimit_several(racker, make_bundle):
    def edit(c):
        c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200},
                                   {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
                                   {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400}]

    b = make_bundle(["cat", "/proc/self/limits"], edit=edit)
    limits = run_ok(racker, b)
    assert re.search(r"^Max open files\s+100\s+200\s", limits, re.M), limits
    assert re.search(r"^Max core file size\s+0\s+0\s", limits, re.M), limits
    assert re.search(r"^Max processes\s+300\s+400\s", limits, re.M), limits


def test_capabilities_only_chown(racker, make_bundle):
    def edit(c):
        writable_root(c)
        c["process"]["capabilities"] = {k: ["CAP_CHOWN"] for k in
                                        ("bounding", "effective", "permitted", "inheritable",
                                         "ambient")}

    b = make_bundle(["sh", "-c", "grep ^Cap /proc/self/status; touch /tmp/f; chown 1:1 /tmp/f && "
                     "echo chown-ok; hostname other 2>/dev/null && echo hostname-ok; true"],
                    edit=edit)
    out = run_ok(racker, b)
    assert status_field(out, "CapEff") == "0000000000000001"
    assert status_field(out, "CapPrm") == "0000000000000001"
    assert status_field(out, "CapBnd") == "0000000000000001"
    assert "chown-ok" in out
    assert "hostname-ok" not in out  # CAP_SYS_ADMIN is gone


def test_capabilities_of_template(racker, make_bundle):
    # AUDIT_WRITE (29), KILL (5), NET_BIND_SERVICE (10)
    b = make_bundle(["grep", "^Cap", "/proc/self/status"])
    out = run_ok(racker, b)
    want = f"{(1 << 29) | (1 << 5) | (1 << 10):016x}"
    for field in ("CapEff", "CapPrm", "CapBnd"):
        assert status_field(out, field) == want, (field, out)


def test_empty_capabilities_object_means_no_capabilities(racker, make_bundle):
    """docker's --cap-drop ALL sends `"capabilities": {}`: every set left out is empty. Read
    as "leave the sets alone", root's execve regained the whole bounding set."""
    def edit(c):
        writable_root(c)
        c["process"]["capabilities"] = {}

    b = make_bundle(["sh", "-c", "grep ^Cap /proc/self/status; touch /tmp/f; "
                     "chown 1:1 /tmp/f 2>/dev/null && echo chown-ok; true"], edit=edit)
    out = run_ok(racker, b)
    for field in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"):
        assert status_field(out, field) == "0000000000000000", (field, out)
    assert "chown-ok" not in out


def test_blkio_weight_zero_means_unset(racker, make_bundle):
    """docker always sends blockIO.weight 0 (and cpu.shares 0) meaning "not set"; a host
    without a blkio weight knob (this one: BFQ off) must still run the container."""
    def edit(c):
        c["linux"]["resources"] = {"blockIO": {"weight": 0}, "cpu": {"shares": 0},
                                   "memory": {"disableOOMKiller": False}}

    b = make_bundle(["true"], edit=edit)
    run_ok(racker, b)


def test_capabilities_for_non_root_user_via_ambient(racker, make_bundle):
    def edit(c):
        c["process"]["user"] = {"uid": 1000, "gid": 1000}
        c["process"]["capabilities"] = {k: ["CAP_NET_BIND_SERVICE"] for k in
                                        ("bounding", "effective", "permitted", "inheritable",
                                         "ambient")}

    b = make_bundle(["grep", "^CapEff", "/proc/self/status"], edit=edit)
    assert status_field(run_ok(racker, b), "CapEff") == f"{1 << 10:016x}"


@pytest.mark.parametrize("nnp,want", [(True, "1"), (False, "0")])
def test_no_new_privileges(racker, make_bundle, nnp, want):
    b = make_bundle(["grep", "^NoNewPrivs:", "/proc/self/status"],
                    edit=lambda c: c["process"].update(noNewPrivileges=nnp))
    assert status_field(run_ok(racker, b), "NoNewPrivs") == want


def test_oom_score_adj(racker, make_bundle):
    b = make_bundle(["cat", "/proc/self/oom_score_adj"],
                    edit=lambda c: c["process"].update(oomScoreAdj=123))
    assert run_ok(racker, b) == "123\n"


# --- root and mounts ---------------------------------------------------------------------------


def test_readonly_root(racker, make_bundle):
    b = make_bundle(["sh", "-c", "touch /x && echo wrote; echo rc=$?"])
    assert b.config["root"]["readonly"] is True
    r = racker.run(b)
    assert r.returncode == 0, r
    assert "wrote" not in r.stdout
    assert "Read-only file system" in r.stderr
    assert not (b.rootfs / "x").exists()


def test_writable_root(racker, make_bundle):
    b = make_bundle(["sh", "-c", "echo data > /x && cat /x"], edit=writable_root)
    assert run_ok(racker, b) == "data\n"
    assert (b.rootfs / "x").read_text() == "data\n"


def test_root_path_absolute(racker, make_bundle, busybox_rootfs):
    b = make_bundle(["cat", "/etc/hostname"])
    b.edit(lambda c: c["root"].update(path=str(b.rootfs)))
    assert run_ok(racker, b) == "racker\n"


def bound_host_dir(tmp_path, mode):
    """tmp_path/hostdir holding hello ("from host"), and an edit for make_bundle that
    bind-mounts it (rbind, mode "rw" or "ro") at /data."""
    host = tmp_path / "hostdir"
    host.mkdir()
    (host / "hello").write_text("from host\n")

    def edit(c):
        c["mounts"].append({"destination": "/data", "type": "bind", "source": str(host),
                            "options": ["rbind", mode]})

    return host, edit


def test_bind_mount_rw(racker, make_bundle, tmp_path):
    host, edit = bound_host_dir(tmp_path, "rw")
    b = make_bundle(["sh", "-c", "cat /data/hello; echo from container > /data/new"], edit=edit)
    assert run_ok(racker, b) == "from host\n"
    assert (host / "new").read_text() == "from container\n"


def test_bind_mount_ro(racker, make_bundle, tmp_path):
    host, edit = bound_host_dir(tmp_path, "ro")
    b = make_bundle(["sh", "-c", "cat /data/hello; echo x > /data/new; echo rc=$?"], edit=edit)
    r = racker.run(b)
    assert r.returncode == 0, r
    assert r.stdout.splitlines() == ["from host", "rc=1"]
    assert "Read-only file system" in r.stderr
    assert not (host / "new").exists()


def test_tmpfs_tmpcopyup_keeps_what_the_directory_held(racker, make_bundle):
    """podman --read-only puts tmpcopyup on /tmp, /var/tmp and /run: the tmpfs starts as a
    copy of the directory it covers (files, symlinks, modes), writable on a read-only root."""
    def edit(c):
        c["root"]["readonly"] = True
        c["mounts"].append({"destination": "/bin", "type": "tmpfs", "source": "tmpfs",
                            "options": ["nosuid", "nodev", "tmpcopyup"]})

    b = make_bundle(["sh", "-c", "ls /bin | wc -l; readlink /bin/sh; stat -c %a /bin/busybox; "
                     "touch /bin/new && echo writable; touch /etc/new 2>/dev/null || echo ro-root"],
                    edit=edit)
    count, link, mode, writable, ro = run_ok(racker, b).split()
    host = b.path / "rootfs" / "bin"
    assert int(count) == len(os.listdir(host)), count
    assert link == os.readlink(host / "sh")
    assert mode == f"{os.stat(host / 'busybox').st_mode & 0o7777:o}"
    assert (writable, ro) == ("writable", "ro-root")
    assert not (host / "new").exists()  # the copy, not the image, was written


def test_tmpcopyup_on_a_bind_mount_is_refused(racker, make_bundle, tmp_path):
    def edit(c):
        c["mounts"].append({"destination": "/data", "type": "bind", "source": str(tmp_path),
                            "options": ["rbind", "tmpcopyup"]})

    r = racker.run(make_bundle(["true"], edit=edit))
    assert r.returncode == 1, r
    assert "tmpcopyup needs a tmpfs mount" in r.stderr, r


def test_bind_mount_of_a_file(racker, make_bundle, tmp_path):
    f = tmp_path / "resolv.conf"
    f.write_text("nameserver 192.0.2.1\n")

    def edit(c):
        c["mounts"].append({"destination": "/etc/resolv.conf", "type": "none",
                            "source": str(f), "options": ["bind", "ro"]})

    b = make_bundle(["cat", "/etc/resolv.conf"], edit=edit)
    assert run_ok(racker, b) == "nameserver 192.0.2.1\n"


def test_tmpfs_mount_size_and_mode(racker, make_bundle):
    def edit(c):
        c["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                            "options": ["nosuid", "nodev", "size=1m", "mode=0710"]})

    b = make_bundle(["sh", "-c", "stat -c %a /scratch; grep ' /scratch ' /proc/self/mountinfo; "
                     "echo x > /scratch/f && cat /scratch/f"], edit=edit)
    out = run_ok(racker, b).splitlines()
    assert out[0] == "710"
    line = out[1]
    assert " - tmpfs " in line
    assert "size=1024k" in line
    assert "mode=710" in line
    assert "nosuid" in line.split(" - ")[0] and "nodev" in line.split(" - ")[0]
    assert out[2] == "x"


def test_masked_paths(racker, make_bundle):
    def edit(c):
        c["linux"]["maskedPaths"] += ["/etc/secret", "/secretdir", "/does/not/exist",
                                      "/proc/cmdline"]

    b = make_bundle(["sh", "-c", "cat /etc/secret; ls -A /secretdir; wc -c < /proc/cmdline; "
                     "echo end"], edit=edit)
    (b.rootfs / "etc/secret").write_text("topsecret\n")
    (b.rootfs / "secretdir").mkdir()
    (b.rootfs / "secretdir/inner").write_text("hidden\n")
    out = run_ok(racker, b)
    assert "topsecret" not in out and "inner" not in out
    assert out.split() == ["0", "end"]


def test_readonly_paths(racker, make_bundle):
    def edit(c):
        writable_root(c)
        c["linux"]["readonlyPaths"] += ["/rodir"]

    b = make_bundle(["sh", "-c", "cat /rodir/f; touch /rodir/x; echo rc=$?; touch /tmp/y; "
                     "echo rc=$?"], edit=edit)
    (b.rootfs / "rodir").mkdir()
    (b.rootfs / "rodir/f").write_text("readable\n")
    r = racker.run(b)
    assert r.returncode == 0, r
    assert r.stdout.splitlines() == ["readable", "rc=1", "rc=0"]
    assert "Read-only file system" in r.stderr


def test_proc_sys_readonly_by_template(racker, make_bundle):
    b = make_bundle(["grep", " /proc/sys ", "/proc/self/mountinfo"])
    lines = run_ok(racker, b).splitlines()
    assert lines, "no mount at /proc/sys"
    assert "ro" in lines[-1].split()[5].split(","), lines


# --- linux -----------------------------------------------------------------------------------


def test_sysctl_with_template_readonly_proc_sys(racker, make_bundle):
    # The template from `racker-oci spec` makes /proc/sys read-only; sysctls must still be
    # applied (runc writes them before it makes readonlyPaths read-only).
    def edit(c):
        assert "/proc/sys" in c["linux"]["readonlyPaths"]
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}

    b = make_bundle(["cat", "/proc/sys/net/ipv4/ip_forward"], edit=edit)
    assert run_ok(racker, b) == "1\n"


def test_sysctl_without_readonly_proc_sys(racker, make_bundle):
    def edit(c):
        c["linux"]["readonlyPaths"].remove("/proc/sys")
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmni": "1234"}

    b = make_bundle(["cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/shmmni"],
                    edit=edit)
    assert run_ok(racker, b).split() == ["1", "1234"]
    with open("/proc/sys/kernel/shmmni") as f:
        assert f.read().strip() != "1234"  # the host's own value is untouched


def test_network_namespace_only_lo(racker, make_bundle):
    b = make_bundle(["cat", "/proc/net/dev"])
    lines = run_ok(racker, b).splitlines()[2:]
    assert [line.split(":")[0].strip() for line in lines] == ["lo"]


def test_no_network_namespace_sees_host_interfaces(racker, make_bundle):
    b = make_bundle(["cat", "/proc/net/dev"], edit=lambda c: drop_namespace(c, "network"))
    ifaces = {line.split(":")[0].strip() for line in run_ok(racker, b).splitlines()[2:]}
    with open("/proc/net/dev") as f:
        host = {line.split(":")[0].strip() for line in f.read().splitlines()[2:]}
    assert ifaces == host


def test_pid_namespace_pid_is_1(racker, make_bundle):
    b = make_bundle(["sh", "-c", "echo $$"])
    assert run_ok(racker, b) == "1\n"


def test_without_pid_namespace_pid_is_not_1(racker, make_bundle):
    b = make_bundle(["sh", "-c", "echo $$"], edit=lambda c: drop_namespace(c, "pid"))
    assert int(run_ok(racker, b)) > 1


def test_namespaces_differ_from_host(racker, make_bundle):
    kinds = ["pid", "net", "ipc", "uts", "mnt", "cgroup"]
    b = make_bundle(["sh", "-c", " ".join(f"readlink /proc/self/ns/{k};" for k in kinds)])
    inside = run_ok(racker, b).split()
    for k, v in zip(kinds, inside):
        assert v != os.readlink(f"/proc/self/ns/{k}"), k


def test_join_existing_namespace_by_path(racker, make_bundle):
    # a first container owns a network namespace; a second one joins it by path
    b1 = make_bundle(["sleep", "30"])
    c1, _ = racker.create(b1)
    pid = racker.state(c1)["pid"]

    def edit(c):
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"]
                                    if n["type"] != "network"]
        c["linux"]["namespaces"].append({"type": "network", "path": f"/proc/{pid}/ns/net"})

    b2 = make_bundle(["readlink", "/proc/self/ns/net"], edit=edit)
    assert run_ok(racker, b2).strip() == os.readlink(f"/proc/{pid}/ns/net")


def add_user_namespace(c, uid_host, gid_host):
    """Puts the container into a new user namespace that maps its uids 0-65535 to the host's
    from uid_host on, its gids from gid_host on."""
    c["linux"]["namespaces"].append({"type": "user"})
    c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": uid_host, "size": 65536}]
    c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": gid_host, "size": 65536}]


def test_user_namespace_mappings(racker, make_bundle):
    require("userns")
    b = make_bundle(["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; "
                     "stat -c %u /bin/busybox"],
                    edit=lambda c: add_user_namespace(c, 100000, 100000), traversable=True)
    out = run_ok(racker, b).splitlines()
    assert out[0].split() == ["0", "100000", "65536"]
    assert out[1].split() == ["0", "100000", "65536"]
    assert out[2] == "0"
    assert out[3] == "65534"  # the rootfs belongs to host root, which is not mapped


def test_user_namespace_host_view(racker, make_bundle):
    require("userns")

    def edit(c):
        add_user_namespace(c, 100000, 200000)
        c["process"]["user"] = {"uid": 1000, "gid": 1000}

    b = make_bundle(["sleep", "30"], edit=edit, traversable=True)
    cid, _ = racker.create(b)
    racker.ok("start", cid)
    pid = racker.state(cid)["pid"]
    with open(f"/proc/{pid}/status") as f:
        st = f.read()
    assert status_field(st, "Uid").split()[0] == "101000"
    assert status_field(st, "Gid").split()[0] == "201000"


def test_user_namespace_reaches_what_only_root_can(racker, make_bundle, tmp_path):
    """A container whose root is an unprivileged host uid, set up by root: its rootfs, bind
    sources and a network namespace made by the host all lie where that uid may not go (pytest's
    0700 directories, a namespace owned by the host's user namespace). The runtime joins the
    network namespace before making the user namespace, hands the binds over as detached mounts
    and reaches the rootfs from its parent directory; the namespace belongs to the mapped root;
    an "idmap" mount shows root's files as the container's root's."""
    require("userns")
    private = tmp_path / "private"
    (private / "vol").mkdir(parents=True)
    (private / "vol" / "f").write_text("from the host\n")
    (private / "idm").mkdir()
    (private / "idm" / "g").write_text("mapped\n")
    os.chmod(private, 0o700)
    netns = "rk-userns-" + os.urandom(4).hex()
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        def edit(c):
            add_user_namespace(c, 300000, 300000)
            for n in c["linux"]["namespaces"]:
                if n["type"] == "network":
                    n["path"] = f"/run/netns/{netns}"
            c["mounts"] += [
                {"destination": "/vol", "type": "bind", "source": str(private / "vol"),
                 "options": ["rbind", "ro"]},
                {"destination": "/idm", "type": "bind", "source": str(private / "idm"),
                 "options": ["rbind", "idmap"]}]

        b = make_bundle(["sh", "-c", "cat /vol/f; stat -c '%u %n' /vol/f /idm/g; cat /idm/g; "
                         "readlink /proc/self/ns/net"], edit=edit)
        os.chown(b.rootfs, 300000, 300000)
        out = run_ok(racker, b).splitlines()
        assert out[:4] == ["from the host", "65534 /vol/f", "0 /idm/g", "mapped"], out
        assert out[4] == f"net:[{os.stat(f'/run/netns/{netns}').st_ino}]", out
        b2 = make_bundle(["sleep", "30"], edit=edit)
        os.chown(b2.rootfs, 300000, 300000)
        cid, _ = racker.create(b2)
        pid = racker.state(cid)["pid"]
        with open(f"/proc/{pid}/ns/user", "rb") as f:
            owner = struct.unpack("I", fcntl.ioctl(f.fileno(), 0xB704, struct.pack("I", 0)))[0]
        assert owner == 300000  # NS_GET_OWNER_UID: the mapped root, not host root
        racker.ok("delete", "--force", cid)
    finally:
        subprocess.run(["ip", "netns", "del", netns])


def test_device_custom_char(racker, make_bundle):
    def edit(c):
        c["linux"]["devices"] = [{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
                                  "fileMode": 0o666, "uid": 1000, "gid": 1001}]

    b = make_bundle(["sh", "-c", "stat -c '%F %a %u %g %t %T' /dev/mynull; echo hi > /dev/mynull "
                     "&& echo write-ok; cat /dev/mynull; echo end"], edit=edit)
    out = run_ok(racker, b).splitlines()
    assert out[0] == "character special file 666 1000 1001 1 3"
    assert out[1:] == ["write-ok", "end"]


TUN = (10, 200)  # /dev/net/tun: opening it needs no capability, only the device cgroup's leave


def need_tun():
    st = os.stat("/dev/net/tun") if os.path.exists("/dev/net/tun") else None
    if not st or (os.major(st.st_rdev), os.minor(st.st_rdev)) != TUN:
        pytest.skip("no /dev/net/tun (c 10:200) on this host")


def test_device_outside_defaults_with_cgroup_rule(racker, make_bundle):
    need_tun()

    def edit(c):
        c["linux"]["devices"] = [{"path": "/dev/mytun", "type": "c", "major": 10, "minor": 200}]
        c["linux"]["resources"]["devices"].append(
            {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rw"})

    b = make_bundle(["sh", "-c", "(: < /dev/mytun) && echo open-ok"], edit=edit)
    assert run_ok(racker, b) == "open-ok\n"


def test_device_cgroup_denies_others(racker, make_bundle):
    # mknod is allowed by the default rules, opening a device outside the list is not
    need_tun()

    def edit(c):
        c["process"]["capabilities"] = None  # keep root's capabilities (CAP_MKNOD)

    b = make_bundle(["sh", "-c", "mknod /dev/tun2 c 10 200 && echo mknod-ok; (: < /dev/tun2) && "
                     "echo open-ok; true"], edit=edit)
    r = racker.run(b)
    assert r.returncode == 0, r
    assert r.stdout == "mknod-ok\n"
    assert "Operation not permitted" in r.stderr


def test_seccomp_errno(racker, make_bundle):
    require("seccomp")

    def edit(c):
        writable_root(c)
        c["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": 42}],
        }

    b = make_bundle(["sh", "-c", "mkdir /tmp/d; echo rc=$?; touch /tmp/f && echo touch-ok"],
                    edit=edit)
    r = racker.run(b)
    assert r.returncode == 0, r
    assert r.stdout == "rc=1\ntouch-ok\n"
    assert os.strerror(42) in r.stderr  # ENOMSG: "No message of desired type"
    assert not (b.rootfs / "tmp/d").exists()


def test_seccomp_errno_default_is_eperm(racker, make_bundle):
    require("seccomp")

    def edit(c):
        c["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
            "syscalls": [{"names": ["sethostname", "no_such_syscall_name"],
                          "action": "SCMP_ACT_ERRNO"}],
        }
        c["process"]["capabilities"] = None  # root keeps CAP_SYS_ADMIN: only seccomp refuses

    b = make_bundle(["sh", "-c", "hostname other; echo rc=$?; hostname"], edit=edit)
    r = racker.run(b)
    assert r.returncode == 0, r
    assert r.stdout == "rc=1\nracker\n"
    assert os.strerror(1) in r.stderr  # Operation not permitted


def test_seccomp_kill(racker, make_bundle):
    require("seccomp")

    def edit(c):
        c["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}],
        }

    b = make_bundle(["sh", "-c", "echo $PPID"], edit=edit)
    r = racker.run(b)
    assert r.returncode == 128 + 31, r  # SIGSYS


def test_annotations_in_state(racker, make_bundle):
    b = make_bundle(["sleep", "30"],
                    edit=lambda c: c.update(annotations={"org.example.key": "value"}))
    cid, _ = racker.create(b)
    assert racker.state(cid)["annotations"] == {"org.example.key": "value"}


# --- hooks -----------------------------------------------------------------------------------


def hook(out_dir, name, extra=""):
    """A host-side hook that saves its stdin (the state) and appends its name to an order
    file."""
    return {"path": "/bin/sh",
            "args": ["sh", "-c",
                     f"/bin/cat > {out_dir}/{name}.json; echo {name} >> {out_dir}/order; {extra}"]}


def bundle_with_recording_hooks(make_bundle, args, out):
    """A bundle running args whose prestart, createRuntime, poststart and poststop hooks each
    record the state they get and their turn in out (see hook())."""
    out.mkdir()

    def edit(c):
        c["hooks"] = {k: [hook(out, k)] for k in ("prestart", "createRuntime", "poststart",
                                                  "poststop")}

    return make_bundle(args, edit=edit)


def test_hooks_state_and_order(racker, make_bundle, tmp_path):
    out = tmp_path / "hooks"
    b = bundle_with_recording_hooks(make_bundle, ["sleep", "30"], out)
    cid, _ = racker.create(b)
    pid = racker.state(cid)["pid"]
    assert (out / "order").read_text().split() == ["prestart", "createRuntime"]
    for k in ("prestart", "createRuntime"):
        st = json.loads((out / f"{k}.json").read_text())
        assert st["id"] == cid
        assert st["status"] in ("creating", "created")
        assert st["pid"] == pid
        assert st["bundle"] == str(b.path)
        assert st["ociVersion"].startswith("1.")

    racker.ok("start", cid)
    assert (out / "order").read_text().split() == ["prestart", "createRuntime", "poststart"]
    st = json.loads((out / "poststart.json").read_text())
    assert (st["id"], st["status"], st["pid"], st["bundle"]) == (cid, "running", pid, str(b.path))

    racker.ok("kill", cid, "KILL")
    racker.wait_status(cid, "stopped")
    assert not (out / "poststop.json").exists()
    racker.ok("delete", cid)
    assert (out / "order").read_text().split() == ["prestart", "createRuntime", "poststart",
                                                   "poststop"]
    st = json.loads((out / "poststop.json").read_text())
    assert (st["id"], st["status"], st["bundle"]) == (cid, "stopped", str(b.path))


def test_hooks_container_side(racker, make_bundle, tmp_path):
    # createContainer: path resolves on the host (before pivot_root), runs in the container's
    # namespaces; startContainer: path resolves in the container.
    out = tmp_path / "hooks"
    out.mkdir()

    def edit(c):
        writable_root(c)
        c["hooks"] = {
            "createContainer": [hook(out, "createContainer", "/bin/hostname >> %s/cc-host"
                                     % out)],
            "startContainer": [{"path": "/bin/sh",
                                "args": ["sh", "-c", "cat > /tmp/startContainer.json; hostname "
                                         "> /tmp/sc-host"]}],
        }

    b = make_bundle(["sh", "-c", "cat /tmp/sc-host"], edit=edit)
    cid, r = racker.create(b)
    st = json.loads((out / "createContainer.json").read_text())
    assert st["id"] == cid
    assert (out / "cc-host").read_text() == "racker\n"  # in the container's uts namespace
    assert not (b.rootfs / "tmp/startContainer.json").exists()
    racker.ok("start", cid)
    racker.wait_status(cid, "stopped")
    assert json.loads((b.rootfs / "tmp/startContainer.json").read_text())["id"] == cid
    assert r.stdout == "racker\n"


def test_hook_args_and_env(racker, make_bundle, tmp_path):
    out = tmp_path / "hook-out"

    def edit(c):
        c["hooks"] = {"prestart": [{"path": "/bin/sh",
                                    "args": ["my-hook-name", "-c", 'echo "$0 $1 $FOO $PATH" > '
                                             f"{out}", "zeroth", "first-arg"],
                                    "env": ["FOO=bar", "PATH=/nowhere"]}]}

    b = make_bundle(["true"], edit=edit)
    racker.create(b)
    assert out.read_text() == "zeroth first-arg bar /nowhere\n"


def test_hooks_run_also_for_run(racker, make_bundle, tmp_path):
    out = tmp_path / "hooks"
    b = bundle_with_recording_hooks(make_bundle, ["true"], out)
    r = racker.run(b)
    assert r.returncode == 0, r
    assert (out / "order").read_text().split() == ["prestart", "createRuntime", "poststart",
                                                   "poststop"]


def test_prestart_hook_failure_fails_create_and_leaves_nothing(racker, make_bundle, tmp_path):
    out = tmp_path / "hooks"
    out.mkdir()

    def edit(c):
        c["hooks"] = {"prestart": [hook(out, "prestart", "exit 3")],
                      "poststart": [hook(out, "poststart")]}

    b = make_bundle(["sleep", "30"], edit=edit)
    cid = racker.new_id()
    r = racker("create", "--bundle", b.path, cid)
    assert r.returncode == 1
    assert r.stderr == "racker-oci: prestart hook #0: hook /bin/sh exited with status 3\n"
    st = json.loads((out / "prestart.json").read_text())
    pid = st["pid"]
    assert not os.path.exists(racker.root / cid)
    assert racker.list_ids() == []
    assert racker("state", cid).returncode == 1
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or
               open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] in "ZX",
               what="the init to be gone")
    assert cgroup_dirs_named(cid) == []
    assert (out / "order").read_text().split() == ["prestart"]


def test_prestart_hook_timeout(racker, make_bundle):
    def edit(c):
        c["hooks"] = {"prestart": [{"path": "/bin/sleep", "args": ["sleep", "10"],
                                    "timeout": 1}]}

    b = make_bundle(["true"], edit=edit)
    cid = racker.new_id()
    t0 = time.monotonic()
    r = racker("create", "--bundle", b.path, cid)
    assert time.monotonic() - t0 < 5
    assert r.returncode == 1
    assert r.stderr == "racker-oci: prestart hook #0: hook /bin/sleep timed out after 1s\n"
    assert racker.list_ids() == []


def test_poststart_hook_failure_only_warns(racker, make_bundle, tmp_path):
    out = tmp_path / "hooks"
    out.mkdir()

    def edit(c):
        c["hooks"] = {"poststart": [hook(out, "poststart", "exit 4"), hook(out, "second")]}

    b = make_bundle(["sleep", "30"], edit=edit)
    cid, _ = racker.create(b)
    r = racker("start", cid)
    assert r.returncode == 0, r
    assert r.stderr == "racker-oci: poststart hook #0: hook /bin/sh exited with status 4\n"
    assert racker.status(cid) == "running"
    assert (out / "order").read_text().split() == ["poststart", "second"]


def test_poststop_hook_failure_only_warns(racker, make_bundle, tmp_path):
    out = tmp_path / "hooks"
    out.mkdir()
    b = make_bundle(["true"],
                    edit=lambda c: c.update(hooks={"poststop": [hook(out, "poststop", "exit 5")]}))
    cid, _ = racker.create(b)
    racker.ok("start", cid)
    racker.wait_status(cid, "stopped")
    r = racker("delete", cid)
    assert r.returncode == 0, r
    assert r.stderr == "racker-oci: poststop hook #0: hook /bin/sh exited with status 5\n"
    assert racker.list_ids() == []


# --- cgroups ---------------------------------------------------------------------------------


def v1_hierarchy(name):
    path = f"/sys/fs/cgroup/{name}"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, post = line.split(" - ")
            if pre.split()[4] == path and post.split()[0] == "cgroup":
                return path
    return None


def test_cgroup_memory_and_pids_limits(racker, make_bundle):
    if not v1_hierarchy("memory") or not v1_hierarchy("pids"):
        pytest.skip("needs the v1 memory and pids hierarchies (hybrid host)")

    def edit(c):
        c["linux"]["resources"]["memory"] = {"limit": 64 * 1024 * 1024}
        c["linux"]["resources"]["pids"] = {"limit": 20}

    b = make_bundle(["sh", "-c", "cat /proc/self/cgroup; echo --; "
                     "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max;"
                     " sleep 30"], edit=edit)
    cid, r = racker.create(b)
    racker.ok("start", cid)
    pid = racker.state(cid)["pid"]
    dirs = cgroup_dirs_of(pid)
    assert dirs["memory"].endswith("/" + cid), dirs
    with open(dirs["memory"] + "/memory.limit_in_bytes") as f:
        assert int(f.read()) == 64 * 1024 * 1024
    with open(dirs["pids"] + "/pids.max") as f:
        assert f.read().strip() == "20"
    with open(dirs["pids"] + "/cgroup.procs") as f:
        assert str(pid) in f.read().split()

    wait_until(lambda: "--" in r.stdout and len(r.stdout.split("--")[1].split()) == 2,
               what="payload output")
    own, limits = r.stdout.split("--")
    # cgroup namespace (template): the container sees itself at the root of each hierarchy
    for line in own.strip().splitlines():
        assert line.split(":", 2)[2] == "/", line
    assert limits.split() == [str(64 * 1024 * 1024), "20"]

    racker.ok("delete", "--force", cid)
    for d in dirs.values():
        if d.endswith("/" + cid):
            assert not os.path.exists(d), d


def test_cgroup_without_namespace_shows_path(racker, make_bundle):
    b = make_bundle(["cat", "/proc/self/cgroup"], edit=lambda c: drop_namespace(c, "cgroup"))
    cid = racker.new_id()
    r = racker("run", "--bundle", b.path, cid)
    assert r.returncode == 0, r
    paths = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in r.stdout.splitlines()}
    assert paths["memory"].endswith("/" + cid), paths
    assert cgroup_dirs_named(cid) == []


def test_cgroups_path_absolute(racker, make_bundle):
    if not v1_hierarchy("pids"):
        pytest.skip("needs the v1 pids hierarchy")
    cid = racker.new_id()
    path = f"/racker-test/{cid}"

    def edit(c):
        c["linux"]["cgroupsPath"] = path
        c["linux"]["resources"]["pids"] = {"limit": 7}

    b = make_bundle(["sleep", "30"], edit=edit)
    racker.create(b, cid)
    with open(f"/sys/fs/cgroup/pids{path}/pids.max") as f:
        assert f.read().strip() == "7"
    racker.ok("delete", "--force", cid)
    assert not os.path.exists(f"/sys/fs/cgroup/pids{path}")
    try:
        os.rmdir("/sys/fs/cgroup/pids/racker-test")
    except OSError:
        pass


def test_cgroup_holding_other_processes_is_refused(racker, make_bundle):
    """A cgroupsPath that already holds processes is not the container's: racker-oci used to
    take it, and `delete --force` then SIGKILLed an unrelated process in it (runc 1.2 refuses
    such a cgroup too)."""
    cid = racker.new_id()
    path = f"/racker-test-victim-{cid}"
    victim = subprocess.Popen(["sleep", "60"])
    made = []
    try:
        for mp, _, _ in cgroup_mounts():
            d = mp + path
            os.mkdir(d)
            made.append(d)
            try:
                with open(d + "/cgroup.procs", "w") as f:
                    f.write(str(victim.pid))
            except OSError:
                pass  # e.g. a v1 cpuset cgroup without cpus: the others hold the process
        b = make_bundle(["true"], edit=lambda c: c["linux"].update(cgroupsPath=path))
        r = racker("create", "--bundle", b.path, cid)
        assert r.returncode == 1, r
        assert "already holds 1 process(es)" in r.stderr and str(victim.pid) in r.stderr, r
        r = racker("delete", "--force", cid)
        assert pid_alive(victim.pid), "the unrelated process was killed"
        assert racker.list_ids() == []
    finally:
        victim.kill()
        victim.wait()
        for d in reversed(made):
            wait_until(lambda: not open(d + "/cgroup.procs").read().strip(), what="empty " + d)
            os.rmdir(d)


def test_pids_limit_enforced(racker, make_bundle):
    if not v1_hierarchy("pids"):
        pytest.skip("needs the v1 pids hierarchy")
    b = make_bundle(["sh", "-c", "for i in 1 2 3 4 5 6; do sleep 0.3 & done; wait; echo done"],
                    edit=lambda c: c["linux"]["resources"].update(pids={"limit": 4}))
    r = racker.run(b)
    assert "can't fork" in r.stderr or "Resource temporarily unavailable" in r.stderr, r


# --- terminal --------------------------------------------------------------------------------


def recv_pty_master(listener, timeout=5):
    listener.settimeout(timeout)
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(timeout)
        msg, fds, _, _ = socket.recv_fds(conn, 4096, 1)
    assert len(fds) == 1
    return fds[0]


def run_on_console_socket(racker, bundle, sock_path):
    """Creates a container of bundle (process.terminal set) with --console-socket sock_path,
    takes the pty master racker sends there, starts the container and reads the terminal until
    it closes: (container id, what was written to it)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(1)
    cid = racker.new_id()
    try:
        racker.ok("create", "--console-socket", str(sock_path), "--bundle", bundle.path, cid)
        master = recv_pty_master(listener)
        try:
            assert os.isatty(master)
            racker.ok("start", cid)
            return cid, read_pty(master).decode(errors="replace")
        finally:
            os.close(master)
    finally:
        listener.close()


def test_terminal_with_console_socket(racker, make_bundle, short_tmp):
    require("pty")
    b = make_bundle(["sh", "-c", "tty; test -t 0 && test -t 1 && echo isatty; sleep 0.3"],
                    edit=lambda c: c["process"].update(terminal=True))
    cid, out = run_on_console_socket(racker, b, short_tmp / "console.sock")
    lines = [line.strip() for line in out.splitlines()]
    assert lines[0] in ("/dev/pts/0", "/dev/console"), out
    assert lines[1] == "isatty"
    racker.wait_status(cid, "stopped")


def test_terminal_detached_without_console_socket_fails(racker, make_bundle):
    b = make_bundle(["true"], edit=lambda c: c["process"].update(terminal=True))
    cid = racker.new_id()
    r = racker("create", "--bundle", b.path, cid)
    assert r.returncode == 1
    assert r.stderr == ("racker-oci: cannot allocate a tty for a detached container without "
                        "--console-socket\n")
    assert racker.list_ids() == []


def test_terminal_console_size(racker, make_bundle, short_tmp):
    require("pty")

    def edit(c):
        c["process"]["terminal"] = True
        c["process"]["consoleSize"] = {"height": 33, "width": 111}

    b = make_bundle(["stty", "size"], edit=edit)
    _, out = run_on_console_socket(racker, b, short_tmp / "c.sock")
    assert out.strip() == "33 111"
