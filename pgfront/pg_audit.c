/*
 * Audit records of the PostgreSQL front: see pg_audit.h.
 *
 * Results are matched to statements with a FIFO of trackers, in the order the
 * server answers: a Query's result ends at its ReadyForQuery, an Execute's at
 * its CommandComplete / EmptyQueryResponse / PortalSuspended / ErrorResponse;
 * Executes the server skipped after an error in their batch end at the batch's
 * ReadyForQuery as "not executed".
 */
#include "pgfront/pg_audit.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/audit_session.h"
#include "gate/conn.h"
#include "gate/log.h"
#include "gate/min_necessary.h"
#include "pgfront/pg_minnec.h"
#include "pgfront/pg_policy.h"
#include "pgfront/pg_session.h"

#define MAX_PORTALS 64
#define PARAM_TOKEN_LEN AUDIT_PARAM_TOKEN_LEN

typedef enum { TRACK_QUERY, TRACK_EXECUTE } track_kind;

typedef struct tracker {
    struct tracker *next;
    track_kind kind;
    uint64_t ordinal;
    audit_result r;
    bool phi_rows; /* a PHI read: its rows count against the identity's budget */
} tracker;

typedef struct portal {
    char *name;
    char *statement;
    size_t nparams;
    char (*params)[PARAM_TOKEN_LEN];
    bool *null;
} portal;

typedef struct pg_audit_state {
    tracker *head, *tail;
    portal portals[MAX_PORTALS];
    size_t nportals;
    bool complete_after_agent; /* the last db message ends the head tracker */
} pg_audit_state;

static audit_log *log_of(pg_session *s) { return pg_server_audit(s->server); }

static pg_audit_state *state_of(pg_session *s)
{
    if (!s->audit)
        s->audit = calloc(1, sizeof(pg_audit_state));
    return s->audit;
}

static const char *tls_version(pg_session *s)
{
    SSL *ssl = s->client ? conn_ssl(s->client) : NULL;
    return ssl ? SSL_get_version(ssl) : NULL;
}

/* ---- session events ------------------------------------------------- */

void pg_audit_init(pg_session *s)
{
    front_session_audit(&s->fs, &s->aud, "postgres");
}

const char *pg_audit_unavailable(pg_session *s) { return audit_session_unavailable(&s->aud); }

void pg_audit_connect(pg_session *s)
{
    audit_session_connect(&s->aud, s->client_addr, tls_version(s), s->user, s->scram_method, s->database,
                          s->role->name);
}

void pg_audit_auth_failure(pg_session *s, const char *method, const char *reason)
{
    audit_session_auth_failure(&s->aud, s->client_addr, tls_version(s), s->user, method, reason);
}

void pg_audit_disconnect(pg_session *s, const char *why) { audit_session_disconnect(&s->aud, why); }

/* ---- statements ------------------------------------------------------------------ */

static void push_tracker(pg_session *s, track_kind kind, bool phi_rows)
{
    pg_audit_state *st = state_of(s);
    tracker *t = calloc(1, sizeof *t);
    t->kind = kind;
    t->phi_rows = phi_rows;
    t->ordinal = s->syncs_sent + 1;
    audit_result_begin(&t->r, s->aud.statements);
    if (st->tail)
        st->tail->next = t;
    else
        st->head = t;
    st->tail = t;
}

void pg_audit_statement(pg_session *s, const char *sql, size_t len, const sqlp_decision *d, bool query,
                        const minnec_outcome *mn)
{
    pg_audit_statement_approved(s, sql, len, d, query, NULL, mn);
}

void pg_audit_statement_approved(pg_session *s, const char *sql, size_t len, const sqlp_decision *d, bool query,
                                 const char *approval_id, const minnec_outcome *mn)
{
    if (!log_of(s))
        return;
    audit_session_statement(&s->aud, sql, len, d, NULL, 0, approval_id, mn);
    /* A Query's result (or refusal) ends at its ReadyForQuery; a refused Parse's at its error. */
    push_tracker(s, query ? TRACK_QUERY : TRACK_EXECUTE, minnec_phi_read(d));
}

void pg_audit_approval(pg_session *s, const char *event, const char *request_id, const char *approver,
                       const char *reason, const char *fingerprint)
{
    audit_session_approval(&s->aud, event, request_id, approver, reason, fingerprint);
}

static portal *find_portal(pg_audit_state *st, const char *name)
{
    for (size_t i = 0; i < st->nportals; i++)
        if (strcmp(st->portals[i].name, name) == 0)
            return &st->portals[i];
    return NULL;
}

static void clear_portal(portal *p)
{
    free(p->name), free(p->statement), free(p->params), free(p->null);
    memset(p, 0, sizeof *p);
}

static portal *portal_slot(pg_audit_state *st, const char *name)
{
    portal *p = find_portal(st, name);
    if (p) {
        clear_portal(p);
    } else if (st->nportals < MAX_PORTALS) {
        p = &st->portals[st->nportals++];
    } else {
        /* Portals beyond the cap reuse the last slot: their params are then reported as unknown. */
        p = &st->portals[MAX_PORTALS - 1];
        clear_portal(p);
    }
    p->name = strdup(name);
    return p;
}

void pg_audit_bind(pg_session *s, struct evbuffer *in, const struct evbuffer_ptr *pos, uint32_t total)
{
    if (!log_of(s))
        return;
    pg_audit_state *st = state_of(s);
    uint8_t *msg = malloc(total);
    struct evbuffer_ptr at = *pos;
    evbuffer_copyout_from(in, &at, msg, total);
    pg_cursor c;
    const char *pname, *sname;
    uint16_t nfmt, nparams;
    pg_cursor_init(&c, msg + PG_HEADER_LEN, total - PG_HEADER_LEN);
    if (!pg_get_cstring(&c, &pname, NULL) || !pg_get_cstring(&c, &sname, NULL) || !pg_get_u16(&c, &nfmt) ||
        !pg_get_bytes(&c, (size_t)nfmt * 2, &(const uint8_t *){0}) || !pg_get_u16(&c, &nparams)) {
        free(msg);
        return; /* the server rejects it; the Execute that follows is recorded without parameters */
    }
    portal *p = portal_slot(st, pname);
    p->statement = strdup(sname);
    p->params = calloc(nparams ? nparams : 1, PARAM_TOKEN_LEN);
    p->null = calloc(nparams ? nparams : 1, sizeof(bool));
    for (uint16_t i = 0; i < nparams; i++) {
        int32_t len;
        const uint8_t *v;
        if (!pg_get_i32(&c, &len) || len < -1 || (len > 0 && !pg_get_bytes(&c, (size_t)len, &v)))
            break;
        p->nparams = i + 1;
        if (len < 0)
            p->null[i] = true;
        else
            audit_param_token(&s->role->policy, len > 0 ? v : (const uint8_t *)"", (size_t)(len > 0 ? len : 0),
                              p->params[i]);
    }
    free(msg);
}

/* The portal an Execute names, and the decision and text of its statement. */
static portal *execute_portal(pg_session *s, struct evbuffer *in, const struct evbuffer_ptr *pos, uint32_t total,
                              const sqlp_decision **d, const char **text)
{
    pg_audit_state *st = state_of(s);
    char head[PG_HEADER_LEN + 128];
    size_t want = total < sizeof head ? total : sizeof head;
    struct evbuffer_ptr at = *pos;
    evbuffer_copyout_from(in, &at, head, want);
    pg_cursor c;
    const char *pname = "";
    pg_cursor_init(&c, head + PG_HEADER_LEN, want - PG_HEADER_LEN);
    if (!pg_get_cstring(&c, &pname, NULL))
        pname = "";
    portal *p = find_portal(st, pname);
    *text = NULL;
    *d = p ? pg_policy_prepared(s, p->statement, text) : NULL;
    return p;
}

const sqlp_decision *pg_audit_execute_decision(pg_session *s, struct evbuffer *in, const struct evbuffer_ptr *pos,
                                               uint32_t total, const char **statement)
{
    const sqlp_decision *d = NULL;
    const char *text;
    portal *p = log_of(s) ? execute_portal(s, in, pos, total, &d, &text) : NULL;
    *statement = p ? p->statement : NULL;
    return d;
}

void pg_audit_execute(pg_session *s, struct evbuffer *in, const struct evbuffer_ptr *pos, uint32_t total,
                      const minnec_outcome *mn)
{
    if (!log_of(s))
        return;
    const char *text = NULL;
    const sqlp_decision *d;
    portal *p = execute_portal(s, in, pos, total, &d, &text);
    audit_param params[256];
    size_t np = 0;
    for (size_t i = 0; p && i < p->nparams && i < 256; i++, np++)
        params[i] = p->null[i] ? (audit_param){NULL, 0} : (audit_param){p->params[i], strlen(p->params[i])};
    if (d) {
        audit_session_statement(&s->aud, text, strlen(text), d, params, np, NULL, mn);
    } else {
        /* Unknown portal: the server will fail it; still one record per Execute. */
        static const char unknown[] = "(execute of an unknown portal)";
        audit_statement_info info = {.received = unknown, .received_len = sizeof unknown - 1, .decision = "allow"};
        audit_session_statement_info(&s->aud, &info);
    }
    /* A portal phigate lost track of (past MAX_PORTALS) may be anything: its rows
     * count against a budget, so forgetting cannot be a way around it. */
    push_tracker(s, TRACK_EXECUTE, d ? minnec_phi_read(d) : s->role->minnec.budget_rows > 0);
}

/* ---- results ------------------------------------------------------------------------ */

static void finish(pg_session *s, tracker *t, bool executed)
{
    audit_result_finish(&s->aud, &t->r, executed ? NULL : "not executed: an earlier message of its batch failed");
    if (t->phi_rows && t->r.rows)
        pg_minnec_count_rows(s, t->r.rows);
}

static void pop_head(pg_audit_state *st)
{
    tracker *t = st->head;
    st->head = t->next;
    if (!st->head)
        st->tail = NULL;
    audit_result_free(&t->r);
    free(t);
}

/* Bookkeeping of one database message for the head tracker; true if it ends it. */
static bool note_db_message(pg_session *s, tracker *t, char type, struct evbuffer *in,
                            const struct evbuffer_ptr *pos, uint32_t total)
{
    if (type == 'D')
        t->r.rows++;
    if (type == 'E' && !t->r.sqlstate[0]) {
        char body[256];
        size_t want = total - PG_HEADER_LEN < sizeof body ? total - PG_HEADER_LEN : sizeof body;
        struct evbuffer_ptr at = *pos;
        evbuffer_ptr_set(in, &at, PG_HEADER_LEN, EVBUFFER_PTR_ADD);
        evbuffer_copyout_from(in, &at, body, want);
        /* Fields are code byte + NUL-terminated text; find 'C'. */
        for (size_t i = 0; i + 6 < want;) {
            if (body[i] == 'C') {
                char code[6];
                memcpy(code, body + i + 1, 5);
                code[5] = '\0';
                audit_result_error(&t->r, code, NULL, 0);
                break;
            }
            const char *nul = memchr(body + i + 1, '\0', want - i - 1);
            if (!nul || body[i] == '\0')
                break;
            i = (size_t)(nul - body) + 1;
        }
    }
    (void)s;
    return t->kind == TRACK_EXECUTE && strchr("CIsE", type);
}

/* ReadyForQuery ends its batch: Queries complete, skipped Executes are reported. */
static void end_batch(pg_session *s, uint64_t ordinal)
{
    pg_audit_state *st = state_of(s);
    while (st->head && st->head->ordinal <= ordinal) {
        finish(s, st->head, st->head->kind == TRACK_QUERY || st->head->r.rows || st->head->r.sqlstate[0]);
        pop_head(st);
    }
}

void pg_audit_server_message(pg_session *s, char type, struct evbuffer *in, const struct evbuffer_ptr *pos,
                             uint32_t total)
{
    if (!log_of(s))
        return;
    pg_audit_state *st = state_of(s);
    tracker *t = st->head;
    if (t && t->ordinal == s->syncs_done + 1) {
        audit_result_db(&t->r, in, pos, total);
        audit_result_agent(&t->r, in, pos, total);
        if (note_db_message(s, t, type, in, pos, total)) {
            finish(s, t, true);
            pop_head(st);
        }
    }
    if (type == 'Z')
        end_batch(s, s->syncs_done + 1);
}

void pg_audit_db_bytes(pg_session *s, char type, struct evbuffer *in, uint32_t total)
{
    if (!log_of(s))
        return;
    pg_audit_state *st = state_of(s);
    tracker *t = st->head;
    st->complete_after_agent = false;
    if (!t || t->ordinal != s->syncs_done + 1)
        return;
    struct evbuffer_ptr pos;
    evbuffer_ptr_set(in, &pos, 0, EVBUFFER_PTR_SET);
    audit_result_db(&t->r, in, &pos, total);
    st->complete_after_agent = note_db_message(s, t, type, in, &pos, total);
}

void pg_audit_agent_bytes(pg_session *s, struct evbuffer *out, size_t from)
{
    if (!log_of(s))
        return;
    pg_audit_state *st = state_of(s);
    tracker *t = st->head;
    if (!t || t->ordinal != s->syncs_done + 1)
        return;
    size_t len = evbuffer_get_length(out) - from;
    struct evbuffer_ptr pos;
    evbuffer_ptr_set(out, &pos, from, EVBUFFER_PTR_SET);
    audit_result_agent(&t->r, out, &pos, len);
    if (st->complete_after_agent) {
        st->complete_after_agent = false;
        finish(s, t, true);
        pop_head(st);
    }
}

void pg_audit_agent_sqlstate(pg_session *s, const char *sqlstate)
{
    if (!log_of(s))
        return;
    tracker *t = state_of(s)->head;
    if (t && t->ordinal == s->syncs_done + 1)
        snprintf(t->r.sqlstate, sizeof t->r.sqlstate, "%s", sqlstate);
}

void pg_audit_session_free(pg_session *s)
{
    pg_audit_state *st = s->audit;
    if (!st)
        return;
    while (st->head)
        pop_head(st);
    for (size_t i = 0; i < st->nportals; i++)
        clear_portal(&st->portals[i]);
    free(st);
    s->audit = NULL;
}
