"""The PostgreSQL JDBC driver through phigate: plain and TLS, with server-prepared statements."""

import os
import subprocess

import pytest

from harness import AGENT, AGENT_PASSWORD, clean_env

JAR = "/usr/share/java/postgresql.jar"
SOURCE = os.path.join(os.path.dirname(__file__), "java", "JdbcProbe.java")


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """JdbcProbe.java compiled now into a temporary folder; returns run(url, user, password)."""
    classes = tmp_path_factory.mktemp("jdbc")
    out = subprocess.run(["javac", "-cp", JAR, "-d", str(classes), SOURCE], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr

    def run(url, user, password):
        r = subprocess.run(["java", "-cp", f"{classes}:{JAR}", "JdbcProbe", url, user], capture_output=True,
                           text=True, timeout=60, env=clean_env(PROBE_PASSWORD=password))
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout
    return run


@pytest.fixture(scope="module")
def direct_output(probe, stack):
    return probe(f"jdbc:postgresql://{stack.host}:{stack.pg_port}/clinic?sslmode=disable", stack.user,
                 stack.password)


@pytest.mark.parametrize("params", ["sslmode=disable", "ssl=true&sslmode=require"])
def test_jdbc_prepared_statements_match_direct(gateway, probe, direct_output, params):
    out = probe(f"jdbc:postgresql://{gateway.host}:{gateway.port}/clinic?{params}", AGENT, AGENT_PASSWORD)
    assert out == direct_output
    # The driver did switch to server-side prepared statements on the later runs.
    assert "server-prepared=true" in out and "server-prepared=false" in out
    assert out.rstrip().endswith("done")
