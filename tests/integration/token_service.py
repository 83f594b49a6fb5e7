"""A small Docker registry token server (distribution's "token" auth), for racker's tests.

    ts = TokenService(workdir, users={"alice": "w0nderland"}).start()
    reg = Registry(workdir / "reg", token=ts.registry_auth()).start()
    ...
    reg.stop(); ts.stop()

GET /token?service=S&scope=repository:NAME:pull,push (scope repeatable or absent) with Basic
credentials answers {"token", "access_token", "expires_in", "issued_at"}: a JWT signed RS256
by an RSA key made with openssl, whose header carries the signing certificate in "x5c" (the
registry trusts it because that same self-signed certificate is its rootcertbundle). Known users
get what they ask for among pull and push; anonymous requests get a token with no access (as
Docker Hub does), so the registry itself answers 401; wrong credentials get a 401 here.

The server runs in its own process (`python3 token_service.py CONFIG.json`: it prints its port
and serves until killed); every request is logged as one JSON line to workdir/requests.log.
"""

import base64
import json
import selectors
import subprocess
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from registry_util import kill_process_group


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(key_path, cert_der, claims):
    header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(cert_der).decode()]}
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                     b64url(json.dumps(claims, separators=(",", ":")).encode()))
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key_path)],
                         input=signing_input.encode(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, check=True).stdout
    return signing_input + "." + b64url(sig)


def parse_scope(scope):
    """"repository:name:pull,push" -> ("repository", "name", ["pull", "push"])."""
    type_, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return type_, name, [a for a in actions.split(",") if a]


# --- the server (in its own process) ----------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    cfg = None  # set by serve()

    def log_message(self, fmt, *args):  # the JSON log below is enough
        pass

    def _answer(self, status, body, record):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="racker-test-token"')
        self.end_headers()
        self.wfile.write(data)
        record["status"] = status
        with open(self.cfg["log"], "a") as f:
            f.write(json.dumps(record) + "\n")

    def do_GET(self):
        cfg = self.cfg
        url = urlparse(self.path)
        query = parse_qs(url.query)
        scopes = query.get("scope", [])
        record = {"path": url.path, "service": query.get("service", [""])[0], "scope": scopes,
                  "account": None}
        if url.path != "/token":
            return self._answer(404, {"details": "not found"}, record)
        if record["service"] != cfg["service"]:
            return self._answer(400, {"details": "unknown service"}, record)
        account = None
        authz = self.headers.get("Authorization", "")
        if authz:
            try:
                scheme, _, value = authz.partition(" ")
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                scheme, user, password = "", "", None
            if scheme.lower() != "basic" or cfg["users"].get(user) != password:
                record["account"] = user if scheme.lower() == "basic" else None
                return self._answer(401, {"details": "incorrect username or password"}, record)
            account = user
        record["account"] = account
        access = []
        if account is not None:
            for s in scopes:
                type_, name, actions = parse_scope(s)
                granted = [a for a in actions if a in ("pull", "push")]
                if type_ == "repository" and name and granted:
                    access.append({"type": type_, "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": cfg["issuer"], "sub": account or "", "aud": cfg["service"],
                  "exp": now + 300, "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex,
                  "access": access}
        token = make_jwt(cfg["key"], base64.b64decode(cfg["cert_der"]), claims)
        record["access"] = access
        self._answer(200, {"token": token, "access_token": token, "expires_in": 300,
                           "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))},
                     record)


def serve(config_path):
    Handler.cfg = json.loads(Path(config_path).read_text())
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


# --- the test side ----------------------------------------------------------------------------


class TokenService:
    def __init__(self, workdir, users, service="test-registry", issuer="test-issuer"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.users = dict(users)
        self.service = service
        self.issuer = issuer
        self.key = self.workdir / "token.key"
        self.cert = self.workdir / "token.crt"
        self.log = self.workdir / "requests.log"
        self.proc = None
        self.port = None

    @property
    def realm(self):
        return f"http://127.0.0.1:{self.port}/token"

    def registry_auth(self):
        """The `auth: token:` settings of a registry that trusts this service."""
        return {"realm": self.realm, "service": self.service, "issuer": self.issuer,
                "rootcertbundle": str(self.cert)}

    def start(self, timeout=10.0):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", str(self.key), "-out", str(self.cert), "-days", "2",
                        "-subj", "/CN=racker test token issuer"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
                             check=True, stdout=subprocess.PIPE).stdout
        cfg = self.workdir / "config.json"
        cfg.write_text(json.dumps({"users": self.users, "service": self.service,
                                   "issuer": self.issuer, "key": str(self.key),
                                   "cert_der": base64.b64encode(der).decode(),
                                   "log": str(self.log)}))
        self.log.touch()
        self.proc = subprocess.Popen([sys.executable, __file__, str(cfg)], stdout=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        line = self._read_port_line(timeout)
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"token service did not start (said {line!r})")
        self.port = int(line)
        return self

    def _read_port_line(self, timeout):
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
        return self.proc.stdout.readline().decode()

    def stop(self):
        if self.proc:
            kill_process_group(self.proc)
            self.proc.stdout.close()
        self.proc = None

    def requests(self):
        """Every request answered so far, as logged (path, service, scope, account, status)."""
        return [json.loads(l) for l in self.log.read_text().splitlines() if l.strip()]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":
    serve(sys.argv[1])
