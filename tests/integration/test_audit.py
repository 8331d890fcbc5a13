"""The audit log as an auditor meets it, on logs produced through a real phigate by real clients.

  - after a psycopg and a psql session, `phigatectl audit verify --pubkey` passes, `sessions` lists
    them, `replay` shows each statement with its decision and masking, `export --identity` returns
    their records; statement texts and row counts match what the clients did;
  - tampering with a copy of that log (a byte altered, a record removed, two swapped, a forged one
    inserted, the tail cut mid-record, a signature altered) fails verification at the exact record;
  - the HTML replay opened in headless Chromium shows the session (screenshot in tests/artifacts/).

Crash (kill -9 under load) and full-disk behaviour: test_audit_durability.py.
"""

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import tempfile

import psycopg
import pytest

from harness import (AGENT, OUTSIDER, OUTSIDER_PASSWORD, REPO, audit_keygen, audit_lines, client_port, run_ctl,
                     stop_and_check)

ARTIFACTS = REPO / "tests" / "artifacts"
LOG_FILE = "audit-000001.jsonl"

# The role may read and write but not run DDL: one statement of the session is denied by policy.
CONFIG = {
    "roles": {"tester": {"classes": {"ddl": "deny"}}},
    "audit": {"checkpoint_records": 7},  # several checkpoints inside a short log
}


def sessions_by_client(records):
    return {r["client"]: r["session"] for _, _, _, r in records if r["type"] == "connect"}


class SessionLog:
    """A finished audit log (phigate stopped cleanly) and what the clients did to produce it."""

    def __init__(self, folder, pubkey, agent_client, agent_statements, raw_ssn, outsider_statements):
        self.folder = folder
        self.pubkey = pubkey
        self.agent_client = agent_client          # "127.0.0.1:PORT" of the psycopg session
        self.agent_statements = agent_statements  # [(text as phigate receives it, rows or sqlstate)]
        self.raw_ssn = raw_ssn
        self.outsider_statements = outsider_statements
        self.records = audit_lines(folder)
        clients = sessions_by_client(self.records)
        self.agent_session = clients[agent_client]
        outsider = [r["session"] for _, _, _, r in self.records
                    if r["type"] == "connect" and r["identity"] == OUTSIDER]
        assert len(outsider) == 1, outsider
        self.outsider_session = outsider[0]


@pytest.fixture(scope="module")
def session_log(gateway_maker, stack, audit_pubkey, psql_via):
    gw = gateway_maker(CONFIG, name="audit")
    with psycopg.connect(**stack.connect_kwargs("clinic")) as direct:
        raw_ssn = direct.execute("select ssn from patients where id = 12").fetchone()[0]

    done = []  # (text phigate receives, rows received or the SQLSTATE the client got)
    with psycopg.connect(**gw.connect_kwargs("clinic"), autocommit=True) as conn:
        port = client_port(conn)

        def run(sql, params=None, text=None):
            try:
                cur = conn.execute(sql, params)
                rows = cur.fetchall() if cur.description else []
                done.append((text or sql, len(rows)))
                return rows
            except psycopg.Error as e:
                done.append((text or sql, e.sqlstate))
                return e

        rows = run("select id, name, floor from wards where floor >= %s order by id", (2,),
                   text="select id, name, floor from wards where floor >= $1 order by id")
        assert len(rows) > 2
        rows = run("select first_name, ssn, dob from patients where id = 12")
        assert rows[0][0] == "[REDACTED]" and rows[0][1] != raw_ssn
        # A PHI value as a bound parameter: the log keeps a keyed hash, never the value.
        # (the policy refuses PHI columns in WHERE, so the value goes through a non-PHI query)
        rows = run("select count(*) from wards where name <> %s", (raw_ssn,),
                   text="select count(*) from wards where name <> $1")
        assert rows == [(10,)]
        run("select code, description from diagnosis_codes order by code limit 5")
        err = run("select 1/0")
        assert err.sqlstate == "22012"
        err = run("drop table wards")
        assert err.sqlstate == "42501", err
        run("select count(*) from prescriptions")
        agent_client = f"127.0.0.1:{port}"

    outsider_sql = "select n from generate_series(1, 7) as n"
    r = psql_via(gw, outsider_sql, dbname="bench", user=OUTSIDER, password=OUTSIDER_PASSWORD)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.split()) == 7
    stop_and_check(gw)
    return SessionLog(gw.audit_dir, audit_pubkey, agent_client, done, raw_ssn, [(outsider_sql, 7)])


@pytest.fixture
def ctl(binaries):
    """ctl(*args) -> phigatectl ARGS... (CompletedProcess)."""
    return lambda *args, **kw: run_ctl(binaries, *args, **kw)


# ---------------------------------------------------------------------------
# (1) verify, sessions, replay, export on a real log
# ---------------------------------------------------------------------------

def test_verify_passes_with_the_public_key(session_log, ctl):
    r = ctl("audit", "verify", "--pubkey", session_log.pubkey, session_log.folder)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout and "trusted --pubkey" in r.stdout, r.stdout
    last = session_log.records[-1][3]
    assert last["type"] == "checkpoint", "a cleanly stopped log ends signed"
    assert any(rec["type"] == "log_close" for _, _, _, rec in session_log.records)


def test_verify_with_another_key_fails(session_log, tmp_path, ctl, binaries):
    other = audit_keygen(binaries, tmp_path / "other").parent / "audit_ed25519.pub"
    r = ctl("audit", "verify", "--pubkey", other, session_log.folder)
    assert r.returncode == 1, r.stdout + r.stderr


def test_statement_records_match_what_the_client_did(session_log):
    recs = [rec for _, _, _, rec in session_log.records if rec.get("session") == session_log.agent_session]
    connect = [r for r in recs if r["type"] == "connect"]
    assert connect and connect[0]["identity"] == AGENT and connect[0]["database"] == "clinic"
    stmts = [r for r in recs if r["type"] == "statement"]
    assert [s["text"] for s in stmts] == [t for t, _ in session_log.agent_statements]
    assert [s["stmt"] for s in stmts] == list(range(1, len(stmts) + 1))
    results = {r["stmt"]: r for r in recs if r["type"] == "result"}
    for s, (text, outcome) in zip(stmts, session_log.agent_statements):
        res = results.get(s["stmt"])
        assert res is not None, f"no result record for {text!r}"
        if isinstance(outcome, int):
            assert res["rows"] == outcome, (text, res)
            assert "sqlstate" not in res, (text, res)
    by_text = {s["text"]: s for s in stmts}
    masked = by_text["select first_name, ssn, dob from patients where id = 12"]
    assert masked["decision"] == "rewrite"
    masking = {c["name"]: c["masking"] for c in masked["columns"]}
    assert masking["first_name"] and masking["ssn"] and masking["dob"], masking
    assert by_text["drop table wards"]["decision"] == "deny"
    assert by_text["drop table wards"]["upstream"] is None
    plain = by_text["select count(*) from prescriptions"]
    assert plain["decision"] == "allow" and plain["upstream"] == plain["text"]
    disconnect = [r for r in recs if r["type"] == "disconnect"]
    assert disconnect and disconnect[0]["statements"] == len(stmts)


def test_result_records_carry_the_sqlstate_the_agent_received(session_log):
    """A failed statement's result record names the error the agent got: for a statement phigate
    refused itself that is phigate's SQLSTATE (42501 here), not the one of whatever phigate sent
    upstream in its place."""
    recs = [rec for _, _, _, rec in session_log.records if rec.get("session") == session_log.agent_session]
    stmts = [r for r in recs if r["type"] == "statement"]
    results = {r["stmt"]: r for r in recs if r["type"] == "result"}
    wrong = []
    for s, (text, outcome) in zip(stmts, session_log.agent_statements):
        if isinstance(outcome, str):
            got = results[s["stmt"]].get("sqlstate")
            if got != outcome:
                wrong.append(f"{text!r}: the agent got SQLSTATE {outcome}, the result record says {got} "
                             f"({json.dumps(results[s['stmt']])})")
    assert not wrong, "\n".join(wrong)


def test_parameters_are_keyed_hashes_never_phi(session_log):
    text = b"\n".join(line for _, _, line, _ in session_log.records)
    assert session_log.raw_ssn.encode() not in text, "a raw SSN bound as a parameter is in the audit log"
    stmt = [rec for _, _, _, rec in session_log.records
            if rec["type"] == "statement" and rec["text"] == "select count(*) from wards where name <> $1"]
    assert stmt and len(stmt[0]["params"]) == 1 and stmt[0]["params"][0].startswith("hmac:"), stmt


def test_sessions_lists_both_sessions(session_log, ctl):
    r = ctl("audit", "sessions", session_log.folder)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:] if line.strip()}
    agent = rows[session_log.agent_session]
    assert AGENT in agent and session_log.agent_client in agent and "postgres" in agent
    cols = agent.split()
    assert str(len(session_log.agent_statements)) in cols, agent
    assert "closed" in agent
    assert OUTSIDER in rows[session_log.outsider_session]


def test_replay_shows_each_statement_with_decision_and_masking(session_log, ctl):
    r = ctl("audit", "replay", "--session", session_log.agent_session, session_log.folder)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert AGENT in out and session_log.agent_client in out
    blocks = re.split(r"\n(?=Statement \d+: )", out)[1:]
    assert len(blocks) == len(session_log.agent_statements), out
    for i, (block, (text, outcome)) in enumerate(zip(blocks, session_log.agent_statements), 1):
        assert block.startswith(f"Statement {i}: "), block
        assert text in block, (text, block)
        assert re.search(r"decision\s+(allow|rewrite|deny|hold)", block), block
        assert "masking" in block, block
        if isinstance(outcome, int):
            assert re.search(rf"result\s+{outcome} rows?", block), (outcome, block)
    masked = blocks[1]
    assert "rewrite" in masked and re.search(r"ssn: \S", masked) and "first_name: redact" in masked, masked
    assert "deny" in blocks[5] and "class.ddl" in blocks[5], blocks[5]
    assert session_log.raw_ssn not in out


def test_export_by_identity_returns_its_records(session_log, ctl):
    r = ctl("audit", "export", "--identity", AGENT, "--pubkey", session_log.pubkey, session_log.folder)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    ver = data["export"]["verification"]
    assert ver["ok"] is True and ver["first_bad"] is None and ver["trusted_key"] is True, ver
    recs = data["records"]
    sessions = {e["record"].get("session") for e in recs}
    assert sessions == {session_log.agent_session}, sessions
    stmts = [e["record"] for e in recs if e["record"]["type"] == "statement"]
    assert [s["text"] for s in stmts] == [t for t, _ in session_log.agent_statements]
    # Each exported record is the log's line verbatim, with its place and hash.
    lines = {(f, n): line for f, n, line, _ in session_log.records}
    for e in recs:
        line = lines[(e["file"], e["line"])]
        assert json.loads(line) == e["record"]
        assert e["sha256"] == hashlib.sha256(line).hexdigest()

    r = ctl("audit", "export", "--identity", OUTSIDER, session_log.folder)
    assert r.returncode == 0, r.stderr
    recs = json.loads(r.stdout)["records"]
    assert {e["record"]["session"] for e in recs} == {session_log.outsider_session}
    stmts = [e["record"] for e in recs if e["record"]["type"] == "statement"]
    assert [s["text"] for s in stmts] == [t for t, _ in session_log.outsider_statements]
    res = [e["record"] for e in recs if e["record"]["type"] == "result"]
    assert [x["rows"] for x in res] == [n for _, n in session_log.outsider_statements]


def test_export_by_table(session_log, ctl):
    r = ctl("audit", "export", "--table", "patients", session_log.folder)
    assert r.returncode == 0, r.stderr
    recs = [e["record"] for e in json.loads(r.stdout)["records"]]
    texts = [x["text"] for x in recs if x["type"] == "statement"]
    assert texts == ["select first_name, ssn, dob from patients where id = 12"], texts
    assert all(x["session"] == session_log.agent_session for x in recs)


# ---------------------------------------------------------------------------
# (2) tampering with a copy of the real log
# ---------------------------------------------------------------------------

def tamper_copy(session_log, tmp_path):
    dst = tmp_path / "audit-copy"
    shutil.copytree(session_log.folder, dst)
    (dst / "audit.lock").unlink(missing_ok=True)
    return dst


def lines_of(path):
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def write_lines(path, lines, final_newline=True):
    path.write_bytes(b"\n".join(lines) + (b"\n" if final_newline else b""))


def pick(session_log, kind="statement", after=0):
    """(0-based index, record) of the first record of a type in the middle of the log."""
    for i, (_, _, _, rec) in enumerate(session_log.records):
        if i > after and rec["type"] == kind:
            return i, rec
    raise AssertionError(f"no {kind} record after index {after}")


def assert_blamed(r, line, seq, what):
    out = r.stdout + r.stderr
    assert r.returncode == 1, f"{what}: verify did not fail (exit {r.returncode}):\n{out}"
    where = re.search(r"(\S*audit-\d+\.jsonl):(\d+): seq (\d+)", out)
    assert where, f"{what}: no FILE:LINE: seq N in the report:\n{out}"
    assert where.group(1).endswith(LOG_FILE), out
    assert (int(where.group(2)), int(where.group(3))) == (line, seq), \
        f"{what}: expected {LOG_FILE}:{line}: seq {seq}, got:\n{out}"
    return out


def test_tamper_alter_one_byte_inside_a_record(session_log, tmp_path, ctl):
    d = tamper_copy(session_log, tmp_path)
    i, rec = pick(session_log, "result", after=8)
    lines = lines_of(d / LOG_FILE)
    old = lines[i]
    key = b'"rows":%d' % rec["rows"]
    assert key in old
    lines[i] = old.replace(key, b'"rows":%d' % (rec["rows"] + 1 if rec["rows"] < 9 else rec["rows"] - 1), 1)
    assert len(lines[i]) == len(old) and lines[i] != old  # one byte, JSON still valid
    json.loads(lines[i])
    write_lines(d / LOG_FILE, lines)
    assert_blamed(ctl("audit", "verify", "--pubkey", session_log.pubkey, d), i + 1, rec["seq"], "byte altered")


def test_tamper_alter_into_invalid_json(session_log, tmp_path, ctl):
    d = tamper_copy(session_log, tmp_path)
    i, rec = pick(session_log, "statement", after=5)
    lines = lines_of(d / LOG_FILE)
    lines[i] = lines[i][:-1] + b"]"  # the closing brace becomes a bracket
    write_lines(d / LOG_FILE, lines)
    out = assert_blamed(ctl("audit", "verify", "--pubkey", session_log.pubkey, d), i + 1, rec["seq"],
                        "invalid JSON")
    assert "seq" in out


def test_tamper_remove_a_record(session_log, tmp_path, ctl):
    d = tamper_copy(session_log, tmp_path)
    i, rec = pick(session_log, "statement", after=5)
    lines = lines_of(d / LOG_FILE)
    del lines[i]
    write_lines(d / LOG_FILE, lines)
    # Reported where it is missing: the line that now holds its successor, with the missing seq.
    assert_blamed(ctl("audit", "verify", "--pubkey", session_log.pubkey, d), i + 1, rec["seq"], "record removed")


def test_tamper_swap_two_records(session_log, tmp_path, ctl):
    d = tamper_copy(session_log, tmp_path)
    i, rec = pick(session_log, "statement", after=5)
    lines = lines_of(d / LOG_FILE)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    write_lines(d / LOG_FILE, lines)
    r = ctl("audit", "verify", "--pubkey", session_log.pubkey, d)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    where = re.search(r"audit-\d+\.jsonl:(\d+): seq (\d+)", out)
    assert where and int(where.group(1)) == i + 1, f"expected the first swapped line {i + 1}:\n{out}"
    # The seq named is that of a swapped record (the one now on that line, or the one expected there).
    assert int(where.group(2)) in (rec["seq"], rec["seq"] + 1), out
    assert "order" in out, out


def test_tamper_insert_a_forged_record(session_log, tmp_path, ctl):
    """The forger continues the chain properly (right seq, right prev): only the record after it
    shows the break, and the verifier must still blame the forged line."""
    d = tamper_copy(session_log, tmp_path)
    i, rec = pick(session_log, "result", after=8)
    lines = lines_of(d / LOG_FILE)
    forged = dict(rec)
    forged.update(seq=rec["seq"] + 1, prev=hashlib.sha256(lines[i]).hexdigest(), type="statement",
                  stmt=rec["stmt"] + 1, text="select 1 /* forged */", upstream="select 1 /* forged */",
                  decision="allow")
    for k in ("rows", "bytes", "agent_sha256", "db_sha256", "duration_us", "sqlstate"):
        forged.pop(k, None)
    forged_line = json.dumps({k: forged[k] for k in ["seq", "ts", "prev", "type"]} |
                             {k: v for k, v in forged.items() if k not in ("seq", "ts", "prev", "type")},
                             separators=(",", ":")).encode()
    lines.insert(i + 1, forged_line)
    write_lines(d / LOG_FILE, lines)
    assert_blamed(ctl("audit", "verify", "--pubkey", session_log.pubkey, d), i + 2, rec["seq"] + 1,
                  "forged record inserted")


def test_tamper_truncate_the_tail_mid_record(session_log, tmp_path, ctl):
    d = tamper_copy(session_log, tmp_path)
    i, rec = pick(session_log, "statement", after=8)
    lines = lines_of(d / LOG_FILE)
    cut = lines[:i] + [lines[i][: len(lines[i]) // 2]]
    write_lines(d / LOG_FILE, cut, final_newline=False)
    out = assert_blamed(ctl("audit", "verify", "--pubkey", session_log.pubkey, d), i + 1, rec["seq"],
                        "tail cut mid-record")
    assert "newline" in out, out
    # A live log's unsigned tail is allowed, a torn record is not.
    r = ctl("audit", "verify", "--pubkey", session_log.pubkey, "--allow-unsigned-tail", d)
    assert r.returncode == 1, r.stdout + r.stderr


def test_tamper_alter_a_checkpoint_signature(session_log, tmp_path, ctl):
    d = tamper_copy(session_log, tmp_path)
    i, rec = pick(session_log, "checkpoint", after=3)
    lines = lines_of(d / LOG_FILE)
    sig = rec["sig"].encode()
    flipped = sig[:10] + (b"0" if sig[10:11] != b"0" else b"1") + sig[11:]
    lines[i] = lines[i].replace(sig, flipped)
    # The attacker also fixes the next record's prev, so only the signature can tell.
    new_hash = hashlib.sha256(lines[i]).hexdigest().encode()
    old_hash = hashlib.sha256(lines_of(session_log.folder / LOG_FILE)[i]).hexdigest().encode()
    lines[i + 1] = lines[i + 1].replace(old_hash, new_hash)
    write_lines(d / LOG_FILE, lines)
    assert_blamed(ctl("audit", "verify", "--pubkey", session_log.pubkey, d), i + 1, rec["seq"],
                  "checkpoint signature altered")


def test_untouched_copy_still_verifies(session_log, tmp_path, ctl):
    d = tamper_copy(session_log, tmp_path)
    r = ctl("audit", "verify", "--pubkey", session_log.pubkey, d)
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------------------
# (5) the HTML replay in headless Chromium
# ---------------------------------------------------------------------------

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def chromium(*args, timeout=60):
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing (Debian: chromium; scripts/deps.sh)"
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               "--no-first-run", f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)


def test_html_replay_in_headless_chromium(session_log, tmp_path, ctl):
    page = tmp_path / "replay.html"
    r = ctl("audit", "replay", "--session", session_log.agent_session, "--html", page, session_log.folder)
    assert r.returncode == 0, r.stderr
    source = page.read_text()
    assert "<script" not in source.lower(), "the replay page should need no script"
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", source), "the replay page loads something external"

    r = chromium("--dump-dom", page.as_uri())
    assert r.returncode == 0 and "<html" in r.stdout, r.stderr[-2000:]
    dom = r.stdout
    text = html.unescape(re.sub(r"<[^>]+>", " ", dom))
    text = re.sub(r"\s+", " ", text)
    assert f"Session {session_log.agent_session}" in text
    for i, (stmt, outcome) in enumerate(session_log.agent_statements, 1):
        assert f"Statement {i}:" in text, i
        assert re.sub(r"\s+", " ", stmt) in text, stmt
    for needle in ("rewrite", "deny", "first_name: redact", AGENT):
        assert needle in text, needle
    assert session_log.raw_ssn not in text

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "audit_replay.png"
    shot.unlink(missing_ok=True)
    r = chromium(f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", page.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 10000, r.stderr[-2000:]
    shutil.copy(page, ARTIFACTS / "audit_replay.html")
