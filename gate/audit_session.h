/*
 * One client session's audit records, the same for every front (the front
 * names its protocol): connect / auth_failure / disconnect, statement records
 * built from a policy decision, approval events, and the result tracker that
 * digests what the database sent and what the agent received.
 *
 * Statement records are appended with a durability callback: `pending` counts
 * the ones not yet on disk, and the front releases a statement's result only
 * at zero (and frees a closed session only at zero, since the callback still
 * points at it).
 */
#ifndef PHIGATE_AUDIT_SESSION_H
#define PHIGATE_AUDIT_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gate/audit_log.h"
#include "sqlpolicy/sqlpolicy.h"

struct evbuffer;
struct evbuffer_ptr;
typedef struct evp_md_ctx_st EVP_MD_CTX;

#define AUDIT_PARAM_TOKEN_LEN 32 /* "hmac:" + 16 hex + NUL fits */

/* After the pending count went down: ok false when the record could not be written. */
typedef void (*audit_session_durable_fn)(void *owner, bool ok);

typedef struct audit_session {
    audit_log *log;            /* NULL: the audit log is off, every call is a no-op */
    const char *protocol;      /* "postgres" | "mysql" */
    audit_session_durable_fn durable;
    void *owner;               /* the front's session, for durable */
    char id[AUDIT_SESSION_LEN]; /* "" until the connect record */
    int pending;               /* statement records not yet durable */
    uint64_t statements;       /* statement records written */
    uint64_t opened_ns;
} audit_session;

void audit_session_init(audit_session *as, audit_log *log, const char *protocol, audit_session_durable_fn durable,
                        void *owner);
/* NULL when statements may run; otherwise why the log cannot take them. */
const char *audit_session_unavailable(const audit_session *as);

void audit_session_connect(audit_session *as, const char *client_addr, const char *tls_version,
                           const char *identity, const char *auth_method, const char *database, const char *role);
void audit_session_auth_failure(audit_session *as, const char *client_addr, const char *tls_version,
                                const char *user, const char *auth_method, const char *reason);
void audit_session_disconnect(audit_session *as, const char *why);

struct minnec_outcome;
/* The statement record (number ++statements) of a decided statement, waited
 * for; approval_id names the approval that released a held one; mn: the
 * minimum-necessary checks (NULL = none), a held or refused outcome makes the
 * record a "hold" / "deny" whatever the engine decided. */
void audit_session_statement(audit_session *as, const char *sql, size_t len, const sqlp_decision *d,
                             const audit_param *params, size_t nparams, const char *approval_id,
                             const struct minnec_outcome *mn);
/* A statement record the front builds itself (info.session and info.stmt are set here). */
void audit_session_statement_info(audit_session *as, audit_statement_info *info);
/* An approval event of the next statement ("approved", "denied", "timeout", "withdrawn", ...). */
void audit_session_approval(audit_session *as, const char *event, const char *request_id, const char *approver,
                            const char *reason, const char *fingerprint);

/* Keyed hash of a parameter value with the role's token key: equal values
 * compare equal in the evidence, no value is ever written. */
void audit_param_token(const sqlp_role *role, const uint8_t *v, size_t len, char out[AUDIT_PARAM_TOKEN_LEN]);

/* ---- one statement's result -------------------------------------------------- */

typedef struct audit_result {
    uint64_t stmt;
    uint64_t started_ns;
    uint64_t rows, bytes;
    EVP_MD_CTX *db, *agent; /* SHA-256 of the bytes as the database sent them / as the agent got them */
    char sqlstate[6];
    char *error;            /* error text as the agent got it (bounded), or NULL */
} audit_result;

/* Start (or restart) tracking statement stmt's result. */
void audit_result_begin(audit_result *r, uint64_t stmt);
void audit_result_db(audit_result *r, struct evbuffer *b, const struct evbuffer_ptr *from, size_t len);
/* Bytes the agent got; counted in the result's bytes. */
void audit_result_agent(audit_result *r, struct evbuffer *b, const struct evbuffer_ptr *from, size_t len);
/* The first error of the result (text bounded to 512 bytes; NULL text = none). */
void audit_result_error(audit_result *r, const char *sqlstate, const char *msg, size_t len);
/* The result record; error_override replaces the error text (e.g. "not executed"). */
void audit_result_finish(audit_session *as, audit_result *r, const char *error_override);
void audit_result_free(audit_result *r);

#endif
