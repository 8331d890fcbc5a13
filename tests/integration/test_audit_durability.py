"""The audit log under failure, through a real phigate:

  - kill -9 under load (pgbench -S -M prepared plus psycopg loops that count the results they
    received): after a restart on the same audit folder (which seals a torn tail) the log verifies,
    and every statement whose result a client received has its statement record;
  - a full disk (the audit folder on a 256 KiB tmpfs) and a file-size rlimit (EFBIG): statements
    fail closed with SQLSTATE 58030 and a message naming the audit log, phigate's own log says why,
    and another phigate is unaffected.
"""

import hashlib
import json
import os
import random
import re
import subprocess
import threading
import time

import struct

import psycopg
import pytest

from harness import AGENT, AGENT_PASSWORD, audit_lines, clean_env, client_port, run_ctl, stop_and_check
from pgwire import PeerClosed, RawClient, message, parse_error_fields, query_message


# ---------------------------------------------------------------------------
# kill -9 under load
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bench_initialised(stack):
    """pgbench tables created directly upstream (scale 1), as phigate_app in the bench database."""
    out = subprocess.run([f"{stack.bindir}/pgbench", "-i", "-q", "-s", "1", "-h", stack.host,
                          "-p", str(stack.pg_port), "-U", stack.user, "bench"],
                         capture_output=True, text=True, timeout=120, env=clean_env(PGPASSWORD=stack.password))
    assert out.returncode == 0, out.stderr


class CountingClient(threading.Thread):
    """Runs a prepared point select in a loop through phigate and counts the results it received."""

    def __init__(self, gw):
        super().__init__(daemon=True)
        self.gw = gw
        self.received = 0
        self.client = None
        self.error = None
        self.ready = threading.Event()

    def run(self):
        rnd = random.Random()
        try:
            with psycopg.connect(**self.gw.connect_kwargs("bench"), autocommit=True) as conn:
                self.client = f"127.0.0.1:{client_port(conn)}"
                self.ready.set()
                while True:
                    row = conn.execute("select abalance from pgbench_accounts where aid = %s",
                                       (rnd.randint(1, 100000),), prepare=True).fetchone()
                    assert row is not None
                    self.received += 1
        except psycopg.Error as e:  # the kill ends the loop
            self.error = e
        finally:
            self.ready.set()


def test_kill_9_under_load_loses_no_acknowledged_statement(start_gateway, stack, binaries, audit_pubkey,
                                                           bench_initialised, tmp_path, assert_serves):
    audit_dir = tmp_path / "audit"
    overrides = {"audit": {"dir": str(audit_dir)}}
    gw1 = start_gateway(overrides, name="crash-before")

    pgbench = subprocess.Popen([f"{stack.bindir}/pgbench", "-S", "-M", "prepared", "-c", "4", "-j", "2", "-T", "10",
                                "-h", gw1.host, "-p", str(gw1.port), "-U", AGENT, "bench"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=clean_env(PGPASSWORD=AGENT_PASSWORD))
    clients = [CountingClient(gw1) for _ in range(2)]
    for c in clients:
        c.start()
    for c in clients:
        assert c.ready.wait(20) and c.client, f"client did not connect: {c.error}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (min(c.received for c in clients) < 200 or time.monotonic() <
                                           deadline - 12):
        time.sleep(0.1)
    assert min(c.received for c in clients) > 0, [c.error for c in clients]

    gw1.kill_hard()  # SIGKILL mid-load
    for c in clients:
        c.join(20)
        assert not c.is_alive(), "a client still runs after phigate was killed"
    out, err = pgbench.communicate(timeout=60)
    report = out + err
    m = re.search(r"number of transactions actually processed: (\d+)", report)
    assert m, f"no pgbench summary:\n{report}"
    pgbench_done = int(m.group(1))
    assert pgbench_done > 0, report

    # A kill -9 leaves whole write()s in the page cache; what a power cut would leave is a torn
    # last record too.  Add one (a record cut before its newline) to the last file.
    last_file = sorted(audit_dir.glob("audit-*.jsonl"))[-1]
    image = last_file.read_bytes()
    # The live file ends in preallocated zeros (AUDIT_FORMAT.md); a torn write lands over them.
    before = image.rstrip(b"\0")
    assert len(image) > len(before), "the live audit file has no preallocated space"
    assert before.endswith(b"\n")
    last = json.loads(before[:-1].rsplit(b"\n", 1)[-1])
    torn = (b'{"seq":%d,"ts":"2026-01-01T00:00:00.000000Z","prev":"%s","type":"statement","session":"%s",'
            b'"stmt":99,"text":"select abal' % (last["seq"] + 1, hashlib.sha256(before[:-1].rsplit(b"\n", 1)[-1])
                                                  .hexdigest().encode(), b"1-999"))
    with open(last_file, "r+b") as f:
        f.seek(len(before))
        f.write(torn)

    # Restart on the same folder: the torn tail is moved aside and sealed, the chain continues.
    gw2 = start_gateway(overrides, name="crash-after")
    assert_serves(gw2)
    r = run_ctl(binaries, "audit", "verify", "--pubkey", audit_pubkey, "--allow-unsigned-tail", audit_dir)
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{gw2.diagnostics()}"

    records = [rec for *_, rec in audit_lines(audit_dir)]
    opens = [rec for rec in records if rec["type"] == "log_open"]
    assert len(opens) == 2, opens
    run1 = f"{opens[0]['seq']}-"
    connects = {rec["client"]: rec["session"] for rec in records
                if rec["type"] == "connect" and rec["session"].startswith(run1)}
    statements = {}
    for rec in records:
        if rec["type"] == "statement" and rec["session"].startswith(run1):
            statements[rec["session"]] = statements.get(rec["session"], 0) + 1

    # Every result a psycopg client received has its statement record (at most one more: in flight).
    for c in clients:
        session = connects.get(c.client)
        assert session, f"no connect record for {c.client}"
        logged = statements.get(session, 0)
        assert c.received <= logged <= c.received + 1, \
            f"{c.client}: received {c.received} results, the log has {logged} statement records"

    # pgbench's completed transactions (one statement each) are all in the log too.
    pgbench_sessions = [s for cl, s in connects.items() if cl not in {c.client for c in clients}]
    logged = sum(statements.get(s, 0) for s in pgbench_sessions)
    assert logged >= pgbench_done, f"pgbench completed {pgbench_done} transactions, the log has {logged} statements"

    sealed = [rec for rec in records if rec["type"] == "tail_sealed"]
    print(f"kill -9: psycopg clients received {[c.received for c in clients]}, pgbench completed "
          f"{pgbench_done}; the log has {sum(statements.values())} statement records of that run; "
          f"torn tails sealed: {sealed}")
    assert len(sealed) == 1, sealed
    seal = sealed[0]
    assert seal["file"] == last_file.name and seal["offset"] == len(before) and seal["bytes"] == len(torn), seal
    assert seal["sha256"] == hashlib.sha256(torn).hexdigest(), seal
    assert (audit_dir / os.path.basename(seal["torn_file"])).read_bytes() == torn, seal
    assert seal["seq"] in (last["seq"] + 1, last["seq"] + 2), "the seal continues the chain after the last good record"
    assert "tail_sealed" in r.stdout + r.stderr or "torn" in r.stdout + r.stderr, \
        "verify should warn about the sealed tail: " + r.stdout + r.stderr

    # After a clean stop of the restarted phigate, the whole log verifies strictly.
    stop_and_check(gw2)
    r = run_ctl(binaries, "audit", "verify", "--pubkey", audit_pubkey, audit_dir)
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------------------
# A full disk, a file-size limit: fail closed with 58030
# ---------------------------------------------------------------------------

@pytest.fixture
def small_tmpfs(tmp_path):
    """A 256 KiB tmpfs (unmounted after the test; request it before start_gateway so the phigates
    using it are stopped first)."""
    d = tmp_path / "tmpfs"
    d.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(d)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"cannot mount a tmpfs (needs root): {out.stderr}"
    yield d
    out = subprocess.run(["umount", str(d)], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=30)
        pytest.fail(f"umount {d} failed: {out.stderr}")


def extended_statement(i):
    """Parse/Bind/Execute/Sync of one parameterised statement (what drivers send)."""
    sql = b"select $1::int, name, floor from wards order by id"
    param = str(i).encode()
    return (message(b"P", b"\0" + sql + b"\0" + struct.pack("!H", 0))
            + message(b"B", b"\0\0" + struct.pack("!HHi", 0, 1, len(param)) + param + struct.pack("!H", 0))
            + message(b"E", b"\0" + struct.pack("!i", 0))
            + message(b"S"))


def one_statement(gw, data):
    """Log in on a new connection, send data; (fields of the first ErrorResponse or None, message
    types up to ReadyForQuery or the close)."""
    c = RawClient(gw.host, gw.port)
    try:
        c.login(AGENT, AGENT_PASSWORD, "clinic")
        c.send(data)
        msgs, fields = [], None
        while True:
            try:
                t, body = c.read_message()
            except (PeerClosed, ConnectionResetError):
                return fields, msgs
            msgs.append(t)
            if t == b"E" and fields is None:
                fields = parse_error_fields(body)
            if t == b"Z":
                return fields, msgs
    finally:
        c.close()


def fill_until_refused(gw, limit=3000):
    """Run statements on the wire until phigate refuses one.  Returns (statements that ran, the
    ErrorResponse fields, the messages of the refused statement before the error)."""
    c = RawClient(gw.host, gw.port)
    try:
        c.login(AGENT, AGENT_PASSWORD, "clinic")
        for i in range(limit):
            c.send(extended_statement(i))
            msgs = []
            while True:
                try:
                    t, body = c.read_message()
                except PeerClosed:
                    pytest.fail(f"phigate closed the connection without an error after {i} statements\n"
                                f"{gw.diagnostics()}")
                msgs.append(t)
                if t == b"E":
                    return i, parse_error_fields(body), msgs
                if t == b"Z":
                    break
            assert msgs.count(b"D") == 10, msgs
    finally:
        c.close()
    pytest.fail(f"{limit} statements ran and phigate never refused one\n{gw.diagnostics()}")


def check_fails_closed(gw, other, ran, fields, msgs, assert_serves, error_text):
    assert ran > 0, "no statement ran before the log was full"
    assert fields.get("C") == "58030", fields
    assert "audit log" in fields.get("M", ""), fields
    # The statement whose record could not be written got no rows: its result was withheld.
    assert b"D" not in msgs, f"rows of an unrecorded statement reached the client: {msgs}"

    # From now on every statement is refused, on new connections too.  (Checked on the wire: the
    # refusal may come as FATAL, and libpq-based drivers drop the SQLSTATE of a FATAL error.)
    fields, msgs = one_statement(gw, query_message("select count(*) from wards"))
    assert fields and fields.get("C") == "58030", (fields, msgs)
    assert b"D" not in msgs, msgs
    # A simple query is refused before anything runs, with the reason: the file and the error.
    assert fields.get("S") == "ERROR", fields
    assert "audit log" in fields["M"] and "audit-000001.jsonl" in fields["M"], fields
    assert error_text in fields["M"], fields
    fields, msgs = one_statement(gw, extended_statement(1))
    assert fields and fields.get("C") == "58030" and "audit log" in fields.get("M", ""), (fields, msgs)
    assert b"D" not in msgs, msgs
    with psycopg.connect(**gw.connect_kwargs("clinic"), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute("select name from wards").fetchall()
        assert e.value.sqlstate == "58030" and "audit log" in str(e.value), f"{e.value.sqlstate}: {e.value}"

    # phigate's own log says why, naming the file and the error.
    log = gw.log()
    assert re.search(r"audit log write failed: .*audit-000001\.jsonl: " + re.escape(error_text), log), log[-3000:]
    # Another phigate is unaffected.
    assert_serves(other)


def test_full_disk_fails_closed(small_tmpfs, start_gateway, assert_serves):
    audit_dir = small_tmpfs / "audit"
    gw = start_gateway({"audit": {"dir": str(audit_dir)}}, name="fulldisk")
    other = start_gateway(name="unaffected")
    # Leave about 24 KiB free so the log fills after a few dozen statements.
    st = os.statvfs(small_tmpfs)
    free = st.f_bavail * st.f_frsize
    with open(small_tmpfs / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - 24 * 1024))
    ran, fields, msgs = fill_until_refused(gw)
    check_fails_closed(gw, other, ran, fields, msgs, assert_serves, "No space left on device")


def test_file_size_limit_fails_closed(start_gateway, assert_serves, tmp_path):
    audit_dir = tmp_path / "audit"
    gw = start_gateway({"audit": {"dir": str(audit_dir)}}, name="fsize",
                       wrapper=["prlimit", "--fsize=49152", "--"])
    other = start_gateway(name="unaffected")
    ran, fields, msgs = fill_until_refused(gw)
    check_fails_closed(gw, other, ran, fields, msgs, assert_serves, "File too large")
    assert (audit_dir / "audit-000001.jsonl").stat().st_size <= 49152
