"""The leak suite (issue #3 item 12): no raw PHI value of the clinic fixture ever reaches
an agent through phigate, whatever the agent sends.

The queries are data (leak_queries/*.sql, format in leak_queries/README.md); each one is
its own test, once per role:

  agent   the SPEC's agent defaults (read and session allowed, everything else denied)
  power   the suite's tester role: every statement class allowed, so writes, COPY, DDL,
          DO and large objects reach the engine's masking instead of a class refusal

An outcome may be masked rows, a refusal, a hold (refused here: no approvals configured)
or an upstream error; it passes when nothing the client received holds a raw PHI value.
"Received" is every byte phigate sent (a recording TCP relay sits between psycopg and
phigate, and every message is scanned: DataRow, RowDescription, ErrorResponse/Notice
fields, CopyData, ParameterStatus, NotificationResponse, CommandComplete), plus what
psycopg decoded (binary dates and timestamps, arrays, JSON), cells joined across a row
and short cells joined down a column (a value split across columns or rows).

The forbidden strings come from the upstream itself (a direct connection), for every
column masking-rules/clinic.yaml lists, in many encodings (see PhiDetector).  Masks
legitimately keep short fragments (last 4 digits, the year, the email domain, a 3-digit
zip prefix): the detector ignores strings under 6 characters and never forbids those
fragments, so it flags the value and its transformations, not what the masks keep.
Values too short or too number-like for substring search (5-digit zips, julian days,
epoch seconds, hashtext) count only as whole cells.  The surrogate keys (patients.id and
the patient_id columns, small integers) cannot be told from other numbers and are left
to the unit and pgTAP suites.  Two self-tests keep the detector honest: it must see each
encoding in a direct (unmasked) answer, and stay silent on whole non-PHI tables.

clean.sql is the other direction: queries that touch no PHI must come back through
phigate exactly as from a direct connection (no over-blocking).

Every test also runs its query directly against the upstream (same transaction rules),
as a guard that the query itself is valid SQL: a syntax or name error there fails the
test, unless the entry says which SQLSTATE it expects (direct_sqlstate).

A JSON-lines report of every outcome is written next to the gateway's work folder
(PHIGATE_LEAK_REPORT overrides the path).
"""

import base64
import codecs
import datetime
import hashlib
import json
import os
import re
import secrets
import socket
import struct
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import yaml

from harness import AGENT, AGENT_PASSWORD, REPO, scram_verifier, stop_and_check

QUERY_DIR = Path(__file__).with_name("leak_queries")
RULES = REPO / "masking-rules" / "clinic.yaml"
PHI_TSV = REPO / "tests" / "fixtures" / "clinic.phi.tsv"

LEAK_AGENT = "leak_agent"
LEAK_AGENT_PASSWORD = "leak-" + secrets.token_hex(12)
ROLES = {"agent": (LEAK_AGENT, LEAK_AGENT_PASSWORD), "power": (AGENT, AGENT_PASSWORD)}

MIN_LEN = 6            # forbidden strings shorter than this are not searched as substrings
FRAGMENT_MIN = 8       # substrings of identifiers this long are forbidden too
SHORT_CELL = 4         # cells this short are joined down a column (values split across rows)
STEP_TIMEOUT_S = 30    # an entry that takes longer is aborted (its connection is cut)

# SQLSTATEs that mean the query itself is broken when they come back from a direct run.
BROKEN_QUERY_STATES = {"42601", "42703", "42P01", "42883", "42804", "42725", "42702", "42803",
                       "42P02", "42846", "42809", "42P10", "42P18", "34000", "26000"}


# ---------------------------------------------------------------------------
# Query files
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    category: str
    number: int
    file: str
    line: int
    sql: str
    opts_json: str = "{}"

    @property
    def opts(self):
        return json.loads(self.opts_json)

    @property
    def id(self):
        return f"{self.category}-{self.number:03d}"

    @property
    def steps(self):
        sql = self.sql
        if self.opts.get("unescape"):
            sql = unescape(sql)
        return [s.strip() for s in sql.split(";;") if s.strip()]

    @property
    def roles(self):
        return self.opts.get("roles", ["agent", "power"])

    def where(self):
        return f"{self.file}:{self.line}"


def unescape(sql):
    table = {"t": "\t", "f": "\f", "r": "\r", "n": "\n", "v": "\v"}
    return re.sub(r"\\(u[0-9a-fA-F]{4}|[tfrnv])",
                  lambda m: chr(int(m.group(1)[1:], 16)) if m.group(1)[0] == "u" else table[m.group(1)], sql)


def load_entries(path):
    """Entries of one query file (format: leak_queries/README.md)."""
    category = re.sub(r"^\d+_", "", path.stem)
    defaults = {}
    entries = []
    current = None
    decoder = json.JSONDecoder()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("#!"):
            defaults.update(json.loads(line[2:]))
            continue
        if not line.strip() or line.startswith("#"):
            continue
        if line[0] in " \t" and current is not None:
            current["sql"] += "\n" + line.strip()
            continue
        opts = dict(defaults)
        text = line
        if text.startswith("{"):
            extra, end = decoder.raw_decode(text)
            opts.update(extra)
            text = text[end:].strip()
        current = {"line": lineno, "sql": text, "opts": opts}
        entries.append(current)
    return [Entry(category, n, path.name, e["line"], e["sql"], json.dumps(e["opts"], sort_keys=True))
            for n, e in enumerate(entries, 1)]


def adversarial_entries():
    out = []
    for path in sorted(QUERY_DIR.glob("[0-9][0-9]_*.sql")):
        out += load_entries(path)
    return out


ADVERSARIAL = adversarial_entries()
CLEAN = load_entries(QUERY_DIR / "clean.sql")


def role_params(entries):
    return [pytest.param(e, role, id=f"{e.id}-{role}") for e in entries for role in e.roles]


# ---------------------------------------------------------------------------
# The forbidden strings
# ---------------------------------------------------------------------------

def phi_columns():
    """(table, column, class, join_key) for every PHI column of the clinic catalog."""
    cols = []
    doc = yaml.safe_load(RULES.read_text())
    for c in doc.get("columns", []):
        cols.append((c["table"], c["column"], c["class"], bool(c.get("join_key"))))
    # The fixture's own list must agree (a column missing from the rules would go unchecked).
    tsv = [line.split("\t")[:2] for line in PHI_TSV.read_text().splitlines()[1:] if line.strip()]
    listed = {(t, c) for t, c, _, _ in cols}
    missing = [f"{t}.{c}" for t, c in tsv if (t, c) not in listed]
    assert not missing, f"clinic.phi.tsv lists PHI columns clinic.yaml does not: {missing}"
    return cols


MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
DIGIT_LETTERS = str.maketrans("0123456789", "abcdefghij")
HASHES_ALL_FORMS = ("md5", "sha256")
HASHES_AS_IS = ("sha1", "sha224", "sha384", "sha512")


def alnum(s):
    return re.sub(r"[^0-9a-z]", "", s.lower())


def julian_day(d):
    return d.toordinal() + 1721425


DIGITS_ONLY = re.compile(r"^-?[0-9]+$")


class PhiDetector:
    """Every raw PHI value in every encoding we search for, and the search itself.

    plain   lowercase forms searched as substrings of every haystack: wire messages,
            decoded cells, error and notice fields, COPY data
    joined  the strong subset of plain (whole values, long digit strings, dates), searched in
            cells joined across a row and short text cells joined down a column (a value split
            across columns or rows); weak forms there would match by accident
    norm    alphanumeric-only forms (letters, or at least 9 digits), searched in alnum-normalised
            cells (a value spread over an array, a JSON document, punctuation)
    exact   numbers that collide with other numbers as substrings (epoch seconds, 32-bit hashes):
            a cell equal to one
    exact_text  forms too short for substring search (5-digit zips, 7-8 digit MRN/account
            digits, julian days): a text cell equal to one (as integers they are plausible
            balances and counts)
    """

    def __init__(self):
        self.plain = {}
        self.joined = {}
        self.norm = {}
        self.exact = {}
        self.exact_text = {}

    # -- building ---------------------------------------------------------------
    def _put(self, table, s, meta):
        if s:
            table.setdefault(s.lower(), meta)

    def add_form(self, s, col, enc, key, strong=False, exact_only=False):
        """A substring form; digit-only forms under 9 digits, and numbers that collide with
        other numbers by chance (hashes, day counts), can only match whole cells."""
        if s is None:
            return
        s = s.lower()
        meta = (col, enc, key)
        if exact_only:
            self._put(self.exact, s, meta)
            return
        if DIGITS_ONLY.match(s) and len(s.lstrip("-")) < 9:
            if len(s) >= 4:
                self._put(self.exact_text, s, meta)   # a text cell that is exactly these digits
            return
        if len(s) < MIN_LEN:
            return
        self._put(self.plain, s, meta)
        if strong:
            self._put(self.joined, s, meta)

    def add_norm(self, s, col, enc, key):
        a = alnum(s)
        if (re.search(r"[a-z]", a) and len(a) >= MIN_LEN) or len(a) >= 9:
            self._put(self.norm, a, (col, enc, key))

    def add_value(self, table, column, cls, value, key, server_forms=()):
        col = f"{table}.{column}"

        def P(s, enc, strong=False, exact_only=False):
            self.add_form(s, col, enc, key, strong, exact_only)

        for enc, s in server_forms:
            P(s, enc, exact_only=True)
        if cls == "dates":
            self._add_date(P, value, col, key)
            return
        v = value
        if len(v) < MIN_LEN:
            self._put(self.exact_text, v, (col, "as-is (whole cell)", key))
        variants = {"as-is": v, "lower": v.lower(), "upper": v.upper()}
        digits = re.sub(r"\D", "", v)
        if cls in ("ssn", "phone", "mrn", "health_plan_beneficiary", "account") and digits != v \
                and len(digits) >= MIN_LEN:
            variants["digits"] = digits
        strong_value = len(v) >= 8 or cls in ("ssn", "phone")
        for name, f in variants.items():
            b = f.encode()
            label = "as-is" if name in ("lower", "upper") else name   # matching is case-insensitive
            P(f, label, strong=strong_value)
            P(f[::-1], f"reversed({label})", strong=strong_value and len(f) >= 8)
            P(b.hex(), f"hex({name})")
            P(base64.b64encode(b).decode().rstrip("="), f"base64({name})")
            P(base64.urlsafe_b64encode(b).decode().rstrip("="), f"base64url({name})")
            for h in HASHES_ALL_FORMS:
                P(hashlib.new(h, b).hexdigest(), f"{h}({name})")
            if name == "as-is":
                for h in HASHES_AS_IS:
                    P(hashlib.new(h, b).hexdigest(), f"{h}({name})")
            q = urllib.parse.quote(f, safe="")
            if q != f:
                P(q, f"url-encoded({name})")
                P(urllib.parse.quote_plus(f, safe=""), f"url-encoded+({name})")
        if "digits" in variants:
            P(format(int(digits), "x"), "to_hex(digits)")
            P(digits.translate(DIGIT_LETTERS), "digits->letters")
            P(v.translate(DIGIT_LETTERS), "digits->letters")
        if cls == "ssn" and len(digits) == 9:
            P(f"{digits[:3]} {digits[3:5]} {digits[5:]}", "ssn with spaces", strong=True)
        if cls == "phone" and len(digits) == 10:
            P(f"({digits[:3]}) {digits[3:6]}-{digits[6:]}", "phone (NPA) format", strong=True)
            P(f"{digits[:3]}.{digits[3:6]}.{digits[6:]}", "phone dotted", strong=True)
            P("+1" + digits, "phone E.164", strong=True)
        if cls in ("names", "geographic", "email"):
            P(codecs.encode(v.lower(), "rot13"), "rot13")
            P("".join(codecs.encode(ch, "rot13") if ch.islower() else ch for ch in v), "rot13 (lowercase only)")
        if cls == "email" and "@" in v:
            local = v.split("@", 1)[0]
            P(local, "email local part", strong=len(local) >= 8)
            P(local[::-1], "reversed(email local part)")
            P(local.encode().hex(), "hex(email local part)")
            P(hashlib.md5(local.encode()).hexdigest(), "md5(email local part)")
            self._fragments(P, local)
        elif cls != "free_text":
            self._fragments(P, v)
        self.add_norm(v, col, "alnum-only", key)
        self.add_norm(v[::-1], col, "alnum-only reversed", key)

    @staticmethod
    def _fragments(P, v):
        """Long substrings of an identifier (an overlay, ltrim or substr that keeps most of it).
        Short runs of bare digits look like counters and dates: not those."""
        for n in range(FRAGMENT_MIN, len(v)):
            for i in range(len(v) - n + 1):
                frag = v[i:i + n]
                digits = sum(ch.isdigit() for ch in frag)
                if sum(ch.isalpha() for ch in frag) >= 3 or digits >= 9 or (digits >= 7 and "-" in frag):
                    P(frag, f"fragment ({n} of {len(v)} chars)")

    def _add_date(self, P, value, col, key):
        """A date or timestamp.  The masks keep the year (YYYY-01-01): a value on January 1st
        at midnight is what the mask shows, so it is not forbidden; otherwise the day is."""
        d = datetime.date.fromisoformat(value[:10])
        y, m, dd = value[:4], value[5:7], value[8:10]
        time_part = value[11:]
        if (m, dd) == ("01", "01"):
            if time_part and time_part.strip("0:.") != "":
                P(value, "as-is", strong=True)
            return
        iso = value[:10]
        mon, month = MONTHS[d.month - 1][:3], MONTHS[d.month - 1]
        P(iso, "iso date", strong=True)
        for s, enc in [(y + m + dd, "digits"), (f"{m}/{dd}/{y}", "MM/DD/YYYY"),
                       (f"{dd}/{m}/{y}", "DD/MM/YYYY"), (f"{dd}.{m}.{y}", "DD.MM.YYYY"),
                       (f"{y}/{m}/{dd}", "YYYY/MM/DD"), (f"{dd} {mon} {y}", "DD Mon YYYY"),
                       (f"{mon} {dd} {y}", "Mon DD YYYY"), (f"{dd}-{mon}-{y}", "DD-MON-YYYY"),
                       (f"{month} {d.day}, {y}", "Month D, YYYY"),
                       (iso[::-1], "reversed"), (iso.encode().hex(), "hex"),
                       (base64.b64encode(iso.encode()).decode().rstrip("="), "base64"),
                       (hashlib.md5(iso.encode()).hexdigest(), "md5"),
                       (hashlib.sha256(iso.encode()).hexdigest(), "sha256")]:
            P(s, enc)
        if m != "01":
            P(f"{y}-{m}", "year-month")
        P(str(julian_day(d)), "julian day")           # to_char(d, 'J') is text: text cells only
        midnight = datetime.datetime(d.year, d.month, d.day, tzinfo=datetime.timezone.utc)
        P(str(int(midnight.timestamp())), "epoch seconds", exact_only=True)
        if time_part:
            P(value, "as-is", strong=True)
            P(value.replace(" ", "T"), "iso T")
            ts = datetime.datetime.fromisoformat(value).replace(tzinfo=datetime.timezone.utc)
            P(str(int(ts.timestamp())), "epoch seconds", exact_only=True)

    def finish(self):
        def index(forms):
            # 6-character prefix -> [the 6-char form, {7-char forms}, {8-char prefix: [longer forms]}]:
            # one dict lookup per haystack position when nothing matches.
            idx = {}
            for s, v in forms.items():
                e = idx.setdefault(s[:6], [None, {}, {}])
                if len(s) == 6:
                    e[0] = (s, v)
                elif len(s) == 7:
                    e[1][s] = v
                else:
                    e[2].setdefault(s[:8], []).append((s, v))
            return idx
        self.i_plain = index(self.plain)
        self.i_joined = index(self.joined)
        self.i_norm = index(self.norm)

    # -- searching --------------------------------------------------------------
    @staticmethod
    def _search(text, idx):
        found = []
        get = idx.get
        for i in range(len(text) - MIN_LEN + 1):
            e = get(text[i:i + 6])
            if e is None:
                continue
            if e[0]:
                found.append(e[0])
            if e[1]:
                v = e[1].get(text[i:i + 7])
                if v:
                    found.append((text[i:i + 7], v))
            if e[2]:
                for s, meta in e[2].get(text[i:i + 8], ()):
                    if text.startswith(s, i):
                        found.append((s, meta))
        return found

    def _exact(self, text, where, hits, is_text):
        t = text.strip().lower()
        if re.match(r"^-?\d+\.0*$", t):
            t = t.split(".")[0]
        for table in ((self.exact, self.exact_text) if is_text else (self.exact,)):
            meta = table.get(t)
            if meta:
                hits.append(Hit(where, meta[0], meta[1], meta[2], t))

    def scan(self, text, where, hits, norm=True, cell=False, is_text=False, joined=False):
        """Search one haystack; appends Hit records to hits.
        cell: text is one value (exact forms apply); joined: text is several values glued."""
        if not text:
            return
        low = text.lower()
        for s, (col, enc, key) in self._search(low, self.i_joined if joined else self.i_plain):
            hits.append(Hit(where, col, enc, key, s))
        if norm:
            for s, (col, enc, key) in self._search(alnum(text), self.i_norm):
                hits.append(Hit(where + " (alnum-normalised)", col, enc, key, s))
        if cell:
            self._exact(text, where, hits, is_text)

    def __len__(self):
        return sum(map(len, (self.plain, self.norm, self.exact, self.exact_text)))


@dataclass(frozen=True)
class Hit:
    where: str
    column: str
    encoding: str
    key: str
    text: str

    def __str__(self):
        return f"{self.column} [{self.key}] as {self.encoding} in {self.where}: {self.text[:60]!r}"


def build_detector(stack):
    det = PhiDetector()
    with psycopg.connect(**stack.connect_kwargs("clinic")) as conn:
        for table, column, cls, join_key in phi_columns():
            if join_key:
                # Surrogate keys (small integers 1..1500) cannot be told from other numbers;
                # their masking is the unit and pgTAP suites' business.
                continue
            text_forms = cls != "dates"
            sql = (f"select id::text, {column}::text"
                   + (f", hashtext({column}::text)::text, hashtextextended({column}::text, 0)::text"
                      if text_forms else "")
                   + f" from {table} where {column} is not null order by id")
            for row in conn.execute(sql):
                server = [("hashtext", row[2]), ("hashtextextended", row[3])] if text_forms else []
                det.add_value(table, column, cls, row[1], f"{table}.id={row[0]}", server)
        for pid, first, last in conn.execute("select id, first_name, last_name from patients"):
            full = f"{first} {last}"
            key = f"patients.id={pid}"
            for enc, s in [("md5(first last)", hashlib.md5(full.encode()).hexdigest()),
                           ("sha256(first last)", hashlib.sha256(full.encode()).hexdigest()),
                           ("hex(first last)", full.encode().hex()),
                           ("base64(first last)", base64.b64encode(full.encode()).decode().rstrip("="))]:
                det.add_form(s, "patients.first_name+last_name", enc, key)
    det.finish()
    return det


# ---------------------------------------------------------------------------
# A recording relay between the client and phigate
# ---------------------------------------------------------------------------

class _RelaySession:
    def __init__(self, client, upstream):
        self.client, self.upstream = client, upstream
        self.from_server = bytearray()
        self.threads = [threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True),
                        threading.Thread(target=self._pump, args=(upstream, client, self.from_server),
                                         daemon=True)]
        for t in self.threads:
            t.start()

    @staticmethod
    def _pump(src, dst, record):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if record is not None:
                    record += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def abort(self):
        for s in (self.client, self.upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def finish(self, timeout):
        for t in self.threads:
            t.join(timeout)
        if any(t.is_alive() for t in self.threads):
            self.abort()
            for t in self.threads:
                t.join(5)
        for s in (self.client, self.upstream):
            s.close()
        return bytes(self.from_server)


class WireRecorder:
    """Listens on a local port, relays each connection to phigate and keeps every byte
    phigate sent back.  mark() / collect(mark) delimit the connections of one test."""

    def __init__(self, host, port):
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.sessions = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):   # relay each message as it comes (no Nagle delays)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.sessions.append(_RelaySession(client, upstream))

    def mark(self):
        with self.lock:
            return len(self.sessions)

    def abort_since(self, mark):
        with self.lock:
            sessions = self.sessions[mark:]
        for s in sessions:
            s.abort()

    def collect(self, mark, timeout=10):
        with self.lock:
            sessions = self.sessions[mark:]
        return [s.finish(timeout) for s in sessions]

    def close(self):
        self.listener.close()
        self.abort_since(0)


MESSAGE_NAMES = {"D": "DataRow", "T": "RowDescription", "E": "ErrorResponse", "N": "NoticeResponse",
                 "A": "NotificationResponse", "S": "ParameterStatus", "d": "CopyData", "C": "CommandComplete",
                 "H": "CopyOutResponse", "G": "CopyInResponse", "W": "CopyBothResponse", "Z": "ReadyForQuery",
                 "K": "BackendKeyData", "R": "Authentication", "t": "ParameterDescription", "1": "ParseComplete",
                 "2": "BindComplete", "3": "CloseComplete", "n": "NoData", "s": "PortalSuspended",
                 "I": "EmptyQueryResponse", "c": "CopyDone", "v": "NegotiateProtocolVersion"}
ERROR_FIELDS = {"S": "severity", "V": "severity", "C": "sqlstate", "M": "message", "D": "detail", "H": "hint",
                "P": "position", "p": "internal position", "q": "internal query", "W": "context/where",
                "s": "schema", "t": "table", "c": "column", "d": "datatype", "n": "constraint", "F": "file",
                "L": "line", "R": "routine"}


def wire_haystacks(data, conn_no):
    """(where, text) for each backend message in a recorded stream."""
    i = 0
    n = 0
    while i + 5 <= len(data):
        t = chr(data[i])
        length = struct.unpack("!I", data[i + 1:i + 5])[0]
        body = data[i + 5:i + 1 + length]
        i += 1 + length
        n += 1
        name = MESSAGE_NAMES.get(t, f"message {t!r}")
        where = f"wire conn {conn_no} msg {n} {name}"
        if t in "EN":
            for part in body.rstrip(b"\0").split(b"\0"):
                if part:
                    code = chr(part[0])
                    yield f"{where} field {ERROR_FIELDS.get(code, code)}", part[1:].decode("latin-1")
        elif t == "D" and len(body) >= 2:
            ncols = struct.unpack("!H", body[:2])[0]
            j = 2
            for c in range(ncols):
                if j + 4 > len(body):
                    break
                vlen = struct.unpack("!i", body[j:j + 4])[0]
                j += 4
                if vlen > 0:
                    yield f"{where} col {c + 1}", body[j:j + vlen].decode("latin-1")
                    j += vlen
            if j < len(body):
                yield f"{where} (malformed tail)", body[j:].decode("latin-1")
        else:
            yield where, body.decode("latin-1")
    if i < len(data):
        yield f"wire conn {conn_no} trailing bytes", data[i:].decode("latin-1")


# ---------------------------------------------------------------------------
# Running one entry
# ---------------------------------------------------------------------------

@dataclass
class Result:
    sql: str
    kind: str                       # rows | status | copy | error
    columns: list = field(default_factory=list)
    types: list = field(default_factory=list)
    raw_rows: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    status: str = None
    copy: bytes = b""
    sqlstate: str = None
    message: str = None
    diag: dict = field(default_factory=dict)
    decode_error: str = None


@dataclass
class Outcome:
    results: list = field(default_factory=list)
    notices: list = field(default_factory=list)
    notifies: list = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    wire: list = field(default_factory=list)

    @property
    def errors(self):
        return [r for r in self.results if r.kind == "error"]

    def refused_by_phigate(self):
        return any(r.sqlstate == "42501" and "phigate" in (r.message or "").lower() for r in self.errors)

    def summary(self):
        parts = []
        for r in self.results:
            if r.kind == "error":
                parts.append(f"error {r.sqlstate}: {(r.message or '').splitlines()[0][:160] if r.message else ''}")
            elif r.kind == "rows":
                parts.append(f"{len(r.rows) if r.rows else len(r.raw_rows)} row(s) {r.columns}")
            elif r.kind == "copy":
                parts.append(f"copy {len(r.copy)} bytes")
            else:
                parts.append(f"{r.status}")
        return "; ".join(parts) or "(nothing)"


DIAG_FIELDS = ("severity", "sqlstate", "message_primary", "message_detail", "message_hint", "context",
               "statement_position", "internal_position", "internal_query", "schema_name", "table_name",
               "column_name", "datatype_name", "constraint_name", "source_function")


def diag_dict(diag):
    out = {}
    for f in DIAG_FIELDS:
        try:
            v = getattr(diag, f)
        except Exception:  # noqa: BLE001 - a field psycopg cannot decode
            v = None
        if v is not None:
            out[f] = v
    return out


def _collect(cur, sql, out):
    if cur.description is None:
        out.results.append(Result(sql, "status", status=cur.statusmessage))
        return
    res = cur.pgresult
    raw = [[res.get_value(r, c) for c in range(res.nfields)] for r in range(res.ntuples)] if res else []
    r = Result(sql, "rows", columns=[d.name for d in cur.description],
               types=[d.type_code for d in cur.description], raw_rows=raw, status=cur.statusmessage)
    try:
        r.rows = cur.fetchall()
    except Exception as e:  # noqa: BLE001 - a value psycopg cannot load: the raw bytes still count
        r.decode_error = f"{type(e).__name__}: {e}"
    out.results.append(r)


def _error(out, sql, e):
    if isinstance(e, psycopg.Error):
        diag = diag_dict(e.diag)
        out.results.append(Result(sql, "error", sqlstate=e.sqlstate, message=str(e), diag=diag))
    else:
        out.results.append(Result(sql, "error", sqlstate="client", message=f"{type(e).__name__}: {e}"))


def run_step(conn, sql, opts, out):
    try:
        if opts.get("copy"):
            with conn.cursor() as cur:
                data = bytearray()
                with cur.copy(sql) as cp:
                    for chunk in cp:
                        data += chunk
                out.results.append(Result(sql, "copy", copy=bytes(data), status=cur.statusmessage))
        elif opts.get("server_cursor"):
            with conn.cursor(name="leak_server_cursor", binary=bool(opts.get("binary"))) as cur:
                cur.execute(sql, opts.get("params"))
                rows = cur.fetchall()
                out.results.append(Result(sql, "rows", columns=[d.name for d in cur.description or []],
                                          types=[d.type_code for d in cur.description or []], rows=rows,
                                          status=cur.statusmessage))
        else:
            with conn.cursor() as cur:
                for _ in range(opts.get("repeat", 1)):
                    cur.execute(sql, opts.get("params"), prepare=opts.get("prepare"),
                                binary=opts.get("binary"))
                    while True:
                        _collect(cur, sql, out)
                        if not cur.nextset():
                            break
    except Exception as e:  # noqa: BLE001 - every outcome is recorded, none is fatal
        _error(out, sql, e)


def run_entry(entry, kwargs, recorder=None):
    """Run an entry's steps on one fresh connection; through the recorder if given."""
    opts = entry.opts
    autocommit = bool(opts.get("autocommit"))
    out = Outcome()
    kw = dict(kwargs, sslmode="disable", gssencmode="disable", connect_timeout=10)
    kw.update(opts.get("conn", {}))
    mark = None
    if recorder is not None:
        kw.update(host="127.0.0.1", port=recorder.port)
        mark = recorder.mark()
    conn = None
    cancelled = threading.Event()

    def watchdog():
        cancelled.set()
        if recorder is not None:
            recorder.abort_since(mark)
        elif conn is not None:
            try:
                conn.cancel()
            except Exception:  # noqa: BLE001
                pass

    timer = threading.Timer(STEP_TIMEOUT_S, watchdog)
    timer.start()
    try:
        try:
            conn = psycopg.connect(autocommit=autocommit, **kw)
        except Exception as e:  # noqa: BLE001
            _error(out, "(connect)", e)
        if conn is not None:
            conn.add_notice_handler(lambda d: out.notices.append(diag_dict(d)))
            conn.add_notify_handler(lambda n: out.notifies.append((n.channel, n.payload)))
            for sql in entry.steps:
                run_step(conn, sql, opts, out)
            for p in ("application_name", "client_encoding", "DateStyle", "TimeZone", "search_path",
                      "standard_conforming_strings", "session_authorization", "IntervalStyle"):
                try:
                    out.parameters[p] = conn.info.parameter_status(p)
                except Exception:  # noqa: BLE001
                    pass
            if not autocommit:
                try:
                    conn.rollback()
                except Exception:  # noqa: BLE001
                    pass
    finally:
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
        timer.cancel()
        if recorder is not None:
            out.wire = recorder.collect(mark)
    if cancelled.is_set():
        out.results.append(Result("(watchdog)", "error", sqlstate="timeout",
                                  message=f"entry did not finish within {STEP_TIMEOUT_S} s"))
    return out


# ---------------------------------------------------------------------------
# Scanning an outcome
# ---------------------------------------------------------------------------

ARRAY_LITERAL = re.compile(r"^\{.*\}$", re.S)


def cell_strings(v):
    """(text, is_text_value) for one decoded value, flattened: containers give their parts."""
    if v is None:
        return []
    if isinstance(v, str):
        out = [(v, True)]
        if ARRAY_LITERAL.match(v):
            out += [(p.strip('"'), True) for p in v[1:-1].split(",")]
        return out
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        return [(b.hex(), False), (b.decode("latin-1"), False)]
    if isinstance(v, (list, tuple)):
        out = [(repr(v), False)]
        for x in v:
            out += cell_strings(x)
        return out
    if isinstance(v, dict):
        out = [(json.dumps(v, default=str), False)]
        for k, x in v.items():
            out += cell_strings(k) + cell_strings(x)
        return out
    return [(str(v), False)]


class _Enough(Exception):
    pass


class _FirstHit(list):
    def append(self, item):
        super().append(item)
        raise _Enough


def outcome_leaks_at_all(det, outcome):
    """Whether anything in the outcome trips the detector (stops at the first hit)."""
    try:
        outcome_hits(det, outcome, _FirstHit())
    except _Enough:
        return True
    return False


def outcome_hits(det, outcome, hits=None):
    hits = [] if hits is None else hits
    for c, data in enumerate(outcome.wire, 1):
        for where, text in wire_haystacks(data, c):
            det.scan(text, where, hits, norm=False)
    for k, r in enumerate(outcome.results, 1):
        label = f"result {k}"
        for name in r.columns:
            det.scan(name, f"{label} column name", hits, cell=True, is_text=True)
        if r.kind == "rows":
            columns_short = [[] for _ in r.columns]
            rows = r.rows if r.rows else r.raw_rows
            for ri, row in enumerate(rows, 1):
                texts = []
                for ci, v in enumerate(row):
                    name = r.columns[ci] if ci < len(r.columns) else str(ci)
                    strs = cell_strings(v)
                    for s, is_text in strs:
                        det.scan(s, f"{label} row {ri} column {name!r}", hits, cell=True, is_text=is_text)
                    if isinstance(v, str):
                        texts.append(v)
                        if len(v) <= SHORT_CELL and ci < len(columns_short):
                            columns_short[ci].append(v)
                if len(texts) > 1:
                    det.scan("".join(texts), f"{label} row {ri} (text cells joined)", hits, joined=True)
            for ci, parts in enumerate(columns_short):
                if len(parts) > 1:
                    det.scan("".join(parts), f"{label} column {r.columns[ci]!r} (short cells joined down rows)",
                             hits, joined=True)
            for ri, row in enumerate(r.raw_rows, 1):
                for ci, v in enumerate(row):
                    if v is None:
                        continue
                    text = bytes(v).decode("latin-1")
                    decoded = r.rows[ri - 1][ci] if ri <= len(r.rows) and ci < len(r.rows[ri - 1]) else None
                    if text != decoded:
                        det.scan(text, f"{label} row {ri} col {ci + 1} (raw bytes)", hits, norm=False)
        if r.kind == "copy":
            text = r.copy.decode("latin-1")
            det.scan(text, f"{label} COPY data", hits, norm=False)
            for li, line in enumerate(text.splitlines(), 1):
                det.scan(line, f"{label} COPY line {li}", hits)
                for cell in re.split(r"[\t,|]", line):
                    det.scan(cell, f"{label} COPY line {li} field", hits, norm=False, cell=True, is_text=True)
        if r.kind == "error":
            for f, v in r.diag.items():
                det.scan(str(v), f"{label} error {f}", hits)
            det.scan(r.message or "", f"{label} error text", hits)
        if r.status:
            det.scan(r.status, f"{label} command tag", hits)
    for k, d in enumerate(outcome.notices, 1):
        for f, v in d.items():
            det.scan(str(v), f"notice {k} {f}", hits)
    for k, (channel, payload) in enumerate(outcome.notifies, 1):
        det.scan(channel, f"notification {k} channel", hits)
        det.scan(payload, f"notification {k} payload", hits, cell=True, is_text=True)
    for p, v in outcome.parameters.items():
        if v:
            det.scan(v, f"parameter status {p}", hits, cell=True, is_text=True)
    return hits


def _rank(h):
    if h.encoding.startswith("fragment"):
        return 3
    if "alnum" in h.where or h.encoding.startswith("alnum"):
        return 2
    if h.encoding in ("as-is", "iso date", "email local part", "as-is (whole cell)"):
        return 0
    return 1


def describe_hits(hits, limit=20):
    """One line per leaked value: the column, the row it belongs to, its clearest encoding and
    where it was seen (message kinds and fields, not every occurrence)."""
    groups = {}
    for h in hits:
        g = groups.setdefault((h.column, h.key), {"best": h, "encodings": [], "places": []})
        if (_rank(h), -len(h.text)) < (_rank(g["best"]), -len(g["best"].text)):
            g["best"] = h
        if h.encoding not in g["encodings"]:
            g["encodings"].append(h.encoding)
        place = re.sub(r"\b(conn|msg|row|col|result|notice|notification|line) \d+ ?", "", h.where).strip()
        if place not in g["places"]:
            g["places"].append(place)
    lines = []
    for (col, key), g in groups.items():
        b = g["best"]
        others = [e for e in g["encodings"] if e != b.encoding and not e.startswith("fragment")]
        lines.append(f"{col} [{key}] as {b.encoding} {b.text[:48]!r}"
                     + (f" (also {', '.join(others[:4])})" if others else "")
                     + f"; in {'; '.join(g['places'][:4])}" + (" ..." if len(g["places"]) > 4 else ""))
    more = f"\n  ... and {len(lines) - limit} more values" if len(lines) > limit else ""
    return "\n  ".join(lines[:limit]) + more


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------

def table_digests(stack):
    with psycopg.connect(**stack.connect_kwargs("clinic")) as conn:
        out = {}
        for t in ("patients", "encounters", "prescriptions", "billing_accounts", "wards", "diagnosis_codes",
                  "insurance_plans"):
            out[t] = conn.execute(f"select count(*), md5(coalesce(string_agg(t::text, '|' order by t::text), ''))"
                                  f" from {t} t").fetchone()
        out["leftover objects"] = conn.execute(
            "select coalesce(string_agg(relname, ','), '') from pg_class where relname like 'leak%'").fetchone()
        out["large objects"] = conn.execute(
            "select count(*) from pg_largeobject_metadata where oid between 424242 and 424244").fetchone()
        return out


@pytest.fixture(scope="session")
def phi_detector(stack):
    return build_detector(stack)


@dataclass
class LeakEnv:
    gateway: object
    recorder: WireRecorder
    detector: PhiDetector
    stack: object
    report: Path
    direct_cache: dict = field(default_factory=dict)

    def direct(self, entry):
        if entry.id not in self.direct_cache:
            self.direct_cache[entry.id] = run_entry(entry, self.stack.connect_kwargs("clinic"))
        return self.direct_cache[entry.id]

    def via(self, entry, role):
        user, password = ROLES[role]
        return run_entry(entry, self.gateway.connect_kwargs("clinic", user=user, password=password), self.recorder)

    def record(self, **rec):
        with self.report.open("a") as f:
            f.write(json.dumps(rec, default=str) + "\n")


@pytest.fixture(scope="module")
def leak_env(gateway_maker, binaries, stack, phi_detector, tmp_path_factory):
    overrides = {
        "roles": {"leak_agent": {"upstreams": ["clinic"], "classes": {"read": "allow", "session": "allow"},
                                 "unscoped_row_limit": 100}},
        "identities": {LEAK_AGENT: {"scram": scram_verifier(binaries, LEAK_AGENT_PASSWORD), "role": "leak_agent"}},
    }
    before = table_digests(stack)
    gw = gateway_maker(overrides, name="test_leaks")
    recorder = WireRecorder(gw.host, gw.port)
    report = Path(os.environ.get("PHIGATE_LEAK_REPORT") or (gw.workdir / "leak-report.jsonl"))
    report.write_text("")
    # Another session's statement text with raw PHI in it, idle in pg_stat_activity for the
    # whole module (an application that queried by SSN and name).
    planted = psycopg.connect(**stack.connect_kwargs("clinic", application_name="leak-suite-planted"),
                              autocommit=True)
    p = planted.execute("select ssn, last_name, email, dob::text from patients where id = 7").fetchone()
    planted.execute(f"select count(*) from patients where ssn = '{p[0]}' and last_name = '{p[1]}' "
                    f"and email = '{p[2]}' and dob = '{p[3]}'")
    env = LeakEnv(gw, recorder, phi_detector, stack, report)
    env.digests_before = before
    yield env
    planted.close()
    recorder.close()
    stop_and_check(gw)


# ---------------------------------------------------------------------------
# The detector itself: it must see each encoding, and stay quiet on non-PHI data
# ---------------------------------------------------------------------------

DETECTOR_PROBES = [
    ("select ssn from patients where id = 1", "as-is"),
    ("select upper(first_name), lower(last_name) from patients where id = 2", "as-is"),
    ("select reverse(ssn) from patients where id = 3", "reversed(as-is)"),
    ("select replace(ssn, '-', '') from patients where id = 4", "digits"),
    ("select replace(phone, '-', '') from patients where id = 4", "digits"),
    ("select encode(convert_to(first_name, 'UTF8'), 'hex') from patients where id = 5", "hex(as-is)"),
    ("select convert_to(upper(last_name), 'UTF8') from patients where id = 5", "hex(upper)"),
    ("select encode(convert_to(email, 'UTF8'), 'base64') from patients where id = 6", "base64(as-is)"),
    ("select md5(ssn) from patients where id = 7", "md5(as-is)"),
    ("select encode(sha256(convert_to(ssn, 'UTF8')), 'hex') from patients where id = 8", "sha256(as-is)"),
    ("select md5(replace(ssn, '-', '')) from patients where id = 8", "md5(digits)"),
    ("select encode(sha512(convert_to(mrn, 'UTF8')), 'hex') from patients where id = 8", "sha512(as-is)"),
    ("select hashtext(ssn) from patients where id = 9", "hashtext"),
    ("select replace(email, '@', '%40') from patients where id = 9", "url-encoded(as-is)"),
    ("select to_char(dob, 'MM/DD/YYYY') from patients where id = 10", "MM/DD/YYYY"),
    ("select to_char(dob, 'J') from patients where id = 11", "julian day"),
    ("select extract(epoch from dob)::bigint from patients where id = 12", "epoch seconds"),
    ("select dob from patients where id = 13", "iso date"),
    ("select admitted_at from encounters where id = 1", "as-is"),
    ("select date_trunc('month', admitted_at)::date from encounters where id = 1", "year-month"),
    ("select left(ssn, 6), right(ssn, 5) from patients where id = 14", "as-is"),
    ("select substr(ssn, g, 1) from patients, generate_series(1, 11) g where patients.id = 15 order by g",
     "as-is"),
    ("select string_to_array(ssn, '-') from patients where id = 16", "alnum-only"),
    ("select zip from patients where id = 17", "as-is (whole cell)"),
    ("select array_agg(zip) from patients where id in (17, 18)", "as-is (whole cell)"),
    ("select to_hex(replace(ssn, '-', '')::int) from patients where id = 19", "to_hex(digits)"),
    ("select translate(ssn, '0123456789-', 'abcdefghij') from patients where id = 20", "digits->letters"),
    ("select ltrim(ssn, '9') from patients where id = 21", "fragment"),
    ("select notes from encounters where id = 2", "as-is"),
    ("select md5(notes) from encounters where id = 2", "md5(as-is)"),
    ("select account_number from billing_accounts where id = 3", "as-is"),
    ("select insurance_member_id, street, city from patients where id = 22", "as-is"),
    ("select translate(lower(city), 'abcdefghijklmnopqrstuvwxyz', 'nopqrstuvwxyzabcdefghijklm') "
     "from patients where id = 23", "rot13"),
    ("select md5(first_name || ' ' || last_name) from patients where id = 24", "md5(first last)"),
    ("select row_to_json(p) from patients p where id = 25", "as-is"),
]


@pytest.mark.parametrize("sql,encoding", DETECTOR_PROBES, ids=[f"probe{i:02d}" for i in range(len(DETECTOR_PROBES))])
def test_leak_detector_sees_encoding(sql, encoding, stack, phi_detector):
    """A direct (unmasked) answer must trip the detector with the expected encoding:
    otherwise the leak tests below would pass for the wrong reason."""
    out = run_entry(Entry("probe", 0, "-", 0, sql), stack.connect_kwargs("clinic"))
    assert not out.errors, out.summary()
    hits = outcome_hits(phi_detector, out)
    assert any(h.encoding.startswith(encoding) or h.encoding == encoding for h in hits), \
        f"detector missed {encoding} in {out.summary()}: {[str(h) for h in hits][:10]}"


NON_PHI_DUMPS = [
    "select * from wards", "select * from diagnosis_codes", "select * from insurance_plans",
    "select * from prescriptions",
    "select state, created_at, created_at::date, extract(epoch from created_at)::bigint from patients",
    "select id, ward_id, diagnosis_code, attending_npi from encounters",
    "select id, plan_id, balance_cents from billing_accounts",
    "select version(), current_user, current_database(), now()::date",
]


@pytest.mark.parametrize("sql", NON_PHI_DUMPS, ids=[f"dump{i}" for i in range(len(NON_PHI_DUMPS))])
def test_leak_detector_quiet_on_non_phi(sql, stack, phi_detector):
    """Whole non-PHI tables, read directly, hold no forbidden string (no false positives)."""
    out = run_entry(Entry("dump", 0, "-", 0, sql), stack.connect_kwargs("clinic"))
    assert not out.errors, out.summary()
    hits = outcome_hits(phi_detector, out)
    assert not hits, describe_hits(hits)


# ---------------------------------------------------------------------------
# The leak tests
# ---------------------------------------------------------------------------

def _expectation(entry, role):
    opts = entry.opts
    return opts.get(f"{role}_expect") or opts.get("expect")


@pytest.mark.parametrize("entry,role", role_params(ADVERSARIAL))
def test_leak(entry, role, leak_env):
    via = leak_env.via(entry, role)
    hits = outcome_hits(leak_env.detector, via)
    direct = leak_env.direct(entry)
    direct_leaks = outcome_leaks_at_all(leak_env.detector, direct)
    problems = []
    if hits:
        problems.append(f"raw PHI reached the {role} client:\n  {describe_hits(hits)}")
    expect = _expectation(entry, role)
    if expect == "refused" and not via.refused_by_phigate():
        problems.append(f"expected phigate to refuse this statement for the {role} role "
                        f"(SQLSTATE 42501 from phigate); got: {via.summary()}")
    first_direct_error = next((r for r in direct.errors), None)
    allowed = entry.opts.get("direct_sqlstate")
    allowed = [allowed] if isinstance(allowed, str) else (allowed or [])
    if first_direct_error and first_direct_error.sqlstate in BROKEN_QUERY_STATES \
            and first_direct_error.sqlstate not in allowed:
        problems.append(f"the query itself fails on a direct connection (fix the entry or set "
                        f"direct_sqlstate): {first_direct_error.sqlstate} {first_direct_error.message}")
    leak_env.record(id=entry.id, role=role, where=entry.where(), sql=entry.sql, outcome=via.summary(),
                    refused=via.refused_by_phigate(), leaks=[str(h) for h in hits][:50],
                    direct=direct.summary(), direct_leaks=direct_leaks, problems=problems)
    assert not problems, (f"{entry.where()} [{role}] {entry.sql}\noutcome: {via.summary()}\n"
                          + "\n".join(problems))


# ---------------------------------------------------------------------------
# No over-blocking
# ---------------------------------------------------------------------------

def comparable(outcome):
    out = []
    for r in outcome.results:
        if r.kind == "rows":
            rows = r.raw_rows if r.raw_rows else [tuple(map(repr, row)) for row in r.rows]
            out.append(("rows", r.columns, r.types, [list(map(_b, row)) for row in rows], r.status))
        elif r.kind == "copy":
            out.append(("copy", r.copy, r.status))
        elif r.kind == "error":
            out.append(("error", r.sqlstate, r.message))
        else:
            out.append(("status", r.status))
    return out


def _b(v):
    return bytes(v) if isinstance(v, (bytes, bytearray, memoryview)) else v


@pytest.mark.parametrize("entry,role", role_params(CLEAN))
def test_leak_free_query_not_overblocked(entry, role, leak_env):
    direct = leak_env.direct(entry)
    assert not direct.errors, f"the query fails on a direct connection: {direct.summary()}"
    via = leak_env.via(entry, role)
    leak_env.record(id=entry.id, role=role, where=entry.where(), sql=entry.sql, outcome=via.summary(),
                    refused=via.refused_by_phigate(), clean=True, same=comparable(via) == comparable(direct))
    if via.errors:
        pytest.fail(f"over-blocked: {entry.where()} [{role}] {entry.sql}\nthrough phigate: {via.summary()}\n"
                    f"direct: {direct.summary()}", pytrace=False)
    a, b = comparable(direct), comparable(via)
    if a != b:
        diff = next(((i, x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y), (min(len(a), len(b)), a, b))
        pytest.fail(f"changed by phigate: {entry.where()} [{role}] {entry.sql}\n"
                    f"first difference at result {diff[0]}:\n direct: {str(diff[1])[:800]}\n"
                    f" phigate: {str(diff[2])[:800]}", pytrace=False)


def test_leak_suite_left_clinic_unchanged(leak_env):
    """Writes ran in rolled-back transactions: the fixture must be exactly as before."""
    after = table_digests(leak_env.stack)
    assert after == leak_env.digests_before
