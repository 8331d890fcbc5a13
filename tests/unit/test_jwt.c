/*
 * The JWT verifier (gate/jwt.c), the JWKS parser (gate/jwks.c) and base64url
 * (gate/b64url.c), with keys made and tokens signed here by OpenSSL: a table of
 * tokens, each with the status and reason jwt_verify must give.
 */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/b64url.h"
#include "gate/jwks.h"
#include "gate/jwt.h"

static int passed, failed;
#define CHECK(c, what) ((c) ? (void)passed++ : (void)(failed++, printf("FAIL %s (line %d)\n", what, __LINE__)))

#define NOW 1800000000LL
#define ISS "https://issuer.test"
#define AUD "phigate"

/* ---- helpers: base64url encoding, keys, JWKS, signing ----------------------------- */

static void b64url_encode(const uint8_t *in, size_t n, char *out)
{
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
    for (char *p = out; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
}

typedef struct test_key {
    jwt_alg alg;
    const char *kid;
    EVP_PKEY *pkey;
} test_key;

static EVP_PKEY *keygen(jwt_alg alg)
{
    if (alg == JWT_ALG_RS256)
        return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    if (alg == JWT_ALG_ES256)
        return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
}

static void bn_member(EVP_PKEY *k, const char *param, char *out)
{
    BIGNUM *bn = NULL;
    uint8_t buf[1024];
    EVP_PKEY_get_bn_param(k, param, &bn);
    int n = BN_bn2bin(bn, buf);
    b64url_encode(buf, (size_t)n, out);
    BN_free(bn);
}

/* One JWK (JSON object) for a test key. */
static void jwk_of(const test_key *k, char *out, size_t len)
{
    char a[1400], b[100];
    if (k->alg == JWT_ALG_RS256) {
        bn_member(k->pkey, OSSL_PKEY_PARAM_RSA_N, a);
        bn_member(k->pkey, OSSL_PKEY_PARAM_RSA_E, b);
        snprintf(out, len, "{\"kty\":\"RSA\",\"kid\":\"%s\",\"use\":\"sig\",\"n\":\"%s\",\"e\":\"%s\"}", k->kid, a, b);
    } else if (k->alg == JWT_ALG_ES256) {
        uint8_t pt[65];
        size_t n;
        EVP_PKEY_get_octet_string_param(k->pkey, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt, &n);
        b64url_encode(pt + 1, 32, a);
        b64url_encode(pt + 33, 32, b);
        snprintf(out, len, "{\"kty\":\"EC\",\"kid\":\"%s\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}", k->kid, a, b);
    } else {
        uint8_t raw[32];
        size_t n = sizeof raw;
        EVP_PKEY_get_raw_public_key(k->pkey, raw, &n);
        b64url_encode(raw, n, a);
        snprintf(out, len, "{\"kty\":\"OKP\",\"kid\":\"%s\",\"crv\":\"Ed25519\",\"x\":\"%s\"}", k->kid, a);
    }
}

/* The JOSE signature: raw r || s for ES256, as is for the others. */
static size_t sign(const test_key *k, const char *msg, uint8_t *sig)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t der[600];
    size_t n = sizeof der;
    EVP_DigestSignInit(ctx, NULL, k->alg == JWT_ALG_EDDSA ? NULL : EVP_sha256(), NULL, k->pkey);
    EVP_DigestSign(ctx, der, &n, (const uint8_t *)msg, strlen(msg));
    EVP_MD_CTX_free(ctx);
    if (k->alg != JWT_ALG_ES256) {
        memcpy(sig, der, n);
        return n;
    }
    const uint8_t *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)n);
    BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
    ECDSA_SIG_free(es);
    return 64;
}

/* header and payload JSON -> a signed compact token (malloc'd). */
static char *make_token(const test_key *k, const char *header, const char *payload)
{
    size_t cap = 4 * (strlen(header) + strlen(payload)) + 2000;
    char *t = malloc(cap), sigb[800];
    uint8_t sig[600];
    b64url_encode((const uint8_t *)header, strlen(header), t);
    strcat(t, ".");
    b64url_encode((const uint8_t *)payload, strlen(payload), t + strlen(t));
    size_t n = sign(k, t, sig);
    b64url_encode(sig, n, sigb);
    strcat(t, ".");
    strcat(t, sigb);
    return t;
}

static test_key KEYS[3] = {
    {JWT_ALG_RS256, "rsa-1", NULL}, {JWT_ALG_ES256, "ec-1", NULL}, {JWT_ALG_EDDSA, "ed-1", NULL}};

static jwks *key_set(void)
{
    char json[8192] = "{\"keys\":[", jwk[2000], err[256];
    for (int i = 0; i < 3; i++) {
        jwk_of(&KEYS[i], jwk, sizeof jwk);
        strcat(json, i ? "," : "");
        strcat(json, jwk);
    }
    strcat(json, ",{\"kty\":\"oct\",\"kid\":\"hmac\",\"k\":\"c2VjcmV0\"}]}");
    jwks *ks = jwks_parse(json, strlen(json), err, sizeof err);
    if (!ks)
        printf("key set: %s\n", err);
    return ks;
}

/* ---- base64url ----------------------------------------------------------------------- */

static void test_b64url(void)
{
    static const struct {
        const char *in, *out; /* out NULL: must be refused */
    } cases[] = {
        {"", ""},      {"Zg", "f"},    {"Zm8", "fo"},  {"Zm9v", "foo"}, {"Zm9vYg", "foob"}, {"Zm9vYmE", "fooba"},
        {"Zg==", NULL}, {"Zm9v\n", NULL}, {"Z", NULL}, {"Zm+v", NULL},   {"Zm/v", NULL},     {"Zm9v YQ", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t out[32];
        size_t n = 0;
        bool ok = b64url_decode(cases[i].in, strlen(cases[i].in), out, sizeof out, &n);
        char what[80];
        snprintf(what, sizeof what, "b64url \"%s\"", cases[i].in);
        if (cases[i].out)
            CHECK(ok && n == strlen(cases[i].out) && memcmp(out, cases[i].out, n) == 0, what);
        else
            CHECK(!ok, what);
    }
    uint8_t out[3];
    size_t n;
    CHECK(b64url_decode("-_-_", 4, out, sizeof out, &n) && n == 3 && out[0] == 0xfb && out[1] == 0xff &&
              out[2] == 0xbf, "url alphabet - and _");
    CHECK(!b64url_decode("Zm9vYmFy", 8, out, sizeof out, &n), "output buffer too small is refused");
}

/* ---- JWKS ---------------------------------------------------------------------------- */

static void expect_jwks_error(const char *json, const char *want)
{
    char err[256] = "";
    jwks *ks = jwks_parse(json, strlen(json), err, sizeof err);
    char what[300];
    snprintf(what, sizeof what, "jwks refused: %s (got \"%s\")", want, ks ? "(accepted)" : err);
    CHECK(!ks && strstr(err, want), what);
    jwks_free(ks);
}

static void test_jwks(void)
{
    jwks *ks = key_set();
    CHECK(ks && ks->nkeys == 3, "three signature keys; the oct key is skipped");
    CHECK(jwks_find(ks, "rsa-1", JWT_ALG_RS256) && !jwks_find(ks, "rsa-1", JWT_ALG_ES256), "kid and type both match");
    CHECK(jwks_find(ks, NULL, JWT_ALG_EDDSA) == &ks->keys[2], "no kid: the only key of the type");
    CHECK(!jwks_has_kid(ks, "hmac"), "symmetric key not held");
    jwks_free(ks);
    expect_jwks_error("[1,2]", "no \"keys\" array");
    expect_jwks_error("{\"keys\":[", "not valid JSON");
    expect_jwks_error("{\"keys\":[]}", "no RSA, EC P-256 or Ed25519 signature keys");
    expect_jwks_error("{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}", "no RSA, EC P-256 or Ed25519");
    expect_jwks_error("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\"}]}", "other than P-256");
    /* x = 1, y = 1 is not on P-256. */
    expect_jwks_error("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\","
                      "\"x\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE\","
                      "\"y\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE\"}]}", "not a valid P-256 point");
    expect_jwks_error("{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AAAA\"}]}", "32-byte x");
    /* A 1024-bit modulus: refused as too short. */
    char small[600], json[800];
    EVP_PKEY *k1024 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    bn_member(k1024, OSSL_PKEY_PARAM_RSA_N, small);
    EVP_PKEY_free(k1024);
    snprintf(json, sizeof json, "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"AQAB\"}]}", small);
    expect_jwks_error(json, "shorter than 2048 bits");
    char jwk[2000];
    jwk_of(&KEYS[0], jwk, sizeof jwk);
    char withalg[2200];
    snprintf(withalg, sizeof withalg, "{\"keys\":[%.*s,\"alg\":\"HS256\"}]}", (int)strlen(jwk) - 1, jwk);
    expect_jwks_error(withalg, "does not match its key type");
}

/* ---- tokens -------------------------------------------------------------------------- */

typedef struct token_case {
    const char *name;
    int key;            /* index into KEYS; -1: a key not in the set */
    const char *header; /* NULL: {"alg":<key's alg>,"kid":<key's kid>} */
    const char *payload;
    jwt_status status;
    const char *reason; /* substring of out.reason */
} token_case;

#define GOOD_CLAIMS "\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"agent\",\"exp\":1800000300,\"iat\":1800000000"

static const token_case CASES[] = {
    {"RS256 valid", 0, NULL, "{" GOOD_CLAIMS ",\"role\":\"analyst\"}", JWT_OK, ""},
    {"ES256 valid", 1, NULL, "{" GOOD_CLAIMS ",\"role\":\"analyst\"}", JWT_OK, ""},
    {"EdDSA valid", 2, NULL, "{" GOOD_CLAIMS ",\"role\":\"analyst\"}", JWT_OK, ""},
    {"aud array", 0, NULL, "{\"iss\":\"" ISS "\",\"aud\":[\"x\",\"" AUD "\"],\"sub\":\"agent\",\"exp\":1800000300}",
     JWT_OK, ""},
    {"fractional exp", 0, NULL, "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"agent\",\"exp\":1800000300.5}",
     JWT_OK, ""},
    {"expired within skew", 0, NULL, "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"agent\",\"exp\":1799999990}",
     JWT_OK, ""},
    {"expired", 0, NULL, "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"agent\",\"exp\":1799999900}",
     JWT_REFUSED, "token has expired"},
    {"no exp", 0, NULL, "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"agent\"}", JWT_REFUSED, "no valid expiry"},
    {"exp a string", 0, NULL, "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"agent\",\"exp\":\"1800000300\"}",
     JWT_REFUSED, "no valid expiry"},
    {"negative exp", 0, NULL, "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"agent\",\"exp\":-1}", JWT_REFUSED,
     "no valid expiry"},
    {"nbf in the future", 1, NULL, "{" GOOD_CLAIMS ",\"nbf\":1800000100}", JWT_REFUSED, "not valid yet"},
    {"nbf within skew", 1, NULL, "{" GOOD_CLAIMS ",\"nbf\":1800000020}", JWT_OK, ""},
    {"iat in the future", 2, NULL,
     "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"agent\",\"exp\":1800000300,\"iat\":1800000100}",
     JWT_REFUSED, "issued in the future"},
    {"wrong issuer", 0, NULL, "{\"iss\":\"https://evil\",\"aud\":\"" AUD "\",\"sub\":\"agent\",\"exp\":1800000300}",
     JWT_REFUSED, "issuer (iss)"},
    {"wrong audience", 0, NULL, "{\"iss\":\"" ISS "\",\"aud\":\"other\",\"sub\":\"agent\",\"exp\":1800000300}",
     JWT_REFUSED, "audience (aud)"},
    {"audience array without ours", 0, NULL,
     "{\"iss\":\"" ISS "\",\"aud\":[\"a\",\"b\"],\"sub\":\"agent\",\"exp\":1800000300}", JWT_REFUSED, "audience"},
    {"no sub", 0, NULL, "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":1800000300}", JWT_REFUSED,
     "identity claim"},
    {"role not a string", 0, NULL, "{" GOOD_CLAIMS ",\"role\":[\"a\"]}", JWT_REFUSED, "role claim"},
    {"alg none", 0, "{\"alg\":\"none\"}", "{" GOOD_CLAIMS "}", JWT_REFUSED, "alg none"},
    {"HS256", 0, "{\"alg\":\"HS256\",\"kid\":\"rsa-1\"}", "{" GOOD_CLAIMS "}", JWT_REFUSED,
     "algorithm HS256 is not allowed"},
    {"no alg", 0, "{\"kid\":\"rsa-1\"}", "{" GOOD_CLAIMS "}", JWT_REFUSED, "no algorithm"},
    {"ES256 header naming the RSA key", 1, "{\"alg\":\"ES256\",\"kid\":\"rsa-1\"}", "{" GOOD_CLAIMS "}",
     JWT_REFUSED, "not a ES256 key"},
    {"unknown kid", -1, "{\"alg\":\"RS256\",\"kid\":\"rotated\"}", "{" GOOD_CLAIMS "}", JWT_UNKNOWN_KID,
     "unknown key id"},
    {"signed by a stranger with a known kid", -1, "{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", "{" GOOD_CLAIMS "}",
     JWT_REFUSED, "signature does not verify"},
    {"crit header", 0, "{\"alg\":\"RS256\",\"kid\":\"rsa-1\",\"crit\":[\"exp\"]}", "{" GOOD_CLAIMS "}", JWT_REFUSED,
     "critical"},
    {"payload not JSON", 0, NULL, "not json", JWT_REFUSED, "payload is not base64url JSON"},
    {"no kid, one key of the type", 2, "{\"alg\":\"EdDSA\"}", "{" GOOD_CLAIMS "}", JWT_OK, ""},
};

static jwt_policy policy(void)
{
    jwt_policy p = {ISS, AUD, JWT_ALG_RS256 | JWT_ALG_ES256 | JWT_ALG_EDDSA, 30, 8192, "sub", "role"};
    return p;
}

static void run_case(const jwks *ks, const token_case *c, test_key *stranger)
{
    const test_key *k = c->key >= 0 ? &KEYS[c->key] : stranger;
    char header[200];
    if (c->header)
        snprintf(header, sizeof header, "%s", c->header);
    else
        snprintf(header, sizeof header, "{\"alg\":\"%s\",\"kid\":\"%s\",\"typ\":\"JWT\"}", jwt_alg_name(k->alg),
                 k->kid);
    char *t = make_token(k, header, c->payload);
    jwt_policy p = policy();
    jwt_result r;
    jwt_status st = jwt_verify(t, strlen(t), &p, ks, NOW, &r);
    char what[300];
    snprintf(what, sizeof what, "%s: want %d \"%s\", got %d \"%s\"", c->name, c->status, c->reason, st, r.reason);
    CHECK(st == c->status && strstr(r.reason, c->reason), what);
    if (c->status == JWT_OK)
        CHECK(strcmp(r.identity, "agent") == 0, "identity from sub");
    free(t);
}

static void test_tokens(void)
{
    jwks *ks = key_set();
    test_key stranger = {JWT_ALG_RS256, "stranger", keygen(JWT_ALG_RS256)};
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++)
        run_case(ks, &CASES[i], &stranger);

    jwt_policy p = policy();
    jwt_result r;
    char *t = make_token(&KEYS[0], "{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", "{" GOOD_CLAIMS ",\"role\":\"analyst\"}");
    CHECK(jwt_verify(t, strlen(t), &p, ks, NOW, &r) == JWT_OK && strcmp(r.role, "analyst") == 0, "role claim read");
    p.algs = JWT_ALG_ES256;
    CHECK(jwt_verify(t, strlen(t), &p, ks, NOW, &r) == JWT_REFUSED && strstr(r.reason, "RS256 is not allowed"),
          "algorithm outside the issuer's allow-list");
    p = policy();
    p.max_token_bytes = 100;
    CHECK(jwt_verify(t, strlen(t), &p, ks, NOW, &r) == JWT_REFUSED && strstr(r.reason, "larger than 100"),
          "size bound checked first");
    p = policy();
    /* Flip one signature character; then cut the token in two places. */
    size_t n = strlen(t);
    t[n - 10] = t[n - 10] == 'A' ? 'B' : 'A';
    CHECK(jwt_verify(t, n, &p, ks, NOW, &r) == JWT_REFUSED && strstr(r.reason, "signature"), "tampered signature");
    CHECK(jwt_verify(t, strchr(t, '.') - t, &p, ks, NOW, &r) == JWT_REFUSED && strstr(r.reason, "not a signed JWT"),
          "one segment");
    char four[4096];
    snprintf(four, sizeof four, "%s.x", t);
    CHECK(jwt_verify(four, strlen(four), &p, ks, NOW, &r) == JWT_REFUSED, "four segments");
    char nul[16] = "a.b\0c.d";
    CHECK(jwt_verify(nul, 7, &p, ks, NOW, &r) == JWT_REFUSED, "NUL byte inside");
    free(t);

    /* ES256 with a DER signature (what OpenSSL emits) instead of JOSE r||s: refused. */
    char *e = make_token(&KEYS[1], "{\"alg\":\"ES256\",\"kid\":\"ec-1\"}", "{" GOOD_CLAIMS "}");
    char *dot = strrchr(e, '.');
    strcpy(dot + 1, "MEUCIQDx");
    CHECK(jwt_verify(e, strlen(e), &p, ks, NOW, &r) == JWT_REFUSED && strstr(r.reason, "signature"),
          "ES256 signature of the wrong length");
    free(e);
    EVP_PKEY_free(stranger.pkey);
    jwks_free(ks);
}

int main(void)
{
    for (int i = 0; i < 3; i++)
        KEYS[i].pkey = keygen(KEYS[i].alg);
    test_b64url();
    test_jwks();
    test_tokens();
    for (int i = 0; i < 3; i++)
        EVP_PKEY_free(KEYS[i].pkey);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
