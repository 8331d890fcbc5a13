/*
 * A JSON Web Key Set (RFC 7517) of public signature keys, turned into
 * OpenSSL EVP_PKEYs: RSA (RS256), EC P-256 (ES256) and OKP Ed25519 (EdDSA).
 * Symmetric ("oct") keys and keys whose "use" is not "sig" are skipped: a
 * verifier that held one could be tricked into HMAC with a public value.
 */
#ifndef PHIGATE_JWKS_H
#define PHIGATE_JWKS_H

#include <stdbool.h>
#include <stddef.h>

#define JWKS_MAX_KEYS 64
#define JWKS_MAX_KID 128

/* The signature algorithms phigate verifies; bit flags for allow-lists. */
typedef enum {
    JWT_ALG_RS256 = 1,
    JWT_ALG_ES256 = 2,
    JWT_ALG_EDDSA = 4,
} jwt_alg;

/* "RS256", "ES256", "EdDSA" -> flag; false for anything else (none, HS256, ...). */
bool jwt_alg_from_name(const char *name, jwt_alg *out) __attribute__((warn_unused_result));
const char *jwt_alg_name(jwt_alg alg);

struct evp_pkey_st;

typedef struct jwks_key {
    char kid[JWKS_MAX_KID]; /* "" when the key has none */
    jwt_alg alg;            /* the one algorithm this key's type and curve serve */
    struct evp_pkey_st *pkey;
} jwks_key;

typedef struct jwks {
    jwks_key keys[JWKS_MAX_KEYS];
    size_t nkeys;
} jwks;

/* Parses a JWKS document; NULL with err (no key material in it) on failure. */
jwks *jwks_parse(const char *json, size_t len, char *err, size_t errlen);
/* Reads and parses a file of at most max_bytes. */
jwks *jwks_load_file(const char *path, size_t max_bytes, char *err, size_t errlen);
void jwks_free(jwks *ks);

/* The key named kid serving alg, or NULL; kid NULL: the only key serving alg. */
const jwks_key *jwks_find(const jwks *ks, const char *kid, jwt_alg alg);
/* True when some key is named kid (whatever its type). */
bool jwks_has_kid(const jwks *ks, const char *kid);

#endif
