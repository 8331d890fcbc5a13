"""The myfront test harness: the stack's MariaDB coordinates, phigate processes
with a MySQL listener, verifiers made here (SCRAM-SHA-256 and mysql_native,
so the suite needs no phigatectl), and runners for the real clients (mariadb,
pymysql, perl DBD::MariaDB for server-side prepared statements).
"""

import base64
import copy
import hashlib
import hmac
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

AGENT = "agent1"                 # scram + mysql_native, every class allowed
AGENT_PASSWORD = "agent-" + secrets.token_hex(10)
SHA2ONLY = "sha2only"            # scram only: caching_sha2_password over TLS
SHA2ONLY_PASSWORD = "sha2-" + secrets.token_hex(10)
OUTSIDER = "outsider"            # role with the bench database only
OUTSIDER_PASSWORD = "outsider-" + secrets.token_hex(10)
READER = "reader"                # role with the agent defaults (read and session only)
READER_PASSWORD = "reader-" + secrets.token_hex(10)

ALL_CLASSES = {c: "allow" for c in ("read", "write", "ddl", "privilege", "session", "export",
                                   "procedural", "administrative")}

SANITIZER_PATTERNS = re.compile(
    r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer|"
    r"AddressSanitizer:DEADLYSIGNAL")


def clean_env(**extra):
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
            k, v = words[1].split("=", 1)
            env[k] = v
    return env


@dataclass
class Stack:
    host: str
    port: int
    user: str
    password: str
    socket: str
    env: dict

    def root_sql(self, sql, db=None):
        """SQL as MariaDB's root through its socket (setup only); returns stdout."""
        cmd = ["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "-N", "-B", "-e", sql]
        if db:
            cmd.append(db)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=clean_env())
        assert out.returncode == 0, out.stderr
        return out.stdout


# ---------------------------------------------------------------------------
# Verifiers, made here
# ---------------------------------------------------------------------------

def scram_verifier(password, iterations=4096):
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}"


def native_verifier(password):
    """MySQL's authentication_string for mysql_native_password, without the '*'."""
    return hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# Configuration and the phigate process
# ---------------------------------------------------------------------------

def yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(yaml_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{}"
    return json.dumps(str(v))


def to_yaml(value, indent=0):
    pad = "  " * indent
    lines = []
    for k, v in value.items():
        if isinstance(v, dict) and v:
            lines.append(f"{pad}{k}:")
            lines.append(to_yaml(v, indent + 1))
        else:
            lines.append(f"{pad}{k}: {yaml_scalar(v)}")
    return "\n".join(lines)


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


def gateway_env():
    env = clean_env()
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


class Gateway:
    """One phigate process with its own folder, config, log and stderr."""

    def __init__(self, workdir, phigate, config):
        self.workdir = Path(workdir)
        self.phigate = phigate
        self.config = config
        self.host = "127.0.0.1"
        self.port = config["listen"]["mysql"]["port"]
        self.config_path = self.workdir / "phigate.yaml"
        self.log_path = Path(config["phigate"]["log_file"])
        self.stderr_path = self.workdir / "stderr.txt"
        self.proc = None
        self.stopped = False

    def start(self):
        self.config_path.write_text(to_yaml(self.config) + "\n")
        check = subprocess.run([str(self.phigate), "--check-config", str(self.config_path)], capture_output=True,
                               text=True, timeout=30, env=gateway_env())
        assert check.returncode == 0, f"config rejected:\n{check.stderr}\n{self.config_path.read_text()}"
        self.proc = subprocess.Popen([str(self.phigate), "--config", str(self.config_path)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.stderr_path, "wb"), env=gateway_env(),
                                     start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"phigate exited during startup ({self.proc.returncode}):\n"
                                     f"{self.diagnostics()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    s.settimeout(5)
                    if s.recv(1):  # the greeting: the MySQL front is serving
                        return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"phigate did not serve MySQL on {self.port} within 20 s:\n{self.diagnostics()}")

    def stop(self):
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
        return problems + self.sanitizer_problems()

    def health_problems(self):
        problems = []
        if self.proc is not None and not self.stopped and self.proc.poll() is not None:
            problems.append(f"phigate died (exit status {self.proc.returncode})")
        return problems + self.sanitizer_problems()

    def sanitizer_problems(self):
        return ["sanitizer report in phigate's stderr"] if SANITIZER_PATTERNS.search(self.stderr()) else []

    def stderr(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def diagnostics(self, lines=40):
        tail = lambda t: "\n".join(t.splitlines()[-lines:])  # noqa: E731
        return (f"--- {self.stderr_path}\n{tail(self.stderr())}\n--- {self.log_path}\n{tail(self.log())}\n"
                f"--- config {self.config_path}")

    @property
    def pid(self):
        return self.proc.pid

    def rss_kb(self):
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def audit_records(self):
        """Every record of the audit log, in order (JSON objects)."""
        out = []
        for f in sorted(Path(self.config["audit"]["dir"]).glob("audit-*.jsonl")):
            # A live file ends in preallocated zeros (gate/AUDIT_FORMAT.md).
            for line in f.read_bytes().rstrip(b"\0").decode().splitlines():
                out.append(json.loads(line))
        return out


_running = []


def stop_and_check(gw):
    problems = gw.stop()
    if gw in _running:
        _running.remove(gw)
    if problems:
        pytest.fail("; ".join(problems) + "\n" + gw.diagnostics(), pytrace=False)


def mysql_rules(workdir):
    """The repo's masking rules, plus its clinic catalog aimed at the MySQL fixture:
    there the tables live in schema (database) "clinic", not PostgreSQL's "public"."""
    rules = workdir / "rules"
    rules.mkdir(exist_ok=True)
    for f in sorted((REPO / "masking-rules").glob("*.y*ml")):
        text = f.read_text()
        (rules / f.name).write_text(text)
        if "kind: catalog" in text and re.search(r"^schema: public$", text, re.M):
            text = re.sub(r"^schema: public$", "schema: clinic", text, flags=re.M)
            text = re.sub(r"^name: (\S+)$", r"name: \1_mysql", text, flags=re.M)
            (rules / f"{f.stem}_mysql{f.suffix}").write_text(text)
    return rules


def default_config(workdir, stack, tls, secret_file, audit_key, verifiers):
    upstream = {"protocol": "mysql", "host": stack.host, "port": stack.port, "user": stack.user,
                "password_file": str(secret_file), "tls": "disable"}
    return {
        "phigate": {"log_level": "info", "log_file": str(workdir / "phigate.log"),
                    "masking_rules": str(mysql_rules(workdir))},
        "listen": {"postgres": {"address": "127.0.0.1", "port": free_port()},
                   "mysql": {"address": "127.0.0.1", "port": free_port()}},
        "tls": {"cert_file": str(tls[0]), "key_file": str(tls[1]), "require": False},
        "limits": {"max_message_bytes": "16MB", "max_startup_bytes": 10000, "max_clients": 1000,
                   "client_buffer_bytes": "1MB", "auth_timeout_ms": 15000},
        "audit": {"enabled": True, "dir": str(workdir / "audit"), "key_file": str(audit_key)},
        "upstreams": {
            "clinic": dict(upstream, database="clinic"),
            "bench": dict(upstream, database="bench"),
            "nowhere": dict(upstream, database="clinic", host="127.0.0.1", port=free_port(),
                            connect_timeout_ms=3000),
        },
        "roles": {
            "tester": {"upstreams": ["clinic", "bench", "nowhere"], "classes": dict(ALL_CLASSES)},
            "bench_only": {"upstreams": ["bench"], "classes": dict(ALL_CLASSES)},
            "agent": {"upstreams": ["clinic", "bench"]},
        },
        "identities": {
            AGENT: {"scram": verifiers[AGENT][0], "mysql_native": verifiers[AGENT][1], "role": "tester"},
            SHA2ONLY: {"scram": verifiers[SHA2ONLY][0], "role": "tester"},
            OUTSIDER: {"scram": verifiers[OUTSIDER][0], "mysql_native": verifiers[OUTSIDER][1],
                       "role": "bench_only"},
            READER: {"scram": verifiers[READER][0], "mysql_native": verifiers[READER][1], "role": "agent"},
        },
    }


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------

@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def run_mariadb(host, port, user, password, sql=None, db="clinic", args=(), stdin=None, timeout=60):
    """The real mariadb client in batch mode (tab-separated output)."""
    cmd = ["mariadb", "--no-defaults", "-h", host, "-P", str(port), "-u", user, "--batch", "--connect-timeout=10",
           *args]
    if db:
        cmd.append(f"--database={db}")
    if sql is not None:
        cmd += ["-e", sql]
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout,
                         env=clean_env(MYSQL_PWD=password))
    return Run(out.returncode, out.stdout, out.stderr)


PERL_PREPARED = r'''
use strict; use warnings; use DBI; use JSON::PP;
my ($host, $port, $user, $pass, $db) = @ARGV;
my $dbh = DBI->connect("DBI:MariaDB:database=$db;host=$host;port=$port;mariadb_server_prepare=1",
                       $user, $pass, {RaiseError => 1, PrintError => 0, AutoCommit => 1});
my $in = decode_json(do { local $/; <STDIN> });
my @out;
for my $step (@$in) {
    my ($sql, @params) = @$step;
    my $res = eval {
        my $sth = $dbh->prepare($sql);
        $sth->execute(@params);
        my $n = $sth->{NUM_OF_FIELDS};
        my $names = $n ? [@{$sth->{NAME}}] : [];
        my $rows = $n ? $sth->fetchall_arrayref : [];
        $sth->finish;
        { rows => $rows, names => $names };
    };
    push @out, $@ ? { error => "$@", errno => $dbh->err } : $res;
}
print encode_json(\@out);
'''


def run_prepared(host, port, user, password, steps, db="clinic"):
    """Statements through server-side prepared statements (COM_STMT_PREPARE / EXECUTE,
    binary rows) with perl DBD::MariaDB.  steps: [(sql, param...), ...]."""
    out = subprocess.run(["perl", "-e", PERL_PREPARED, host, str(port), user, password, db],
                         input=json.dumps(steps), capture_output=True, text=True, timeout=60, env=clean_env())
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
