/*
 * libFuzzer harness for what a token login parses from an unauthenticated
 * peer or an issuer: the JWT (header, payload, signature, claims) against a
 * fixed key set, and JWKS documents.  The first byte picks the parser.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gate/jwks.h"
#include "gate/jwt.h"

static const char KEYS[] =
    "{\"keys\":[{\"kty\":\"EC\",\"kid\":\"ec\",\"crv\":\"P-256\","
    "\"x\":\"h0dzDQEp442JEy2p3rDhU_0X669tQkrh8kbs36CzQPo\",\"y\":\"RpyCcdjBOtGiDPDkTqh5dAswUnM-Fn9NCREmA2jDLB0\"},"
    "{\"kty\":\"OKP\",\"kid\":\"ed\",\"crv\":\"Ed25519\",\"x\":\"yevuscq5jMAKmYxScqNsz5slHJRgPbZHXTHpkQVjfVo\"}]}";

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    static jwks *keys;
    char err[256];
    if (!keys)
        keys = jwks_parse(KEYS, strlen(KEYS), err, sizeof err);
    if (n == 0 || !keys)
        return 0;
    if (d[0] & 1) {
        jwks_free(jwks_parse((const char *)d + 1, n - 1, err, sizeof err));
        return 0;
    }
    jwt_policy p = {"https://issuer", "phigate", JWT_ALG_RS256 | JWT_ALG_ES256 | JWT_ALG_EDDSA, 60, 8192, "sub",
                    "role"};
    jwt_result r;
    (void)jwt_verify((const char *)d + 1, n - 1, &p, keys, 1800000000, &r);
    return 0;
}
