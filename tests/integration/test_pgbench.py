"""pgbench select-only through phigate in each query mode: no failed transactions."""

import re
import subprocess

import pytest

from harness import AGENT, AGENT_PASSWORD, clean_env


@pytest.fixture(scope="module")
def bench_initialised(stack):
    """pgbench tables created directly upstream (scale 1), as phigate_app in the bench database."""
    out = subprocess.run([f"{stack.bindir}/pgbench", "-i", "-q", "-s", "1", "-h", stack.host,
                          "-p", str(stack.pg_port), "-U", stack.user, "bench"],
                         capture_output=True, text=True, timeout=120, env=clean_env(PGPASSWORD=stack.password))
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_select_only_has_no_failed_transactions(gateway, stack, bench_initialised, mode):
    out = subprocess.run([f"{stack.bindir}/pgbench", "-S", "-M", mode, "-T", "2", "-c", "4", "-j", "2",
                          "-h", gateway.host, "-p", str(gateway.port), "-U", AGENT, "bench"],
                         capture_output=True, text=True, timeout=60, env=clean_env(PGPASSWORD=AGENT_PASSWORD))
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    processed = int(re.search(r"number of transactions actually processed: (\d+)", report).group(1))
    failed = int(re.search(r"number of failed transactions: (\d+)", report).group(1))
    assert failed == 0, report
    assert processed > 100, report
    assert f"query mode: {mode}" in report
