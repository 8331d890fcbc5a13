"""Approvals through the real Redis of the stack: a statement phigate holds (an unscoped read of a
PHI table) waits while a human decides it with `phigatectl approvals` against phigate's admin API.

approve -> the agent gets masked rows; deny -> an error with the approver's reason; timeout -> an
error naming the request, and a retry after approval passes; self-approval is refused; Redis killed
mid-wait -> a clear error, other statements keep working, and after Redis is back held statements
can be approved again; two phigates sharing Redis; CancelRequest during the wait withdraws it;
an approval's row cap and a ttl grant.  The web console in a browser: test_approvals_console.py.

Every run uses its own Redis key prefix, so requests and grants left by another run (or another
engineer's run on the same stack) never meet these tests.
"""

import base64
import json
import os
import secrets
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest

from harness import (AGENT, APPROVER, REPO, approvals_ctl, approvals_overrides, clean_env,
                     scram_verifier, stop_and_check)

# An approver whose name is the agent's identity: it may log in, but never approve its own requests.
SELF_APPROVER_PASSWORD = "self-" + secrets.token_hex(8)
KEY_PREFIX = f"phigate-it-{os.getpid()}-{secrets.token_hex(3)}:"
WAIT_MS = 30000


# ---------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def self_approver_verifier(binaries):
    return scram_verifier(binaries, SELF_APPROVER_PASSWORD)


@pytest.fixture(scope="module")
def approvals_config(stack, redis_secret_file, approver_verifier, self_approver_verifier):
    """approvals_config(**kw) -> overrides for a phigate on this run's Redis key prefix."""
    def make(**kw):
        kw.setdefault("wait_ms", WAIT_MS)
        kw.setdefault("key_prefix", KEY_PREFIX)
        return approvals_overrides(stack, redis_secret_file,
                                   {APPROVER: approver_verifier, AGENT: self_approver_verifier}, **kw)
    return make


@pytest.fixture(scope="module")
def agw(gateway_maker, approvals_config):
    """The module's phigate with approvals on (waits 30 s for a decision)."""
    gw = gateway_maker(approvals_config(), name="approvals")
    yield gw
    stop_and_check(gw)


@pytest.fixture(scope="module")
def raw_patients(stack):
    """Every raw first_name and ssn, read straight from the upstream (never through phigate)."""
    with psycopg.connect(**stack.connect_kwargs("clinic")) as conn:
        rows = conn.execute("SELECT first_name, ssn FROM patients").fetchall()
    assert len(rows) >= 100
    return rows


class Agent(threading.Thread):
    """A psycopg client running one statement through phigate in the background."""

    def __init__(self, gw, sql, dbname="clinic"):
        super().__init__(daemon=True)
        self.gw, self.sql, self.dbname = gw, sql, dbname
        self.rows = self.error = self.conn = self.after = None
        self.connected = threading.Event()
        self.elapsed = None

    def run(self):
        start = time.monotonic()
        try:
            with psycopg.connect(**self.gw.connect_kwargs(self.dbname), autocommit=True) as conn:
                self.conn = conn
                self.connected.set()
                try:
                    self.rows = conn.execute(self.sql).fetchall()
                except psycopg.Error as e:
                    self.error = e
                # The session survives whatever became of the held statement.
                self.after = conn.execute("select 'after', count(*) from wards").fetchone()
        except psycopg.Error as e:
            if self.error is None:
                self.error = e
        finally:
            self.connected.set()
            self.elapsed = time.monotonic() - start

    def outcome(self, timeout=40):
        self.join(timeout)
        assert not self.is_alive(), f"the agent's statement {self.sql!r} is still waiting after {timeout} s"
        return self

    def describe(self):
        if self.error is not None:
            return f"error {self.error.sqlstate}: {self.error}"
        return f"{len(self.rows)} rows"


def pending_requests(binaries, gw):
    r = approvals_ctl(binaries, gw, "list", "--json")
    assert r.returncode == 0, f"phigatectl approvals list failed: {r.stdout}{r.stderr}\n{gw.diagnostics()}"
    return json.loads(r.stdout)["requests"]


def wait_for_request(binaries, gw, sql, timeout=15, agent=None, identity=AGENT):
    """The pending request (dict from the API) whose statement is exactly sql."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for req in pending_requests(binaries, gw):
            if req["statement"] == sql and req["identity"] == identity:
                return req
        if agent is not None and not agent.is_alive():
            pytest.fail(f"the agent finished before its request appeared: {agent.error or agent.rows}\n"
                        f"{gw.diagnostics()}")
        time.sleep(0.1)
    pytest.fail(f"no pending request for {sql!r} within {timeout} s\n{gw.diagnostics()}")


def show(binaries, gw, rid):
    r = approvals_ctl(binaries, gw, "show", rid, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(r.stdout)
    return data.get("request", data)


def assert_masked(rows, raw_patients):
    """rows of (first_name, ssn) through phigate: all there, none of the raw values anywhere."""
    assert len(rows) == len(raw_patients)
    raw = {v for row in raw_patients for v in row}
    leaked = [cell for row in rows for cell in row if cell in raw]
    assert not leaked, f"raw PHI reached the agent: {leaked[:5]}"
    # and masked the way the catalog says (redacted names, last four of the SSN)
    assert {r[0] for r in rows} == {"[REDACTED]"}
    assert all(str(r[1]).startswith("***-**-") for r in rows)
    assert sorted(str(r[1])[-4:] for r in rows) == sorted(s[-4:] for _, s in raw_patients)


def audit_records(gw):
    return [json.loads(line) for line in gw.audit_text().splitlines() if line.strip()]


def wait_audit(gw, pred, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in audit_records(gw) if pred(r)]
        if found:
            return found
        time.sleep(0.1)
    return []


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------

def test_held_read_approved_with_the_cli_returns_masked_rows(agw, binaries, raw_patients):
    sql = "SELECT first_name, ssn FROM patients"
    agent = Agent(agw, sql)
    agent.start()
    req = wait_for_request(binaries, agw, sql, agent=agent)
    assert req["status"] == "pending" and req["waiting"] is True
    assert req["database"] == "clinic" and req["rule"] == "phi.unscoped_read", req
    assert "patients" in req["reason"], req

    r = approvals_ctl(binaries, agw, "show", req["id"])
    assert r.returncode == 0, r.stderr
    assert sql in r.stdout and AGENT in r.stdout and "phi.unscoped_read" in r.stdout

    r = approvals_ctl(binaries, agw, "approve", req["id"], "--reason", "quarterly audit sample")
    assert r.returncode == 0, r.stdout + r.stderr
    assert req["id"] in r.stdout and "approved" in r.stdout

    agent.outcome()
    assert agent.error is None, agent.describe() + "\n" + agw.diagnostics()
    assert_masked(agent.rows, raw_patients)
    assert agent.after == ("after", 10)

    decided = show(binaries, agw, req["id"])
    assert decided["status"] == "approved" and decided["decided_by"] == APPROVER, decided
    assert decided["decision_reason"] == "quarterly audit sample"

    # The audit log ties the statement to the approval and its approver.
    stmts = wait_audit(agw, lambda x: x["type"] == "statement" and x.get("approval") == req["id"])
    assert stmts and stmts[0]["text"] == sql and stmts[0]["decision"] in ("rewrite", "allow"), stmts
    ev = wait_audit(agw, lambda x: x["type"] == "approval" and x.get("approval") == req["id"])
    assert ev and ev[0]["event"] == "approved" and ev[0]["approver"] == APPROVER, ev
    res = [x for x in audit_records(agw) if x["type"] == "result" and x["session"] == stmts[0]["session"]
           and x["stmt"] == stmts[0]["stmt"]]
    assert res and res[0]["rows"] == len(raw_patients), res


def test_held_read_denied_fails_with_the_approvers_reason(agw, binaries):
    sql = "SELECT first_name AS fn_denied, ssn FROM patients"
    agent = Agent(agw, sql)
    agent.start()
    req = wait_for_request(binaries, agw, sql, agent=agent)
    reason = "use a WHERE clause on patients.id"
    r = approvals_ctl(binaries, agw, "deny", req["id"], "--reason", reason)
    assert r.returncode == 0, r.stdout + r.stderr

    agent.outcome()
    assert agent.rows is None and agent.error is not None, agent.describe()
    assert agent.error.sqlstate == "42501", agent.describe()
    msg = str(agent.error)
    assert reason in msg and APPROVER in msg and req["id"] in msg, msg
    assert agent.after == ("after", 10), "the session should survive a denied statement"
    assert show(binaries, agw, req["id"])["status"] == "denied"

    # A denied request cannot be approved afterwards (409), and the session keeps working.
    r = approvals_ctl(binaries, agw, "approve", req["id"], "--reason", "changed my mind")
    assert r.returncode == 1, r.stdout + r.stderr
    ev = wait_audit(agw, lambda x: x["type"] == "approval" and x.get("approval") == req["id"])
    assert ev and ev[0]["event"] == "denied" and ev[0]["reason"] == reason, ev


def test_deny_needs_a_reason(agw, binaries):
    sql = "SELECT first_name AS fn_noreason, ssn FROM patients"
    agent = Agent(agw, sql)
    agent.start()
    req = wait_for_request(binaries, agw, sql, agent=agent)
    r = approvals_ctl(binaries, agw, "deny", req["id"])
    assert r.returncode in (1, 2), r.stdout + r.stderr
    assert "reason" in r.stdout + r.stderr, r.stdout + r.stderr
    assert show(binaries, agw, req["id"])["status"] == "pending"
    r = approvals_ctl(binaries, agw, "deny", req["id"], "--reason", "cleanup")
    assert r.returncode == 0, r.stdout + r.stderr
    agent.outcome()
    assert agent.error is not None and agent.error.sqlstate == "42501"


def test_timeout_names_the_request_and_a_retry_after_approval_passes(start_gateway, approvals_config, binaries,
                                                                     raw_patients):
    gw = start_gateway(approvals_config(wait_ms=2000))
    sql = "SELECT first_name AS fn_timeout, ssn FROM patients"
    agent = Agent(gw, sql)
    agent.start()
    agent.outcome(timeout=20)
    assert agent.error is not None, agent.describe()
    assert agent.error.sqlstate == "57014", agent.describe()
    assert 1.5 <= agent.elapsed < 10, agent.elapsed
    msg = str(agent.error)
    req = wait_for_request(binaries, gw, sql)
    assert req["id"] in msg and "retry" in msg, msg
    assert req["waiting"] is False, req
    assert agent.after == ("after", 10), "the session should survive a timed-out held statement"

    r = approvals_ctl(binaries, gw, "approve", req["id"], "--reason", "ok on retry")
    assert r.returncode == 0, r.stdout + r.stderr

    retry = Agent(gw, sql)
    retry.start()
    retry.outcome(timeout=20)
    assert retry.error is None, retry.describe() + "\n" + gw.diagnostics()
    assert retry.elapsed < 1.9, f"the retry waited {retry.elapsed:.1f} s although an approval was there"
    assert_masked(retry.rows, raw_patients)

    # single_use: the approval served exactly one retry; the next run is held again.
    again = Agent(gw, sql)
    again.start()
    again.outcome(timeout=20)
    assert again.error is not None and again.error.sqlstate == "57014", again.describe()
    assert req["id"] not in str(again.error)
    ev = wait_audit(gw, lambda x: x["type"] == "approval" and x.get("event") == "timeout")
    assert ev and ev[0]["approval"] == req["id"], ev


def test_row_cap_of_an_approval_limits_the_rows(agw, binaries):
    """`approve --row-cap N` ("limits the rows it may return"): the agent never receives more than
    N rows of the approved statement (whether phigate truncates or refuses the larger result)."""
    sql = "SELECT first_name AS fn_rowcap, ssn FROM patients"
    agent = Agent(agw, sql)
    agent.start()
    req = wait_for_request(binaries, agw, sql, agent=agent)
    r = approvals_ctl(binaries, agw, "approve", req["id"], "--reason", "ten rows are enough", "--row-cap", "10")
    assert r.returncode == 0, r.stdout + r.stderr
    assert show(binaries, agw, req["id"])["row_cap"] == 10
    agent.outcome()
    received = len(agent.rows) if agent.rows is not None else 0
    assert received <= 10, (f"approved with --row-cap 10, the agent received {received} rows "
                            f"({agent.describe()})")


def test_ttl_grant_serves_retries_until_it_expires(start_gateway, approvals_config, binaries, raw_patients):
    """grant: ttl -- one approval runs the statement any number of times while it is valid."""
    # A queue of its own: the grant is bound to identity + fingerprint, and the other tests' statements
    # differ from this one only in a column alias, which the fingerprint does not see.
    gw = start_gateway(approvals_config(wait_ms=1500, grant="ttl", key_prefix=KEY_PREFIX + "ttl:"))
    sql = "SELECT first_name AS fn_ttl, ssn FROM patients"
    first = Agent(gw, sql)
    first.start()
    first.outcome(timeout=20)
    assert first.error is not None and first.error.sqlstate == "57014", first.describe()
    req = wait_for_request(binaries, gw, sql)
    r = approvals_ctl(binaries, gw, "approve", req["id"], "--reason", "for three seconds", "--ttl", "3")
    approved_at = time.monotonic()
    assert r.returncode == 0, r.stdout + r.stderr
    for _ in range(2):
        again = Agent(gw, sql)
        again.start()
        again.outcome(timeout=20)
        assert again.error is None, again.describe()
        assert again.elapsed < 1.4, "a ttl grant should serve the retry at once"
        assert_masked(again.rows, raw_patients)
    assert time.monotonic() - approved_at < 2.5, "too slow to check the grant while it is valid"
    time.sleep(max(0.0, approved_at + 3.5 - time.monotonic()))
    expired = Agent(gw, sql)
    expired.start()
    expired.outcome(timeout=20)
    assert expired.error is not None and expired.error.sqlstate == "57014", \
        f"the grant expired, the statement should be held again: {expired.describe()}"


def test_self_approval_is_refused(agw, binaries, raw_patients):
    sql = "SELECT first_name AS fn_self, ssn FROM patients"
    agent = Agent(agw, sql)
    agent.start()
    req = wait_for_request(binaries, agw, sql, agent=agent)

    r = approvals_ctl(binaries, agw, "approve", req["id"], "--reason", "it's me",
                      approver=AGENT, password=SELF_APPROVER_PASSWORD)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "self-approval" in (r.stdout + r.stderr), r.stdout + r.stderr

    # Through the API directly as well: 403, nothing decided.
    auth = base64.b64encode(f"{AGENT}:{SELF_APPROVER_PASSWORD}".encode()).decode()
    http = urllib.request.Request(f"{agw.admin_url}/api/requests/{req['id']}/approve",
                                  data=json.dumps({"reason": "again me"}).encode(), method="POST",
                                  headers={"Authorization": "Basic " + auth, "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(http, timeout=10)
    assert e.value.code == 403

    assert agent.is_alive(), f"the agent stopped waiting: {agent.describe()}"
    assert show(binaries, agw, req["id"])["status"] == "pending"

    r = approvals_ctl(binaries, agw, "approve", req["id"], "--reason", "second pair of eyes")
    assert r.returncode == 0, r.stdout + r.stderr
    agent.outcome()
    assert agent.error is None, agent.describe()
    assert_masked(agent.rows, raw_patients)


def test_cancel_request_during_the_wait_withdraws_it(agw, binaries):
    sql = "SELECT first_name AS fn_cancel, ssn FROM patients"
    agent = Agent(agw, sql)
    agent.start()
    req = wait_for_request(binaries, agw, sql, agent=agent)
    agent.conn.cancel()
    agent.outcome(timeout=15)
    assert agent.error is not None and agent.error.sqlstate == "57014", agent.describe()
    assert "withdrawn" in str(agent.error), str(agent.error)
    assert agent.elapsed < 10
    assert agent.after == ("after", 10), "the session should survive a withdrawn statement"

    assert show(binaries, agw, req["id"])["status"] == "withdrawn"
    assert req["id"] not in [x["id"] for x in pending_requests(binaries, agw)]
    r = approvals_ctl(binaries, agw, "approve", req["id"], "--reason", "too late")
    assert r.returncode == 1, r.stdout + r.stderr
    ev = wait_audit(agw, lambda x: x["type"] == "approval" and x.get("event") == "withdrawn")
    assert ev, "no audit record of the withdrawal"


def test_cancelled_session_keeps_working(agw, binaries):
    """After a CancelRequest withdrew a held statement, the same connection runs the next one."""
    sql = "SELECT first_name AS fn_cancel2, ssn FROM patients"
    with psycopg.connect(**agw.connect_kwargs("clinic"), autocommit=True) as conn:
        result = {}

        def run():
            try:
                conn.execute(sql).fetchall()
            except psycopg.Error as e:
                result["error"] = e
        t = threading.Thread(target=run, daemon=True)
        t.start()
        wait_for_request(binaries, agw, sql)
        conn.cancel()
        t.join(15)
        assert not t.is_alive()
        assert result["error"].sqlstate == "57014", result
        assert conn.execute("select count(*) from wards").fetchone() == (10,)


def test_two_instances_share_redis_approval_on_b_releases_a(agw, start_gateway, approvals_config, binaries,
                                                            raw_patients):
    other = start_gateway(approvals_config())
    sql = "SELECT first_name AS fn_two, ssn FROM patients"
    agent = Agent(agw, sql)
    agent.start()
    # B's console lists the request A holds ...
    req = wait_for_request(binaries, other, sql, agent=agent)
    # ... and an approval given through B's API releases the statement waiting on A.
    r = approvals_ctl(binaries, other, "approve", req["id"], "--reason", "approved on instance B")
    assert r.returncode == 0, r.stdout + r.stderr
    agent.outcome()
    assert agent.error is None, agent.describe() + "\n" + agw.diagnostics()
    assert_masked(agent.rows, raw_patients)
    assert "approved by " + APPROVER in agw.log()
    assert f"approve {req['id']}" in other.log()


# ---------------------------------------------------------------------------
# Redis killed mid-wait
# ---------------------------------------------------------------------------

def redis_pid_file(stack):
    return Path(stack.env["STACK_DIR"]) / "redis" / "redis.pid"


def redis_running(stack):
    try:
        pid = int(redis_pid_file(stack).read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return None
    return pid if comm == "redis-server" else None


def start_redis(stack):
    env = clean_env(PHIGATE_STACK_DIR=stack.env["STACK_DIR"], PHIGATE_PORT_BASE=stack.env["STACK_PORT_BASE"])
    out = subprocess.run([str(REPO / "scripts" / "stack.sh"), "start"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert redis_running(stack), out.stdout + out.stderr


@pytest.fixture
def redis_restarted_afterwards(stack):
    """Whatever happens in the test, the stack's Redis runs again afterwards."""
    assert redis_running(stack), "the stack's Redis is not running"
    yield
    if not redis_running(stack):
        start_redis(stack)


def wait_admin_api_up(binaries, gw, timeout=20):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = approvals_ctl(binaries, gw, "list", "--json")
        if last.returncode == 0:
            return
        time.sleep(0.2)
    pytest.fail(f"phigate's approvals did not come back within {timeout} s after Redis restarted: "
                f"{last.stdout}{last.stderr}\n{gw.diagnostics()}")


def test_redis_killed_mid_wait(agw, binaries, stack, raw_patients, redis_restarted_afterwards):
    sql = "SELECT first_name AS fn_redis, ssn FROM patients"
    agent = Agent(agw, sql)
    agent.start()
    req = wait_for_request(binaries, agw, sql, agent=agent)
    time.sleep(1.2)  # appendfsync everysec: the request is in Redis's AOF

    pid = redis_running(stack)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()

    # The waiting statement fails at once with a clear error, not after wait_ms.
    agent.outcome(timeout=15)
    assert agent.error is not None, agent.describe()
    assert agent.error.sqlstate == "58000", agent.describe()
    msg = str(agent.error)
    assert "approval" in msg and "unavailable" in msg, msg
    assert agent.after == ("after", 10), "the session should survive the lost approval queue"
    assert time.monotonic() - killed_at < 10

    # Meanwhile: statements that need no approval keep working ...
    with psycopg.connect(**agw.connect_kwargs("clinic"), autocommit=True) as conn:
        assert conn.execute("select count(*) from wards").fetchone() == (10,)
        one = conn.execute("select first_name, ssn from patients where id = 7").fetchone()
        assert one[0] == "[REDACTED]" and one[1].startswith("***-**-")
        # ... and a held one is refused at once with SQLSTATE 58000, naming the reason.
        t0 = time.monotonic()
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT first_name AS fn_redis_down, ssn FROM patients").fetchall()
        assert e.value.sqlstate == "58000", str(e.value)
        assert "approval" in str(e.value) and "unavailable" in str(e.value), str(e.value)
        assert time.monotonic() - t0 < 5
        assert conn.execute("select 'still here'").fetchone() == ("still here",)
    r = approvals_ctl(binaries, agw, "list")
    assert r.returncode == 1, "the admin API should report Redis unavailable: " + r.stdout + r.stderr

    start_redis(stack)
    wait_admin_api_up(binaries, agw)

    # The request made before the crash survived it (AOF) and can be approved for a retry.
    assert show(binaries, agw, req["id"])["status"] == "pending"
    r = approvals_ctl(binaries, agw, "approve", req["id"], "--reason", "after the Redis restart")
    assert r.returncode == 0, r.stdout + r.stderr
    retry = Agent(agw, sql)
    retry.start()
    retry.outcome()
    assert retry.error is None, retry.describe() + "\n" + agw.diagnostics()
    assert_masked(retry.rows, raw_patients)

    # And a new held statement waits and is released by an approval again.
    sql2 = "SELECT first_name AS fn_redis_back, ssn FROM patients"
    agent2 = Agent(agw, sql2)
    agent2.start()
    req2 = wait_for_request(binaries, agw, sql2, agent=agent2)
    r = approvals_ctl(binaries, agw, "approve", req2["id"], "--reason", "Redis is back")
    assert r.returncode == 0, r.stdout + r.stderr
    agent2.outcome()
    assert agent2.error is None, agent2.describe()
    assert_masked(agent2.rows, raw_patients)
