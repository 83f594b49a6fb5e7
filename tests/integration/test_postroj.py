"""postroj: the catalog, pull (bake/pull + provisioning, one failure does not stop the others)
and pkgprobe on a Debian bookworm image baked locally.

The image is baked once per session into a store of its own with `postroj pull`, from the same
rootfs tarball cache as test_boot.py (/var/cache/racker-tests/bake), so reruns take seconds.
Packages come from Debian's archive with `apt-get download` (lighttpd and the two dependencies
a minbase image lacks, so the probe needs no network of its own) and are served over HTTP from
127.0.0.1 by the test; a broken package is built with dpkg-deb.
"""

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import signal
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import make_busybox_rootfs, snapshot_binary
from registry_util import Dir, File, Image, Layer, Registry
from test_boot import BAKE_CACHE

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300
LIGHTTPD_DEPS = ["lighttpd", "media-types", "lsb-base"]


def builtin_catalog():
    return json.loads((REPO / "data" / "postroj" / "catalog.json").read_text())


@pytest.fixture(scope="session")
def postroj_exe(tmp_path_factory):
    build = os.environ.get("RACKER_BUILD")
    path = Path(build) / "postroj" if build else REPO / "build" / "postroj"
    if not os.access(path, os.X_OK):
        pytest.skip(f"postroj binary not found at {path} (build it or set RACKER_BUILD)")
    copy = snapshot_binary(path, tmp_path_factory.mktemp("postroj-bin"), "postroj")
    return str(copy)


class Postroj:
    def __init__(self, exe, store, package_cache):
        self.exe = exe
        self.store = store
        self.package_cache = package_cache

    def argv(self, *args, catalog=None):
        argv = [self.exe, "--store-root", str(self.store), "--bake-cache", str(BAKE_CACHE),
                "--package-cache", str(self.package_cache)]
        if catalog:
            argv += ["--catalog", str(catalog)]
        return argv + list(args)

    def run(self, *args, catalog=None, timeout=TIMEOUT):
        p = subprocess.run(self.argv(*args, catalog=catalog), capture_output=True, text=True,
                           timeout=timeout)
        print(f"\n$ postroj {' '.join(args)}\n{p.stdout}{p.stderr}")
        return p

    def containers_left(self):
        d = self.store / "containers"
        return os.listdir(d) if d.is_dir() else []


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("postroj")


@pytest.fixture(scope="session")
def pr(postroj_exe, session_dir):
    return Postroj(postroj_exe, session_dir / "store", session_dir / "packages")


@pytest.fixture(scope="session")
def mixed_catalog(session_dir):
    """The built-in debian-bookworm entry plus one whose registry cannot be reached."""
    cat = builtin_catalog()
    good = [e for e in cat["images"] if e["label"] == "debian-bookworm"]
    bad = {"label": "unreachable", "source": {"image": "127.0.0.1:9/postroj/none:1"},
           "family": "fedora", "package_manager": "dnf"}
    path = session_dir / "catalog.json"
    path.write_text(json.dumps({"images": [bad] + good}))
    return path


@pytest.fixture(scope="session")
def pulled(pr, mixed_catalog):
    """`postroj pull unreachable debian-bookworm`: the first fails, the second is baked."""
    if os.geteuid() != 0:
        pytest.skip("postroj pull/pkgprobe need root (mounts, namespaces, cgroups)")
    if not shutil.which("mmdebstrap"):
        pytest.skip("mmdebstrap not installed (apt-get install mmdebstrap)")
    BAKE_CACHE.mkdir(parents=True, exist_ok=True)
    p = pr.run("pull", "unreachable", "debian-bookworm", catalog=mixed_catalog, timeout=900)
    if "mmdebstrap failed" in p.stderr:
        pytest.skip("mmdebstrap could not build bookworm (no access to the Debian archive?): "
                    + p.stderr[-500:])
    return p


@pytest.fixture(scope="session")
def image(pulled):
    if "ok     debian-bookworm" not in pulled.stdout:
        pytest.fail(f"debian-bookworm was not pulled: {pulled}")
    return "debian-bookworm"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def packages(session_dir):
    """A directory with lighttpd (+ what minbase lacks) and a broken package, served over HTTP
    from 127.0.0.1; yields (base URL, directory)."""
    d = session_dir / "debs"
    d.mkdir()
    p = subprocess.run(["apt-get", "download", *LIGHTTPD_DEPS], cwd=d, capture_output=True,
                       text=True, timeout=120)
    if p.returncode != 0:
        pytest.skip("apt-get download lighttpd failed (no Debian archive?): " + p.stderr[-300:])
    make_broken_deb(d)
    handler = functools.partial(QuietHandler, directory=str(d))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", d
    srv.shutdown()


def make_broken_deb(d):
    """postroj-broken: a unit whose ExecStart fails after printing a marker to the journal."""
    root = d / "broken-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: postroj-broken\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: postroj tests <tests@example.org>\nDescription: a unit that fails\n")
    unit_dir = root / "lib" / "systemd" / "system"
    unit_dir.mkdir(parents=True)
    (unit_dir / "postroj-broken.service").write_text(
        "[Unit]\nDescription=postroj broken test service\n\n"
        "[Service]\nExecStart=/bin/sh -c 'echo postroj-broken-marker: cannot start >&2; exit 3'\n\n"
        "[Install]\nWantedBy=multi-user.target\n")
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root),
                    str(d / "postroj-broken_1.0_all.deb")], check=True, capture_output=True)
    shutil.rmtree(root)


def lighttpd_args(base, d):
    names = sorted(f.name for f in d.glob("*.deb") if f.name.split("_")[0] in LIGHTTPD_DEPS)
    assert len(names) == len(LIGHTTPD_DEPS), names
    return [f"--package={base}/{n}" for n in names]


# --- catalog ------------------------------------------------------------------------------


def test_list_images_table(pr):
    p = pr.run("list-images")
    assert p.returncode == 0, p
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["LABEL", "FAMILY", "PKG-MGR", "PRESENT", "SOURCE"], p
    labels = [l.split()[0] for l in lines[1:]]
    for want in ORIGINAL_LABELS + ["almalinux-9", "fedora-41", "fedora-42", "archlinux",
                                   "debian-forky"]:
        assert want in labels, (want, p)
    row = next(l for l in lines if l.startswith("debian-bookworm "))
    assert row.split()[1:3] == ["debian", "apt"], row
    assert "bake debian bookworm" in row, row


# every label of the original postroj's catalog
ORIGINAL_LABELS = [
    "debian-stretch", "debian-buster", "debian-bullseye", "debian-bookworm", "debian-trixie",
    "debian-sid", "ubuntu-focal", "ubuntu-jammy", "ubuntu-noble", "fedora-35", "fedora-36",
    "fedora-37", "fedora-44", "fedora-45", "rhel-8", "rhel-9", "rhel-10", "opensuse-leap15",
    "opensuse-leap16", "opensuse-tumbleweed", "sles-15", "sles-bci", "centos-7", "centos-8",
    "centos-9", "centos-10", "rockylinux-8", "rockylinux-9", "amazonlinux-2023",
    "oraclelinux-10", "archlinux-20220501"]


def test_list_images_json(pr, tmp_path):
    p = pr.run("list-images", "--format", "json")
    assert p.returncode == 0, p
    images = {e["label"]: e for e in json.loads(p.stdout)}
    assert images["fedora-41"]["package_manager"] == "dnf"
    assert images["archlinux"]["family"] == "arch"
    assert images["debian-bookworm"]["source"] == {"bake": {"distro": "debian",
                                                            "suite": "bookworm"}}
    assert images["debian-bookworm"]["image"] == "postroj.local/debian-bookworm:latest"
    assert "image" in images["opensuse-tumbleweed"]["source"]
    assert images["debian-bullseye"]["aliases"] == ["debian-11"]
    assert images["debian-buster"]["source"]["bake"]["mirror"] == "http://archive.debian.org/debian"
    assert len(images) == len(set(images)) >= len(ORIGINAL_LABELS)
    # the binary carries its catalog: it works from anywhere
    p2 = subprocess.run([pr.exe, "list-images", "--format=json"], capture_output=True, text=True,
                        cwd=tmp_path)
    assert p2.returncode == 0, p2
    assert [e["label"] for e in json.loads(p2.stdout)] == list(images)


def test_catalog_override_and_errors(pr, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [{"label": "x", "source": {"image": "a"}, "family": "gentoo",'
                   ' "package_manager": "emerge"}]}')
    p = pr.run("list-images", catalog=bad)
    assert p.returncode == 1, p
    assert p.stderr.strip() == (f'postroj: {bad}: images[0] (x): unknown family "gentoo" '
                                "(debian, ubuntu, fedora, rhel, suse, arch)"), p
    env = dict(os.environ, POSTROJ_CATALOG=str(bad))
    p = subprocess.run([pr.exe, "list-images"], capture_output=True, text=True, env=env)
    assert p.returncode == 1 and "unknown family" in p.stderr, p


def test_unknown_label(pr):
    p = pr.run("pkgprobe", "--image=debian-potato", "--check-unit=systemd-journald")
    assert p.returncode == 1, p
    assert p.stderr.startswith('postroj: unknown image label "debian-potato" (known: '), p
    assert len(p.stderr.strip().splitlines()) == 1, p
    p = pr.run("pull", "debian-potato")
    assert p.returncode == 1 and 'unknown image label "debian-potato"' in p.stderr, p


def test_usage_errors(pr):
    for args in (["pkgprobe"], ["pkgprobe", "--image"], ["frobnicate"],
                 ["pkgprobe", "--image=debian-bookworm", "--report=xml:x"],
                 ["pkgprobe", "--image=debian-bookworm", "--timeout=soon"],
                 ["selftest", "nothing"], ["pull"], ["list-images", "--format=yaml"],
                 ["pkgprobe", "--image=debian-bookworm", "--bogus"]):
        p = pr.run(*args)
        assert p.returncode == 2, (args, p)
        assert p.stderr.startswith("postroj: ") and len(p.stderr.strip().splitlines()) == 1, p
    for args in (["--help"], ["pkgprobe", "--help"], ["pull", "--help"],
                 ["selftest", "--help"], ["list-images", "--help"]):
        p = pr.run(*args)
        assert p.returncode == 0 and "usage: postroj" in p.stdout, (args, p)


# --- pull ---------------------------------------------------------------------------------


def test_pull_one_failure_does_not_stop_the_others(pulled):
    p = pulled
    assert p.returncode == 1, p
    assert "postroj: pull unreachable: pull 127.0.0.1:9/postroj/none:1" in p.stderr, p
    summary = p.stdout[p.stdout.index("summary:"):]
    assert "FAILED unreachable" in summary, p
    assert "ok     debian-bookworm" in summary, p
    assert "1 of 2 images ready" in summary, p


def test_pull_again_is_quick_and_listed(pr, image):
    p = pr.run("pull", image)
    assert p.returncode == 0, p
    assert "1 of 1 images ready" in p.stdout, p
    listing = json.loads(pr.run("list-images", "--format=json").stdout)
    assert next(e for e in listing if e["label"] == image)["present"] is True
    assert "provisioning" not in p.stderr, p


def test_pull_force_provisions_again(pr, image):
    """--force makes the probe image anew (fresh package lists), also for a baked label."""
    p = pr.run("pull", "--force", image, timeout=900)
    assert p.returncode == 0, p
    assert "provisioning systemd into" in p.stderr, p
    assert "1 of 1 images ready" in p.stdout, p


# --- pkgprobe -----------------------------------------------------------------------------


def test_a_version_alias_names_the_same_image(pr, image):
    p = pr.run("pkgprobe", "--image=debian-12", "--check-unit=systemd-journald")
    assert p.returncode == 0, p
    assert "pkgprobe debian-bookworm:" in p.stdout, p


@pytest.mark.parametrize("label", ["debian-bullseye", "debian-trixie", "debian-sid",
                                   "debian-forky"])
def test_each_debian_release_bakes_and_probes(pr, pulled, label):
    """The Debian labels this host's archive serves bake and pass pkgprobe."""
    p = pr.run("pull", label, timeout=900)
    if p.returncode != 0 and "is unreachable" in p.stderr + p.stdout:
        pytest.skip(f"{label}: the archive is unreachable here")
    if p.returncode != 0 and "has no suite" in p.stderr + p.stdout:
        pytest.skip(f"{label}: the archive does not have it (yet)")
    assert p.returncode == 0, p
    p = pr.run("pkgprobe", f"--image={label}", "--check-unit=systemd-journald")
    assert p.returncode == 0 and "PASSED" in p.stdout, p
    assert pr.containers_left() == []


def test_an_unreachable_archive_is_named(pr, pulled):
    """debian-buster bakes from archive.debian.org: where that cannot be reached, the error
    says so (and where it can, the image is made)."""
    p = pr.run("pull", "debian-buster", timeout=900)
    if p.returncode == 0:
        return
    assert "the archive http://archive.debian.org/debian is unreachable" in p.stderr, p


def test_a_registry_label_resolves_through_a_mirror(pr, tmp_path):
    """fedora-41's source is registry.fedoraproject.org/fedora:41: with a registries.conf
    mirror for that registry, `postroj pull fedora-41` gets it from there (a test image pushed
    under that name: busybox with a dnf that records its calls), and provisions it."""
    if not shutil.which("docker-registry"):
        pytest.skip("docker-registry missing")
    bb = make_busybox_rootfs(tmp_path / "bb")
    fake_dnf = "#!/bin/sh\necho \"$*\" >> /dnf-calls\n"
    layer = Layer([Dir("usr"), Dir("usr/bin"), File("usr/bin/dnf", fake_dnf, mode=0o755),
                   Dir("etc"), File("etc/os-release", "ID=fedora\nVERSION_ID=41\n")])
    reg = Registry(tmp_path / "reg").start()
    try:
        reg.push_image("fedora", "41", Image([Layer.from_dir(bb), layer]))
        conf = tmp_path / "registries.conf"
        conf.write_text('[[registry]]\nprefix = "registry.fedoraproject.org"\n'
                        'location = "registry.fedoraproject.org"\n'
                        f'[[registry.mirror]]\nlocation = "{reg.host}"\ninsecure = true\n')
        p = pr.run("--registries-conf", str(conf), "pull", "fedora-41", timeout=300)
        assert p.returncode == 0, p
        assert "ok     fedora-41" in p.stdout, p
        racker = Path(os.environ.get("RACKER_BUILD") or REPO / "build") / "racker"
        out = subprocess.run([str(racker), "--root", str(pr.store),
                              "run", "--rm", "--no-boot", "--network", "none",
                              "postroj.local/fedora-41", "cat", "/dnf-calls"],
                             capture_output=True, text=True, timeout=60)
        assert "install -y systemd" in out.stdout, out
        assert "makecache" in out.stdout, out  # the probe image's fresh package lists
    finally:
        reg.stop()


def test_pkgprobe_journald(pr, image, tmp_path):
    rep = tmp_path / "r.xml"
    p = pr.run("pkgprobe", f"--image={image}", "--check-unit=systemd-journald",
               f"--report=junit:{rep}")
    assert p.returncode == 0, p
    assert "unit systemd-journald.service" in p.stdout, p
    assert "PASSED: 2 checks, 0 failed" in p.stdout, p
    suite = ET.parse(rep).getroot().find("testsuite")
    names = [tc.get("name") for tc in suite.findall("testcase")]
    assert names == [f"boot {image}", "unit systemd-journald.service"], names
    assert pr.containers_left() == []


def test_pkgprobe_web_server_package(pr, image, packages, tmp_path):
    base, d = packages
    xml_rep, json_rep = tmp_path / "r.xml", tmp_path / "r.json"
    p = pr.run("pkgprobe", f"--image={image}", *lighttpd_args(base, d),
               "--check-unit=lighttpd", "--check-network=http://127.0.0.1:80/",
               "--check-network=tcp://127.0.0.1:80", "--network-timeout=20",
               f"--report=junit:{xml_rep}", f"--report=json:{json_rep}")
    assert p.returncode == 0, p
    assert "unit lighttpd.service" in p.stdout, p
    root = ET.parse(xml_rep).getroot()
    assert root.get("failures") == "0", ET.tostring(root)
    cases = root.findall("./testsuite/testcase")
    names = [c.get("name") for c in cases]
    assert "unit lighttpd.service" in names and "network http://127.0.0.1:80/" in names, names
    assert any(n.startswith("install lighttpd_") for n in names), names
    assert all(float(c.get("time")) >= 0 for c in cases)
    j = json.loads(json_rep.read_text())
    assert j["passed"] is True
    assert [c["name"] for c in j["suites"][0]["checks"]] == names
    assert all(c["status"] == "passed" for c in j["suites"][0]["checks"])
    assert pr.containers_left() == []


WEBFS_DEPS = ["webfs", "ucf", "lsb-base"]


@pytest.fixture(scope="session")
def webfs_debs(session_dir):
    d = session_dir / "webfs"
    d.mkdir()
    p = subprocess.run(["apt-get", "download", *WEBFS_DEPS], cwd=d, capture_output=True,
                       text=True, timeout=120)
    if p.returncode != 0:
        pytest.skip("apt-get download webfs failed (no Debian archive?): " + p.stderr[-300:])
    return sorted(str(f) for f in d.glob("*.deb"))


def test_pkgprobe_webfs_readme_example(pr, image, webfs_debs):
    """The original README's webfs example: webfs answers 404 on / (a minimal image has no
    /var/www/html), and an answer is what --check-network asks for; --http-status asks more."""
    args = ["pkgprobe", f"--image={image}", *[f"--package={f}" for f in webfs_debs],
            "--check-unit=webfs", "--check-network=http://localhost:8000"]
    p = pr.run(*args)
    assert p.returncode == 0, p
    assert "network http://localhost:8000" in p.stdout and "unit webfs.service" in p.stdout, p
    p = pr.run(*args, "--http-status=2xx,3xx", "--network-timeout=3")
    assert p.returncode == 1, p
    assert "http://localhost:8000: HTTP 404 (--http-status=2xx,3xx)" in p.stdout, p
    assert pr.containers_left() == []
    p = pr.run("pkgprobe", f"--image={image}", "--http-status=200")
    assert p.returncode == 2 and "invalid --http-status \"200\"" in p.stderr, p


def junit_suites(path):
    return [ts.get("name") for ts in ET.parse(path).getroot().iter("testsuite")]


def make_sleeper_deb(d):
    """postroj-sleeper (Architecture: all, no dependencies): a unit that stays active, so it
    installs on every release."""
    root = d / "sleeper-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: postroj-sleeper\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: postroj tests <tests@example.org>\nDescription: a unit that stays up\n")
    unit_dir = root / "lib" / "systemd" / "system"
    unit_dir.mkdir(parents=True)
    (unit_dir / "postroj-sleeper.service").write_text(
        "[Unit]\nDescription=postroj sleeper\n\n[Service]\nExecStart=/bin/sleep infinity\n\n"
        "[Install]\nWantedBy=multi-user.target\n")
    deb = d / "postroj-sleeper_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
                   check=True, capture_output=True)
    return deb


def test_matrix_of_three_releases_and_two_packages(pr, image, tmp_path):
    """3 Debian releases x 2 probes (a package of ours, journald), two at a time, one JUnit
    file; shards 1/2 and 2/2 together run each cell exactly once."""
    labels = ["debian-bookworm", "debian-trixie", "debian-bullseye"]
    make_sleeper_deb(tmp_path)
    matrix = {"images": labels,
              "probes": [{"name": "sleeper", "packages": ["postroj-sleeper_1.0_all.deb"],
                          "units": ["postroj-sleeper"]},
                         {"name": "journald", "units": ["systemd-journald"]}]}
    f = tmp_path / "m.json"
    f.write_text(json.dumps(matrix))
    p = pr.run("matrix", str(f), "--jobs", "2", f"--report=junit:{tmp_path / 'all.xml'}",
               timeout=1800)
    if p.returncode != 0 and "mmdebstrap failed" in p.stdout + p.stderr:
        pytest.skip("a release could not be baked here: " + p.stdout[-300:])
    assert p.returncode == 0, p
    assert "6 of 6 cells passed (shard 1/1, 2 at a time)" in p.stdout, p
    every = junit_suites(tmp_path / "all.xml")
    assert sorted(every) == sorted(f"pkgprobe {l} {n}" for l in labels
                                   for n in ("sleeper", "journald")), every
    shards = []
    for i in (1, 2):
        rep = tmp_path / f"shard{i}.xml"
        p = pr.run("matrix", str(f), "--jobs", "2", "--shard", f"{i}/2", f"--report=junit:{rep}",
                   timeout=1800)
        assert p.returncode == 0, p
        shards.append(junit_suites(rep))
    assert len(shards[0]) == len(shards[1]) == 3, shards
    assert sorted(shards[0] + shards[1]) == sorted(every), shards
    assert pr.containers_left() == []
    p = pr.run("matrix", str(f), "--shard", "3/2")
    assert p.returncode == 2 and "invalid --shard \"3/2\"" in p.stderr, p

    # selftest runs its images side by side too, each in a postroj of its own
    rep = tmp_path / "self.xml"
    p = pr.run("selftest", "hostnamectl", *[f"--image={l}" for l in labels], "--jobs", "2",
               f"--report=junit:{rep}", timeout=1800)
    assert p.returncode == 0, p
    assert "selftest hostnamectl: 3 of 3 images passed" in p.stdout, p
    assert sorted(junit_suites(rep)) == sorted(f"hostnamectl {l}" for l in labels), p
    assert pr.containers_left() == []


def test_pkgprobe_broken_unit(pr, image, packages, tmp_path):
    _, d = packages
    rep = tmp_path / "r.json"
    p = pr.run("pkgprobe", f"--image={image}", f"--package={d / 'postroj-broken_1.0_all.deb'}",
               "--check-unit=postroj-broken", "--check-network=http://127.0.0.1:81/",
               "--timeout=20", f"--report=json:{rep}")
    assert p.returncode == 1, p
    assert "FAIL" in p.stdout and "unit postroj-broken.service" in p.stdout, p
    assert "unit postroj-broken.service is failed" in p.stdout, p
    assert "postroj-broken-marker: cannot start" in p.stdout, p  # the journal's lines
    checks = json.loads(rep.read_text())["suites"][0]["checks"]
    unit = next(c for c in checks if c["name"] == "unit postroj-broken.service")
    assert unit["status"] == "failed"
    assert "postroj-broken.service" in unit["message"]
    assert "postroj-broken-marker" in unit["detail"]
    assert checks[-1]["status"] == "skipped", checks
    assert pr.containers_left() == []


def test_pkgprobe_404(pr, image, packages):
    base, _ = packages
    url = f"{base}/no-such-package_1.0_all.deb"
    p = pr.run("pkgprobe", f"--image={image}", f"--package={url}",
               "--check-unit=systemd-journald")
    assert p.returncode == 1, p
    assert f"package {url}: HTTP 404" in p.stdout, p
    assert "boot" in p.stdout and "skip" in p.stdout, p  # nothing booted for a bad package
    assert pr.containers_left() == []


def test_pkgprobe_missing_local_package(pr, image, tmp_path):
    p = pr.run("pkgprobe", f"--image={image}", f"--package={tmp_path}/nope.deb")
    assert p.returncode == 1, p
    assert p.stderr.strip() == f"postroj: package {tmp_path}/nope.deb: No such file or directory"


def test_two_concurrent_pkgprobes(pr, image, packages):
    base, d = packages
    argv = pr.argv("pkgprobe", f"--image={image}", *lighttpd_args(base, d),
                   "--check-unit=lighttpd", "--check-network=http://127.0.0.1:80/",
                   "--network-timeout=30")
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [pp.communicate(timeout=TIMEOUT) for pp in procs]
    for pp, (out, err) in zip(procs, outs):
        print(out, err)
        assert pp.returncode == 0, (out, err)
    names = {m.group(1) for _, err in outs for m in re.finditer(r"booted (\S+) in", err)}
    assert len(names) == 2, outs  # each its own container
    assert pr.containers_left() == []


def test_keep_leaves_the_container(pr, image):
    build = os.environ.get("RACKER_BUILD")
    racker = Path(build) / "racker" if build else REPO / "build" / "racker"
    if not os.access(racker, os.X_OK):
        pytest.skip(f"racker binary not found at {racker}")
    p = pr.run("pkgprobe", f"--image={image}", "--check-unit=systemd-journald", "--keep")
    assert p.returncode == 0, p
    line = next(l for l in p.stdout.splitlines() if l.startswith("kept container "))
    name = line.split()[2]
    try:
        ps = subprocess.run([str(racker), "--root", str(pr.store), "ps"], capture_output=True,
                            text=True, timeout=30)
        assert name in ps.stdout, ps
    finally:
        rm = subprocess.run([str(racker), "--root", str(pr.store), "rm", "-f", name],
                            capture_output=True, text=True, timeout=60)
    assert rm.returncode == 0, rm
    assert pr.containers_left() == []


def test_selftest_hostnamectl_and_pkgprobe(pr, image, tmp_path):
    rep = tmp_path / "s.xml"
    p = pr.run("selftest", "hostnamectl", f"--image={image}", f"--report=junit:{rep}")
    assert p.returncode == 0, p
    assert "1 of 1 images passed" in p.stdout, p
    cases = [c.get("name") for c in ET.parse(rep).getroot().iter("testcase")]
    assert cases == [f"boot {image}", "hostnamectl"], cases
    p = pr.run("selftest", "pkgprobe", f"--image={image}", f"--report=json:{tmp_path}/s.json")
    assert p.returncode == 0, p
    j = json.loads((tmp_path / "s.json").read_text())
    assert j["suites"][0]["checks"][-1]["name"] == "unit systemd-journald.service"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_pkgprobe_leaves_nothing(pr, image, sig):
    """Ctrl-C (or a kill) in the middle of a probe: the container goes at once, postroj exits
    128+N, and no container, mount or booted init is left."""
    argv = pr.argv("pkgprobe", f"--image={image}", "--check-network=http://127.0.0.1:9/",
                   "--network-timeout=60")
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = ""
    for line in p.stderr:  # wait until it has booted, then interrupt the unit check
        err += line
        if re.search(r"booted \S+ in", line):
            break
    time.sleep(0.3)
    p.send_signal(sig)
    out, rest = p.communicate(timeout=60)
    err += rest
    print(out, err)
    assert p.returncode == 128 + sig, (out, err)
    assert "interrupted by signal" in err, err
    assert pr.containers_left() == []
    with open("/proc/self/mountinfo") as f:
        assert [line for line in f if str(pr.store) in line] == []


def test_interrupted_during_boot_exits_128_plus_n(pr, image):
    """SIGTERM while the system boots (boot's own handler is in charge then): the same 143
    as at any other moment, not 1 as if the probe had failed. Several delays, so one of
    them lands in the boot (~200 ms here)."""
    interrupted = 0
    for delay in (0.03, 0.06, 0.1, 0.15, 0.2, 0.3):
        p = subprocess.Popen(pr.argv("pkgprobe", f"--image={image}"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
        if p.returncode == 0 and "PASSED" in out and "teardown" in out:
            continue  # (a fast host: the whole probe was over before the signal came)
        assert p.returncode == 128 + signal.SIGTERM, (delay, out, err)
        interrupted += 1
        assert pr.containers_left() == []
    assert interrupted >= 2, "the signal should have landed in most of the runs"


def test_racker_run_accepts_a_label(pr, image):
    """`racker run LABEL`: the catalog's image (here already pulled into the store) boots."""
    build = os.environ.get("RACKER_BUILD")
    racker = Path(build) / "racker" if build else REPO / "build" / "racker"
    p = subprocess.run([str(racker), "--root", str(pr.store), "run", "--rm", "--hostname",
                        "labelled", image, "sh", "-c", "hostnamectl hostname; cat /proc/1/comm"],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0, p
    assert p.stdout == "labelled\nsystemd\n", p
    assert pr.containers_left() == []
