"""The agent works as its own identity and never sees what phigate holds: the
upstream password, and the upstream's cancel keys."""

import socket
import struct
import threading
import time

import psycopg
import pytest

from harness import AGENT, AGENT_PASSWORD
from pgwire import RawClient, ServerError, rows_of

# Debug logging: the most talkative phigate must not write the secret either.
GATEWAY_CONFIG = {"phigate": {"log_level": "debug"}}


def test_upstream_sees_phigate_app_as_the_user(gateway, stack):
    with psycopg.connect(**gateway.connect_kwargs("clinic")) as conn:
        assert conn.execute("select current_user, session_user").fetchone() == (stack.user, stack.user)


def everything_a_client_can_see(gateway, psql_via):
    """Text an agent receives from a series of ordinary and failing interactions."""
    seen = []
    for sql in ["show all", "select * from pg_settings", "select * from pg_stat_activity",
                "select current_user, session_user, inet_server_port()",
                "select * from pg_roles", "select * from pg_user",
                "select 1/0", "select * from no_such_table", "select pg_read_file('pg_hba.conf')",
                "set password_encryption = 'md5'; show password_encryption"]:
        r = psql_via(gateway, sql)
        seen += [r.stdout, r.stderr]
    r = psql_via(gateway, stdin="\\conninfo\n\\du\n")
    seen += [r.stdout, r.stderr]
    for user, password, db in [(AGENT, "wrong", "clinic"), ("nobody", "x", "clinic"),
                               (AGENT, AGENT_PASSWORD, "nowhere"), (AGENT, AGENT_PASSWORD, "no_db")]:
        r = psql_via(gateway, "select 1", user=user, password=password, dbname=db)
        seen += [r.stdout, r.stderr]
    c = RawClient(gateway.host, gateway.port)
    try:
        startup = c.login(AGENT, AGENT_PASSWORD, "clinic")
        seen += [repr(startup)]
        seen += [repr(c.query("select current_setting('application_name'), version()"))]
    finally:
        c.close()
    return "\n".join(seen)


def test_upstream_password_never_reaches_the_client(gateway, stack, psql_via):
    seen = everything_a_client_can_see(gateway, psql_via)
    assert "password authentication failed" in seen  # the interactions did happen
    assert stack.password not in seen


def test_upstream_password_is_not_in_phigate_log_audit_or_output(gateway, stack, psql_via):
    everything_a_client_can_see(gateway, psql_via)
    assert "DEBUG" in gateway.log()  # debug logging was on
    assert "select 1/0" in gateway.audit_text()  # the audit log did record the session
    for text in (gateway.log(), gateway.audit_text(), gateway.stderr(),
                 gateway.stdout_path.read_text(errors="replace")):
        assert stack.password not in text


def test_agent_password_is_not_logged(gateway, psql_via):
    psql_via(gateway, "select 1")
    psql_via(gateway, "select 1", password="wrong-" + AGENT_PASSWORD)
    assert AGENT_PASSWORD not in gateway.log()


def test_client_gets_phigate_cancel_keys_not_the_upstream_ones(gateway):
    c = RawClient(gateway.host, gateway.port)
    try:
        startup = c.login(AGENT, AGENT_PASSWORD, "clinic")
        keys = [body for t, body in startup if t == b"K"]
        assert len(keys) == 1
        client_pid, _ = struct.unpack("!II", keys[0])
        upstream_pid = int(rows_of(c.query("select pg_backend_pid()"))[0][0])
        assert client_pid != upstream_pid
    finally:
        c.close()


def test_forged_cancel_request_is_ignored(gateway):
    """A CancelRequest with a wrong key cancels nothing."""
    c = RawClient(gateway.host, gateway.port)
    try:
        startup = c.login(AGENT, AGENT_PASSWORD, "clinic")
        pid, key = struct.unpack("!II", [b for t, b in startup if t == b"K"][0])

        def forge():
            time.sleep(0.3)
            with socket.create_connection((gateway.host, gateway.port)) as s:
                s.sendall(struct.pack("!IIII", 16, 80877102, pid, key ^ 1))
        t = threading.Thread(target=forge)
        t.start()
        rows = rows_of(c.query("select pg_sleep(1), 'not cancelled'"))
        t.join()
        assert rows == [("", "not cancelled")]
    finally:
        c.close()


def test_upstream_credentials_cannot_be_used_against_phigate(gateway, stack):
    """phigate_app's password is not an identity at phigate."""
    c = RawClient(gateway.host, gateway.port)
    try:
        with pytest.raises(ServerError) as caught:
            c.login(stack.user, stack.password, "clinic")
        assert caught.value.sqlstate == "28P01"
    finally:
        c.close()
