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

import pytest

from gateway_fixtures import (audit_key, audit_pubkey, binaries, gateway,  # noqa: F401
                              phigate_still_healthy, redis_secret_file, start_gateway, tls_pair,
                              upstream_secret_file)
from harness import (AGENT, AGENT_PASSWORD, APPROVER_PASSWORD, OUTSIDER, OUTSIDER_PASSWORD, Gateway, Stack,
                     default_config, free_port, launch, read_stack_env, run_psql, scram_verifier,
                     stack_env_path)


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
def verifiers(binaries):
    return {AGENT: scram_verifier(binaries, AGENT_PASSWORD),
            OUTSIDER: scram_verifier(binaries, OUTSIDER_PASSWORD)}


# ---------------------------------------------------------------------------
# phigate processes
# ---------------------------------------------------------------------------

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
        return launch(Gateway, workdir, binaries, stack, cfg, overrides, wrapper)
    return make


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
