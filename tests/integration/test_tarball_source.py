"""postroj's tarball source (how the original got Ubuntu: the cloud images' minimal root
tarballs, .tar.xz next to a SHA256SUMS file), against a local HTTP server the test runs: the
download resumes where an interrupted one stopped (HTTP Range), a tarball whose checksum is not
the published one is refused and removed, and the imported image is provisioned like any other
(a busybox root with an apt-get that records its calls stands in for Ubuntu)."""

import hashlib
import http.server
import io
import json
import os
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from conftest import make_busybox_rootfs
from test_postroj import Postroj, postroj_exe  # noqa: F401 (a fixture)

FAKE_APT = "#!/bin/sh\necho \"$*\" >> /apt-calls\n"


def rootfs_tar_xz(tmp_path):
    bb = make_busybox_rootfs(tmp_path / "bb")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz", preset=0) as t:
        t.add(str(bb), arcname=".")
        for name, text, mode in [("usr/bin/apt-get", FAKE_APT, 0o755),
                                 ("etc/os-release", "ID=ubuntu\nVERSION_ID=\"24.04\"\n", 0o644)]:
            info = tarfile.TarInfo("./" + name)
            info.size, info.mode = len(text), mode
            t.addfile(info, io.BytesIO(text.encode()))
        # pad with incompressible bytes, so that half the file is a real partial download
        pad = tarfile.TarInfo("./var/pad")
        pad.size = 2 << 20
        t.addfile(pad, io.BytesIO(os.urandom(pad.size)))
    return buf.getvalue()


class Server:
    """Serves files from a dict; `cut` names files whose next full GET stops after half the
    bytes (the connection just closes); honours `Range: bytes=N-` with 206."""

    def __init__(self, files):
        self.files = files
        self.cut = set()
        self.log = []  # (path, range header)
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                body = outer.files.get(self.path)
                rng = self.headers.get("Range")
                outer.log.append((self.path, rng))
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path in outer.cut and start == 0:
                    outer.cut.discard(self.path)
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def setup(postroj_exe, tmp_path):  # noqa: F811
    if os.geteuid() != 0:
        pytest.skip("postroj pull needs root here (mounts, namespaces)")
    tarball = rootfs_tar_xz(tmp_path)
    name = "ubuntu-24.04-minimal-cloudimg-amd64-root.tar.xz"
    good = hashlib.sha256(tarball).hexdigest()
    server = Server({
        "/rel/" + name: tarball,
        "/rel/SHA256SUMS": f"{'0' * 64} *other.img\n{good} *{name}\n".encode(),
        "/bad/" + name: tarball,
        "/bad/SHA256SUMS": f"{'1' * 64} *{name}\n".encode(),
    })
    images = []
    for label, d in [("ubuntu-test", "rel"), ("ubuntu-badsum", "bad")]:
        images.append({"label": label, "family": "ubuntu", "package_manager": "apt",
                       "source": {"tarball": {
                           "url": f"{server.url}/{d}/ubuntu-24.04-minimal-cloudimg-{{arch}}-root.tar.xz"}}})
    cat = tmp_path / "catalog.json"
    cat.write_text(json.dumps({"images": images}))
    pr = Postroj(postroj_exe, tmp_path / "store", tmp_path / "packages")
    downloads = tmp_path / "downloads"
    yield pr, server, cat, downloads, name
    server.stop()


def test_interrupted_download_resumes_and_the_image_is_provisioned(setup):
    pr, server, cat, downloads, name = setup
    server.cut.add("/rel/" + name)
    args = ["--download-cache", str(downloads), "pull", "ubuntu-test"]
    p = pr.run(*args, catalog=cat)
    assert p.returncode != 0, p
    assert f"{server.url}/rel/{name}" in p.stderr, p  # the error names the download
    parts = list(downloads.glob("*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size > 0, list(downloads.iterdir())
    kept = parts[0].stat().st_size

    p = pr.run(*args, catalog=cat)
    assert p.returncode == 0, p
    assert "ok     ubuntu-test" in p.stdout, p
    assert "resuming at" in p.stderr, p
    ranges = [r for path, r in server.log if path == "/rel/" + name]
    assert ranges[0] is None and ranges[-1] == f"bytes={kept}-", server.log
    assert not list(downloads.glob("*.part"))

    racker = Path(os.environ.get("RACKER_BUILD") or Path(__file__).parents[2] / "build") / "racker"
    out = subprocess.run([str(racker), "--root", str(pr.store), "run", "--rm", "--no-boot",
                          "--network", "none", "postroj.local/ubuntu-test", "cat", "/apt-calls"],
                         capture_output=True, text=True, timeout=60)
    assert "install -y -q --no-install-recommends systemd systemd-sysv dbus" in out.stdout, out

    # a second pull of the same label finds the image; a forced one re-checks the cached tarball
    # against SHA256SUMS and does not download it again
    n = len(server.log)
    p = pr.run(*args, "--force", catalog=cat)
    assert p.returncode == 0, p
    assert [path for path, _ in server.log[n:]] == ["/rel/SHA256SUMS"], server.log[n:]


def test_a_wrong_checksum_is_refused_and_the_download_removed(setup):
    pr, server, cat, downloads, name = setup
    p = pr.run("--download-cache", str(downloads), "pull", "ubuntu-badsum", catalog=cat)
    assert p.returncode != 0, p
    assert "checksum mismatch: SHA256SUMS says " + "1" * 64 in p.stderr, p
    assert len(p.stderr.strip().splitlines()) <= 3, p.stderr
    assert not [f for f in downloads.iterdir() if f.name.endswith(name)], list(downloads.iterdir())
    out = subprocess.run(["find", str(pr.store / "images")], capture_output=True, text=True)
    assert "ubuntu-badsum" not in out.stdout
