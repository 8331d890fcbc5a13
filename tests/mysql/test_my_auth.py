"""Handshake and authentication: phigate's own greeting, mysql_native_password
and caching_sha2_password (full authentication over TLS against the SCRAM
verifier), AuthSwitchRequest between the two, the refusals and their codes."""

import ssl

import pymysql
import pytest

from mywire import (DEFAULT_CAPS, DEPRECATE_EOF, MyClient, MyError, PROTOCOL_41, COMPRESS, LOCAL_FILES,
                    QUERY_ATTRIBUTES)
from myharness import (AGENT, AGENT_PASSWORD, OUTSIDER, OUTSIDER_PASSWORD, SHA2ONLY, SHA2ONLY_PASSWORD,
                       run_mariadb)


def tls_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_greeting_is_phigates_own(gateway, stack):
    a, b = MyClient(gateway.host, gateway.port), MyClient(gateway.host, gateway.port)
    ga, gb = a.read_greeting(), b.read_greeting()
    a.close(), b.close()
    assert ga["salt"] != gb["salt"] and len(ga["salt"]) == 20 and 0 not in ga["salt"]
    assert ga["connection_id"] != gb["connection_id"] and ga["connection_id"] != 0
    assert ga["version"].endswith("-phigate")
    assert ga["caps"] & PROTOCOL_41
    # Declined and refused features are never offered.
    assert not ga["caps"] & (COMPRESS | LOCAL_FILES | QUERY_ATTRIBUTES)
    assert ga["plugin"] == "caching_sha2_password"  # TLS is on offer in this configuration


def test_native_password_plain(gateway):
    c = MyClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic", plugin="mysql_native_password")
    assert c.auth_trace == ["ok"]
    assert c.query("select 1+1")[0]["rows"] == [(b"2",)]
    c.close()


def test_plain_client_asking_sha2_is_switched_to_native(gateway):
    """No TLS: caching_sha2 cannot send the password, so a native identity is switched."""
    c = MyClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic", plugin="caching_sha2_password")
    assert c.auth_trace == ["switch:mysql_native_password", "ok"]
    c.close()


def test_sha2_full_authentication_over_tls(gateway):
    c = MyClient(gateway.host, gateway.port)
    c.login(SHA2ONLY, SHA2ONLY_PASSWORD, db="clinic", tls=True, plugin="caching_sha2_password")
    assert c.auth_trace == ["more:04", "ok"]  # always full authentication
    assert c.query("select 'tls'")[0]["rows"] == [(b"tls",)]
    c.close()


def test_native_client_switched_to_sha2_for_scram_only_identity(gateway):
    c = MyClient(gateway.host, gateway.port)
    c.login(SHA2ONLY, SHA2ONLY_PASSWORD, db="clinic", tls=True, plugin="mysql_native_password")
    assert c.auth_trace == ["switch:caching_sha2_password", "more:04", "ok"]
    c.close()


def test_sha2_without_tls_is_refused_clearly(gateway):
    c = MyClient(gateway.host, gateway.port)
    with pytest.raises(MyError) as e:
        c.login(SHA2ONLY, SHA2ONLY_PASSWORD, db="clinic", plugin="caching_sha2_password")
    assert e.value.code == 1045 and e.value.sqlstate == "28000"
    assert "TLS" in e.value.message and "RSA" in e.value.message
    assert c.closed_by_server()


# A SCRAM-only identity without TLS is test_sha2_without_tls_is_refused_clearly.
@pytest.mark.parametrize("user,password,tls", [(AGENT, "wrong", False), ("nobody", "wrong", False),
                                               (AGENT, "wrong", True), ("nobody", "wrong", True),
                                               (SHA2ONLY, "wrong", True)])
def test_access_denied_is_1045_and_the_same_for_unknown_users(gateway, user, password, tls):
    c = MyClient(gateway.host, gateway.port)
    with pytest.raises(MyError) as e:
        c.login(user, password, db="clinic", tls=tls)
    assert (e.value.code, e.value.sqlstate) == (1045, "28000")
    assert e.value.message == f"Access denied for user '{user}'@'127.0.0.1' (using password: YES)"
    assert c.closed_by_server()


def test_empty_password_is_denied(gateway):
    c = MyClient(gateway.host, gateway.port)
    with pytest.raises(MyError) as e:
        c.login(AGENT, "", db="clinic", plugin="mysql_native_password")
    assert e.value.code == 1045 and "using password: NO" in e.value.message


def test_pymysql_native_and_sha2_over_tls(gateway, my_via):
    c = my_via(gateway)
    with c.cursor() as cur:
        cur.execute("select count(*) from wards")
        assert cur.fetchall() == ((10,),)
    c.close()
    c = my_via(gateway, user=SHA2ONLY, password=SHA2ONLY_PASSWORD, ssl=tls_ctx())
    with c.cursor() as cur:
        cur.execute("select count(*) from diagnosis_codes")
        assert cur.fetchall() == ((16,),)
    c.close()


def test_mariadb_client_plain_and_tls(gateway):
    r = run_mariadb(gateway.host, gateway.port, AGENT, AGENT_PASSWORD, "select count(*) from wards",
                    args=["--skip-ssl"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["count(*)", "10"]
    r = run_mariadb(gateway.host, gateway.port, SHA2ONLY, SHA2ONLY_PASSWORD, "select count(*) from wards",
                    args=["--ssl", "--ssl-verify-server-cert=0"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["count(*)", "10"]
    r = run_mariadb(gateway.host, gateway.port, SHA2ONLY, SHA2ONLY_PASSWORD, "select 1", args=["--skip-ssl"])
    assert r.returncode != 0 and "ERROR 1045 (28000)" in r.stderr and "TLS" in r.stderr


def test_unknown_database_and_not_allowed_database(gateway):
    c = MyClient(gateway.host, gateway.port)
    with pytest.raises(MyError) as e:
        c.login(AGENT, AGENT_PASSWORD, db="mysql")
    assert (e.value.code, e.value.sqlstate) == (1049, "42000")
    c = MyClient(gateway.host, gateway.port)
    with pytest.raises(MyError) as e:
        c.login(OUTSIDER, OUTSIDER_PASSWORD, db="clinic")
    assert (e.value.code, e.value.sqlstate) == (1044, "42000")


def test_no_database_takes_the_roles_first(gateway):
    c = MyClient(gateway.host, gateway.port)
    c.login(OUTSIDER, OUTSIDER_PASSWORD)
    assert c.query("select database()")[0]["rows"] == [(b"bench",)]
    c.close()


def test_upstream_down_is_reported(gateway):
    c = MyClient(gateway.host, gateway.port)
    with pytest.raises(MyError) as e:
        c.login(AGENT, AGENT_PASSWORD, db="nowhere")
    # Either the upstream or its catalog (read from the same server) is what is missing.
    assert e.value.code == 1105
    assert "could not open the upstream database" in e.value.message or "catalog is not loaded" in e.value.message


def test_unsafe_client_charset_refused(gateway):
    c = MyClient(gateway.host, gateway.port)
    with pytest.raises(MyError) as e:
        c.login(AGENT, AGENT_PASSWORD, db="clinic", charset=28)  # gbk_chinese_ci
    assert e.value.code == 1115 and "gbk" in e.value.message


def test_tls_required_refuses_plain(start_gateway):
    gw = start_gateway({"tls": {"require": True}})
    c = MyClient(gw.host, gw.port)
    with pytest.raises(MyError) as e:
        c.login(AGENT, AGENT_PASSWORD, db="clinic", plugin="mysql_native_password")
    assert (e.value.code, e.value.sqlstate) == (3159, "HY000")
    c = MyClient(gw.host, gw.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic", tls=True)
    assert c.query("select 1")[0]["rows"] == [(b"1",)]
    c.close()


def test_without_tls_configured_native_is_offered(start_gateway):
    gw = start_gateway({"tls": None})
    c = MyClient(gw.host, gw.port)
    g = c.read_greeting()
    assert g["plugin"] == "mysql_native_password" and not g["caps"] & (1 << 11)
    c.login(AGENT, AGENT_PASSWORD, db="clinic")
    assert c.auth_trace == ["ok"]
    c.close()


def test_max_connections_per_identity(start_gateway):
    gw = start_gateway({"identities": {OUTSIDER: {"max_connections": 1}}})
    a = MyClient(gw.host, gw.port)
    a.login(OUTSIDER, OUTSIDER_PASSWORD, db="bench")
    b = MyClient(gw.host, gw.port)
    with pytest.raises(MyError) as e:
        b.login(OUTSIDER, OUTSIDER_PASSWORD, db="bench")
    assert e.value.code == 1203
    a.close()


def test_deprecate_eof_negotiated_and_relayed(gateway):
    """Client and upstream agree on CLIENT_DEPRECATE_EOF: result sets end with OK packets."""
    c = MyClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic", caps=DEFAULT_CAPS | DEPRECATE_EOF)
    res = c.query("select id, name from wards order by id limit 3")
    assert [r[0] for r in res[0]["rows"]] == [b"1", b"2", b"3"]
    c.close()


def test_pymysql_rejects_wrong_password(gateway, my_via):
    with pytest.raises(pymysql.err.OperationalError) as e:
        my_via(gateway, password="not-it")
    assert e.value.args[0] == 1045


def test_upstream_tls_required_but_not_offered(start_gateway, stack):
    """The stack's MariaDB has no TLS: tls: require must refuse rather than send
    phigate's credentials in the clear (prefer falls back to plain)."""
    # scripts/stack.sh starts MariaDB without TLS: the premise is asserted, never skipped.
    assert stack.root_sql("select @@have_ssl").strip() != "YES", "the stack's MariaDB offers TLS"
    gw = start_gateway({"upstreams": {"bench": {"tls": "require"}, "clinic": {"tls": "prefer"}},
                        "phigate": {"log_level": "info"}})
    c = MyClient(gw.host, gw.port)
    with pytest.raises(MyError) as e:
        c.login(AGENT, AGENT_PASSWORD, db="bench")
    assert e.value.code == 1105
    c = MyClient(gw.host, gw.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic")
    assert c.query("select 1")[0]["rows"] == [(b"1",)]
    c.close()
