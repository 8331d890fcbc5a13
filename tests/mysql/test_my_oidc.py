"""Token (OIDC/JWT) login through myfront: over TLS phigate switches to
mysql_clear_password and the agent's JWT is its password (pymysql and the
mariadb client); a plain connection is refused before the token is sent; bad
tokens are refused with the reason; no token reaches a log or the audit log."""

import ssl
import sys
import time
from pathlib import Path

import pymysql
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from oidc_issuer import AUDIENCE, Issuer, tamper_signature  # noqa: E402

from myharness import run_mariadb, stop_and_check  # noqa: E402

ID = "svc-agent"
ISSUER = Issuer()
TOKENS_SEEN = []


def tls_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture(scope="module")
def oidc_gw(gateway_maker, tmp_path_factory):
    jwks = ISSUER.write_jwks(tmp_path_factory.mktemp("jwks") / "jwks.json")
    gw = gateway_maker({
        "roles": {"analyst": {"upstreams": ["clinic"]}},
        "oidc": {"test": {"issuer": ISSUER.url, "audience": AUDIENCE, "jwks_file": str(jwks),
                          "role_claim": "phigate_role", "allowed_roles": ["analyst", "bench_only"],
                          "clock_skew_s": 5}},
        "identities": {ID: {"oidc_issuer": "test", "role": "analyst"}},
    }, name="my-oidc")
    yield gw
    stop_and_check(gw)


def connect(gw, token, db="clinic", tls=True):
    TOKENS_SEEN.append(token)
    return pymysql.connect(host=gw.host, port=gw.port, user=ID, password=token, database=db, connect_timeout=10,
                           ssl=tls_ctx() if tls else None)


def refusal(gw, token, **kw):
    with pytest.raises(pymysql.err.OperationalError) as caught:
        connect(gw, token, **kw).close()
    code, message = caught.value.args
    assert code == 1045, caught.value.args
    return message


def test_valid_token_over_tls_gets_its_role_and_masked_rows(oidc_gw):
    with connect(oidc_gw, ISSUER.token(ID, alg="ES256", phigate_role="analyst")) as c:
        cur = c.cursor()
        cur.execute("select last_name, ssn from patients where id = 1")
        last_name, ssn = cur.fetchone()
    assert last_name == "[REDACTED]" and ssn.startswith("***-**-"), (last_name, ssn)
    connects = [r for r in oidc_gw.audit_records() if r["type"] == "connect" and r.get("auth") == "oidc"]
    assert connects and connects[-1]["role"] == "analyst"


def test_token_role_decides_which_databases(oidc_gw):
    with connect(oidc_gw, ISSUER.token(ID, phigate_role="bench_only"), db="bench") as c:
        cur = c.cursor()
        cur.execute("select database()")
        assert cur.fetchone() == ("bench",)
    with pytest.raises(pymysql.err.OperationalError) as caught:
        connect(oidc_gw, ISSUER.token(ID, phigate_role="bench_only"), db="clinic")
    assert caught.value.args[0] == 1044, caught.value.args


def test_mariadb_client_logs_in_with_the_token(oidc_gw):
    token = ISSUER.token(ID, alg="EdDSA")
    TOKENS_SEEN.append(token)
    r = run_mariadb(oidc_gw.host, oidc_gw.port, ID, token, "select count(*) from wards", args=("--ssl",))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1].isdigit(), r.stdout


def test_plain_connection_is_refused_before_the_token_is_sent(oidc_gw):
    msg = refusal(oidc_gw, ISSUER.token(ID), tls=False)
    assert "token login requires TLS" in msg and "ssl-mode=REQUIRED" in msg, msg


@pytest.mark.parametrize("make, reason", [
    (lambda: ISSUER.token(ID, exp=int(time.time()) - 60), "token has expired"),
    (lambda: ISSUER.token(ID, aud="other"), "token audience (aud) does not include phigate's audience"),
    (lambda: ISSUER.unsigned_token(ID), "unsigned token (alg none) refused"),
    (lambda: ISSUER.hs256_with_public_key(ID), "token algorithm HS256 is not allowed"),
    (lambda: tamper_signature(ISSUER.token(ID)), "token signature does not verify"),
], ids=["expired", "wrong audience", "alg none", "HS256 with the public key", "bad signature"])
def test_bad_tokens_are_refused_with_the_reason(oidc_gw, make, reason):
    msg = refusal(oidc_gw, make())
    assert f"token authentication failed: {reason}" in msg, msg


def test_failures_audited_as_oidc_and_no_token_anywhere(oidc_gw):
    refusal(oidc_gw, ISSUER.token(ID, iss="https://elsewhere"))
    time.sleep(0.3)
    fails = [r for r in oidc_gw.audit_records() if r["type"] == "auth_failure"]
    assert any(f["auth"] == "oidc" and f["reason"] == "token issuer (iss) is not the configured issuer"
               for f in fails), fails
    texts = {"log": oidc_gw.log(), "stderr": oidc_gw.stderr(),
             "audit": "\n".join(p.read_text() for p in Path(oidc_gw.config["audit"]["dir"]).glob("*") if p.is_file())}
    for token in TOKENS_SEEN:
        for needle in [token] + [p for p in token.split(".") if len(p) >= 16]:
            for name, text in texts.items():
                assert needle not in text, f"a token (or part of one) appears in phigate's {name}"
