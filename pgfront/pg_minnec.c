#include "pgfront/pg_minnec.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/approvals.h"
#include "gate/conn.h"
#include "gate/log.h"
#include "gate/min_necessary.h"
#include "gate/minnec_check.h"
#include "pgfront/pg_audit.h"
#include "pgfront/pg_hold.h"
#include "pgfront/pg_policy.h"
#include "pgfront/pg_session.h"

#define MAX_PLAN_BYTES (8u << 20) /* a plan bigger than this is "no estimate" */

typedef struct pg_minnec {
    pg_stmt_copy m;           /* the statement (type, total, text), copied */
    sqlp_decision *d;
    minnec_check chk;         /* outcome, pending checks, budget read, refusal */
    bool explaining;          /* our EXPLAIN's answer is still coming */
    struct evbuffer *plan;    /* its JSON text */
    bool plan_too_big;
    char explain_sqlstate[6]; /* set when EXPLAIN failed */
    char explain_error[240];  /* scrubbed */
} pg_minnec;

bool pg_minnec_pending(const pg_session *s) { return s->minnec != NULL; }

static const minnec_limits *limits_of(const pg_session *s) { return &s->role->minnec; }

static void gate_free(pg_minnec *g)
{
    minnec_check_clear(&g->chk);
    if (g->plan)
        evbuffer_free(g->plan);
    sqlp_decision_free(g->d);
    pg_stmt_copy_clear(&g->m);
    free(g);
}

void pg_minnec_free(pg_session *s)
{
    if (s->minnec)
        gate_free(s->minnec);
    s->minnec = NULL;
    free(s->budget_pass);
    s->budget_pass = NULL;
}

/* ---- the verdict ------------------------------------------------------------------ */

static void refuse_unapproved(pg_session *s, pg_minnec *g)
{
    char msg[600];
    snprintf(msg, sizeof msg,
             "statement held for approval (rule %s): %s; approvals are not enabled in this phigate, so it is "
             "refused: narrow it with a selective WHERE or a small LIMIT", g->chk.out.rule, g->chk.out.reason);
    pg_audit_statement(s, g->m.sql, g->m.len, g->d, g->m.type == 'Q', &g->chk.out);
    pg_relay_refuse(s, g->m.type, g->m.total, "42501", msg);
}

/* An Execute: run it, or refuse it with the reason (never held). */
static void act_execute(pg_session *s, pg_minnec *g)
{
    minnec_outcome *o = &g->chk.out;
    struct evbuffer *in = conn_input(s->client);
    struct evbuffer_ptr head;
    evbuffer_ptr_set(in, &head, 0, EVBUFFER_PTR_SET);
    if (!o->refused)
        minnec_outcome_judge(o);
    if (!o->refused && o->verdict == MINNEC_RUN) {
        pg_audit_execute(s, in, &head, g->m.total, o);
        evbuffer_remove_buffer(in, conn_output(s->upstream), g->m.total);
        return;
    }
    if (!o->refused) {
        size_t n = strlen(o->reason);
        snprintf(o->reason + n, sizeof o->reason - n,
                 "; an Execute of a prepared statement does not wait for approval: it is refused");
        o->refused = true;
        snprintf(g->chk.refuse_sqlstate, sizeof g->chk.refuse_sqlstate, "53400");
    }
    pg_audit_execute(s, in, &head, g->m.total, o);
    pg_relay_refuse(s, 'E', g->m.total, g->chk.refuse_sqlstate, o->reason);
}

/* Act on the outcome; the gate is already detached from the session. */
static void act(pg_session *s, pg_minnec *g)
{
    if (g->m.type == 'E') {
        act_execute(s, g);
        gate_free(g);
        return;
    }
    minnec_outcome *o = &g->chk.out;
    const pg_stmt_copy *m = &g->m;
    /* Our EXPLAIN took a batch since the decision: the statement's is the next one. */
    pg_policy_scrub_next_batch(s);
    if (!o->refused)
        minnec_outcome_judge(o);
    if (o->refused) {
        pg_audit_statement(s, m->sql, m->len, g->d, m->type == 'Q', o);
        pg_relay_refuse(s, m->type, m->total, g->chk.refuse_sqlstate, o->reason);
    } else if (o->verdict != MINNEC_RUN) {
        pg_session_log(s, LOG_LEVEL_INFO, "minimum necessary: %s", o->reason);
        if (pg_hold_start(s, m->type, m->total, m->name, m->sql, m->len, m->types, m->types_len, g->d, o))
            g->d = NULL; /* pg_hold owns it */
        else
            refuse_unapproved(s, g);
    } else {
        pg_policy_action action =
            pg_policy_apply(s, m->type, m->total, m->name, m->sql, m->len, m->types, m->types_len, g->d, o);
        g->d = NULL;
        pg_relay_after_policy(s, m->type, m->total, action);
    }
    gate_free(g);
}

/* All checks are in: from the loop (fire_ev), then read the client again. */
static void on_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    pg_session *s = arg;
    pg_minnec *g = s->minnec;
    s->minnec = NULL;
    act(s, g);
    if (s->state != PGC_ACTIVE)
        return;
    if (!pg_hold_waiting(s)) {
        if (!s->client_paused)
            conn_read_enable(s->client);
        pg_relay_client_data(s);
    }
    pg_session_flush(s);
}

static void start_budget(pg_session *s, pg_minnec *g)
{
    minnec_check_budget(&g->chk, pg_server_approvals(s->server), limits_of(s)->budget_window_ms, 0, "58000");
}

/* ---- estimate (EXPLAIN on the session's upstream) ------------------------------------------ */

/* Why no estimate can be had before the statement runs; NULL when one can. */
static const char *no_estimate_reason(const pg_session *s, const pg_minnec *g, minnec_plan_kind *kind)
{
    *kind = minnec_plan_kind_of(g->d);
    /* Declared parameter types mean $n the text may use where the engine saw none. */
    if (*kind == MINNEC_PLAN_OK && g->m.type == 'P' && g->m.types_len > 2)
        *kind = MINNEC_PLAN_PARAMS;
    if (*kind != MINNEC_PLAN_OK)
        return minnec_plan_kind_reason(*kind);
    if (g->m.type == 'P' && s->ext_batch_open)
        return "the Parse comes inside an extended-protocol batch, where phigate cannot run an EXPLAIN";
    return NULL;
}

static void start_explain(pg_session *s, pg_minnec *g)
{
    minnec_plan_kind kind;
    const char *why = no_estimate_reason(s, g, &kind);
    if (kind == MINNEC_PLAN_FETCH) {
        g->chk.out.facts.exempt = true;
        snprintf(g->chk.out.facts.no_estimate, sizeof g->chk.out.facts.no_estimate, "%s", why);
        return;
    }
    if (why) {
        snprintf(g->chk.out.facts.no_estimate, sizeof g->chk.out.facts.no_estimate, "%s", why);
        return;
    }
    char *q = minnec_explain_sql(g->d, SQLP_DIALECT_POSTGRES);
    if (!q) {
        snprintf(g->chk.out.facts.no_estimate, sizeof g->chk.out.facts.no_estimate, "out of memory");
        return;
    }
    pg_put_query(conn_output(s->upstream), q, strlen(q));
    free(q);
    s->syncs_sent++;
    s->explain_ordinal = s->syncs_sent;
    g->explaining = true;
    g->plan = evbuffer_new();
    minnec_check_add(&g->chk);
}

bool pg_minnec_owns_upstream(const pg_session *s)
{
    return s->explain_ordinal != 0 && s->explain_ordinal == s->syncs_done + 1;
}

/* DataRow of one text column: the plan's JSON (EXPLAIN may split it over rows). */
static void take_plan_row(pg_minnec *g, const uint8_t *body, size_t len)
{
    pg_cursor c;
    uint16_t n;
    int32_t vlen;
    const uint8_t *v;
    pg_cursor_init(&c, body, len);
    if (!pg_get_u16(&c, &n) || n != 1 || !pg_get_i32(&c, &vlen) || vlen < 0 ||
        !pg_get_bytes(&c, (size_t)vlen, &v)) {
        g->plan_too_big = true; /* not a plan we understand: no estimate */
        return;
    }
    if (evbuffer_get_length(g->plan) + (size_t)vlen > MAX_PLAN_BYTES) {
        g->plan_too_big = true;
        return;
    }
    evbuffer_add(g->plan, v, (size_t)vlen);
}

static void take_error(pg_minnec *g, const uint8_t *body, size_t len)
{
    pg_error_fields f;
    size_t clen, mlen;
    const char *code = NULL, *msg = NULL;
    if (pg_parse_error_fields(body, len, &f)) {
        code = pg_error_field_get(&f, 'C', &clen);
        msg = pg_error_field_get(&f, 'M', &mlen);
    }
    if (g->explain_sqlstate[0])
        return;
    snprintf(g->explain_sqlstate, sizeof g->explain_sqlstate, "%s", code && clen == 5 ? code : "XX000");
    /* The statement's own error text may quote its values: scrubbed like any PHI error. */
    char *clean = msg ? sqlp_scrub_message(msg) : NULL;
    snprintf(g->explain_error, sizeof g->explain_error, "%s", clean ? clean : "(no message)");
    free(clean);
}

void pg_minnec_upstream_message(pg_session *s, char type, struct evbuffer *in, uint32_t total)
{
    pg_minnec *g = s->minnec && s->minnec->explaining ? s->minnec : NULL;
    if (type == 'A' || type == 'S') {
        /* Asynchronous messages (NOTIFY, ParameterStatus) are the client's. */
        evbuffer_remove_buffer(in, conn_output(s->client), total);
        return;
    }
    const uint8_t *msg = evbuffer_pullup(in, total);
    if (g && type == 'D' && !g->plan_too_big)
        take_plan_row(g, msg + PG_HEADER_LEN, total - PG_HEADER_LEN);
    else if (g && type == 'E')
        take_error(g, msg + PG_HEADER_LEN, total - PG_HEADER_LEN);
    evbuffer_drain(in, total);
}

static void judge_plan(pg_session *s, pg_minnec *g)
{
    minnec_facts *f = &g->chk.out.facts;
    if (g->explain_sqlstate[0]) {
        /* The statement would fail the same way: nothing runs, the agent hears why.
         * A cancel that hit the EXPLAIN was meant for the statement: it ends it too. */
        if (limits_of(s)->estimate_row_limit >= 0 || strcmp(g->explain_sqlstate, "57014") == 0)
            minnec_check_refuse(&g->chk, 0, g->explain_sqlstate,
                                "phigate could not get the planner's estimate for this PHI read: %s", g->explain_error);
        snprintf(f->no_estimate, sizeof f->no_estimate, "EXPLAIN failed with SQLSTATE %s", g->explain_sqlstate);
        return;
    }
    size_t len = evbuffer_get_length(g->plan);
    char err[160];
    if (g->plan_too_big)
        snprintf(f->no_estimate, sizeof f->no_estimate, "EXPLAIN output too large or malformed");
    else if (minnec_pg_plan_rows((const char *)evbuffer_pullup(g->plan, -1), len, &f->estimate, err, sizeof err))
        f->estimated = true;
    else
        snprintf(f->no_estimate, sizeof f->no_estimate, "%s", err);
}

void pg_minnec_explain_done(pg_session *s)
{
    s->explain_ordinal = 0;
    pg_minnec *g = s->minnec;
    if (!g || !g->explaining)
        return;
    g->explaining = false;
    judge_plan(s, g);
    minnec_check_done(&g->chk);
}

static pg_minnec *gate_new(pg_session *s, char type, uint32_t total)
{
    pg_minnec *g = calloc(1, sizeof *g);
    g->m.type = type;
    g->m.total = total;
    minnec_check_init(&g->chk, pg_server_base(s->server), limits_of(s), s->user, on_fire, s);
    s->minnec = g;
    conn_read_disable(s->client);
    return g;
}

/* Nothing to wait for: decide now, from inside the relay's loop. */
static void act_now(pg_session *s, pg_minnec *g)
{
    s->minnec = NULL;
    act(s, g);
    if (!pg_hold_waiting(s) && !s->client_paused && s->state == PGC_ACTIVE)
        conn_read_enable(s->client);
}

/* ---- start ------------------------------------------------------------------------------ */

bool pg_minnec_start(pg_session *s, char type, uint32_t total, const char *name, const char *sql, size_t len,
                     const uint8_t *types, size_t types_len, sqlp_decision *d)
{
    const minnec_limits *l = limits_of(s);
    if (!minnec_enabled(l) || !minnec_phi_read(d))
        return false;
    pg_minnec *g = gate_new(s, type, total);
    pg_stmt_copy_init(&g->m, type, total, name, sql, len, types, types_len);
    g->d = d;
    start_explain(s, g);
    if (l->budget_rows > 0)
        start_budget(s, g);
    if (g->chk.pending == 0)
        act_now(s, g); /* no estimate possible, no budget */
    return true;
}

/* ---- Execute of a prepared PHI read --------------------------------------------------- */

bool pg_minnec_execute_needs_check(pg_session *s, struct evbuffer *in, const struct evbuffer_ptr *pos,
                                   uint32_t total)
{
    const char *stmt = NULL;
    if (limits_of(s)->budget_rows == 0)
        return false;
    const sqlp_decision *d = pg_audit_execute_decision(s, in, pos, total, &stmt);
    /* A portal or statement phigate lost track of (past its caps) is checked like a PHI read. */
    if (d && !minnec_phi_read(d))
        return false;
    if (s->budget_pass && stmt && strcmp(stmt, s->budget_pass) == 0) {
        /* Its Parse was held and approved: the approval covers this Execute. */
        free(s->budget_pass);
        s->budget_pass = NULL;
        return false;
    }
    return true;
}

void pg_minnec_approved_parse(pg_session *s, const char *name)
{
    free(s->budget_pass);
    s->budget_pass = strdup(name);
}

void pg_minnec_start_execute(pg_session *s, uint32_t total)
{
    pg_minnec *g = gate_new(s, 'E', total);
    /* Parameters are bound: no estimate; the budget decides. */
    g->chk.out.facts.exempt = true;
    snprintf(g->chk.out.facts.no_estimate, sizeof g->chk.out.facts.no_estimate, "Execute of a prepared statement");
    start_budget(s, g);
    if (g->chk.pending == 0)
        act_now(s, g);
}

/* ---- counting ------------------------------------------------------------------------- */

void pg_minnec_count_rows(pg_session *s, uint64_t rows)
{
    const minnec_limits *l = limits_of(s);
    approvals *a = pg_server_approvals(s->server);
    if (l->budget_rows == 0 || !a)
        return;
    approvals_budget_count(a, "pgfront", s->user, rows, l->budget_window_ms);
}
