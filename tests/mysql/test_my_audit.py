"""Audit records of MySQL sessions (protocol "mysql"): connect, auth_failure,
statement (as received and as sent, decision, parameters keyed-hashed),
result (rows, SHA-256 of what the database sent and of what the agent got,
SQLSTATE), disconnect.  The agent digest is checked against the bytes the
client actually received."""

import hashlib
import struct
import time

import pytest

from mywire import COM_STMT_EXECUTE, MyClient, MyError
from myharness import AGENT, AGENT_PASSWORD, run_prepared


def wait_for(gw, pred, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recs = gw.audit_records()
        if pred(recs):
            return recs
        time.sleep(0.1)
    raise AssertionError("audit records not written in time")


def session_records(recs, session):
    return [r for r in recs if r.get("session") == session]


def test_session_statement_result_disconnect(gateway):
    c = MyClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic", tls=True)
    c.capture = bytearray()
    res = c.query("select id, name from wards order by id")
    received = bytes(c.capture)
    c.capture = None
    with pytest.raises(MyError):
        c.query("select id from wards where id = (select id from wards)")
    c.query("select 1")
    c.close()
    recs = wait_for(gateway, lambda rs: any(r["type"] == "disconnect" and r.get("statements") == 3 for r in rs))
    connect = [r for r in recs if r["type"] == "connect" and r["protocol"] == "mysql" and r["identity"] == AGENT
               and r.get("tls")]
    assert connect, "no connect record"
    sid = connect[-1]["session"]
    mine = session_records(recs, sid)
    assert connect[-1]["auth"] == "caching_sha2_password" and connect[-1]["database"] == "clinic"
    stmts = [r for r in mine if r["type"] == "statement"]
    results = {r["stmt"]: r for r in mine if r["type"] == "result"}
    assert [s["text"] for s in stmts] == ["select id, name from wards order by id",
                                         "select id from wards where id = (select id from wards)", "select 1"]
    assert all(s["decision"] in ("allow", "rewrite") for s in stmts)
    first = results[stmts[0]["stmt"]]
    assert first["rows"] == len(res[0]["rows"]) == 10
    assert first["agent_sha256"] == hashlib.sha256(received).hexdigest()
    assert first["db_sha256"] == first["agent_sha256"]  # nothing changed on the way
    assert first["bytes"] == len(received)
    failed = results[stmts[1]["stmt"]]
    assert failed["sqlstate"] == "21000" and "more than 1 row" in failed["error"]
    disc = [r for r in mine if r["type"] == "disconnect"]
    assert disc and disc[0]["statements"] == 3
    # Every statement's record comes before its result's.
    seqs = {(r["type"], r.get("stmt")): r["seq"] for r in mine}
    for s in stmts:
        assert seqs[("statement", s["stmt"])] < seqs[("result", s["stmt"])]


def test_auth_failure_recorded(gateway):
    c = MyClient(gateway.host, gateway.port)
    with pytest.raises(MyError):
        c.login("mallory", "guess", db="clinic")
    recs = wait_for(gateway, lambda rs: any(r["type"] == "auth_failure" and r["user"] == "mallory" for r in rs))
    fail = [r for r in recs if r["type"] == "auth_failure" and r["user"] == "mallory"][-1]
    assert fail["protocol"] == "mysql" and "guess" not in str(fail)


def test_prepared_execute_recorded_with_hashed_params(gateway):
    secret_param = "param-value-that-must-not-appear"
    out = run_prepared(gateway.host, gateway.port, AGENT, AGENT_PASSWORD,
                       [["select id from wards where name = ? or id = ?", secret_param, 3]])
    assert out[0].get("rows") == [[3]], out
    recs = wait_for(gateway, lambda rs: any(r["type"] == "statement" and
                                            r["text"] == "select id from wards where name = ? or id = ?"
                                            for r in rs))
    st = [r for r in recs if r["type"] == "statement" and
          r["text"] == "select id from wards where name = ? or id = ?"][-1]
    assert len(st["params"]) == 2 and all(p.startswith("hmac:") for p in st["params"])
    assert secret_param not in str(recs)
    res = [r for r in recs if r["type"] == "result" and r["session"] == st["session"] and r["stmt"] == st["stmt"]]
    assert res and res[0]["rows"] == 1


def test_init_db_recorded(gateway):
    c = MyClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic")
    c.simple(0x02, b"bench")
    with pytest.raises(MyError):
        c.simple(0x02, b"mysql")
    c.close()
    recs = wait_for(gateway, lambda rs: any(r["type"] == "statement" and "COM_INIT_DB" in str(r.get("text"))
                                            and r["decision"] == "deny" for r in rs))
    inits = [r for r in recs if r["type"] == "statement" and "COM_INIT_DB" in str(r.get("text"))]
    assert {r["decision"] for r in inits} >= {"allow", "deny"}
