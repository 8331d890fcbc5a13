/*
 * myfront's audit records (gate/audit_log.h does the writing), the same as
 * pgfront's with protocol "mysql":
 *   connect / auth_failure / disconnect;
 *   statement: one per COM_QUERY, one per COM_STMT_EXECUTE (text from its
 *     PREPARE, parameters keyed-hashed, never raw), one per refused PREPARE
 *     and per COM_INIT_DB;
 *   result: one per statement, with rows, bytes, SHA-256 of what the database
 *     sent and of what the agent received, duration and SQLSTATE.
 * A statement's result is released to the agent only once its record is on
 * disk: the relay holds upstream bytes while records are pending.
 */
#ifndef PHIGATE_MY_AUDIT_H
#define PHIGATE_MY_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gate/audit_session.h"
#include "sqlpolicy/sqlpolicy.h"

struct evbuffer;
typedef struct my_session my_session;

/* At accept: the session's audit_session (the log may be off). */
void my_audit_init(my_session *s);
void my_audit_connect(my_session *s);
void my_audit_auth_failure(my_session *s, const char *reason);
void my_audit_disconnect(my_session *s, const char *why);
/* NULL when statements may run; otherwise why the log cannot take them. */
const char *my_audit_unavailable(my_session *s);

/* The statement record (results wait until it is durable) and the start of its
 * result.  decision NULL: a command that is not SQL text (COM_INIT_DB), refused
 * when reason is set.  approval_id: the approval that released a held statement;
 * mn: its minimum-necessary checks (NULL = none). */
void my_audit_statement(my_session *s, const char *sql, size_t len, const sqlp_decision *d, const char *reason,
                        const audit_param *params, size_t nparams, const char *approval_id,
                        const struct minnec_outcome *mn);
/* Approval events of the next statement ("approved", "denied", "timeout", "withdrawn", ...). */
void my_audit_approval(my_session *s, const char *event, const char *request_id, const char *approver,
                       const char *reason, const char *fingerprint);
/* Keyed hash of one parameter value, "hmac:<16 hex>", for statement records. */
void my_audit_param_token(my_session *s, const uint8_t *v, size_t len, char out[AUDIT_PARAM_TOKEN_LEN]);

/* Bytes of the current result: as the database sent them (db) and as the agent
 * got them (agent); the same range for bytes forwarded unchanged. */
void my_audit_db_bytes(my_session *s, struct evbuffer *b, size_t from, size_t len);
void my_audit_agent_bytes(my_session *s, struct evbuffer *b, size_t from, size_t len);
void my_audit_row(my_session *s);
void my_audit_error(my_session *s, const char *sqlstate, const char *msg, size_t len);
/* The response ended: the result record. */
void my_audit_end(my_session *s);
bool my_audit_tracking(const my_session *s);

void my_audit_session_free(my_session *s);

#endif
