/*
 * Audit records of the MySQL front: see my_audit.h.  The records and the
 * result digests are gate/audit_session's, shared with pgfront.
 *
 * MySQL answers one command at a time, so one tracker follows the result of
 * the statement in flight: it opens with the statement record and closes when
 * the relay reaches the end of the response (after the last result set of a
 * multi-statement string).
 */
#include "myfront/my_audit.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/conn.h"
#include "gate/log.h"
#include "gate/min_necessary.h"
#include "myfront/my_session.h"

typedef struct my_audit_state {
    bool open;      /* a statement's result is being tracked */
    audit_result r;
} my_audit_state;

static audit_log *log_of(my_session *s) { return my_server_audit(s->server); }

static const char *tls_version(my_session *s)
{
    SSL *ssl = s->client ? conn_ssl(s->client) : NULL;
    return ssl ? SSL_get_version(ssl) : NULL;
}

/* ---- session events ------------------------------------------------ */

void my_audit_init(my_session *s) { front_session_audit(&s->fs, &s->aud, "mysql"); }

const char *my_audit_unavailable(my_session *s) { return audit_session_unavailable(&s->aud); }

void my_audit_connect(my_session *s)
{
    audit_session_connect(&s->aud, s->client_addr, tls_version(s), s->user, s->auth_method_name, s->up->name,
                          s->role->name);
}

void my_audit_auth_failure(my_session *s, const char *reason)
{
    audit_session_auth_failure(&s->aud, s->client_addr, tls_version(s), s->user,
                               s->auth_method_name ? s->auth_method_name : "mysql", reason);
}

void my_audit_disconnect(my_session *s, const char *why)
{
    if (my_audit_tracking(s)) {
        /* A response cut short by the close still gets its result record. */
        my_audit_error(s, "08S01", why, strlen(why));
        my_audit_end(s);
    }
    audit_session_disconnect(&s->aud, why);
}

/* ---- statements ---------------------------------------------------------------------- */

void my_audit_param_token(my_session *s, const uint8_t *v, size_t len, char out[AUDIT_PARAM_TOKEN_LEN])
{
    if (!log_of(s)) { /* no record to put it in: spare the HMAC */
        out[0] = '\0';
        return;
    }
    audit_param_token(&s->role->policy, v, len, out);
}

static void start_result(my_session *s)
{
    if (!s->audit)
        s->audit = calloc(1, sizeof(my_audit_state));
    s->audit->open = true;
    audit_result_begin(&s->audit->r, s->aud.statements);
}

/* phigate's own decision on a command that is not SQL text (COM_INIT_DB). */
static void session_command(my_session *s, const char *text, size_t len, const char *refusal)
{
    audit_statement_info info = {
        .received = text,
        .received_len = len,
        .upstream = refusal ? NULL : text,
        .upstream_len = refusal ? 0 : len,
        .decision = refusal ? "deny" : "allow",
        .statement_class = "session",
        .rule = refusal ? "myfront.database" : NULL,
        .reason = refusal,
    };
    audit_session_statement_info(&s->aud, &info);
}

void my_audit_statement(my_session *s, const char *sql, size_t len, const sqlp_decision *d, const char *reason,
                        const audit_param *params, size_t nparams, const char *approval_id,
                        const minnec_outcome *mn)
{
    if (!log_of(s))
        return;
    if (d)
        audit_session_statement(&s->aud, sql, len, d, params, nparams, approval_id, mn);
    else
        session_command(s, sql, len, reason);
    start_result(s);
}

void my_audit_approval(my_session *s, const char *event, const char *request_id, const char *approver,
                       const char *reason, const char *fingerprint)
{
    audit_session_approval(&s->aud, event, request_id, approver, reason, fingerprint);
}

/* ---- results -------------------------------------------------------------------------- */

bool my_audit_tracking(const my_session *s) { return s->audit && s->audit->open; }

void my_audit_db_bytes(my_session *s, struct evbuffer *b, size_t from, size_t len)
{
    struct evbuffer_ptr p;
    if (my_audit_tracking(s) && evbuffer_ptr_set(b, &p, from, EVBUFFER_PTR_SET) == 0)
        audit_result_db(&s->audit->r, b, &p, len);
}

void my_audit_agent_bytes(my_session *s, struct evbuffer *b, size_t from, size_t len)
{
    struct evbuffer_ptr p;
    if (my_audit_tracking(s) && evbuffer_ptr_set(b, &p, from, EVBUFFER_PTR_SET) == 0)
        audit_result_agent(&s->audit->r, b, &p, len);
}

void my_audit_row(my_session *s)
{
    if (my_audit_tracking(s))
        s->audit->r.rows++;
}

void my_audit_error(my_session *s, const char *sqlstate, const char *msg, size_t len)
{
    if (my_audit_tracking(s))
        audit_result_error(&s->audit->r, sqlstate, msg, len);
}

void my_audit_end(my_session *s)
{
    if (!my_audit_tracking(s))
        return;
    audit_result_finish(&s->aud, &s->audit->r, NULL);
    s->audit->open = false;
}

void my_audit_session_free(my_session *s)
{
    if (!s->audit)
        return;
    audit_result_free(&s->audit->r);
    free(s->audit);
    s->audit = NULL;
}
