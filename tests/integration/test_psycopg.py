"""psycopg 3 (libpq underneath) through phigate: the extended protocol, binary
results, pipelining, prepared statements, COPY, transactions and server-side
cursors give the same results as a direct connection."""

import datetime
import decimal
import threading
import time

import psycopg
import pytest
from psycopg import errors, sql


@pytest.fixture
def both(gateway, stack):
    """both(fn, dbname='clinic') -> (fn(connection through phigate), fn(direct connection))."""
    def run(fn, dbname="clinic", **connect_extra):
        results = []
        for kwargs in (gateway.connect_kwargs(dbname), stack.connect_kwargs(dbname)):
            kwargs.update(connect_extra)
            with psycopg.connect(**kwargs) as conn:
                results.append(fn(conn))
        return tuple(results)
    return run


@pytest.fixture
def via(gateway):
    """A psycopg connection through phigate (autocommit), closed after the test."""
    with psycopg.connect(**gateway.connect_kwargs("bench"), autocommit=True) as conn:
        yield conn


@pytest.fixture
def scratch_table(psql_direct, scratch_name):
    """A scratch table in bench: (id int primary key, name text, amount numeric, seen timestamptz, data bytea)."""
    table = scratch_name("pyco")
    r = psql_direct(f"create table {table} (id int primary key, name text, amount numeric, "
                    f"seen timestamptz, data bytea)", dbname="bench")
    assert r.returncode == 0, r.stderr
    yield table
    psql_direct(f"drop table if exists {table}", dbname="bench")


def test_extended_protocol_with_parameters(both):
    def fn(conn):
        cur = conn.execute("select id, name, floor from wards where floor >= %s and name like %s order by id",
                           (3, "%o%"))
        rows = cur.fetchall()
        cur = conn.execute("select %s::int + %s, %s::text || '!', %s::numeric * 2, %s::date, %s::int[]",
                           (40, 2, "hé", decimal.Decimal("1.25"), datetime.date(2024, 2, 29), [1, None, 3]))
        return rows, cur.fetchall()
    via, direct = both(fn)
    assert via == direct
    assert via[1] == [(42, "hé!", decimal.Decimal("2.50"), datetime.date(2024, 2, 29), [1, None, 3])]


def test_null_and_many_parameters(both):
    def fn(conn):
        params = list(range(500)) + [None]
        placeholders = ", ".join(["%s::int"] * len(params))
        return conn.execute(f"select {placeholders}", params).fetchone()
    via, direct = both(fn)
    assert via == direct
    assert via[-1] is None and via[499] == 499


def test_binary_results(both):
    def fn(conn):
        cur = conn.cursor(binary=True)
        cur.execute("select id, name, floor::int8, floor * 1.5::numeric, now() - now(), "
                    "'\\x00ff10'::bytea, array[id, floor], (id % 2 = 0), null::text "
                    "from wards order by id")
        return cur.fetchall()
    via, direct = both(fn)
    assert via == direct
    assert len(via) == 10
    assert via[0][5] == b"\x00\xff\x10"


def test_pipeline_mode(both):
    def fn(conn):
        curs = []
        with conn.pipeline():
            for i in range(50):
                curs.append(conn.execute("select %s::int, name from wards where id = %s", (i, i % 10 + 1)))
        return [c.fetchall() for c in curs]
    via, direct = both(fn)
    assert via == direct
    assert via[3] == [(3, "Orthopedics")]


def test_pipeline_with_an_error_in_the_middle(both):
    """An error aborts the rest of the pipeline batch; the connection then works again."""
    def fn(conn):
        conn.autocommit = True
        first = None
        try:
            with conn.pipeline():
                first = conn.execute("select 1")
                conn.execute("select 1/0")
                conn.execute("select 2")
        except errors.DivisionByZero as e:
            outcome = ("DivisionByZero", e.sqlstate)
        else:
            outcome = ("no error",)
        return outcome, first.fetchall(), conn.execute("select 'after'").fetchall()
    via, direct = both(fn)
    assert via == direct
    assert via[0] == ("DivisionByZero", "22012")


def test_named_prepared_statements(both):
    def fn(conn):
        out = []
        for i in range(8):
            cur = conn.execute("select name, floor from wards where id = %s", (i + 1,), prepare=True)
            out.append(cur.fetchall())
        prepared = conn.execute("select count(*) from pg_prepared_statements").fetchone()[0]
        return out, prepared
    via, direct = both(fn)
    assert via == direct
    assert via[1] >= 1  # the statement really was prepared on the server


def test_prepared_statement_survives_a_failed_execution(both):
    def fn(conn):
        conn.autocommit = True
        q = "select 100 / %s::int"
        results = []
        for d in (1, 2, 0, 4):
            try:
                results.append(conn.execute(q, (d,), prepare=True).fetchone())
            except errors.DivisionByZero:
                results.append("22012")
        return results
    via, direct = both(fn)
    assert via == direct == [(100,), (50,), "22012", (25,)]


def test_copy_from_stdin(via, scratch_table):
    rows = [(i, f"name {i}", decimal.Decimal(i) / 4, datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
             + datetime.timedelta(minutes=i), bytes([i % 256]) * 3) for i in range(1, 20001)]
    with via.cursor() as cur:
        with cur.copy(f"copy {scratch_table} (id, name, amount, seen, data) from stdin") as copy:
            for row in rows:
                copy.write_row(row)
        assert cur.rowcount == 20000
        cur.execute(f"select id, name, amount, seen, data from {scratch_table} order by id")
        assert cur.fetchall() == rows


def test_copy_from_stdin_binary_format(via, scratch_table):
    rows = [(i, f"n{i}") for i in range(1, 1001)]
    with via.cursor() as cur:
        with cur.copy(f"copy {scratch_table} (id, name) from stdin (format binary)") as copy:
            copy.set_types(["int4", "text"])
            for row in rows:
                copy.write_row(row)
        assert cur.execute(f"select id, name from {scratch_table} order by id").fetchall() == rows


def test_copy_to_stdout(both):
    def fn(conn):
        with conn.cursor() as cur:
            with cur.copy("copy (select id, drug, dose from prescriptions order by id) to stdout") as copy:
                text = b"".join(bytes(block) for block in copy)
            with cur.copy("copy (select g, g::text from generate_series(1, 50000) g) to stdout "
                          "(format binary)") as copy:
                copy.set_types(["int4", "text"])
                binary_rows = list(copy.rows())
        return text, binary_rows
    via, direct = both(fn)
    assert via == direct
    assert via[0].count(b"\n") == 2218
    assert via[1][-1] == (50000, "50000")


def test_copy_from_stdin_failed_by_the_client_rolls_back(via, scratch_table):
    with via.cursor() as cur:
        with pytest.raises(errors.QueryCanceled):
            with cur.copy(f"copy {scratch_table} (id, name) from stdin") as copy:
                copy.write_row((1, "a"))
                raise RuntimeError("client gives up")  # psycopg sends CopyFail
    assert via.execute(f"select count(*) from {scratch_table}").fetchone() == (0,)


def test_transaction_rollback(gateway, scratch_table):
    with psycopg.connect(**gateway.connect_kwargs("bench")) as conn:
        conn.execute(f"insert into {scratch_table} (id, name) values (1, 'kept')")
        conn.commit()
        conn.execute(f"insert into {scratch_table} (id, name) values (2, 'rolled back')")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.rollback()
        with pytest.raises(errors.UniqueViolation):
            conn.execute(f"insert into {scratch_table} (id, name) values (1, 'duplicate')")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(errors.InFailedSqlTransaction):
            conn.execute("select 1")
        conn.rollback()
        with conn.transaction():
            conn.execute(f"insert into {scratch_table} (id, name) values (3, 'committed')")
            with pytest.raises(errors.DivisionByZero):
                with conn.transaction():  # a savepoint
                    conn.execute(f"insert into {scratch_table} (id, name) values (4, 'savepoint')")
                    conn.execute("select 1/0")
        conn.commit()
        rows = conn.execute(f"select id, name from {scratch_table} order by id").fetchall()
    assert rows == [(1, "kept"), (3, "committed")]


def test_server_side_cursor(both):
    def fn(conn):
        with conn.transaction():
            with conn.cursor(name="phigate_it_cursor") as cur:
                cur.itersize = 333
                cur.execute("select g, g * g from generate_series(1, 10000) g where g %% %s = 0", (7,))
                first = cur.fetchmany(5)
                cur.scroll(100)
                after_scroll = cur.fetchone()
                rest = cur.fetchall()
        return first, after_scroll, len(rest), rest[-1]
    via, direct = both(fn)
    assert via == direct
    assert via[0][0] == (7, 49)


def test_large_field_round_trip(via):
    blob = bytes(range(256)) * 12000  # ~3 MB
    assert via.execute("select %s::bytea", (blob,)).fetchone()[0] == blob
    assert via.cursor(binary=True).execute("select %b::bytea", (blob,)).fetchone()[0] == blob


def test_identifier_quoting_and_unicode(both):
    def fn(conn):
        q = sql.SQL("select {} as {} from {} order by 1").format(
            sql.Identifier("name"), sql.Identifier("Ward Naïme"), sql.Identifier("wards"))
        cur = conn.execute(q)
        return [d.name for d in cur.description], cur.fetchall()
    via, direct = both(fn)
    assert via == direct
    assert via[0] == ["Ward Naïme"]


def test_cancel_a_long_query(gateway):
    """conn.cancel() from another thread: 57014 quickly, and the session still works."""
    with psycopg.connect(**gateway.connect_kwargs("clinic"), autocommit=True) as conn:
        timer = threading.Timer(0.5, conn.cancel)
        started = time.monotonic()
        timer.start()
        with pytest.raises(errors.QueryCanceled) as caught:
            conn.execute("select pg_sleep(30)")
        elapsed = time.monotonic() - started
        timer.join()
        assert caught.value.sqlstate == "57014"
        assert elapsed < 5
        assert conn.execute("select count(*) from wards").fetchone() == (10,)


def test_cancel_only_hits_its_own_session(gateway):
    """Two sessions sleep; cancelling one leaves the other running to completion."""
    with psycopg.connect(**gateway.connect_kwargs("clinic"), autocommit=True) as a, \
            psycopg.connect(**gateway.connect_kwargs("clinic"), autocommit=True) as b:
        result = {}

        def other():
            result["b"] = b.execute("select pg_sleep(1.5), 'b finished'").fetchone()[1]
        t = threading.Thread(target=other)
        t.start()
        threading.Timer(0.3, a.cancel).start()
        with pytest.raises(errors.QueryCanceled):
            a.execute("select pg_sleep(30)")
        t.join(10)
        assert result == {"b": "b finished"}
        assert a.execute("select 1").fetchone() == (1,)

