/*
 * pgfront's audit records (gate/audit_log.h does the writing):
 *   connect / auth_failure / disconnect;
 *   statement: one per Query message, one per Execute of a prepared statement
 *     (its text from the Parse, its parameters keyed-hashed, never raw);
 *   result: one per statement, with rows, bytes, SHA-256 of what the database
 *     sent and of what the agent received, duration and SQLSTATE.
 * A statement's result is released to the agent only once its record is on
 * disk: the relay holds upstream bytes while records are pending.
 */
#ifndef PHIGATE_PG_AUDIT_H
#define PHIGATE_PG_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sqlpolicy/sqlpolicy.h"

struct evbuffer;
struct evbuffer_ptr;
typedef struct pg_session pg_session;

/* At accept: the session's audit_session (the log may be off). */
void pg_audit_init(pg_session *s);
void pg_audit_connect(pg_session *s);
/* method: "scram-sha-256" or "oidc"; reason never holds a secret. */
void pg_audit_auth_failure(pg_session *s, const char *method, const char *reason);
void pg_audit_disconnect(pg_session *s, const char *why);
/* NULL when statements may run; otherwise why the log cannot take them. */
const char *pg_audit_unavailable(pg_session *s);

struct minnec_outcome;
/* A Query, or a Parse that was refused: the statement record now.  mn: the
 * minimum-necessary checks (NULL = none); a held or refused outcome makes the
 * record a "hold" / "deny" whatever the engine decided. */
void pg_audit_statement(pg_session *s, const char *sql, size_t len, const sqlp_decision *d, bool query,
                        const struct minnec_outcome *mn);
/* A held statement that an approval released. */
void pg_audit_statement_approved(pg_session *s, const char *sql, size_t len, const sqlp_decision *d, bool query,
                                 const char *approval_id, const struct minnec_outcome *mn);
/* Approval events: requested outcome names ("approved", "denied", "timeout", ...). */
void pg_audit_approval(pg_session *s, const char *event, const char *request_id, const char *approver,
                       const char *reason, const char *fingerprint);
/* Client Bind / Execute (message of total bytes at pos in in). */
void pg_audit_bind(pg_session *s, struct evbuffer *in, const struct evbuffer_ptr *pos, uint32_t total);
void pg_audit_execute(pg_session *s, struct evbuffer *in, const struct evbuffer_ptr *pos, uint32_t total,
                      const struct minnec_outcome *mn);
/* The decision of the prepared statement an Execute runs, and its name (NULL:
 * unknown portal, or no audit log). */
const sqlp_decision *pg_audit_execute_decision(pg_session *s, struct evbuffer *in, const struct evbuffer_ptr *pos,
                                               uint32_t total, const char **statement);

/* Upstream message about to be forwarded unchanged. */
void pg_audit_server_message(pg_session *s, char type, struct evbuffer *in, const struct evbuffer_ptr *pos,
                             uint32_t total);
/* Bytes the agent got instead of the last server message (masked / scrubbed / substituted). */
void pg_audit_agent_bytes(pg_session *s, struct evbuffer *out, size_t from);
/* Fold the database's bytes of a message that was not forwarded as is. */
void pg_audit_db_bytes(pg_session *s, char type, struct evbuffer *in, uint32_t total);

/* The agent got sqlstate instead of the database's error (a refusal's stand-in). */
void pg_audit_agent_sqlstate(pg_session *s, const char *sqlstate);

void pg_audit_session_free(pg_session *s);

#endif
