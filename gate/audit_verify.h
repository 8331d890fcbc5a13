/*
 * audit_verify: proves an audit log's hash chain and checkpoint signatures
 * with the public key alone, and names the first bad record.
 *
 * Used by `phigatectl audit verify` and by the unit tests.  It reads files
 * only; it never needs the private key or a running phigate.
 */
#ifndef PHIGATE_AUDIT_VERIFY_H
#define PHIGATE_AUDIT_VERIFY_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "gate/audit_crypto.h"

typedef struct {
    /* The auditor's trusted copy of the public key.  NULL: signatures are
     * checked against the key the log itself names, which proves internal
     * consistency only (a warning says so). */
    EVP_PKEY *pubkey;
    /* A log still being written ends with records no checkpoint signs yet;
     * with this set they are reported as a warning instead of a failure. */
    bool allow_unsigned_tail;
    /* Called about every 64k records. */
    void (*progress)(void *arg, uint64_t done_bytes, uint64_t total_bytes, uint64_t records);
    void (*warn)(void *arg, const char *file, uint64_t line, const char *msg);
    void *arg;
} audit_verify_opts;

typedef struct {
    bool ok;
    uint64_t records, checkpoints, files, sealed_tails;
    uint64_t first_seq, last_seq;   /* valid when records > 0 */
    uint64_t last_signed_seq;       /* valid when checkpoints > 0 */
    char log_id[64];
    char key_fpr[AUDIT_FPR_LEN];
    /* The first bad record, when !ok.  bad_seq is the seq that position
     * should hold (for a removed record: the missing one). */
    char bad_file[PATH_MAX];
    uint64_t bad_line;
    uint64_t bad_seq;
    char reason[512];
} audit_verify_result;

/* paths: log directories and/or files, in chain order.  Returns res->ok. */
bool audit_verify(const char *const *paths, size_t n, const audit_verify_opts *o, audit_verify_result *res);

#endif
