#!/usr/bin/python3
"""Benchmark: start-to-exit of /bin/true in a container, alternating between tools.

    bench/run_bench.py [--blocks] N NAME=COMMAND...

Each COMMAND is a shell-free argv given as one string split on spaces ({i} is replaced by the
run number, for unique container names). Prints medians and each tool's ratio to the first.
Each round runs every tool once, in a shuffled order (seeded: the same for every run of the
script): what one tool leaves behind (a cgroup migration's RCU grace period, page cache, a
daemon's work) falls on whichever runs after it, not always on the same one. --blocks runs
each tool's rounds together instead, one tool after the other: for a tool that leaves work
running after it returns (podman's cleanup), which would otherwise be charged to the next.
A COMMAND that starts with as:UID:GID runs as that user (no supplementary groups) with the
environment's K=V pairs of $BENCH_USER_ENV (space-separated) added, started directly as a
user's shell would start it, without wrappers.
"""
import os
import random
import statistics
import subprocess
import sys
import time


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    args = sys.argv[1:]
    blocks = args[0] == "--blocks"
    if blocks:
        args = args[1:]
    n = int(args[0])
    tools = [a.split("=", 1) for a in args[1:]]
    times = {name: [] for name, _ in tools}
    rng = random.Random(12)
    if blocks:  # each tool's runs together (two warm-ups each), one tool after the other
        order = [(i, t) for t in tools for i in range(-2, n)]
    else:
        order = [(i, t) for i in range(-2, n) for t in rng.sample(tools, len(tools))]
    for i, (name, cmd) in order:
        if True:
            argv = cmd.replace("{i}", str(i + 2)).split()
            kw = {}
            if argv[0].startswith("as:"):
                _, uid, gid = argv.pop(0).split(":")
                env = dict(os.environ)
                env.update(kv.split("=", 1) for kv in os.environ.get("BENCH_USER_ENV", "").split())
                kw = {"user": int(uid), "group": int(gid), "extra_groups": [], "env": env,
                      "cwd": "/"}
            t0 = time.perf_counter()
            r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               **kw)
            dt = (time.perf_counter() - t0) * 1000
            if r.returncode != 0:
                raise SystemExit(f"{name} failed ({r.returncode}): {r.stderr.strip()[-300:]}")
            if i >= 0:
                times[name].append(dt)
    first = tools[0][0]
    base = statistics.median(times[first])
    print(f"run /bin/true, {n} runs each, " +
          ("one tool after the other" if blocks else "alternating in a shuffled order"))
    print(f"{'tool':<22} {'median ms':>10} {'p10':>8} {'p90':>8} {'vs ' + first:>16}")
    for name, v in times.items():
        q = statistics.quantiles(v, n=10)
        m = statistics.median(v)
        print(f"{name:<22} {m:>10.1f} {q[0]:>8.1f} {q[-1]:>8.1f} {base / m:>15.2f}x")
    med = {name: statistics.median(v) for name, v in times.items()}
    # like for like: racker's time as a fraction of the peer's (targets: <= 1 for runc, <= 0.1
    # for podman)
    for mine, peer in [("racker run --rm", "runc run"),
                       ("racker run --rm", "podman run --rm (bridge)"),
                       ("racker run --rm (none)", "podman run --rm (none)"),
                       ("racker run --rm (none)", "runc run"),
                       # bench/rootless.sh (targets: <= 1.5 rootful, <= 0.1 rootless podman)
                       ("racker rootless (none)", "racker rootful (none)"),
                       ("racker rootless (pasta)", "racker rootful (bridge)"),
                       ("racker rootless (none)", "podman rootless (none)")]:
        if mine in med and peer in med:
            print(f"{mine} / {peer}: {med[mine] / med[peer]:.3f}x")


if __name__ == "__main__":
    main()
