"""The myfront test harness: the stack's MariaDB coordinates, phigate processes
with a MySQL listener, verifiers made here (SCRAM-SHA-256 and mysql_native,
so the suite needs no phigatectl), and runners for the real clients (mariadb,
pymysql, perl DBD::MariaDB for server-side prepared statements).

The phigate process, its configuration file and the stack environment are the
integration harness's (tests/integration/harness.py), shared, not copied.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from harness import (ALL_CLASSES, APPROVER, APPROVER_PASSWORD, REPO, AgentThread, Binaries, Gateway,  # noqa
                     _running, approvals_config_maker, decide_held, launch, approvals_ctl, approvals_overrides, assert_masked, clean_env, deep_merge,
                     free_port, read_stack_env, show, stack_env_path, stop_and_check, wait_audit,
                     wait_for_request, write_secret, SilentServer)

AGENT = "agent1"                 # scram + mysql_native, every class allowed
AGENT_PASSWORD = "agent-" + secrets.token_hex(10)
SHA2ONLY = "sha2only"            # scram only: caching_sha2_password over TLS
SHA2ONLY_PASSWORD = "sha2-" + secrets.token_hex(10)
OUTSIDER = "outsider"            # role with the bench database only
OUTSIDER_PASSWORD = "outsider-" + secrets.token_hex(10)
READER = "reader"                # role with the agent defaults (read and session only)
READER_PASSWORD = "reader-" + secrets.token_hex(10)


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


# ---------------------------------------------------------------------------
# Configuration and the phigate process
# ---------------------------------------------------------------------------

class MyGateway(Gateway):
    """The integration harness's phigate process, serving MySQL: its port is listen.mysql's,
    and it is ready once the front sends its greeting."""

    listener = "mysql"

    def serving(self, sock):
        sock.settimeout(5)
        return bool(sock.recv(1))


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
        "tls": {"cert_file": str(tls.cert), "key_file": str(tls.key), "require": False},
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
