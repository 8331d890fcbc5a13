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

import pymysql
import pytest

from myharness import (AGENT, AGENT_PASSWORD, APPROVER_PASSWORD, OUTSIDER, OUTSIDER_PASSWORD, READER,
                       READER_PASSWORD, SHA2ONLY, SHA2ONLY_PASSWORD, MyGateway, Stack, default_config, launch,
                       native_verifier, read_stack_env, scram_verifier, stack_env_path)
# The fixtures both suites share: binaries, tls_pair, secret files, audit_key, gateway, start_gateway, ...
from gateway_fixtures import (audit_key, binaries, gateway, phigate_still_healthy, redis_secret_file,  # noqa: F401
                              start_gateway, tls_pair, upstream_secret_file)


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
def verifiers():
    return {name: (scram_verifier(pw), native_verifier(pw))
            for name, pw in ((AGENT, AGENT_PASSWORD), (SHA2ONLY, SHA2ONLY_PASSWORD), (OUTSIDER, OUTSIDER_PASSWORD),
                             (READER, READER_PASSWORD))}


@pytest.fixture(scope="session")
def approver_verifier():
    """The SCRAM verifier of the approver harness.APPROVER (password APPROVER_PASSWORD)."""
    return scram_verifier(APPROVER_PASSWORD)


@pytest.fixture(scope="session")
def gateway_maker(tmp_path_factory, binaries, stack, tls_pair, upstream_secret_file, audit_key, verifiers):
    def make(overrides=None, name="phigate", wrapper=None):
        workdir = tmp_path_factory.mktemp(name)
        cfg = default_config(workdir, stack, tls_pair, upstream_secret_file, audit_key, verifiers)
        return launch(MyGateway, workdir, binaries, stack, cfg, overrides, wrapper)
    return make


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
