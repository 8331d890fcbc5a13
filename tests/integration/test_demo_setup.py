"""The setup `make demo` runs (scripts/gen-config.sh) and the demo's token script (scripts/demo-token.sh) do what
README.md says: the token agent and the certificate agent log in, are bound to their role, get PHI masked, and the
upstream sees their identity."""
import os
import socket
import subprocess
import time

import pytest

from harness import REPO, free_port


def wait_listening(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"phigate exited with status {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory, binaries, stack):
    folder = tmp_path_factory.mktemp("demo-setup")
    pg_port, admin_port, my_port = free_port(), free_port(), free_port()
    build = os.path.relpath(binaries.phigatectl.parent, REPO)  # gen-config takes it relative to the repository
    out = subprocess.run([str(REPO / "scripts/gen-config.sh"), str(folder), str(pg_port), str(admin_port),
                          str(my_port)], env=dict(os.environ, PHIGATE_BUILD=build), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    with open(folder / "stderr.txt", "w") as err:
        proc = subprocess.Popen([str(binaries.phigate), "--config", str(folder / "phigate.yaml")], stderr=err)
    try:
        wait_listening(pg_port, proc)
        yield folder, pg_port
    finally:
        proc.terminate()
        proc.wait(20)


def demo_token(folder, *args):
    out = subprocess.run([str(REPO / "scripts/demo-token.sh"), "--dir", str(folder), *args], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def psql(conninfo, sql, password=None):
    env = dict(os.environ, PGCONNECT_TIMEOUT="10")
    env.pop("PGPASSWORD", None)
    if password is not None:
        env["PGPASSWORD"] = password
    return subprocess.run(["psql", "-X", "-A", "-t", conninfo, "-c", sql], env=env, capture_output=True, text=True,
                          timeout=60)


SQL = "SELECT ssn FROM patients WHERE id = 3"


def test_token_agent_logs_in_with_the_demo_token_and_gets_masked_rows(demo):
    folder, port = demo
    token = demo_token(folder)
    assert token.count(".") == 2
    conninfo = f"host=127.0.0.1 port={port} user=demo_token_agent dbname=clinic sslmode=require"
    out = psql(conninfo, SQL + "; SHOW application_name", password=token)
    assert out.returncode == 0, out.stderr
    ssn, app = out.stdout.split()
    assert ssn.startswith("***-**-") and len(ssn) == 11, ssn
    assert app.startswith("phigate/demo_token_agent/"), app


def test_a_token_naming_a_role_the_issuer_may_not_grant_is_refused(demo):
    folder, port = demo
    conninfo = f"host=127.0.0.1 port={port} user=demo_token_agent dbname=clinic sslmode=require"
    out = psql(conninfo, "SELECT 1", password=demo_token(folder, "--role", "superuser"))
    assert out.returncode != 0
    assert 'token authentication failed for user "demo_token_agent"' in out.stderr, out.stderr


def test_the_demo_token_is_refused_without_tls(demo):
    folder, port = demo
    conninfo = f"host=127.0.0.1 port={port} user=demo_token_agent dbname=clinic sslmode=disable"
    out = psql(conninfo, "SELECT 1", password=demo_token(folder))
    assert out.returncode != 0 and "token login requires TLS" in out.stderr, out.stderr


def test_certificate_agent_logs_in_with_the_demo_certificate(demo):
    folder, port = demo
    pki = folder / "pki"
    conninfo = (f"host=127.0.0.1 port={port} user=demo_cert_agent dbname=clinic sslmode=require "
                f"sslcert={pki / 'demo_cert_agent.crt'} sslkey={pki / 'demo_cert_agent.key'}")
    out = psql(conninfo, SQL)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("***-**-"), out.stdout


def test_certificate_agent_without_its_certificate_is_refused(demo):
    folder, port = demo
    conninfo = f"host=127.0.0.1 port={port} user=demo_cert_agent dbname=clinic sslmode=require sslcert=/nonexistent"
    out = psql(conninfo, SQL)
    assert out.returncode != 0
    assert "no client certificate was presented" in out.stderr, out.stderr
