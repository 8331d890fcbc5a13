#include "gate/jwks.h"

#include <errno.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gate/audit_json.h"
#include "gate/b64url.h"

#define RSA_MIN_BITS 2048
#define RSA_MAX_MODULUS 1024 /* bytes: 8192-bit keys */

static const struct {
    const char *name;
    jwt_alg alg;
} alg_names[] = {{"RS256", JWT_ALG_RS256}, {"ES256", JWT_ALG_ES256}, {"EdDSA", JWT_ALG_EDDSA}};

bool jwt_alg_from_name(const char *name, jwt_alg *out)
{
    for (size_t i = 0; i < sizeof alg_names / sizeof alg_names[0]; i++)
        if (strcmp(name, alg_names[i].name) == 0) {
            *out = alg_names[i].alg;
            return true;
        }
    return false;
}

const char *jwt_alg_name(jwt_alg alg)
{
    for (size_t i = 0; i < sizeof alg_names / sizeof alg_names[0]; i++)
        if (alg_names[i].alg == alg)
            return alg_names[i].name;
    return "?";
}

/* A base64url member decoded into out; exact says the length it must have (0: any up to cap). */
static bool member_bytes(const aj_value *k, const char *name, uint8_t *out, size_t cap, size_t exact, size_t *len)
{
    const aj_value *v = aj_get(k, name);
    if (!v || v->type != AJ_STRING || v->len == 0 || B64URL_DECODED_MAX(v->len) > cap + 2)
        return false;
    uint8_t tmp[RSA_MAX_MODULUS + 3];
    if (!b64url_decode(v->str, v->len, tmp, sizeof tmp, len) || *len > cap || (exact && *len != exact))
        return false;
    memcpy(out, tmp, *len);
    return true;
}

static EVP_PKEY *from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static EVP_PKEY *rsa_key(const aj_value *k, const char **why)
{
    uint8_t n[RSA_MAX_MODULUS], e[8];
    size_t nlen, elen;
    if (!member_bytes(k, "n", n, sizeof n, 0, &nlen) || !member_bytes(k, "e", e, sizeof e, 0, &elen)) {
        *why = "RSA key needs base64url n (up to 8192 bits) and e";
        return NULL;
    }
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL), *be = BN_bin2bn(e, (int)elen, NULL);
    EVP_PKEY *pkey = NULL;
    if (bld && bn && be && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
        pkey = from_params("RSA", bld);
    BN_free(bn), BN_free(be);
    OSSL_PARAM_BLD_free(bld);
    if (pkey && EVP_PKEY_get_bits(pkey) < RSA_MIN_BITS) {
        EVP_PKEY_free(pkey);
        *why = "RSA key shorter than 2048 bits";
        return NULL;
    }
    if (!pkey)
        *why = "RSA key not accepted by OpenSSL";
    return pkey;
}

static EVP_PKEY *ec_key(const aj_value *k, const char **why)
{
    const char *crv = aj_get_str(k, "crv");
    uint8_t point[65] = {0x04}; /* uncompressed: 04 || x || y */
    size_t xl, yl;
    if (!crv || strcmp(crv, "P-256") != 0) {
        *why = "EC key on a curve other than P-256";
        return NULL;
    }
    if (!member_bytes(k, "x", point + 1, 32, 32, &xl) || !member_bytes(k, "y", point + 33, 32, 32, &yl)) {
        *why = "EC P-256 key needs 32-byte x and y";
        return NULL;
    }
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pkey = NULL;
    if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point))
        pkey = from_params("EC", bld);
    OSSL_PARAM_BLD_free(bld);
    /* fromdata does not promise the point is on the curve: check it. */
    EVP_PKEY_CTX *chk = pkey ? EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL) : NULL;
    if (pkey && (!chk || EVP_PKEY_public_check(chk) != 1)) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    EVP_PKEY_CTX_free(chk);
    if (!pkey)
        *why = "EC key is not a valid P-256 point";
    return pkey;
}

static EVP_PKEY *okp_key(const aj_value *k, const char **why)
{
    const char *crv = aj_get_str(k, "crv");
    uint8_t x[32];
    size_t xl;
    if (!crv || strcmp(crv, "Ed25519") != 0) {
        *why = "OKP key on a curve other than Ed25519";
        return NULL;
    }
    if (!member_bytes(k, "x", x, sizeof x, 32, &xl)) {
        *why = "Ed25519 key needs a 32-byte x";
        return NULL;
    }
    EVP_PKEY *pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, sizeof x);
    if (!pkey)
        *why = "Ed25519 key not accepted by OpenSSL";
    return pkey;
}

/* One member of "keys": added, skipped (not a signature key we use), or an error. */
static bool add_key(jwks *ks, const aj_value *k, size_t index, char *err, size_t errlen)
{
    const char *kty = aj_get_str(k, "kty"), *use = aj_get_str(k, "use"), *kid = aj_get_str(k, "kid");
    const char *jalg = aj_get_str(k, "alg"), *why = NULL;
    if (k->type != AJ_OBJECT || !kty) {
        snprintf(err, errlen, "key %zu: not an object with a \"kty\"", index + 1);
        return false;
    }
    if ((use && strcmp(use, "sig") != 0) || strcmp(kty, "oct") == 0)
        return true;
    jwks_key key = {0};
    if (strcmp(kty, "RSA") == 0)
        key.alg = JWT_ALG_RS256, key.pkey = rsa_key(k, &why);
    else if (strcmp(kty, "EC") == 0)
        key.alg = JWT_ALG_ES256, key.pkey = ec_key(k, &why);
    else if (strcmp(kty, "OKP") == 0)
        key.alg = JWT_ALG_EDDSA, key.pkey = okp_key(k, &why);
    else
        return true; /* a key type we do not verify with */
    if (key.pkey && jalg && strcmp(jalg, jwt_alg_name(key.alg)) != 0) {
        why = "its \"alg\" does not match its key type";
        EVP_PKEY_free(key.pkey);
        key.pkey = NULL;
    }
    if (key.pkey && kid && strlen(kid) >= sizeof key.kid) {
        why = "kid longer than 127 bytes";
        EVP_PKEY_free(key.pkey);
        key.pkey = NULL;
    }
    if (!key.pkey) {
        snprintf(err, errlen, "key %zu: %s", index + 1, why);
        return false;
    }
    if (ks->nkeys == JWKS_MAX_KEYS) {
        EVP_PKEY_free(key.pkey);
        snprintf(err, errlen, "more than %d signature keys", JWKS_MAX_KEYS);
        return false;
    }
    if (kid)
        strcpy(key.kid, kid);
    ks->keys[ks->nkeys++] = key;
    return true;
}

jwks *jwks_parse(const char *json, size_t len, char *err, size_t errlen)
{
    aj_arena arena = {0};
    aj_value *root;
    char perr[128];
    jwks *ks = calloc(1, sizeof *ks);
    if (!ks) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    bool ok = false;
    if (!aj_parse(&arena, json, len, &root, perr, sizeof perr))
        snprintf(err, errlen, "not valid JSON: %s", perr);
    else if (!aj_get(root, "keys") || aj_get(root, "keys")->type != AJ_ARRAY)
        snprintf(err, errlen, "no \"keys\" array");
    else {
        ok = true;
        size_t i = 0;
        for (const aj_value *k = aj_get(root, "keys")->child; k && ok; k = k->next, i++)
            ok = add_key(ks, k, i, err, errlen);
        if (ok && ks->nkeys == 0) {
            snprintf(err, errlen, "no RSA, EC P-256 or Ed25519 signature keys");
            ok = false;
        }
    }
    aj_arena_free(&arena);
    if (!ok) {
        jwks_free(ks);
        return NULL;
    }
    return ks;
}

jwks *jwks_load_file(const char *path, size_t max_bytes, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > max_bytes) {
        snprintf(err, errlen, "%s is not a regular file of at most %zu bytes", path, max_bytes);
        fclose(f);
        return NULL;
    }
    char *buf = malloc(max_bytes + 1);
    size_t n = buf ? fread(buf, 1, max_bytes + 1, f) : 0;
    fclose(f);
    jwks *ks = NULL;
    char why[256];
    if (!buf)
        snprintf(err, errlen, "out of memory");
    else if (n > max_bytes)
        snprintf(err, errlen, "%s is larger than %zu bytes", path, max_bytes);
    else if (!(ks = jwks_parse(buf, n, why, sizeof why)))
        snprintf(err, errlen, "%s: %s", path, why);
    free(buf);
    return ks;
}

void jwks_free(jwks *ks)
{
    if (!ks)
        return;
    for (size_t i = 0; i < ks->nkeys; i++)
        EVP_PKEY_free(ks->keys[i].pkey);
    free(ks);
}

const jwks_key *jwks_find(const jwks *ks, const char *kid, jwt_alg alg)
{
    const jwks_key *only = NULL;
    size_t serving = 0;
    for (size_t i = 0; ks && i < ks->nkeys; i++) {
        const jwks_key *k = &ks->keys[i];
        if (k->alg != alg)
            continue;
        if (kid && strcmp(k->kid, kid) == 0)
            return k;
        serving++;
        only = k;
    }
    return !kid && serving == 1 ? only : NULL;
}

bool jwks_has_kid(const jwks *ks, const char *kid)
{
    for (size_t i = 0; ks && i < ks->nkeys; i++)
        if (strcmp(ks->keys[i].kid, kid) == 0)
            return true;
    return false;
}
