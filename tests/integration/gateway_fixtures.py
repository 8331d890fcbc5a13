"""Fixtures both suites share (tests/integration and tests/mysql import them into their conftest.py):
the binaries, a TLS pair, secret files, the audit key, and phigate processes made by the suite's own
`gateway_maker` fixture (`gateway` per module, `start_gateway` per test, and the health check after
every test).
"""

import os
import subprocess
from pathlib import Path

import pytest

from harness import REPO, Binaries, TlsPair, _running, audit_keygen, stop_and_check, write_secret


@pytest.fixture(scope="session")
def binaries():
    build = Path(os.environ.get("PHIGATE_BUILD", "build"))
    if not build.is_absolute():
        build = REPO / build
    bins = Binaries(build / "phigate", build / "phigatectl")
    for b in (bins.phigate, bins.phigatectl):
        if not os.access(b, os.X_OK):
            pytest.exit(f"{b} is missing: run make (or set PHIGATE_BUILD)", returncode=2)
    return bins


@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory):
    """A self-signed certificate for phigate's client side (CN=localhost)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    out = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                          "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                          "-keyout", str(key), "-out", str(cert)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    key.chmod(0o600)
    return TlsPair(cert, key)


@pytest.fixture(scope="session")
def upstream_secret_file(tmp_path_factory, stack):
    """The upstream password, as phigate reads it: a 0600 file owned by us."""
    d = tmp_path_factory.mktemp("secrets")
    d.chmod(0o700)
    f = d / "pg_phigate_app"
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(stack.password + "\n")
    return f


@pytest.fixture(scope="session")
def audit_key(tmp_path_factory, binaries):
    return audit_keygen(binaries, tmp_path_factory.mktemp("audit-key") / "key")


@pytest.fixture(scope="session")
def audit_pubkey(audit_key):
    """The public half of audit_key, as an auditor gets it (phigatectl audit verify --pubkey)."""
    return audit_key.parent / "audit_ed25519.pub"


@pytest.fixture(scope="session")
def redis_secret_file(tmp_path_factory, stack):
    """The stack's Redis password in a 0600 file (redis.password_file)."""
    d = tmp_path_factory.mktemp("redis-secret")
    d.chmod(0o700)
    return write_secret(d / "redis", stack.env["STACK_REDIS_PASSWORD"])


@pytest.fixture(scope="module")
def gateway(gateway_maker, request):
    """One phigate for the whole test module: the default configuration, merged with the
    module's GATEWAY_CONFIG dict if it has one."""
    gw = gateway_maker(getattr(request.module, "GATEWAY_CONFIG", None),
                       name=request.module.__name__.rsplit(".", 1)[-1])
    yield gw
    stop_and_check(gw)


@pytest.fixture
def start_gateway(gateway_maker):
    """For tests that need a special configuration: start_gateway({...overrides...}, name=, wrapper=)."""
    started = []

    def start(overrides=None, **kw):
        gw = gateway_maker(overrides, name=kw.pop("name", "special"), **kw)
        started.append(gw)
        return gw
    yield start
    for gw in started:
        stop_and_check(gw)


@pytest.fixture(autouse=True)
def phigate_still_healthy():
    """After every test: every phigate that should be running still is, and no sanitizer spoke."""
    yield
    for gw in list(_running):
        problems = gw.health_problems()
        if problems:
            _running.remove(gw)
            gw.stopped = True
            pytest.fail("; ".join(problems) + " during this test\n" + gw.diagnostics(), pytrace=False)
