/*
 * audit_crypto: SHA-256 and Ed25519 for the audit log, through OpenSSL's EVP
 * API only (no deprecated low-level calls).
 *
 * Keys are PEM files: the private key as PKCS#8 ("audit_ed25519.key", mode
 * 0600), the public key as SubjectPublicKeyInfo ("audit_ed25519.pub").  A
 * key's fingerprint is "sha256:" + hex SHA-256 of the 32 raw public key bytes.
 */
#ifndef PHIGATE_AUDIT_CRYPTO_H
#define PHIGATE_AUDIT_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "gate/audit_json.h" /* AUDIT_WUR */

#define AUDIT_SHA256_LEN 32
#define AUDIT_SIG_LEN 64
#define AUDIT_PUBKEY_LEN 32
#define AUDIT_FPR_LEN 72 /* "sha256:" + 64 hex + NUL, rounded up */

#define AUDIT_KEY_FILE "audit_ed25519.key"
#define AUDIT_PUB_FILE "audit_ed25519.pub"

bool audit_sha256(const void *p, size_t n, uint8_t out[AUDIT_SHA256_LEN]) AUDIT_WUR;
void audit_hex(const uint8_t *p, size_t n, char *out); /* out holds 2n+1 */
bool audit_unhex(const char *hex, uint8_t *out, size_t n) AUDIT_WUR; /* exactly 2n lowercase hex */

/* Incremental SHA-256 for the fronts' result digests. */
typedef struct {
    EVP_MD_CTX *ctx;
} audit_digest;
bool audit_digest_init(audit_digest *d) AUDIT_WUR;
void audit_digest_update(audit_digest *d, const void *p, size_t n);
bool audit_digest_final(audit_digest *d, uint8_t out[AUDIT_SHA256_LEN]) AUDIT_WUR; /* also frees */
void audit_digest_free(audit_digest *d);

/* Writes DIR/audit_ed25519.key (0600) and DIR/audit_ed25519.pub; never overwrites. */
bool audit_key_generate(const char *dir, char *err, size_t errlen) AUDIT_WUR;
EVP_PKEY *audit_key_load_private(const char *path, char *err, size_t errlen);
/* Accepts a public key PEM (or a private key PEM, whose public half is used). */
EVP_PKEY *audit_key_load_public(const char *path, char *err, size_t errlen);
EVP_PKEY *audit_key_from_raw(const uint8_t raw[AUDIT_PUBKEY_LEN]);
bool audit_key_raw(EVP_PKEY *k, uint8_t raw[AUDIT_PUBKEY_LEN]) AUDIT_WUR;
bool audit_key_fingerprint(EVP_PKEY *k, char out[AUDIT_FPR_LEN]) AUDIT_WUR;

bool audit_sign(EVP_PKEY *k, const void *msg, size_t n, uint8_t sig[AUDIT_SIG_LEN]) AUDIT_WUR;
bool audit_sig_valid(EVP_PKEY *k, const void *msg, size_t n, const uint8_t sig[AUDIT_SIG_LEN]) AUDIT_WUR;

/* The exact bytes a checkpoint signs; see AUDIT_FORMAT.md.  Returns the length. */
size_t audit_checkpoint_message(char *buf, size_t cap, const char *log_id, uint64_t seq,
                                const char *ts, const char *prev_hex);

#endif
