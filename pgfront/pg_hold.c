#include "pgfront/pg_hold.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/approvals.h"
#include "gate/conn.h"
#include "gate/hold.h"
#include "gate/log.h"
#include "gate/min_necessary.h"
#include "pgfront/pg_audit.h"
#include "pgfront/pg_minnec.h"
#include "pgfront/pg_policy.h"
#include "pgfront/pg_session.h"

typedef struct pg_held {
    approval_wait *wait;
    sqlp_decision *d;
    pg_stmt_copy m;        /* the held message */
    hold_binding b;        /* what an approval is bound to (and the checks' outcome) */
} pg_held;

bool pg_hold_waiting(const pg_session *s) { return s->held != NULL; }

static void held_free(pg_held *h)
{
    sqlp_decision_free(h->d);
    pg_stmt_copy_clear(&h->m);
    hold_binding_clear(&h->b);
    free(h);
}

/* Resume reading the client after the held message was answered. */
static void resume(pg_session *s)
{
    pg_held *h = s->held;
    s->held = NULL;
    held_free(h);
    if (s->state != PGC_ACTIVE)
        return;
    if (!s->client_paused)
        conn_read_enable(s->client);
    pg_relay_client_data(s);
    pg_session_flush(s);
}

static void forward_approved(pg_session *s, pg_held *h, uint64_t row_cap)
{
    struct evbuffer *in = conn_input(s->client), *up = conn_output(s->upstream);
    char *sql = hold_capped_sql(h->d, row_cap);
    if (!sql) {
        pg_relay_refuse(s, h->m.type, h->m.total, "53200", "out of memory applying the approval's row cap");
        return;
    }
    evbuffer_drain(in, h->m.total);
    if (h->m.type == 'Q') {
        pg_put_query(up, sql, strlen(sql));
        free(sql);
        return; /* syncs_sent is counted after its audit record, which names this batch */
    }
    struct evbuffer *body = evbuffer_new();
    evbuffer_add(body, h->m.name, strlen(h->m.name) + 1);
    evbuffer_add(body, sql, strlen(sql) + 1);
    evbuffer_add(body, h->m.types, h->m.types_len);
    size_t blen = evbuffer_get_length(body);
    pg_put_message(up, 'P', evbuffer_pullup(body, -1), blen);
    evbuffer_free(body);
    free(sql);
}

static const minnec_outcome *mn_of(const pg_held *h) { return hold_binding_mn(&h->b); }

static void refuse_held(pg_session *s, pg_held *h, const char *sqlstate, const char *msg)
{
    pg_audit_statement(s, h->m.sql, h->m.len, h->d, h->m.type == 'Q', mn_of(h));
    pg_relay_refuse(s, h->m.type, h->m.total, sqlstate, msg);
}

static void on_outcome(void *arg, approval_outcome outcome, const approval_result *r)
{
    pg_session *s = arg;
    pg_held *h = s->held;
    h->wait = NULL;
    char msg[700];
    pg_audit_approval(s, approval_outcome_name(outcome), r->request_id, r->approver, r->reason, h->b.fingerprint);
    if (outcome == APPROVAL_APPROVED) {
        pg_session_log(s, LOG_LEVEL_INFO, "held statement approved by %s (request %s)",
                       r->approver ? r->approver : "a standing grant", r->request_id ? r->request_id : "(none)");
        forward_approved(s, h, r->row_cap);
        if (h->m.type == 'Q') {
            pg_audit_statement_approved(s, h->m.sql, h->m.len, h->d, true, r->request_id, mn_of(h));
            s->syncs_sent++;
        } else {
            /* A prepared statement is recorded at each Execute, like any other. */
            if (h->b.has_mn)
                pg_minnec_approved_parse(s, h->m.name);
            pg_policy_remember(s, h->m.name, h->m.sql, h->m.len, h->d);
            h->d = NULL;
        }
    } else {
        static const char *const sqlstates[] = {
            [HOLD_REFUSED_DENIED] = "42501", [HOLD_REFUSED_TIMEOUT] = "57014",
            [HOLD_REFUSED_UNAVAILABLE] = "58000", [HOLD_REFUSED_CANCELLED] = "57014"};
        hold_refusal_kind k = hold_refusal(outcome, r, h->b.subject.rule, msg, sizeof msg);
        refuse_held(s, h, sqlstates[k], msg);
    }
    resume(s);
}

bool pg_hold_start(pg_session *s, char type, uint32_t total, const char *name, const char *sql, size_t len,
                   const uint8_t *types, size_t types_len, sqlp_decision *d, const minnec_outcome *mn)
{
    approvals *a = pg_server_approvals(s->server);
    if (!a)
        return false;
    pg_held *h = calloc(1, sizeof *h);
    h->d = d;
    pg_stmt_copy_init(&h->m, type, total, name, sql, len, types, types_len);
    hold_binding_init(&h->b, d, mn, sql, len);
    hold_subject what = h->b.subject;
    s->held = h;
    conn_read_disable(s->client);
    hold_origin who = {s->user, s->client_addr, s->database, "postgres",
                       (uint32_t)pg_server_config(s->server)->approvals_wait_ms};
    approval_request req = hold_request(&who, &what, h->m.sql);
    pg_session_log(s, LOG_LEVEL_INFO, "statement held for approval (rule %s)", h->b.subject.rule ? h->b.subject.rule : "?");
    /* The callback never runs inline, so s->held is in place when it does. */
    h->wait = approvals_request(a, &req, on_outcome, s);
    return true;
}

void pg_hold_cancel(pg_session *s)
{
    pg_held *h = s->held;
    if (!h || !h->wait)
        return;
    approval_wait_cancel(h->wait);
    h->wait = NULL;
    pg_audit_approval(s, "withdrawn", NULL, NULL, "cancelled by the client", h->b.fingerprint);
    refuse_held(s, h, "57014", HOLD_CANCELLED_MESSAGE);
    resume(s);
}

void pg_hold_free(pg_session *s)
{
    pg_held *h = s->held;
    if (!h)
        return;
    if (h->wait)
        approval_wait_cancel(h->wait);
    s->held = NULL;
    held_free(h);
}
