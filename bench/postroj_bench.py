#!/usr/bin/python3
"""Benchmark: the warm pkgprobe cycle `postroj pkgprobe --image=debian-bookworm
--check-unit=systemd-journald` (image present: boot, check, teardown) against the same cycle
done with systemd-nspawn --boot + nsenter (boot_bench.nspawn_cycle), alternating.

    bench/postroj_bench.py POSTROJ STORE ROOTFS_COPY [N]
"""
import re
import subprocess
import sys
import time

from boot_bench import alternate, med, nspawn_cycle

PHASE = re.compile(r"ok\s+(\d+(?:\.\d+)?) (ms|s)\s+(boot|unit) ")
TEARDOWN = re.compile(r"teardown (\d+) ms")


def postroj_cycle(postroj, store):
    t0 = time.monotonic()
    p = subprocess.run([postroj, "-q", "--store-root", store, "pkgprobe",
                        "--image=debian-bookworm", "--check-unit=systemd-journald"],
                       capture_output=True, text=True, timeout=120)
    total = (time.monotonic() - t0) * 1000
    if p.returncode != 0:
        raise SystemExit(f"postroj pkgprobe failed:\n{p.stdout}{p.stderr}")
    r = {"total": total}
    for value, unit, phase in PHASE.findall(p.stdout):
        r["ready" if phase == "boot" else "probe"] = float(value) * (1000 if unit == "s" else 1)
    m = TEARDOWN.search(p.stdout)
    if m:
        r["shutdown"] = float(m.group(1))
    return r


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    postroj, store, rootfs = sys.argv[1:4]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    tools = {"postroj pkgprobe": lambda: postroj_cycle(postroj, store),
             "nspawn --boot + nsenter": lambda: nspawn_cycle(rootfs)}
    runs = alternate(tools, n)
    print(f"warm pkgprobe cycle (boot, systemctl is-active systemd-journald, teardown), {n} runs "
          "each, alternating; medians in ms")
    print(f"{'tool':<26}{'boot':>10}{'probe':>10}{'teardown':>10}{'total':>10}{'min':>8}{'max':>8}")
    for k, rs in runs.items():
        cells = "".join(f"{med(rs, p):>10.0f}" if med(rs, p) is not None else f"{'-':>10}"
                        for p in ("ready", "probe", "shutdown", "total"))
        tot = [r["total"] for r in rs]
        print(f"{k:<26}{cells}{min(tot):>8.0f}{max(tot):>8.0f}")
    a, b = med(runs["postroj pkgprobe"], "total"), med(runs["nspawn --boot + nsenter"], "total")
    print(f"postroj / nspawn total: {a / b:.2f}x; target: median under 300 ms and ahead of nspawn")


if __name__ == "__main__":
    main()
