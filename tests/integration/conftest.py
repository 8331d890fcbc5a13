"""Fixtures for the pgfront integration suite.

Everything runs against real servers: the stack from scripts/stack.sh
(PostgreSQL 15, MariaDB, Redis) and a real phigate binary.  Run the suite with
scripts/run-integration.sh, which starts the stack and points us at it.

  stack           the upstream servers (from <stackdir>/stack.env)
  gateway         one phigate per test module, default configuration
  start_gateway   start a phigate with a special configuration for one test
  psql_direct / psql_via   run psql against the upstream / through a phigate
  assert_serves   check a phigate still answers an ordinary psql query

Every phigate started here is stopped by pid at the end of its scope and must
exit cleanly: a crash, a non-zero exit status or a sanitizer report in its
stderr fails the test (or the module teardown) that was running.
"""

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from harness import (AGENT, AGENT_PASSWORD, APPROVER_PASSWORD, OUTSIDER, OUTSIDER_PASSWORD, REPO,
                     Binaries, Gateway, Stack, TlsPair, _running, audit_keygen, default_config, free_port,
                     read_stack_env, run_psql, scram_verifier, stack_env_path, stop_and_check, deep_merge,
                     write_secret)


# ---------------------------------------------------------------------------
# The stack
# ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def stack():
    path = stack_env_path()
    if not path.exists():
        pytest.exit(f"no stack environment at {path}: run scripts/run-integration.sh "
                    f"(or scripts/stack.sh start and set PHIGATE_STACK_ENV)", returncode=2)
    env = read_stack_env(path)
    return Stack(host=env["STACK_PG_HOST"], pg_port=int(env["STACK_PG_PORT"]), user=env["STACK_PG_USER"],
                 password=env["STACK_PG_PASSWORD"], sockdir=env["STACK_PG_SOCKDIR"],
                 bindir=env["STACK_PG_BINDIR"], admin_user=env["STACK_PG_ADMIN_USER"], env=env)


# ---------------------------------------------------------------------------
# Binaries, TLS pair, SCRAM verifiers, upstream secret
# ---------------------------------------------------------------------------

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
def verifiers(binaries):
    return {AGENT: scram_verifier(binaries, AGENT_PASSWORD),
            OUTSIDER: scram_verifier(binaries, OUTSIDER_PASSWORD)}


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


# ---------------------------------------------------------------------------
# phigate processes
# ---------------------------------------------------------------------------

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


@pytest.fixture(scope="session")
def approver_verifier(binaries):
    """The SCRAM verifier of the approver harness.APPROVER (password APPROVER_PASSWORD)."""
    return scram_verifier(binaries, APPROVER_PASSWORD)


@pytest.fixture(scope="session")
def gateway_maker(tmp_path_factory, binaries, stack, tls_pair, upstream_secret_file, verifiers, audit_key):
    """make(overrides) -> a started Gateway; overrides are deep-merged into default_config
    (a value of None removes a key); wrapper: a command phigate runs under (e.g. prlimit)."""
    def make(overrides=None, name="phigate", wrapper=None):
        workdir = tmp_path_factory.mktemp(name)
        cfg = default_config(workdir, stack, tls_pair, upstream_secret_file, verifiers, audit_key,
                             free_port())
        gw = Gateway(workdir, binaries, stack, deep_merge(cfg, overrides or {}))
        gw.wrapper = list(wrapper or [])
        gw.start()
        _running.append(gw)
        return gw
    return make


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


# ---------------------------------------------------------------------------
# psql
# ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def psql_direct(stack):
    """psql_direct(sql, dbname=...) straight to the upstream PostgreSQL as phigate_app."""
    def run(sql=None, dbname="clinic", **kw):
        return run_psql(stack.bindir, stack.conninfo(dbname), stack.password, sql, **kw)
    return run


@pytest.fixture(scope="session")
def psql_via(stack):
    """psql_via(gw, sql, dbname=...) through a phigate as the test agent."""
    def run(gw, sql=None, dbname="clinic", user=AGENT, password=AGENT_PASSWORD, conn_extra=None, **kw):
        return run_psql(stack.bindir, gw.conninfo(dbname, user=user, **(conn_extra or {})), password, sql, **kw)
    return run


@pytest.fixture(scope="session")
def assert_serves(psql_via):
    """assert_serves(gw): phigate still answers an ordinary psql query."""
    def check(gw):
        r = psql_via(gw, "select 'still serving', count(*) from wards")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "still serving|10"
    return check


@pytest.fixture(scope="session")
def scratch_name():
    """scratch_name('copy') -> a table name unique to this run, for scratch tables in bench."""
    tag = f"{os.getpid()}_{secrets.token_hex(3)}"

    def name(what):
        return f"it_{what}_{tag}"
    return name
