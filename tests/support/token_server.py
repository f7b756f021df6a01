"""Test token server for docker-registry token auth (distribution token.md / oauth.md).

Listens on 127.0.0.1:<port>; GET /token?service=&scope=… with optional Basic auth,
POST /token with an OAuth2 form (password or refresh_token grant). Issues RS256 JWTs
with an x5c header the registry validates against its rootcertbundle.
Usage: token_server.py PORT KEY.pem CERT.pem USERS(user:pass,…) [--generous] [--no-post] [--expires N] [--refresh TOKEN:USER]
GET /stats returns request counters as JSON.
"""

import base64
import json
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

port, key_path, cert_path, users_arg = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
flags = sys.argv[5:]
GENEROUS = "--generous" in flags
NO_POST = "--no-post" in flags
EXPIRES = int(flags[flags.index("--expires") + 1]) if "--expires" in flags else 300
USERS = dict(u.split(":", 1) for u in users_arg.split(",") if u)
REFRESH = dict(f.split(":", 1) for f in (flags[i + 1] for i, x in enumerate(flags) if x == "--refresh"))
STATS = {"get": 0, "post": 0, "denied": 0}

with open(key_path, "rb") as f:
    KEY = serialization.load_pem_private_key(f.read(), password=None)
with open(cert_path, "rb") as f:
    CERT = x509.load_pem_x509_certificate(f.read())
X5C = base64.b64encode(CERT.public_bytes(serialization.Encoding.DER)).decode()


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def parse_scope(s):
    typ, rest = s.split(":", 1)
    name, actions = rest.rsplit(":", 1)
    return {"type": typ, "name": name, "actions": [a for a in actions.split(",") if a]}


def issue(user, service, scopes):
    now = int(time.time())
    access = []
    for s in scopes:
        for part in s.split(" "):
            if not part:
                continue
            sc = parse_scope(part)
            if user is None and not GENEROUS:
                sc["actions"] = []
            access.append(sc)
    header = {"alg": "RS256", "typ": "JWT", "x5c": [X5C]}
    claims = {"iss": "test-issuer", "sub": user or "", "aud": service, "exp": now + EXPIRES, "nbf": now - 10,
              "iat": now, "jti": uuid.uuid4().hex, "access": access}
    signing = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    sig = KEY.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
    tok = signing + "." + b64url(sig)
    return {"token": tok, "access_token": tok, "expires_in": EXPIRES,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}


class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def basic_user(self):
        h = self.headers.get("Authorization", "")
        if not h.startswith("Basic "):
            return None, False
        u, _, p = base64.b64decode(h[6:]).decode().partition(":")
        return u, USERS.get(u) == p

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/stats":
            return self.reply(200, STATS)
        STATS["get"] += 1
        q = parse_qs(url.query)
        user, ok = self.basic_user()
        if user is not None and not ok:
            STATS["denied"] += 1
            return self.reply(401, {"errors": [{"code": "UNAUTHORIZED"}]})
        self.reply(200, issue(user, q.get("service", [""])[0], q.get("scope", [])))

    def do_POST(self):
        if NO_POST:
            return self.reply(404, {"error": "not found"})
        STATS["post"] += 1
        n = int(self.headers.get("Content-Length", "0"))
        form = parse_qs(self.rfile.read(n).decode())
        g = form.get("grant_type", [""])[0]
        user = None
        if g == "password":
            user = form.get("username", [""])[0]
            if USERS.get(user) != form.get("password", [""])[0]:
                STATS["denied"] += 1
                return self.reply(401, {"error": "invalid_grant"})
        elif g == "refresh_token":
            user = REFRESH.get(form.get("refresh_token", [""])[0])
            if user is None:
                STATS["denied"] += 1
                return self.reply(401, {"error": "invalid_grant"})
        body = issue(user, form.get("service", [""])[0], form.get("scope", []))
        if form.get("access_type", [""])[0] == "offline":
            rt = uuid.uuid4().hex
            REFRESH[rt] = user
            body["refresh_token"] = rt
        self.reply(200, body)


ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
