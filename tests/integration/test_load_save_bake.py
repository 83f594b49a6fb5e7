"""racker load, save and bake.

load and save: the archives are made here in Python (tarfile) from the images registry_util
builds: docker-archives as `docker save` writes them (manifest.json, <config>.json,
<id>/layer.tar; or docker >= 25's blobs/sha256/<hex>), OCI image layout directories and OCI
archives. Every test has its own --root; the store is checked afterwards (every blob hashes to
its name, every layer directory is complete), and after a refused archive it must be exactly as
before.

bake: one real `racker bake debian` (mmdebstrap, ~30 s) per session, its rootfs tarball cached
in /var/cache/racker-tests/bake so that reruns take seconds.

Needs root (layer owners, device nodes) and the racker binary ($RACKER_BUILD/racker, else
<repo>/build/racker).
"""

import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from racker_ctx import RackerCtx, bb_rootfs, racker_snapshot  # noqa: F401
from registry_util import (Dir, File, Hardlink, Image, Index, Layer, Symlink, chain_ids, sha256)

TIMEOUT = 60
BAKE_CACHE = Path("/var/cache/racker-tests/bake")
HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def racker_exe(tmp_path_factory):
    return racker_snapshot(tmp_path_factory,
                           "racker load/save/bake tests need root (layer owners, device nodes)")


def top_layer(compression):
    return Layer([Dir("etc"), File("etc/layer2.txt", b"from layer 2\n"), Dir("usr"),
                  Dir("usr/share"), File("usr/share/data", b"x" * 5000, mode=0o600, uid=7),
                  Symlink("usr/share/link", "data"), Hardlink("etc/hard", "etc/layer2.txt")],
                 compression=compression)


@pytest.fixture(scope="session")
def bb_plain(bb_rootfs):
    """Two uncompressed layers, as in a docker-archive."""
    return Image([Layer.from_dir(bb_rootfs, compression="none"), top_layer("none")],
                 architecture=HOST_ARCH, cmd=["/bin/sh"], env=["PATH=/bin:/usr/bin"])


@pytest.fixture(scope="session")
def bb_gzip(bb_rootfs):
    """The same files, gzip layers (as pulled from a registry)."""
    return Image([Layer.from_dir(bb_rootfs, compression="gzip"), top_layer("gzip")],
                 architecture=HOST_ARCH, cmd=["/bin/sh"], env=["PATH=/bin:/usr/bin", "GZ=1"])


class Ctx(RackerCtx):
    """One test's racker with its own --root (no registries)."""

    def snapshot(self, root=None):
        """What a failed load must leave unchanged."""
        base = Path(root or self.root)
        index = base / "images" / "index.json"
        return (self.blobs(root), self.layer_dirs(root),
                index.read_text() if index.exists() else None)

    def assert_consistent(self, root=None):
        """RackerCtx.assert_consistent, and no half-written download left in ingest/."""
        super().assert_consistent(root)
        assert self.partials(root) == []


@pytest.fixture
def ctx(racker_exe, tmp_path):
    return Ctx(racker_exe, tmp_path, registries_conf=False, timeout=TIMEOUT)


# --- archive builders -------------------------------------------------------------------------


def add_bytes(tf, name, data):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = 0o644
    ti.mtime = 1700000000
    tf.addfile(ti, io.BytesIO(data))


def docker_archive(path, image, repo_tags, style="legacy", lie_layer=None, skip=()):
    """A `docker save` tarball. style "legacy": <id>/layer.tar + <config-hex>.json (docker
    < 25); "blobs": blobs/sha256/<hex> (docker >= 25). lie_layer=i replaces layer i's bytes
    (the config still names the original diff_id). skip: member names left out."""
    cfg_name = (f"{image.config_digest[7:]}.json" if style == "legacy"
                else f"blobs/sha256/{image.config_digest[7:]}")
    members, layer_names = [], []
    for i, layer in enumerate(image.layers):
        data = layer.blob
        if i == lie_layer:
            data = Layer([File("liar", b"not what the config says\n")],
                         compression=layer.compression).blob
        name = (f"{sha256(layer.diff_id.encode())[7:]}/layer.tar" if style == "legacy"
                else f"blobs/sha256/{layer.digest[7:]}")
        layer_names.append(name)
        members.append((name, data))
    members.append((cfg_name, image.config))
    manifest = [{"Config": cfg_name, "RepoTags": list(repo_tags), "Layers": layer_names}]
    members.append(("manifest.json", json.dumps(manifest).encode()))
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            if name not in skip:
                add_bytes(tf, name, data)
    return path


def oci_files(image, ref_names, index_entry=None):
    """(member name, bytes) of an OCI image layout holding image (an Image or an Index)."""
    files = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')]
    images = image.images if isinstance(image, Index) else [image]
    for im in images:
        for layer in im.layers:
            files.append((f"blobs/sha256/{layer.digest[7:]}", layer.blob))
        files.append((f"blobs/sha256/{im.config_digest[7:]}", im.config))
        files.append((f"blobs/sha256/{im.manifest_digest[7:]}", im.manifest))
    if isinstance(image, Index):
        files.append((f"blobs/sha256/{image.manifest_digest[7:]}", image.manifest))
    entries = []
    for ref in ref_names or [None]:
        e = {"mediaType": image.media_type, "digest": image.manifest_digest,
             "size": len(image.manifest)}
        if ref:
            e["annotations"] = {"org.opencontainers.image.ref.name": ref}
        entries.append(index_entry(e) if index_entry else e)
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": entries}
    files.append(("index.json", json.dumps(index).encode()))
    return files


def oci_dir(path, image, ref_names):
    path = Path(path)
    for name, data in oci_files(image, ref_names):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


def oci_archive(path, image, ref_names):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in oci_files(image, ref_names):
            add_bytes(tf, name, data)
    return path


def tree(root):
    """path -> what an unpacked layer must reproduce exactly: type, mode, owner, size, content
    (sha256) or link target, device numbers, hardlink groups."""
    root = Path(root)
    out, inodes = {}, {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            what = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            if stat.S_ISREG(st.st_mode):
                what += (st.st_size, hashlib.sha256(p.read_bytes()).hexdigest())
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                what += (os.readlink(p),)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                what += (st.st_rdev,)
            out[rel] = what
    out["<hardlinks>"] = sorted(sorted(v) for v in inodes.values())
    return out


def assert_loads(ctx, archive, name, image):
    """`racker load -i archive` loads image (its config and manifest digests) as name, alone."""
    r = ctx.ok("load", "-i", archive)
    assert r.stdout == f"Loaded image: {name}\n", r
    img = ctx.image_named(name)
    assert img["Id"] == image.config_digest
    assert img["Digest"] == image.manifest_digest


def check_busybox_layers(ctx, image, bb_rootfs, root=None):
    c1, c2 = chain_ids(image.diff_ids)
    fs1, fs2 = ctx.layer_fs(c1, root), ctx.layer_fs(c2, root)
    assert (fs1 / "bin/busybox").read_bytes() == (bb_rootfs / "bin/busybox").read_bytes()
    assert os.readlink(fs1 / "bin/sh") == "/bin/busybox"
    assert stat.S_IMODE(os.lstat(fs1 / "tmp").st_mode) == 0o1777
    assert (fs2 / "etc/layer2.txt").read_text() == "from layer 2\n"
    st = os.lstat(fs2 / "usr/share/data")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, 7)
    assert os.readlink(fs2 / "usr/share/link") == "data"
    assert os.lstat(fs2 / "etc/hard").st_ino == os.lstat(fs2 / "etc/layer2.txt").st_ino
    assert not (fs2 / "bin").exists()


# --- load ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["legacy", "blobs"])
def test_load_docker_archive(ctx, bb_plain, bb_rootfs, style):
    ar = docker_archive(ctx.tmp / "bb.tar", bb_plain, ["bbtest:1", "example.com/x/bb:2"], style)
    r = ctx.ok("load", "-i", ar)
    assert r.stdout == ("Loaded image: docker.io/library/bbtest:1\n"
                        "Loaded image: example.com/x/bb:2\n"), r
    img = ctx.image_named("docker.io/library/bbtest:1")
    assert img["Id"] == bb_plain.config_digest
    assert sorted(img["Names"]) == ["docker.io/library/bbtest:1", "example.com/x/bb:2"]
    assert img["Layers"] == 2
    assert img["Platform"] == f"linux/{HOST_ARCH}"
    # uncompressed layers are stored as they are: their digest is their diff_id
    layers = ctx.inspect("bbtest:1")["Layers"]
    assert [l["Digest"] for l in layers] == bb_plain.diff_ids
    assert [l["DiffID"] for l in layers] == bb_plain.diff_ids
    assert ctx.blobs() >= set(bb_plain.diff_ids) | {bb_plain.config_digest}
    assert ctx.layer_dirs() == {c[7:] for c in chain_ids(bb_plain.diff_ids)}
    check_busybox_layers(ctx, bb_plain, bb_rootfs)
    ctx.assert_consistent()

    # the same archive again: nothing new, same image
    before = ctx.snapshot()
    r = ctx.ok("load", "-i", ar)
    assert "Loaded image: docker.io/library/bbtest:1" in r.stdout
    assert ctx.snapshot()[:2] == before[:2]
    assert len(ctx.images()) == 1


def test_load_docker_archive_gzip_layers(ctx, bb_gzip, bb_rootfs):
    """Layers gzip-compressed inside a docker-archive (some tools write them): stored as they
    are; a layer that decompresses to something else than its diff_id is refused."""
    ar = docker_archive(ctx.tmp / "gz.tar", bb_gzip, ["bbgz:1"])
    ctx.ok("load", "-i", ar)
    layers = ctx.inspect("bbgz:1")["Layers"]
    assert [l["Digest"] for l in layers] == [l.digest for l in bb_gzip.layers]
    assert [l["DiffID"] for l in layers] == bb_gzip.diff_ids
    check_busybox_layers(ctx, bb_gzip, bb_rootfs)

    fresh = ctx.tmp / "fresh"
    liar = docker_archive(ctx.tmp / "liar.tar", bb_gzip, ["bbgz:1"], lie_layer=1)
    r = ctx("load", "-i", liar, root=fresh)
    assert r.returncode == 1, r
    assert r.stderr.startswith(f"racker: load {liar}: docker.io/library/bbgz:1: layer 2/2: "
                               "uncompressed layer has digest sha256:"), r
    assert r.stderr.endswith(f", config says {bb_gzip.diff_ids[1]}\n"), r
    assert ctx.snapshot(fresh) == (set(), set(), None)
    ctx.assert_consistent(fresh)


def test_load_from_stdin_compressed(ctx, bb_plain, bb_rootfs):
    """`racker load < x.tar.gz` and through a pipe: docker load accepts compressed archives."""
    ar = docker_archive(ctx.tmp / "bb.tar", bb_plain, ["bbtest:stdin"])
    data = gzip.compress(ar.read_bytes(), compresslevel=1)
    r = ctx.ok("load", input=data)  # a pipe: spooled to a temporary file
    assert r.stdout == "Loaded image: docker.io/library/bbtest:stdin\n", r
    assert ctx.image_named("docker.io/library/bbtest:stdin")["Id"] == bb_plain.config_digest
    check_busybox_layers(ctx, bb_plain, bb_rootfs)
    # a regular file as stdin, into another store
    other = ctx.tmp / "store2"
    with open(ar, "rb") as f:
        p = subprocess.run([ctx.binary, "--root", str(other), "load"], stdin=f,
                           capture_output=True, timeout=TIMEOUT)
    assert p.returncode == 0, p
    assert p.stdout == b"Loaded image: docker.io/library/bbtest:stdin\n"
    ctx.assert_consistent()
    ctx.assert_consistent(other)
    assert not list((ctx.root / "ingest").iterdir())  # the spool file is gone


def test_load_oci_layout_dir(ctx, bb_gzip, bb_rootfs):
    d = oci_dir(ctx.tmp / "layout", bb_gzip, ["localhost:5000/test/oci:2"])
    assert_loads(ctx, d, "localhost:5000/test/oci:2", bb_gzip)
    assert ctx.blobs() == bb_gzip.blobs  # the blobs exactly as in the layout
    check_busybox_layers(ctx, bb_gzip, bb_rootfs)
    ctx.assert_consistent()


def test_load_oci_archive_multi_platform(ctx, bb_gzip, bb_rootfs):
    """An index over two platforms named by ref.name: the host's image is loaded; a bare
    ref.name (a tag without repository) leaves the image unnamed."""
    other_arch = "s390x" if HOST_ARCH != "s390x" else "amd64"
    other = Image([Layer([File("wrong-arch", b"!")])], architecture=other_arch)
    idx = Index([other, bb_gzip])
    ar = oci_archive(ctx.tmp / "oci.tar", idx, ["docker.io/test/multi:1"])
    assert_loads(ctx, ar, "docker.io/test/multi:1", bb_gzip)
    assert other.layers[0].digest not in ctx.blobs()
    check_busybox_layers(ctx, bb_gzip, bb_rootfs)

    ar2 = oci_archive(ctx.tmp / "bare.tar", bb_gzip, ["v1.0"])
    r = ctx.ok("load", "-i", ar2, root=ctx.tmp / "store2")
    assert r.stdout == f"Loaded image ID: {bb_gzip.config_digest}\n", r
    ctx.assert_consistent()


# --- save -> load round trip --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive", "oci-dir"])
def test_save_load_round_trip(ctx, bb_gzip, bb_plain, fmt):
    """Images loaded from a layout (gzip layers) and from a docker-archive (plain layers) are
    saved together and loaded into a fresh store: same ids, identical layer trees."""
    ctx.ok("load", "-i", oci_dir(ctx.tmp / "layout", bb_gzip, ["test/gz:1"]))
    ctx.ok("load", "-i", docker_archive(ctx.tmp / "plain.tar", bb_plain, ["test/plain:1"]))
    ctx.ok("tag", "test/gz:1", "test/gz:alias")
    out = ctx.tmp / ("saved" if fmt == "oci-dir" else "saved.tar")
    r = ctx.ok("save", "-o", out, "--format", fmt, "test/gz:1", "test/gz:alias", "test/plain:1")
    assert r.stdout == "" and out.exists()
    assert not [p for p in ctx.tmp.iterdir() if "racker-tmp" in p.name]

    fresh = ctx.tmp / "fresh"
    r = ctx.ok("load", "-i", out, root=fresh)
    assert sorted(r.stdout.splitlines()) == [
        "Loaded image: docker.io/test/gz:1", "Loaded image: docker.io/test/gz:alias",
        "Loaded image: docker.io/test/plain:1"], r
    for name, image in (("docker.io/test/gz:1", bb_gzip), ("docker.io/test/plain:1", bb_plain)):
        a, b = ctx.image_named(name), ctx.image_named(name, root=fresh)
        assert a["Id"] == b["Id"] == image.config_digest
        assert b["Layers"] == 2
        if fmt != "docker-archive":  # the blobs travel as they are
            assert b["Digest"] == a["Digest"]
        la = ctx.inspect(name)["Layers"]
        lb = ctx.inspect(name, root=fresh)["Layers"]
        assert [l["DiffID"] for l in la] == [l["DiffID"] for l in lb] == image.diff_ids
        for x, y in zip(la, lb):
            assert tree(x["Path"]) == tree(y["Path"])
    assert "docker.io/test/gz:alias" in ctx.image_named("docker.io/test/gz:1", root=fresh)["Names"]
    ctx.assert_consistent(fresh)

    if fmt == "docker-archive":
        with tarfile.open(out) as tf:
            names = tf.getnames()
            manifest = json.load(tf.extractfile("manifest.json"))
            repos = json.load(tf.extractfile("repositories"))
            for entry in manifest:
                for layer in entry["Layers"]:  # uncompressed, as docker save writes them
                    data = tf.extractfile(layer).read()
                    assert data[257:262] == b"ustar"
        tags = sorted(t for e in manifest for t in e["RepoTags"])
        assert tags == ["test/gz:1", "test/gz:alias", "test/plain:1"]
        assert f"{bb_gzip.config_digest[7:]}.json" in names
        assert set(repos) == {"test/gz", "test/plain"}
        assert len(manifest) == 2
    elif fmt == "oci-dir":
        index = json.loads((out / "index.json").read_text())
        refs = sorted(m["annotations"]["org.opencontainers.image.ref.name"]
                      for m in index["manifests"])
        assert refs == ["docker.io/test/gz:1", "docker.io/test/gz:alias", "docker.io/test/plain:1"]
        for b in bb_gzip.blobs:
            assert (out / "blobs/sha256" / b[7:]).is_file()


def test_save_errors(ctx, bb_plain):
    ctx.ok("load", "-i", docker_archive(ctx.tmp / "bb.tar", bb_plain, ["bbtest:1"]))
    r = ctx("save", "-o", ctx.tmp / "x.tar", "nosuch:1")
    assert r.returncode == 1 and r.stderr == "racker: save nosuch:1: no such image\n", r
    assert not (ctx.tmp / "x.tar").exists()
    r = ctx("save", "-o", ctx.tmp / "x.tar", "--format", "zip", "bbtest:1")
    assert r.returncode == 1 and "unknown archive format \"zip\"" in r.stderr, r
    (ctx.tmp / "full").mkdir()
    (ctx.tmp / "full" / "f").write_text("x")
    r = ctx("save", "-o", ctx.tmp / "full", "--format", "oci-dir", "bbtest:1")
    assert r.returncode == 1 and "exists and is not an empty directory" in r.stderr, r
    # by id: no names in the archive; it loads unnamed
    r = ctx.ok("save", "-o", ctx.tmp / "byid.tar", bb_plain.config_digest[7:19])
    r = ctx.ok("load", "-i", ctx.tmp / "byid.tar", root=ctx.tmp / "s2")
    assert r.stdout == f"Loaded image ID: {bb_plain.config_digest}\n", r


# --- malformed archives -------------------------------------------------------------------------


def preload(ctx):
    """A store that holds an image already: a refused load must not touch it."""
    img = Image([Layer([File("pre", b"existing\n")], compression="none")])
    ctx.ok("load", "-i", docker_archive(ctx.tmp / "pre.tar", img, ["pre:1"]))
    return ctx.snapshot()


def test_missing_manifest_json(ctx, bb_plain):
    before = preload(ctx)
    ar = docker_archive(ctx.tmp / "bad.tar", bb_plain, ["bad:1"], skip=("manifest.json",))
    r = ctx("load", "-i", ar)
    assert r.returncode == 1, r
    assert r.stderr == (f"racker: load {ar}: no manifest.json or index.json: not a "
                        "docker-archive or OCI archive\n"), r
    assert ctx.snapshot() == before
    ctx.assert_consistent()


@pytest.mark.parametrize("style", ["legacy", "blobs"])
def test_layer_digest_lies(ctx, bb_plain, style):
    """Layer 2's bytes are not what the config's diff_id says: refused, and layer 1 (stored and
    unpacked by then) is taken out again."""
    before = preload(ctx)
    ar = docker_archive(ctx.tmp / "liar.tar", bb_plain, ["liar:1"], style, lie_layer=1)
    r = ctx("load", "-i", ar)
    assert r.returncode == 1, r
    assert len(r.stderr.splitlines()) == 1, r
    assert r.stderr.startswith(f"racker: load {ar}: docker.io/library/liar:1: layer 2/2: "), r
    if style == "legacy":
        assert f"digest mismatch for {bb_plain.diff_ids[1]}: got sha256:" in r.stderr, r
    else:  # the blob's name and the config's diff_id disagree
        assert "digest mismatch" in r.stderr or "uncompressed layer has digest" in r.stderr, r
    assert ctx.snapshot() == before
    assert "liar" not in json.dumps(ctx.images())
    ctx.assert_consistent()


def test_decompression_bomb_is_refused(ctx):
    """A small gzip layer that expands far beyond both the size threshold and the ratio to its
    compressed size is refused while it is extracted (limits lowered so the test stays small:
    8 MiB of zeros in a ~10 KiB layer), naming the layer; nothing of it stays in the store.
    Under the same limits a layer of ordinary data loads."""
    before = preload(ctx)
    bomb = Layer([File("zeros", b"\0" * (8 << 20))], compression="gzip")
    assert bomb.size < 64 << 10
    img = Image([bomb])
    ar = docker_archive(ctx.tmp / "bomb.tar", img, ["bomb:1"], "blobs")
    env = {"RACKER_MAX_LAYER_SIZE": "1m", "RACKER_MAX_LAYER_RATIO": "100"}
    r = ctx("load", "-i", ar, env=env)
    assert r.returncode == 1, r
    assert len(r.stderr.splitlines()) == 1, r
    assert f"layer {bomb.digest} expands to more than" in r.stderr, r
    assert "decompression bomb" in r.stderr, r
    assert ctx.snapshot() == before
    ctx.assert_consistent()
    ok = Image([Layer([File("data", os.urandom(2 << 20))], compression="gzip")])
    ctx.ok("load", "-i", docker_archive(ctx.tmp / "ok.tar", ok, ["fine:1"], "blobs"), env=env)
    r = ctx("load", "-i", ar, env={"RACKER_MAX_LAYER_SIZE": "lots"})
    assert r.returncode == 1 and "invalid $RACKER_MAX_LAYER_SIZE \"lots\"" in r.stderr, r


def test_oci_blob_digest_lies(ctx, bb_gzip):
    before = preload(ctx)
    d = oci_dir(ctx.tmp / "layout", bb_gzip, ["test/liar:1"])
    victim = d / "blobs/sha256" / bb_gzip.layers[1].digest[7:]
    data = bytearray(victim.read_bytes())
    data[-10] ^= 0xFF  # same size, other content
    victim.write_bytes(bytes(data))
    r = ctx("load", "-i", d)
    assert r.returncode == 1, r
    assert r.stderr == (f"racker: load {d}: docker.io/test/liar:1: layer 2/2: "
                        f"blobs/sha256/{bb_gzip.layers[1].digest[7:]}: digest mismatch for "
                        f"{bb_gzip.layers[1].digest}: got {sha256(bytes(data))}\n"), r
    assert ctx.snapshot() == before
    ctx.assert_consistent()


def test_other_malformed_archives(ctx, bb_plain):
    before = preload(ctx)
    junk = ctx.tmp / "junk.tar"
    junk.write_bytes(os.urandom(4096))
    r = ctx("load", "-i", junk)
    assert r.returncode == 1 and r.stderr == f"racker: load {junk}: not a tar archive\n", r

    ar = docker_archive(ctx.tmp / "nolayer.tar", bb_plain, ["x:1"],
                        skip=(f"{sha256(bb_plain.diff_ids[0].encode())[7:]}/layer.tar",))
    r = ctx("load", "-i", ar)
    assert r.returncode == 1, r
    assert r.stderr == (f"racker: load {ar}: manifest.json: image 1: layer "
                        f"{sha256(bb_plain.diff_ids[0].encode())[7:]}/layer.tar is missing "
                        "from the archive\n"), r

    bad = ctx.tmp / "badjson.tar"
    with tarfile.open(bad, "w") as tf:
        add_bytes(tf, "manifest.json", b"[{not json")
    r = ctx("load", "-i", bad)
    assert r.stderr == f"racker: load {bad}: manifest.json: not valid JSON\n", r

    truncated = ctx.tmp / "trunc.tar"
    full = docker_archive(ctx.tmp / "full.tar", bb_plain, ["t:1"]).read_bytes()
    truncated.write_bytes(full[: len(full) // 2])
    r = ctx("load", "-i", truncated)
    assert r.returncode == 1 and "truncated tar archive" in r.stderr, r

    r = ctx("load", "-i", ctx.tmp / "absent.tar")
    assert r.returncode == 1 and "No such file or directory" in r.stderr, r
    assert ctx.snapshot() == before
    ctx.assert_consistent()


# --- bake ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def baked(racker_exe, tmp_path_factory):
    """One `racker bake debian` (bookworm, minbase) per session; the rootfs tarball is cached
    in BAKE_CACHE across sessions."""
    if not shutil.which("mmdebstrap"):
        pytest.skip("mmdebstrap not installed (apt-get install mmdebstrap)")
    BAKE_CACHE.mkdir(parents=True, exist_ok=True)
    root = tmp_path_factory.mktemp("bake") / "store"
    argv = [racker_exe, "--root", str(root), "bake", "--cache-dir", str(BAKE_CACHE),
            "--suite", "bookworm", "debian"]
    p = subprocess.run(argv, capture_output=True, timeout=600)
    if p.returncode != 0 and b"mmdebstrap failed" in p.stderr:
        pytest.skip("mmdebstrap could not build bookworm (no access to the Debian archive?): "
                    + p.stderr.decode(errors="replace")[-500:])
    assert p.returncode == 0, p
    return root, p


def test_bake_debian(ctx, baked):
    root, p = baked
    assert p.stdout.decode().startswith("Baked image: docker.io/library/debian:bookworm\n"), p
    img = ctx.image_named("docker.io/library/debian:bookworm", root=root)
    assert img["Layers"] == 1
    assert img["Platform"].startswith(f"linux/{HOST_ARCH}")
    info = ctx.inspect("debian:bookworm", root=root)
    assert info["Config"]["Cmd"] == ["/bin/bash"]
    assert any(e.startswith("PATH=") for e in info["Config"]["Env"])
    fs = Path(info["Layers"][0]["Path"])
    assert "bookworm" in (fs / "etc/os-release").read_text()
    assert (fs / "bin/bash").exists() or (fs / "usr/bin/bash").exists()
    assert (fs / "dev").is_dir() and os.listdir(fs / "dev") == []  # ./dev/* dropped
    assert info["Layers"][0]["Digest"] in ctx.blobs(root)
    ctx.assert_consistent(root)


def test_bake_again_uses_cache(ctx, baked):
    """A second bake with the same arguments takes the cached rootfs and makes the same image
    (the gzip output and the config's created time are deterministic)."""
    root, _ = baked
    before = ctx.image_named("docker.io/library/debian:bookworm", root=root)
    fresh = ctx.tmp / "fresh"
    t0 = time.monotonic()
    r = ctx.ok("bake", "--cache-dir", BAKE_CACHE, "--name", "mydeb:1", "debian", root=fresh,
               timeout=300)
    assert "using cached rootfs" in r.stderr, r
    assert time.monotonic() - t0 < 60
    img = ctx.image_named("docker.io/library/mydeb:1", root=fresh)
    assert img["Id"] == before["Id"]
    assert ctx.images(root=fresh)[0]["Names"] == ["docker.io/library/mydeb:1"]


def test_bake_refuses_what_it_cannot_do(ctx, racker_exe):
    r = ctx("bake", "fedora")
    assert r.returncode == 1, r
    assert r.stderr == "racker: bake fedora: not supported yet (supported: debian, ubuntu)\n", r
    r = ctx("bake", "--suite", "bookworm;rm", "debian")
    assert r.returncode == 1 and "invalid suite \"bookworm;rm\"" in r.stderr, r
    r = ctx("bake", "--include", "ok,-bad", "debian")
    assert r.returncode == 1 and "invalid package name \"-bad\"" in r.stderr, r
    if not os.path.exists("/usr/share/keyrings/ubuntu-archive-keyring.gpg"):
        r = ctx("bake", "ubuntu")
        assert r.returncode == 1, r
        assert r.stderr.startswith("racker: bake ubuntu noble: the Ubuntu archive keyring "
                                   "/usr/share/keyrings/ubuntu-archive-keyring.gpg is missing"), r
    assert not ctx.images()
