#!/usr/bin/python3
"""Benchmark: boot an OS image to "up", run one probe, shut down — racker run --boot vs
systemd-nspawn --boot (+ nsenter for the probe), alternating.

    bench/boot_bench.py RACKER STORE IMAGE ROOTFS_COPY [N]

ROOTFS_COPY is a writable copy of the image's root filesystem for nspawn.
"""
import os
import signal
import statistics
import subprocess
import sys
import time


def racker_cycle(racker, store, image):
    t0 = time.perf_counter()
    r = subprocess.run([racker, "--root", store, "run", "--rm", "--boot", image,
                        "systemctl", "is-active", "systemd-journald"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    total = time.perf_counter() - t0
    if r.returncode != 0 or r.stdout.strip() != "active":
        raise SystemExit(f"racker failed: {r.stdout} {r.stderr[-400:]}")
    return total


def nspawn_cycle(rootfs):
    t0 = time.perf_counter()
    p = subprocess.Popen(["systemd-nspawn", "--register=no", "--keep-unit", "-q", "--boot",
                          "-D", rootfs], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL)
    try:
        init = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if init is None:
                kids = subprocess.run(["pgrep", "-P", str(p.pid)], stdout=subprocess.PIPE,
                                      text=True).stdout.split()
                init = kids[0] if kids else None
            if init:
                r = subprocess.run(["nsenter", "-t", init, "-a", "systemctl",
                                    "is-system-running"], stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)
                if r.stdout.strip() in ("running", "degraded"):
                    break
            time.sleep(0.005)
        else:
            raise SystemExit("nspawn: not running after 30 s")
        r = subprocess.run(["nsenter", "-t", init, "-a", "systemctl", "is-active",
                            "systemd-journald"], stdout=subprocess.PIPE, text=True)
        if r.stdout.strip() != "active":
            raise SystemExit(f"nspawn probe: {r.stdout}")
        os.kill(int(init), signal.SIGRTMIN + 3)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return time.perf_counter() - t0


def main():
    if len(sys.argv) < 5:
        raise SystemExit(__doc__)
    racker, store, image, rootfs = sys.argv[1:5]
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 10
    t = {"racker run --boot": [], "nspawn --boot + nsenter": []}
    racker_cycle(racker, store, image)  # warm-up
    nspawn_cycle(rootfs)
    for _ in range(n):
        t["racker run --boot"].append(racker_cycle(racker, store, image))
        t["nspawn --boot + nsenter"].append(nspawn_cycle(rootfs))
    print(f"boot to up + one probe (systemctl is-active systemd-journald) + shutdown, {n} runs "
          "each, alternating")
    med = {k: statistics.median(v) for k, v in t.items()}
    for k, v in t.items():
        print(f"{k:<26} median {med[k]:.3f} s  min {min(v):.3f}  max {max(v):.3f}")
    print(f"racker / nspawn: {med['racker run --boot'] / med['nspawn --boot + nsenter']:.2f}x")


if __name__ == "__main__":
    main()
