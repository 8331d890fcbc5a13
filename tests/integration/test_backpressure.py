"""Backpressure: a slow reader (or a slow upstream) must not make phigate buffer a
whole result in memory.  client_buffer_bytes is 1 MB here, so phigate's resident
memory should grow by a few MB at most while 5 million rows wait to be read."""

import threading
import time

import psycopg

from harness import AGENT, AGENT_PASSWORD
from pgwire import RawClient, message, query_message, rows_of

MAX_GROWTH_KB = 64 * 1024


def test_slow_reader_keeps_phigate_memory_bounded(gateway, assert_serves):
    c = RawClient(gateway.host, gateway.port)
    c.login(AGENT, AGENT_PASSWORD, "clinic")
    baseline = gateway.rss_kb()
    c.send(query_message("SELECT * FROM generate_series(1, 5000000)"))
    received, peak = 0, baseline
    deadline = time.monotonic() + 5
    next_sample = 0.0
    while time.monotonic() < deadline:
        chunk = c.sock.recv(4096)
        assert chunk, "phigate closed the connection of a slow reader"
        received += len(chunk)
        time.sleep(0.005)
        if time.monotonic() >= next_sample:
            peak = max(peak, gateway.rss_kb())
            next_sample = time.monotonic() + 0.1
    c.close()
    # The whole result is ~75 MB on the wire; the reader took only a small part of it.
    assert received < 20 * 1024 * 1024
    assert peak - baseline < MAX_GROWTH_KB, f"RSS grew from {baseline} kB to {peak} kB"
    assert_serves(gateway)


def test_full_result_through_psql(gateway, psql_via):
    r = psql_via(gateway, "select count(*) from (select * from generate_series(1,5000000)) s")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "5000000"


def test_fast_full_read_of_five_million_rows(gateway):
    with psycopg.connect(**gateway.connect_kwargs("clinic"), autocommit=True) as conn:
        cur = conn.execute("select g from generate_series(1, 5000000) g")
        assert cur.rowcount == 5000000
        assert cur.fetchone() == (1,)
        cur.scroll(4999998)
        assert cur.fetchone() == (5000000,)


def test_copy_in_towards_a_blocked_upstream_keeps_memory_bounded(gateway, stack, psql_direct, scratch_name):
    """The client streams ~150 MB of COPY data while the table is locked upstream, so the
    server reads nothing: phigate must stop reading the client instead of buffering it all.
    Once the lock goes, every row arrives."""
    table = scratch_name("copyblock")
    assert psql_direct(f"create table {table} (id int, filler text)", dbname="bench").returncode == 0
    filler = "y" * 1000
    nrows = 150_000
    row_msgs = b"".join(message(b"d", f"{i}\t{filler}\n".encode()) for i in range(1000))
    locker = psycopg.connect(**stack.connect_kwargs("bench"))
    try:
        locker.execute(f"lock table {table} in access exclusive mode")  # held until commit
        c = RawClient(gateway.host, gateway.port, timeout=60)
        c.login(AGENT, AGENT_PASSWORD, "bench")
        baseline = gateway.rss_kb()
        failure = []

        def send_all():
            try:
                c.send(query_message(f"copy {table} from stdin"))
                for _ in range(nrows // 1000):
                    c.send(row_msgs)
                c.send(message(b"c"))
            except Exception as e:  # reported below
                failure.append(e)
        sender = threading.Thread(target=send_all)
        sender.start()
        peak = baseline
        for _ in range(30):  # 3 s with the upstream blocked
            time.sleep(0.1)
            peak = max(peak, gateway.rss_kb())
        assert sender.is_alive(), "all COPY data was accepted while the upstream could not take it"
        locker.commit()  # release the lock: the COPY proceeds
        sender.join(60)
        assert not failure, failure
        msgs = c.read_until_ready()
        complete = [body for t, body in msgs if t == b"C"]
        assert complete == [f"COPY {nrows}\0".encode()], msgs
        c.close()
        assert peak - baseline < MAX_GROWTH_KB, f"RSS grew from {baseline} kB to {peak} kB"
        count = psql_direct(f"select count(*), sum(length(filler)) from {table}", dbname="bench").stdout.strip()
        assert count == f"{nrows}|{nrows * 1000}"
    finally:
        locker.close()
        psql_direct(f"drop table if exists {table}", dbname="bench")


def test_big_rows_pass_whole(gateway):
    """DataRows far larger than client_buffer_bytes (1 MB) still arrive intact."""
    c = RawClient(gateway.host, gateway.port, timeout=30)
    try:
        c.login(AGENT, AGENT_PASSWORD, "clinic")
        rows = rows_of(c.query("select repeat(chr(65 + g), 8000000) from generate_series(0, 2) g"))
        assert [(len(r[0]), r[0][0]) for r in rows] == [(8000000, "A"), (8000000, "B"), (8000000, "C")]
    finally:
        c.close()
