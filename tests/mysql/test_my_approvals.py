"""Approvals through myfront and the stack's real Redis: an unscoped read of a PHI table waits while a
human decides it with `phigatectl approvals` against phigate's admin API (the same queue, request and
audit records as pgfront's, tests/integration/test_approvals.py).

approve -> pymysql and the mariadb client get masked rows, the audit ties the statement to the approval;
deny -> ERR with the approver's reason; timeout -> ERR naming the request, and a retry after approval
passes; a client that disconnects withdraws its request; an unreachable Redis -> a clear error while
other statements keep working; a held COM_STMT_PREPARE runs once approved.
"""

import os
import secrets
import subprocess
import threading
import time

import pymysql
import pytest

from myharness import (AGENT, AGENT_PASSWORD, APPROVER, AgentThread, approvals_config_maker, approvals_ctl,
                       approvals_overrides, assert_masked, clean_env, decide_held, free_port, run_mariadb,
                       run_prepared, show, stop_and_check, wait_audit, wait_for_request)

KEY_PREFIX = f"phigate-my-{os.getpid()}-{secrets.token_hex(3)}:"
WAIT_MS = 30000
AFTER = "select 'after', count(*) from wards"


@pytest.fixture(scope="module")
def approvals_config(stack, redis_secret_file, approver_verifier):
    return approvals_config_maker(stack, redis_secret_file, {APPROVER: approver_verifier}, KEY_PREFIX, WAIT_MS)


@pytest.fixture(scope="module")
def agw(gateway_maker, approvals_config):
    gw = gateway_maker(approvals_config(), name="my_approvals")
    yield gw
    stop_and_check(gw)


@pytest.fixture(scope="module")
def raw_patients(my_direct):
    """Every raw first_name and ssn, read straight from MariaDB (never through phigate)."""
    with my_direct() as conn, conn.cursor() as cur:
        cur.execute("SELECT first_name, ssn FROM patients")
        rows = cur.fetchall()
    assert len(rows) >= 100
    return rows


class Agent(AgentThread):
    """A pymysql client running one statement through phigate in the background, then AFTER."""

    def session(self):
        try:
            with pymysql.connect(host=self.gw.host, port=self.gw.port, user=AGENT, password=AGENT_PASSWORD,
                                 database="clinic", connect_timeout=10, read_timeout=60) as conn:
                with conn.cursor() as cur:
                    try:
                        cur.execute(self.sql)
                        self.rows = cur.fetchall()
                    except pymysql.MySQLError as e:
                        self.error = e
                    # The session survives whatever became of the held statement.
                    cur.execute(AFTER)
                    self.after = cur.fetchone()
        except pymysql.MySQLError as e:
            if self.error is None:
                self.error = e

    def describe(self):
        return f"error {self.error!r}" if self.error is not None else f"{len(self.rows)} rows"


class Background(threading.Thread):
    """Any callable in the background; its return value in .result."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.result = fn, None

    def run(self):
        self.result = self.fn()


def approve(binaries, gw, rid, reason="ok", *extra):
    r = approvals_ctl(binaries, gw, "approve", rid, "--reason", reason, *extra)
    assert r.returncode == 0, r.stdout + r.stderr


def test_held_read_approved_with_the_cli_returns_masked_rows_to_pymysql(agw, binaries, raw_patients):
    sql = "SELECT first_name, ssn FROM patients"
    agent = Agent(agw, sql)
    agent.start()
    req = wait_for_request(binaries, agw, sql, agent=agent)
    assert req["status"] == "pending" and req["waiting"] is True
    assert req["protocol"] == "mysql" and req["database"] == "clinic", req
    assert req["rule"] == "phi.unscoped_read" and "patients" in req["reason"], req
    approve(binaries, agw, req["id"], "quarterly audit sample")

    agent.outcome()
    assert agent.error is None, agent.describe() + "\n" + agw.diagnostics()
    assert_masked(agent.rows, raw_patients)
    assert agent.after == ("after", 10)
    assert show(binaries, agw, req["id"])["decided_by"] == APPROVER

    # The audit ties the statement to the approval, its approver and its result.
    stmts = wait_audit(agw, lambda x: x["type"] == "statement" and x.get("approval") == req["id"])
    assert stmts and stmts[0]["text"] == sql and stmts[0]["decision"] in ("rewrite", "allow"), stmts
    assert "patients" in stmts[0].get("tables", []), stmts
    ev = wait_audit(agw, lambda x: x["type"] == "approval" and x.get("approval") == req["id"])
    assert ev and ev[0]["event"] == "approved" and ev[0]["approver"] == APPROVER, ev
    res = wait_audit(agw, lambda x: x["type"] == "result" and x["session"] == stmts[0]["session"]
                     and x["stmt"] == stmts[0]["stmt"])
    assert res and res[0]["rows"] == len(raw_patients), res


def test_held_read_approved_returns_masked_rows_to_the_mariadb_client(agw, binaries, raw_patients):
    sql = "SELECT first_name, ssn FROM patients AS p_cli"
    run = Background(lambda: run_mariadb(agw.host, agw.port, AGENT, AGENT_PASSWORD, sql + "; " + AFTER,
                                         args=["--skip-ssl", "-N"], timeout=60))
    run.start()
    req = wait_for_request(binaries, agw, sql, agent=run)
    approve(binaries, agw, req["id"], "for the mariadb client")
    run.join(40)
    out = run.result
    assert out is not None and out.returncode == 0, (out, agw.diagnostics())
    lines = out.stdout.splitlines()
    rows = [tuple(line.split("\t")) for line in lines[:-1]]
    assert_masked(rows, raw_patients)
    assert lines[-1] == "after\t10"


def test_held_read_denied_fails_with_the_approvers_reason(agw, binaries):
    sql = "SELECT first_name AS fn_denied, ssn FROM patients"
    agent = Agent(agw, sql)
    reason = "use a WHERE clause on patients.id"
    req = decide_held(binaries, agw, agent, "deny", reason)
    assert agent.rows is None and agent.error is not None, agent.describe()
    code, msg = agent.error.args
    assert code == 1142, agent.describe()
    assert reason in msg and APPROVER in msg and req["id"] in msg, msg
    assert agent.after == ("after", 10), "the session should survive a denied statement"
    ev = wait_audit(agw, lambda x: x["type"] == "approval" and x.get("approval") == req["id"])
    assert ev and ev[0]["event"] == "denied" and ev[0]["reason"] == reason, ev
    stmts = wait_audit(agw, lambda x: x["type"] == "statement" and x.get("text") == sql)
    assert stmts and stmts[0]["decision"] == "hold" and not stmts[0].get("approval"), stmts


def test_timeout_names_the_request_and_a_retry_after_approval_passes(start_gateway, approvals_config, binaries,
                                                                     raw_patients):
    gw = start_gateway(approvals_config(wait_ms=2000))
    sql = "SELECT first_name AS fn_timeout, ssn FROM patients"
    agent = Agent(gw, sql)
    agent.start()
    agent.outcome(timeout=20)
    assert agent.error is not None, agent.describe()
    code, msg = agent.error.args
    assert code == 1317, agent.describe()
    assert 1.5 <= agent.elapsed < 10, agent.elapsed
    req = wait_for_request(binaries, gw, sql)
    assert req["id"] in msg and "retry" in msg, msg
    assert req["waiting"] is False, req
    assert agent.after == ("after", 10)

    approve(binaries, gw, req["id"], "ok on retry")
    retry = Agent(gw, sql)
    retry.start()
    retry.outcome(timeout=20)
    assert retry.error is None, retry.describe() + "\n" + gw.diagnostics()
    assert retry.elapsed < 1.9, f"the retry waited {retry.elapsed:.1f} s although an approval was there"
    assert_masked(retry.rows, raw_patients)
    ev = wait_audit(gw, lambda x: x["type"] == "approval" and x.get("event") == "timeout")
    assert ev and ev[0]["approval"] == req["id"], ev


def test_client_disconnect_withdraws_the_request(agw, binaries):
    sql = "SELECT first_name AS fn_gone, ssn FROM patients"
    proc = subprocess.Popen(["mariadb", "--no-defaults", "-h", agw.host, "-P", str(agw.port), "-u", AGENT,
                             "--skip-ssl", "--database=clinic", "-e", sql], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=clean_env(MYSQL_PWD=AGENT_PASSWORD))
    try:
        req = wait_for_request(binaries, agw, sql)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while show(binaries, agw, req["id"])["status"] != "withdrawn" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert show(binaries, agw, req["id"])["status"] == "withdrawn"
    ev = wait_audit(agw, lambda x: x["type"] == "approval" and x.get("event") == "withdrawn")
    assert ev and ev[0]["approval"] == req["id"], ev


def test_unreachable_redis_is_a_clear_error_and_other_statements_work(start_gateway, stack, redis_secret_file,
                                                                       approver_verifier, my_via):
    overrides = approvals_overrides(stack, redis_secret_file, {APPROVER: approver_verifier}, wait_ms=5000,
                                    key_prefix=KEY_PREFIX)
    overrides["redis"]["port"] = free_port()  # nothing listens there
    gw = start_gateway(overrides)
    with my_via(gw) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.MySQLError) as e:
            cur.execute("SELECT first_name AS fn_noredis, ssn FROM patients")
        code, msg = e.value.args
        assert code == 1105 and "approval queue is unavailable" in msg, msg
        cur.execute(AFTER)
        assert cur.fetchone() == ("after", 10)


def test_held_prepare_runs_once_approved(agw, binaries, raw_patients):
    sql = "SELECT first_name AS fn_prepared, ssn FROM patients"
    run = Background(lambda: run_prepared(agw.host, agw.port, AGENT, AGENT_PASSWORD, [[sql], [AFTER]]))
    run.start()
    req = wait_for_request(binaries, agw, sql, agent=run)
    approve(binaries, agw, req["id"], "prepared")
    run.join(40)
    assert run.result is not None, agw.diagnostics()
    held, after = run.result
    assert "error" not in held, held
    assert_masked([tuple(r) for r in held["rows"]], raw_patients)
    assert after["rows"] == [["after", 10]]
    stmts = wait_audit(agw, lambda x: x["type"] == "statement" and x.get("approval") == req["id"])
    assert stmts and stmts[0]["text"] == sql, stmts
