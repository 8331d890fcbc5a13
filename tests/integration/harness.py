"""The integration harness: the stack's coordinates, phigate processes with their
configuration files, and psql runners.  Fixtures wrapping these live in conftest.py;
tests import constants and helpers from here (AGENT, AGENT_PASSWORD, clean_env, ...).
"""

import copy
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

AGENT = "agent1"                       # identity with every statement class allowed
AGENT_PASSWORD = "agent-" + secrets.token_hex(12)
OUTSIDER = "outsider"                  # identity whose role only has the bench upstream
OUTSIDER_PASSWORD = "outsider-" + secrets.token_hex(12)

# Statement classes, all allowed for the tester role: this suite checks the
# protocol, not the policy engine (which gets its own suite).
ALL_CLASSES = {c: "allow" for c in ("read", "write", "ddl", "privilege", "session", "export",
                                   "procedural", "administrative")}

SANITIZER_PATTERNS = re.compile(
    r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer|"
    r"ThreadSanitizer|AddressSanitizer:DEADLYSIGNAL"
)


# ---------------------------------------------------------------------------
# The stack
# ---------------------------------------------------------------------------

@dataclass
class Stack:
    host: str
    pg_port: int
    user: str
    password: str
    sockdir: str
    bindir: str
    admin_user: str
    env: dict

    def conninfo(self, dbname="clinic", **extra):
        parts = {"host": self.host, "port": self.pg_port, "user": self.user, "dbname": dbname,
                 "sslmode": "disable"}
        parts.update(extra)
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def connect_kwargs(self, dbname="clinic", **extra):
        kw = dict(host=self.host, port=self.pg_port, user=self.user, password=self.password,
                  dbname=dbname, sslmode="disable", connect_timeout=10)
        kw.update(extra)
        return kw

    def admin_sql(self, sql, dbname="postgres"):
        """Run SQL as the superuser through the unix socket; returns stdout."""
        out = subprocess.run([f"{self.bindir}/psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                              "-h", self.sockdir, "-p", str(self.pg_port), "-U", self.admin_user,
                              "-d", dbname, "-c", sql],
                             capture_output=True, text=True, timeout=60, env=clean_env())
        assert out.returncode == 0, out.stderr
        return out.stdout


def clean_env(**extra):
    """The environment for client programs: no PG* / MYSQL* / MARIADB* variables leaking in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MYSQL", "MARIADB"))}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def stack_env_path():
    if os.environ.get("PHIGATE_STACK_ENV"):
        return Path(os.environ["PHIGATE_STACK_ENV"])
    base = os.environ.get("PHIGATE_TEST_PORT_BASE", "57000")
    name = "stack" if base == "55000" else f"stack-{base}"
    return REPO / ".run" / name / "stack.env"


def read_stack_env(path):
    env = {}
    for line in path.read_text().splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, value = words[1].split("=", 1)
            env[key] = value
    return env


# ---------------------------------------------------------------------------
# Binaries, TLS pair, verifiers
# ---------------------------------------------------------------------------

@dataclass
class Binaries:
    phigate: Path
    phigatectl: Path


def scram_verifier(binaries, password):
    out = subprocess.run([str(binaries.phigatectl), "scram-verifier", "--stdin"], input=password + "\n",
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    verifier = out.stdout.strip()
    assert verifier.startswith("SCRAM-SHA-256$"), verifier
    return verifier


@dataclass
class TlsPair:
    cert: Path
    key: Path


def audit_keygen(binaries, folder):
    """An Ed25519 audit signing key made by phigatectl; returns the private key file."""
    out = subprocess.run([str(binaries.phigatectl), "audit", "keygen", "--out", str(folder)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return Path(folder) / "audit_ed25519.key"


def audit_lines(folder):
    """[(file name, line number, raw line, record)] of the audit files in folder, in chain order.  A live file
    ends in preallocated zeros (gate/AUDIT_FORMAT.md) and maybe a record still being written: both left out."""
    out = []
    for f in sorted(Path(folder).glob("audit-*.jsonl")):
        for n, line in enumerate(f.read_bytes().rstrip(b"\0").split(b"\n")[:-1], 1):
            out.append((f.name, n, line, json.loads(line)))
    return out


def client_port(conn):
    """The local port of a psycopg connection: how its session appears in the connect record."""
    s = socket.socket(fileno=os.dup(conn.pgconn.socket))
    try:
        return s.getsockname()[1]
    finally:
        s.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# Configuration file
# ---------------------------------------------------------------------------

def to_yaml(value, indent=0):
    """A small YAML writer (block style) so the config files stay readable when debugging."""
    pad = "  " * indent
    lines = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict) and v:
                lines.append(f"{pad}{k}:")
                lines.append(to_yaml(v, indent + 1))
            else:
                lines.append(f"{pad}{k}: {yaml_scalar(v)}")
        return "\n".join(lines)
    raise TypeError(value)


def yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(yaml_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{}"
    return json.dumps(str(v))  # a double-quoted YAML string


def deep_merge(base, override):
    out = copy.deepcopy(base)
    for k, v in override.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------------------
# phigate processes
# ---------------------------------------------------------------------------

class Gateway:
    """One phigate process with its own folder, config, log and stderr file; port is its
    listener named `listener` (the MySQL suite's gateway is the same with "mysql")."""

    listener = "postgres"

    def __init__(self, workdir, binaries, stack, config):
        self.workdir = Path(workdir)
        self.binaries = binaries
        self.stack = stack
        self.config = config
        self.port = config["listen"][self.listener]["port"]
        self.host = "127.0.0.1"
        self.config_path = self.workdir / "phigate.yaml"
        self.log_path = Path(config["phigate"]["log_file"])
        self.stderr_path = self.workdir / "stderr.txt"
        self.stdout_path = self.workdir / "stdout.txt"
        self.proc = None
        self.stopped = False
        self.wrapper = []  # a command phigate runs under, e.g. ["prlimit", "--fsize=65536", "--"]

    # -- lifecycle -------------------------------------------------------------
    def start(self):
        self.config_path.write_text(to_yaml(self.config) + "\n")
        check = subprocess.run([str(self.binaries.phigate), "--check-config", str(self.config_path)],
                               capture_output=True, text=True, timeout=30, env=gateway_env())
        assert check.returncode == 0, f"config rejected:\n{check.stderr}\n{self.config_path.read_text()}"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([*self.wrapper, str(self.binaries.phigate), "--config", str(self.config_path)],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=gateway_env(),
                                         start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"phigate exited during startup with status {self.proc.returncode}:\n"
                                     f"{self.diagnostics()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                    if self.serving(sock):
                        return self
            except OSError:
                time.sleep(0.05)
        self.proc.kill()
        self.proc.wait(timeout=10)
        raise AssertionError(f"phigate did not listen on {self.port} within 20 s:\n{self.diagnostics()}")

    def serving(self, sock):
        """Whether the front answers on a fresh connection to its port (PostgreSQL: it accepted)."""
        return True

    def stop(self):
        """SIGTERM by pid, wait; returns a list of problems (empty when it exited cleanly)."""
        if self.proc is None or self.stopped:
            return []
        self.stopped = True
        problems = []
        if self.proc.poll() is not None:
            problems.append(f"phigate had already exited with status {self.proc.returncode}")
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                problems.append("phigate did not stop within 15 s of SIGTERM (killed)")
                self.proc.kill()
                self.proc.wait(timeout=10)
            if self.proc.returncode != 0 and not problems:
                problems.append(f"phigate exited with status {self.proc.returncode} after SIGTERM")
        problems += self.sanitizer_problems()
        return problems

    def kill_hard(self):
        """SIGKILL by pid (a crash), wait for it; the Gateway counts as stopped afterwards."""
        if self.proc is None or self.stopped:
            return
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=15)
        if self in _running:
            _running.remove(self)

    @property
    def admin_url(self):
        admin = self.config["admin"]
        return f"http://{admin['address']}:{admin['port']}"

    @property
    def audit_dir(self):
        return Path(self.config["audit"]["dir"])

    def health_problems(self):
        """Problems visible while it should be running."""
        problems = []
        if self.proc is not None and not self.stopped and self.proc.poll() is not None:
            problems.append(f"phigate died (exit status {self.proc.returncode})")
        return problems + self.sanitizer_problems()

    def sanitizer_problems(self):
        text = self.stderr()
        if SANITIZER_PATTERNS.search(text):
            return ["sanitizer report in phigate's stderr"]
        return []

    def stderr(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def audit_text(self):
        """Everything in the audit folder, as text (without the preallocated zeros a live file ends with)."""
        folder = Path(self.config.get("audit", {}).get("dir", "/nonexistent"))
        if not folder.is_dir():
            return ""
        return "\n".join(f.read_bytes().rstrip(b"\0").decode(errors="replace")
                         for f in sorted(folder.rglob("*")) if f.is_file())

    def audit_records(self):
        """Every complete record of the audit log in chain order (JSON objects)."""
        return [rec for *_, rec in audit_lines(self.audit_dir)]

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def diagnostics(self, lines=40):
        def tail(text):
            return "\n".join(text.splitlines()[-lines:])
        return (f"--- {self.stderr_path} (tail)\n{tail(self.stderr())}\n"
                f"--- {self.log_path} (tail)\n{tail(self.log())}\n--- config {self.config_path}")

    @property
    def pid(self):
        return self.proc.pid

    def rss_kb(self):
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    # -- clients ---------------------------------------------------------------
    def conninfo(self, dbname="clinic", user=AGENT, **extra):
        parts = {"host": self.host, "port": self.port, "user": user, "dbname": dbname, "sslmode": "prefer"}
        parts.update(extra)
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def connect_kwargs(self, dbname="clinic", user=AGENT, password=AGENT_PASSWORD, **extra):
        kw = dict(host=self.host, port=self.port, user=user, password=password, dbname=dbname,
                  sslmode="prefer", connect_timeout=10)
        kw.update(extra)
        return kw


def gateway_env():
    env = clean_env()
    # Sanitizer builds (make asan): report leaks, and make any report fatal and visible.
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


_running = []  # every Gateway started and not yet stopped


def launch(gateway_class, workdir, binaries, stack, config, overrides=None, wrapper=None):
    """A started gateway_class process (config deep-merged with overrides, run under wrapper), watched by the
    suites' health check until stopped."""
    gw = gateway_class(workdir, binaries, stack, deep_merge(config, overrides or {}))
    gw.wrapper = list(wrapper or [])
    gw.start()
    _running.append(gw)
    return gw


class SilentServer:
    """A TCP server that accepts connections and never says anything (a hung database)."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.accepted = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.listener.close()
        for conn in self.accepted:
            conn.close()


def default_config(workdir, stack, tls_pair, secret_file, verifiers, audit_key, port):
    """The configuration most tests use: upstreams clinic and bench on the stack's PostgreSQL,
    'nowhere' on a port where nothing listens, TLS offered (not required), audit on."""
    upstream = {"protocol": "postgres", "host": stack.host, "port": stack.pg_port, "user": stack.user,
                "password_file": str(secret_file), "tls": "disable"}
    return {
        "phigate": {"log_level": "info", "log_file": str(workdir / "phigate.log"),
                    "pid_file": str(workdir / "phigate.pid"), "masking_rules": str(REPO / "masking-rules")},
        "listen": {"postgres": {"address": "127.0.0.1", "port": port}},
        "tls": {"cert_file": str(tls_pair.cert), "key_file": str(tls_pair.key), "require": False},
        "audit": {"enabled": True, "dir": str(workdir / "audit"), "key_file": str(audit_key)},
        "limits": {"max_message_bytes": "16MB", "max_startup_bytes": 10000, "max_clients": 1000,
                   "client_buffer_bytes": "1MB", "auth_timeout_ms": 15000},
        "upstreams": {
            "clinic": dict(upstream, database="clinic"),
            "bench": dict(upstream, database="bench"),
            "nowhere": dict(upstream, database="clinic", port=free_port(), connect_timeout_ms=3000),
        },
        "roles": {
            "tester": {"upstreams": ["clinic", "bench", "nowhere"], "classes": dict(ALL_CLASSES)},
            "bench_only": {"upstreams": ["bench"]},
        },
        "identities": {
            AGENT: {"scram": verifiers[AGENT], "role": "tester"},
            OUTSIDER: {"scram": verifiers[OUTSIDER], "role": "bench_only"},
        },
    }


def stop_and_check(gw):
    problems = gw.stop()
    if gw in _running:
        _running.remove(gw)
    if problems:
        pytest.fail("; ".join(problems) + "\n" + gw.diagnostics(), pytrace=False)


# ---------------------------------------------------------------------------
# psql
# ---------------------------------------------------------------------------

@dataclass
class PsqlResult:
    returncode: int
    stdout: str
    stderr: str


def run_psql(bindir, conninfo, password, sql=None, stdin=None, args=(), timeout=120, cwd=None):
    cmd = [f"{bindir}/psql", "-X", "-A", "-t", "-d", conninfo, *args]
    if sql is not None:
        cmd += ["-c", sql]
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout,
                         env=clean_env(PGPASSWORD=password, PGCONNECT_TIMEOUT=10), cwd=cwd)
    return PsqlResult(out.returncode, out.stdout, out.stderr)




# ---------------------------------------------------------------------------
# Approvals (the stack's Redis, the admin console/API) and phigatectl
# ---------------------------------------------------------------------------

APPROVER = "approver_ana"              # a human approver (admin console, phigatectl approvals)
APPROVER_PASSWORD = "approver-" + secrets.token_hex(12)


def write_secret(path, value):
    """A 0600 secret file (phigate refuses looser modes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return path


def approvals_overrides(stack, redis_secret, approvers, admin_port=None, wait_ms=30000, key_prefix=None,
                        **approvals):
    """Config overrides that turn on the approval queue (the stack's Redis, under key_prefix), the admin
    API on admin_port (a free port by default) and the approvers {name: scram verifier}."""
    redis = {"host": stack.env["STACK_REDIS_HOST"], "port": int(stack.env["STACK_REDIS_PORT"]),
             "password_file": str(redis_secret), "timeout_ms": 1000}
    if key_prefix:
        redis["key_prefix"] = key_prefix
    return {
        "redis": redis,
        "approvals": dict({"wait_ms": wait_ms, "grant": "single_use"}, **approvals),
        "admin": {"address": "127.0.0.1", "port": admin_port or free_port()},
        "approvers": {name: {"scram": v} for name, v in approvers.items()},
    }


def run_ctl(binaries, *args, env=None, timeout=60, input=None):
    """phigatectl ARGS...; returns the CompletedProcess (text)."""
    return subprocess.run([str(binaries.phigatectl), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, input=input, env=clean_env(**(env or {})))


def approvals_ctl(binaries, gw, *args, approver=APPROVER, password=APPROVER_PASSWORD, timeout=60):
    """phigatectl approvals ARGS... --url <gw's admin API> --approver NAME (password in the environment)."""
    return run_ctl(binaries, "approvals", *args, "--url", gw.admin_url, "--approver", approver,
                   env={"PHIGATE_APPROVER_PASSWORD": password}, timeout=timeout)


def approvals_config_maker(stack, redis_secret, approvers, key_prefix, wait_ms):
    """make(**kw) -> approvals_overrides for a phigate on key_prefix (a run's own), waiting wait_ms."""
    def make(**kw):
        kw.setdefault("wait_ms", wait_ms)
        kw.setdefault("key_prefix", key_prefix)
        return approvals_overrides(stack, redis_secret, approvers, **kw)
    return make


class AgentThread(threading.Thread):
    """A client running one statement through phigate in the background (session() does the work,
    with a client library of the subclass's choice), timed; outcome() waits for it."""

    def __init__(self, gw, sql):
        super().__init__(daemon=True)
        self.gw, self.sql = gw, sql
        self.rows = self.error = self.after = self.elapsed = None

    def run(self):
        start = time.monotonic()
        try:
            self.session()
        finally:
            self.elapsed = time.monotonic() - start

    def outcome(self, timeout=40):
        self.join(timeout)
        assert not self.is_alive(), f"the agent's statement {self.sql!r} is still waiting after {timeout} s"
        return self


def pending_requests(binaries, gw):
    r = approvals_ctl(binaries, gw, "list", "--json")
    assert r.returncode == 0, f"phigatectl approvals list failed: {r.stdout}{r.stderr}\n{gw.diagnostics()}"
    return json.loads(r.stdout)["requests"]


def wait_for_request(binaries, gw, sql, timeout=15, agent=None, identity=AGENT):
    """The pending request (dict from the API) of identity whose statement is exactly sql; agent: the
    thread running it (a failure names what it got if it finished first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for req in pending_requests(binaries, gw):
            if req["statement"] == sql and req["identity"] == identity:
                return req
        if agent is not None and not agent.is_alive():
            got = agent.describe() if hasattr(agent, "describe") else "finished"
            pytest.fail(f"the agent finished before its request appeared: {got}\n{gw.diagnostics()}")
        time.sleep(0.1)
    pytest.fail(f"no pending request for {sql!r} within {timeout} s\n{gw.diagnostics()}")


def decide_held(binaries, gw, agent, verb, reason, *extra):
    """Start agent (an AgentThread), wait for its request, `phigatectl approvals <verb>` it with reason
    (and extra arguments), wait for the agent's outcome; returns the request."""
    agent.start()
    req = wait_for_request(binaries, gw, agent.sql, agent=agent)
    r = approvals_ctl(binaries, gw, verb, req["id"], "--reason", reason, *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    agent.outcome()
    return req


def show(binaries, gw, rid):
    """One request as `phigatectl approvals show --json` gives it."""
    r = approvals_ctl(binaries, gw, "show", rid, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(r.stdout)
    return data.get("request", data)


def assert_masked(rows, raw_patients):
    """rows of (first_name, ssn) through phigate: all there, none of the raw values anywhere."""
    assert len(rows) == len(raw_patients)
    raw = {v for row in raw_patients for v in row}
    leaked = [cell for row in rows for cell in row if cell in raw]
    assert not leaked, f"raw PHI reached the agent: {leaked[:5]}"
    # and masked the way the catalog says (redacted names, last four of the SSN)
    assert {r[0] for r in rows} == {"[REDACTED]"}
    assert all(str(r[1]).startswith("***-**-") for r in rows)
    assert sorted(str(r[1])[-4:] for r in rows) == sorted(s[-4:] for _, s in raw_patients)


def wait_audit(gw, pred, timeout=10):
    """The audit records matching pred, once there are any (or [] after timeout seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in gw.audit_records() if pred(r)]
        if found:
            return found
        time.sleep(0.1)
    return []
