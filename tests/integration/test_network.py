"""racker run --network private: the container's own network namespace with loopback and a veth
on the racker0 bridge (NAT to the uplink), its resolv.conf, and nothing left behind.

Uses test_run.py's registry, stores and leak check. Network state lives in /run/racker-net
(netns/<id> bind mounts, leases/<address> holding the container id, attach/<id>); the host end
of a container's veth is "rk" + the first 12 characters of its id, which is also the
container's default hostname. Other racker runs on this host share the bridge: the tests look
at their own containers only.

Only loopback and the bridge are reached: a TCP server on the bridge address, containers
talking to each other. The NAT rule is checked in the ruleset, never by going out.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import processes_mentioning, wait_until
from test_run import (Ctx, _checked, bb_rootfs, images, proc_net_dev_names,  # noqa: F401
                      racker_exe, unique)

NET_ROOT = Path("/run/racker-net")


@pytest.fixture
def ctx(racker_exe, images, tmp_path):  # noqa: F811
    c = Ctx(racker_exe, tmp_path, images)
    yield from _checked(c, tmp_path)


def bridge():
    """(gateway address, prefix length, mtu) of racker0 as racker recorded it, or None."""
    try:
        cidr, mtu = (NET_ROOT / "bridge").read_text().split()
    except (FileNotFoundError, ValueError):
        return None
    addr, prefix = cidr.split("/")
    return addr, int(prefix), int(mtu)


def in_subnet(addr, gateway, prefix):
    def n(a):
        return int.from_bytes(socket.inet_aton(a), "big")
    mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    return n(addr) & mask == n(gateway) & mask


def host_links():
    return [line.split(":")[1].strip().split("@")[0]
            for line in subprocess.run(["ip", "-o", "link"], stdout=subprocess.PIPE, check=True,
                                       text=True).stdout.splitlines()]


def netns_mounts():
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if f" {NET_ROOT}/netns/" in line]


def leases():
    """address -> container id."""
    d = NET_ROOT / "leases"
    out = {}
    for name in (os.listdir(d) if d.is_dir() else []):
        try:
            out[name] = (d / name).read_text()
        except FileNotFoundError:
            pass
    return out


def network_of(short_id):
    """What the host holds for the container whose id starts with short_id."""
    return {
        "veth": [n for n in host_links() if n == f"rk{short_id}"],
        "netns": [m for m in netns_mounts() if f"/netns/{short_id}" in m],
        "leases": [a for a, cid in leases().items() if cid.startswith(short_id)],
        "attach": [n for n in (os.listdir(NET_ROOT / "attach")
                               if (NET_ROOT / "attach").is_dir() else [])
                   if n.startswith(short_id)],
        "proxy": [pid for pid, _ in processes_mentioning(f"/netns/{short_id}")],
    }


def assert_released(short_id):
    # the kernel takes the veth down with the namespace, on its own time (milliseconds)
    wait_until(lambda: not any(network_of(short_id).values()), timeout=5,
               what=f"network of {short_id} released: {network_of(short_id)}")


def assert_held(short_id, *kinds):
    """The host holds something of each kind (a key of network_of) for the container."""
    held = network_of(short_id)
    assert all(held[k] for k in kinds), held


def assert_rm_f_releases(ctx, name, short_id):
    """`racker rm -f name` succeeds and leaves nothing of the container's network behind."""
    r = ctx("rm", "-f", name)
    assert r.returncode == 0, r
    assert_released(short_id)


def require_uplink(ctx):
    """Runs one container and returns (gateway, prefix, mtu); skips when this host gives
    containers no uplink (no bridge support or no permission): they then have loopback only."""
    out = ctx.out("--rm", ctx.images.bb, "cat", "/proc/net/dev")
    b = bridge()
    if "eth0" not in proc_net_dev_names(out) or b is None:
        pytest.skip("no racker0 uplink on this host (containers get loopback only)")
    return b


# --- the namespace --------------------------------------------------------------------------


def test_private_has_lo_and_eth0_on_the_bridge(ctx):
    gw, prefix, mtu = require_uplink(ctx)
    out = ctx.out("--rm", "--network", "private", ctx.images.bb, "sh", "-c",
                  "hostname; cat /proc/net/dev; echo --; ip -4 -o addr show dev eth0; "
                  "ip -4 -o addr show dev lo; ip route; cat /sys/class/net/eth0/mtu")
    short, rest = out.split("\n", 1)
    devs, info = rest.split("--\n")
    assert proc_net_dev_names(devs) == ["eth0", "lo"], out
    m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/(\d+)", info.splitlines()[0])
    assert m and int(m.group(2)) == prefix and in_subnet(m.group(1), gw, prefix), out
    assert m.group(1) != gw
    assert "inet 127.0.0.1/8" in info.splitlines()[1], out
    assert re.search(rf"^default via {re.escape(gw)} dev eth0", info, re.M), out
    assert info.splitlines()[-1] == str(mtu), out
    assert_released(short)


def test_none_has_loopback_only_and_takes_nothing(ctx):
    before = set(leases())
    out = ctx.out("--rm", "--network", "none", ctx.images.bb, "sh", "-c",
                  "hostname; cat /proc/net/dev")
    short, devs = out.split("\n", 1)
    assert proc_net_dev_names(devs) == ["lo"], out
    assert not any(network_of(short).values()), network_of(short)
    assert not any(cid.startswith(short) for a, cid in leases().items() if a not in before)


def test_bridge_nat_and_forwarding(ctx):
    gw, prefix, _ = require_uplink(ctx)
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    net = socket.inet_ntoa((int.from_bytes(socket.inet_aton(gw), "big")
                            & (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF).to_bytes(4, "big"))
    rule = f"-A POSTROUTING -s {net}/{prefix} ! -o racker0 -j MASQUERADE"
    ipt = subprocess.run(["iptables", "-w", "-t", "nat", "-S", "POSTROUTING"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if ipt.returncode == 0 and rule in ipt.stdout.splitlines():
        assert ipt.stdout.splitlines().count(rule) == 1, "the rule is added once"
        return
    nft = subprocess.run(["nft", "list", "table", "ip", "racker"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    assert nft.returncode == 0 and "masquerade" in nft.stdout, (ipt.stdout, nft.stdout)


# --- reaching things -----------------------------------------------------------------------------


def test_reaches_a_server_on_the_bridge_address(ctx):
    gw, _, _ = require_uplink(ctx)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind((gw, 0))
    srv.listen(1)
    srv.settimeout(15)
    port = srv.getsockname()[1]
    seen = {}

    def serve():
        try:
            conn, peer = srv.accept()
            with conn:
                conn.settimeout(5)
                seen["peer"] = peer[0]
                seen["data"] = conn.recv(100)
                conn.sendall(b"pong\n")
        except OSError as e:
            seen["error"] = e

    t = threading.Thread(target=serve)
    t.start()
    try:
        out = ctx.out("--rm", ctx.images.bb, "sh", "-c",
                      f"hostname; ip -4 -o addr show dev eth0; echo ping | nc -w 5 {gw} {port}")
    finally:
        t.join(20)
        srv.close()
    short, addr, reply = out.splitlines()
    assert reply == "pong", out
    assert seen.get("data") == b"ping\n", seen
    assert f"inet {seen['peer']}/" in addr, (seen, addr)  # not masqueraded on the bridge
    assert_released(short)


def test_two_containers_same_port_reach_each_other(ctx, tmp_path):
    require_uplink(ctx)
    shared = tmp_path / "shared"
    shared.mkdir()
    script = (
        "set -e; me=$(hostname); mkdir -p /www; echo \"from $me\" > /www/who; "
        "httpd -p 8080 -h /www; "
        "ip -4 -o addr show dev eth0 | sed 's/.*inet \\([0-9.]*\\).*/\\1/' > /shared/$me.ip; "
        "i=0; while [ $(ls /shared/*.ip | wc -l) -lt 2 ]; do "
        "  i=$((i+1)); [ $i -lt 200 ] || exit 3; sleep 0.05; done; "
        "for f in /shared/*.ip; do [ $f = /shared/$me.ip ] || peer=$(cat $f); done; "
        # busybox-static's wget crashes in glibc's resolver: plain HTTP through nc
        "printf 'GET /who HTTP/1.0\\r\\n\\r\\n' | nc -w 5 $peer 8080 | tail -n 1; "
        "touch /shared/$me.done; "
        "i=0; while [ $(ls /shared/*.done | wc -l) -lt 2 ]; do "
        "  i=$((i+1)); [ $i -lt 200 ] || exit 4; sleep 0.05; done; echo $me")
    procs = [ctx.popen("run", "--rm", "-v", f"{shared}:/shared", "--name", unique(f"net{i}"),
                       ctx.images.bb, "sh", "-c", script) for i in range(2)]
    results = [ctx.wait(p) for p in procs]
    for r in results:
        assert r.returncode == 0, r
    (got_a, me_a), (got_b, me_b) = (r.stdout.splitlines() for r in results)
    assert me_a != me_b
    assert (got_a, got_b) == (f"from {me_b}", f"from {me_a}"), results
    ips = sorted(p.read_text().strip() for p in shared.glob("*.ip"))
    assert len(set(ips)) == 2, ips
    for short in (me_a, me_b):
        assert_released(short)


# --- resolv.conf ---------------------------------------------------------------------------------


def test_resolv_conf_has_no_loopback_nameserver(ctx):
    out = ctx.out("--rm", ctx.images.bb, "cat", "/etc/resolv.conf")
    servers = re.findall(r"^nameserver\s+(\S+)", out, re.M)
    assert servers, out
    for s in servers:
        assert not s.startswith("127.") and s not in ("::1", "0.0.0.0"), out
    host = Path("/etc/resolv.conf").read_text()
    host_servers = re.findall(r"^nameserver\s+(\S+)", host, re.M)
    if host_servers and not any(s.startswith("127.") or s == "::1" for s in host_servers):
        assert out == host, "a usable host resolv.conf is copied as it is"


# --- release on every way out ----------------------------------------------------------------


def test_released_after_failed_start(ctx):
    """create holds a namespace (and lease) until start; a start whose payload cannot run
    releases it again, rm finds nothing left."""
    require_uplink(ctx)
    r = ctx("create", ctx.images.bb, "/no/such/binary")
    assert r.returncode == 0, r
    cid = r.stdout.strip()
    assert_held(cid[:12], "netns", "leases", "veth")
    r = ctx("start", "-a", cid)
    assert r.returncode != 0, r
    assert_released(cid[:12])
    assert_rm_f_releases(ctx, cid, cid[:12])


def test_detached_then_rm_f(ctx):
    require_uplink(ctx)
    n = unique("netd")
    cid = ctx.ok("-d", "--name", n, ctx.images.bb, "sleep", "1000").stdout.strip()
    assert_held(cid[:12], "veth", "netns", "leases", "attach")
    assert_rm_f_releases(ctx, n, cid[:12])


def test_rm_after_racker_killed(ctx):
    require_uplink(ctx)
    n = unique("netk")
    p = ctx.popen("run", "--name", n, ctx.images.bb, "sleep", "1000")

    def up():
        r = ctx("ps", "--format", "json")
        return r.returncode == 0 and any(c["name"] == n for c in json.loads(r.stdout))

    wait_until(up, timeout=10, what="the container")
    cid = ctx.container_ids()[0]
    wait_until(lambda: network_of(cid[:12])["veth"], what="its veth")
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert network_of(cid[:12])["netns"], "a killed racker releases nothing"
    assert_rm_f_releases(ctx, n, cid[:12])


def test_concurrent_runs_get_distinct_addresses(ctx):
    require_uplink(ctx)
    procs = [ctx.popen("run", "--rm", ctx.images.bb, "sh", "-c",
                       "hostname; ip -4 -o addr show dev eth0") for _ in range(6)]
    addrs, shorts = [], []
    for p in procs:
        r = ctx.wait(p)
        assert r.returncode == 0, r
        short, line = r.stdout.splitlines()
        shorts.append(short)
        addrs.append(re.search(r"inet (\S+)/", line).group(1))
    assert len(set(addrs)) == len(addrs), addrs
    for s in shorts:
        assert_released(s)


def test_orphaned_lease_released_by_the_next_run(ctx):
    """A racker killed between taking a lease and writing attach/<id> (or the id into the
    lease) leaves leases/<address> with neither an attach entry nor a namespace, which no
    teardown finds: the next run with a network drops it under the lock, and keeps a live
    container's lease."""
    gw, prefix, _ = require_uplink(ctx)
    n = unique("netl")
    live = ctx.ok("-d", "--name", n, ctx.images.bb, "sleep", "1000").stdout.strip()
    held = network_of(live[:12])["leases"]
    assert held, network_of(live[:12])
    base = int.from_bytes(socket.inet_aton(gw), "big") & (0xFFFFFFFF << (32 - prefix))
    planted = []

    def plant(text):
        for k in range(100, 150):  # a free address: never another run's lease
            p = NET_ROOT / "leases" / socket.inet_ntoa((base + k).to_bytes(4, "big"))
            try:
                with open(p, "x") as f:
                    f.write(text)
            except FileExistsError:
                continue
            planted.append((p, text))
            return
        pytest.fail("no free address to plant a lease at")

    try:
        plant(os.urandom(32).hex())  # a container id without attach entry or netns
        plant("")  # killed before the id was written
        out = ctx.out("--rm", ctx.images.bb, "sh", "-c", "hostname")
        assert [p for p, _ in planted if p.exists()] == [], "orphaned leases are released"
        assert network_of(live[:12])["leases"] == held, "a live container's lease is kept"
        assert_released(out.strip())
    finally:
        for p, text in planted:  # only what is still ours
            if p.exists() and p.read_text() == text:
                p.unlink()
        assert_rm_f_releases(ctx, n, live[:12])


# --- published ports (-p) ------------------------------------------------------------------------

HTTPD = ("mkdir -p /www && echo \"hello from $(hostname)\" > /www/who && "
         "exec httpd -f -p {bind}8080 -h /www")


def http_get(port, path="/who", host="127.0.0.1", timeout=5):
    """The body of GET path from host:port, b"" when the connection ends without a reply."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        data = b""
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, expect):
    def answered():
        try:
            return http_get(port) == expect
        except OSError:
            return False
    wait_until(answered, timeout=10, what=f"an answer on port {port}")


def test_publish_any_port_reaches_the_container_and_goes_with_it(ctx):
    n = unique("pub")
    cid = ctx.ok("-d", "--name", n, "-p", "8080", ctx.images.bb, "sh", "-c",
                 HTTPD.format(bind="")).stdout.strip()
    r = ctx("port", n, "8080")
    assert r.returncode == 0, r
    host_ip, port = r.stdout.strip().rsplit(":", 1)
    assert host_ip == "0.0.0.0" and int(port) > 0, r.stdout
    wait_http(int(port), f"hello from {cid[:12]}\n".encode())
    assert ctx("port", n).stdout.strip() == f"8080/tcp -> 0.0.0.0:{port}"
    ps = json.loads(ctx("ps", "--format", "json").stdout)
    assert [c["ports"] for c in ps if c["name"] == n] == [f"0.0.0.0:{port}->8080/tcp"], ps
    info = json.loads(ctx("inspect", n).stdout)[0]
    assert info["NetworkSettings"]["Ports"] == {
        "8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": port}]}, info
    assert info["HostConfig"]["PortBindings"] == {
        "8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": ""}]}, info
    assert network_of(cid[:12])["proxy"], "a proxy carries the port"
    r = ctx("port", n, "9999/udp")
    assert r.returncode != 0 and "9999/udp" in r.stderr, r
    assert_rm_f_releases(ctx, n, cid[:12])
    with pytest.raises(OSError):
        http_get(int(port), timeout=2)


UDP_ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
print("ready", flush=True)
for _ in range(20):
    data, peer = s.recvfrom(100)
    s.sendto(b"echo " + data, peer)
"""


def test_published_udp_and_tcp_from_the_host(ctx):
    """A fixed port on one address, and UDP both ways (busybox has no UDP server: a python
    echo server in the container's network namespace, through nsenter)."""
    port, uport = free_port(), free_port()
    n = unique("pubu")
    cid = ctx.ok("-d", "--name", n, "-p", f"127.0.0.1:{port}:8080", "-p", f"{uport}:5353/udp",
                 ctx.images.bb, "sh", "-c", HTTPD.format(bind="")).stdout.strip()
    wait_http(port, f"hello from {cid[:12]}\n".encode())
    assert ctx("port", n).stdout.splitlines() == [f"8080/tcp -> 127.0.0.1:{port}",
                                                  f"5353/udp -> 0.0.0.0:{uport}"]
    echo = subprocess.Popen(["nsenter", f"--net={NET_ROOT}/netns/{cid}", sys.executable, "-c",
                             UDP_ECHO], stdout=subprocess.PIPE, text=True)
    try:
        assert echo.stdout.readline().strip() == "ready"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(2)
            u.sendto(b"ping-udp", ("127.0.0.1", uport))
            assert u.recvfrom(100)[0] == b"echo ping-udp"
            u.sendto(b"again", ("127.0.0.1", uport))
            assert u.recvfrom(100)[0] == b"echo again"
    finally:
        echo.kill()
        echo.wait()
    assert_rm_f_releases(ctx, n, cid[:12])


def test_a_service_on_the_containers_loopback_is_not_published(ctx):
    """As with docker: -p reaches the container's address, not its 127.0.0.1."""
    require_uplink(ctx)
    port = free_port()
    n = unique("publo")
    cid = ctx.ok("-d", "--name", n, "-p", f"{port}:8080", ctx.images.bb, "sh", "-c",
                 HTTPD.format(bind="127.0.0.1:")).stdout.strip()
    wait_until(lambda: ctx("exec", n, "sh", "-c", "netstat -ltn | grep -q :8080").returncode == 0,
               what="httpd listening")
    try:
        got = http_get(port)
    except OSError:
        got = b""
    assert got == b"", got
    assert_rm_f_releases(ctx, n, cid[:12])


def test_publish_a_port_in_use_fails_with_one_line_and_leaves_nothing(ctx):
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        n = unique("pubbusy")
        r = ctx.run("--rm", "--name", n, "-p", f"{port}:80", ctx.images.bb, "true")
    assert r.returncode == 125, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"host port {port}/tcp is already in use" in lines[0], r.stderr
    assert ctx.container_ids() == []


@pytest.mark.parametrize("spec,why", [
    ("http", "not a port"), ("0", "not a port"), ("70000", "not a port"),
    ("8080:80/sctp", "not tcp or udp"), ("1.2.3:8080:80", "not an IPv4 address"),
    ("8000-8002:80-81", "differ in length"), ("[::1]:80:80", "IPv6"), ("a:b:c:d", "use [IP:]"),
])
def test_bad_publish_spec_is_one_line(ctx, spec, why):
    r = ctx.run("--rm", "-p", spec, ctx.images.bb, "true")
    assert r.returncode == 125, r
    assert r.stderr.count("\n") == 1 and why in r.stderr and spec in r.stderr, r.stderr
    assert ctx.container_ids() == []


def test_publish_with_host_network_is_discarded_with_a_warning(ctx):
    r = ctx.ok("--rm", "--network", "host", "-p", "8080:80", ctx.images.bb, "true")
    assert "published ports are discarded with --network host" in r.stderr, r


def test_publish_survives_start_and_racker_killed(ctx):
    n = unique("pubk")
    cid = ctx("create", "--name", n, "-p", "8080", ctx.images.bb, "sh", "-c",
              HTTPD.format(bind="")).stdout.strip()
    assert cid, "created"
    p = ctx.popen("start", "-a", n)
    wait_until(lambda: ctx("port", n, "8080").returncode == 0, what="its port")
    port = int(ctx("port", n, "8080").stdout.strip().rsplit(":", 1)[1])
    wait_http(port, f"hello from {cid[:12]}\n".encode())
    p.send_signal(signal.SIGKILL)  # racker dies; the monitor takes over
    p.wait()
    assert_rm_f_releases(ctx, n, cid[:12])
    with pytest.raises(OSError):
        http_get(port, timeout=2)
