#!/usr/bin/python3
"""Benchmark: start-to-exit of /bin/true in a container, alternating between tools.

    bench/run_bench.py N NAME=COMMAND...

Each COMMAND is a shell-free argv given as one string split on spaces ({i} is replaced by the
run number, for unique container names). Prints medians and each tool's ratio to the first.
"""
import statistics
import subprocess
import sys
import time


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    n = int(sys.argv[1])
    tools = [a.split("=", 1) for a in sys.argv[2:]]
    times = {name: [] for name, _ in tools}
    for i in range(-2, n):  # two warm-up rounds
        for name, cmd in tools:
            argv = cmd.replace("{i}", str(i + 2)).split()
            t0 = time.perf_counter()
            r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            dt = (time.perf_counter() - t0) * 1000
            if r.returncode != 0:
                raise SystemExit(f"{name} failed ({r.returncode}): {r.stderr.strip()[-300:]}")
            if i >= 0:
                times[name].append(dt)
    first = tools[0][0]
    base = statistics.median(times[first])
    print(f"run /bin/true, {n} runs each, alternating")
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
