"""Malformed and hostile input on raw sockets: phigate answers with a protocol
error (or closes), never crashes, and keeps serving everyone else."""

import random
import re
import threading
import struct
import time

import pytest

from harness import AGENT, AGENT_PASSWORD, SilentServer
from pgwire import (PeerClosed, RawClient, ServerError, errors_of, message, parse_error_fields, query_message,
                    rows_of, startup_packet)

GATEWAY_CONFIG = {"limits": {"max_message_bytes": "1MB"}}


@pytest.fixture
def session(gateway):
    """A raw client logged in to clinic through phigate."""
    c = RawClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, "clinic")
    yield c
    c.close()


def read_error_then_close(c):
    """The next message must be an ErrorResponse, and then the connection must end."""
    t, body = c.read_message()
    assert t == b"E", f"expected an ErrorResponse, got {t!r} {body[:80]!r}"
    fields = parse_error_fields(body)
    assert c.wait_closed(), "phigate kept the connection open after the error"
    return fields


def error_or_close(c):
    """For garbage input: phigate may answer with an ErrorResponse or just close. Returns the
    error fields, or None if it closed without one.  It must not keep the connection open."""
    try:
        t, body = c.read_message()
    except (PeerClosed, ConnectionResetError):
        return None
    assert t == b"E", f"unexpected answer {t!r} to garbage"
    assert c.wait_closed()
    return parse_error_fields(body)


def test_oversized_message_after_login_is_refused_before_reading_it(gateway, session, assert_serves):
    """A Query header claiming 100 MB (limit 1 MB): ErrorResponse 08P01, connection closed."""
    session.send(b"Q" + struct.pack("!I", 100 * 1024 * 1024) + b"select ")
    fields = read_error_then_close(session)
    assert fields["C"] == "08P01"
    assert "max_message_bytes" in fields["M"]
    assert_serves(gateway)


def test_message_just_under_the_limit_is_served(session):
    sql = "select length('" + "x" * (1024 * 1024 - 100) + "')"
    assert rows_of(session.query(sql)) == [(str(1024 * 1024 - 100),)]


def test_message_length_below_four_is_a_protocol_error(gateway, session, assert_serves):
    session.send(b"Q" + struct.pack("!I", 3))
    assert read_error_then_close(session)["C"] == "08P01"
    assert_serves(gateway)


def test_unknown_message_type_is_a_protocol_error(gateway, session, assert_serves):
    session.send(message(b"\x7f", b"whatever"))
    assert read_error_then_close(session)["C"] == "08P01"
    assert_serves(gateway)


def test_password_message_after_login_is_a_protocol_error(gateway, session, assert_serves):
    session.send(message(b"p", b"secret\0"))
    assert read_error_then_close(session)["C"] == "08P01"
    assert_serves(gateway)


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_as_startup_packet(gateway, assert_serves, seed):
    rng = random.Random(seed)
    garbage = bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 7, 8, 64, 300, 5000])))
    c = RawClient(gateway.host, gateway.port, timeout=20)
    try:
        c.send(garbage)
        if len(garbage) >= 8:
            error_or_close(c)
    finally:
        c.close()
    assert_serves(gateway)


def test_random_startup_bodies_with_a_valid_length(gateway, assert_serves):
    """Valid length and protocol 3.0, random parameter bytes: error or close, never a crash."""
    rng = random.Random(42)
    for _ in range(20):
        body = struct.pack("!I", 196608) + bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 200)))
        c = RawClient(gateway.host, gateway.port)
        try:
            c.send(struct.pack("!I", len(body) + 4) + body)
            try:
                t, _ = c.read_message()
            except (PeerClosed, ConnectionResetError):
                continue
            # By chance the bytes may parse as parameters; then SCRAM starts ('R') or an error comes.
            assert t in (b"E", b"R", b"v")
        finally:
            c.close()
    assert_serves(gateway)


def test_protocol_version_2_startup_is_refused_with_a_message(gateway, assert_serves):
    c = RawClient(gateway.host, gateway.port)
    try:
        c.send(startup_packet({"user": AGENT, "database": "clinic"}, protocol=2 << 16))
        fields = read_error_then_close(c)
        assert "protocol" in fields["M"]
    finally:
        c.close()
    assert_serves(gateway)


def test_startup_packet_claiming_two_gigabytes_is_refused(gateway, assert_serves):
    c = RawClient(gateway.host, gateway.port)
    try:
        c.send(struct.pack("!II", 0x80000000, 196608) + b"user\0")
        fields = read_error_then_close(c)
        assert fields["C"] == "08P01"
    finally:
        c.close()
    assert_serves(gateway)


def test_startup_packet_shorter_than_its_header_is_refused(gateway, assert_serves):
    c = RawClient(gateway.host, gateway.port)
    try:
        c.send(struct.pack("!II", 4, 196608))
        assert read_error_then_close(c)["C"] == "08P01"
    finally:
        c.close()
    assert_serves(gateway)


def test_startup_without_a_user_is_refused(gateway):
    c = RawClient(gateway.host, gateway.port)
    try:
        c.send(startup_packet({"database": "clinic"}))
        assert read_error_then_close(c)["C"] == "28000"
    finally:
        c.close()


def test_login_and_query_sent_one_byte_at_a_time(gateway):
    """Every header and body split across reads: framing must wait for the rest."""
    class Dribble(RawClient):
        def send(self, data):
            for i in range(len(data)):
                self.sock.sendall(data[i:i + 1])
                if i % 16 == 0:
                    time.sleep(0.0005)
    c = Dribble(gateway.host, gateway.port)
    try:
        c.login(AGENT, AGENT_PASSWORD, "clinic")
        assert rows_of(c.query("select name from wards where id = 3")) == [("Oncology",)]
    finally:
        c.close()


def test_client_vanishing_mid_query(gateway, stack, assert_serves):
    """The client sends a query and closes its socket: phigate drops the upstream session too."""
    marker = f"phigate_vanish_{time.monotonic_ns()}"
    c = RawClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, "clinic")
    c.send(query_message(f"select pg_sleep(2) /* {marker} */"))
    time.sleep(0.3)
    c.close()
    assert_serves(gateway)
    # The upstream backend ends once its sleep is over and it notices nobody is there.
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        left = stack.admin_sql(f"select count(*) from pg_stat_activity where query like '%{marker} */'"
                               f" and pid <> pg_backend_pid()").strip()
        if left == "0":
            break
        time.sleep(0.2)
    assert left == "0", "the upstream session of a vanished client is still there"


def test_upstream_down_gives_08006_with_a_clear_message(gateway, assert_serves):
    """The 'nowhere' upstream points at a port where nothing listens."""
    c = RawClient(gateway.host, gateway.port)
    try:
        started = time.monotonic()
        with pytest.raises(ServerError) as caught:
            c.login(AGENT, AGENT_PASSWORD, "nowhere")
        assert time.monotonic() - started < 5
        assert caught.value.sqlstate == "08006"
        # Clear: the client learns which database and that its server could not be reached.
        fields = caught.value.fields
        text = " ".join(fields.get(k, "") for k in "MDH")
        assert "nowhere" in text and re.search(r"connect|refused|unreachable|not reachable", text), fields
    finally:
        c.close()
    assert_serves(gateway)


def test_hung_upstream_does_not_stall_other_sessions(start_gateway, upstream_secret_file, assert_serves):
    """While one agent waits for an upstream that accepts but never answers, another agent's
    queries on a healthy upstream still come back at once."""
    silent = SilentServer()
    try:
        gw = start_gateway({"upstreams": {"hung": {"host": "127.0.0.1", "port": silent.port,
                                                   "user": "phigate_app", "connect_timeout_ms": 3000,
                                                   "password_file": str(upstream_secret_file)}},
                            "roles": {"tester": {"upstreams": ["clinic", "bench", "nowhere", "hung"]}}})
        healthy = RawClient(gw.host, gw.port)
        healthy.login(AGENT, AGENT_PASSWORD, "clinic")
        outcome = {}

        def connect_to_hung():
            c = RawClient(gw.host, gw.port, timeout=30)
            try:
                c.login(AGENT, AGENT_PASSWORD, "hung")
                outcome["result"] = "logged in?!"
            except ServerError as e:
                outcome["result"] = e.sqlstate
            finally:
                c.close()
        t = threading.Thread(target=connect_to_hung)
        t.start()
        time.sleep(0.3)  # the other login is now waiting on the hung upstream
        slowest = 0.0
        for _ in range(5):
            started = time.monotonic()
            assert rows_of(healthy.query("select 1")) == [("1",)]
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.2)
        t.join(30)
        healthy.close()
        assert outcome.get("result") == "08006"
        assert slowest < 1.0, f"a query on a healthy upstream took {slowest:.1f} s while another upstream hung"
        assert_serves(gw)
    finally:
        silent.close()


def test_function_call_message_is_refused_and_the_session_goes_on(session):
    # FunctionCall: function oid, 0 argument formats, 0 arguments, result format text.
    session.send(message(b"F", struct.pack("!IHHH", 1598, 0, 0, 0)))
    msgs = session.read_until_ready()
    assert [e["C"] for e in errors_of(msgs)] == ["0A000"]
    assert msgs[-1] == (b"Z", b"I")
    assert rows_of(session.query("select 'after FunctionCall'")) == [("after FunctionCall",)]


def test_function_call_inside_a_transaction_fails_the_transaction_like_the_server_would(session):
    session.query("begin")
    session.send(message(b"F", struct.pack("!IHHH", 1598, 0, 0, 0)))
    msgs = session.read_until_ready()
    assert [e["C"] for e in errors_of(msgs)] == ["0A000"]
    assert msgs[-1] == (b"Z", b"E")
    assert errors_of(session.query("select 1"))[0]["C"] == "25P02"
    assert session.query("rollback")[-1] == (b"Z", b"I")
    assert rows_of(session.query("select 1")) == [("1",)]


def test_pipelined_simple_queries_get_answers_in_order(session):
    session.send(b"".join(query_message(f"select {i}") for i in range(200)))
    got = []
    for _ in range(200):
        got += rows_of(session.read_until_ready())
    assert got == [(str(i),) for i in range(200)]


def test_queries_pipelined_behind_the_last_authentication_message(gateway):
    """libpq never does this, but a client may: queries sent before AuthenticationOk
    wait until the upstream session is open, then run in order."""
    c = RawClient(gateway.host, gateway.port)
    try:
        c.login(AGENT, AGENT_PASSWORD, "clinic", pipelined=query_message("select 1") + query_message("select 2"))
        assert rows_of(c.read_until_ready()) == [("1",)]
        assert rows_of(c.read_until_ready()) == [("2",)]
    finally:
        c.close()


@pytest.mark.parametrize("target", ["direct", "phigate"])
def test_statement_sent_together_with_terminate_still_runs(gateway, stack, psql_direct, scratch_name, target):
    """Query + Terminate in one write (fire and forget): PostgreSQL runs the statement before it
    reads Terminate, so the row must be there afterwards, through phigate as directly."""
    table = scratch_name(f"terminate_{target}")
    assert psql_direct(f"create table {table} (id int)", dbname="bench").returncode == 0
    try:
        if target == "direct":
            c = RawClient(stack.host, stack.pg_port)
            c.login(stack.user, stack.password, "bench")
        else:
            c = RawClient(gateway.host, gateway.port)
            c.login(AGENT, AGENT_PASSWORD, "bench")
        c.send(query_message(f"insert into {table} values (42)") + message(b"X"))
        assert c.wait_closed()
        c.close()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            count = psql_direct(f"select count(*) from {table}", dbname="bench").stdout.strip()
            if count == "1":
                break
            time.sleep(0.1)
        assert count == "1", "the statement sent just before Terminate was lost"
    finally:
        psql_direct(f"drop table if exists {table}", dbname="bench")


def test_answers_to_queries_pipelined_before_terminate_are_delivered(gateway):
    """Query, Query, Terminate in one write: both answers arrive before the connection closes
    (what PostgreSQL itself does)."""
    c = RawClient(gateway.host, gateway.port)
    try:
        c.login(AGENT, AGENT_PASSWORD, "clinic")
        c.send(query_message("select 1") + query_message("select pg_sleep(0.2), 2") + message(b"X"))
        assert rows_of(c.read_until_ready()) == [("1",)]
        assert rows_of(c.read_until_ready()) == [("", "2")]
        assert c.wait_closed()
    finally:
        c.close()


def test_many_failed_connections_do_not_leak_sessions(gateway, assert_serves):
    for i in range(50):
        c = RawClient(gateway.host, gateway.port)
        c.send(struct.pack("!II", 8 + i % 3, 196608 + i))
        c.close()
    assert_serves(gateway)
