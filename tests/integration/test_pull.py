"""racker pull against a real local registry (Debian's docker-registry).

Every test starts its own registry (127.0.0.1, free port, storage in the test's tmp dir; plain
HTTP, htpasswd auth or TLS with a CA made by openssl), pushes images it builds in Python
(registry_util), and pulls them with racker into its own --root and with its own
registries.conf. The images and layers are then checked in the store (blobs/sha256/<hex>,
ingest/, layers/<chain-hex>/fs + done, images/index.json).

Needs root (layer ownership, device-node whiteouts, trusted.* xattrs) and the racker binary
($RACKER_BUILD/racker, else <repo>/build/racker).
"""

import base64
import hashlib
import json
import os
import secrets
import shutil
import signal
import stat
import time
from pathlib import Path

import pytest

from conftest import wait_until
from racker_ctx import RackerCtx, bb_rootfs, closed_after_test, racker_snapshot  # noqa: F401
from registry_util import (Dir, File, Hardlink, Image, Index, Layer, Opaque, Symlink, Whiteout,
                           missing_tools)

TIMEOUT = 30


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def racker_exe(tmp_path_factory):
    return racker_snapshot(tmp_path_factory, "racker pull tests need root (layer owners, "
                           "device nodes, trusted xattrs)", registry=True)


@pytest.fixture(scope="session")
def bb_base(bb_rootfs):
    """Layer 1 of the busybox test images: the whole busybox rootfs (gzip)."""
    return Layer.from_dir(bb_rootfs)


@pytest.fixture(scope="session")
def bb_image(bb_base):
    """A 2-layer busybox image: the rootfs, then etc/layer2.txt and usr/share/l2/data."""
    l2 = Layer([Dir("etc"), File("etc/layer2.txt", b"from layer 2\n"), Dir("usr"),
                Dir("usr/share"), Dir("usr/share/l2"), File("usr/share/l2/data", b"x" * 5000)])
    return Image([bb_base, l2], cmd=["/bin/sh"], env=["PATH=/bin:/usr/bin", "LAYERS=2"])


@pytest.fixture
def ctx(racker_exe, tmp_path):
    """One test's racker (own --root, registries.conf, HOME, XDG_RUNTIME_DIR) and registries."""
    yield from closed_after_test(RackerCtx(racker_exe, tmp_path, timeout=TIMEOUT))


def short(digest):
    return digest[7:19]


def wait_for_log(reg, since, what):
    """The access log line of a request is written after the answer: wait for it."""
    wait_until(lambda: any(what(m, p) for m, p, _ in reg.requests(since)), timeout=5,
               what="registry access log")
    time.sleep(0.05)


# --- 1. plain HTTP through an insecure registry ------------------------------------------------


def test_pull_plain_http(ctx, bb_image, bb_rootfs):
    reg = ctx.registry()
    reg.push_image("test/busybox", "1", bb_image)
    ctx.insecure_conf(reg)
    ref = f"{reg.host}/test/busybox:1"

    r = ctx.ok("pull", ref)
    assert bb_image.manifest_digest in r.stdout, r
    for layer in bb_image.layers:
        assert f"{short(layer.digest)}: Pull complete" in r.stdout, r

    img = ctx.image_named(ref)
    assert img["Id"] == bb_image.config_digest
    assert img["Digest"] == bb_image.manifest_digest
    assert img["Platform"] == "linux/amd64"
    assert img["Layers"] == 2

    c1, c2 = bb_image.chain_ids
    assert ctx.layer_dirs() == {c1[7:], c2[7:]}
    fs1, fs2 = ctx.layer_fs(c1), ctx.layer_fs(c2)
    for c in (c1, c2):
        assert (ctx.layer_fs(c).parent / "done").is_file()
    busybox = fs1 / "bin" / "busybox"
    assert busybox.is_file() and not busybox.is_symlink()
    assert busybox.read_bytes() == (bb_rootfs / "bin" / "busybox").read_bytes()
    assert os.readlink(fs1 / "bin" / "sh") == "/bin/busybox"
    assert (fs1 / "etc" / "passwd").read_bytes() == (bb_rootfs / "etc/passwd").read_bytes()
    assert stat.S_IMODE(os.lstat(fs1 / "tmp").st_mode) == 0o1777
    assert (fs2 / "etc" / "layer2.txt").read_text() == "from layer 2\n"
    assert (fs2 / "usr/share/l2/data").read_bytes() == b"x" * 5000
    assert not (fs2 / "bin").exists()  # layer 2 holds only its own entries
    assert ctx.blobs() == bb_image.blobs
    assert ctx.partials() == []
    ctx.assert_consistent()

    # -q: only the manifest digest (into a fresh store, so that it really pulls)
    q = ctx.ok("pull", "-q", ref, root=ctx.tmp / "store-q")
    assert q.stdout == bb_image.manifest_digest + "\n", q
    assert ctx.blobs(ctx.tmp / "store-q") == bb_image.blobs


# --- 2. a present image transfers no blob -------------------------------------------------------


def test_second_pull_transfers_no_blob(ctx, bb_image):
    reg = ctx.registry()
    reg.push_image("test/busybox", "1", bb_image)
    ctx.insecure_conf(reg)
    ref = f"{reg.host}/test/busybox:1"
    ctx.ok("pull", ref)
    blob_dir = ctx.root / "blobs" / "sha256"
    mtimes = {n: os.stat(blob_dir / n).st_mtime_ns for n in os.listdir(blob_dir)}
    layer_mtimes = {n: os.stat(ctx.root / "layers" / n / "done").st_mtime_ns
                    for n in ctx.layer_dirs()}

    since = reg.log_offset()
    r = ctx.ok("pull", ref)
    for layer in bb_image.layers:
        assert f"{short(layer.digest)}: Already exists" in r.stdout, r
    assert "Pull complete" not in r.stdout and "Downloading" not in r.stdout, r
    wait_for_log(reg, since, lambda m, p: "/manifests/" in p)
    reqs = reg.requests(since)
    blob_gets = [(m, p) for m, p, _ in reqs if m == "GET" and "/blobs/" in p]
    assert blob_gets == [], f"second pull fetched blobs: {blob_gets} (all requests: {reqs})"
    assert {n: os.stat(blob_dir / n).st_mtime_ns for n in os.listdir(blob_dir)} == mtimes
    assert {n: os.stat(ctx.root / "layers" / n / "done").st_mtime_ns
            for n in ctx.layer_dirs()} == layer_mtimes
    assert len(ctx.images()) == 1


# --- 3. a layer shared by two images ------------------------------------------------------------


def two_images(ctx, base):
    """A registry (trusted as insecure) serving test/a:1 and test/b:1, two images on layer base
    with one layer each of their own: (registry, a, b)."""
    a = Image([base, Layer([File("only-a", b"a\n")])], env=["WHO=a"])
    b = Image([base, Layer([File("only-b", b"b\n")])], env=["WHO=b"])
    reg = ctx.registry()
    reg.push_image("test/a", "1", a)
    reg.push_image("test/b", "1", b)
    ctx.insecure_conf(reg)
    return reg, a, b


def test_shared_layer_stored_once(ctx, bb_base):
    reg, a, b = two_images(ctx, bb_base)
    since = reg.log_offset()
    ctx.ok("pull", f"{reg.host}/test/a:1")
    r = ctx.ok("pull", f"{reg.host}/test/b:1")
    assert f"{short(bb_base.digest)}: Already exists" in r.stdout, r

    assert a.chain_ids[0] == b.chain_ids[0] == bb_base.diff_id
    assert ctx.blobs() == a.blobs | b.blobs
    assert len(os.listdir(ctx.root / "blobs" / "sha256")) == len(a.blobs | b.blobs)
    assert ctx.layer_dirs() == {c[7:] for c in a.chain_ids + b.chain_ids}
    assert len(ctx.layer_dirs()) == 3
    wait_for_log(reg, since, lambda m, p: "/test/b/manifests/" in p)
    base_gets = [p for m, p, s in reg.requests(since)
                 if m == "GET" and p.endswith("/blobs/" + bb_base.digest)]
    assert len(base_gets) == 1, base_gets
    ctx.assert_consistent()


# --- 4. whiteouts, opaque directories, hardlinks -------------------------------------------------


def test_whiteouts_opaque_and_hardlinks(ctx):
    l1 = Layer([File("foo", b"lower foo\n"), Dir("opq"), File("opq/old", b"old\n"), Dir("keep"),
                File("keep/x", b"x\n"), File("keep/y", b"y\n")])
    l2 = Layer([Whiteout("foo"), Dir("opq"), Opaque("opq"), File("opq/new", b"new\n"),
                Dir("keep"), Whiteout("keep/x"),
                File("a", b"shared inode\n", mode=0o640), Hardlink("b", "a"), Dir("d"),
                Hardlink("d/c", "a")])
    img = Image([l1, l2])
    reg = ctx.registry()
    reg.push_image("test/wh", "1", img)
    ctx.insecure_conf(reg)
    ctx.ok("pull", f"{reg.host}/test/wh:1")

    fs1, fs2 = (ctx.layer_fs(c) for c in img.chain_ids)
    assert (fs1 / "foo").read_bytes() == b"lower foo\n"
    st = os.lstat(fs2 / "foo")
    assert stat.S_ISCHR(st.st_mode), oct(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (0, 0)
    assert not os.path.lexists(fs2 / ".wh.foo")
    st = os.lstat(fs2 / "keep" / "x")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert not os.path.lexists(fs2 / "keep" / "y")  # only in layer 1
    assert not os.path.lexists(fs2 / "keep" / ".wh.x")

    assert os.getxattr(fs2 / "opq", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(fs2 / "opq")) == ["new"]
    assert (fs2 / "opq" / "new").read_bytes() == b"new\n"
    with pytest.raises(OSError):
        os.getxattr(fs1 / "opq", "trusted.overlay.opaque")

    sa, sb, sc = (os.lstat(fs2 / p) for p in ("a", "b", "d/c"))
    assert sa.st_ino == sb.st_ino == sc.st_ino
    assert sa.st_nlink == 3
    assert stat.S_IMODE(sa.st_mode) == 0o640
    ctx.assert_consistent()


def test_missing_parents_and_phantom_whiteouts(ctx):
    """Layer 2 holds tmp/a/file and opt/app without entries for tmp/ and opt/: those take the
    lower layer's owner and mode (a sticky /tmp stays 1777 in the overlay), although layer 1 is
    bigger and still unpacking when layer 2 is done. Its whiteouts of paths no lower layer has
    are dropped (no phantom 0:0 device), those that hide something stay."""
    l1 = Layer([Dir("tmp", mode=0o1777), Dir("opt", mode=0o750, uid=1000, gid=1000),
                File("opt/big", secrets.token_bytes(8 << 20)), File("opt/old", b"old\n")])
    l2 = Layer([File("tmp/a/file", b"x\n"), File("opt/app", b"y\n"),
                Whiteout("newdir/ghost"), Whiteout("opt/nothing"), Whiteout("opt/old")])
    img = Image([l1, l2])
    reg = ctx.registry()
    reg.push_image("test/parents", "1", img)
    ctx.insecure_conf(reg)
    ctx.ok("pull", f"{reg.host}/test/parents:1")

    fs2 = ctx.layer_fs(img.chain_ids[1])
    st = os.lstat(fs2 / "tmp")
    assert stat.S_IMODE(st.st_mode) == 0o1777 and st.st_uid == 0, oct(st.st_mode)
    st = os.lstat(fs2 / "opt")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 1000, 1000)
    assert stat.S_IMODE(os.lstat(fs2 / "tmp" / "a").st_mode) == 0o755  # nothing below: default
    assert os.listdir(fs2 / "newdir") == []
    assert not os.path.lexists(fs2 / "opt" / "nothing")
    st = os.lstat(fs2 / "opt" / "old")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    for c in img.chain_ids:
        assert not (ctx.root / "layers" / c[7:] / "fixups.json").exists()
    ctx.assert_consistent()


def test_hardlink_to_lower_layer(ctx, bb_base, bb_rootfs):
    """Layer 2 hardlinks to etc/passwd, which only layer 1 has. Layers are unpacked each into
    its own directory, so the link's source is not there: the layer must still unpack (as
    containerd, which applies a layer onto its parents), the link may not lead to the host's
    /etc/passwd, and nothing outside the store may change."""
    l2 = Layer([Dir("etc"), Hardlink("etc/passwd-link", "etc/passwd"),
                File("etc/after-link", b"after\n")])
    img = Image([bb_base, l2])
    reg = ctx.registry()
    reg.push_image("test/xlink", "1", img)
    ctx.insecure_conf(reg)
    host = os.stat("/etc/passwd")
    r = ctx("pull", f"{reg.host}/test/xlink:1")

    after = os.stat("/etc/passwd")
    assert (after.st_ino, after.st_nlink) == (host.st_ino, host.st_nlink)
    ctx.assert_consistent()
    assert ctx.partials() == []
    assert r.returncode == 0, f"a cross-layer hardlink made the layer fail to unpack: {r}"
    fs2 = ctx.layer_fs(img.chain_ids[1])
    link = fs2 / "etc" / "passwd-link"
    st = os.lstat(link)
    assert stat.S_ISREG(st.st_mode)
    assert st.st_ino != host.st_ino
    assert link.read_bytes() == (bb_rootfs / "etc" / "passwd").read_bytes()
    assert (fs2 / "etc" / "after-link").read_bytes() == b"after\n"


# --- 5. gzip, zstd and uncompressed layers -------------------------------------------------------


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_layer_compressions(ctx, bb_base, compression):
    if missing_tools(zstd=compression == "zstd"):
        pytest.skip("zstd not installed (apt-get install zstd)")
    data = secrets.token_bytes(100_000) + b"z" * 300_000
    layer = Layer([Dir("data"), File(f"data/{compression}.bin", data),
                   Symlink("data/link", f"{compression}.bin")], compression=compression)
    assert layer.media_type == {
        "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
        "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
        "none": "application/vnd.oci.image.layer.v1.tar"}[compression]
    img = Image([bb_base, layer])
    reg = ctx.registry()
    reg.push_image("test/comp", compression, img)
    ctx.insecure_conf(reg)
    ctx.ok("pull", f"{reg.host}/test/comp:{compression}")
    fs = ctx.layer_fs(img.chain_ids[1])
    assert (fs / "data" / f"{compression}.bin").read_bytes() == data
    assert os.readlink(fs / "data" / "link") == f"{compression}.bin"
    inspect = json.loads(ctx.ok("image", "inspect", f"{reg.host}/test/comp:{compression}").stdout)
    assert [l["DiffID"] for l in inspect[0]["Layers"]] == img.diff_ids
    assert [l["Digest"] for l in inspect[0]["Layers"]] == [l.digest for l in img.layers]
    ctx.assert_consistent()


# --- 6. multi-platform index --------------------------------------------------------------------


def test_multi_platform_index(ctx):
    amd = Image([Layer([File("arch", b"amd64\n")])], architecture="amd64", env=["ARCH=amd64"])
    arm = Image([Layer([File("arch", b"arm64\n")])], architecture="arm64", env=["ARCH=arm64"])
    idx = Index([amd, arm])
    reg = ctx.registry()
    reg.push_image("test/multi", "1", idx)
    ctx.insecure_conf(reg)
    ref = f"{reg.host}/test/multi:1"

    ctx.ok("pull", ref)
    img = ctx.image_named(ref)
    assert img["Id"] == amd.config_digest
    assert img["Platform"] == "linux/amd64"
    assert img["Digest"] == amd.manifest_digest
    assert (ctx.layer_fs(amd.chain_ids[0]) / "arch").read_text() == "amd64\n"

    root2 = ctx.tmp / "store-arm"
    ctx.ok("pull", "--platform", "linux/arm64", ref, root=root2)
    img = ctx.image_named(ref, root=root2)
    assert img["Id"] == arm.config_digest
    assert img["Platform"] == "linux/arm64"
    assert img["Digest"] == arm.manifest_digest
    assert (ctx.layer_fs(arm.chain_ids[0], root=root2) / "arch").read_text() == "arm64\n"
    assert amd.layers[0].digest not in ctx.blobs(root2)

    root3 = ctx.tmp / "store-s390x"
    r = ctx("pull", "--platform", "linux/s390x", ref, root=root3)
    assert r.returncode == 1, r
    assert "linux/s390x" in r.stderr, r
    assert "linux/amd64" in r.stderr and "linux/arm64" in r.stderr, r
    assert ctx.images(root3) == []


# --- 7. short names, mirrors, prefix rewrites -----------------------------------------------------


def test_short_name_from_docker_io_mirror(ctx, bb_image):
    reg = ctx.registry()
    reg.push_image("library/busybox", "1.0", bb_image)
    ctx.conf.write_text(f"""unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "{reg.host}"
insecure = true
""")
    since = reg.log_offset()
    ctx.ok("pull", "busybox:1.0", timeout=60)
    img = ctx.image_named("docker.io/library/busybox:1.0")
    assert img["Id"] == bb_image.config_digest
    assert img["Digest"] == bb_image.manifest_digest
    wait_for_log(reg, since, lambda m, p: "/manifests/" in p)
    assert ("GET", "/v2/library/busybox/manifests/1.0") in [(m, p) for m, p, _ in
                                                             reg.requests(since)]
    inspect = json.loads(ctx.ok("image", "inspect", "busybox:1.0").stdout)
    assert inspect[0]["Id"] == bb_image.config_digest


def test_prefix_rewrite_to_local_location(ctx, bb_image):
    reg = ctx.registry()
    reg.push_image("mirror-team/app", "2", bb_image)
    ctx.conf.write_text(f"""[[registry]]
prefix = "example.test/team"
location = "{reg.host}/mirror-team"
insecure = true
""")
    since = reg.log_offset()
    ctx.ok("pull", "example.test/team/app:2")
    img = ctx.image_named("example.test/team/app:2")
    assert img["Id"] == bb_image.config_digest
    wait_for_log(reg, since, lambda m, p: "/manifests/" in p)
    assert ("GET", "/v2/mirror-team/app/manifests/2") in [(m, p) for m, p, _ in
                                                          reg.requests(since)]


# --- 8. htpasswd basic auth ---------------------------------------------------------------------


def test_basic_auth(ctx, bb_image):
    reg = ctx.registry(auth=("tester", "s3cret-pw"))
    reg.push_image("private/busybox", "1", bb_image)
    ctx.insecure_conf(reg)
    ref = f"{reg.host}/private/busybox:1"

    r = ctx("pull", ref)
    assert r.returncode == 1, r
    assert "401" in r.stderr and "unauthorized" in r.stderr, r
    assert ctx.images() == []

    bad = ctx.tmp / "bad-auth.json"
    bad.write_text(json.dumps({"auths": {reg.host: {
        "auth": base64.b64encode(b"tester:wrong").decode()}}}))
    r = ctx("pull", ref, globals_=["--authfile", bad])
    assert r.returncode == 1, r
    assert "401" in r.stderr and "unauthorized" in r.stderr, r

    good = ctx.tmp / "auth.json"
    good.write_text(json.dumps({"auths": {reg.host: {
        "auth": base64.b64encode(b"tester:s3cret-pw").decode()}}}))
    ctx.ok("pull", ref, globals_=["--authfile", good])
    assert ctx.image_named(ref)["Id"] == bb_image.config_digest
    assert ctx.blobs() == bb_image.blobs
    ctx.assert_consistent()


# --- 9. HTTPS with a test CA ------------------------------------------------------------------


def test_tls_with_test_ca(ctx, bb_image):
    reg = ctx.registry(tls=True)
    reg.push_image("test/busybox", "1", bb_image)
    ctx.conf.write_text(f'[[registry]]\nlocation = "{reg.host}"\n')  # not insecure
    ref = f"{reg.host}/test/busybox:1"

    certs = ctx.tmp / "certs"
    (certs / reg.host).mkdir(parents=True)
    shutil.copy(reg.ca_cert, certs / reg.host / "ca.crt")
    ctx.ok("pull", ref, globals_=["--cert-dir", certs])
    assert ctx.image_named(ref)["Id"] == bb_image.config_digest

    no_ca = ctx.tmp / "no-certs"
    no_ca.mkdir()
    r = ctx("pull", ref, root=ctx.tmp / "store-noca", globals_=["--cert-dir", no_ca])
    assert r.returncode == 1, r
    assert "certificate" in r.stderr.lower(), r
    assert ctx.images(ctx.tmp / "store-noca") == []

    root3 = ctx.tmp / "store-noverify"
    ctx.ok("pull", "--tls-verify=false", ref, root=root3, globals_=["--cert-dir", no_ca])
    assert ctx.image_named(ref, root=root3)["Id"] == bb_image.config_digest
    assert ctx.blobs(root3) == bb_image.blobs


# --- 10. malicious or broken registries and layers ------------------------------------------------


def test_lying_blob_digest(ctx, bb_base):
    l2 = Layer([File("payload", secrets.token_bytes(20000))])
    img = Image([bb_base, l2])
    reg = ctx.registry()
    reg.push_image("test/liar", "1", img)
    data_path = reg.blob_data_path(l2.digest)
    assert data_path.stat().st_size == l2.size
    # same size, other bytes: a gzip stream of another tar
    evil = Layer([File("payload", secrets.token_bytes(20000))]).blob
    evil = (evil + b"\0" * l2.size)[:l2.size]
    data_path.write_bytes(evil)
    ctx.insecure_conf(reg)

    r = ctx("pull", f"{reg.host}/test/liar:1")
    assert r.returncode == 1, r
    assert "digest mismatch" in r.stderr, r
    assert l2.digest in r.stderr, r
    assert l2.digest not in ctx.blobs()
    assert ctx.partials() == []
    assert img.chain_ids[1][7:] not in ctx.layer_dirs()
    ctx.assert_consistent()
    assert ctx.images() == []


def test_truncated_blob(ctx, bb_base):
    """The registry serves half of a layer blob (its file was truncated after the push)."""
    l2 = Layer([File("payload", secrets.token_bytes(200_000))], compression="none")
    img = Image([bb_base, l2])
    reg = ctx.registry()
    reg.push_image("test/short", "1", img)
    data_path = reg.blob_data_path(l2.digest)
    data_path.write_bytes(l2.blob[:l2.size // 2])
    ctx.insecure_conf(reg)
    ref = f"{reg.host}/test/short:1"

    t0 = time.monotonic()
    r = ctx("pull", ref, timeout=60)
    took = time.monotonic() - t0
    assert r.returncode == 1, r
    assert l2.digest in r.stderr, r
    assert l2.digest not in ctx.blobs()
    assert img.chain_ids[1][7:] not in ctx.layer_dirs()
    ctx.assert_consistent()
    assert ctx.images() == []
    # a partial download may stay for a later resume, but only with bytes the registry sent
    for n in ctx.partials():
        assert n == l2.digest[7:] + ".partial", ctx.partials()
        assert l2.blob.startswith((ctx.root / "ingest" / n).read_bytes())
    assert took < 15, f"a consistently short blob took {took:.1f}s to give up on: {r}"

    # the registry is repaired: the next pull succeeds and leaves no partial file
    data_path.write_bytes(l2.blob)
    ctx.ok("pull", ref)
    assert ctx.blobs() == img.blobs
    assert ctx.partials() == []
    ctx.assert_consistent()


def store_debris(root):
    """Files a failed pull must not leave in the store: lock files, temporary files of atomic
    writes, empty partial downloads (nothing to resume)."""
    out = []
    for dirpath, _dirs, files in os.walk(root):
        if "/fs" in dirpath[len(str(root)):]:
            continue  # inside a layer's file tree: the image's own files
        for n in files:
            p = Path(dirpath) / n
            if (n.endswith(".lock") or ".tmp" in n
                    or (n.endswith(".partial") and p.stat().st_size == 0)):
                out.append(str(p.relative_to(root)))
    return sorted(out)


def test_failed_pulls_leave_no_debris(ctx, bb_base):
    """A blob the registry no longer has (404), then a lying one: each pull fails, and neither
    leaves lock files, temporary files or empty partial downloads behind; nor does a pull that
    succeeds."""
    l2 = Layer([File("payload", secrets.token_bytes(20000))])
    img = Image([bb_base, l2])
    reg = ctx.registry()
    reg.push_image("test/gone", "1", img)
    data_path = reg.blob_data_path(l2.digest)
    blob = data_path.read_bytes()
    data_path.unlink()
    ctx.insecure_conf(reg)
    ref = f"{reg.host}/test/gone:1"

    r = ctx("pull", ref)
    assert r.returncode == 1 and l2.digest in r.stderr, r
    assert store_debris(ctx.root) == []
    ctx.assert_consistent()
    assert ctx.images() == []

    data_path.write_bytes(b"x" * len(blob))
    r = ctx("pull", ref)
    assert r.returncode == 1 and "digest mismatch" in r.stderr, r
    assert store_debris(ctx.root) == []
    ctx.assert_consistent()

    data_path.write_bytes(blob)
    ctx.ok("pull", ref)
    assert store_debris(ctx.root) == []
    ctx.assert_consistent()
    assert ctx.blobs() == img.blobs


def snapshot_outside(paths, token):
    """Names containing token directly under each of paths (which must stay free of them)."""
    out = []
    for p in paths:
        try:
            out += [f"{p}/{n}" for n in os.listdir(p) if token in n]
        except FileNotFoundError:
            pass
    return out


def assert_contained(ctx, token):
    """Every path containing token below the test's tmp dir is inside a layer's fs/, and none
    exists in /, /tmp, /etc, or around the store."""
    store_layers = ctx.root / "layers"
    for dirpath, dirnames, filenames in os.walk(ctx.tmp):
        for n in dirnames + filenames:
            if token not in n:
                continue
            p = Path(dirpath) / n
            rel = p.relative_to(ctx.tmp)
            inside = (p.is_relative_to(store_layers) and len(p.relative_to(store_layers).parts) >= 3
                      and p.relative_to(store_layers).parts[1] == "fs")
            assert inside, f"{rel} was created outside the layers' fs directories"
    outside = snapshot_outside(["/", "/tmp", "/etc", "/root", str(ctx.tmp.parent),
                                str(ctx.tmp.parent.parent), str(ctx.root),
                                str(ctx.root / "layers")], token)
    assert outside == [], f"layer entries escaped the store: {outside}"


def test_path_traversal_and_symlink_escape(ctx):
    tok = "evil" + secrets.token_hex(6)
    layer = Layer([
        File(f"../../{tok}-dotdot", b"dotdot\n"),
        File(f"../../../../../../../../../../tmp/{tok}-deep", b"deep\n"),
        File(f"/{tok}-abs", b"abs\n"),
        File(f"/tmp/{tok}-abstmp", b"abstmp\n"),
        Symlink("link", "/tmp"),
        File(f"link/{tok}-through", b"through symlink\n"),
        Symlink("up", "../../../../../../../.."),
        File(f"up/tmp/{tok}-up", b"through relative symlink\n"),
        Dir("sub"),
        Symlink("sub/back", "../.."),
        File(f"sub/back/{tok}-back", b"back\n"),
    ])
    img = Image([layer])
    reg = ctx.registry()
    reg.push_image("test/traversal", "1", img)
    ctx.insecure_conf(reg)
    r = ctx("pull", f"{reg.host}/test/traversal:1")
    assert r.returncode in (0, 1), r
    assert_contained(ctx, tok)
    ctx.assert_consistent()
    if r.returncode == 0:
        fs = ctx.layer_fs(img.chain_ids[0])
        assert os.readlink(fs / "link") == "/tmp"  # stored as data, never followed
        assert (fs / "tmp" / f"{tok}-through").read_bytes() == b"through symlink\n"
        assert (fs / f"{tok}-abs").read_bytes() == b"abs\n"
        assert (fs / f"{tok}-dotdot").read_bytes() == b"dotdot\n"


@pytest.mark.parametrize("variant", ["absolute", "dotdot", "via-symlink", "own-etc-dir",
                                     "own-target"])
def test_hardlink_to_host_file(ctx, variant):
    """A hardlink to the host's /etc/shadow, by absolute path, by "..", through a symlink to
    /etc, with the layer's own etc/ (but no shadow) and with the layer's own etc/shadow: the
    pull fails, or the link shares an inode of the layer, never the host file's."""
    target = "/etc/shadow" if os.path.exists("/etc/shadow") else "/etc/passwd"
    base = os.path.basename(target)
    host = os.stat(target)
    entries = {
        "absolute": [Hardlink("stolen", target)],
        "dotdot": [Hardlink("stolen", "../../../../../../../.." + target)],
        "via-symlink": [Symlink("etcl", "/etc"), Hardlink("stolen", "etcl/" + base)],
        "own-etc-dir": [Dir("etc"), Hardlink("stolen", target)],
        "own-target": [Dir("etc"), File("etc/" + base, b"layer's own\n", mode=0o640),
                       Hardlink("stolen", "../../.." + target)],
    }[variant]
    img = Image([Layer([File("first", b"1\n")] + entries + [File("last", b"2\n")])])
    reg = ctx.registry()
    reg.push_image("test/hl", "1", img)
    ctx.insecure_conf(reg)
    r = ctx("pull", f"{reg.host}/test/hl:1")
    assert r.returncode in (0, 1), r
    after = os.stat(target)
    assert (after.st_ino, after.st_nlink, after.st_mode, after.st_uid) == \
        (host.st_ino, host.st_nlink, host.st_mode, host.st_uid), f"{target} changed: {r}"
    # nothing in the store shares the host file's inode
    for dirpath, dirnames, filenames in os.walk(ctx.root):
        for n in filenames:
            st = os.lstat(os.path.join(dirpath, n))
            assert (st.st_dev, st.st_ino) != (host.st_dev, host.st_ino), \
                f"{dirpath}/{n} is a hardlink to {target}"
    ctx.assert_consistent()
    assert ctx.partials() == []
    if r.returncode == 1:
        assert "stolen" in r.stderr, r
        assert ctx.images() == []
    else:
        fs = ctx.layer_fs(img.chain_ids[0])
        assert variant == "own-target", f"a link to a file the layer lacks was accepted: {r}"
        assert os.lstat(fs / "stolen").st_ino == os.lstat(fs / "etc" / base).st_ino
        assert (fs / "stolen").read_bytes() == b"layer's own\n"
        assert (fs / "last").read_bytes() == b"2\n"


# --- 11. rmi, image prune -----------------------------------------------------------------------


def test_rmi_and_prune(ctx, bb_base):
    reg, a, b = two_images(ctx, bb_base)
    ra, rb = f"{reg.host}/test/a:1", f"{reg.host}/test/b:1"
    ctx.ok("pull", ra)
    ctx.ok("pull", rb)

    ctx.ok("image", "prune")  # everything is in use: nothing goes
    assert ctx.blobs() == a.blobs | b.blobs
    assert ctx.layer_dirs() == {c[7:] for c in a.chain_ids + b.chain_ids}

    r = ctx.ok("rmi", ra)
    assert f"Untagged: {ra}" in r.stdout, r
    assert f"Deleted: {a.config_digest}" in r.stdout, r
    assert [i["Names"] for i in ctx.images()] == [[rb]]
    assert ctx.blobs() == b.blobs
    assert ctx.layer_dirs() == {c[7:] for c in b.chain_ids}
    # besides b's layer dirs, only their lock files
    assert set(ctx.layer_entries()) <= {c[7:] + s for c in b.chain_ids for s in ("", ".lock")}
    assert (ctx.layer_fs(bb_base.diff_id) / "bin" / "busybox").is_file()

    r = ctx("rmi", "nosuch/image:1")
    assert r.returncode == 1, r
    assert "no such image" in r.stderr, r

    ctx.ok("rmi", rb)
    assert ctx.images() == []
    assert ctx.blobs() == set()
    assert ctx.layer_entries() == []
    ctx.ok("image", "prune")
    assert ctx.partials() == []


# --- 12. bad references and blocked registries -------------------------------------------------


def test_bad_reference_and_blocked_registry(ctx, bb_image):
    r = ctx("pull", "Debian:x")
    assert r.returncode == 1, r
    assert 'invalid reference "Debian:x": repository name must be lowercase' in r.stderr, r
    # control characters in a reference are shown escaped, never sent to the terminal
    for cmd in (("pull",), ("rmi",), ("run", "--rm")):
        r = ctx(*cmd, "evil\x1b[2Jref\n:\x07")
        assert r.returncode in (1, 125), r
        assert "\x1b" not in r.stderr and "\x07" not in r.stderr, r
        assert r.stderr.count("\n") == 1 and "evil\\x1b[2Jref" in r.stderr, r

    reg = ctx.registry()
    reg.push_image("test/busybox", "1", bb_image)
    ctx.conf.write_text(f'[[registry]]\nlocation = "{reg.host}"\ninsecure = true\n'
                        f'blocked = true\n')
    since = reg.log_offset()
    r = ctx("pull", f"{reg.host}/test/busybox:1")
    assert r.returncode == 1, r
    assert "blocked" in r.stderr, r
    time.sleep(0.05)
    assert reg.requests(since) == []
    assert ctx.images() == []


# --- 13. concurrent pulls -------------------------------------------------------------------------


def test_concurrent_pulls(ctx, bb_base):
    big = Layer([File("big", secrets.token_bytes(4 << 20))], compression="none")
    img = Image([bb_base, big, Layer([File("small", b"s\n")])])
    reg = ctx.registry()
    reg.push_image("test/conc", "1", img)
    ctx.insecure_conf(reg)
    ref = f"{reg.host}/test/conc:1"
    ps = [ctx.popen("pull", ref) for _ in range(2)]
    for p in ps:
        p.wait(timeout=TIMEOUT)
    results = [ctx.result(p) for p in ps]
    for r in results:
        assert r.returncode == 0, r
    assert ctx.blobs() == img.blobs
    assert ctx.layer_dirs() == {c[7:] for c in img.chain_ids}
    assert ctx.partials() == []
    imgs = ctx.images()
    assert len(imgs) == 1 and imgs[0]["Names"] == [ref], imgs
    ctx.assert_consistent()


# --- 14. kill -9 during a pull ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def big_image(bb_base):
    payload = secrets.token_bytes(30 << 20)
    big = Layer([Dir("big"), File("big/random", payload)], compression="gzip")
    return Image([bb_base, big]), hashlib.sha256(payload).digest()


def test_rmi_and_prune_during_a_pull(ctx, big_image, bb_image):
    """rmi of another image and image prune while a pull runs must not delete what the pull
    has fetched or reuses (here the busybox layer both images share): the pull's lease keeps
    it. A lease whose puller was killed is removed by the next collection."""
    img, _ = big_image
    big = img.layers[1]
    reg = ctx.registry()
    reg.push_image("test/big", "1", img)
    reg.push_image("test/other", "1", bb_image)
    ctx.insecure_conf(reg)
    ctx.ok("pull", f"{reg.host}/test/other:1")
    partial = ctx.root / "ingest" / (big.digest[7:] + ".partial")

    p = ctx.popen("pull", f"{reg.host}/test/big:1")
    wait_until(lambda: (partial.exists() and partial.stat().st_size > 0) or p.poll() is not None,
               timeout=20, interval=0.001, what="the big layer downloading")
    running = p.poll() is None
    ctx.ok("rmi", f"{reg.host}/test/other:1")
    while p.poll() is None:
        ctx.ok("image", "prune")
    out, err = p.communicate()
    assert p.returncode == 0, (out, err)
    if not running:
        pytest.skip("the pull ended before the rmi")
    assert img.blobs <= ctx.blobs()
    assert {c[7:] for c in img.chain_ids} <= ctx.layer_dirs()
    ctx.assert_consistent()
    r = ctx("image", "inspect", f"{reg.host}/test/big:1")
    assert r.returncode == 0, r

    # a pull killed in the middle leaves its lease; the next collection drops it
    ctx.ok("rmi", f"{reg.host}/test/big:1")
    p = ctx.popen("pull", f"{reg.host}/test/big:1")
    wait_until(lambda: (partial.exists() and partial.stat().st_size > 0) or p.poll() is not None,
               timeout=20, interval=0.001, what="the big layer downloading")
    p.send_signal(signal.SIGKILL)
    p.wait()
    leases = [n for n in os.listdir(ctx.root / "leases") if n.endswith(".lease")]
    ctx.ok("image", "prune")
    assert [n for n in os.listdir(ctx.root / "leases") if n.endswith(".lease")] == [], leases
    assert ctx.blobs() == set() and ctx.layer_dirs() == set()


@pytest.mark.parametrize("phase", ["download", "extract"])
def test_kill_during_pull_then_pull_again(ctx, big_image, phase):
    """SIGKILL while the 30 MB layer downloads (its .partial has bytes) or while it is being
    unpacked (its layer dir exists without done); then the same pull again."""
    img, payload_sha = big_image
    big = img.layers[1]
    reg = ctx.registry()
    reg.push_image("test/big", "1", img)
    ctx.insecure_conf(reg)
    ref = f"{reg.host}/test/big:1"
    partial = ctx.root / "ingest" / (big.digest[7:] + ".partial")
    layer_dir = ctx.root / "layers" / img.chain_ids[1][7:]

    def reached():
        if phase == "download":
            try:
                return 0 < partial.stat().st_size < big.size
            except FileNotFoundError:
                return False
        return (layer_dir / "fs").is_dir() and not (layer_dir / "done").exists()

    p = ctx.popen("pull", ref)
    deadline = time.monotonic() + 10
    hit = False
    while time.monotonic() < deadline and p.poll() is None:
        if reached():
            hit = True
            break
        time.sleep(0.0005)
    killed = p.poll() is None
    p.send_signal(signal.SIGKILL)
    p.wait()
    state = (f"phase={phase} reached={hit} killed={killed} partials={ctx.partials()} "
             f"blobs={len(ctx.blobs())} layers={ctx.layer_entries()}")
    if not (hit and killed):
        pytest.skip(f"could not catch the pull in the {phase} phase ({state})")

    r = ctx("pull", ref)
    assert r.returncode == 0, f"{r} (after the kill: {state})"
    committed_partials = [n for n in ctx.partials() if "sha256:" + n[:-8] in ctx.blobs()]
    assert committed_partials == [], f"partial files of committed blobs left: {state}"
    assert ctx.partials() == [], f"partial files left after the successful pull ({state})"
    assert ctx.blobs() == img.blobs
    assert ctx.layer_dirs() == {c[7:] for c in img.chain_ids}
    ctx.assert_consistent()
    got = ctx.layer_fs(img.chain_ids[1]) / "big" / "random"
    assert hashlib.sha256(got.read_bytes()).digest() == payload_sha
    assert ctx.image_named(ref)["Id"] == img.config_digest
