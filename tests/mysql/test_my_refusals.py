"""What phigate refuses and how: commands that bypass SQL (COM_CHANGE_USER,
COM_FIELD_LIST, COM_PROCESS_KILL, replication, ...), LOAD DATA LOCAL INFILE,
server-side cursors, unknown statement ids, and statements the policy
engine refuses (1142 / 42000, nothing sent upstream).  A refused command
leaves the session usable."""

import struct

import pytest

from mywire import (COM_BINLOG_DUMP, COM_CHANGE_USER, COM_FIELD_LIST, COM_PROCESS_KILL, COM_STATISTICS,
                    COM_STMT_EXECUTE, COM_STMT_FETCH, LOCAL_FILES, DEFAULT_CAPS, MyClient, MyError)
from myharness import AGENT, AGENT_PASSWORD, READER, READER_PASSWORD, run_mariadb, run_prepared


@pytest.fixture
def client(gateway):
    c = MyClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic")
    yield c
    c.close()


@pytest.mark.parametrize("cmd,payload", [
    (COM_CHANGE_USER, b"root\0\0clinic\0"),
    (COM_FIELD_LIST, b"wards\0"),
    (COM_STATISTICS, b""),
    (COM_PROCESS_KILL, struct.pack("<I", 1)),
    (COM_BINLOG_DUMP, struct.pack("<IHI", 4, 0, 1) + b"mysql-bin.000001"),
    (COM_STMT_FETCH, struct.pack("<II", 1, 10)),
])
def test_commands_that_bypass_sql_are_refused(client, cmd, payload):
    with pytest.raises(MyError) as e:
        client.simple(cmd, payload)
    assert (e.value.code, e.value.sqlstate) == (1235, "42000")
    assert "phigate" in e.value.message
    assert client.query("select 'still here'")[0]["rows"] == [(b"still here",)]


def test_unknown_statement_id(client):
    with pytest.raises(MyError) as e:
        client.simple(COM_STMT_EXECUTE, struct.pack("<IBI", 77, 0, 1))
    assert e.value.code == 1243
    assert client.query("select 1")[0]["rows"] == [(b"1",)]


def test_cursor_execute_refused(client):
    stmt_id, _, _ = client.prepare("select id from wards")
    with pytest.raises(MyError) as e:
        client.simple(COM_STMT_EXECUTE, struct.pack("<IBI", stmt_id, 1, 1))  # CURSOR_TYPE_READ_ONLY
    assert e.value.code == 1235 and "cursor" in e.value.message
    assert client.query("select 2")[0]["rows"] == [(b"2",)]


def test_local_infile_never_offered_nor_passed(gateway, tmp_path, my_direct, scratch_name):
    """The client may ask for LOCAL INFILE: phigate masks the capability off both
    ways, so the server refuses LOAD DATA LOCAL and no file byte moves."""
    t = scratch_name("infile")
    secret = tmp_path / "secret.csv"
    secret.write_text("1,leak\n")
    with my_direct(db="bench") as d:
        d.cursor().execute(f"create table {t} (id int, v varchar(20))")
    try:
        r = run_mariadb(gateway.host, gateway.port, AGENT, AGENT_PASSWORD,
                        f"load data local infile '{secret}' into table {t} fields terminated by ','",
                        db="bench", args=["--local-infile=1", "--skip-ssl"])
        assert r.returncode != 0
        assert "ERROR" in r.stderr
        with my_direct(db="bench") as d:
            cur = d.cursor()
            cur.execute(f"select count(*) from {t}")
            assert cur.fetchall() == ((0,),)
    finally:
        with my_direct(db="bench") as d:
            d.cursor().execute(f"drop table if exists {t}")
    # Even a client that claims CLIENT_LOCAL_FILES does not get it passed on.
    c = MyClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, db="bench", caps=DEFAULT_CAPS | LOCAL_FILES)
    with pytest.raises(MyError):
        c.query(f"load data local infile '{secret}' into table wards")
    c.close()


# ---- the policy engine's refusals ------------------------------------------------------
# The reader role has the agent defaults: read and session allowed, write / DDL denied.

def test_denied_write_is_1142_and_never_reaches_the_database(gateway, my_direct, scratch_name):
    t = scratch_name("deny")
    with my_direct(db="bench") as d:
        d.cursor().execute(f"create table {t} (id int)")
    try:
        c = MyClient(gateway.host, gateway.port)
        c.login(READER, READER_PASSWORD, db="bench")
        with pytest.raises(MyError) as e:
            c.query(f"insert into {t} values (1)")
        assert (e.value.code, e.value.sqlstate) == (1142, "42000")
        assert "refused by phigate" in e.value.message or "held for approval" in e.value.message
        with pytest.raises(MyError) as e:
            c.prepare(f"delete from {t}")
        assert e.value.code == 1142
        c.close()
        with my_direct(db="bench") as d:
            cur = d.cursor()
            cur.execute(f"select count(*) from {t}")
            assert cur.fetchall() == ((0,),)
    finally:
        with my_direct(db="bench") as d:
            d.cursor().execute(f"drop table if exists {t}")


def test_denied_ddl_through_prepared_statements(gateway, my_direct, scratch_name):
    t = scratch_name("ddl")
    out = run_prepared(gateway.host, gateway.port, READER, READER_PASSWORD, [[f"create table {t} (id int)"]],
                       db="bench")
    assert out[0].get("errno") == 1142, out
    with my_direct(db="bench") as d:
        cur = d.cursor()
        cur.execute("select count(*) from information_schema.tables where table_schema = 'bench' and "
                    "table_name = %s", (t,))
        assert cur.fetchall() == ((0,),)


def test_phi_never_arrives_raw(gateway, my_direct):
    """Whatever the engine decides (mask in SQL, hold, deny), the raw PHI values of
    a patient never reach the agent; the stream masks what a rewrite would miss."""
    with my_direct() as d:
        cur = d.cursor()
        cur.execute("select ssn, last_name, email from patients where id = 1")
        raw = [str(v) for v in cur.fetchone()]
    c = MyClient(gateway.host, gateway.port)
    c.login(READER, READER_PASSWORD, db="clinic")
    for sql in ("select ssn, last_name, email from patients where id = 1",
                "select * from patients where id = 1"):
        try:
            res = c.query(sql)
        except MyError as e:
            assert e.code == 1142
            continue
        text = repr(res)
        for value in raw:
            assert value not in text, f"raw PHI {value!r} came back for {sql!r}"
    c.close()


# ---- session state phigate must follow --------------------------------------------------
# phigate parses with MySQL's default grammar; the upstream reports every change
# of session variables (session tracking), and a change phigate cannot follow
# ends the session with the reason.  Checked again after COM_RESET_CONNECTION,
# which resets the tracking itself.

@pytest.mark.parametrize("reset_first", [False, True])
@pytest.mark.parametrize("sql,why", [
    ("set sql_mode = 'ANSI_QUOTES'", "ANSI_QUOTES"),
    ("set sql_mode = 'NO_BACKSLASH_ESCAPES'", "NO_BACKSLASH_ESCAPES"),
    ("set names 'gbk'", "character set"),
    ("set session_track_schema = 'OFF'", "session_track_schema"),
])
def test_session_changes_phigate_cannot_follow_end_the_session(gateway, sql, why, reset_first):
    c = MyClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, db="clinic")
    if reset_first:
        c.simple(0x1F)  # COM_RESET_CONNECTION
    with pytest.raises(MyError) as e:
        c.query(sql)
    if e.value.code == 1142:
        # The engine refused it before the server saw it: the mode never changed,
        # and the session carries on under the grammar phigate parses with.
        assert not c.closed_by_server()
        c.query("select 1")
        return
    assert e.value.code == 1105 and why in e.value.message, e.value
    assert c.closed_by_server()
