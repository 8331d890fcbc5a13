#include "myfront/my_hold.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/approvals.h"
#include "gate/hold.h"
#include "gate/log.h"
#include "gate/min_necessary.h"
#include "myfront/my_audit.h"
#include "myfront/my_session.h"

#define ER_QUERY_INTERRUPTED 1317

typedef struct my_held {
    approval_wait *wait;
    sqlp_decision *d;
    size_t wire;   /* bytes of the held command at the head of the client's input */
    char *sql;     /* as the agent sent it */
    size_t len;
    hold_binding b; /* what an approval is bound to (and the minimum-necessary outcome that held it) */
} my_held;

static const minnec_outcome *mn_of(const my_held *h) { return hold_binding_mn(&h->b); }

bool my_hold_waiting(const my_session *s) { return s->held != NULL; }

static void held_free(my_held *h)
{
    sqlp_decision_free(h->d);
    free(h->sql);
    hold_binding_clear(&h->b);
    free(h);
}

/* MySQL errors for the shared refusal kinds. */
static void refusal_code(hold_refusal_kind k, uint16_t *code, const char **sqlstate)
{
    switch (k) {
    case HOLD_REFUSED_DENIED:
        *code = MY_ER_TABLEACCESS_DENIED, *sqlstate = "42000";
        return;
    case HOLD_REFUSED_TIMEOUT:
    case HOLD_REFUSED_CANCELLED:
        *code = ER_QUERY_INTERRUPTED, *sqlstate = "70100";
        return;
    case HOLD_REFUSED_UNAVAILABLE:
        break;
    }
    *code = MY_ER_UNKNOWN_ERROR, *sqlstate = "HY000";
}

static void on_outcome(void *arg, approval_outcome outcome, const approval_result *r)
{
    my_session *s = arg;
    my_held *h = s->held;
    s->held = NULL;
    h->wait = NULL;
    my_audit_approval(s, approval_outcome_name(outcome), r->request_id, r->approver, r->reason, h->b.fingerprint);
    if (s->state != MYC_ACTIVE) { /* failed while it waited: nothing to answer */
        held_free(h);
        return;
    }
    if (outcome == APPROVAL_APPROVED) {
        my_session_log(s, LOG_LEVEL_INFO, "held statement approved by %s (request %s)",
                       r->approver ? r->approver : "a standing grant", r->request_id ? r->request_id : "(none)");
        char *sql = hold_capped_sql(h->d, r->row_cap);
        my_relay_run_approved(s, h->wire, h->sql, h->len, h->d, sql, r->request_id, mn_of(h));
        free(sql);
        h->d = NULL; /* the relay took it */
    } else {
        char msg[700];
        uint16_t code;
        const char *sqlstate;
        refusal_code(hold_refusal(outcome, r, h->b.subject.rule, msg, sizeof msg), &code, &sqlstate);
        my_relay_refuse_held(s, h->wire, h->sql, h->len, h->d, mn_of(h), code, sqlstate, msg);
    }
    held_free(h);
    my_relay_resume(s);
}

bool my_hold_start(my_session *s, size_t wire, const char *sql, size_t len, sqlp_decision *d,
                   const minnec_outcome *mn)
{
    approvals *a = my_server_approvals(s->server);
    if (!a)
        return false;
    my_held *h = calloc(1, sizeof *h);
    h->d = d;
    h->wire = wire;
    h->sql = strndup(sql, len);
    h->len = len;
    hold_binding_init(&h->b, d, mn, sql, len);
    hold_subject what = h->b.subject;
    s->held = h;
    hold_origin who = {s->user, s->client_addr, s->up->name, "mysql",
                       (uint32_t)my_server_config(s->server)->approvals_wait_ms};
    approval_request req = hold_request(&who, &what, h->sql);
    my_session_log(s, LOG_LEVEL_INFO, "statement held for approval (rule %s)", h->b.subject.rule ? h->b.subject.rule : "?");
    /* The callback never runs inline, so s->held is in place when it does. */
    h->wait = approvals_request(a, &req, on_outcome, s);
    if (!h->wait) {
        s->held = NULL;
        h->d = NULL; /* the caller refuses with its decision */
        held_free(h);
        return false;
    }
    return true;
}

void my_hold_withdraw(my_session *s, const char *why)
{
    my_held *h = s->held;
    if (!h)
        return;
    s->held = NULL;
    char id[APPROVALS_ID_LEN + 1];
    snprintf(id, sizeof id, "%s", approval_wait_id(h->wait));
    approval_wait_cancel(h->wait); /* withdrawn in Redis */
    my_audit_approval(s, "withdrawn", id, NULL, why, h->b.fingerprint);
    held_free(h);
}
