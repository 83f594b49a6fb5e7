"""racker login, logout and push against real local registries (Debian's docker-registry).

Each test starts its own registries (127.0.0.1, free ports, storage in the test's tmp dir):
plain HTTP marked insecure in the test's registries.conf, htpasswd basic auth over TLS with a
CA made by openssl, or bearer-token auth against token_service.py. Images are built and pushed
in Python (registry_util), pulled with racker into the test's --root and pushed from there.

Needs root (pull unpacks layers with their owners) and the racker binary ($RACKER_BUILD/racker,
else <repo>/build/racker).
"""

import base64
import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from racker_ctx import RackerCtx, closed_after_test, racker_snapshot
from registry_util import MT_OCI_MANIFEST, Dir, File, Image, Layer
from token_service import TokenService

TIMEOUT = 30


@pytest.fixture(scope="session")
def racker_exe(tmp_path_factory):
    return racker_snapshot(tmp_path_factory, "racker push/login tests need root (pull unpacks "
                           "layers with their owners)", registry=True, tls_auth=True)


@pytest.fixture(scope="session")
def image():
    """A small 3-layer image (gzip, uncompressed, gzip)."""
    l1 = Layer([Dir("etc"), File("etc/hostname", b"base\n"), Dir("bin"),
                File("bin/tool", b"#!/bin/sh\necho tool\n", mode=0o755)])
    l2 = Layer([Dir("srv"), File("srv/data", os.urandom(20000))], compression="none")
    l3 = Layer([Dir("etc"), File("etc/layer3", b"three\n")])
    return Image([l1, l2, l3], cmd=["/bin/tool"], labels={"test": "push"})


class Ctx(RackerCtx):
    """One test's racker (own --root, registries.conf, HOME, XDG_RUNTIME_DIR), registries and
    token services."""

    @property
    def default_authfile(self):
        return self.run_dir / "containers" / "auth.json"

    def token_service(self, users):
        ts = TokenService(self.tmp / "token", users)
        self.services.append(ts)
        return ts.start()


@pytest.fixture
def ctx(racker_exe, tmp_path):
    yield from closed_after_test(Ctx(racker_exe, tmp_path, timeout=TIMEOUT))


def auths(path):
    return json.loads(Path(path).read_text()).get("auths", {})


def b64(s):
    return base64.b64encode(s.encode()).decode()


def error_line(r):
    """The one line racker printed on stderr for a failure."""
    assert r.returncode == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r
    return lines[0]


def manifest_of(reg, repo, ref):
    status, headers, body = reg.request("GET", f"/v2/{repo}/manifests/{ref}",
                                        headers={"Accept": MT_OCI_MANIFEST})
    assert status == 200, (status, body)
    return body


# --- 1. login / logout with htpasswd over TLS ----------------------------------------------------


def test_login_logout_round_trip(ctx, image):
    reg = ctx.registry("reg", auth=("tester", "s3cret-pw"), tls=True)
    reg.push_image("test/img", "1", image)
    ref = f"{reg.host}/test/img:1"
    certs = ctx.tmp / "certs"
    (certs / reg.host).mkdir(parents=True)
    shutil.copy(reg.ca_cert, certs / reg.host / "ca.crt")
    authfile = ctx.tmp / "auth" / "auth.json"
    g = ["--authfile", authfile, "--cert-dir", certs]

    # without credentials the registry refuses
    r = ctx("pull", ref, globals_=g)
    assert r.returncode == 1 and "401" in r.stderr, r

    # a wrong password: one line naming the registry, nothing stored
    r = ctx("login", "-u", "tester", "-p", "wrong", reg.host, globals_=g)
    line = error_line(r)
    assert line.startswith(f"racker: login {reg.host}: ") and "unauthorized" in line, r
    assert "wrong" not in r.stderr + r.stdout  # the password is never echoed
    assert not authfile.exists()

    # an unknown user fails the same way
    r = ctx("login", "-u", "nobody", "-p", "s3cret-pw", reg.host, globals_=g)
    assert "unauthorized" in error_line(r)

    # TLS is verified: without the CA it fails, --tls-verify=false accepts the certificate
    other = ctx.tmp / "other-auth.json"
    r = ctx("login", "-u", "tester", "-p", "s3cret-pw", reg.host, globals_=["--authfile", other])
    assert reg.host in error_line(r) and not other.exists(), r
    r = ctx.ok("login", "--tls-verify=false", "-u", "tester", "-p", "s3cret-pw", reg.host,
               globals_=["--authfile", other])
    assert r.stdout == "Login Succeeded!\n", r

    # the right password, from stdin
    r = ctx.ok("login", "-u", "tester", "--password-stdin", reg.host, globals_=g,
               input="s3cret-pw\n")
    assert r.stdout == "Login Succeeded!\n", r
    assert stat.S_IMODE(os.stat(authfile).st_mode) == 0o600
    assert auths(authfile) == {reg.host: {"auth": b64("tester:s3cret-pw")}}
    assert not ctx.default_authfile.exists()  # --authfile is where it goes

    # the stored credentials work for pull
    r = ctx.ok("pull", "-q", ref, globals_=g)
    assert r.stdout == image.manifest_digest + "\n", r

    # logout removes them; a second logout has nothing to remove
    r = ctx.ok("logout", reg.host, globals_=g)
    assert reg.host in r.stdout, r
    assert auths(authfile) == {}
    r = ctx("logout", reg.host, globals_=g)
    assert error_line(r) == f"racker: not logged in to {reg.host}", r

    # and pulling (into a fresh store) is refused again
    r = ctx("pull", ref, globals_=g, root=ctx.tmp / "store2")
    assert r.returncode == 1 and "401" in r.stderr, r


def test_logout_normalises_names_and_all(ctx):
    authfile = ctx.tmp / "auth.json"
    authfile.write_text(json.dumps({
        "auths": {"https://index.docker.io/v1/": {"auth": b64("a:b")},
                  "docker.io": {"auth": b64("c:d")},
                  "registry.example.com:5000": {"auth": b64("e:f")},
                  "quay.io": {"auth": b64("g:h")}},
        "credHelpers": {"gcr.io": "gcloud"}}))
    g = ["--authfile", authfile]
    r = ctx.ok("logout", "index.docker.io", globals_=g)
    assert r.stdout == "Removed login credentials for docker.io\n", r
    assert set(auths(authfile)) == {"registry.example.com:5000", "quay.io"}
    r = ctx("logout", "https://index.docker.io/v1/", globals_=g)
    assert error_line(r) == "racker: not logged in to docker.io", r
    r = ctx("logout", "registry.example.com/ns", globals_=g)
    assert "invalid registry" in error_line(r), r
    r = ctx.ok("logout", "https://registry.example.com:5000/v2/", globals_=g)
    assert set(auths(authfile)) == {"quay.io"}

    r = ctx.ok("logout", "--all", globals_=g)
    assert auths(authfile) == {}
    assert json.loads(authfile.read_text())["credHelpers"] == {"gcr.io": "gcloud"}
    assert stat.S_IMODE(os.stat(authfile).st_mode) == 0o600
    r = ctx("logout", "quay.io", globals_=g)
    assert error_line(r) == "racker: not logged in to quay.io", r


# --- 2. push from one registry's image to another -------------------------------------------------


def test_push_to_another_registry(ctx, image):
    a = ctx.registry("a")
    b = ctx.registry("b")
    mirror = ctx.registry("mirror")  # a mirror of b: pulls may use it, pushes never do
    a.push_image("src/img", "1", image)
    ctx.insecure_conf(a, extra=(f'[[registry]]\nlocation = "{b.host}"\ninsecure = true\n'
                                f'[[registry.mirror]]\nlocation = "{mirror.host}"\n'
                                'insecure = true\n'))
    src = f"{a.host}/src/img:1"
    dst = f"{b.host}/dst/copy:2"
    ctx.ok("pull", "-q", src)

    b_since, m_since = b.log_offset(), mirror.log_offset()
    r = ctx.ok("push", src, dst)
    blobs = [l.digest for l in image.layers]
    for d in blobs:
        assert f"Copying blob {d} done\n" in r.stdout, r
    assert f"Copying config {image.config_digest} done\n" in r.stdout, r
    assert r.stdout.splitlines()[-1] == image.manifest_digest, r
    # the manifest went up byte for byte, so its digest is the same
    assert manifest_of(b, "dst/copy", "2") == image.manifest
    uploads = [(m, p) for m, p, _ in b.requests(b_since) if m in ("POST", "PUT", "PATCH")]
    assert len([1 for m, p in uploads if m == "POST"]) == len(blobs) + 1, uploads
    assert mirror.requests(m_since) == []

    # pulled back from b into a fresh store: the same image
    fresh = ctx.tmp / "fresh"
    r = ctx.ok("pull", "-q", dst, root=fresh)
    assert r.stdout == image.manifest_digest + "\n", r
    [img] = ctx.images(root=fresh)
    assert img["Digest"] == image.manifest_digest and img["Id"] == image.config_digest

    # a second push uploads nothing: every blob already exists
    b_since = b.log_offset()
    r = ctx.ok("push", src, dst)
    for d in blobs:
        assert f"Copying blob {d} already exists\n" in r.stdout, r
    assert f"Copying config {image.config_digest} already exists\n" in r.stdout, r
    assert r.stdout.splitlines()[-1] == image.manifest_digest, r
    time.sleep(0.05)  # the access log line is written after the answer
    methods = [m for m, _, _ in b.requests(b_since)]
    assert "POST" not in methods and "PATCH" not in methods, methods

    # -q: only the digest; without a destination the image goes back to its own name
    r = ctx.ok("push", "-q", src)
    assert r.stdout == image.manifest_digest + "\n", r

    # by id: an image with one name goes to that name; with two, a destination is needed
    short_id = image.config_digest[7:19]
    r = ctx.ok("push", "-q", short_id)
    assert r.stdout == image.manifest_digest + "\n", r
    ctx.ok("tag", src, f"{a.host}/src/img:other")
    r = ctx("push", short_id)
    assert error_line(r) == f"racker: push {short_id}: the image has 2 names; give a destination"

    # pushing a name that is not in the store
    r = ctx("push", f"{a.host}/src/nothing:1", dst)
    assert error_line(r) == f"racker: no such image: {a.host}/src/nothing:1", r


# --- 3. bearer tokens ----------------------------------------------------------------------------


def test_token_auth_push_and_pull(ctx, image):
    ts = ctx.token_service({"alice": "w0nderland"})
    b = ctx.registry("b", token=ts.registry_auth())
    a = ctx.registry("a")
    a.push_image("src/img", "1", image)
    ctx.insecure_conf(a, b)
    src = f"{a.host}/src/img:1"
    dst = f"{b.host}/team/app:v1"
    ctx.ok("pull", "-q", src)

    # anonymous: the token service hands out a token without access, the registry says 401
    r = ctx("push", src, dst)
    assert "401" in error_line(r) and f"push {dst}" in r.stderr, r

    # wrong password: the token service refuses
    r = ctx("login", "-u", "alice", "-p", "nope", b.host)
    line = error_line(r)
    assert line.startswith(f"racker: login {b.host}: ") and "unauthorized" in line, r
    assert not ctx.default_authfile.exists()

    # login (to the default auth file) asks for a token without a scope
    r = ctx.ok("login", "-u", "alice", "-p", "w0nderland", b.host)
    assert r.stdout == "Login Succeeded!\n", r
    assert stat.S_IMODE(os.stat(ctx.default_authfile).st_mode) == 0o600
    assert auths(ctx.default_authfile) == {b.host: {"auth": b64("alice:w0nderland")}}
    assert any(q["account"] == "alice" and q["scope"] == [] and q["status"] == 200
               for q in ts.requests()), ts.requests()

    r = ctx.ok("push", src, dst)
    assert r.stdout.splitlines()[-1] == image.manifest_digest, r
    assert any(q["account"] == "alice" and q["scope"] == ["repository:team/app:pull,push"]
               for q in ts.requests()), ts.requests()

    # anonymous pull is refused; with the credentials it works, same digest
    r = ctx("pull", dst, root=ctx.tmp / "anon", globals_=["--authfile", ctx.tmp / "none.json"])
    assert "401" in error_line(r) and "unauthorized" in r.stderr, r
    r = ctx.ok("pull", "-q", dst, root=ctx.tmp / "fresh")
    assert r.stdout == image.manifest_digest + "\n", r
    status, _, _ = b.request("GET", "/v2/team/app/manifests/v1", auth=False)
    assert status == 401

    # after logout the registry refuses again
    ctx.ok("logout", b.host)
    r = ctx("pull", dst, root=ctx.tmp / "anon2")
    assert "401" in error_line(r), r
