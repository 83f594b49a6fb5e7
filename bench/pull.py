#!/usr/bin/python3
"""Benchmark: cold pull + unpack of one multi-layer image with racker vs skopeo copy + umoci
unpack (and podman pull when installed), alternating, into fresh directories under BASE
(use a tmpfs: ext4 here is dominated by inode allocation after recent deletes).

    bench/pull.py RACKER IMAGE_REF REGISTRIES_CONF BASE [N]
"""
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid


def timed(cmd, env=None):
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, env=env)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {r.stderr.strip()[-400:]}")
    return dt, int(r.stderr.strip().splitlines()[-1]) / 1024.0


def main():
    if len(sys.argv) < 5:
        raise SystemExit(__doc__)
    racker, ref, conf, base = sys.argv[1:5]
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 5
    results = {}

    def racker_pull(d):
        return [timed([racker, "--root", d, "--registries-conf", conf, "pull", "-q", ref])]

    def skopeo_umoci(d):
        a = timed(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}",
                   f"oci:{d}/layout:img"])
        b = timed(["umoci", "unpack", "--image", f"{d}/layout:img", f"{d}/bundle"])
        return [a, b]

    tools = [("racker pull", racker_pull), ("skopeo+umoci", skopeo_umoci)]
    if shutil.which("podman"):
        def podman(d):
            # podman refuses a runroot path longer than 50 characters
            run = f"/tmp/rb-{uuid.uuid4().hex[:8]}"
            try:
                return [timed(["podman", "--root", f"{d}/storage", "--runroot", run,
                               "--storage-driver", "overlay", "pull", "-q", "--tls-verify=false",
                               ref])]
            finally:
                shutil.rmtree(run, ignore_errors=True)
        tools.append(("podman pull", podman))
    for name, _ in tools:
        results[name] = ([], [])
    for i in range(n):
        for name, fn in tools:
            d = os.path.join(base, f"{name.split()[0]}-{uuid.uuid4().hex[:8]}")
            os.makedirs(d)
            parts = fn(d)
            results[name][0].append(sum(p[0] for p in parts))
            results[name][1].append(max(p[1] for p in parts))
            shutil.rmtree(d, ignore_errors=True)
    print(f"cold pull + unpack of {ref} into {base}, {n} runs each, alternating")
    print(f"{'tool':<14} {'median s':>9} {'min s':>7} {'max s':>7} {'peak RSS MB':>12}")
    med = {}
    for name, (ts, rss) in results.items():
        med[name] = statistics.median(ts)
        print(f"{name:<14} {med[name]:>9.3f} {min(ts):>7.3f} {max(ts):>7.3f} {max(rss):>12.1f}")
    for name in med:
        if name != "racker pull":
            print(f"racker pull / {name}: {med['racker pull'] / med[name]:.2f}x")


if __name__ == "__main__":
    main()
