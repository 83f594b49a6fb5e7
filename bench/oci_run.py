#!/usr/bin/python3
"""Benchmark: `run` of /bin/true in one busybox bundle with racker-oci, runc and crun.

Runs the runtimes alternately (so drift on the machine hits all of them alike), N times each,
and prints the median wall time, the ratios, and each runtime's peak RSS. RSS is measured in
a separate pass under GNU time (%M): a child forked from this Python process would report
Python's own high-water mark.

    bench/oci_run.py RACKER_OCI BUNDLE [N]
"""
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def runtimes(racker):
    out = [("racker-oci", [racker])]
    if shutil.which("runc"):
        out.append(("runc", ["runc"]))
    if shutil.which("crun"):
        # crun refuses hybrid cgroup hosts; the wrapper hides cgroup2 from it
        hybrid = os.path.isdir("/sys/fs/cgroup/unified")
        out.append(("crun", [os.path.join(HERE, "crun-hybrid-wrapper.sh")] if hybrid else ["crun"]))
    return out


def one_run(cmd, bundle, cid):
    t0 = time.perf_counter_ns()
    rc = subprocess.call(cmd + ["run", "--bundle", bundle, cid], stdout=subprocess.DEVNULL)
    t1 = time.perf_counter_ns()
    if rc != 0:
        raise SystemExit(f"{cmd[0]} run failed with status {rc}")
    return (t1 - t0) / 1e6


def peak_rss_mb(cmd, bundle, cid):
    """Peak RSS of the runtime process (largest of 5 runs), from GNU time."""
    peak = 0
    for i in range(5):
        r = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd + ["run", "--bundle", bundle,
                           f"{cid}-{i}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, check=True)
        peak = max(peak, int(r.stderr.strip().splitlines()[-1]))
    return peak / 1024.0


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    racker, bundle = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 60
    rts = runtimes(racker)
    times = {name: [] for name, _ in rts}
    rss = {name: 0.0 for name, _ in rts}
    for name, cmd in rts:  # warm-up
        one_run(cmd, bundle, f"bench-warm-{name}-{os.getpid()}")
    for i in range(n):
        for name, cmd in rts:
            times[name].append(one_run(cmd, bundle, f"bench-{name}-{os.getpid()}-{i}"))
    for name, cmd in rts:
        rss[name] = peak_rss_mb(cmd, bundle, f"bench-rss-{name}-{os.getpid()}")
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"run /bin/true, busybox bundle, {n} runs each, alternating")
    print(f"{'runtime':<12} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} {'peak RSS MB':>12}")
    for name, v in times.items():
        q = statistics.quantiles(v, n=10)
        print(f"{name:<12} {med[name]:>10.2f} {q[0]:>8.2f} {q[-1]:>8.2f} {rss[name]:>12.1f}")
    base = med["racker-oci"]
    for name in med:
        if name != "racker-oci":
            print(f"racker-oci / {name}: {base / med[name]:.2f}x time, "
                  f"{rss['racker-oci'] / rss[name]:.2f}x peak RSS")


if __name__ == "__main__":
    main()
