/*
 * base64url (RFC 4648 section 5, no padding), as JOSE uses it, decoded with
 * OpenSSL's EVP_DecodeBlock after translating the alphabet.  Strict: only
 * the url alphabet, no '=' and no whitespace, so one token has one reading.
 */
#ifndef PHIGATE_B64URL_H
#define PHIGATE_B64URL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes that decoding n characters can produce at most. */
#define B64URL_DECODED_MAX(n) (((n) + 3) / 4 * 3)

/* Decodes in[0..n) into out (cap bytes); false on a bad character or length,
 * or when out is too small. */
bool b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *outlen)
    __attribute__((warn_unused_result));

#endif
