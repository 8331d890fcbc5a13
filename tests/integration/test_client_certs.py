"""TLS client certificates: an identity with `auth: cert` logs in with a certificate issued by the
configured CA (tls.client_ca_file) whose name maps to it; revoked (tls.client_crl_file), expired,
foreign-CA and unmapped certificates, and no certificate at all, are refused with 28000 and the reason.
`auth: cert+scram` needs both.  The CA, the certificates and the CRL are made here with
python3-cryptography."""

import json
import socket
import ssl
import struct
import subprocess
import time

import psycopg
import pytest

from harness import AGENT_PASSWORD, REPO, gateway_env, run_ctl, run_psql, stop_and_check
from pgwire import RawClient, parse_error_fields, startup_packet
from pki import BOTH_AGENT, CERT_AGENT, SPIFFE, Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("client-pki"))


def cert_config(pki, verifiers, **tls):
    return {
        "tls": dict({"client_ca_file": str(pki.ca_file), "client_crl_file": str(pki.crl_file)}, **tls),
        "identities": {
            CERT_AGENT: {"auth": "cert", "role": "tester"},
            BOTH_AGENT: {"auth": "cert+scram", "scram": verifiers["agent1"], "role": "tester"},
        },
    }


@pytest.fixture(scope="module")
def cert_gateway(gateway_maker, pki, verifiers):
    gw = gateway_maker(cert_config(pki, verifiers), name="client_certs")
    yield gw
    stop_and_check(gw)


def psql_cert(stack, gw, name, sql, user=CERT_AGENT, password="", pki=None, **extra):
    conninfo = gw.conninfo("clinic", user=user, **pki.ssl_args(name), **extra) if name else \
        gw.conninfo("clinic", user=user, **extra)
    return run_psql(stack.bindir, conninfo, password, sql)


def raw_login_error(gw, pki, name):
    """The ErrorResponse fields phigate answers a TLS login with certificate `name` with."""
    sock = socket.create_connection((gw.host, gw.port), timeout=10)
    try:
        sock.sendall(struct.pack("!II", 8, 80877103))  # SSLRequest
        assert sock.recv(1) == b"S"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.load_cert_chain(*pki.pairs[name])
        sock = ctx.wrap_socket(sock)
        c = RawClient.over(sock)
        c.send(startup_packet({"user": CERT_AGENT, "database": "clinic"}))
        t, body = c.read_message()
        assert t == b"E"
        return parse_error_fields(body)
    finally:
        sock.close()


def audit_records(gw, wanted, timeout=10):
    """Audit records matching wanted(record), waiting for the writer to put them in the file."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for f in sorted(gw.audit_dir.glob("audit-*.jsonl")):
            for line in f.read_bytes().split(b"\n")[:-1]:
                rec = json.loads(line)
                if wanted(rec):
                    found.append(rec)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_certificate_logs_in_as_the_mapped_identity_with_its_role(cert_gateway, pki, stack):
    r = psql_cert(stack, cert_gateway, "good",
                  "select current_setting('application_name'); select ssn from patients where id = 12", pki=pki)
    assert r.returncode == 0, r.stderr
    app, ssn = r.stdout.split()
    assert app.startswith(f"phigate/{CERT_AGENT}/")
    with psycopg.connect(**stack.connect_kwargs("clinic")) as direct:
        raw_ssn = direct.execute("select ssn from patients where id = 12").fetchone()[0]
    assert ssn != raw_ssn and ssn.startswith("***-**-")  # the role's masking applies
    connects = audit_records(cert_gateway, lambda r: r["type"] == "connect" and r["identity"] == CERT_AGENT)
    assert connects and all(r["auth"] == "cert" for r in connects)


def test_psycopg_with_a_certificate_and_no_password(cert_gateway, pki):
    kw = cert_gateway.connect_kwargs("clinic", user=CERT_AGENT, password=None, **pki.ssl_args("good"))
    with psycopg.connect(**kw) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select count(*) from wards").fetchone() == (10,)


@pytest.mark.parametrize("name,reason", [
    ("revoked", "the client certificate is revoked"),
    ("expired", "the client certificate has expired"),
    ("foreign", "the client certificate is not trusted"),
    ("unmapped", "the client certificate's subject CN does not map to this identity"),
])
def test_bad_certificate_is_refused_with_its_reason(cert_gateway, pki, stack, name, reason):
    r = psql_cert(stack, cert_gateway, name, "select 1", pki=pki)
    assert r.returncode == 2, r.stdout
    assert f'certificate authentication failed for user "{CERT_AGENT}": {reason}' in r.stderr
    fields = raw_login_error(cert_gateway, pki, name)
    assert fields["C"] == "28000" and fields["S"] == "FATAL" and reason in fields["M"]
    failures = audit_records(cert_gateway, lambda r: r["type"] == "auth_failure" and reason in r.get("reason", ""))
    assert failures and failures[-1]["user"] == CERT_AGENT and failures[-1]["auth"] == "cert"


def test_no_certificate_is_refused(cert_gateway, pki, stack):
    for extra in ({"sslmode": "require"}, {"sslmode": "disable"}):
        r = psql_cert(stack, cert_gateway, None, "select 1", pki=pki, **extra)
        assert r.returncode == 2
        assert "no client certificate was presented" in r.stderr, r.stderr
        assert "28000" in r.stderr or "certificate authentication failed" in r.stderr


def test_password_identity_is_unaffected_by_a_certificate(cert_gateway, pki, stack):
    r = psql_cert(stack, cert_gateway, "unmapped", "select 1", user="agent1", password=AGENT_PASSWORD, pki=pki)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"


def test_cert_plus_scram_needs_both(cert_gateway, pki, stack):
    ok = psql_cert(stack, cert_gateway, "both", "select current_user is not null", user=BOTH_AGENT,
                   password=AGENT_PASSWORD, pki=pki)
    assert ok.returncode == 0, ok.stderr
    wrong_pw = psql_cert(stack, cert_gateway, "both", "select 1", user=BOTH_AGENT, password="wrong", pki=pki)
    assert wrong_pw.returncode == 2 and "password authentication failed" in wrong_pw.stderr
    wrong_cert = psql_cert(stack, cert_gateway, "good", "select 1", user=BOTH_AGENT, password=AGENT_PASSWORD,
                           pki=pki)
    assert wrong_cert.returncode == 2 and "does not map to this identity" in wrong_cert.stderr
    connects = audit_records(cert_gateway, lambda r: r["type"] == "connect" and r["identity"] == BOTH_AGENT)
    assert connects and connects[-1]["auth"].startswith("cert+scram-sha-256")


def test_uri_subject_alt_name_mapping(start_gateway, pki, verifiers, stack):
    cfg = cert_config(pki, verifiers, client_cert_name="uri")
    cfg["identities"][CERT_AGENT]["cert_name"] = SPIFFE
    gw = start_gateway(cfg, name="client_certs_uri")
    r = psql_cert(stack, gw, "uri", "select current_setting('application_name')", pki=pki)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"phigate/{CERT_AGENT}/")
    # The CN is not what this gateway maps: the certificate whose CN is the identity's name is refused.
    r = psql_cert(stack, gw, "good", "select 1", pki=pki)
    assert r.returncode == 2 and "URI subjectAltName does not map to this identity" in r.stderr


def test_config_errors_for_certificate_settings(tmp_path, binaries, stack):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "listen: {postgres: {port: 1}}\n"
        "audit: {enabled: false}\n"
        "tls: {client_crl_file: /nonexistent/crl.pem, client_cert_name: fingerprint}\n"
        "upstreams: {clinic: {host: 127.0.0.1, user: x}}\n"
        "roles: {r: {upstreams: [clinic]}}\n"
        "identities:\n"
        "  a: {auth: cert, role: r}\n"
        "  b: {auth: scram, role: r}\n"
        "  c: {auth: certificate, role: r}\n")
    out = subprocess.run([str(binaries.phigate), "--check-config", str(bad)], capture_output=True, text=True,
                         env=gateway_env(), timeout=30)
    assert out.returncode == 1
    err = out.stderr
    assert ":3: client_cert_name: \"fingerprint\" is not one of the allowed values" in err
    assert "tls.client_crl_file needs tls.client_ca_file" in err
    assert "identities.a logs in with a certificate but tls.client_ca_file is not set" in err
    assert ":8: identities.b: missing required setting \"scram\"" in err
    assert ":9: auth: \"certificate\" is not one of the allowed values" in err


def test_revocation_takes_effect_on_reload(start_gateway, pki, verifiers, stack, binaries, tmp_path):
    """A certificate revoked in a new CRL is refused after `phigatectl reload`; a session opened with it
    before the reload goes on."""
    crl = tmp_path / "crl.pem"
    crl.write_bytes(pki.crl_file.read_bytes())
    cfg = cert_config(pki, verifiers, client_crl_file=str(crl))
    gw = start_gateway(cfg, name="client_certs_crl")
    kw = gw.connect_kwargs("clinic", user=CERT_AGENT, password=None, **pki.ssl_args("good"))
    with psycopg.connect(**kw) as open_session:
        crl.write_bytes(pki.write_crl("crl-2.pem", ["revoked", "good"]).read_bytes())
        r = run_ctl(binaries, "reload", "--pid-file", gw.config["phigate"]["pid_file"])
        assert r.returncode == 0, r.stdout + r.stderr
        refused = psql_cert(stack, gw, "good", "select 1", pki=pki)
        assert refused.returncode == 2 and "the client certificate is revoked" in refused.stderr, refused.stderr
        assert open_session.execute("select count(*) from wards").fetchone() == (10,)
        # A CRL file that does not load is a refused reload: the current CRL stays in force.
        crl.write_text("-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n")
        r = run_ctl(binaries, "reload", "--pid-file", gw.config["phigate"]["pid_file"])
        assert r.returncode == 1 and "cannot load client CRL file" in r.stderr, r.stdout + r.stderr
        assert psql_cert(stack, gw, "good", "select 1", pki=pki).returncode == 2
        assert psql_cert(stack, gw, "both", "select 1", user=BOTH_AGENT, password=AGENT_PASSWORD,
                         pki=pki).returncode == 0


def test_check_config_loads_the_client_ca_and_crl(tmp_path, binaries, pki, tls_pair):
    """--check-config loads the TLS files as a start or reload would: a CRL that does not parse is named."""
    bad_crl = tmp_path / "bad.crl"
    bad_crl.write_text("-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n")
    cfg = tmp_path / "phigate.yaml"
    cfg.write_text(
        "audit: {enabled: false}\n"
        f"phigate: {{masking_rules: {REPO / 'masking-rules'}}}\n"
        f"tls: {{cert_file: {tls_pair.cert}, key_file: {tls_pair.key}, client_ca_file: {pki.ca_file}, "
        f"client_crl_file: {bad_crl}}}\n"
        "upstreams: {clinic: {host: 127.0.0.1, user: x}}\n"
        "roles: {r: {upstreams: [clinic]}}\n"
        "identities: {a: {auth: cert, role: r}}\n")
    out = subprocess.run([str(binaries.phigate), "--check-config", str(cfg)], capture_output=True, text=True,
                         env=gateway_env(), timeout=30)
    assert out.returncode == 1, out.stdout
    assert f"tls: cannot load client CRL file {bad_crl}" in out.stderr, out.stderr
    cfg.write_text(cfg.read_text().replace(str(bad_crl), str(pki.crl_file)))
    out = subprocess.run([str(binaries.phigate), "--check-config", str(cfg)], capture_output=True, text=True,
                         env=gateway_env(), timeout=30)
    assert out.returncode == 0 and "configuration is valid" in out.stdout, out.stderr
