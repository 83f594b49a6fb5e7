#!/usr/bin/python3
"""Benchmark: N booted OS containers at once. racker run -d against systemd-nspawn -U --boot,
each first one after another, then 5 at a time; every container must reach `running` (or
`degraded`) before it counts.

    bench/scale_bench.py RACKER STORE IMAGE ROOTFS WORK N [TOOL,...]

ROOTFS is the image's root filesystem for nspawn, its owners shifted to NSPAWN_UID_BASE (each
nspawn container gets an overlay of it under WORK and a cgroup of its own); TOOL is racker or
nspawn (default both). RACKER_RUN_FLAGS: more flags for racker run (e.g. --userns host).

Per tool and mode: the time until all N are up, boot-to-up per container (median, max), memory
per container (median of the container's cgroup: memory.usage_in_bytes and rss+shmem of cgroup
v1, memory.current and anon+shmem of v2; and the PSS of its processes), how many failed and
why, the time to tear all down (racker rm -f of all; SIGKILL of each nspawn init, its exit and
overlay unmount), and what was left afterwards of the containers it started (mounts, netns,
veths, processes, cgroups, runtime state; other stores' containers on the host are not
looked at). Ctrl-C tears down what was started.
"""
import collections
import concurrent.futures
import glob
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

NSPAWN_UID_BASE = 0x60000000
UP_STATES = ("running", "degraded")
BOOT_DEADLINE = 90  # s per container, from its start
PARALLEL = 5
CG_NAME = "racker-bench-scale"  # nspawn containers' cgroups, in each of these hierarchies
CG_HIERARCHIES = ("systemd", "unified", "memory")
# what systemd or nspawn say when a host limit stops them
REASONS = (
    (re.compile(r"inotify.*Too many open files|Too many open files.*inotify"),
     "inotify instances used up (fs.inotify.max_user_instances)"),
    (re.compile(r"inotify.*No space left|watch.*No space left"),
     "inotify watches used up (fs.inotify.max_user_watches)"),
    (re.compile(r"Disk quota exceeded"), "key quota (kernel.keys.*maxkeys)"),
    (re.compile(r"Resource temporarily unavailable"), "EAGAIN (pid/thread limits?)"),
)

stopping = threading.Event()


def now():
    return time.monotonic()


def run(argv, timeout=120):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def first_reason(text):
    for rx, why in REASONS:
        if rx.search(text):
            return why
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[-1][:160] if lines else "(no output)"


# --- measurements shared by both tools -----------------------------------------------------

def pss_kb(init_pid):
    """PSS of every process in init's pid namespace, in KiB."""
    try:
        ns = os.readlink(f"/proc/{init_pid}/ns/pid")
    except OSError:
        return None
    total = 0
    for d in glob.glob("/proc/[0-9]*"):
        try:
            if os.readlink(d + "/ns/pid") != ns:
                continue
            with open(d + "/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def cgroup_memory(init_pid):
    """(usage, rss+shmem) in bytes of the container's memory cgroup, or (None, None)."""
    try:
        with open(f"/proc/{init_pid}/cgroup") as f:
            lines = [l.rstrip("\n").split(":", 2) for l in f]
    except OSError:
        return None, None
    for _, ctrls, path in lines:
        if "memory" in ctrls.split(","):
            if path == "/" or path.startswith("/process_api"):
                return None, None  # not a cgroup of the container's own
            d = "/sys/fs/cgroup/memory" + path
            stat = read_stat(d + "/memory.stat")
            usage = read_int(d + "/memory.usage_in_bytes")
            return usage, stat.get("total_rss", 0) + stat.get("total_shmem", 0)
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        path = next((p for h, _, p in lines if h == "0"), None)
        if path:
            path = re.sub(r"/(init\.scope|payload.*)$", "", path)
            d = "/sys/fs/cgroup" + path
            stat = read_stat(d + "/memory.stat")
            return read_int(d + "/memory.current"), stat.get("anon", 0) + stat.get("shmem", 0)
    return None, None


def read_int(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def read_stat(path):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(" ")
                out[k] = int(v)
    except (OSError, ValueError):
        pass
    return out


def mounts_with(*needles):
    with open("/proc/self/mountinfo") as f:
        return [l.split()[4] for l in f if any(n in l for n in needles)]


def processes_in_cgroups(*needles):
    """Pids whose cgroup path (any hierarchy) contains one of needles."""
    out = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(d + "/cgroup") as f:
                text = f.read()
        except OSError:
            continue
        if any(n in text for n in needles):
            try:
                with open(d + "/stat") as f:
                    st = f.read()
                comm, state = st[st.index("(") + 1:st.rindex(")")], st[st.rindex(")") + 2]
            except (OSError, ValueError):
                continue
            out.append(f"{os.path.basename(d)} {comm} {state}")
    return out


def summarize(found):
    """{kind: [entries]} -> ["kind: n (a, b, c, ...)"] for the non-empty kinds."""
    return [f"{k}: {len(v)} ({', '.join(sorted(v)[:3])}{', ...' if len(v) > 3 else ''})"
            for k, v in found.items() if v]


# --- racker ------------------------------------------------------------------------------

class Racker:
    name = "racker run -d"

    def __init__(self, exe, store, image):
        self.exe, self.store, self.image = exe, store, image
        self.started = []
        self.lock = threading.Lock()
        self.ids = set()  # every container id seen in the store: failed boots' too
        self.watching = threading.Event()

    def watch_ids(self):
        """Notes the ids of the store's containers every 50 ms while boots run: a failed boot
        removes its container, and racker names no id then; what it leaves carries the id."""
        d = os.path.join(self.store, "containers")
        while self.watching.is_set():
            try:
                self.ids.update(os.listdir(d))
            except OSError:
                pass
            time.sleep(0.05)

    def begin(self):
        self.ids = set()
        self.watching.set()
        threading.Thread(target=self.watch_ids, daemon=True).start()

    def leftovers(self):
        self.watching.clear()
        ids = sorted(i for i in self.ids if re.fullmatch(r"[0-9a-f]{64}", i))
        cg = [g for i in ids for g in glob.glob(f"/sys/fs/cgroup/*/racker/{i}/") +
              glob.glob(f"/sys/fs/cgroup/*machine.slice/racker-{i}.scope/")]
        return summarize({
            "mounts": mounts_with(self.store, *[f"/netns/{i}" for i in ids]),
            "veths": [f"rk{i[:12]}" for i in ids if os.path.exists(f"/sys/class/net/rk{i[:12]}")],
            "netns": [i for i in ids if os.path.exists(f"/run/racker-net/netns/{i}")],
            "processes": processes_in_cgroups(*ids) if ids else [],
            "cgroups": cg,
            "runtime state": [i for i in ids if os.path.exists(f"/run/racker/{i}")],
            "containers": [i for i in ids
                           if os.path.exists(os.path.join(self.store, "containers", i))]})

    def r(self, *args, timeout=120):
        return run([self.exe, "--root", self.store, *args], timeout=timeout)

    def boot(self, name):
        """Starts one container and waits until it is up: (ok, reason, init pid)."""
        with self.lock:
            self.started.append(name)
        p = self.r("run", "-d", "--name", name, *os.environ.get("RACKER_RUN_FLAGS", "").split(),
                   self.image, timeout=BOOT_DEADLINE + 30)
        if p.returncode != 0:
            errs = [l for l in p.stderr.splitlines() if l.startswith("racker:")]
            return False, first_reason(p.stderr) if not errs else errs[0][8:].replace(name, "C"), None
        deadline = now() + BOOT_DEADLINE
        state = ""
        while now() < deadline and not stopping.is_set():
            q = self.r("exec", name, "systemctl", "is-system-running", timeout=30)
            state = q.stdout.strip()
            if state in UP_STATES:
                return True, state, self.pid(name)
            if state not in ("initializing", "starting"):
                break
            time.sleep(0.05)
        return False, f"is-system-running: {state or q.stderr.strip()[:100]}", None

    def pid(self, name):
        import json
        p = self.r("inspect", name)
        try:
            return json.loads(p.stdout)[0]["pid"]
        except (ValueError, LookupError, TypeError):
            return None

    def teardown(self):
        with self.lock:
            names, self.started = self.started, []
        if not names:
            return 0.0
        t0 = now()
        p = self.r("rm", "-f", *names, timeout=600)
        took = now() - t0
        if p.returncode != 0:
            # the names that never made it to a container are no error here
            real = [l for l in p.stderr.splitlines() if "no such container" not in l]
            if real:
                print(f"racker rm -f: {' '.join(real)[:300]}", file=sys.stderr)
        return took


# --- systemd-nspawn ----------------------------------------------------------------------

class Nspawn:
    name = "systemd-nspawn -U --boot"

    def __init__(self, rootfs, work):
        self.rootfs, self.work = rootfs, work
        self.procs = {}  # name -> Popen
        self.lock = threading.Lock()

    def cgroup_dirs(self, name):
        return [f"/sys/fs/cgroup/{h}/{CG_NAME}/{name}" for h in CG_HIERARCHIES
                if os.path.isdir(f"/sys/fs/cgroup/{h}")]

    def boot(self, name):
        d = os.path.join(self.work, "nspawn", name)
        for sub in ("upper", "work", "merged"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={self.rootfs},upperdir={d}/upper,workdir={d}/work",
                        f"{d}/merged"], check=True)
        cgroups = self.cgroup_dirs(name)
        for c in cgroups:
            os.makedirs(c, exist_ok=True)

        def enter_cgroups():  # nspawn --keep-unit uses (and delegates) the cgroup it starts in
            for c in cgroups:
                with open(c + "/cgroup.procs", "w") as f:
                    f.write("0")

        log = open(os.path.join(d, "console.log"), "w")
        with self.lock:
            if stopping.is_set():
                return False, "interrupted", None
            self.procs[name] = subprocess.Popen(
                ["systemd-nspawn", "--register=no", "--keep-unit", "-q",
                 f"--private-users={NSPAWN_UID_BASE}:65536", "--private-users-ownership=off",
                 "--boot", "-M", name, "-D", f"{d}/merged"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=enter_cgroups)
        log.close()
        p = self.procs[name]
        deadline = now() + BOOT_DEADLINE
        init, state = None, ""
        while now() < deadline and not stopping.is_set() and p.poll() is None:
            if init is None:
                init = self.init_of(p.pid)
            if init:
                q = run(["nsenter", "-t", str(init), "-a", "systemctl", "is-system-running"])
                state = q.stdout.strip()
                if state in UP_STATES:
                    return True, state, init
                if not state:
                    init = None
            time.sleep(0.05)
        with open(os.path.join(d, "console.log"), errors="replace") as f:
            out = re.sub(r"\x1b\[[0-9;]*m", "", f.read())
        why = "exited" if p.poll() is not None else f"not up after {BOOT_DEADLINE} s ({state})"
        return False, f"{why}: {first_reason(out)}", None

    def begin(self):
        pass

    def leftovers(self):
        return summarize({
            "mounts": mounts_with(os.path.join(self.work, "nspawn")),
            "processes": processes_in_cgroups(f"/{CG_NAME}/"),
            "cgroups": glob.glob(f"/sys/fs/cgroup/*/{CG_NAME}/*/"),
            "nspawn state": glob.glob("/run/systemd/nspawn/propagate/scale-*")})

    @staticmethod
    def init_of(pid):
        try:
            kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
        except OSError:
            return None
        for k in kids:
            try:
                if open(f"/proc/{k}/comm").read().strip() == "systemd":
                    return int(k)
            except OSError:
                pass
        return None

    def teardown(self):
        with self.lock:
            procs, self.procs = self.procs, {}
        t0 = now()
        for p in procs.values():
            init = self.init_of(p.pid)
            if init:
                os.kill(init, signal.SIGKILL)
            elif p.poll() is None:
                p.kill()
        for name, p in procs.items():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for name in procs:
            d = os.path.join(self.work, "nspawn", name)
            subprocess.run(["umount", f"{d}/merged"], stderr=subprocess.DEVNULL)
        took = now() - t0
        for name in procs:  # not timed: ours, not nspawn's
            for c in self.cgroup_dirs(name):
                for sub, _, _ in sorted(os.walk(c), key=lambda w: -len(w[0])):
                    try:
                        os.rmdir(sub)
                    except OSError:
                        pass
            shutil.rmtree(os.path.join(self.work, "nspawn", name), ignore_errors=True)
            # nspawn leaves it where /run is not a tmpfs
            shutil.rmtree(f"/run/systemd/nspawn/propagate/{name}", ignore_errors=True)
        return took


# --- one round ---------------------------------------------------------------------------

def boot_all(tool, names, parallel):
    """Boots names (parallel at a time): [(name, ok, reason, pid, seconds)], wall seconds."""
    results = []

    def one(name):
        t0 = now()
        ok, why, pid = tool.boot(name)
        return name, ok, why, pid, now() - t0

    t0 = now()
    if parallel == 1:
        for n in names:
            if stopping.is_set():
                break
            results.append(one(n))
    else:
        with concurrent.futures.ThreadPoolExecutor(parallel) as ex:
            results = list(ex.map(one, names))
    return results, now() - t0


def round_(tool, tag, n, parallel):
    names = [f"scale-{tag}-{i}" for i in range(n)]
    tool.begin()
    try:
        results, wall = boot_all(tool, names, parallel)
        up = [r for r in results if r[1]]
        mem = [cgroup_memory(r[3]) for r in up if r[3]]
        pss = [pss_kb(r[3]) for r in up if r[3]]
    finally:
        down = tool.teardown()
    # the kernel dismantles network namespaces, and reaps killed processes, a little later
    deadline = now() + 3
    while (left := tool.leftovers()) and now() < deadline:
        time.sleep(0.2)
    fails = collections.Counter(r[2] for r in results if not r[1])
    mib = lambda xs: statistics.median(xs) / 2**20 if xs else None
    return {"tool": tool.name, "mode": "one after another" if parallel == 1 else f"{parallel} at a time",
            "n": n, "up": len(up), "degraded": sum(1 for r in up if r[2] == "degraded"),
            "wall": wall, "all_up": wall if len(up) == n else None,
            "boot_med": statistics.median([r[4] for r in up]) if up else None,
            "boot_max": max([r[4] for r in up]) if up else None,
            "mem_usage": mib([m[0] for m in mem if m[0] is not None]),
            "mem_anon": mib([m[1] for m in mem if m[1] is not None]),
            "pss": statistics.median([p for p in pss if p]) / 1024 if any(pss) else None,
            "teardown": down, "fails": fails, "left": left}


def fmt(x, unit="", prec=1):
    return "-" if x is None else f"{x:.{prec}f}{unit}"


def main():
    if len(sys.argv) < 7:
        raise SystemExit(__doc__)
    exe, store, image, rootfs, work, n = sys.argv[1:7]
    n = int(n)
    wanted = sys.argv[7].split(",") if len(sys.argv) > 7 else ["racker", "nspawn"]
    tools = []
    if "racker" in wanted:
        tools.append(("r", Racker(exe, store, image)))
    if "nspawn" in wanted:
        tools.append(("n", Nspawn(rootfs, work)))

    def on_signal(sig, _):
        if stopping.is_set():
            return  # already tearing down: let it finish
        stopping.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    rows = []
    try:
        for tag, tool in tools:
            for parallel in (1, PARALLEL):
                print(f"{tool.name}: {n} containers, "
                      f"{'one after another' if parallel == 1 else f'{parallel} at a time'} ...",
                      file=sys.stderr, flush=True)
                rows.append(round_(tool, f"{tag}{parallel}", n, parallel))
    except KeyboardInterrupt:
        print("interrupted: tearing down", file=sys.stderr)
        for _, tool in tools:
            tool.teardown()
        raise SystemExit(130)

    print(f"\n{n} booted OS containers (debian bookworm + systemd), up = is-system-running "
          f"{'/'.join(UP_STATES)}; memory: medians per container, MiB")
    print(f"{'tool':<26}{'mode':<19}{'up':>7}{'all up s':>9}{'boot med':>9}{'boot max':>9}"
          f"{'cg usage':>9}{'cg anon':>8}{'pss':>7}{'rm all s':>9}")
    for r in rows:
        print(f"{r['tool']:<26}{r['mode']:<19}{r['up']:>3}/{r['n']:<3}{fmt(r['wall'], '', 2) + ('' if r['all_up'] else '*'):>9}"
              f"{fmt(r['boot_med'], '', 2):>9}{fmt(r['boot_max'], '', 2):>9}"
              f"{fmt(r['mem_usage']):>9}{fmt(r['mem_anon']):>8}{fmt(r['pss']):>7}"
              f"{fmt(r['teardown'], '', 2):>9}")
    if any(not r["all_up"] for r in rows):
        print("* not all came up: the time until the last one was up or had failed")
    for r in rows:
        if r["degraded"]:
            print(f"{r['tool']}, {r['mode']}: {r['degraded']} degraded")
        for why, k in r["fails"].most_common():
            print(f"{r['tool']}, {r['mode']}: {k} failed: {why}")
        for l in r["left"]:
            print(f"{r['tool']}, {r['mode']}: LEFT BEHIND {l}")
    by = {(r["tool"], r["mode"]): r for r in rows}
    for mode in ("one after another", f"{PARALLEL} at a time"):
        a, b = by.get((Racker.name, mode)), by.get((Nspawn.name, mode))
        if not a or not b:
            continue
        parts = []
        for key, label in (("wall", "time to all up"), ("boot_med", "boot med"),
                           ("pss", "pss"), ("teardown", "teardown")):
            if a[key] and b[key] and a["up"] == b["up"]:
                parts.append(f"{label} {a[key] / b[key]:.2f}x")
        if a["up"] != b["up"]:
            parts.append(f"up {a['up']} vs {b['up']} (times not comparable)")
        print(f"racker / nspawn, {mode}: " + "  ".join(parts))
    if any(r["left"] for r in rows) or any(r["up"] < r["n"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
