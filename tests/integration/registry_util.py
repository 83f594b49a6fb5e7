"""A real local registry (Debian's docker-registry, distribution 2.8) and an OCI image builder
and pusher in pure Python, for racker's pull tests.

    reg = Registry(workdir, auth=("user", "pass"), tls=True).start()
    img = Image([Layer.from_dir(rootfs), Layer([File("hello", b"hi")], compression="zstd")])
    reg.push_image("test/busybox", "1", img)
    ...
    reg.stop()

The registry listens on 127.0.0.1 on a free port with its storage under workdir. Its access
log (stdout: one combined-log line per request) and its structured log (stderr) go to files;
requests() parses the access log. tls=True generates a CA and a server certificate for
127.0.0.1 (subjectAltName IP:127.0.0.1) with openssl; auth=(user, password) enables htpasswd
basic auth (htpasswd -Bbn from apache2-utils); token={realm, service, issuer, rootcertbundle}
enables bearer-token auth against a token server (see token_service.py).
"""

import base64
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REGISTRY_BIN = "/usr/bin/docker-registry"

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids):
    """OCI ChainIDs: chain(L0) = diff(L0), chain(Ln) = sha256(chain(Ln-1) + " " + diff(Ln))."""
    out = []
    for d in diff_ids:
        out.append(d if not out else sha256((out[-1] + " " + d).encode()))
    return out


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_process_group(proc):
    """SIGKILLs the process group proc leads (if proc still runs) and reaps proc."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def missing_tools(tls=False, auth=False, zstd=False):
    """Names of the host tools a registry/image with these features needs and lacks."""
    need = [REGISTRY_BIN]
    if tls:
        need.append("openssl")
    if auth:
        need.append("htpasswd")
    if zstd:
        need.append("zstd")
    return [t for t in need if not shutil.which(t)]


# --- layer contents ---------------------------------------------------------------------------


class Entry:
    """One tar entry. Subclasses fill in the TarInfo."""

    def __init__(self, path, mode, uid=0, gid=0, mtime=1700000000):
        self.path = path
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime = mtime

    def _info(self, type_):
        ti = tarfile.TarInfo(self.path)
        ti.type = type_
        ti.mode = self.mode
        ti.uid, ti.gid = self.uid, self.gid
        ti.uname = ti.gname = ""
        ti.mtime = self.mtime
        return ti

    def add_to(self, tf):
        raise NotImplementedError


class File(Entry):
    def __init__(self, path, data=b"", mode=0o644, **kw):
        super().__init__(path, mode, **kw)
        self.data = data if isinstance(data, bytes) else data.encode()

    def add_to(self, tf):
        ti = self._info(tarfile.REGTYPE)
        ti.size = len(self.data)
        tf.addfile(ti, io.BytesIO(self.data))


class Dir(Entry):
    def __init__(self, path, mode=0o755, **kw):
        super().__init__(path, mode, **kw)

    def add_to(self, tf):
        tf.addfile(self._info(tarfile.DIRTYPE))


class _Link(Entry):
    """A tar member of type TYPE that names another path, target."""
    TYPE = None

    def __init__(self, path, target, mode, **kw):
        super().__init__(path, mode, **kw)
        self.target = target

    def add_to(self, tf):
        ti = self._info(self.TYPE)
        ti.linkname = self.target
        tf.addfile(ti)


class Symlink(_Link):
    TYPE = tarfile.SYMTYPE

    def __init__(self, path, target, **kw):
        super().__init__(path, target, 0o777, **kw)


class Hardlink(_Link):
    TYPE = tarfile.LNKTYPE

    def __init__(self, path, target, mode=0o644, **kw):
        super().__init__(path, target, mode, **kw)


def Whiteout(path):
    """OCI whiteout: hides `path` of lower layers (an empty file named .wh.<name>)."""
    d, _, name = path.rpartition("/")
    return File((d + "/" if d else "") + ".wh." + name, b"", mode=0o600)


def Opaque(dir_path):
    """OCI opaque marker: `dir_path` hides everything lower layers have in it."""
    return File(dir_path.rstrip("/") + "/.wh..wh..opq", b"", mode=0o600)


class RawTar:
    """Entries given as a finished uncompressed tar stream (for hand-made, odd archives)."""

    def __init__(self, data):
        self.data = data


def compress(data, compression):
    if compression == "gzip":
        return gzip.compress(data, compresslevel=1, mtime=0)
    if compression == "zstd":
        if not shutil.which("zstd"):
            raise RuntimeError("zstd not installed")
        return subprocess.run(["zstd", "-q", "-1", "-c", "--no-check"], input=data,
                              stdout=subprocess.PIPE, check=True).stdout
    if compression == "none":
        return data
    raise ValueError(f"unknown compression {compression!r}")


class Layer:
    """A layer blob: the uncompressed tar (diff_id) and the compressed blob (digest)."""

    def __init__(self, entries, compression="gzip"):
        if isinstance(entries, RawTar):
            self.tar = entries.data
        else:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
                for e in entries:
                    e.add_to(tf)
            self.tar = buf.getvalue()
        self.compression = compression
        self.blob = compress(self.tar, compression)
        self.diff_id = sha256(self.tar)
        self.digest = sha256(self.blob)
        self.size = len(self.blob)
        self.media_type = MT_LAYER[compression]

    @classmethod
    def from_dir(cls, root, compression="gzip"):
        """A layer of everything under root (paths relative to it, owners as on disk)."""
        root = Path(root)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in sorted(dirnames) + sorted(filenames):
                    p = Path(dirpath) / name
                    tf.add(str(p), arcname=str(p.relative_to(root)), recursive=False)
        return cls(RawTar(buf.getvalue()), compression)

    def descriptor(self):
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


class Image:
    """Config + manifest for one platform."""

    def __init__(self, layers, os_="linux", architecture="amd64", variant=None, cmd=("/bin/sh",),
                 env=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
                 labels=None):
        self.layers = list(layers)
        cfg = {
            "created": "2026-01-01T00:00:00Z",
            "architecture": architecture,
            "os": os_,
            "config": {"Cmd": list(cmd), "Env": list(env)},
            "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in self.layers]},
            "history": [{"created_by": f"layer {i}"} for i in range(len(self.layers))],
        }
        if variant:
            cfg["variant"] = variant
        if labels:
            cfg["config"]["Labels"] = dict(labels)
        self.platform = {"os": os_, "architecture": architecture}
        if variant:
            self.platform["variant"] = variant
        self.config = json.dumps(cfg, sort_keys=True).encode()
        self.config_digest = sha256(self.config)
        self.manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": MT_OCI_CONFIG, "digest": self.config_digest,
                       "size": len(self.config)},
            "layers": [l.descriptor() for l in self.layers],
        }, sort_keys=True).encode()
        self.manifest_digest = sha256(self.manifest)
        self.media_type = MT_OCI_MANIFEST

    @property
    def diff_ids(self):
        return [l.diff_id for l in self.layers]

    @property
    def chain_ids(self):
        return chain_ids(self.diff_ids)

    @property
    def blobs(self):
        """Every blob digest the image refers to (manifest, config, layers)."""
        return {self.manifest_digest, self.config_digest} | {l.digest for l in self.layers}


class Index:
    """An OCI image index over several Images (one per platform)."""

    def __init__(self, images):
        self.images = list(images)
        self.manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": MT_OCI_INDEX,
            "manifests": [{"mediaType": MT_OCI_MANIFEST, "digest": im.manifest_digest,
                           "size": len(im.manifest), "platform": im.platform}
                          for im in self.images],
        }, sort_keys=True).encode()
        self.manifest_digest = sha256(self.manifest)
        self.media_type = MT_OCI_INDEX


# --- the registry -----------------------------------------------------------------------------


class Registry:
    def __init__(self, workdir, auth=None, tls=False, token=None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage = self.workdir / "storage"
        self.auth = auth
        self.tls = tls
        self.token = token
        self.port = None
        self.proc = None
        self.access_log = self.workdir / "access.log"  # stdout: combined log, one per request
        self.log = self.workdir / "registry.log"  # stderr: logrus
        self.ca_cert = None
        self._ssl = None

    # lifecycle

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    @property
    def scheme(self):
        return "https" if self.tls else "http"

    def _make_tls(self):
        d = self.workdir / "tls"
        d.mkdir(exist_ok=True)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        q = dict(check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        subprocess.run(["openssl", "req", "-x509", *ec, "-keyout", str(d / "ca.key"),
                        "-out", str(d / "ca.crt"), "-days", "2", "-subj", "/CN=racker test CA",
                        "-addext", "basicConstraints=critical,CA:TRUE",
                        "-addext", "keyUsage=critical,keyCertSign,cRLSign"], **q)
        subprocess.run(["openssl", "req", *ec, "-keyout", str(d / "server.key"),
                        "-out", str(d / "server.csr"), "-subj", "/CN=127.0.0.1"], **q)
        (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n"
                                   "basicConstraints=CA:FALSE\n"
                                   "keyUsage=digitalSignature,keyEncipherment\n"
                                   "extendedKeyUsage=serverAuth\n")
        subprocess.run(["openssl", "x509", "-req", "-in", str(d / "server.csr"),
                        "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
                        "-CAcreateserial", "-out", str(d / "server.crt"), "-days", "2",
                        "-extfile", str(d / "ext.cnf")], **q)
        self.ca_cert = d / "ca.crt"
        self._ssl = ssl.create_default_context(cafile=str(self.ca_cert))
        return d / "server.crt", d / "server.key"

    def _config(self):
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "  accesslog:",
            "    disabled: false",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.storage}",
            "  delete:",
            "    enabled: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            "  secret: racker-test-secret",
        ]
        if self.tls:
            crt, key = self._make_tls()
            lines += ["  tls:", f"    certificate: {crt}", f"    key: {key}"]
        if self.auth:
            user, password = self.auth
            ht = subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                                stdout=subprocess.PIPE).stdout
            (self.workdir / "htpasswd").write_bytes(ht)
            lines += ["auth:", "  htpasswd:", "    realm: racker-test",
                      f"    path: {self.workdir / 'htpasswd'}"]
        if self.token:
            lines += ["auth:", "  token:"]
            lines += [f"    {k}: {self.token[k]}"
                      for k in ("realm", "service", "issuer", "rootcertbundle")]
        return "\n".join(lines) + "\n"

    def start(self, timeout=10.0):
        for attempt in range(5):  # the free port may be taken between probe and bind
            self.port = free_port()
            cfg = self.workdir / "config.yml"
            cfg.write_text(self._config())
            with open(self.access_log, "ab") as out, open(self.log, "ab") as err:
                self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)], stdout=out,
                                             stderr=err, stdin=subprocess.DEVNULL,
                                             start_new_session=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    status, _, _ = self.request("GET", "/v2/", auth=False)
                    if status in (200, 401):
                        return self
                except (OSError, urllib.error.URLError):
                    pass
                time.sleep(0.02)
            self.stop()
            if "address already in use" not in self.log.read_text(errors="replace"):
                break
        raise RuntimeError(f"docker-registry did not start; log:\n{self.log.read_text()[-3000:]}")

    def stop(self):
        if self.proc:
            kill_process_group(self.proc)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # the registry's own storage (for making it lie)

    def blob_data_path(self, digest):
        hex_ = digest.split(":", 1)[1]
        return (self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data")

    # logs

    def log_offset(self):
        return self.access_log.stat().st_size if self.access_log.exists() else 0

    def requests(self, since=0):
        """(method, path, status) of every request answered since byte offset `since`."""
        with open(self.access_log, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        out = []
        for m in re.finditer(r'"([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3})', text):
            out.append((m.group(1), m.group(2), int(m.group(3))))
        return out

    # the distribution API

    def url(self, path):
        return f"{self.scheme}://{self.host}{path}"

    def request(self, method, path_or_url, data=None, headers=None, auth=True):
        url = path_or_url if "://" in path_or_url else self.url(path_or_url)
        req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
        if auth and self.auth:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            req.add_header("Authorization", "Basic " + token)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self._ssl) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def push_blob(self, repo, data, digest=None):
        digest = digest or sha256(data)
        status, _, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        if status == 200:
            return digest
        status, headers, body = self.request("POST", f"/v2/{repo}/blobs/uploads/", data=b"",
                                             headers={"Content-Length": "0"})
        if status != 202:
            raise RuntimeError(f"POST blobs/uploads/ for {repo}: {status} {body[:300]!r}")
        location = urllib.parse.urljoin(self.url("/"), headers["Location"])
        sep = "&" if "?" in location else "?"
        status, _, body = self.request(
            "PUT", f"{location}{sep}digest={urllib.parse.quote(digest)}", data=data,
            headers={"Content-Type": "application/octet-stream",
                     "Content-Length": str(len(data))})
        if status != 201:
            raise RuntimeError(f"PUT blob {digest} to {repo}: {status} {body[:300]!r}")
        return digest

    def push_manifest(self, repo, reference, body, media_type):
        status, headers, resp = self.request("PUT", f"/v2/{repo}/manifests/{reference}",
                                             data=body, headers={"Content-Type": media_type})
        if status != 201:
            raise RuntimeError(f"PUT manifest {repo}:{reference}: {status} {resp[:500]!r}")
        return headers.get("Docker-Content-Digest")

    def push_image(self, repo, tag, image):
        """Pushes an Image or an Index (its images by digest first) and tags it."""
        if isinstance(image, Index):
            for im in image.images:
                self.push_image(repo, im.manifest_digest, im)
        else:
            for layer in image.layers:
                self.push_blob(repo, layer.blob, layer.digest)
            self.push_blob(repo, image.config, image.config_digest)
        self.push_manifest(repo, tag, image.manifest, image.media_type)
        return image.manifest_digest
