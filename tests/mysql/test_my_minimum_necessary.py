"""Minimum necessary (issue 5 item 6) through myfront, the stack's real MariaDB and Redis.

A role with `estimate_row_limit`: a scoped PHI read whose estimate (EXPLAIN FORMAT=JSON, run by phigate on
the session's own upstream connection, its answer never relayed) is small runs at once; a large one is held
and, approved with `phigatectl approvals`, returns masked rows; a constant LIMIT caps the estimate
(MariaDB's EXPLAIN ignores it); a COM_STMT_PREPARE with parameters cannot be estimated and is held.

A role with `phi_row_budget`: PHI reads run until the identity's rows in the window are used up, then the
next is held; the window ends and reads run again; non-PHI reads are never estimated or counted; rows read
through the PostgreSQL front count against the same identity's budget; with Redis stopped a budgeted PHI
read is refused with a clear error while other statements work.  Audit records carry `min_necessary` and
the log verifies.
"""

import os
import secrets
import signal
import struct
import threading
import time

import psycopg
import pymysql
import pytest

from gateway_fixtures import audit_pubkey  # noqa: F401
from harness import run_ctl
from myharness import (APPROVER, approvals_ctl, approvals_overrides, native_verifier, run_mariadb,
                       run_prepared, scram_verifier, stop_and_check, wait_for_request, write_secret)
from mywire import COM_STMT_EXECUTE, MyClient, MyError
# The PostgreSQL suite's helpers for the live audit log and masked patients rows.
from test_minimum_necessary import assert_masked, audit_records, rds, statement_record  # noqa: F401
from test_minimum_necessary import Agent as PgAgent
from test_minimum_necessary import budget_used as pg_budget_used, wait_window_closed as pg_wait_window_closed
from test_approvals import redis_restarted_afterwards, redis_running, start_redis  # noqa: F401

KEY_PREFIX = f"phigate-mymn-{os.getpid()}-{secrets.token_hex(3)}:"
ESTIMATOR, ESTIMATOR_PASSWORD = "my_est", "est-" + secrets.token_hex(10)
BUDGETED, BUDGETED_PASSWORD = "my_bud", "bud-" + secrets.token_hex(10)
ESTIMATE_LIMIT = 20
BUDGET_ROWS = 12
WINDOW_S = 3


@pytest.fixture(scope="module")
def pg_secret_file(tmp_path_factory, stack):
    return write_secret(tmp_path_factory.mktemp("pgsecret") / "pg", stack.env["STACK_PG_PASSWORD"])


@pytest.fixture(scope="module")
def minnec_config(stack, redis_secret_file, approver_verifier, pg_secret_file):
    overrides = approvals_overrides(stack, redis_secret_file, {APPROVER: approver_verifier}, wait_ms=30000,
                                    key_prefix=KEY_PREFIX)
    overrides["upstreams"] = {"pgclinic": {"protocol": "postgres", "host": stack.env["STACK_PG_HOST"],
                                           "port": int(stack.env["STACK_PG_PORT"]), "database": "clinic",
                                           "user": stack.env["STACK_PG_USER"],
                                           "password_file": str(pg_secret_file), "tls": "disable"}}
    overrides["roles"] = {
        "estimator": {"upstreams": ["clinic"], "estimate_row_limit": ESTIMATE_LIMIT},
        "budgeted": {"upstreams": ["clinic", "pgclinic"],
                     "phi_row_budget": {"rows": BUDGET_ROWS, "window": f"{WINDOW_S}s"}},
    }
    overrides["identities"] = {
        ESTIMATOR: {"scram": scram_verifier(ESTIMATOR_PASSWORD), "mysql_native": native_verifier(ESTIMATOR_PASSWORD),
                    "role": "estimator"},
        BUDGETED: {"scram": scram_verifier(BUDGETED_PASSWORD), "mysql_native": native_verifier(BUDGETED_PASSWORD),
                   "role": "budgeted"},
    }
    return overrides


@pytest.fixture(scope="module")
def mgw(gateway_maker, minnec_config):
    gw = gateway_maker(minnec_config, name="my_minnec")
    yield gw
    stop_and_check(gw)


@pytest.fixture(scope="module")
def raw_patients(my_direct):
    with my_direct() as conn, conn.cursor() as cur:
        cur.execute("SELECT id, first_name, ssn FROM patients")
        return {row[0]: row[1:] for row in cur.fetchall()}


def connect(gw, user, password):
    return pymysql.connect(host=gw.host, port=gw.port, user=user, password=password, database="clinic",
                           connect_timeout=10, read_timeout=60, autocommit=True)


def est(gw):
    return connect(gw, ESTIMATOR, ESTIMATOR_PASSWORD)


def bud(gw):
    return connect(gw, BUDGETED, BUDGETED_PASSWORD)


def query(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def decide(binaries, gw, agent, req, verb, reason):
    r = approvals_ctl(binaries, gw, verb, req["id"], "--reason", reason)
    assert r.returncode == 0, r.stdout + r.stderr
    return agent.outcome()


class Agent(PgAgent):
    """The PostgreSQL suite's background agent (outcome()), speaking pymysql: one statement (it may wait
    for an approval), then a non-PHI read."""

    def run(self):
        try:
            with self.make_conn() as conn:
                try:
                    self.rows = query(conn, self.sql)
                except pymysql.MySQLError as e:
                    self.error = e
                self.after = query(conn, "SELECT count(*) FROM wards")[0]
        except pymysql.MySQLError as e:
            self.error = self.error or e

    def describe(self):
        return f"error {self.error!r}" if self.error is not None else f"{len(self.rows or ())} rows"


# ---------------------------------------------------------------------------
# Estimates
# ---------------------------------------------------------------------------

def test_small_estimate_runs_at_once(mgw, raw_patients):
    sql = "SELECT first_name, ssn FROM patients WHERE id = 7"
    with est(mgw) as conn:
        t0 = time.monotonic()
        rows = query(conn, sql)
        assert time.monotonic() - t0 < 5
        assert len(rows) == 1
        assert_masked(rows, raw_patients)
        assert rows[0][1].endswith(raw_patients[7][1][-4:])
        # The EXPLAIN's answer never reached this client: the session is in step.
        assert query(conn, "SELECT 'next'") == (("next",),)
        assert query(conn, "SELECT count(*) FROM wards") == ((10,),)
    rec = statement_record(mgw, sql)
    mn = rec["min_necessary"]
    assert rec["decision"] == "rewrite" and rec["upstream"] is not None, rec
    assert mn["estimate"] == 1 and mn["estimate_limit"] == ESTIMATE_LIMIT and mn["verdict"] == "run", mn
    res = [r for r in audit_records(mgw) if r["type"] == "result" and r["session"] == rec["session"]
           and r["stmt"] == rec["stmt"]]
    assert res and res[0]["rows"] == 1, res  # the EXPLAIN's rows are not the statement's


def test_the_mariadb_client_gets_a_small_read(mgw, raw_patients):
    sql = "SELECT first_name, ssn FROM patients WHERE id = 8"
    out = run_mariadb(mgw.host, mgw.port, ESTIMATOR, ESTIMATOR_PASSWORD, sql + "; SELECT 'after'",
                      args=["--skip-ssl", "-N"])
    assert out.returncode == 0, out.stderr + mgw.diagnostics()
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and lines[1] == "after", lines
    assert_masked([tuple(lines[0].split("\t"))], raw_patients)


def test_limit_caps_the_estimate(mgw, raw_patients):
    """MariaDB's EXPLAIN says 500 rows for LIMIT 5 on 500: the LIMIT caps it, so it runs."""
    sql = "SELECT first_name, ssn FROM patients LIMIT 5"
    with est(mgw) as conn:
        rows = query(conn, sql)
    assert len(rows) == 5
    assert_masked(rows, raw_patients)
    mn = statement_record(mgw, sql)["min_necessary"]
    assert mn["estimate"] == 5 and mn["verdict"] == "run", mn


def test_large_estimate_held_and_approved_returns_masked_rows(mgw, binaries, raw_patients):
    sql = "SELECT first_name, ssn FROM patients LIMIT 90"
    agent = Agent(lambda: est(mgw), sql)
    agent.start()
    req = wait_for_request(binaries, mgw, sql, agent=agent, identity=ESTIMATOR)
    assert req["rule"] == "min_necessary.estimate" and req["protocol"] == "mysql", req
    assert req["reason"] == f"planner estimate 90 rows > limit {ESTIMATE_LIMIT}", req
    time.sleep(0.3)
    assert agent.is_alive(), "the statement should wait for the approval"
    decide(binaries, mgw, agent, req, "approve", "cohort review")
    assert agent.error is None, agent.describe() + mgw.diagnostics()
    assert len(agent.rows) == 90
    assert_masked(agent.rows, raw_patients)
    assert agent.after == (10,)
    rec = statement_record(mgw, sql, lambda r: r.get("approval") == req["id"])
    mn = rec["min_necessary"]
    assert rec["decision"] in ("rewrite", "allow") and rec["upstream"], rec
    assert mn["verdict"] == "hold" and mn["rule"] == "min_necessary.estimate" and mn["estimate"] == 90, mn


def test_large_estimate_denied_is_recorded_as_held(mgw, binaries):
    sql = "SELECT first_name AS fn, ssn FROM patients LIMIT 100"
    agent = Agent(lambda: est(mgw), sql)
    agent.start()
    req = wait_for_request(binaries, mgw, sql, agent=agent, identity=ESTIMATOR)
    assert req["rule"] == "min_necessary.estimate", req
    assert req["reason"] == f"planner estimate 100 rows > limit {ESTIMATE_LIMIT}", req
    decide(binaries, mgw, agent, req, "deny", "too wide")
    assert agent.error is not None and agent.error.args[0] == 1142, agent.describe()
    assert "too wide" in agent.error.args[1]
    assert agent.after == (10,)
    rec = statement_record(mgw, sql)
    assert rec["decision"] == "hold" and rec["upstream"] is None and rec["rule"] == "min_necessary.estimate", rec


def test_prepare_with_parameters_cannot_be_estimated_and_is_held(mgw, binaries, raw_patients):
    sql = "SELECT first_name, ssn FROM patients WHERE id = ?"
    run = []
    t = threading.Thread(target=lambda: run.append(run_prepared(mgw.host, mgw.port, ESTIMATOR, ESTIMATOR_PASSWORD,
                                                                [[sql, 11]])), daemon=True)
    t.start()
    req = wait_for_request(binaries, mgw, sql, identity=ESTIMATOR)
    assert req["rule"] == "min_necessary.no_estimate" and "bind parameters" in req["reason"], req
    r = approvals_ctl(binaries, mgw, "approve", req["id"], "--reason", "one patient")
    assert r.returncode == 0, r.stdout + r.stderr
    t.join(40)
    assert run, mgw.diagnostics()
    (res,) = run[0]
    assert "error" not in res, res
    assert len(res["rows"]) == 1
    assert_masked([tuple(x) for x in res["rows"]], raw_patients)


def test_non_phi_reads_are_not_estimated(mgw):
    with est(mgw) as conn:
        assert query(conn, "SELECT * FROM wards") and len(query(conn, "SELECT * FROM wards")) == 10
    assert "min_necessary" not in statement_record(mgw, "SELECT * FROM wards")


# ---------------------------------------------------------------------------
# PHI row budgets
# ---------------------------------------------------------------------------

def budget_key():
    return f"{KEY_PREFIX}budget:{BUDGETED}"


def budget_used(rds, expected):
    return pg_budget_used(rds, expected, key=budget_key())


def wait_window_closed(rds):
    pg_wait_window_closed(rds, WINDOW_S + 5, key=budget_key())


def test_budget_used_up_holds_then_window_resets(mgw, binaries, rds, raw_patients):
    wait_window_closed(rds)
    with bud(mgw) as conn:
        # Non-PHI reads are never counted.
        assert query(conn, "SELECT count(*) FROM wards") == ((10,),)
        assert len(query(conn, "SELECT * FROM wards")) == 10
        assert not rds.exists(budget_key())
        rows = query(conn, "SELECT first_name, ssn FROM patients LIMIT 6")
        assert len(rows) == 6
        assert_masked(rows, raw_patients)
        assert budget_used(rds, 6) == 6
        assert 0 < rds.pttl(budget_key()) <= WINDOW_S * 1000
        sql6 = "SELECT first_name, ssn FROM patients LIMIT 100, 6"
        assert len(query(conn, sql6)) == 6
        assert budget_used(rds, BUDGET_ROWS) == BUDGET_ROWS
        mn = statement_record(mgw, sql6)["min_necessary"]
        assert mn["budget"] == BUDGET_ROWS and mn["budget_used"] == 6 and mn["budget_left"] == 6, mn
        assert mn["estimate"] == 6 and mn["verdict"] == "run", mn

    sql = "SELECT first_name, ssn FROM patients WHERE id = 2"
    agent = Agent(lambda: bud(mgw), sql)
    agent.start()
    req = wait_for_request(binaries, mgw, sql, agent=agent, identity=BUDGETED)
    assert req["rule"] == "min_necessary.budget", req
    assert req["reason"].startswith(f"PHI row budget used up: {BUDGET_ROWS} of {BUDGET_ROWS} rows"), req
    decide(binaries, mgw, agent, req, "deny", "budget is there for a reason")
    assert agent.error is not None and agent.error.args[0] == 1142, agent.describe()
    assert agent.after == (10,)
    rec = statement_record(mgw, sql)
    assert rec["decision"] == "hold" and rec["min_necessary"]["budget_left"] == 0, rec

    wait_window_closed(rds)
    with bud(mgw) as conn:
        rows = query(conn, sql)
        assert len(rows) == 1
        assert_masked(rows, raw_patients)
    assert budget_used(rds, 1) == 1


def test_estimate_above_what_is_left_holds(mgw, binaries, rds):
    wait_window_closed(rds)
    with bud(mgw) as conn:
        assert len(query(conn, "SELECT first_name, ssn FROM patients LIMIT 10")) == 10
    sql = "SELECT first_name, ssn FROM patients LIMIT 200, 5"
    agent = Agent(lambda: bud(mgw), sql)
    agent.start()
    req = wait_for_request(binaries, mgw, sql, agent=agent, identity=BUDGETED)
    assert req["rule"] == "min_necessary.budget", req
    assert req["reason"].startswith("planner estimate 5 rows > PHI row budget left 2"), req
    decide(binaries, mgw, agent, req, "approve", "just this once")
    assert agent.error is None and len(agent.rows) == 5, agent.describe()
    used = budget_used(rds, 15)
    assert used is not None and int(used) in (15, 5), used


def test_prepared_executes_are_counted(mgw, rds, raw_patients):
    wait_window_closed(rds)
    sql = "SELECT first_name, ssn FROM patients WHERE id = ?"
    steps = [[sql, 5], [sql, 6], [sql, 7]]
    res = run_prepared(mgw.host, mgw.port, BUDGETED, BUDGETED_PASSWORD, steps)
    assert all("error" not in r and len(r["rows"]) == 1 for r in res), res
    assert_masked([tuple(r["rows"][0]) for r in res], raw_patients)
    assert budget_used(rds, 3) == 3


def test_executes_past_the_budget_are_refused(mgw, rds, raw_patients):
    """One PREPARE, many EXECUTEs: each EXECUTE of a PHI read is budget-checked, the one past it refused."""
    wait_window_closed(rds)
    c = MyClient(mgw.host, mgw.port)
    try:
        c.login(BUDGETED, BUDGETED_PASSWORD, "clinic")
        stmt_id, ncols, nparams = c.prepare("SELECT first_name, ssn FROM patients LIMIT 5")
        assert (ncols, nparams) == (2, 0)
        for i in range(3):  # 5 + 5 + 5 rows: the third starts with 2 of 12 left, and runs
            c.command(COM_STMT_EXECUTE, struct.pack("<IBI", stmt_id, 0, 1))
            (res,) = c.read_results(binary=True)
            assert len(res["rows"]) == 5, i
            assert budget_used(rds, 5 * (i + 1)) == 5 * (i + 1)
        c.command(COM_STMT_EXECUTE, struct.pack("<IBI", stmt_id, 0, 1))
        with pytest.raises(MyError) as e:
            c.read_results(binary=True)
        assert e.value.code == 1226, e.value
        assert "PHI row budget used up: 15 of 12 rows" in e.value.message, e.value.message
        assert c.query("SELECT count(*) FROM wards")[0]["rows"] == [(b"10",)]
    finally:
        c.close()
    assert budget_used(rds, 15) == 15  # the refused EXECUTE returned nothing


def test_budget_is_shared_with_the_postgresql_front(mgw, binaries, rds, raw_patients):
    """Rows the identity reads through pgfront count against its MySQL reads: one budget per identity."""
    wait_window_closed(rds)
    pg_port = mgw.config["listen"]["postgres"]["port"]
    with psycopg.connect(host=mgw.host, port=pg_port, user=BUDGETED, password=BUDGETED_PASSWORD,
                         dbname="pgclinic", sslmode="disable", connect_timeout=10, autocommit=True) as conn:
        rows = conn.execute("SELECT first_name, ssn FROM patients LIMIT 12").fetchall()
        assert len(rows) == 12
    assert budget_used(rds, BUDGET_ROWS) == BUDGET_ROWS
    sql = "SELECT first_name, ssn FROM patients WHERE id = 30"
    agent = Agent(lambda: bud(mgw), sql)
    agent.start()
    req = wait_for_request(binaries, mgw, sql, agent=agent, identity=BUDGETED)
    assert req["rule"] == "min_necessary.budget" and req["protocol"] == "mysql", req
    decide(binaries, mgw, agent, req, "approve", "one more")
    assert agent.error is None and len(agent.rows) == 1, agent.describe()
    assert_masked(agent.rows, raw_patients)


def test_redis_down_refuses_budgeted_phi_reads_only(mgw, stack, raw_patients, redis_restarted_afterwards):
    pid = redis_running(stack)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    sql = "SELECT first_name, ssn FROM patients WHERE id = 4"
    with bud(mgw) as conn:
        t0 = time.monotonic()
        with pytest.raises(pymysql.MySQLError) as e:
            query(conn, sql)
        assert time.monotonic() - t0 < 5
        code, msg = e.value.args
        assert code == 1105 and "PHI row budget" in msg and BUDGETED in msg, msg
        assert query(conn, "SELECT count(*) FROM wards") == ((10,),)
    with est(mgw) as conn:  # no budget: its estimate needs no Redis
        rows = query(conn, sql)
        assert len(rows) == 1
        assert_masked(rows, raw_patients)
    rec = statement_record(mgw, sql, lambda r: r.get("decision") == "deny")
    assert rec["min_necessary"]["verdict"] == "refused" and rec["upstream"] is None, rec
    start_redis(stack)


def test_audit_log_still_verifies(mgw, binaries, audit_pubkey):  # noqa: F811
    r = run_ctl(binaries, "audit", "verify", "--allow-unsigned-tail", "--pubkey", audit_pubkey, mgw.audit_dir)
    assert r.returncode == 0, r.stdout + r.stderr
