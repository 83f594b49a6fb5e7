"""racker-oci driven by the real engines (issue 10): Debian's dockerd (--add-runtime), podman
(--runtime) and containerd's ctr (run --runc-binary), over one battery of cases, each run with
racker-oci and, as the control, with runc. A case that passes with runc must pass with
racker-oci.

Everything the engines write stays in one scratch directory: a private containerd and dockerd
(their own root, state, exec root, sockets, pidfile) and podman with its own --root, --runroot
and --tmpdir. The daemons and podman run in a private mount namespace (held by a `sleep`) where
/run, /var/lib, /var/tmp and /dev/shm are scratch directories: containerd's shims put their
sockets in /run/containerd/s whatever the configuration says, dockerd always makes
/run/docker/plugins and podman keeps a cache in /var/lib/containers/cache; none of that reaches
the host. The clients (docker, ctr) run on the host and talk to the sockets in the scratch
directory. Containers go below cgroups named after the scratch directory (docker's
--cgroup-parent, podman's --cgroup-parent, ctr's --cgroup). At the end every container is
removed, the daemons and the namespace holder are killed by PID, the cgroups are removed, and
the teardown checks that no mount, process or cgroup is left and nothing appeared on the host.

The bugs this battery pins (all fixed): (1) dockerd's spec has "blockIO": {"weight": 0} (= unset)
in every container; (2) `docker run --cap-drop ALL` sends "capabilities": {} (no sets), which
must mean empty sets; (3) `podman run --read-only` mounts /tmp, /var/tmp and /run with the
option tmpcopyup. Found by this battery (fixed): dockerd and containerd send no HOME and rely
on runc's rule (HOME from the container's /etc/passwd for the process uid, "/" without an entry;
test_home_*); racker-oci left HOME unset.

Host quirks: hybrid cgroups; no CAP_SYS_RESOURCE (podman's default rlimits are lowered with
--ulimit, dockerd gets --oom-score-adjust 0); no bridge: every container has --network none.
"""

import ctypes
import fcntl
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import termios
import time
import uuid
from pathlib import Path

import pytest

from conftest import REPO, cgroup_dirs_of, cgroup_mounts, mounts_under, pid_alive, wait_until

SYS_PATH = "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
DOCKER_CLI = "/usr/bin/docker"  # /usr/local/bin/docker on these machines is a newer client
IMAGE = "rkeng/busybox:1"
CTR_IMAGE = "docker.io/" + IMAGE
CTR_NS = "rkeng"
MEM_LIMIT = 64 * 1024 * 1024
PIDS_LIMIT = 32
TIMEOUT = 60  # one engine command (the machine may be busy: 2 cores for all of CI)
# containerd's default capability set; ctr's --cap-drop wants names, not ALL
CTR_DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
# host paths the engines would use by default: none may appear (or vanish) during the module
HOST_PATHS = ["/run/containerd", "/run/docker", "/run/docker.sock", "/run/runc", "/run/libpod",
              "/run/containers", "/var/lib/docker", "/var/lib/containerd", "/var/lib/containers",
              "/var/lib/cni", "/opt/containerd", "/etc/docker/key.json", "/run/racker-oci"]

RUNTIMES = ["racker-oci", "runc"]
ENGINES = ["docker", "podman", "ctr"]


# --- running commands ------------------------------------------------------------------------


class Res:
    def __init__(self, argv, rc, out, err, elapsed):
        self.argv, self.rc, self.out, self.err, self.elapsed = argv, rc, out, err, elapsed

    def __repr__(self):
        return (f"<{' '.join(map(str, self.argv))}: rc={self.rc} out={self.out!r} "
                f"err={self.err!r} ({self.elapsed:.1f}s)>")


def run_cmd(argv, env=None, input=None, timeout=TIMEOUT):
    t0 = time.monotonic()
    try:
        p = subprocess.run([str(a) for a in argv], env=env, capture_output=True,
                           input=input.encode() if isinstance(input, str) else input,
                           stdin=None if input is not None else subprocess.DEVNULL,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(map(str, argv))} did not finish within {timeout}s: "
                             f"out={e.stdout!r} err={e.stderr!r}")
    return Res(argv, p.returncode, p.stdout.decode(errors="replace"),
               p.stderr.decode(errors="replace"), time.monotonic() - t0)


def run_in_pty(argv, env=None, timeout=TIMEOUT):
    """Runs argv with a pty as its controlling terminal and stdin/stdout/stderr; returns Res
    with everything it wrote (out). For clients that insist on a terminal (ctr run -t)."""
    master, slave = os.openpty()

    def ctty():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    t0 = time.monotonic()
    p = subprocess.Popen([str(a) for a in argv], env=env, stdin=slave, stdout=slave,
                         stderr=slave, preexec_fn=ctty, close_fds=True)
    os.close(slave)
    buf = b""
    deadline = t0 + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                p.kill()
                p.wait()
                raise AssertionError(f"{argv} did not finish within {timeout}s: {buf!r}")
            r, _, _ = select.select([master], [], [], min(left, 0.2))
            if r:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every slave fd is closed
                    chunk = b""
                if not chunk:
                    break
                buf += chunk
            elif p.poll() is not None:
                # the client is gone; drain what is left without blocking
                while select.select([master], [], [], 0)[0]:
                    try:
                        chunk = os.read(master, 4096)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        break
                    buf += chunk
                break
        rc = p.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
            p.wait()
    return Res(argv, rc, buf.decode(errors="replace"), "", time.monotonic() - t0)


def die_with_parent(sig):
    """A preexec_fn: the child gets sig when pytest dies (a CTest timeout's SIGKILL), so that
    the daemons and the namespace holder never outlive the run. It survives exec (unshare and
    nsenter exec in place)."""
    def preexec():
        os.setsid()
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
    return preexec


def wait_for(predicate, timeout=30, what="condition"):
    return wait_until(predicate, timeout=timeout, interval=0.1, what=what)


def host_cgroup_value(pid, controller, name):
    d = cgroup_dirs_of(pid).get(controller)
    assert d, f"no {controller} cgroup for pid {pid}: {cgroup_dirs_of(pid)}"
    return Path(d, name).read_text().strip()


# --- the private namespace and the daemons -----------------------------------------------------


def pids_where(pred):
    """The pids of the processes for which pred(pid) holds; one that is gone (OSError) does not."""
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            if pred(int(e)):
                out.append(int(e))
        except OSError:
            pass
    return out


class Stack:
    """The scratch directory, the mount-namespace holder and every daemon started in it."""

    def __init__(self, scratch):
        self.scratch = Path(scratch)
        self.tag = self.scratch.name  # rk-eng-XXXX: names cgroup parents
        self.procs = {}  # name -> Popen, killed by PID in close()
        self.holder = None
        self.ns = None  # the namespace's /proc/PID/ns/mnt link text
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("DOCKER_HOST", "DOCKER_CONFIG", "CONTAINERD_ADDRESS",
                                 "CONTAINERD_NAMESPACE", "CONTAINER_HOST", "CONTAINERS_CONF",
                                 "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF",
                                 "XDG_RUNTIME_DIR", "TMPDIR")}
        self.env["PATH"] = SYS_PATH
        self.cleanups = []  # callables run first by close() (engines removing containers)

    def path(self, *parts):
        p = self.scratch.joinpath(*parts)
        return p

    def start_holder(self):
        for d in ("run", "varlib", "vartmp"):
            self.path("ns", d).mkdir(parents=True)
        os.chmod(self.path("ns", "vartmp"), 0o1777)
        ready = self.path("ns", "ready")
        script = (f"mount --bind {self.path('ns', 'run')} /run && "
                  f"mount --bind {self.path('ns', 'varlib')} /var/lib && "
                  f"mount --bind {self.path('ns', 'vartmp')} /var/tmp && "
                  "mount -t tmpfs -o mode=1777,size=64m rk-eng-shm /dev/shm && "
                  f"touch {ready} && exec sleep 100000")
        # unshare without --fork execs in place: the Popen's pid is the holder's
        p = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                              script], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, preexec_fn=die_with_parent(signal.SIGKILL))
        self.procs["holder"] = p
        try:
            wait_for(lambda: ready.exists() or p.poll() is not None, 10, "namespace holder")
        except AssertionError:
            pass
        if not ready.exists():
            raise RuntimeError(f"mount namespace holder failed: {p.stderr.read()!r}")
        self.holder = p.pid
        self.ns = os.readlink(f"/proc/{p.pid}/ns/mnt")

    def in_ns(self, *argv):
        return ["nsenter", f"--mount=/proc/{self.holder}/ns/mnt", "--", *map(str, argv)]

    def spawn(self, name, argv):
        """Starts a daemon in the namespace (nsenter without --fork: the pid is the daemon's)."""
        log = open(self.path(f"{name}.log"), "wb")
        p = subprocess.Popen(self.in_ns(*argv), stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, env=self.env,
                             preexec_fn=die_with_parent(signal.SIGTERM))
        log.close()
        self.procs[name] = p
        return p

    def log(self, name):
        try:
            return self.path(f"{name}.log").read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""

    def pids_in_ns(self):
        return pids_where(
            lambda pid: pid != self.holder and os.readlink(f"/proc/{pid}/ns/mnt") == self.ns)

    def pids_in_cgroups(self):
        """Processes below one of this module's cgroup parents (containers, conmon)."""
        return pids_where(lambda pid: f"/{self.tag}-" in Path(f"/proc/{pid}/cgroup").read_text())

    def cgroup_dirs(self):
        found = []
        for mp, _, _ in cgroup_mounts():
            try:
                names = os.listdir(mp)
            except OSError:
                continue
            found += [os.path.join(mp, n) for n in names if n.startswith(self.tag + "-")]
        return found

    def close(self):
        """Removes everything; returns the problems found (leaks)."""
        problems = []
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:  # keep tearing down
                problems.append(f"cleanup {fn}: {e}")
        # daemons: SIGTERM, then SIGKILL
        for name in ("dockerd", "containerd"):
            p = self.procs.get(name)
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    problems.append(f"{name} ignored SIGTERM for 20 s")
                    p.kill()
                    p.wait()
        if self.holder:
            ns_mounts = []
            try:
                with open(f"/proc/{self.holder}/mountinfo") as f:
                    root = str(self.scratch)
                    ns_mounts = [line.split()[4] for line in f
                                 if line.split()[4].startswith(root + "/")]
            except OSError:
                pass
            if ns_mounts:
                problems.append(f"mounts left in the engines' namespace after removing every "
                                f"container and stopping the daemons: {ns_mounts}")
        # shims, conmons and containers that survived: by PID
        if self.holder:
            left = set(self.pids_in_ns()) | set(self.pids_in_cgroups())
            if left:
                time.sleep(0.3)
                left = {p for p in left if pid_alive(p)}
            if left:
                problems.append("processes left: " + ", ".join(
                    f"{p} ({_cmdline(p)})" for p in sorted(left)))
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        p = self.procs.get("holder")
        if p and p.poll() is None:
            p.kill()
            p.wait()
        for name, p in self.procs.items():
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                problems.append(f"{name} (pid {p.pid}) did not die")
        left = [p for p in (set(self.pids_in_cgroups())) if pid_alive(p)]
        if left:
            problems.append(f"processes still in the module's cgroups: {left}")
        # cgroups: the runtimes remove each container's; the engines' parents (and podman's
        # conmon cgroup) stay and are removed here, bottom-up
        for top in self.cgroup_dirs():
            left = [e for e in os.listdir(top)
                    if os.path.isdir(os.path.join(top, e)) and e != "conmon"]
            if left:
                problems.append(f"container cgroups left in {top}: {left}")
        for top in self.cgroup_dirs():
            for dirpath, _, _ in sorted(os.walk(top), key=lambda t: -len(t[0])):
                try:
                    os.rmdir(dirpath)
                except OSError as e:
                    problems.append(f"cgroup {dirpath} not removable: {e}")
        # the namespace is gone: nothing may be mounted under the scratch dir on the host
        left = mounts_under(self.scratch)
        if left:
            problems.append(f"mounts left under {self.scratch}: {left}")
            for mp in sorted(left, key=len, reverse=True):
                subprocess.run(["umount", "-l", mp], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.scratch, ignore_errors=True)
        if self.scratch.exists():
            problems.append(f"{self.scratch} not removed")
        return problems


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


def need(*binaries):
    for b in binaries:
        if not shutil.which(b, path=SYS_PATH) and not os.access(b, os.X_OK):
            pytest.skip(f"{b} not installed (scripts/install-deps.sh: docker.io podman "
                        f"containerd runc)")


@pytest.fixture(scope="module")
def runtimes(racker_bin):
    """name -> path of the runtime binary. racker_bin skips without root or without the
    build; runc is the control."""
    runc = shutil.which("runc", path=SYS_PATH)
    if not runc:
        pytest.skip("runc not installed (apt-get install runc): it is the control")
    return {"racker-oci": racker_bin, "runc": runc}


@pytest.fixture(scope="module")
def stack(runtimes):
    need("unshare", "nsenter")
    before = {p: os.path.lexists(p) for p in HOST_PATHS}
    scratch = Path(tempfile.mkdtemp(prefix="rk-eng-", dir="/tmp"))  # short: unix sockets
    os.chmod(scratch, 0o711)
    st = Stack(scratch)
    try:
        st.start_holder()
        yield st
    finally:
        problems = st.close()
        after = {p: os.path.lexists(p) for p in HOST_PATHS}
        changed = [p for p in HOST_PATHS if before[p] != after[p]]
        if changed:
            problems.append(f"host paths appeared or vanished: {changed}")
        if problems:
            pytest.fail("engine teardown:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def image_tar(stack):
    """The busybox rootfs (scripts/make-busybox-rootfs.sh) as a tar, for docker/podman import."""
    if not os.access("/bin/busybox", os.X_OK):
        pytest.skip("/bin/busybox missing (apt-get install busybox-static)")
    rootfs = stack.path("image", "rootfs")
    subprocess.run([str(REPO / "scripts" / "make-busybox-rootfs.sh"), str(rootfs)], check=True,
                   stdout=subprocess.DEVNULL)
    tar = stack.path("image", "busybox.tar")
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
    return tar


@pytest.fixture(scope="module")
def containerd(stack):
    need("containerd", "containerd-shim-runc-v2")
    d = stack.path("containerd")
    (d / "opt").mkdir(parents=True)
    sock = d / "containerd.sock"
    cfg = d / "config.toml"
    cfg.write_text(f"""version = 2
root = "{d}/root"
state = "{d}/state"
oom_score = 0
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
""")
    p = stack.spawn("containerd", ["containerd", "--config", cfg, "--log-level", "warn"])
    ctr = shutil.which("ctr", path=SYS_PATH)

    def up():
        if p.poll() is not None:
            raise AssertionError(f"containerd exited: {stack.log('containerd')}")
        if not sock.exists():
            return False
        if not ctr:
            return True
        return run_cmd([ctr, "--address", sock, "version"], env=stack.env, timeout=10).rc == 0

    wait_for(up, 30, "containerd to answer")
    return sock


# --- engines -----------------------------------------------------------------------------------


class Engine:
    name = "?"
    supports = ()  # the cases this engine has a flag for

    def __init__(self, stack):
        self.stack = stack

    def new_name(self, case):
        return f"rk-{case}-{uuid.uuid4().hex[:8]}"


def docker_style_flags(o, read_only, cap_drop):
    """The `run` flags docker and podman share for a case's options o; read_only: the flags for
    a read-only rootfs, cap_drop: how the engine spells "all capabilities"."""
    f = []
    if o.get("interactive"):
        f.append("-i")
    if o.get("tty"):
        f += ["-i", "-t"]
    if o.get("volume"):
        f += ["-v", "{}:{}".format(*o["volume"])]
    if o.get("user"):
        f += ["--user", o["user"]]
    if o.get("read_only"):
        f += read_only
    if o.get("memory"):
        f += ["--memory", str(o["memory"])]
    if o.get("pids_limit"):
        f += ["--pids-limit", str(o["pids_limit"])]
    if o.get("cap_drop_all"):
        f += ["--cap-drop", cap_drop]
    return f


class Docker(Engine):
    name = "docker"
    supports = {"run", "default", "exec", "stop", "kill", "rm", "stdin", "tty", "volume",
                "user", "read_only", "memory", "pids", "cap_drop", "home"}
    RT = {"racker-oci": "racker", "runc": "runcctl"}

    def __init__(self, stack, sock, ctd_state):
        super().__init__(stack)
        self.sock = sock
        self.ctd_state = ctd_state
        self.env = dict(stack.env, DOCKER_CONFIG=str(stack.path("docker-cli")))

    def cli(self, *args, **kw):
        return run_cmd([DOCKER_CLI, "-H", f"unix://{self.sock}", *args], env=self.env, **kw)

    def argv(self, *args):
        return [DOCKER_CLI, "-H", f"unix://{self.sock}", *map(str, args)]

    def run_flags(self, rt, o):
        return ["--network", "none", "--runtime", self.RT[rt],
                *docker_style_flags(o, read_only=["--read-only", "--tmpfs", "/tmp"],
                                    cap_drop="ALL")]

    def run(self, rt, cmd, input=None, **o):
        """A foreground `docker run --rm`: Res with the container's exit status."""
        argv = self.argv("run", "--rm", *self.run_flags(rt, o), IMAGE, *cmd)
        if o.get("tty"):
            return run_in_pty(argv, env=self.env)
        return run_cmd(argv, env=self.env, input=input)

    def start(self, rt, cmd, **o):
        """A detached container: returns its id."""
        r = self.cli("run", "-d", "--name", self.new_name("d"), *self.run_flags(rt, o), IMAGE,
                     *cmd)
        assert r.rc == 0, r
        return r.out.strip()

    def logs(self, cid):
        r = self.cli("logs", cid)
        return r.out + r.err

    def exec(self, cid, cmd, user=None):
        return self.cli("exec", *(["--user", user] if user else []), cid, *cmd)

    def stop(self, cid, timeout):
        return self.cli("stop", "-t", str(timeout), cid, timeout=timeout + TIMEOUT)

    def kill(self, cid, sig):
        return self.cli("kill", "-s", sig, cid)

    def wait(self, cid):
        r = self.cli("wait", cid)
        assert r.rc == 0, r
        return int(r.out.strip())

    def rm(self, cid):
        return self.cli("rm", "-f", cid)

    def pid(self, cid):
        r = self.cli("inspect", "--format", "{{.State.Pid}}", cid)
        assert r.rc == 0, r
        return int(r.out.strip())

    def exists(self, cid):
        return cid in self.cli("ps", "-aq", "--no-trunc").out.split()

    def runtime_root(self, rt):
        """The runtime's --root (containerd's shim names it after the shim, any binary)."""
        return self.stack.path("docker", "exec", "runtime-runc", "moby")

    def bundle_config(self, cid):
        """The OCI spec dockerd sent (while the container runs)."""
        p = Path(self.ctd_state, "io.containerd.runtime.v2.task", "moby", cid, "config.json")
        return json.loads(p.read_text())

    def remove_all(self):
        ids = self.cli("ps", "-aq").out.split()
        if ids:
            self.cli("rm", "-f", *ids)


class Podman(Engine):
    name = "podman"
    supports = {"run", "exec", "stop", "kill", "rm", "stdin", "tty", "volume", "user",
                "read_only", "memory", "pids", "cap_drop"}

    def __init__(self, stack, runtimes):
        super().__init__(stack)
        self.runtimes = runtimes
        d = stack.path("podman")
        for sub in ("root", "runroot", "tmp", "net", "cli-tmp"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        # no host configuration: empty containers.conf and registries.conf, a storage.conf
        # that says what the flags say (podman refuses one without runroot)
        for f in ("containers.conf", "registries.conf"):
            (d / f).write_text("")
        (d / "storage.conf").write_text(f'[storage]\ndriver = "overlay"\n'
                                        f'runroot = "{d}/runroot"\ngraphroot = "{d}/root"\n')
        self.d = d
        self.env = dict(stack.env, CONTAINERS_CONF=str(d / "containers.conf"),
                        CONTAINERS_STORAGE_CONF=str(d / "storage.conf"),
                        CONTAINERS_REGISTRIES_CONF=str(d / "registries.conf"),
                        TMPDIR=str(d / "cli-tmp"))
        self.cgroup_parent = f"/{stack.tag}-podman"

    def argv(self, rt, *args):
        return self.stack.in_ns(
            "podman", "--root", self.d / "root", "--runroot", self.d / "runroot", "--tmpdir",
            self.d / "tmp", "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs",
            "--events-backend", "file", "--network-config-dir", self.d / "net", "--runtime",
            self.runtimes[rt], *args)

    def cli(self, rt, *args, **kw):
        return run_cmd(self.argv(rt, *args), env=self.env, **kw)

    def run_flags(self, o):
        return ["--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
                "--cgroup-parent", self.cgroup_parent,
                # read-only-tmpfs: /tmp, /var/tmp, /run with tmpcopyup
                *docker_style_flags(o, read_only=["--read-only"], cap_drop="all")]

    def run(self, rt, cmd, input=None, **o):
        argv = self.argv(rt, "run", "--rm", *self.run_flags(o), IMAGE, *cmd)
        if o.get("tty"):
            return run_in_pty(argv, env=self.env)
        return run_cmd(argv, env=self.env, input=input)

    def start(self, rt, cmd, **o):
        r = self.cli(rt, "run", "-d", "--name", self.new_name("d"), *self.run_flags(o), IMAGE,
                     *cmd)
        assert r.rc == 0, r
        cid = r.out.strip().splitlines()[-1]
        self._rt = getattr(self, "_rt", {})
        self._rt[cid] = rt
        return cid

    def _c(self, cid, *args, **kw):
        return self.cli(self._rt[cid], *args, **kw)

    def logs(self, cid):
        r = self._c(cid, "logs", cid)
        return r.out + r.err

    def exec(self, cid, cmd, user=None):
        return self._c(cid, "exec", *(["--user", user] if user else []), cid, *cmd)

    def stop(self, cid, timeout):
        return self._c(cid, "stop", "-t", str(timeout), cid, timeout=timeout + TIMEOUT)

    def kill(self, cid, sig):
        return self._c(cid, "kill", "-s", sig, cid)

    def wait(self, cid):
        r = self._c(cid, "wait", cid)
        assert r.rc == 0, r
        return int(r.out.strip())

    def rm(self, cid):
        return self._c(cid, "rm", "-f", "-t", "0", cid)

    def pid(self, cid):
        r = self._c(cid, "inspect", "--format", "{{.State.Pid}}", cid)
        assert r.rc == 0, r
        return int(r.out.strip())

    def exists(self, cid):
        return cid in self._c(cid, "ps", "-aq", "--no-trunc").out.split()

    def runtime_root(self, rt):
        """podman's --root for the runtime: /run/<its name> (the namespace's /run)."""
        return self.stack.path("ns", "run", os.path.basename(self.runtimes[rt]))

    def bundle_config(self, cid):
        p = self.d / "root" / "overlay-containers" / cid / "userdata" / "config.json"
        return json.loads(p.read_text())

    def remove_all(self):
        for rt in self.runtimes:
            self.cli(rt, "rm", "-fa", "-t", "0")


class Ctr(Engine):
    """containerd's ctr. No --user (exec --user instead), no pids limit, no logs (a file
    --log-uri), --cap-drop by name; `stop` is a SIGTERM through `ctr task kill`."""
    name = "ctr"
    supports = {"run", "exec", "stop", "kill", "rm", "stdin", "tty", "volume", "user",
                "read_only", "memory", "cap_drop", "home"}

    def __init__(self, stack, sock, runtimes):
        super().__init__(stack)
        self.sock = sock
        self.runtimes = runtimes
        self.fifo = stack.path("ctr-fifo")  # the client's default is the host's /run/containerd
        self.fifo.mkdir(exist_ok=True)
        self.logdir = stack.path("ctr-logs")
        self.logdir.mkdir(exist_ok=True)
        self.cgroup_parent = f"/{stack.tag}-ctr"
        self.ctr = shutil.which("ctr", path=SYS_PATH)
        self.procs = []
        self.clients = {}  # name -> the `ctr run` of a container started with exit_status

    def argv(self, *args):
        return [self.ctr, "--address", self.sock, "--namespace", CTR_NS, *map(str, args)]

    def cli(self, *args, **kw):
        return run_cmd(self.argv(*args), env=self.stack.env, **kw)

    def run_flags(self, rt, name, o):
        f = ["--fifo-dir", self.fifo, "--cgroup", f"{self.cgroup_parent}/{name}",
             "--runc-binary", self.runtimes[rt]]
        if o.get("tty"):
            f.append("-t")
        if o.get("volume"):
            f += ["--mount", "type=bind,src={},dst={},options=rbind:rw".format(*o["volume"])]
        if o.get("read_only"):
            f.append("--read-only")
        if o.get("memory"):
            f += ["--memory-limit", str(o["memory"])]
        if o.get("cap_drop_all"):
            for c in CTR_DEFAULT_CAPS:
                f += ["--cap-drop", c]
        assert not o.get("user") and not o.get("pids_limit"), "ctr run has no such flag"
        return f

    def run(self, rt, cmd, input=None, **o):
        name = self.new_name("f")
        argv = self.argv("run", "--rm", *self.run_flags(rt, name, o), CTR_IMAGE, name, *cmd)
        if o.get("tty"):
            return run_in_pty(argv, env=self.stack.env)
        if input is None:
            return run_cmd(argv, env=self.stack.env)
        # ctr forwards the end of stdin only once the task exists (it reads stdin before that
        # and loses the EOF): write when the task runs
        t0 = time.monotonic()
        out, err = self.stack.path(f"{name}.out"), self.stack.path(f"{name}.err")
        with open(out, "wb") as fo, open(err, "wb") as fe:
            p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.PIPE, stdout=fo,
                                 stderr=fe, env=self.stack.env)
        self.procs.append(p)
        try:
            wait_for(lambda: self.status(name) == "RUNNING" or p.poll() is not None, 30,
                     f"task {name} to run")
            p.stdin.write(input.encode())
            p.stdin.close()
            rc = p.wait(timeout=TIMEOUT)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        return Res(argv, rc, out.read_text(), err.read_text(), time.monotonic() - t0)

    def start(self, rt, cmd, exit_status=False, **o):
        """A detached container (`ctr run -d`, output to a file through --log-uri), or with
        exit_status=True one run by a `ctr run --rm` in the background, whose exit status is
        the container's (wait())."""
        name = self.new_name("d")
        out = self.logdir / name
        if exit_status:
            argv = self.argv("run", "--rm", *self.run_flags(rt, name, o), CTR_IMAGE, name, *cmd)
            with open(out, "wb") as fo:
                p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                                     stdout=fo, stderr=subprocess.STDOUT, env=self.stack.env)
            self.procs.append(p)
            self.clients[name] = p
            wait_for(lambda: self.status(name) == "RUNNING" or p.poll() is not None, 30,
                     f"task {name} to run")
            assert p.poll() is None, (p.returncode, out.read_text())
        else:
            r = self.cli("run", "-d", "--log-uri", f"file://{out}",
                         *self.run_flags(rt, name, o), CTR_IMAGE, name, *cmd)
            assert r.rc == 0, r
            assert self.status(name) == "RUNNING", self.cli("task", "ls")
        return name

    def bundle_config(self, name):
        p = self.stack.path("containerd", "state", "io.containerd.runtime.v2.task", CTR_NS, name,
                            "config.json")
        return json.loads(p.read_text())

    def runtime_root(self, rt):
        """containerd's runc shim: /run/containerd/runc/NAMESPACE (the namespace's /run)."""
        return self.stack.path("ns", "run", "containerd", "runc", CTR_NS)

    def status(self, name):
        r = self.cli("task", "ls")
        for line in r.out.splitlines()[1:]:
            f = line.split()
            if f and f[0] == name:
                return f[2]
        return None

    def logs(self, name):
        return (self.logdir / name).read_text(errors="replace")

    def exec(self, name, cmd, user=None):
        return self.cli("task", "exec", "--fifo-dir", self.fifo, "--exec-id",
                        uuid.uuid4().hex[:8], *(["--user", user] if user else []), name, *cmd)

    def stop(self, name, timeout):
        t0 = time.monotonic()
        r = self.kill(name, "SIGTERM")
        assert r.rc == 0, r
        try:
            self.clients[name].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(name, "SIGKILL")
        r.elapsed = time.monotonic() - t0
        return r

    def kill(self, name, sig):
        return self.cli("task", "kill", "-s", sig if sig.startswith("SIG") else "SIG" + sig,
                        name)

    def wait(self, name):
        return self.clients[name].wait(timeout=TIMEOUT)

    def rm(self, name):
        """ctr's rm of a running container: task delete --force (SIGKILL), then the
        container. One run by a `ctr run --rm` client: SIGKILL, and the client removes it."""
        p = self.clients.get(name)
        if p:
            r = self.kill(name, "SIGKILL") if p.poll() is None else None
            p.wait(timeout=TIMEOUT)
            return r
        r = self.cli("task", "delete", "--force", name)
        if r.rc != 0:
            return r
        return self.cli("container", "delete", name)

    def pid(self, name):
        r = self.cli("task", "ls")
        for line in r.out.splitlines()[1:]:
            f = line.split()
            if f and f[0] == name:
                return int(f[1])
        raise AssertionError(f"no task {name}: {r}")

    def exists(self, name):
        return name in self.cli("container", "ls", "-q").out.split()

    def remove_all(self):
        for t in self.cli("task", "ls", "-q").out.split():
            self.cli("task", "delete", "--force", t)
        for c in self.cli("container", "ls", "-q").out.split():
            self.cli("container", "delete", c)
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def docker_engine(stack, containerd, runtimes, image_tar):
    need("dockerd", DOCKER_CLI)
    d = stack.path("docker")
    for sub in ("data", "exec"):
        (d / sub).mkdir(parents=True)
    (d / "daemon.json").write_text(json.dumps({"deprecated-key-path": str(d / "key.json")}))
    sock = d / "docker.sock"
    p = stack.spawn("dockerd", [
        "dockerd", "--config-file", d / "daemon.json", "--data-root", d / "data",
        "--exec-root", d / "exec", "--pidfile", d / "docker.pid", "-H", f"unix://{sock}",
        "--containerd", containerd, "--bridge", "none", "--iptables=false",
        "--ip6tables=false", "--ip-masq=false", "--ip-forward=false", "--userland-proxy=false",
        "--exec-opt", "native.cgroupdriver=cgroupfs", "--cgroup-parent", f"/{stack.tag}-docker",
        "--oom-score-adjust", "0", "--default-ulimit", "nofile=1024:1024",
        "--add-runtime", f"racker={runtimes['racker-oci']}",
        "--add-runtime", f"runcctl={runtimes['runc']}"])
    eng = Docker(stack, sock, stack.path("containerd", "state"))

    def up():
        if p.poll() is not None:
            raise AssertionError(f"dockerd exited: {stack.log('dockerd')}")
        return sock.exists() and eng.cli("version", timeout=10).rc == 0

    wait_for(up, 60, "dockerd to answer")
    stack.cleanups.append(eng.remove_all)
    r = eng.cli("import", image_tar, IMAGE)
    assert r.rc == 0, r
    return eng


@pytest.fixture(scope="module")
def podman_engine(stack, runtimes, image_tar):
    need("podman", "conmon")
    eng = Podman(stack, runtimes)
    stack.cleanups.append(eng.remove_all)
    r = eng.cli("runc", "import", image_tar, IMAGE)
    assert r.rc == 0, r
    return eng


@pytest.fixture(scope="module")
def ctr_engine(request, stack, containerd, runtimes, image_tar):
    need("ctr")
    eng = Ctr(stack, containerd, runtimes)
    stack.cleanups.append(eng.remove_all)
    # an image archive for `ctr images import`: docker save from the private dockerd, else
    # podman save
    archive = stack.path("image", "busybox-docker-archive.tar")
    made = False
    for name in ("docker", "podman"):
        try:
            other = request.getfixturevalue(f"{name}_engine")
        except pytest.skip.Exception:
            continue
        r = (other.cli("save", "-o", archive, IMAGE) if name == "docker" else
             other.cli("runc", "save", "--format", "docker-archive", "-o", archive, IMAGE))
        assert r.rc == 0, r
        made = True
        break
    if not made:
        pytest.skip("no docker or podman to make an image archive for ctr")
    r = eng.cli("images", "import", archive)
    assert r.rc == 0, r
    refs = eng.cli("images", "ls", "-q").out.split()
    if CTR_IMAGE not in refs:  # podman's archive names it localhost/...
        src = [ref for ref in refs if ref.endswith("/" + IMAGE)]
        assert src, refs
        r = eng.cli("images", "tag", src[0], CTR_IMAGE)
        assert r.rc == 0, r
    return eng


def combos(case):
    """(engine, runtime) pairs for a case: every engine with a flag for it, both runtimes."""
    engines = {"docker": Docker, "podman": Podman, "ctr": Ctr}
    return [pytest.param(e, rt, id=f"{e}-{rt}") for e in ENGINES
            for rt in RUNTIMES if case in engines[e].supports]


@pytest.fixture
def eng(request, engine_name):
    return request.getfixturevalue(f"{engine_name}_engine")


@pytest.fixture
def started(eng, runtimes):
    """start(rt, cmd, **opts) -> id of a detached container, removed after the test. Checks
    that the runtime asked for made it: its `state` says running, the other one's fails."""
    ids = []

    def start(rt, cmd, **o):
        cid = eng.start(rt, cmd, **o)
        ids.append(cid)
        root = eng.runtime_root(rt)
        r = run_cmd([runtimes[rt], "--root", root, "state", cid], timeout=10)
        assert r.rc == 0 and json.loads(r.out)["status"] == "running", r
        other = next(n for n in runtimes if n != rt)
        r = run_cmd([runtimes[other], "--root", root, "state", cid], timeout=10)
        assert r.rc != 0, f"{other} knows {rt}'s container: {r}"
        return cid

    yield start
    for cid in ids:
        if eng.exists(cid):
            eng.rm(cid)


def params(case):
    return pytest.mark.parametrize("engine_name,rt", combos(case))


# --- the battery -----------------------------------------------------------------------------


@params("run")
def test_run_exit_status(eng, rt):
    r = eng.run(rt, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert r.rc == 3, r
    assert "out" in r.out, r
    assert "err" in r.out + r.err, r


@params("default")
def test_docker_default_run_blockio_weight_0(eng, rt, started):
    """Bug 1: dockerd's spec always has linux.resources.blockIO.weight 0 (= unset); the host's
    blkio hierarchy has no weight file. A plain `docker run` must work."""
    cid = started(rt, ["sleep", "1000"])
    spec = eng.bundle_config(cid)
    assert spec["linux"]["resources"]["blockIO"] == {"weight": 0}, spec["linux"]["resources"]
    assert any("libnetwork-setkey" in " ".join(h.get("args", []))
               for h in spec.get("hooks", {}).get("prestart", [])), spec.get("hooks")
    r = eng.exec(cid, ["echo", "alive"])
    assert r.rc == 0 and r.out.strip() == "alive", r
    r = eng.run(rt, ["true"])
    assert r.rc == 0, r


@params("exec")
def test_exec(eng, rt, started):
    cid = started(rt, ["sleep", "1000"])
    r = eng.exec(cid, ["sh", "-c", "echo $((6*7)); exit 5"])
    assert r.rc == 5, r
    assert r.out.strip() == "42", r


def started_script(eng, started, rt, script, **o):
    """Runs script as the container's init, detached, and returns a Res with its output and
    the spec the engine sent (Res.spec), read while the container still runs."""
    cid = started(rt, ["sh", "-c", script + "; echo script-done; exec sleep 1000"], **o)
    wait_for(lambda: "script-done" in eng.logs(cid), 30, "the script to finish")
    r = Res(["init of", cid], 0, eng.logs(cid), "", 0)
    r.spec = eng.bundle_config(cid)
    return r


TRAP = "trap 'echo got-{sig}; exit {rc}' {sig}; echo ready; sleep 1000 & wait"


@params("stop")
def test_stop_sigterm_honoured(eng, rt, started):
    cid = started(rt, ["sh", "-c", TRAP.format(sig="TERM", rc=7)], exit_status=True)
    wait_for(lambda: "ready" in eng.logs(cid), 30, "the trap to be set")
    r = eng.stop(cid, 30)
    assert r.rc == 0, r
    assert r.elapsed < 20, f"stop waited for the timeout: SIGTERM not honoured? {r}"
    assert eng.wait(cid) == 7  # the trap's status, not 137 (SIGKILL)
    assert "got-TERM" in eng.logs(cid)


@params("kill")
def test_kill_signal(eng, rt, started):
    cid = started(rt, ["sh", "-c", TRAP.format(sig="USR1", rc=9)], exit_status=True)
    wait_for(lambda: "ready" in eng.logs(cid), 30, "the trap to be set")
    r = eng.kill(cid, "USR1")
    assert r.rc == 0, r
    assert eng.wait(cid) == 9


@params("rm")
def test_rm_force_running(eng, rt, started):
    cid = started(rt, ["sleep", "1000"])
    pid = eng.pid(cid)
    assert pid_alive(pid)
    r = eng.rm(cid)
    assert r.rc == 0, r
    assert not eng.exists(cid)
    wait_for(lambda: not pid_alive(pid), 10, f"container process {pid} to die")


@params("stdin")
def test_interactive_stdin(eng, rt):
    r = eng.run(rt, ["tr", "a-z", "A-Z"], input="hello engine\n", interactive=True)
    assert r.rc == 0, r
    assert r.out.strip() == "HELLO ENGINE", r


@params("tty")
def test_tty(eng, rt):
    r = eng.run(rt, ["sh", "-c", "tty; [ -t 0 ] && [ -t 1 ] && echo both-ttys; exit 4"],
                tty=True)
    assert r.rc == 4, r
    assert re.search(r"^/dev/pts/\d+\s*$", r.out, re.M), r
    assert "both-ttys" in r.out, r


@params("volume")
def test_bind_volume(eng, rt, stack):
    host = Path(tempfile.mkdtemp(prefix="vol-", dir=stack.scratch))
    (host / "in.txt").write_text("from-host\n")
    r = eng.run(rt, ["sh", "-c", "cat /data/in.txt && echo from-container > /data/out.txt"],
                volume=(host, "/data"))
    assert r.rc == 0, r
    assert r.out.strip() == "from-host", r
    assert (host / "out.txt").read_text() == "from-container\n"


@params("user")
def test_user(eng, rt, started):
    cmd = ["sh", "-c", "id; touch /root/x 2>/dev/null && echo wrote-root-home; true"]
    if eng.name == "ctr":  # ctr run has no --user: the same through exec --user
        cid = started(rt, ["sleep", "1000"])
        r = eng.exec(cid, cmd, user="1000:1000")
    else:
        r = eng.run(rt, cmd, user="1000:1000")
    assert r.rc == 0, r
    assert re.match(r"uid=1000(\(\S*\))? gid=1000(\(\S*\))? ", r.out), r
    assert "wrote-root-home" not in r.out, r


@params("read_only")
def test_read_only(eng, rt, started):
    """Bug 3 for podman: --read-only mounts /tmp, /var/tmp and /run as tmpfs with tmpcopyup."""
    writable = {"docker": ["/tmp"], "podman": ["/tmp", "/var/tmp", "/run"],
                "ctr": ["/dev/shm"]}[eng.name]
    script = ("touch /rootfile 2>/dev/null && echo root-writable; "
              + "".join(f"touch {d}/f && echo ok:{d}; " for d in writable) + "true")
    if eng.name == "podman":  # detached, to see the spec
        r = started_script(eng, started, rt, script, read_only=True)
        copyup = sorted(m["destination"] for m in r.spec["mounts"]
                        if "tmpcopyup" in m.get("options", []))
        assert copyup == ["/run", "/tmp", "/var/tmp"], r.spec["mounts"]
    else:
        r = eng.run(rt, ["sh", "-c", script], read_only=True)
    assert r.rc == 0, r
    assert "root-writable" not in r.out, r
    for d in writable:
        assert f"ok:{d}" in r.out, r


@params("memory")
def test_memory_limit(eng, rt, started):
    cid = started(rt, ["sleep", "1000"], memory=MEM_LIMIT)
    pid = eng.pid(cid)
    assert int(host_cgroup_value(pid, "memory", "memory.limit_in_bytes")) == MEM_LIMIT
    if eng.name != "ctr":  # ctr's spec has no cgroup mount
        r = eng.exec(cid, ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"])
        assert r.rc == 0 and int(r.out.strip()) == MEM_LIMIT, r


@params("pids")
def test_pids_limit(eng, rt, started):
    cid = started(rt, ["sleep", "1000"], pids_limit=PIDS_LIMIT)
    pid = eng.pid(cid)
    assert host_cgroup_value(pid, "pids", "pids.max") == str(PIDS_LIMIT)
    # the limit bites: PIDS_LIMIT more processes cannot all start
    r = eng.exec(cid, ["sh", "-c", f"for i in $(seq {PIDS_LIMIT}); do sleep 30 & done; wait"])
    assert r.rc != 0 and re.search(r"fork|Resource temporarily unavailable", r.err), r
    assert int(host_cgroup_value(pid, "pids", "pids.current")) <= PIDS_LIMIT


@params("cap_drop")
def test_cap_drop_all(eng, rt, started):
    """Bug 2 for docker: `--cap-drop ALL` sends "capabilities": {} (no sets at all), which
    must mean empty sets."""
    script = ("grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status; touch /f; "
              "chown 1:1 /f 2>/dev/null && echo chown-worked; true")
    if eng.name == "docker":  # detached, to see the spec
        r = started_script(eng, started, rt, script, cap_drop_all=True)
        assert r.spec["process"].get("capabilities") == {}, r.spec["process"]
    else:
        r = eng.run(rt, ["sh", "-c", script], cap_drop_all=True)
    assert r.rc == 0, r
    caps = dict(re.findall(r"^(Cap\w+):\s+([0-9a-f]+)$", r.out, re.M))
    assert set(caps) >= {"CapEff", "CapPrm", "CapBnd"}, r
    assert all(int(v, 16) == 0 for v in caps.values()), caps
    assert "chown-worked" not in r.out, r


@params("home")
def test_home_without_home_in_spec(eng, rt, started):
    """dockerd and containerd send no HOME: runc sets it from the container's /etc/passwd (the
    process uid's entry, "/" without one), for the init and for exec'ed processes alike."""
    r = started_script(eng, started, rt, 'echo "init-home=$HOME"')
    assert not any(e.startswith("HOME=") for e in r.spec["process"]["env"]), r.spec
    assert "init-home=/root\n" in r.out, r
    cid = r.argv[-1]
    r = eng.exec(cid, ["sh", "-c", 'echo "exec-home=$HOME"'])
    assert r.rc == 0 and r.out == "exec-home=/root\n", r
    r = eng.exec(cid, ["sh", "-c", 'echo "exec-home=$HOME"'], user="1000:1000")
    assert r.rc == 0 and r.out == "exec-home=/\n", r


# --- racker-oci and runc on the same bundle, without an engine -------------------------------


@pytest.fixture
def runtime_cli(racker, runtimes, tmp_path):
    """rt -> a conftest Racker for that runtime (racker-oci: the leak-checked fixture)."""
    from conftest import Racker
    runc = Racker(runtimes["runc"], tmp_path / "runc-state", racker.workdir)
    yield {"racker-oci": racker, "runc": runc}
    for cid in runc.list_ids() if (tmp_path / "runc-state").exists() else []:
        runc("delete", "--force", cid)


@pytest.mark.parametrize("rt", RUNTIMES)
@pytest.mark.parametrize("env,uid,want", [
    ([], 0, "/root"),            # the uid's passwd entry
    ([], 1, "/usr/sbin"),        # daemon
    ([], 1000, "/"),             # no entry
    (["HOME=/custom"], 0, "/custom"),  # the spec's own wins
    (["HOME="], 0, "/root"),     # empty = unset
], ids=["root", "daemon", "no-entry", "spec-home", "empty-home"])
def test_runtime_sets_home_from_passwd(rt, env, uid, want, runtime_cli, make_bundle):
    """What docker and ctr rely on (their specs carry no HOME), straight on the runtime."""
    def edit(c):
        c["process"]["env"] = [e for e in c["process"]["env"] if not e.startswith("HOME=")] + env
        c["process"]["user"] = {"uid": uid, "gid": uid}

    b = make_bundle(["sh", "-c", 'echo "home=$HOME"; sleep 30'], edit=edit)
    cli = runtime_cli[rt]
    cid = cli.new_id("home")
    init = cli("run", "--detach", "--bundle", b.path, cid)
    assert init.returncode == 0, init
    try:
        wait_until(lambda: "\n" in init.stdout, timeout=10, what="the init's output")
        assert init.stdout == f"home={want}\n", init
        # exec: the process of config.json with other args, and with another user
        r = cli("exec", cid, "sh", "-c", 'echo "exec-home=$HOME"')
        assert r.returncode == 0 and r.stdout == f"exec-home={want}\n", r
        r = cli("exec", "--user", "1000:1000", cid, "sh", "-c", 'echo "exec-home=$HOME"')
        exec_want = want if env == ["HOME=/custom"] else "/"
        assert r.returncode == 0 and r.stdout == f"exec-home={exec_want}\n", r
    finally:
        cli("delete", "--force", cid)
