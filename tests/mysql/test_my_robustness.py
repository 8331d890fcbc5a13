"""Malformed input on raw sockets: random bytes, oversized headers (16 MB claimed
again and again past the maximum), bad sequence ids, empty and unknown
commands, truncated packets, slow readers.  phigate answers with a clean ERR
where the protocol allows one, closes, never crashes, and keeps serving."""

import os
import random
import socket
import struct
import threading
import time

import pymysql
import pytest

from mywire import COM_QUERY, DEFAULT_CAPS, MyClient, MyError, Closed
from myharness import AGENT, AGENT_PASSWORD, SilentServer

GATEWAY_CONFIG = {"limits": {"max_message_bytes": "1MB", "client_buffer_bytes": "256kB"}}


def assert_serves(gw):
    c = MyClient(gw.host, gw.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic")
    assert c.query("select 'still serving', count(*) from wards")[0]["rows"] == [(b"still serving", b"10")]
    c.close()


def read_err_then_close(c, timeout=10):
    """The next packet is an ERR and then the server closes; returns the MyError."""
    c.sock.settimeout(timeout)
    seq, p = c.read_physical()
    assert p[:1] == b"\xff", p[:32]
    code = struct.unpack_from("<H", p, 1)[0]
    err = MyError(code, p[4:9].decode(), p[9:].decode(errors="replace"))
    assert c.closed_by_server()
    return err


def packet(seq, payload, claimed=None):
    n = len(payload) if claimed is None else claimed
    return struct.pack("<I", n)[:3] + bytes([seq]) + payload


@pytest.mark.parametrize("size", [1, 3, 4, 5, 36, 100, 4096])
def test_random_bytes_before_login(gateway, size):
    rnd = random.Random(size)
    for _ in range(5):
        c = MyClient(gateway.host, gateway.port)
        c.read_greeting()
        c.send_raw(bytes(rnd.getrandbits(8) for _ in range(size)))
        c.closed_by_server(timeout=2)  # an ERR, a close, or waiting for more: all fine
        c.close()
    assert_serves(gateway)


def test_random_bytes_after_login(gateway):
    rnd = random.Random(7)
    for i in range(30):
        c = MyClient(gateway.host, gateway.port)
        c.login(AGENT, AGENT_PASSWORD, db="clinic")
        c.send_raw(bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300))))
        c.closed_by_server(timeout=1)
        c.close()
    assert_serves(gateway)


def test_oversized_header_before_login_refused_on_the_header(gateway):
    c = MyClient(gateway.host, gateway.port)
    c.read_greeting()
    c.send_raw(packet(1, b"", claimed=0xFFFFFF))  # 16 MB claimed, nothing sent
    err = read_err_then_close(c)
    assert err.code == 1153
    assert_serves(gateway)


def test_16mb_claimed_repeatedly_past_the_max(gateway):
    """max_message_bytes is 1 MB here: a command claiming 16 MB is refused on its
    header, before any of its body is read or kept."""
    c = MyClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic")
    c.send_raw(packet(0, b"\x03", claimed=0xFFFFFF))
    err = read_err_then_close(c)
    assert err.code == 1153 and "max_message_bytes" in err.message
    assert_serves(gateway)


def test_continuations_past_the_max_refused_at_the_crossing_header(start_gateway):
    gw = start_gateway({"limits": {"max_message_bytes": "20MB"}})
    c = MyClient(gw.host, gw.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic")
    body = b"\x03select '" + b"a" * (0xFFFFFF - 9)
    c.send_raw(packet(0, body))                         # 16 MB: within 20 MB
    c.send_raw(packet(1, b"", claimed=0xFFFFFF))         # another 16 MB claimed: past it
    err = read_err_then_close(c, timeout=30)
    assert err.code == 1153
    rss = gw.rss_kb()
    assert rss < 200 * 1024, f"phigate holds {rss} kB after refusing"
    assert_serves(gw)


def test_bad_sequence_id_in_login(gateway):
    c = MyClient(gateway.host, gateway.port)
    c.read_greeting()
    body = struct.pack("<IIB", DEFAULT_CAPS, 1 << 24, 45) + b"\0" * 23 + b"agent1\0\0"
    c.send_raw(packet(5, body))
    err = read_err_then_close(c)
    assert err.code == 1156
    assert_serves(gateway)


def test_bad_sequence_id_in_command(gateway):
    c = MyClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic")
    c.send_raw(packet(3, b"\x03select 1"))
    err = read_err_then_close(c)
    assert err.code == 1156
    assert_serves(gateway)


def test_empty_and_unknown_commands_close(gateway):
    for payload, code in ((b"", 1047), (b"\x7f", 1047), (b"\xee junk", 1047)):
        c = MyClient(gateway.host, gateway.port)
        c.login(AGENT, AGENT_PASSWORD, db="clinic")
        c.send_raw(packet(0, payload))
        assert read_err_then_close(c).code == code
    assert_serves(gateway)


def test_malformed_handshake_responses(gateway):
    bodies = [
        b"\x00\x02\x00\x00",                                          # too short
        struct.pack("<IIB", 0, 0, 45) + b"\0" * 23 + b"u\0\0",        # no PROTOCOL_41
        struct.pack("<IIB", DEFAULT_CAPS, 0, 45) + b"\0" * 23 + b"u",  # user without NUL
        struct.pack("<IIB", DEFAULT_CAPS, 0, 45) + b"\0" * 23 + b"u\0\xfe\xff\xff",  # auth length past the end
        struct.pack("<IIB", DEFAULT_CAPS, 0, 45) + b"\0" * 23 + b"x" * 300 + b"\0\0",  # user name too long
    ]
    for body in bodies:
        c = MyClient(gateway.host, gateway.port)
        c.read_greeting()
        c.send_raw(packet(1, body))
        err = read_err_then_close(c)
        assert err.code == 1043, err
    assert_serves(gateway)


def test_ssl_request_then_garbage(gateway):
    c = MyClient(gateway.host, gateway.port)
    c.read_greeting()
    c.send_raw(packet(1, struct.pack("<IIB", DEFAULT_CAPS | (1 << 11), 1 << 24, 45) + b"\0" * 23))
    c.send_raw(b"this is not a TLS ClientHello at all" * 10)
    assert c.closed_by_server()
    assert_serves(gateway)


def test_truncated_packets_then_close(gateway):
    for cut in (1, 2, 3, 4, 10):
        c = MyClient(gateway.host, gateway.port)
        c.login(AGENT, AGENT_PASSWORD, db="clinic")
        c.send_raw(packet(0, b"\x03select 1234567890")[:cut])
        c.close()
        c = MyClient(gateway.host, gateway.port)
        c.read_greeting()
        c.send_raw(packet(1, b"\x00" * 40)[:cut + 4])
        c.close()
    time.sleep(0.2)
    assert_serves(gateway)


def test_idle_handshake_times_out(start_gateway):
    gw = start_gateway({"limits": {"auth_timeout_ms": 300}})
    c = MyClient(gw.host, gw.port)
    c.read_greeting()
    err = read_err_then_close(c, timeout=5)
    assert err.code == 1043 and "timeout" in err.message


def test_slow_reader_memory_stays_bounded(gateway):
    """A client that stops reading a 150 MB result: phigate stops reading the
    upstream (backpressure), its memory stays bounded, and the result completes
    unchanged once the client reads again."""
    c = MyClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, db="bench")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    rss0 = gateway.rss_kb()
    c.command(COM_QUERY, b"select seq, repeat('q', 1000) from seq_1_to_150000")
    time.sleep(2.0)
    grown = gateway.rss_kb() - rss0
    assert grown < 32 * 1024, f"phigate grew by {grown} kB while the client did not read"
    res = c.read_results()
    assert len(res[0]["rows"]) == 150000 and res[0]["rows"][-1][0] == b"150000"
    c.close()


def test_many_concurrent_sessions(gateway):
    errors = []

    def worker(i):
        try:
            c = MyClient(gateway.host, gateway.port)
            c.login(AGENT, AGENT_PASSWORD, db="clinic", tls=(i % 3 == 0))
            for _ in range(20):
                assert c.query("select count(*) from wards")[0]["rows"] == [(b"10",)]
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert_serves(gateway)


def test_upstream_killed_mid_session(gateway, stack):
    ids = "select id from information_schema.processlist where user = 'phigate_app'"
    before = set(stack.root_sql(ids).split())
    c = MyClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic")
    mine = set(stack.root_sql(ids).split()) - before  # the upstream session phigate opened for us
    assert len(mine) == 1, mine
    stack.root_sql(f"kill {mine.pop()}")
    with pytest.raises((MyError, Closed, OSError)):
        c.query("select 1")
        c.query("select 1")
    c.close()
    assert_serves(gateway)


def test_hung_upstream_catalog_does_not_stall_other_sessions(start_gateway, upstream_secret_file, my_via):
    """An upstream that accepts but never answers: its catalog loads on a worker thread, so phigate
    starts at once and sessions on a healthy upstream run while a session for the hung one waits,
    then fails with the reason."""
    silent = SilentServer()
    try:
        started = time.monotonic()
        gw = start_gateway({"upstreams": {"hung": {"protocol": "mysql", "host": "127.0.0.1", "port": silent.port,
                                                   "user": "phigate_app", "database": "clinic",
                                                   "connect_timeout_ms": 3000, "tls": "disable",
                                                   "password_file": str(upstream_secret_file)}},
                            "roles": {"tester": {"upstreams": ["clinic", "bench", "nowhere", "hung"]}}})
        assert time.monotonic() - started < 2.5, "phigate waited for the hung upstream's catalog to start"
        outcome = {}

        def connect_to_hung():
            try:
                with my_via(gw, db="hung"):
                    outcome["result"] = "logged in?!"
            except pymysql.MySQLError as e:
                outcome["result"] = e.args
        t = threading.Thread(target=connect_to_hung)
        t.start()
        time.sleep(0.3)  # that login now waits on the hung upstream's catalog
        slowest = 0.0
        with my_via(gw) as conn, conn.cursor() as cur:
            for _ in range(5):
                t0 = time.monotonic()
                cur.execute("select count(*) from wards")
                assert cur.fetchone() == (10,)
                slowest = max(slowest, time.monotonic() - t0)
                time.sleep(0.2)
        t.join(30)
        assert not t.is_alive()
        code, msg = outcome["result"]
        assert code == 1105 and "catalog is not loaded" in msg, outcome
        assert "cannot read the catalog of MySQL upstream hung" in gw.log()
        assert slowest < 1.0, f"a query on a healthy upstream took {slowest:.1f} s while another upstream hung"
    finally:
        silent.close()
