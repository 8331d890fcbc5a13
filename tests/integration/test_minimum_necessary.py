"""Minimum necessary (issue 5 item 6) through the real PostgreSQL and Redis of the stack.

A role with `estimate_row_limit`: a scoped PHI read whose planner estimate is small runs at once; one
whose estimate is large is held (phigate ran EXPLAIN on the session's own upstream; its answer never
reaches the client) and, approved with `phigatectl approvals`, returns masked rows; a parameterised
read (no estimate before its values are bound) is held; the audit records hold the estimate.

A role with `phi_row_budget`: PHI reads run until the identity's rows in the window are used up, then
the next PHI read is held; the window ends and reads run again; non-PHI reads are never counted or
held; with Redis stopped a budgeted PHI read is refused with a clear error, other reads still work.
The audit log still verifies.
"""

import json
import os
import secrets
import signal
import struct
import threading
import time

import psycopg
import pytest
import redis

from harness import (APPROVER, approvals_ctl, approvals_overrides, free_port, run_ctl, scram_verifier,
                     stop_and_check)
from pgwire import RawClient, errors_of, message, rows_of
from test_approvals import (redis_restarted_afterwards, redis_running, start_redis,  # noqa: F401
                            wait_for_request)

KEY_PREFIX = f"phigate-mn-{os.getpid()}-{secrets.token_hex(3)}:"
ESTIMATOR, ESTIMATOR_PASSWORD = "est_agent", "est-" + secrets.token_hex(10)
BUDGETED, BUDGETED_PASSWORD = "bud_agent", "bud-" + secrets.token_hex(10)
ESTIMATE_LIMIT = 20
BUDGET_ROWS = 12
WINDOW_S = 4  # short, yet long enough for a loaded machine to reach the check inside it


@pytest.fixture(scope="module")
def minnec_config(binaries, stack, redis_secret_file, approver_verifier):
    """The overrides of this module's phigates: both roles, on this run's Redis key prefix."""
    overrides = approvals_overrides(stack, redis_secret_file, {APPROVER: approver_verifier}, wait_ms=30000,
                                    key_prefix=KEY_PREFIX)
    overrides["roles"] = {
        "estimator": {"upstreams": ["clinic"], "estimate_row_limit": ESTIMATE_LIMIT},
        "budgeted": {"upstreams": ["clinic"], "phi_row_budget": {"rows": BUDGET_ROWS, "window": f"{WINDOW_S}s"}},
    }
    overrides["identities"] = {
        ESTIMATOR: {"scram": scram_verifier(binaries, ESTIMATOR_PASSWORD), "role": "estimator"},
        BUDGETED: {"scram": scram_verifier(binaries, BUDGETED_PASSWORD), "role": "budgeted"},
    }
    return overrides


@pytest.fixture(scope="module")
def mgw(gateway_maker, minnec_config):
    gw = gateway_maker(minnec_config, name="minnec")
    yield gw
    stop_and_check(gw)


@pytest.fixture(scope="module")
def rds(stack):
    return redis.Redis(host=stack.env["STACK_REDIS_HOST"], port=int(stack.env["STACK_REDIS_PORT"]),
                       password=stack.env["STACK_REDIS_PASSWORD"], decode_responses=True)


@pytest.fixture(scope="module")
def raw_patients(stack):
    with psycopg.connect(**stack.connect_kwargs("clinic")) as conn:
        return {row[0]: row[1:] for row in conn.execute("SELECT id, first_name, ssn FROM patients")}


def connect(gw, user, password, **kw):
    return psycopg.connect(**gw.connect_kwargs("clinic", user=user, password=password), autocommit=True, **kw)


def est(gw):
    return connect(gw, ESTIMATOR, ESTIMATOR_PASSWORD)


def bud(gw):
    return connect(gw, BUDGETED, BUDGETED_PASSWORD)


def assert_masked(rows, raw_patients):
    raw = {v for vals in raw_patients.values() for v in vals}
    leaked = [cell for row in rows for cell in row if cell in raw]
    assert not leaked, f"raw PHI reached the agent: {leaked[:5]}"
    assert all(r[0] == "[REDACTED]" and str(r[1]).startswith("***-**-") for r in rows), rows[:3]


def audit_records(gw):
    """The live log's records (a line being written right now is skipped until it is whole)."""
    records = []
    for line in gw.audit_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def statement_record(gw, text, pred=lambda r: True, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in audit_records(gw) if r["type"] == "statement" and r["text"] == text and pred(r)]
        if found:
            return found[-1]
        time.sleep(0.1)
    pytest.fail(f"no statement record for {text!r}\n{gw.diagnostics()}")


def pending(binaries, gw, sql, identity, agent=None):
    return wait_for_request(binaries, gw, sql, agent=agent, identity=identity)


def decide(binaries, gw, agent, req, verb, reason):
    """approve/deny the request with phigatectl, then the agent's outcome."""
    r = approvals_ctl(binaries, gw, verb, req["id"], "--reason", reason)
    assert r.returncode == 0, r.stdout + r.stderr
    return agent.outcome()


def assert_rows(agent, gw, n, raw_patients):
    assert agent.error is None, f"{agent.error}\n{gw.diagnostics()}"
    assert len(agent.rows) == n
    assert_masked(agent.rows, raw_patients)


class Agent(threading.Thread):
    """One statement in the background (it may wait for an approval)."""

    def __init__(self, make_conn, sql, params=None):
        super().__init__(daemon=True)
        self.make_conn, self.sql, self.params = make_conn, sql, params
        self.rows = self.error = self.after = None

    def run(self):
        try:
            with self.make_conn() as conn:
                try:
                    self.rows = conn.execute(self.sql, self.params).fetchall()
                except psycopg.Error as e:
                    self.error = e
                self.after = conn.execute("select count(*) from wards").fetchone()
        except psycopg.Error as e:
            self.error = self.error or e

    def outcome(self, timeout=40):
        self.join(timeout)
        assert not self.is_alive(), f"{self.sql!r} still waiting after {timeout} s"
        return self


# ---------------------------------------------------------------------------
# Planner estimates
# ---------------------------------------------------------------------------

def test_small_estimate_runs_at_once(mgw, raw_patients):
    sql = "SELECT first_name, ssn FROM patients WHERE id = 7"
    with est(mgw) as conn:
        t0 = time.monotonic()
        rows = conn.execute(sql).fetchall()
        assert time.monotonic() - t0 < 5
        assert len(rows) == 1
        assert_masked(rows, raw_patients)
        assert rows[0][1].endswith(raw_patients[7][1][-4:])
        # The EXPLAIN's answer never reached this client: the session is in step.
        assert conn.execute("select 'next'").fetchone() == ("next",)
        assert conn.execute("select count(*) from wards").fetchone() == (10,)
    rec = statement_record(mgw, sql)
    mn = rec["min_necessary"]
    assert rec["decision"] == "rewrite" and rec["upstream"] is not None, rec
    assert mn["estimate"] == 1 and mn["estimate_limit"] == ESTIMATE_LIMIT and mn["verdict"] == "run", mn


def test_small_estimate_in_a_transaction_and_pipelined(mgw, raw_patients):
    with est(mgw) as conn:
        with conn.transaction():
            conn.execute("SELECT 1")
            rows = conn.execute("SELECT first_name, ssn FROM patients WHERE id = 3").fetchall()
            assert len(rows) == 1
            assert_masked(rows, raw_patients)
            assert conn.execute("SELECT count(*) FROM wards").fetchone() == (10,)
        assert conn.execute("select 'still in step'").fetchone() == ("still in step",)


def test_sql_prepare_execute_and_cursors(mgw, raw_patients):
    """PREPARE returns nothing (not checked); EXECUTE and DECLARE are estimated; FETCH reads its cursor."""
    with est(mgw) as conn:
        conn.execute("PREPARE pp AS SELECT first_name, ssn FROM patients WHERE id = $1")
        rows = conn.execute("EXECUTE pp(9)").fetchall()
        assert len(rows) == 1
        assert_masked(rows, raw_patients)
        with conn.transaction():
            conn.execute("DECLARE cur CURSOR FOR SELECT first_name, ssn FROM patients LIMIT 10")
            rows = conn.execute("FETCH 4 FROM cur").fetchall()
            assert len(rows) == 4
            assert_masked(rows, raw_patients)
    assert statement_record(mgw, "EXECUTE pp(9)")["min_necessary"]["estimate"] == 1
    rec = statement_record(mgw, "DECLARE cur CURSOR FOR SELECT first_name, ssn FROM patients LIMIT 10")
    assert rec["min_necessary"]["estimate"] == 10, rec
    rec = statement_record(mgw, "FETCH 4 FROM cur")
    assert "FETCH" in rec["min_necessary"]["no_estimate"] and rec["min_necessary"]["verdict"] == "run", rec
    assert "min_necessary" not in statement_record(mgw, "PREPARE pp AS SELECT first_name, ssn FROM patients "
                                                        "WHERE id = $1")


def test_failed_explain_refuses_with_the_servers_sqlstate(mgw):
    """In an aborted transaction the EXPLAIN fails: the statement is refused as the server would refuse it."""
    sql = "SELECT first_name, ssn FROM patients WHERE id = 5"
    with est(mgw) as conn:
        conn.execute("BEGIN")
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT 1/0")
        assert e.value.sqlstate == "22012"
        with pytest.raises(psycopg.Error) as e:
            conn.execute(sql)
        assert e.value.sqlstate == "25P02", str(e.value)
        assert "planner's estimate" in str(e.value), str(e.value)
        conn.execute("ROLLBACK")
        assert len(conn.execute(sql).fetchall()) == 1
    rec = statement_record(mgw, sql, lambda r: r["decision"] == "deny")
    assert rec["upstream"] is None and rec["rule"] == "min_necessary.error", rec
    assert rec["min_necessary"]["verdict"] == "refused", rec


def test_large_estimate_held_and_approved_returns_masked_rows(mgw, binaries, raw_patients):
    sql = "SELECT first_name, ssn FROM patients LIMIT 90"
    agent = Agent(lambda: est(mgw), sql)
    agent.start()
    req = pending(binaries, mgw, sql, ESTIMATOR, agent=agent)
    assert req["rule"] == "min_necessary.estimate", req
    assert req["reason"] == f"planner estimate 90 rows > limit {ESTIMATE_LIMIT}", req
    time.sleep(0.3)
    assert agent.is_alive(), "the statement should wait for the approval"

    decide(binaries, mgw, agent, req, "approve", "cohort review")
    assert_rows(agent, mgw, 90, raw_patients)
    assert agent.after == (10,)

    rec = statement_record(mgw, sql, lambda r: r.get("approval") == req["id"])
    mn = rec["min_necessary"]
    assert rec["decision"] in ("rewrite", "allow") and rec["upstream"], rec
    assert mn["estimate"] == 90 and mn["estimate_limit"] == ESTIMATE_LIMIT, mn
    assert mn["verdict"] == "hold" and mn["rule"] == "min_necessary.estimate", mn
    assert mn["reason"] == f"planner estimate 90 rows > limit {ESTIMATE_LIMIT}", mn


def test_large_estimate_denied_is_recorded_as_held(mgw, binaries):
    sql = "SELECT first_name, ssn FROM patients LIMIT 60 OFFSET 10"
    agent = Agent(lambda: est(mgw), sql)
    agent.start()
    req = pending(binaries, mgw, sql, ESTIMATOR, agent=agent)
    decide(binaries, mgw, agent, req, "deny", "too wide")
    assert agent.error is not None and agent.error.sqlstate == "42501", agent.error
    assert "too wide" in str(agent.error)
    assert agent.after == (10,)
    rec = statement_record(mgw, sql)
    assert rec["decision"] == "hold" and rec["upstream"] is None, rec
    assert rec["rule"] == "min_necessary.estimate" and rec["min_necessary"]["estimate"] >= 21, rec


def test_parameterised_read_cannot_be_estimated_and_is_held(mgw, binaries, raw_patients):
    sql = "SELECT first_name, ssn FROM patients WHERE id = %s"
    wire_sql = "SELECT first_name, ssn FROM patients WHERE id = $1"
    agent = Agent(lambda: est(mgw), sql, (11,))
    agent.start()
    req = pending(binaries, mgw, wire_sql, ESTIMATOR, agent=agent)
    assert req["rule"] == "min_necessary.no_estimate", req
    assert "bind parameters" in req["reason"], req
    decide(binaries, mgw, agent, req, "approve", "one patient")
    assert_rows(agent, mgw, 1, raw_patients)


def test_without_approvals_a_large_estimate_is_refused(start_gateway, binaries, raw_patients):
    gw = start_gateway({
        "roles": {"estimator": {"upstreams": ["clinic"], "estimate_row_limit": ESTIMATE_LIMIT}},
        "identities": {ESTIMATOR: {"scram": scram_verifier(binaries, ESTIMATOR_PASSWORD), "role": "estimator"}},
    }, name="minnec-noredis")
    with est(gw) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT first_name, ssn FROM patients LIMIT 50").fetchall()
        assert e.value.sqlstate == "42501", str(e.value)
        msg = str(e.value)
        assert "min_necessary.estimate" in msg and "planner estimate 50 rows > limit 20" in msg, msg
        assert "approvals are not enabled" in msg, msg
        rows = conn.execute("SELECT first_name, ssn FROM patients LIMIT 5").fetchall()
        assert len(rows) == 5
        assert_masked(rows, raw_patients)


def test_non_phi_reads_are_not_estimated(mgw):
    with est(mgw) as conn:
        assert conn.execute("SELECT count(*) FROM wards").fetchone() == (10,)
        assert len(conn.execute("SELECT * FROM wards").fetchall()) == 10
    rec = statement_record(mgw, "SELECT * FROM wards")
    assert "min_necessary" not in rec, rec


# ---------------------------------------------------------------------------
# PHI row budgets
# ---------------------------------------------------------------------------

def budget_key():
    return f"{KEY_PREFIX}budget:{BUDGETED}"


def budget_used(rds, expected, timeout=3, key=None):
    """The identity's count in Redis (key: this module's identity's by default) once it reaches expected
    (rows are counted as results end)."""
    key = key or budget_key()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = rds.get(key)
        if value is not None and int(value) == expected:
            return expected
        time.sleep(0.02)
    return rds.get(key)


def wait_window_closed(rds, timeout=WINDOW_S + 5, key=None):
    key = key or budget_key()
    deadline = time.monotonic() + timeout
    while rds.exists(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not rds.exists(key), "the budget window did not close"


def test_budget_used_up_holds_then_window_resets(mgw, binaries, rds, raw_patients):
    wait_window_closed(rds)
    with bud(mgw) as conn:
        # Non-PHI reads are never counted.
        assert conn.execute("SELECT count(*) FROM wards").fetchone() == (10,)
        assert len(conn.execute("SELECT * FROM wards").fetchall()) == 10
        assert not rds.exists(budget_key())

        rows = conn.execute("SELECT first_name, ssn FROM patients LIMIT 6").fetchall()
        assert len(rows) == 6
        assert_masked(rows, raw_patients)
        assert budget_used(rds, 6) == 6
        ttl = rds.pttl(budget_key())
        assert 0 < ttl <= WINDOW_S * 1000, ttl
        rows = conn.execute("SELECT first_name, ssn FROM patients LIMIT 6 OFFSET 100").fetchall()
        assert len(rows) == 6
        assert budget_used(rds, BUDGET_ROWS) == BUDGET_ROWS
        rec = statement_record(mgw, "SELECT first_name, ssn FROM patients LIMIT 6 OFFSET 100")
        mn = rec["min_necessary"]
        assert mn["budget"] == BUDGET_ROWS and mn["budget_used"] == 6 and mn["budget_left"] == 6, mn
        assert mn["estimate"] == 6 and mn["verdict"] == "run", mn
        # Still fine: reads without PHI.
        assert conn.execute("SELECT name FROM wards WHERE id = 1").fetchone() is not None

    # Used up: the next PHI read is held, even a one-row one.
    sql = "SELECT first_name, ssn FROM patients WHERE id = 2"
    agent = Agent(lambda: bud(mgw), sql)
    agent.start()
    req = pending(binaries, mgw, sql, BUDGETED, agent=agent)
    assert req["rule"] == "min_necessary.budget", req
    assert req["reason"].startswith(f"PHI row budget used up: {BUDGET_ROWS} of {BUDGET_ROWS} rows"), req
    decide(binaries, mgw, agent, req, "deny", "budget is there for a reason")
    assert agent.error is not None and agent.error.sqlstate == "42501", agent.error
    rec = statement_record(mgw, sql)
    assert rec["decision"] == "hold" and rec["min_necessary"]["budget_left"] == 0, rec

    # The window ends: the count starts again and the read runs at once.
    wait_window_closed(rds)
    with bud(mgw) as conn:
        rows = conn.execute(sql).fetchall()
        assert len(rows) == 1
        assert_masked(rows, raw_patients)
    assert budget_used(rds, 1) == 1


def test_prepared_statement_executes_are_checked_too(mgw, rds, raw_patients):
    """A prepared PHI read (Parse once, Execute many) cannot run past the budget."""
    wait_window_closed(rds)
    sql = "SELECT first_name, ssn FROM patients LIMIT 5"
    with bud(mgw) as conn:
        for i in range(3):  # 5 + 5 + 5 rows: the third starts with 2 of 12 left, and runs
            rows = conn.execute(sql, prepare=True).fetchall()
            assert len(rows) == 5, i
            assert_masked(rows, raw_patients)
            assert budget_used(rds, 5 * (i + 1)) == 5 * (i + 1)
        with pytest.raises(psycopg.Error) as e:
            conn.execute(sql, prepare=True).fetchall()
        assert e.value.sqlstate == "53400", str(e.value)
        assert "PHI row budget used up: 15 of 12 rows" in str(e.value), str(e.value)
        assert conn.execute("SELECT count(*) FROM wards").fetchone() == (10,)
    rec = statement_record(mgw, sql, lambda r: r["decision"] == "deny")
    assert rec["upstream"] is None and rec["min_necessary"]["budget_used"] == 15, rec
    assert budget_used(rds, 15) == 15  # the refused Execute returned nothing


def test_approved_parse_runs_its_execute_past_the_budget(mgw, binaries, rds, raw_patients):
    """Extended protocol: the Parse is held (budget used up); its approval covers the Execute behind it."""
    wait_window_closed(rds)
    with bud(mgw) as conn:
        assert len(conn.execute("SELECT first_name, ssn FROM patients LIMIT 12").fetchall()) == 12
    assert budget_used(rds, BUDGET_ROWS) == BUDGET_ROWS
    agent = Agent(lambda: bud(mgw), "SELECT first_name, ssn FROM patients WHERE id = %s", (21,))
    agent.start()
    req = pending(binaries, mgw, "SELECT first_name, ssn FROM patients WHERE id = $1", BUDGETED, agent=agent)
    assert req["rule"] == "min_necessary.budget", req
    decide(binaries, mgw, agent, req, "approve", "one more patient")
    assert_rows(agent, mgw, 1, raw_patients)


def test_portals_past_phigates_cap_are_still_counted(mgw, rds):
    """Raw protocol: 70 portals on one prepared PHI read; phigate tracks 64. An Execute of a portal it
    lost is still budget-checked and its rows still counted (forgetting is no way around the budget)."""
    wait_window_closed(rds)
    c = RawClient(mgw.host, mgw.port)
    try:
        c.login(BUDGETED, BUDGETED_PASSWORD, "clinic")
        c.query("BEGIN")  # portals outlive a Sync only inside a transaction
        batch = message(b"P", b"s1\0SELECT first_name, ssn FROM patients LIMIT 3\0" + struct.pack("!H", 0))
        for i in range(70):
            batch += message(b"B", f"p{i}".encode() + b"\0s1\0" + struct.pack("!HHH", 0, 0, 0))
        c.send(batch + message(b"S"))
        msgs = c.read_until_ready()
        assert not errors_of(msgs), errors_of(msgs)
        for portal, used in ((b"p69", 3), (b"p0", 6), (b"p64", 9)):  # p63..p68 share the last slot
            c.send(message(b"E", portal + b"\0" + struct.pack("!i", 0)) + message(b"S"))
            msgs = c.read_until_ready()
            assert not errors_of(msgs), errors_of(msgs)
            assert len(rows_of(msgs)) == 3
            assert budget_used(rds, used) == used, portal
        c.query("COMMIT")
    finally:
        c.close()


def test_estimate_above_what_is_left_holds(mgw, binaries, rds):
    wait_window_closed(rds)
    with bud(mgw) as conn:
        assert len(conn.execute("SELECT first_name, ssn FROM patients LIMIT 10").fetchall()) == 10
    sql = "SELECT first_name, ssn FROM patients LIMIT 5 OFFSET 200"
    agent = Agent(lambda: bud(mgw), sql)
    agent.start()
    req = pending(binaries, mgw, sql, BUDGETED, agent=agent)
    assert req["rule"] == "min_necessary.budget", req
    assert req["reason"].startswith("planner estimate 5 rows > PHI row budget left 2"), req
    decide(binaries, mgw, agent, req, "approve", "just this once")
    assert agent.error is None and len(agent.rows) == 5, agent.error
    # Approved rows are counted too (in a new window if this one closed while the approver decided).
    used = budget_used(rds, 15)
    assert used is not None and int(used) in (15, 5), used


def test_two_phigates_share_one_budget(mgw, start_gateway, minnec_config, binaries, rds, raw_patients):
    """Rows read through one phigate count in the other: the budget lives in Redis."""
    other = start_gateway(dict(minnec_config, admin={"address": "127.0.0.1", "port": free_port()}), name="minnec-b")
    wait_window_closed(rds)
    with bud(mgw) as conn:
        assert len(conn.execute("SELECT first_name, ssn FROM patients LIMIT 7").fetchall()) == 7
    assert budget_used(rds, 7) == 7
    with bud(other) as conn:
        rows = conn.execute("SELECT first_name, ssn FROM patients LIMIT 5 OFFSET 50").fetchall()
        assert len(rows) == 5
        assert_masked(rows, raw_patients)
    assert budget_used(rds, BUDGET_ROWS) == BUDGET_ROWS
    sql = "SELECT first_name, ssn FROM patients WHERE id = 30"
    agent = Agent(lambda: bud(mgw), sql)
    agent.start()
    req = pending(binaries, mgw, sql, BUDGETED, agent=agent)
    assert req["rule"] == "min_necessary.budget", req
    decide(binaries, other, agent, req, "approve", "approved through the other phigate")
    assert_rows(agent, mgw, 1, raw_patients)


def test_redis_down_refuses_budgeted_phi_reads_only(mgw, stack, raw_patients, redis_restarted_afterwards):
    pid = redis_running(stack)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    with bud(mgw) as conn:
        t0 = time.monotonic()
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT first_name, ssn FROM patients WHERE id = 4").fetchall()
        assert time.monotonic() - t0 < 5
        assert e.value.sqlstate == "58000", str(e.value)
        assert "PHI row budget" in str(e.value) and BUDGETED in str(e.value), str(e.value)
        # Reads without PHI still run for the budgeted identity.
        assert conn.execute("SELECT count(*) FROM wards").fetchone() == (10,)
    # An identity without a budget is not affected (its estimate needs no Redis).
    with est(mgw) as conn:
        rows = conn.execute("SELECT first_name, ssn FROM patients WHERE id = 4").fetchall()
        assert len(rows) == 1
        assert_masked(rows, raw_patients)
    rec = statement_record(mgw, "SELECT first_name, ssn FROM patients WHERE id = 4",
                           lambda r: r.get("decision") == "deny")
    assert rec["min_necessary"]["verdict"] == "refused" and rec["upstream"] is None, rec
    start_redis(stack)


def test_audit_log_still_verifies(mgw, binaries, audit_pubkey):
    r = run_ctl(binaries, "audit", "verify", "--allow-unsigned-tail", "--pubkey", audit_pubkey, mgw.audit_dir)
    assert r.returncode == 0, r.stdout + r.stderr
