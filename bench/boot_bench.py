#!/usr/bin/python3
"""Benchmark: boot an OS image to ready, run one probe, shut down: racker run --boot vs
systemd-nspawn --boot (+ nsenter for the probe), alternating, with each phase timed.

    bench/boot_bench.py RACKER STORE IMAGE ROOTFS_COPY [N]

ROOTFS_COPY is a writable copy of the image's root filesystem for nspawn.

Phases, from the moment the tool is started (all on CLOCK_MONOTONIC):
  ready     boot to ready. racker: until systemd's READY=1 (from racker's own
            "racker-timing:" line, RACKER_TIMINGS=1). nspawn: until `nsenter ... systemctl
            is-system-running` first answers running/degraded (polled every 5 ms).
  probe     `systemctl is-active systemd-journald` inside (racker: exec; nspawn: nsenter).
  shutdown  the rest: SIGRTMIN+3 until the tool has exited (racker: also its clean-up).
Without racker-timing lines (an older racker) only racker's total is reported.
"""
import os
import re
import signal
import statistics
import subprocess
import sys
import time

PHASES = ("ready", "probe", "shutdown")
TIMING = re.compile(r"^racker-timing: (.*)$", re.M)


def parse_timing(stderr):
    """The last racker-timing line as {key: float ms}, or None."""
    found = TIMING.findall(stderr)
    if not found:
        return None
    out = {}
    for kv in found[-1].split():
        k, _, v = kv.partition("=")
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out


def racker_cycle(racker, store, image):
    env = dict(os.environ, RACKER_TIMINGS="1")
    t0 = time.monotonic()
    r = subprocess.run([racker, "--root", store, "run", "--rm", "--boot", image,
                        "systemctl", "is-active", "systemd-journald"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    t_end = time.monotonic()
    if r.returncode != 0 or r.stdout.strip() != "active":
        raise SystemExit(f"racker failed ({r.returncode}): {r.stdout} {r.stderr[-400:]}")
    total = (t_end - t0) * 1000
    out = {"total": total}
    tm = parse_timing(r.stderr)
    # marks: ... ready (READY=1 seen) exec (the probe returned) ...; t0_mono_ms is racker's
    # process start, so "ready" also covers exec + dynamic loading + setup
    if tm and "t0_mono_ms" in tm and "ready_ms" in tm and "exec_ms" in tm:
        marks = [k for k in tm if k.endswith("_ms") and k not in ("t0_mono_ms", "total_ms")]
        upto_ready = sum(tm[k] for k in marks[:marks.index("ready_ms") + 1])
        ready = tm["t0_mono_ms"] - t0 * 1000 + upto_ready
        out["ready"] = ready
        out["probe"] = tm["exec_ms"]
        out["shutdown"] = total - ready - tm["exec_ms"]
        out["racker_shutdown_ms"] = tm.get("shutdown_ms", float("nan"))
    return out


def nsenter(init, *cmd):
    return subprocess.run(["nsenter", "-t", init, "-a", *cmd], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)


def container_init(nspawn_pid):
    """The pid (a string) of the container's systemd: nspawn's child running "systemd", or None.
    Right after the start nspawn's child is still an intermediate process that soon exits."""
    kids = subprocess.run(["pgrep", "-P", str(nspawn_pid)], stdout=subprocess.PIPE,
                          text=True).stdout.split()
    for k in kids:
        try:
            with open(f"/proc/{k}/comm") as f:
                if f.read().strip() == "systemd":
                    return k
        except OSError:
            pass
    return None


def nspawn_cycle(rootfs):
    t0 = time.monotonic()
    p = subprocess.Popen(["systemd-nspawn", "--register=no", "--keep-unit", "-q", "--boot",
                          "-D", rootfs], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL)
    try:
        init = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if init is None:
                init = container_init(p.pid)
            if init:
                r = nsenter(init, "systemctl", "is-system-running")
                if r.stdout.strip() in ("running", "degraded"):
                    break
                if not r.stdout.strip():
                    init = None  # gone (nspawn's intermediate child) or not systemd yet: look again
            time.sleep(0.005)
        else:
            raise SystemExit("nspawn: not running after 30 s")
        t_ready = time.monotonic()
        r = nsenter(init, "systemctl", "is-active", "systemd-journald")
        t_probe = time.monotonic()
        if r.stdout.strip() != "active":
            raise SystemExit(f"nspawn probe: {r.stdout}")
        os.kill(int(init), signal.SIGRTMIN + 3)
        p.wait(timeout=30)
        t_end = time.monotonic()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return {"ready": (t_ready - t0) * 1000, "probe": (t_probe - t_ready) * 1000,
            "shutdown": (t_end - t_probe) * 1000, "total": (t_end - t0) * 1000}


def alternate(tools, n):
    """Runs each of tools (name -> function returning one run's timings) once to warm up, then
    n times each, alternating (drift on the machine hits all alike): name -> [timings]."""
    runs = {k: [] for k in tools}
    for fn in tools.values():  # warm-up
        fn()
    for _ in range(n):
        for k, fn in tools.items():
            runs[k].append(fn())
    return runs


def med(runs, key):
    v = [r[key] for r in runs if key in r]
    return statistics.median(v) if v else None


def main():
    if len(sys.argv) < 5:
        raise SystemExit(__doc__)
    racker, store, image, rootfs = sys.argv[1:5]
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 10
    tools = {"racker run --boot": lambda: racker_cycle(racker, store, image),
             "nspawn --boot + nsenter": lambda: nspawn_cycle(rootfs)}
    runs = alternate(tools, n)
    print(f"boot to ready + one probe (systemctl is-active systemd-journald) + shutdown, {n} runs "
          "each, alternating; medians in ms")
    print(f"{'tool':<26}" + "".join(f"{p:>10}" for p in PHASES) + f"{'total':>10}"
          f"{'min total':>11}{'max total':>11}")
    cell = lambda x: f"{x:>10.0f}" if x is not None else f"{'-':>10}"
    for k, rs in runs.items():
        tot = [r["total"] for r in rs]
        print(f"{k:<26}" + "".join(cell(med(rs, p)) for p in PHASES) + cell(med(rs, "total")) +
              f"{min(tot):>11.0f}{max(tot):>11.0f}")
    rk, ns = runs["racker run --boot"], runs["nspawn --boot + nsenter"]
    if med(rk, "ready") is None:
        print("(racker printed no racker-timing line: phases unknown, total only)")
    ratios = [(p, med(rk, p), med(ns, p)) for p in PHASES + ("total",)]
    print("racker / nspawn:  " + "  ".join(f"{p} {a / b:.2f}x" for p, a, b in ratios
                                           if a is not None and b))
    own = med(rk, "racker_shutdown_ms")
    if own is not None:
        print(f"racker's own shutdown_ms (SIGRTMIN+3 until init reaped), median: {own:.0f}; "
              "the rest of its shutdown phase is container removal and exit")


if __name__ == "__main__":
    main()
