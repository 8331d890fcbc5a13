/*
 * SCRAM-SHA-256 (RFC 5802 / RFC 7677) for both directions:
 *  - server side, agents authenticating to phigate against stored verifiers;
 *  - client side, phigate authenticating to an upstream PostgreSQL.
 * All crypto goes through OpenSSL.  Verifiers use PostgreSQL's text form:
 *   SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>
 */
#ifndef PHIGATE_SCRAM_H
#define PHIGATE_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRAM_KEY_LEN 32
#define SCRAM_MAX_SALT 64
#define SCRAM_NONCE_LEN 18 /* random bytes, sent base64 (24 chars) */
#define SCRAM_DEFAULT_ITERATIONS 4096
#define SCRAM_MAX_MESSAGE 1024

typedef struct scram_verifier {
    int iterations;
    uint8_t salt[SCRAM_MAX_SALT];
    size_t salt_len;
    uint8_t stored_key[SCRAM_KEY_LEN];
    uint8_t server_key[SCRAM_KEY_LEN];
} scram_verifier;

__attribute__((warn_unused_result)) bool scram_verifier_parse(const char *text, scram_verifier *out);
/* Build a verifier text from a password with a fresh random salt. */
__attribute__((warn_unused_result)) bool scram_verifier_make(const char *password, int iterations,
                                                             char *out, size_t outlen);
/* A deterministic fake verifier for an unknown identity, so the exchange runs the
 * same path and fails at the proof, like PostgreSQL's mock authentication. */
void scram_verifier_mock(const uint8_t *secret, size_t secret_len, const char *user,
                         scram_verifier *out);

/* Channel binding data (tls-server-end-point hash of the server certificate). */
typedef struct scram_channel_binding {
    uint8_t data[64];
    size_t len; /* 0 = no TLS, binding impossible */
} scram_channel_binding;

typedef struct scram_server {
    scram_verifier verifier;
    bool use_plus;               /* client chose SCRAM-SHA-256-PLUS */
    bool server_offered_plus;
    const scram_channel_binding *cbind;
    char gs2_header[64];
    char client_first_bare[SCRAM_MAX_MESSAGE];
    char server_first[SCRAM_MAX_MESSAGE];
    char nonce[128];
} scram_server;

/* Server: consume client-first-message, produce server-first-message.
 * err receives a reason (for phigate's log, never for the client). */
__attribute__((warn_unused_result)) bool scram_server_first(scram_server *s, const char *msg, size_t len,
                                                            char *out, size_t outlen, const char **err);
/* Server: consume client-final-message.  Returns true when the message is well
 * formed; *authenticated says whether the proof matched; out gets server-final. */
__attribute__((warn_unused_result)) bool scram_server_final(scram_server *s, const char *msg, size_t len,
                                                            bool *authenticated, char *out, size_t outlen,
                                                            const char **err);

typedef struct scram_client {
    const char *password;
    char client_first_bare[SCRAM_MAX_MESSAGE];
    char server_first[SCRAM_MAX_MESSAGE];
    uint8_t server_signature[SCRAM_KEY_LEN];
    char nonce[64];
} scram_client;

__attribute__((warn_unused_result)) bool scram_client_first(scram_client *c, const char *password,
                                                            char *out, size_t outlen);
__attribute__((warn_unused_result)) bool scram_client_final(scram_client *c, const char *server_first,
                                                            size_t len, char *out, size_t outlen,
                                                            const char **err);
__attribute__((warn_unused_result)) bool scram_client_verify_server(scram_client *c, const char *server_final,
                                                                    size_t len, const char **err);

/* Base64 helpers (OpenSSL EVP_Encode/DecodeBlock with exact lengths). */
size_t b64_encode(const uint8_t *in, size_t len, char *out, size_t outlen);
bool b64_decode(const char *in, size_t len, uint8_t *out, size_t outlen, size_t *outlen_used);

#endif
