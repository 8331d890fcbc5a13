/*
 *   base64url(header) . base64url(payload) . base64url(signature)
 *   \_________ signed bytes (ASCII) _________/
 *
 * Order: size, shape, header (alg allow-list, crit), key by kid with a type
 * that matches alg, signature; only then are the claims read.
 */
#include "gate/jwt.h"

#include <errno.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/audit_json.h"
#include "gate/b64url.h"

#define JWT_MAX_HEADER 2048 /* decoded header bytes */
#define ES256_SIG_LEN 64    /* JOSE: r || s, 32 bytes each */

typedef struct jwt_parts {
    const char *seg[3];
    size_t seglen[3];
} jwt_parts;

static jwt_status refuse(jwt_result *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->reason, sizeof out->reason, fmt, ap);
    va_end(ap);
    return JWT_REFUSED;
}

static bool split(const char *t, size_t len, jwt_parts *p)
{
    size_t start = 0, n = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && t[i] == '\0')
            return false;
        if (i == len || t[i] == '.') {
            if (n == 3)
                return false;
            p->seg[n] = t + start;
            p->seglen[n++] = i - start;
            start = i + 1;
        }
    }
    return n == 3 && p->seglen[0] > 0 && p->seglen[1] > 0;
}

/* Decodes one segment and parses it as a JSON object in arena. */
static const aj_value *segment_object(aj_arena *a, const char *seg, size_t n, size_t max)
{
    if (B64URL_DECODED_MAX(n) > max)
        return NULL;
    char *buf = malloc(B64URL_DECODED_MAX(n) + 1);
    size_t len;
    aj_value *v = NULL;
    char err[64];
    if (buf && b64url_decode(seg, n, (uint8_t *)buf, B64URL_DECODED_MAX(n), &len) &&
        !aj_parse(a, buf, len, &v, err, sizeof err))
        v = NULL;
    free(buf);
    return v && v->type == AJ_OBJECT ? v : NULL;
}

/* An algorithm name is echoed only when it is short and plain. */
static bool plain_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 10)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')))
            return false;
    return true;
}

static jwt_status check_header(const aj_value *h, const jwt_policy *p, jwt_result *out, const char **kid)
{
    const char *alg = aj_get_str(h, "alg");
    const aj_value *k = aj_get(h, "kid");
    if (!alg)
        return refuse(out, "token header has no algorithm");
    if (strcmp(alg, "none") == 0)
        return refuse(out, "unsigned token (alg none) refused");
    if (!jwt_alg_from_name(alg, &out->alg) || !(p->algs & out->alg))
        return plain_name(alg) ? refuse(out, "token algorithm %s is not allowed", alg)
                               : refuse(out, "token algorithm is not allowed");
    /* RFC 7515 4.1.11: extensions we do not understand must not be ignored. */
    if (aj_get(h, "crit"))
        return refuse(out, "token header has critical extensions phigate does not support");
    if (k && (k->type != AJ_STRING || k->len == 0 || k->len >= JWKS_MAX_KID))
        return refuse(out, "token key id (kid) is malformed");
    *kid = k ? k->str : NULL;
    return JWT_OK;
}

static jwt_status pick_key(const jwks *keys, const char *kid, jwt_alg alg, jwt_result *out, const jwks_key **key)
{
    *key = jwks_find(keys, kid, alg);
    if (*key)
        return JWT_OK;
    if (!kid)
        return refuse(out, "token has no key id (kid) and the issuer has no single %s key", jwt_alg_name(alg));
    if (jwks_has_kid(keys, kid))
        return refuse(out, "token key id (kid) names a key that is not a %s key", jwt_alg_name(alg));
    snprintf(out->reason, sizeof out->reason, "token signed with an unknown key id (kid)");
    return JWT_UNKNOWN_KID;
}

/* JOSE carries ES256 as raw r || s; OpenSSL verifies DER ECDSA-Sig-Value. */
static uint8_t *es256_to_der(const uint8_t *sig, size_t len, size_t *derlen)
{
    if (len != ES256_SIG_LEN)
        return NULL;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
    uint8_t *der = NULL;
    if (es && r && s && ECDSA_SIG_set0(es, r, s)) {
        r = s = NULL; /* owned by es now */
        int n = i2d_ECDSA_SIG(es, &der);
        *derlen = n > 0 ? (size_t)n : 0;
        if (n <= 0)
            der = NULL;
    }
    BN_free(r), BN_free(s);
    ECDSA_SIG_free(es);
    return der;
}

static bool key_type_matches(const EVP_PKEY *pkey, jwt_alg alg)
{
    int id = EVP_PKEY_get_base_id(pkey);
    return (alg == JWT_ALG_RS256 && id == EVP_PKEY_RSA) || (alg == JWT_ALG_ES256 && id == EVP_PKEY_EC) ||
           (alg == JWT_ALG_EDDSA && id == EVP_PKEY_ED25519);
}

static bool signature_ok(const jwks_key *key, jwt_alg alg, const char *signed_part, size_t slen, const uint8_t *sig,
                         size_t siglen)
{
    if (!key_type_matches(key->pkey, alg))
        return false;
    uint8_t *der = NULL;
    if (alg == JWT_ALG_ES256) {
        if (!(der = es256_to_der(sig, siglen, &siglen)))
            return false;
        sig = der;
    }
    /* EdDSA hashes internally: no digest is named for it. */
    const EVP_MD *md = alg == JWT_ALG_EDDSA ? NULL : EVP_sha256();
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestVerifyInit(ctx, NULL, md, NULL, key->pkey) == 1 &&
              EVP_DigestVerify(ctx, sig, siglen, (const unsigned char *)signed_part, slen) == 1;
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    return ok;
}

/* A NumericDate: seconds, a fraction allowed and dropped; no sign, no exponent. */
static bool numeric_date(const aj_value *v, int64_t *out)
{
    if (!v || v->type != AJ_NUMBER || v->str[0] == '-' || strpbrk(v->str, "eE"))
        return false;
    size_t digits = strspn(v->str, "0123456789");
    if (digits == 0 || digits > 15)
        return false;
    *out = strtoll(v->str, NULL, 10);
    return true;
}

static bool audience_ok(const aj_value *aud, const char *want)
{
    if (aud && aud->type == AJ_STRING)
        return strcmp(aud->str, want) == 0;
    if (!aud || aud->type != AJ_ARRAY)
        return false;
    for (const aj_value *e = aud->child; e; e = e->next)
        if (e->type == AJ_STRING && strcmp(e->str, want) == 0)
            return true;
    return false;
}

static jwt_status check_times(const aj_value *c, const jwt_policy *p, int64_t now, jwt_result *out)
{
    int64_t exp, nbf, iat;
    if (!numeric_date(aj_get(c, "exp"), &exp))
        return refuse(out, "token has no valid expiry (exp)");
    if (now >= exp + p->skew_s)
        return refuse(out, "token has expired");
    if (aj_get(c, "nbf") && !numeric_date(aj_get(c, "nbf"), &nbf))
        return refuse(out, "token not-before (nbf) is malformed");
    if (aj_get(c, "nbf") && now + p->skew_s < nbf)
        return refuse(out, "token is not valid yet (nbf)");
    if (aj_get(c, "iat") && !numeric_date(aj_get(c, "iat"), &iat))
        return refuse(out, "token issued-at (iat) is malformed");
    if (aj_get(c, "iat") && iat > now + p->skew_s)
        return refuse(out, "token issued in the future (iat)");
    return JWT_OK;
}

/* A claim naming an identity or role: a string of 1..63 bytes without control characters. */
static bool name_claim(const aj_value *v, char *out)
{
    if (!v || v->type != AJ_STRING || v->len == 0 || v->len >= JWT_MAX_NAME || strlen(v->str) != v->len)
        return false;
    for (size_t i = 0; i < v->len; i++)
        if ((unsigned char)v->str[i] < 0x20 || v->str[i] == 0x7f)
            return false;
    memcpy(out, v->str, v->len + 1);
    return true;
}

static jwt_status check_claims(const aj_value *c, const jwt_policy *p, int64_t now, jwt_result *out)
{
    const char *iss = aj_get_str(c, "iss");
    if (!iss || strcmp(iss, p->issuer) != 0)
        return refuse(out, "token issuer (iss) is not the configured issuer");
    if (!audience_ok(aj_get(c, "aud"), p->audience))
        return refuse(out, "token audience (aud) does not include phigate's audience");
    jwt_status st = check_times(c, p, now, out);
    if (st != JWT_OK)
        return st;
    if (!name_claim(aj_get(c, p->identity_claim), out->identity))
        return refuse(out, "token identity claim is missing or not a name");
    const aj_value *role = p->role_claim ? aj_get(c, p->role_claim) : NULL;
    if (role && !name_claim(role, out->role))
        return refuse(out, "token role claim is not a name");
    return JWT_OK;
}

/* The signature segment decoded and checked over "header.payload". */
static bool segment_signature_ok(const jwt_parts *parts, const char *token, const jwks_key *key, jwt_alg alg)
{
    size_t cap = B64URL_DECODED_MAX(parts->seglen[2]), siglen = 0;
    uint8_t *sig = malloc(cap + 1);
    bool ok = sig && b64url_decode(parts->seg[2], parts->seglen[2], sig, cap, &siglen) &&
              signature_ok(key, alg, token, (size_t)(parts->seg[2] - 1 - token), sig, siglen);
    free(sig);
    return ok;
}

/* Header, key, signature, then claims: nothing of the payload is read before the signature holds. */
static jwt_status verify_parts(aj_arena *arena, const jwt_parts *parts, const char *token, const jwt_policy *p,
                               const jwks *keys, int64_t now, jwt_result *out)
{
    const aj_value *h = segment_object(arena, parts->seg[0], parts->seglen[0], JWT_MAX_HEADER), *c;
    const char *kid = NULL;
    const jwks_key *key = NULL;
    jwt_status st;
    if (!h)
        return refuse(out, "token header is not base64url JSON");
    if ((st = check_header(h, p, out, &kid)) != JWT_OK || (st = pick_key(keys, kid, out->alg, out, &key)) != JWT_OK)
        return st;
    if (!segment_signature_ok(parts, token, key, out->alg))
        return refuse(out, "token signature does not verify");
    if (!(c = segment_object(arena, parts->seg[1], parts->seglen[1], p->max_token_bytes)))
        return refuse(out, "token payload is not base64url JSON");
    return check_claims(c, p, now, out);
}

jwt_status jwt_verify(const char *token, size_t len, const jwt_policy *p, const jwks *keys, int64_t now,
                      jwt_result *out)
{
    memset(out, 0, sizeof *out);
    jwt_parts parts;
    if (len > p->max_token_bytes)
        return refuse(out, "token larger than %zu bytes", p->max_token_bytes);
    if (!split(token, len, &parts))
        return refuse(out, "not a signed JWT (header.payload.signature)");
    aj_arena arena = {0};
    jwt_status st = verify_parts(&arena, &parts, token, p, keys, now, out);
    aj_arena_free(&arena);
    if (st != JWT_OK)
        out->identity[0] = out->role[0] = '\0';
    return st;
}
