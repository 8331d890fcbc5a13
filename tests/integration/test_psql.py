"""psql through phigate prints exactly what psql prints against the database directly.

Only non-PHI data is compared (wards, diagnosis_codes, insurance_plans,
prescriptions, generate_series, scratch tables in bench), so masking never
changes the expected output.
"""

import re
import subprocess
import threading
import time

import pytest

from harness import AGENT_PASSWORD, clean_env


def assert_same(via, direct):
    """Same exit status, same stdout, same stderr."""
    assert (via.returncode, via.stdout, via.stderr) == (direct.returncode, direct.stdout, direct.stderr)


@pytest.mark.parametrize("sql", [
    "select * from wards order by id",
    "select code, description from diagnosis_codes order by code",
    "select p.name, p.payer, count(*) over () from insurance_plans p order by p.id",
    "select drug, count(*) from prescriptions group by drug order by 2 desc, 1 limit 10",
    "select g, g * 2.5, md5(g::text) from generate_series(1, 1000) g",
    "select version(), current_setting('server_version_num')",
    "select null::int, ''::text, 'tab\tand\nnewline', 'é ü 漢字'",
])
def test_query_output_matches_direct(gateway, psql_via, psql_direct, sql):
    via, direct = psql_via(gateway, sql), psql_direct(sql)
    assert via.returncode == 0, via.stderr
    assert_same(via, direct)


def test_multi_statement_string_matches_direct(gateway, psql_via, psql_direct):
    sql = "select 1 as a; select name from wards where id < 4 order by id; select 'last'"
    via, direct = psql_via(gateway, sql), psql_direct(sql)
    assert via.returncode == 0, via.stderr
    assert_same(via, direct)
    assert via.stdout.splitlines()[-1] == "last"


def test_error_in_the_middle_of_a_multi_statement_string(gateway, psql_via, psql_direct):
    sql = "select 'first'; select 1/0; select 'never runs'"
    via, direct = psql_via(gateway, sql), psql_direct(sql)
    assert "division by zero" in via.stderr
    assert "never runs" not in via.stdout
    assert_same(via, direct)


def test_error_in_the_middle_of_a_result(gateway, psql_via, psql_direct):
    """The server fails after sending thousands of rows; the client gets the error, then can go on."""
    sql = "select 1/(g-5000) from generate_series(1,10000) g"
    via, direct = psql_via(gateway, sql), psql_direct(sql)
    assert "division by zero" in via.stderr
    assert_same(via, direct)
    # Same again with FETCH_COUNT: psql reads through a cursor and prints the rows before the error.
    script = "\\set FETCH_COUNT 1000\n" + sql + ";\nselect 'after';\n"
    via, direct = psql_via(gateway, stdin=script), psql_direct(stdin=script)
    assert via.stdout.rstrip().endswith("after")
    assert_same(via, direct)


def test_row_larger_than_one_megabyte(gateway, psql_via, psql_direct):
    sql = "select repeat('x', 3000000), length(repeat('y', 3000000))"
    via, direct = psql_via(gateway, sql), psql_direct(sql)
    assert via.returncode == 0, via.stderr
    assert len(via.stdout) > 3000000
    assert_same(via, direct)


def test_copy_in_and_out_with_backslash_copy(gateway, psql_via, psql_direct, scratch_name, tmp_path):
    """\\copy from a file into a scratch table through phigate, then \\copy it back out."""
    table = scratch_name("psqlcopy")
    source = tmp_path / "in.csv"
    source.write_text("".join(f"{i},name {i},\"quoted, comma\",{i * 1.5}\n" for i in range(1, 5001)))
    r = psql_via(gateway, f"create table {table} (id int primary key, name text, note text, x numeric)",
                 dbname="bench")
    assert r.returncode == 0, r.stderr
    try:
        r = psql_via(gateway, f"\\copy {table} from '{source}' with (format csv)", dbname="bench")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "COPY 5000"
        out_via, out_direct = tmp_path / "via.csv", tmp_path / "direct.csv"
        r = psql_via(gateway, f"\\copy (select * from {table} order by id) to '{out_via}' with (format csv)",
                     dbname="bench")
        assert r.returncode == 0, r.stderr
        r = psql_direct(f"\\copy (select * from {table} order by id) to '{out_direct}' with (format csv)",
                        dbname="bench")
        assert r.returncode == 0, r.stderr
        assert out_via.read_text() == source.read_text()
        assert out_via.read_bytes() == out_direct.read_bytes()
    finally:
        psql_direct(f"drop table if exists {table}", dbname="bench")


def test_copy_in_with_bad_row_reports_the_error_and_keeps_nothing(gateway, psql_via, psql_direct, scratch_name,
                                                                  tmp_path):
    table = scratch_name("psqlcopybad")
    source = tmp_path / "bad.csv"
    source.write_text("1,a\n2,b\nnot-a-number,c\n4,d\n")
    assert psql_direct(f"create table {table} (id int, v text)", dbname="bench").returncode == 0
    try:
        via = psql_via(gateway, f"\\copy {table} from '{source}' with (format csv)", dbname="bench")
        assert via.returncode != 0
        assert "invalid input syntax for type integer" in via.stderr
        assert psql_via(gateway, f"select count(*) from {table}", dbname="bench").stdout.strip() == "0"
    finally:
        psql_direct(f"drop table if exists {table}", dbname="bench")


def listen_output(run_listener, notify, channel):
    """A psql session LISTENs and sleeps; meanwhile another session NOTIFYs; returns the
    listener's output with process ids blanked (they differ between runs)."""
    script = f"LISTEN {channel};\nselect pg_sleep(1.5);\nselect 'done';\n"
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", run_listener(script)))
    t.start()
    time.sleep(0.7)
    r = notify(f"NOTIFY {channel}, 'hello from the other session'")
    assert r.returncode == 0, r.stderr
    t.join(30)
    out = result["r"]
    assert out.returncode == 0, out.stderr
    return re.sub(r"server process with PID \d+", "server process with PID N", out.stdout)


def test_notify_reaches_a_listening_session(gateway, psql_via, psql_direct):
    via = listen_output(lambda s: psql_via(gateway, stdin=s), lambda q: psql_via(gateway, q), "phigate_it_via")
    direct = listen_output(lambda s: psql_direct(stdin=s), psql_direct, "phigate_it_via")
    assert 'Asynchronous notification "phigate_it_via" with payload "hello from the other session"' in via
    assert via == direct


def test_notify_from_a_direct_session_reaches_a_session_through_phigate(gateway, psql_via, psql_direct):
    out = listen_output(lambda s: psql_via(gateway, stdin=s), psql_direct, "phigate_it_mixed")
    assert 'Asynchronous notification "phigate_it_mixed" with payload "hello from the other session"' in out


def test_script_with_transactions_and_session_settings(gateway, psql_via, psql_direct, scratch_name):
    table = scratch_name("psqltx")
    script = f"""
set search_path = public;
create temp table {table} (id int);
begin;
insert into {table} select generate_series(1, 10);
select count(*) from {table};
rollback;
select count(*) from {table};
begin;
insert into {table} values (1);
select 1/0;
select 'in failed transaction';
rollback;
show search_path;
select current_setting('standard_conforming_strings');
"""
    via, direct = psql_via(gateway, stdin=script, dbname="bench"), psql_direct(stdin=script, dbname="bench")
    assert "current transaction is aborted" in via.stderr
    assert_same(via, direct)


def test_psql_with_sslmode_require_gets_the_same_output(gateway, psql_via, psql_direct):
    sql = "select * from insurance_plans order by id"
    via = psql_via(gateway, sql, conn_extra={"sslmode": "require"})
    assert via.returncode == 0, via.stderr
    assert_same(via, psql_direct(sql))
    ssl = psql_via(gateway, stdin="\\conninfo\n", conn_extra={"sslmode": "require"})
    assert "SSL connection" in ssl.stdout


def test_psql_is_cancelled_by_sigint(gateway, stack):
    """psql forwards Ctrl-C as a CancelRequest; phigate must route it to the right upstream backend."""
    cmd = [f"{stack.bindir}/psql", "-X", "-A", "-t", "-d", gateway.conninfo("clinic"),
           "-c", "select pg_sleep(30)"]
    started = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=clean_env(PGPASSWORD=AGENT_PASSWORD))
    time.sleep(1.0)
    p.send_signal(2)
    out, err = p.communicate(timeout=15)
    assert time.monotonic() - started < 6
    assert "canceling statement due to user request" in err
