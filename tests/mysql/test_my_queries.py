"""Statements through phigate give what the database gives directly: the real
mariadb client, pymysql, server-side prepared statements (perl DBD::MariaDB,
binary rows), multi-statements and multiple result sets, 16 MB continuation
rows, COM_INIT_DB / PING / RESET_CONNECTION / QUIT.  Non-PHI data only
(wards, diagnosis_codes, insurance_plans, prescriptions, sequences, scratch
tables in bench), so masking never changes the expected output.

These need the policy engine to allow the statements for the tester role
(every class allowed); while sqlpolicy cannot judge MySQL yet they fail with
1142 "statement refused by phigate" and say so."""

import hashlib
import struct

import pymysql
import pytest

from mywire import (COM_QUIT, COM_RESET_CONNECTION, COM_STMT_EXECUTE, DEFAULT_CAPS, DEPRECATE_EOF, MULTI_STATEMENTS,
                    MyClient, MyError)
from myharness import AGENT, AGENT_PASSWORD, OUTSIDER, OUTSIDER_PASSWORD, run_mariadb, run_prepared

SAME_AS_DIRECT = [
    "select * from wards order by id",
    "select code, description from diagnosis_codes order by code",
    "select * from insurance_plans order by id",
    "select id, encounter_id, drug, dose, prescriber_npi from prescriptions order by id",
    "select floor, count(*) as n, min(name) from wards group by floor order by floor",
    "select * from wards where 1 = 0",
    "select 1, null, 'caf\u00e9 \u20ac', 3.14159, cast('2020-01-02' as date), cast(-7 as signed), 1e300, hex(x'00ff')",
    "select w.name, count(*) from prescriptions p join wards w on w.id = p.id % 10 + 1 group by w.name "
    "order by w.name",
]


def direct_cli(stack, sql, db="clinic"):
    return run_mariadb(stack.host, stack.port, stack.user, stack.password, sql, db=db, args=["--skip-ssl"])


@pytest.mark.parametrize("sql", SAME_AS_DIRECT)
def test_mariadb_cli_same_as_direct(gateway, stack, sql):
    via = run_mariadb(gateway.host, gateway.port, AGENT, AGENT_PASSWORD, sql, args=["--skip-ssl"])
    direct = direct_cli(stack, sql)
    assert direct.returncode == 0, direct.stderr
    assert via.returncode == 0, via.stderr
    assert via.stdout == direct.stdout


def test_mariadb_cli_over_tls_same_as_direct(gateway, stack):
    sql = SAME_AS_DIRECT[3]
    via = run_mariadb(gateway.host, gateway.port, AGENT, AGENT_PASSWORD, sql, args=["--ssl",
                                                                                    "--ssl-verify-server-cert=0"])
    assert via.returncode == 0, via.stderr
    assert via.stdout == direct_cli(stack, sql).stdout


def test_compression_is_declined_cleanly(gateway, stack):
    """phigate never offers CLIENT_COMPRESS: a client asking for it runs uncompressed."""
    sql = SAME_AS_DIRECT[0]
    via = run_mariadb(gateway.host, gateway.port, AGENT, AGENT_PASSWORD, sql, args=["--compress", "--skip-ssl"])
    assert via.returncode == 0, via.stderr
    assert via.stdout == direct_cli(stack, sql).stdout


@pytest.mark.parametrize("sql", SAME_AS_DIRECT)
def test_pymysql_same_as_direct(gateway, my_via, my_direct, sql):
    with my_via(gateway) as v, my_direct() as d:
        cv, cd = v.cursor(), d.cursor()
        cv.execute(sql)
        cd.execute(sql)
        assert cv.description == cd.description
        assert cv.fetchall() == cd.fetchall()


def test_multi_statements_and_results(gateway, my_via, my_direct):
    sql = "select 1 as a; select code from diagnosis_codes order by code limit 3; do 1; select 'x' as c"
    flags = pymysql.constants.CLIENT.MULTI_STATEMENTS
    got = {}
    for name, conn in (("via", my_via(gateway, client_flag=flags)), ("direct", my_direct(client_flag=flags))):
        with conn:
            cur = conn.cursor()
            cur.execute(sql)
            sets = [cur.fetchall()]
            while cur.nextset():
                sets.append(cur.fetchall())
            got[name] = sets
    assert got["via"] == got["direct"]
    assert len(got["via"]) == 4


def test_multi_statements_deprecate_eof_raw(gateway):
    c = MyClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic", caps=DEFAULT_CAPS | DEPRECATE_EOF | MULTI_STATEMENTS)
    res = c.query("select id from wards order by id limit 2; do 1; select name from insurance_plans order by id")
    assert res[0]["rows"] == [(b"1",), (b"2",)]
    assert "affected_rows" in res[1]
    assert len(res[2]["rows"]) == 6
    assert c.query("select 42")[0]["rows"] == [(b"42",)]
    c.close()


def test_error_keeps_session(gateway, my_via):
    with my_via(gateway) as v:
        cur = v.cursor()
        with pytest.raises(pymysql.err.MySQLError) as e:
            cur.execute("select id from wards where id = (select id from wards)")
        assert e.value.args[0] == 1242  # Subquery returns more than 1 row: the server's own error
        cur.execute("select count(*) from wards")
        assert cur.fetchall() == ((10,),)


PREPARED = [
    ["select id, name, floor from wards where id <= ? order by id", 5],
    ["select ? as s, ? as n, cast(? as date) as d, ? + 1 as i", "text", None, "2024-02-29", 41],
    ["select code, description from diagnosis_codes where code like ? order by code", "C%"],
    ["select id, drug, dose from prescriptions where encounter_id between ? and ? order by id", 10, 60],
    ["select cast(1.5 as decimal(10,2)), cast(2 as double), cast('12:34:56' as time), "
     "cast('2021-03-04 05:06:07.123456' as datetime(6)), cast(null as char), 18446744073709551615"],
]


def test_prepared_statements_binary_rows_same_as_direct(gateway, stack):
    via = run_prepared(gateway.host, gateway.port, AGENT, AGENT_PASSWORD, PREPARED)
    direct = run_prepared(stack.host, stack.port, stack.user, stack.password, PREPARED)
    assert via == direct
    assert all("error" not in r for r in via), via


def test_prepared_writes_on_a_scratch_table(gateway, stack, my_direct, scratch_name):
    t = scratch_name("ps")
    steps = [[f"create table {t} (id int primary key auto_increment, v varchar(20), b longblob)"],
             [f"insert into {t} (v, b) values (?, ?)", "one", "x" * 70000],
             [f"insert into {t} (v, b) values (?, ?)", None, None],
             [f"update {t} set v = ? where id = ?", "uno", 1],
             [f"select id, v, length(b) from {t} order by id"],
             [f"drop table {t}"]]
    out = run_prepared(gateway.host, gateway.port, AGENT, AGENT_PASSWORD, steps, db="bench")
    assert all("error" not in r for r in out), out
    assert out[4]["rows"] == [[1, "uno", 70000], [2, None, None]]


def test_init_db_ping_and_refusals(gateway, my_via):
    with my_via(gateway) as v:
        v.ping()
        v.select_db("bench")
        cur = v.cursor()
        cur.execute("select database()")
        assert cur.fetchall() == (("bench",),)
        with pytest.raises(pymysql.err.OperationalError) as e:
            v.select_db("mysql")  # not an upstream
        assert e.value.args[0] == 1049
        cur.execute("select database()")
        assert cur.fetchall() == (("bench",),)
        v.select_db("clinic")
        cur.execute("select count(*) from wards")
        assert cur.fetchall() == ((10,),)
    with my_via(gateway, db="bench", user=OUTSIDER, password=OUTSIDER_PASSWORD) as v:
        with pytest.raises(pymysql.err.OperationalError) as e:
            v.select_db("clinic")  # an upstream the role may not use
        assert e.value.args[0] == 1044


def test_mariadb_cli_use_command(gateway):
    r = run_mariadb(gateway.host, gateway.port, AGENT, AGENT_PASSWORD, "use bench; select database(); "
                    "use clinic; select count(*) from wards", args=["--skip-ssl"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["database()", "bench", "count(*)", "10"]


def test_reset_connection(gateway):
    """COM_RESET_CONNECTION: session variables and prepared statements are gone, here and upstream."""
    c = MyClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic")
    c.query("set @x = 5")
    assert c.query("select @x")[0]["rows"] == [(b"5",)]
    stmt_id, _, _ = c.prepare("select id from wards where id = ?")
    c.simple(COM_RESET_CONNECTION)
    assert c.query("select @x is null")[0]["rows"] == [(b"1",)]
    with pytest.raises(MyError) as e:
        c.simple(COM_STMT_EXECUTE, struct.pack("<IBI", stmt_id, 0, 1) + b"\x00\x01\x03\x00" + struct.pack("<i", 1))
    assert e.value.code == 1243
    assert c.query("select 7")[0]["rows"] == [(b"7",)]
    c.close()


def test_quit_closes(gateway):
    c = MyClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic")
    c.command(COM_QUIT)
    assert c.closed_by_server()


def test_dml_affected_rows_and_insert_id(gateway, my_via, my_direct, scratch_name):
    t = scratch_name("dml")
    with my_direct(db="bench") as d:
        d.cursor().execute(f"create table {t} (id int primary key auto_increment, v int)")
    try:
        with my_via(gateway, db="bench") as v:
            cur = v.cursor()
            assert cur.execute(f"insert into {t} (v) values (1), (2), (3)") == 3
            assert cur.lastrowid == 1
            assert cur.execute(f"update {t} set v = v + 1 where v >= 2") == 2
            v.commit()
        with my_direct(db="bench") as d:
            cur = d.cursor()
            cur.execute(f"select v from {t} order by id")
            assert cur.fetchall() == ((1,), (3,), (4,))
    finally:
        with my_direct(db="bench") as d:
            d.cursor().execute(f"drop table if exists {t}")


def test_stored_procedure_multiple_results(gateway, my_via, my_direct, scratch_name):
    p = scratch_name("proc")
    with my_direct(db="bench") as d:
        d.cursor().execute(f"create procedure {p}() begin select 1 as a; select 2 as b, 3 as c; end")
    try:
        with my_via(gateway, db="bench") as v:
            cur = v.cursor()
            cur.execute(f"call {p}()")
            sets = [cur.fetchall()]
            while cur.nextset():
                sets.append(cur.fetchall())
            assert sets[:2] == [((1,),), ((2, 3),)]
    finally:
        with my_direct(db="bench") as d:
            d.cursor().execute(f"drop procedure if exists {p}")


def test_large_result_same_digest(gateway, my_via, my_direct):
    sql = "select seq, repeat(char(65 + seq % 26), 200) from seq_1_to_100000"
    digests = []
    for conn in (my_via(gateway, db="bench"), my_direct(db="bench")):
        with conn:
            cur = conn.cursor(pymysql.cursors.SSCursor)
            cur.execute(sql)
            h, n = hashlib.sha256(), 0
            for row in cur:
                h.update(repr(row).encode())
                n += 1
            digests.append((n, h.hexdigest()))
    assert digests[0] == digests[1] and digests[0][0] == 100000


def test_rows_over_16mb_use_continuation_packets(gateway, stack, my_via):
    """A row larger than one packet crosses phigate as continuation packets."""
    stack.root_sql("set global max_allowed_packet = 64 * 1024 * 1024")
    n = 17 * 1024 * 1024 + 3
    with my_via(gateway, db="bench") as v:
        cur = v.cursor()
        cur.execute(f"select repeat('z', {n}), 'after'")
        big, after = cur.fetchone()
        assert len(big) == n and big == "z" * n and after == "after"
        cur.execute("select 1")
        assert cur.fetchall() == ((1,),)


def test_statement_rate_limit(start_gateway):
    gw = start_gateway({"identities": {AGENT: {"statements_per_second": 2}}})
    c = MyClient(gw.host, gw.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic")
    codes = []
    for _ in range(6):
        try:
            c.query("select 1")
            codes.append(0)
        except MyError as e:
            codes.append(e.code)
    assert 1226 in codes and codes[0] == 0
    c.close()


def test_send_long_data_and_binary_execute_raw(gateway):
    """COM_STMT_SEND_LONG_DATA (no response) in two pieces, then EXECUTE with the
    parameter left out of the packet, binary row back."""
    c = MyClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic")
    stmt_id, ncols, nparams = c.prepare("select length(?) as n")
    assert (ncols, nparams) == (1, 1)
    for piece in (b"a" * 60000, b"b" * 70000):
        c.command(0x18, struct.pack("<IH", stmt_id, 0) + piece)  # no answer comes
    # null bitmap 0, new params bound, type BLOB; the value itself came as long data
    c.command(COM_STMT_EXECUTE, struct.pack("<IBI", stmt_id, 0, 1) + b"\x00\x01\xfc\x00")
    res = c.read_results(binary=True)
    row = res[0]["rows"][0]
    assert row[0] == 0 and int.from_bytes(row[2:], "little") == 130000  # INT or BIGINT
    c.command(0x19, struct.pack("<I", stmt_id))  # COM_STMT_CLOSE: no answer either
    assert c.query("select 5")[0]["rows"] == [(b"5",)]
    c.close()


def test_set_option_multi_statements(gateway):
    """COM_SET_OPTION turns multi-statements on and off (answered with an EOF)."""
    c = MyClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic")
    assert c.simple(0x1B, b"\x00\x00")[0] == 0xFE  # MYSQL_OPTION_MULTI_STATEMENTS_ON
    res = c.query("select 1; select 2")
    assert [r["rows"] for r in res] == [[(b"1",)], [(b"2",)]]
    assert c.simple(0x1B, b"\x01\x00")[0] == 0xFE  # ..._OFF
    with pytest.raises(MyError):
        c.query("select 1; select 2")
    c.close()
