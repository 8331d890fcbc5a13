"""A local OIDC issuer for the token-login tests: signing keys (RSA, EC P-256,
Ed25519) made with python3-cryptography, tokens signed with python3-jwt, the
JWKS written to a file and (https_jwks) served over HTTPS on loopback by a
small http.server with a certificate from a test CA.

Hostile tokens (alg none, HS256 keyed with the RSA public key PEM) are built
by hand: PyJWT rightly refuses to make them."""

import base64
import hashlib
import hmac
import http.server
import json
import os
import ssl
import subprocess
import threading
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

AUDIENCE = "phigate-test"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Key:
    def __init__(self, alg, kid):
        self.alg, self.kid = alg, kid
        if alg == "RS256":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
        else:
            self.private = ed25519.Ed25519PrivateKey.generate()
        self.public = self.private.public_key()

    def jwk(self):
        if self.alg == "RS256":
            n = self.public.public_numbers()
            return {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                    "n": b64url(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")),
                    "e": b64url(n.e.to_bytes(3, "big"))}
        if self.alg == "ES256":
            n = self.public.public_numbers()
            return {"kty": "EC", "kid": self.kid, "crv": "P-256", "use": "sig",
                    "x": b64url(n.x.to_bytes(32, "big")), "y": b64url(n.y.to_bytes(32, "big"))}
        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "kid": self.kid, "crv": "Ed25519", "x": b64url(raw)}

    def public_pem(self):
        return self.public.public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)


class Issuer:
    def __init__(self, url="https://issuer.test.invalid", audience=AUDIENCE):
        self.url, self.audience = url, audience
        self.keys = {alg: Key(alg, f"{alg.lower()}-1") for alg in ("RS256", "ES256", "EdDSA")}
        self.published = list(self.keys.values())

    def jwks(self):
        return {"keys": [k.jwk() for k in self.published]}

    def write_jwks(self, path):
        tmp = Path(str(path) + ".tmp")
        tmp.write_text(json.dumps(self.jwks()))
        os.replace(tmp, path)
        return Path(path)

    def claims(self, sub, **extra):
        now = int(time.time())
        c = {"iss": self.url, "aud": self.audience, "sub": sub, "iat": now, "nbf": now - 5, "exp": now + 300}
        c.update(extra)
        return {k: v for k, v in c.items() if v is not None}

    def token(self, sub, alg="RS256", key=None, headers=None, **claims):
        key = key or self.keys[alg]
        return jwt.encode(self.claims(sub, **claims), key.private, algorithm=alg,
                          headers={"kid": key.kid, **(headers or {})})

    def unsigned_token(self, sub, **claims):
        head = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        body = b64url(json.dumps(self.claims(sub, **claims)).encode())
        return f"{head}.{body}."

    def hs256_with_public_key(self, sub, **claims):
        """The classic algorithm-confusion token: HMAC keyed with the RSA public key PEM."""
        rsa_key = self.keys["RS256"]
        head = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid}).encode())
        body = b64url(json.dumps(self.claims(sub, **claims)).encode())
        mac = hmac.new(rsa_key.public_pem(), f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{b64url(mac)}"


def tamper_signature(token):
    """The same token with one signature byte changed (a character in the middle, so
    no padding bits are involved)."""
    head, body, sig = token.split(".")
    i = len(sig) // 2
    sig = sig[:i] + ("A" if sig[i] != "A" else "B") + sig[i + 1:]
    return f"{head}.{body}.{sig}"


# ---------------------------------------------------------------------------
# JWKS over HTTPS
# ---------------------------------------------------------------------------

def make_test_ca(folder):
    """A CA and a server certificate for 127.0.0.1 signed by it; returns (ca_cert, cert, key)."""
    folder = Path(folder)
    ca_key, ca_cert = folder / "ca.key", folder / "ca.pem"
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.pem"
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    for cmd in (
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-days", "2", "-subj", "/CN=phigate test issuer CA", "-keyout", ca_key, "-out", ca_cert],
        ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
         "-days", "2", "-extfile", ext, "-out", cert],
    ):
        out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    return ca_cert, cert, key


class JwksServer:
    """Serves issuer.jwks() at /jwks.json over HTTPS; counts the requests it answered."""

    def __init__(self, issuer, cert, key):
        self.issuer = issuer
        self.requests = 0
        self.delay = 0.0  # seconds each answer waits: a slow issuer
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/jwks.json":
                    self.send_error(404)
                    return
                server.requests += 1
                time.sleep(server.delay)
                body = json.dumps(server.issuer.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"https://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
