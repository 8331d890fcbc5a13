"""TLS client certificates on the MySQL front: `auth: cert` logs in with a certificate from
tls.client_ca_file whose name maps to the identity (any password the client sends is ignored);
revoked, expired, foreign-CA, unmapped and missing certificates are refused with 1045 / 28000 and the
reason; `auth: cert+scram` needs the certificate and the password.  The PKI is made in the test
(tests/integration/pki.py)."""

import sys
import time
from pathlib import Path

import pymysql
import pytest

from myharness import AGENT_PASSWORD, native_verifier, scram_verifier, stop_and_check

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from pki import BOTH_AGENT, CERT_AGENT, Pki  # noqa: E402

SSN_SQL = "select ssn from patients where id = 12"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("my-client-pki"))


@pytest.fixture(scope="module")
def cert_gateway(gateway_maker, pki):
    gw = gateway_maker({
        "tls": {"client_ca_file": str(pki.ca_file), "client_crl_file": str(pki.crl_file)},
        "identities": {
            CERT_AGENT: {"auth": "cert", "role": "tester"},
            BOTH_AGENT: {"auth": "cert+scram", "scram": scram_verifier(AGENT_PASSWORD),
                         "mysql_native": native_verifier(AGENT_PASSWORD), "role": "tester"},
        },
    }, name="my_client_certs")
    yield gw
    stop_and_check(gw)


def connect(gw, pki, name, user=CERT_AGENT, password="", tls=True):
    kw = {}
    if tls:
        kw["ssl"] = {"cert": str(pki.pairs[name][0]), "key": str(pki.pairs[name][1])} if name else {"ca": None}
    return pymysql.connect(host=gw.host, port=gw.port, user=user, password=password, database="clinic",
                           connect_timeout=10, **kw)


def refusal(gw, pki, name, **kw):
    with pytest.raises(pymysql.err.OperationalError) as caught:
        connect(gw, pki, name, **kw).close()
    return caught.value.args


def audit_wait(gw, pred, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in gw.audit_records() if pred(r)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_certificate_logs_in_as_the_mapped_identity_with_its_masking(cert_gateway, pki, my_direct):
    with my_direct() as direct, direct.cursor() as cur:
        cur.execute(SSN_SQL)
        raw = cur.fetchone()[0]
    c = connect(cert_gateway, pki, "good", password="anything: the certificate is the credential")
    try:
        with c.cursor() as cur:
            cur.execute("select count(*) from wards")
            assert cur.fetchone() == (10,)
            cur.execute(SSN_SQL)
            assert cur.fetchone()[0] != raw
    finally:
        c.close()
    connects = audit_wait(cert_gateway, lambda r: r["type"] == "connect" and r["identity"] == CERT_AGENT)
    assert connects and connects[-1]["auth"] == "cert" and connects[-1]["protocol"] == "mysql"


@pytest.mark.parametrize("name,reason", [
    ("revoked", "the client certificate is revoked"),
    ("expired", "the client certificate has expired"),
    ("foreign", "the client certificate is not trusted"),
    ("unmapped", "the client certificate's subject CN does not map to this identity"),
    (None, "no client certificate was presented"),
])
def test_bad_or_missing_certificate_is_refused_with_its_reason(cert_gateway, pki, name, reason):
    code, message = refusal(cert_gateway, pki, name)
    assert code == 1045
    assert f"Access denied for user '{CERT_AGENT}'" in message and reason in message, message
    failures = audit_wait(cert_gateway, lambda r: r["type"] == "auth_failure" and reason in r.get("reason", ""))
    assert failures and failures[-1]["auth"] == "cert"


def test_no_tls_is_refused(cert_gateway, pki):
    code, message = refusal(cert_gateway, pki, None, tls=False)
    assert code == 1045 and "no client certificate was presented" in message


def test_cert_plus_scram_needs_both(cert_gateway, pki):
    c = connect(cert_gateway, pki, "both", user=BOTH_AGENT, password=AGENT_PASSWORD)
    c.close()
    code, message = refusal(cert_gateway, pki, "both", user=BOTH_AGENT, password="wrong")
    assert code == 1045 and "(using password: YES)" in message
    code, message = refusal(cert_gateway, pki, "good", user=BOTH_AGENT, password=AGENT_PASSWORD)
    assert code == 1045 and "does not map to this identity" in message
    connects = audit_wait(cert_gateway, lambda r: r["type"] == "connect" and r["identity"] == BOTH_AGENT)
    assert connects and connects[-1]["auth"].startswith("cert+")
