#include "myfront/my_minnec.h"

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
#include "myfront/my_hold.h"
#include "myfront/my_policy.h"
#include "myfront/my_session.h"

#define MAX_PLAN_BYTES (8u << 20) /* a plan bigger than this is "no estimate" */
#define ER_REDIS_DOWN MY_ER_UNKNOWN_ERROR
#define ER_USER_LIMIT_REACHED 1226

/* Where the EXPLAIN's answer is: count, definitions, [EOF], rows, end. */
typedef enum { EX_HEAD, EX_COLUMNS, EX_COLUMNS_EOF, EX_ROWS } explain_stage;

typedef struct my_minnec {
    bool execute;             /* a COM_STMT_EXECUTE: budget only, run or refused */
    size_t wire;              /* the command's bytes at the head of the client's input */
    uint32_t npackets;        /* ...in this many packets (a text over 16 MB takes several) */
    char *sql;                /* its text, copied */
    size_t len;
    sqlp_decision *d;
    minnec_check chk;         /* outcome, pending checks, budget read, refusal */
    bool explaining;          /* our EXPLAIN's answer is still coming */
    explain_stage stage;
    uint64_t columns_left;
    struct evbuffer *plan;    /* its JSON text */
    bool plan_bad;            /* too big or not one text column */
    uint16_t explain_code;    /* set when EXPLAIN failed */
    char explain_sqlstate[6];
    char explain_error[240];  /* scrubbed */
} my_minnec;

bool my_minnec_pending(const my_session *s) { return s->minnec != NULL; }

static const minnec_limits *limits_of(const my_session *s) { return &s->role->minnec; }

static void gate_free(my_minnec *g)
{
    minnec_check_clear(&g->chk);
    if (g->plan)
        evbuffer_free(g->plan);
    if (!g->execute)
        sqlp_decision_free(g->d);
    free(g->sql);
    free(g);
}

void my_minnec_free(my_session *s)
{
    if (s->minnec)
        gate_free(s->minnec);
    s->minnec = NULL;
    free(s->exec_checked);
    s->exec_checked = NULL;
}

/* ---- the verdict ------------------------------------------------------------------ */

static void refuse(my_session *s, my_minnec *g)
{
    const minnec_check *c = &g->chk;
    my_relay_refuse_held(s, g->wire, g->sql, g->len, g->d, &c->out, c->refuse_code, c->refuse_sqlstate,
                         c->out.reason);
}

/* An EXECUTE: run it (the relay reads it again) or refuse it with the reason. */
static void act_execute(my_session *s, my_minnec *g)
{
    minnec_outcome *o = &g->chk.out;
    if (!o->refused)
        minnec_outcome_judge(o);
    if (!o->refused && o->verdict == MINNEC_RUN) {
        s->exec_checked = malloc(sizeof *o);
        *s->exec_checked = *o;
        return;
    }
    if (!o->refused) {
        size_t n = strlen(o->reason);
        snprintf(o->reason + n, sizeof o->reason - n,
                 "; an EXECUTE of a prepared statement does not wait for approval: it is refused");
        o->refused = true;
        g->chk.refuse_code = ER_USER_LIMIT_REACHED;
        snprintf(g->chk.refuse_sqlstate, sizeof g->chk.refuse_sqlstate, "42000");
    }
    refuse(s, g);
}

static void act(my_session *s, my_minnec *g)
{
    minnec_outcome *o = &g->chk.out;
    if (g->execute) {
        act_execute(s, g);
        gate_free(g);
        return;
    }
    /* The client's command (id 0) goes next: its answer starts at id 1 again. */
    s->useq = s->cseq = 1;
    s->rstate = MYR_IDLE;
    if (!o->refused)
        minnec_outcome_judge(o);
    if (o->refused) {
        refuse(s, g);
    } else if (o->verdict != MINNEC_RUN) {
        my_session_log(s, LOG_LEVEL_INFO, "minimum necessary: %s", o->reason);
        if (my_hold_start(s, g->wire, g->sql, g->len, g->d, o)) {
            g->d = NULL; /* my_hold owns it */
        } else {
            char msg[600];
            snprintf(msg, sizeof msg,
                     "statement held for approval (rule %s): %s; approvals are not enabled in this phigate, so it "
                     "is refused: narrow it with a selective WHERE or a small LIMIT", o->rule, o->reason);
            my_relay_refuse_held(s, g->wire, g->sql, g->len, g->d, o, MY_ER_TABLEACCESS_DENIED, "42000", msg);
        }
    } else {
        my_relay_run_checked(s, g->wire, g->npackets, g->sql, g->len, g->d, o);
        g->d = NULL;
    }
    gate_free(g);
}

/* All checks are in: from the loop (fire_ev), then the commands behind it. */
static void on_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    my_session *s = arg;
    my_minnec *g = s->minnec;
    s->minnec = NULL;
    if (s->state != MYC_ACTIVE) { /* failing while the checks ran: nothing to answer */
        gate_free(g);
        return;
    }
    act(s, g);
    my_relay_resume(s);
}

static void start_budget(my_session *s, my_minnec *g)
{
    minnec_check_budget(&g->chk, my_server_approvals(s->server), limits_of(s)->budget_window_ms, ER_REDIS_DOWN,
                        "HY000");
}

/* ---- estimate (EXPLAIN on the session's upstream) ------------------------------------------ */

static void start_explain(my_session *s, my_minnec *g)
{
    minnec_plan_kind kind = minnec_plan_kind_of(g->d);
    if (kind != MINNEC_PLAN_OK) {
        minnec_facts *f = &g->chk.out.facts;
        snprintf(f->no_estimate, sizeof f->no_estimate, "%s", minnec_plan_kind_reason(kind));
        return;
    }
    char *q = minnec_explain_sql(g->d, SQLP_DIALECT_MYSQL);
    size_t qlen = q ? strlen(q) : 0;
    if (!q || qlen + 1 >= MY_MAX_PACKET) {
        snprintf(g->chk.out.facts.no_estimate, sizeof g->chk.out.facts.no_estimate,
                 q ? "the statement is too long to explain" : "out of memory");
        free(q);
        return;
    }
    uint8_t *p = malloc(qlen + 1);
    p[0] = MY_COM_QUERY;
    memcpy(p + 1, q, qlen);
    my_put_packet(conn_output(s->upstream), 0, p, qlen + 1);
    free(p);
    free(q);
    s->useq = 1;
    s->rstate = MYR_EXPLAIN;
    g->explaining = true;
    g->stage = EX_HEAD;
    g->plan = evbuffer_new();
    minnec_check_add(&g->chk);
}

/* A row of one text column: a piece of the plan's JSON. */
static void take_plan_row(my_minnec *g, const uint8_t *p, size_t len)
{
    my_cursor c;
    const uint8_t *v;
    size_t vlen;
    my_cursor_init(&c, p, len);
    if (!my_get_lenenc_str(&c, &v, &vlen) || my_cursor_left(&c) != 0 ||
        evbuffer_get_length(g->plan) + vlen > MAX_PLAN_BYTES) {
        g->plan_bad = true;
        return;
    }
    evbuffer_add(g->plan, v, vlen);
}

static void take_error(my_minnec *g, const uint8_t *p, size_t len)
{
    my_err e;
    if (!my_parse_err(p, len, &e)) {
        e.code = MY_ER_UNKNOWN_ERROR;
        snprintf(e.sqlstate, sizeof e.sqlstate, "HY000");
        e.message = NULL;
        e.message_len = 0;
    }
    g->explain_code = e.code ? e.code : MY_ER_UNKNOWN_ERROR;
    snprintf(g->explain_sqlstate, sizeof g->explain_sqlstate, "%s", e.sqlstate);
    /* The statement's own error text may quote its values: scrubbed like any PHI error. */
    char *clean = e.message ? my_policy_scrub(e.message, e.message_len) : NULL;
    snprintf(g->explain_error, sizeof g->explain_error, "%s", clean ? clean : "(no message)");
    free(clean);
}

static void judge_plan(my_session *s, my_minnec *g)
{
    minnec_facts *f = &g->chk.out.facts;
    if (g->explain_sqlstate[0]) {
        /* The statement would fail the same way: nothing runs, the agent hears why. */
        if (limits_of(s)->estimate_row_limit >= 0)
            minnec_check_refuse(&g->chk, g->explain_code, g->explain_sqlstate,
                                "phigate could not get the server's row estimate for this PHI read: %s",
                                g->explain_error);
        snprintf(f->no_estimate, sizeof f->no_estimate, "EXPLAIN failed with SQLSTATE %s", g->explain_sqlstate);
        return;
    }
    char err[160];
    if (g->plan_bad) {
        snprintf(f->no_estimate, sizeof f->no_estimate, "EXPLAIN output too large or malformed");
    } else if (minnec_mysql_plan_rows((const char *)evbuffer_pullup(g->plan, -1), evbuffer_get_length(g->plan),
                                      &f->estimate, err, sizeof err)) {
        f->estimated = true;
        /* MariaDB's estimate ignores LIMIT: the statement returns no more than it. */
        int64_t cap = g->d->statements[0].row_limit;
        if (cap >= 0 && (uint64_t)cap < f->estimate)
            f->estimate = (uint64_t)cap;
    } else {
        snprintf(f->no_estimate, sizeof f->no_estimate, "%s", err);
    }
}

static void explain_done(my_session *s, my_minnec *g)
{
    g->explaining = false;
    s->rstate = MYR_IDLE;
    judge_plan(s, g);
    minnec_check_done(&g->chk);
}

void my_minnec_explain_packet(my_session *s, const uint8_t *p, size_t len, bool deprecate_eof)
{
    my_minnec *g = s->minnec;
    my_cursor c;
    uint64_t n = 0;
    if (p[0] == 0xff) {
        take_error(g, p, len);
        explain_done(s, g);
        return;
    }
    switch (g->stage) {
    case EX_HEAD:
        if (p[0] == 0x00) { /* an OK: no plan at all */
            g->plan_bad = true;
            explain_done(s, g);
            return;
        }
        my_cursor_init(&c, p, len);
        if (!my_get_lenenc(&c, &n) || my_cursor_left(&c) != 0 || n == 0 || n > 4096) {
            my_session_fail(s, MY_ER_UNKNOWN_ERROR, "HY000", "phigate: protocol violation from the upstream database");
            return;
        }
        g->plan_bad = n != 1; /* not the one JSON column expected: no estimate */
        g->columns_left = n;
        g->stage = EX_COLUMNS;
        return;
    case EX_COLUMNS:
        if (--g->columns_left == 0)
            g->stage = deprecate_eof ? EX_ROWS : EX_COLUMNS_EOF;
        return;
    case EX_COLUMNS_EOF:
        g->stage = EX_ROWS;
        return;
    case EX_ROWS:
        if (my_is_terminator(p[0], (uint32_t)len, deprecate_eof)) {
            explain_done(s, g);
            return;
        }
        if (!g->plan_bad)
            take_plan_row(g, p, len);
        return;
    }
}

/* ---- start ------------------------------------------------------------------------------ */

static my_minnec *gate_new(my_session *s, size_t wire, const char *sql, size_t len, sqlp_decision *d)
{
    my_minnec *g = calloc(1, sizeof *g);
    g->wire = wire;
    g->sql = strndup(sql, len);
    g->len = len;
    g->d = d;
    minnec_check_init(&g->chk, my_server_base(s->server), limits_of(s), s->user, on_fire, s);
    s->minnec = g;
    return g;
}

bool my_minnec_execute_start(my_session *s, size_t wire, my_stmt *st)
{
    if (limits_of(s)->budget_rows == 0 || !minnec_phi_read(st->d))
        return false;
    if (st->budget_pass) {
        /* Its PREPARE was held and approved: the approval covers this EXECUTE. */
        st->budget_pass = false;
        return false;
    }
    /* Borrowed: the statement stays while its EXECUTE waits (nothing behind it is read). */
    my_minnec *g = gate_new(s, wire, st->text, strlen(st->text), st->d);
    g->execute = true;
    /* Parameters are bound: no estimate; the budget decides. */
    g->chk.out.facts.exempt = true;
    snprintf(g->chk.out.facts.no_estimate, sizeof g->chk.out.facts.no_estimate, "EXECUTE of a prepared statement");
    start_budget(s, g);
    minnec_check_fire_if_idle(&g->chk);
    return true;
}

bool my_minnec_start(my_session *s, size_t wire, uint32_t npackets, const char *sql, size_t len, sqlp_decision *d)
{
    const minnec_limits *l = limits_of(s);
    if (!minnec_enabled(l) || !minnec_phi_read(d))
        return false;
    my_minnec *g = gate_new(s, wire, sql, len, d);
    g->npackets = npackets;
    start_explain(s, g);
    if (l->budget_rows > 0)
        start_budget(s, g);
    minnec_check_fire_if_idle(&g->chk); /* no estimate possible, no budget: decide from the loop */
    return true;
}

/* ---- counting ------------------------------------------------------------------------- */

void my_minnec_count_rows(my_session *s, uint64_t rows)
{
    const minnec_limits *l = limits_of(s);
    approvals *a = my_server_approvals(s->server);
    if (l->budget_rows == 0 || !a || rows == 0)
        return;
    approvals_budget_count(a, "myfront", s->user, rows, l->budget_window_ms);
}
