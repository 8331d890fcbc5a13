"""Token (OIDC/JWT) login through pgfront: an agent identity sends a JWT from a
local test issuer as its password (psql with PGPASSWORD=<jwt>, TLS only) and is
bound to the role its claims name; every bad token is refused with a clear
error, and no token ever reaches phigate's log or the audit log."""

import time

import pytest

from harness import run_psql, stop_and_check
from oidc_issuer import AUDIENCE, Issuer, Key, tamper_signature

ID = "svc-agent"          # a token identity whose configured role is analyst
OTHER = "other-agent"     # another token identity of the same issuer
ROLE_CLAIM = "phigate_role"

ISSUER = Issuer()
TOKENS_SEEN = []          # every token sent in this module: none may appear in a log


def oidc_overrides(jwks_source):
    return {
        "roles": {"analyst": {"upstreams": ["clinic"]}},
        "oidc": {"test": dict(jwks_source, issuer=ISSUER.url, audience=AUDIENCE, role_claim=ROLE_CLAIM,
                              allowed_roles=["analyst", "bench_only"], clock_skew_s=5, jwks_refetch_min_s=1)},
        "identities": {ID: {"oidc_issuer": "test", "role": "analyst"},
                       OTHER: {"oidc_issuer": "test", "role": "analyst"}},
    }


@pytest.fixture(scope="module")
def oidc_gw(gateway_maker, tmp_path_factory):
    jwks = ISSUER.write_jwks(tmp_path_factory.mktemp("jwks") / "jwks.json")
    gw = gateway_maker(oidc_overrides({"jwks_file": str(jwks)}), name="oidc")
    gw.jwks_path = jwks
    yield gw
    stop_and_check(gw)


def psql_token(stack, gw, token, sql="select 1", user=ID, dbname="clinic", sslmode="require"):
    TOKENS_SEEN.append(token)
    return run_psql(stack.bindir, gw.conninfo(dbname, user=user, sslmode=sslmode), token, sql)


def refused(stack, gw, token, **kw):
    r = psql_token(stack, gw, token, **kw)
    assert r.returncode == 2, r
    return r.stderr


def audit_records(gw):
    return gw.audit_records()


# ---- tokens that log in -------------------------------------------------------------

@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_valid_token_logs_in_with_its_claimed_role_and_masked_rows(stack, oidc_gw, alg):
    token = ISSUER.token(ID, alg=alg, **{ROLE_CLAIM: "analyst"})
    r = psql_token(stack, oidc_gw, token, "select last_name, ssn from patients where id = 1")
    assert r.returncode == 0, r.stderr
    last_name, ssn = r.stdout.strip().split("|")
    assert last_name == "[REDACTED]" and ssn.startswith("***-**-"), r.stdout


def test_role_named_by_the_token_is_the_role_bound(stack, oidc_gw):
    # bench_only may not use the clinic upstream: the token's role, not the identity's, decides.
    token = ISSUER.token(ID, **{ROLE_CLAIM: "bench_only"})
    err = refused(stack, oidc_gw, token)
    assert f'identity "{ID}" is not allowed to use database "clinic"' in err, err
    ok = psql_token(stack, oidc_gw, ISSUER.token(ID, **{ROLE_CLAIM: "bench_only"}), "select current_database()",
                    dbname="bench")
    assert ok.returncode == 0 and ok.stdout.strip() == "bench", ok
    connects = [r for r in audit_records(oidc_gw) if r["type"] == "connect" and r.get("auth") == "oidc"]
    assert {c["role"] for c in connects} >= {"analyst", "bench_only"}, connects


def test_token_without_a_role_claim_gets_the_identity_role(stack, oidc_gw):
    r = psql_token(stack, oidc_gw, ISSUER.token(ID), "select count(*) from wards")
    assert r.returncode == 0, r.stderr


# ---- tokens that are refused ------------------------------------------------------------

BAD = {
    "expired": (lambda: ISSUER.token(ID, exp=int(time.time()) - 60, iat=int(time.time()) - 400),
                "token has expired"),
    "not yet valid": (lambda: ISSUER.token(ID, nbf=int(time.time()) + 120), "token is not valid yet (nbf)"),
    "issued in the future": (lambda: ISSUER.token(ID, iat=int(time.time()) + 120),
                             "token issued in the future (iat)"),
    "no expiry": (lambda: ISSUER.token(ID, exp=None), "token has no valid expiry (exp)"),
    "wrong audience": (lambda: ISSUER.token(ID, aud="someone-else"),
                       "token audience (aud) does not include phigate's audience"),
    "wrong issuer": (lambda: ISSUER.token(ID, iss="https://evil.example"),
                     "token issuer (iss) is not the configured issuer"),
    "bad signature": (lambda: tamper_signature(ISSUER.token(ID)), "token signature does not verify"),
    "alg none": (lambda: ISSUER.unsigned_token(ID), "unsigned token (alg none) refused"),
    "HS256 keyed with the RSA public key": (lambda: ISSUER.hs256_with_public_key(ID),
                                            "token algorithm HS256 is not allowed"),
    "unknown kid": (lambda: ISSUER.token(ID, key=Key("RS256", "never-published")),
                    "token signed with an unknown key id (kid)"),
    "kid of another key type": (lambda: ISSUER.token(ID, alg="ES256", headers={"kid": "rs256-1"}),
                                "token key id (kid) names a key that is not a ES256 key"),
    "another identity's token": (lambda: ISSUER.token(OTHER), "the token's sub claim names another identity"),
    "role phigate does not define": (lambda: ISSUER.token(ID, **{ROLE_CLAIM: "superuser"}),
                                     "the token names a role phigate does not define"),
    "role the issuer may not grant": (lambda: ISSUER.token(ID, **{ROLE_CLAIM: "tester"}),
                                      "the token names a role this issuer may not grant"),
    "not a JWT": (lambda: "just-a-password", "not a signed JWT (header.payload.signature)"),
    "too large": (lambda: ISSUER.token(ID, padding="x" * 9000), "token larger than 8192 bytes"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_token_is_refused_with_a_clear_error(stack, oidc_gw, case):
    make, reason = BAD[case]
    err = refused(stack, oidc_gw, make())
    assert f'token authentication failed for user "{ID}": {reason}' in err, err


def test_plain_tcp_is_refused_before_the_token_is_sent(stack, oidc_gw):
    err = refused(stack, oidc_gw, ISSUER.token(ID), sslmode="disable")
    assert "token login requires TLS" in err and "sslmode=require" in err, err


def test_key_rotation_in_the_jwks_file(stack, oidc_gw):
    new = Key("EdDSA", "eddsa-rotated")
    token = ISSUER.token(ID, key=new, alg="EdDSA")
    ISSUER.published.append(new)
    try:
        ISSUER.write_jwks(oidc_gw.jwks_path)
        time.sleep(1.2)  # jwks_refetch_min_s: 1
        r = psql_token(stack, oidc_gw, token, "select 1")
        assert r.returncode == 0, r.stderr
    finally:
        ISSUER.published.remove(new)
        ISSUER.write_jwks(oidc_gw.jwks_path)


def test_auth_failures_are_audited_as_oidc_with_the_reason(stack, oidc_gw):
    refused(stack, oidc_gw, ISSUER.token(ID, aud="nope"))
    refused(stack, oidc_gw, ISSUER.token(ID), sslmode="disable")
    time.sleep(0.5)  # records are appended from the loop; give it a turn
    fails = [r for r in audit_records(oidc_gw) if r["type"] == "auth_failure" and r.get("auth") == "oidc"]
    reasons = {f["reason"] for f in fails}
    assert "token audience (aud) does not include phigate's audience" in reasons, fails
    assert "token login requires TLS" in reasons, fails


def assert_no_token_in_logs(gw):
    """Every token sent so far, and each of its parts alone, is absent from the log,
    stderr and every audit file."""
    assert TOKENS_SEEN
    texts = {"log": gw.log(), "stderr": gw.stderr(), "audit": gw.audit_text()}
    for token in TOKENS_SEEN:
        needles = [token] + [p for p in token.split(".") if len(p) >= 16]
        for name, text in texts.items():
            for n in needles:
                assert n not in text, f"a token (or part of one) appears in phigate's {name}"


def test_no_token_in_any_log_or_audit_record(oidc_gw):
    assert_no_token_in_logs(oidc_gw)


# ---- keys fetched from the issuer's jwks_uri over HTTPS ------------------------------------

@pytest.fixture(scope="module")
def https_issuer(tmp_path_factory):
    from oidc_issuer import JwksServer, make_test_ca
    ca, cert, key = make_test_ca(tmp_path_factory.mktemp("issuer-ca"))
    issuer = Issuer()
    server = JwksServer(issuer, cert, key)
    server.ca = ca
    yield issuer, server
    server.close()


@pytest.fixture(scope="module")
def uri_gw(gateway_maker, https_issuer):
    issuer, server = https_issuer
    cfg = oidc_overrides({"jwks_uri": server.url, "ca_file": str(server.ca)})
    cfg["oidc"]["test"]["issuer"] = issuer.url
    gw = gateway_maker(cfg, name="oidc-uri")
    yield gw
    stop_and_check(gw)


def test_jwks_uri_keys_log_in_even_while_the_first_fetch_runs(stack, uri_gw, https_issuer):
    issuer, server = https_issuer
    for alg in ("RS256", "ES256", "EdDSA"):
        r = psql_token(stack, uri_gw, issuer.token(ID, alg=alg, **{ROLE_CLAIM: "analyst"}), "select 1")
        assert r.returncode == 0, r.stderr
    assert server.requests >= 1


def test_jwks_uri_key_rotation_fetches_the_new_kid(stack, uri_gw, https_issuer):
    issuer, server = https_issuer
    new = Key("ES256", "es256-rotated")
    issuer.published.append(new)
    try:
        time.sleep(1.1)  # jwks_refetch_min_s: 1 since the last fetch
        before = server.requests
        r = psql_token(stack, uri_gw, issuer.token(ID, key=new, alg="ES256"), "select 1")
        assert r.returncode == 0, r.stderr
        assert server.requests == before + 1
    finally:
        issuer.published.remove(new)


def test_unknown_kid_refetch_is_rate_limited(stack, uri_gw, https_issuer):
    issuer, server = https_issuer
    time.sleep(1.1)
    before = server.requests
    first = refused(stack, uri_gw, issuer.token(ID, key=Key("RS256", "nobody-1")))
    second = refused(stack, uri_gw, issuer.token(ID, key=Key("RS256", "nobody-2")))
    assert "token signed with an unknown key id (kid)" in first and "unknown key id" in second
    assert server.requests == before + 1, "the second unknown kid within jwks_refetch_min_s must not refetch"


def test_a_slow_key_fetch_does_not_block_other_logins(stack, uri_gw, https_issuer, psql_via):
    """While a token login waits 3 s for the issuer's keys, SCRAM logins and queries on the
    same phigate go on: the fetch runs on the event loop without blocking it."""
    import threading
    issuer, server = https_issuer
    new = Key("EdDSA", "eddsa-slow")
    token = issuer.token(ID, key=new, alg="EdDSA")
    issuer.published.append(new)
    server.delay = 3.0
    result = {}
    try:
        time.sleep(1.1)  # jwks_refetch_min_s
        waiting = threading.Thread(target=lambda: result.update(r=psql_token(stack, uri_gw, token, "select 1")))
        started = time.monotonic()
        waiting.start()
        time.sleep(0.3)
        for _ in range(3):
            r = psql_via(uri_gw, "select count(*) from wards")
            assert r.returncode == 0, r.stderr
        others_done = time.monotonic() - started
        waiting.join(timeout=20)
        token_done = time.monotonic() - started
    finally:
        server.delay = 0.0
        issuer.published.remove(new)
    assert result["r"].returncode == 0, result["r"].stderr
    assert others_done < 2.5 <= token_done, (others_done, token_done)


def test_login_timing_out_while_keys_are_fetched_is_forgotten(stack, start_gateway, https_issuer, psql_via):
    """auth_timeout_ms ends a login that waits for a slow fetch; when the fetch ends later,
    the gone session is not touched (the ASan build checks this) and phigate serves on."""
    issuer, server = https_issuer
    cfg = oidc_overrides({"jwks_uri": server.url, "ca_file": str(server.ca)})
    cfg["limits"] = {"auth_timeout_ms": 1000}
    gw = start_gateway(cfg, name="oidc-timeout")
    assert psql_token(stack, gw, issuer.token(ID), "select 1").returncode == 0  # first keys are in
    time.sleep(1.1)
    server.delay = 2.5
    try:
        err = refused(stack, gw, issuer.token(ID, key=Key("RS256", "slow-unknown")))
        assert "authentication timeout" in err, err
        time.sleep(2.5)  # the fetch ends and wakes nobody
    finally:
        server.delay = 0.0
    assert psql_via(gw, "select 1").returncode == 0
    assert psql_token(stack, gw, issuer.token(ID), "select 1").returncode == 0


def test_issuer_with_an_untrusted_certificate_gives_no_keys(stack, start_gateway, https_issuer, tls_pair):
    issuer, server = https_issuer
    cfg = oidc_overrides({"jwks_uri": server.url, "ca_file": str(tls_pair.cert)})  # not the issuer's CA
    gw = start_gateway(cfg, name="oidc-untrusted")
    err = refused(stack, gw, issuer.token(ID))
    assert "the issuer's signing keys are not available" in err, err
    assert "server certificate not accepted" in gw.log(), gw.log()[-2000:]


def test_no_token_in_the_logs_of_the_uri_gateway(uri_gw):
    assert_no_token_in_logs(uri_gw)


def test_jwks_uri_is_refreshed_periodically(stack, start_gateway, https_issuer):
    """No refetch on unknown kids here (jwks_refetch_min_s: 3600): a rotated key becomes
    usable through the periodic refresh alone (jwks_refresh_s: 10, the minimum)."""
    issuer, server = https_issuer
    cfg = oidc_overrides({"jwks_uri": server.url, "ca_file": str(server.ca)})
    cfg["oidc"]["test"].update(jwks_refresh_s=10, jwks_refetch_min_s=3600)
    gw = start_gateway(cfg, name="oidc-refresh")
    assert psql_token(stack, gw, issuer.token(ID), "select 1").returncode == 0
    new = Key("RS256", "rs256-periodic")
    token = issuer.token(ID, key=new)
    issuer.published.append(new)
    try:
        err = refused(stack, gw, token)
        assert "token signed with an unknown key id (kid)" in err, err
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            r = psql_token(stack, gw, token, "select 1")
            if r.returncode == 0:
                break
            time.sleep(1)
        assert r.returncode == 0, r.stderr
    finally:
        issuer.published.remove(new)
    assert_no_token_in_logs(gw)


# ---- reload -------------------------------------------------------------------------

def test_reload_rebuilds_the_issuers_and_open_token_sessions_go_on(stack, start_gateway, binaries, tmp_path):
    """A reload builds the token issuers of the new configuration (identities point into it); a session that
    logged in with a token before keeps working under the configuration it started with."""
    import psycopg
    from test_reload import changed, reload
    jwks = ISSUER.write_jwks(tmp_path / "jwks.json")
    gw = start_gateway(oidc_overrides({"jwks_file": str(jwks)}), name="oidc_reload")
    token = ISSUER.token(ID, **{ROLE_CLAIM: "analyst"})
    TOKENS_SEEN.append(token)
    with psycopg.connect(**gw.connect_kwargs("clinic", user=ID, password=token, sslmode="require"),
                         autocommit=True) as open_session:
        r = reload(gw, binaries, changed(gw, oidc__test__audience="phigate-v2"))
        assert r.returncode == 0, r.stdout + r.stderr
        err = refused(stack, gw, ISSUER.token(ID, **{ROLE_CLAIM: "analyst"}))
        assert "token audience (aud) does not include phigate's audience" in err, err
        ok = psql_token(stack, gw, ISSUER.token(ID, aud="phigate-v2", **{ROLE_CLAIM: "analyst"}),
                        "select ssn from patients where id = 1")
        assert ok.returncode == 0 and ok.stdout.strip().startswith("***-**-"), ok
        # Logged in before the reload: still served, under its own generation.
        assert open_session.execute("select count(*) from wards").fetchone() == (10,)
    assert_no_token_in_logs(gw)
    stop_and_check(gw)
