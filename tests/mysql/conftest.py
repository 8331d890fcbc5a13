"""Fixtures for the myfront suite: real MariaDB from scripts/stack.sh, real
clients (mariadb, pymysql, perl DBD::MariaDB), a real phigate.

    PHIGATE_PORT_BASE=57000 scripts/stack.sh start
    PHIGATE_TEST_PORT_BASE=57000 /usr/bin/python3 -m pytest tests/mysql
    (PHIGATE_BUILD=build-asan for the sanitizer build)

  stack             MariaDB coordinates (from <stackdir>/stack.env)
  gateway           one phigate per test module (its GATEWAY_CONFIG merged in)
  start_gateway     a phigate with a special configuration for one test
  my_direct / my_via    pymysql connections straight to MariaDB / through phigate

Every phigate started here must stay alive with no sanitizer report, and exit
0 on SIGTERM.
"""

import os
import subprocess
from pathlib import Path

import pymysql
import pytest

from myharness import (APPROVER_PASSWORD, write_secret)
from myharness import (AGENT, AGENT_PASSWORD, OUTSIDER, OUTSIDER_PASSWORD, READER, READER_PASSWORD, REPO, SHA2ONLY,
                       SHA2ONLY_PASSWORD, Binaries, MyGateway, Stack, _running, deep_merge, default_config,
                       native_verifier, read_stack_env, scram_verifier, stack_env_path, stop_and_check)


@pytest.fixture(scope="session")
def stack():
    path = stack_env_path()
    if not path.exists():
        pytest.exit(f"no stack environment at {path}: start it with scripts/stack.sh start "
                    f"(PHIGATE_PORT_BASE / PHIGATE_TEST_PORT_BASE) or set PHIGATE_STACK_ENV", returncode=2)
    env = read_stack_env(path)
    return Stack(host=env["STACK_MY_HOST"], port=int(env["STACK_MY_PORT"]), user=env["STACK_MY_USER"],
                 password=env["STACK_MY_PASSWORD"], socket=env["STACK_MY_SOCKET"], env=env)


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
def verifiers():
    return {name: (scram_verifier(pw), native_verifier(pw))
            for name, pw in ((AGENT, AGENT_PASSWORD), (SHA2ONLY, SHA2ONLY_PASSWORD), (OUTSIDER, OUTSIDER_PASSWORD),
                             (READER, READER_PASSWORD))}


@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    out = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                          "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout",
                          str(key), "-out", str(cert)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    key.chmod(0o600)
    return cert, key


@pytest.fixture(scope="session")
def audit_key(tmp_path_factory):
    d = tmp_path_factory.mktemp("auditkey")
    key = d / "audit.key"
    out = subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    key.chmod(0o600)
    return key


@pytest.fixture(scope="session")
def upstream_secret_file(tmp_path_factory, stack):
    d = tmp_path_factory.mktemp("secrets")
    d.chmod(0o700)
    f = d / "my_phigate_app"
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(stack.password + "\n")
    return f


@pytest.fixture(scope="session")
def redis_secret_file(tmp_path_factory, stack):
    """The stack's Redis password in a 0600 file (redis.password_file)."""
    return write_secret(tmp_path_factory.mktemp("redis-secret") / "redis", stack.env["STACK_REDIS_PASSWORD"])


@pytest.fixture(scope="session")
def approver_verifier():
    """The SCRAM verifier of the approver harness.APPROVER (password APPROVER_PASSWORD)."""
    return scram_verifier(APPROVER_PASSWORD)


@pytest.fixture(scope="session")
def gateway_maker(tmp_path_factory, binaries, stack, tls_pair, upstream_secret_file, audit_key, verifiers):
    def make(overrides=None, name="phigate"):
        workdir = tmp_path_factory.mktemp(name)
        cfg = default_config(workdir, stack, tls_pair, upstream_secret_file, audit_key, verifiers)
        gw = MyGateway(workdir, binaries, stack, deep_merge(cfg, overrides or {}))
        gw.start()
        _running.append(gw)
        return gw
    return make


@pytest.fixture(scope="module")
def gateway(gateway_maker, request):
    gw = gateway_maker(getattr(request.module, "GATEWAY_CONFIG", None),
                       name=request.module.__name__.rsplit(".", 1)[-1])
    yield gw
    stop_and_check(gw)


@pytest.fixture
def start_gateway(gateway_maker):
    started = []

    def start(overrides=None):
        gw = gateway_maker(overrides, name="special")
        started.append(gw)
        return gw
    yield start
    for gw in started:
        stop_and_check(gw)


@pytest.fixture(autouse=True)
def phigate_still_healthy():
    yield
    for gw in list(_running):
        problems = gw.health_problems()
        if problems:
            _running.remove(gw)
            gw.stopped = True
            pytest.fail("; ".join(problems) + " during this test\n" + gw.diagnostics(), pytrace=False)


@pytest.fixture(scope="session")
def my_direct(stack):
    """my_direct(db=...) -> a pymysql connection straight to MariaDB as phigate_app."""
    def connect(db="clinic", **kw):
        return pymysql.connect(host=stack.host, port=stack.port, user=stack.user, password=stack.password,
                               database=db, connect_timeout=10, **kw)
    return connect


@pytest.fixture(scope="session")
def my_via():
    """my_via(gw, db=..., user=..., password=...) -> a pymysql connection through phigate."""
    def connect(gw, db="clinic", user=AGENT, password=AGENT_PASSWORD, **kw):
        return pymysql.connect(host=gw.host, port=gw.port, user=user, password=password, database=db,
                               connect_timeout=10, read_timeout=60, **kw)
    return connect


@pytest.fixture(scope="session")
def scratch_name():
    import secrets as _s
    tag = f"{os.getpid()}_{_s.token_hex(3)}"
    return lambda what: f"my_{what}_{tag}"
