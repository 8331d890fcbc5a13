"""Client authentication and TLS: agents log in to phigate with their own SCRAM
secret; failures come back with the SQLSTATE a PostgreSQL client expects."""

import socket
import ssl
import struct

import psycopg
import pytest

from harness import AGENT, AGENT_PASSWORD, OUTSIDER, OUTSIDER_PASSWORD
from pgwire import RawClient, ServerError, parse_error_fields, rows_of


def login_error(gw, user, password, database):
    """Log in with the raw client and return the ErrorResponse phigate sends (fails if login succeeds)."""
    c = RawClient(gw.host, gw.port)
    try:
        with pytest.raises(ServerError) as caught:
            c.login(user, password, database)
        assert c.wait_closed(), "phigate kept the connection open after a FATAL error"
        return caught.value
    finally:
        c.close()


def test_correct_password_logs_in_and_queries(gateway):
    c = RawClient(gateway.host, gateway.port)
    try:
        startup = c.login(AGENT, AGENT_PASSWORD, "clinic")
        types = [t for t, _ in startup]
        assert types[-1] == b"Z" and b"K" in types and b"S" in types
        assert rows_of(c.query("select name from wards where id = 1")) == [("Cardiology East",)]
    finally:
        c.close()


def test_wrong_password_is_28P01(gateway):
    err = login_error(gateway, AGENT, "not-the-password", "clinic")
    assert err.sqlstate == "28P01"
    assert err.message == f'password authentication failed for user "{AGENT}"'
    assert err.fields["S"] == "FATAL"


def test_unknown_identity_is_28P01_with_the_same_message_shape(gateway):
    known = login_error(gateway, AGENT, "wrong", "clinic")
    unknown = login_error(gateway, "nobody_like_this", "wrong", "clinic")
    assert unknown.sqlstate == known.sqlstate == "28P01"
    assert unknown.message == known.message.replace(AGENT, "nobody_like_this")
    assert sorted(unknown.fields) == sorted(known.fields)


def test_unknown_identity_is_refused_through_psql_like_a_wrong_password(gateway, psql_via):
    wrong = psql_via(gateway, "select 1", password="wrong")
    unknown = psql_via(gateway, "select 1", user="nobody_like_this", password="wrong")
    assert wrong.returncode == unknown.returncode == 2
    assert f'password authentication failed for user "{AGENT}"' in wrong.stderr
    assert 'password authentication failed for user "nobody_like_this"' in unknown.stderr


def test_unknown_database_is_3D000(gateway):
    err = login_error(gateway, AGENT, AGENT_PASSWORD, "no_such_database")
    assert err.sqlstate == "3D000"
    assert "no_such_database" in err.message


def test_role_without_the_upstream_is_42501(gateway):
    err = login_error(gateway, OUTSIDER, OUTSIDER_PASSWORD, "clinic")
    assert err.sqlstate == "42501"
    assert "clinic" in err.message


def test_role_with_the_upstream_gets_in(gateway):
    c = RawClient(gateway.host, gateway.port)
    try:
        c.login(OUTSIDER, OUTSIDER_PASSWORD, "bench")
        assert rows_of(c.query("select current_database()")) == [("bench",)]
    finally:
        c.close()


def test_psycopg_sees_the_auth_error_messages(gateway):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**gateway.connect_kwargs("clinic", password="wrong"))
    with pytest.raises(psycopg.OperationalError, match="no_such_database"):
        psycopg.connect(**gateway.connect_kwargs("no_such_database"))


def test_silent_client_is_disconnected_after_auth_timeout(start_gateway):
    gw = start_gateway({"limits": {"auth_timeout_ms": 500}})
    c = RawClient(gw.host, gw.port)
    try:
        t, body = c.read_message()  # we never send a startup packet
        assert t == b"E"
        assert "timeout" in parse_error_fields(body)["M"]
        assert c.wait_closed()
    finally:
        c.close()


# ---- TLS ---------------------------------------------------------------------

def test_sslmode_require_uses_tls(gateway):
    with psycopg.connect(**gateway.connect_kwargs("clinic", sslmode="require")) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select count(*) from wards").fetchone() == (10,)


def test_channel_binding_scram_sha_256_plus(gateway):
    with psycopg.connect(**gateway.connect_kwargs("clinic", sslmode="require", channel_binding="require")) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select 1").fetchone() == (1,)
    assert "SCRAM-SHA-256-PLUS" in gateway.log()


def test_channel_binding_with_wrong_password_fails(gateway):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**gateway.connect_kwargs("clinic", password="wrong", sslmode="require",
                                                 channel_binding="require"))


def test_tls_required_refuses_a_plain_connection(start_gateway):
    gw = start_gateway({"tls": {"require": True}})
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(**gw.connect_kwargs("clinic", sslmode="disable"))
    assert "TLS" in str(caught.value)
    # The same on the wire: SQLSTATE 28000.
    err = login_error(gw, AGENT, AGENT_PASSWORD, "clinic")
    assert err.sqlstate == "28000"
    assert "TLS" in err.message
    # And TLS connections are served.
    with psycopg.connect(**gw.connect_kwargs("clinic", sslmode="require")) as conn:
        assert conn.execute("select count(*) from wards").fetchone() == (10,)


def test_ssl_request_is_refused_when_tls_is_not_configured(start_gateway):
    gw = start_gateway({"tls": None})
    with pytest.raises(psycopg.OperationalError, match="(?i)ssl|tls"):
        psycopg.connect(**gw.connect_kwargs("clinic", sslmode="require"))
    with psycopg.connect(**gw.connect_kwargs("clinic", sslmode="prefer")) as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("select 1").fetchone() == (1,)


def test_tls_handshake_garbage_does_not_hurt(gateway, assert_serves):
    """SSLRequest, phigate says 'S', then the client sends no valid TLS: the connection ends, phigate lives."""
    with socket.create_connection((gateway.host, gateway.port), timeout=10) as s:
        s.sendall(struct.pack("!II", 8, 80877103))
        assert s.recv(1) == b"S"
        s.sendall(b"\x16\x03\x01\x00\x05hello-this-is-not-tls" * 10)
        s.settimeout(5)
        try:
            while s.recv(4096):
                pass
        except (ConnectionResetError, socket.timeout):
            pass
    assert_serves(gateway)


def test_tls_with_python_ssl_module_and_raw_protocol(gateway):
    """A hand-made TLS client (Python's ssl module): SSLRequest, handshake, then the normal startup."""
    raw = socket.create_connection((gateway.host, gateway.port), timeout=10)
    raw.sendall(struct.pack("!II", 8, 80877103))
    assert raw.recv(1) == b"S"
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = RawClient.over(ctx.wrap_socket(raw, server_hostname="localhost"))
    try:
        c.login(AGENT, AGENT_PASSWORD, "clinic")
        assert rows_of(c.query("select 'over tls'")) == [("over tls",)]
    finally:
        c.close()
