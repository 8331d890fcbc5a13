/*
 * JWT (RFC 7519) verification for agent login: a compact JWS signed with
 * RS256, ES256 or EdDSA, checked against a JWKS with OpenSSL EVP, then its
 * claims (iss, aud, exp, nbf, iat) against an issuer's policy.  A pure
 * function of the token, the key set and the clock, so unit tests call it
 * directly; fetching keys is oidc.c's job.
 *
 * Reasons are fixed phrases safe to show the client and to log: they never
 * quote the token or its claims.
 */
#ifndef PHIGATE_JWT_H
#define PHIGATE_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gate/jwks.h"

#define JWT_MAX_NAME 64 /* identity and role names taken from claims */

typedef struct jwt_policy {
    const char *issuer;         /* "iss" must equal this */
    const char *audience;       /* "aud" (string or array) must contain this */
    unsigned algs;              /* allowed jwt_alg flags */
    int64_t skew_s;             /* clock skew tolerated on exp / nbf / iat */
    size_t max_token_bytes;
    const char *identity_claim; /* e.g. "sub" */
    const char *role_claim;     /* NULL: roles do not come from the token */
} jwt_policy;

typedef enum {
    JWT_OK = 0,
    JWT_REFUSED,     /* reason says why */
    JWT_UNKNOWN_KID, /* signed with a key the set does not hold (yet): worth a refetch */
} jwt_status;

typedef struct jwt_result {
    char reason[128];
    char identity[JWT_MAX_NAME];
    char role[JWT_MAX_NAME]; /* "" when the token names none */
    jwt_alg alg;
} jwt_result;

jwt_status jwt_verify(const char *token, size_t len, const jwt_policy *p, const jwks *keys, int64_t now,
                      jwt_result *out) __attribute__((warn_unused_result));

#endif
