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
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gate/audit_log.h"
#include "gate/conn.h"
#include "gate/log.h"
#include "gate/min_necessary.h"
#include "pgfront/pg_minnec.h"
#include "pgfront/pg_policy.h"
#include "pgfront/pg_session.h"

#define MAX_PORTALS 64
#define PARAM_TOKEN_LEN 32 /* "hmac:" + 16 hex + NUL fits */

typedef enum { TRACK_QUERY, TRACK_EXECUTE } track_kind;

typedef struct tracker {
    struct tracker *next;
    track_kind kind;
    uint64_t stmt;
    uint64_t ordinal;
    uint64_t started_ns;
    uint64_t rows, bytes;
    bool phi_rows; /* a PHI read: its rows count against the identity's budget */
    EVP_MD_CTX *db, *agent;
    char sqlstate[6];
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

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static const char *tls_version(pg_session *s)
{
    SSL *ssl = s->client ? conn_ssl(s->client) : NULL;
    return ssl ? SSL_get_version(ssl) : NULL;
}

/* ---- durability ---------------------------------------------------------------- */

static void on_durable(void *arg, bool ok)
{
    pg_session *s = arg;
    s->audit_pending--;
    if (s->state == PGC_DEAD) {
        if (s->audit_pending == 0)
            pg_session_requeue_free(s);
        return;
    }
    if (!ok) {
        const char *why = audit_log_failed_reason(log_of(s));
        pg_session_log(s, LOG_LEVEL_ERROR, "audit record not written: %s", why ? why : "out of memory");
        /* The result is withheld: without its record it must not reach the agent. */
        pg_session_fail(s, "58030", "phigate could not write its audit log; the result is withheld",
                        "the administrator must fix the audit log (see phigate's log)");
        return;
    }
    if (s->audit_pending == 0 && s->state == PGC_ACTIVE) {
        pg_relay_audit_released(s);
        pg_session_flush(s);
    }
}

static void append_waited(pg_session *s, audit_rec *rec)
{
    s->audit_pending++;
    audit_log_append(log_of(s), rec, on_durable, s);
}

const char *pg_audit_unavailable(pg_session *s)
{
    return log_of(s) ? audit_log_failed_reason(log_of(s)) : NULL;
}

/* ---- session events ------------------------------------------------------------- */

void pg_audit_connect(pg_session *s)
{
    if (!log_of(s))
        return;
    s->opened_ns = now_ns();
    audit_log_next_session(log_of(s), s->audit_session);
    audit_connect_info c = {s->audit_session, "postgres", s->client_addr, tls_version(s), s->user,
                            s->scram_method, s->database, s->role->name};
    audit_log_append(log_of(s), audit_rec_connect(&c), NULL, NULL);
}

void pg_audit_auth_failure(pg_session *s, const char *method, const char *reason)
{
    if (!log_of(s))
        return;
    char session[AUDIT_SESSION_LEN];
    audit_log_next_session(log_of(s), session);
    audit_auth_failure_info a = {session, "postgres", s->client_addr, tls_version(s), s->user,
                                 method, reason};
    audit_log_append(log_of(s), audit_rec_auth_failure(&a), NULL, NULL);
}

void pg_audit_disconnect(pg_session *s, const char *why)
{
    if (!log_of(s) || !s->audit_session[0])
        return;
    uint64_t dur = (now_ns() - s->opened_ns) / 1000;
    audit_log_append(log_of(s), audit_rec_disconnect(s->audit_session, why, s->statements, dur), NULL, NULL);
}

/* ---- statements ------------------------------------------------------------------ */

static void push_tracker(pg_session *s, track_kind kind, uint64_t stmt, bool phi_rows)
{
    pg_audit_state *st = state_of(s);
    tracker *t = calloc(1, sizeof *t);
    t->kind = kind;
    t->phi_rows = phi_rows;
    t->stmt = stmt;
    t->ordinal = s->syncs_sent + 1;
    t->started_ns = now_ns();
    t->db = EVP_MD_CTX_new();
    t->agent = EVP_MD_CTX_new();
    EVP_DigestInit_ex(t->db, EVP_sha256(), NULL);
    EVP_DigestInit_ex(t->agent, EVP_sha256(), NULL);
    if (st->tail)
        st->tail->next = t;
    else
        st->head = t;
    st->tail = t;
}

static void column_facts(const sqlp_decision *d, audit_column *cols, size_t max, size_t *n)
{
    *n = 0;
    for (size_t i = 0; d && i < d->nstatements; i++) {
        const sqlp_statement *st = &d->statements[i];
        for (size_t c = 0; c < st->ncolumns && *n < max; c++)
            cols[(*n)++] = (audit_column){st->columns[c].name, st->columns[c].mask};
    }
}

#define MAX_TABLES 32

/* Base tables the output columns derive from ("schema.table.column" lineage),
 * for evidence queries by table (phigatectl audit export --table). */
static size_t lineage_tables(const sqlp_decision *d, char names[MAX_TABLES][128])
{
    size_t n = 0;
    for (size_t i = 0; d && i < d->nstatements; i++) {
        for (size_t c = 0; c < d->statements[i].ncolumns; c++) {
            const char *p = d->statements[i].columns[c].sources;
            while (p && *p) {
                const char *end = strchr(p, ',');
                size_t len = end ? (size_t)(end - p) : strlen(p);
                const char *dot2 = memrchr(p, '.', len);
                const char *dot1 = dot2 ? memrchr(p, '.', (size_t)(dot2 - p)) : NULL;
                if (dot1 && dot2 && n < MAX_TABLES && (size_t)(dot2 - dot1 - 1) < 128) {
                    char t[128];
                    snprintf(t, sizeof t, "%.*s", (int)(dot2 - dot1 - 1), dot1 + 1);
                    size_t k;
                    for (k = 0; k < n && strcmp(names[k], t) != 0; k++)
                        ;
                    if (k == n)
                        memcpy(names[n++], t, sizeof t);
                }
                p = end ? end + 1 : NULL;
            }
        }
    }
    return n;
}

static void statement_record(pg_session *s, const char *sql, size_t len, const sqlp_decision *d,
                             const audit_param *params, size_t nparams, const char *approval_id,
                             const minnec_outcome *mn)
{
    audit_column cols[64];
    size_t ncols;
    column_facts(d, cols, 64, &ncols);
    char table_names[MAX_TABLES][128];
    const char *tables[MAX_TABLES];
    size_t ntables = lineage_tables(d, table_names);
    for (size_t i = 0; i < ntables; i++)
        tables[i] = table_names[i];
    /* A held statement that an approval released runs like an allowed one. */
    /* ...and one the minimum-necessary checks held or refused did not run. */
    bool stopped = !approval_id && mn && mn->limits && (mn->refused || mn->verdict != MINNEC_RUN);
    bool sent = !stopped && (d->verdict == SQLP_ALLOW || d->verdict == SQLP_REWRITE || approval_id);
    const char *upstream = sent ? d->upstream_sql : NULL;
    bool rewritten = upstream && (strlen(upstream) != len || memcmp(upstream, sql, len) != 0);
    const char *decision = approval_id ? (rewritten ? "rewrite" : "allow") : sqlp_verdict_name(d->verdict);
    if (stopped)
        decision = mn->refused ? "deny" : "hold";
    audit_statement_info info = {
        .session = s->audit_session,
        .stmt = s->statements,
        .received = sql,
        .received_len = len,
        .upstream = upstream,
        .upstream_len = upstream ? strlen(upstream) : 0,
        .params = params,
        .nparams = nparams,
        .decision = decision,
        .statement_class = d->nstatements ? sqlp_class_name(d->statements[0].stmt_class) : NULL,
        .rule = stopped ? mn->rule : d->rule,
        .reason = stopped ? mn->reason : d->reason,
        .tables = tables,
        .ntables = ntables,
        .columns = cols,
        .ncolumns = ncols,
        .approval_id = approval_id,
        .min_necessary = mn,
    };
    append_waited(s, audit_rec_statement(&info));
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
    s->statements++;
    statement_record(s, sql, len, d, NULL, 0, approval_id, mn);
    /* A Query's result (or refusal) ends at its ReadyForQuery; a refused Parse's at its error. */
    push_tracker(s, query ? TRACK_QUERY : TRACK_EXECUTE, s->statements, minnec_phi_read(d));
}

void pg_audit_approval(pg_session *s, const char *event, const char *request_id, const char *approver,
                       const char *reason, const char *fingerprint)
{
    if (!log_of(s))
        return;
    audit_approval_info a = {s->audit_session, s->statements + 1, request_id, event, approver, reason, fingerprint};
    audit_log_append(log_of(s), audit_rec_approval(&a), NULL, NULL);
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

/* Parameters are keyed-hashed with the role's token key: equal values compare
 * equal in the evidence, no value is ever written. */
static void param_token(pg_session *s, const uint8_t *v, size_t len, char out[PARAM_TOKEN_LEN])
{
    uint8_t mac[32];
    unsigned int maclen = sizeof mac;
    const sqlp_role *role = &s->role->policy;
    HMAC(EVP_sha256(), role->token_key, sizeof role->token_key, v, len, mac, &maclen);
    strcpy(out, "hmac:");
    for (int i = 0; i < 8; i++)
        snprintf(out + 5 + 2 * i, 3, "%02x", mac[i]);
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
            param_token(s, len > 0 ? v : (const uint8_t *)"", (size_t)(len > 0 ? len : 0), p->params[i]);
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
    s->statements++;
    if (d) {
        statement_record(s, text, strlen(text), d, params, np, NULL, mn);
    } else {
        /* Unknown portal: the server will fail it; still one record per Execute. */
        static const char unknown[] = "(execute of an unknown portal)";
        audit_statement_info info = {.session = s->audit_session, .stmt = s->statements, .received = unknown,
                                     .received_len = sizeof unknown - 1, .decision = "allow"};
        append_waited(s, audit_rec_statement(&info));
    }
    /* A portal phigate lost track of (past MAX_PORTALS) may be anything: its rows
     * count against a budget, so forgetting cannot be a way around it. */
    push_tracker(s, TRACK_EXECUTE, s->statements,
                 d ? minnec_phi_read(d) : s->role->minnec.budget_rows > 0);
}

/* ---- results ------------------------------------------------------------------------ */

static void finish(pg_session *s, tracker *t, bool executed)
{
    uint8_t db[32], agent[32];
    unsigned int l;
    EVP_DigestFinal_ex(t->db, db, &l);
    EVP_DigestFinal_ex(t->agent, agent, &l);
    audit_result_info r = {
        .session = s->audit_session,
        .stmt = t->stmt,
        .rows = t->rows,
        .bytes = t->bytes,
        .agent_sha256 = agent,
        .db_sha256 = db,
        .duration_us = (now_ns() - t->started_ns) / 1000,
        .sqlstate = t->sqlstate[0] ? t->sqlstate : NULL,
        .error = executed ? NULL : "not executed: an earlier message of its batch failed",
    };
    audit_log_append(log_of(s), audit_rec_result(&r), NULL, NULL);
    if (t->phi_rows && t->rows)
        pg_minnec_count_rows(s, t->rows);
}

static void pop_head(pg_audit_state *st)
{
    tracker *t = st->head;
    st->head = t->next;
    if (!st->head)
        st->tail = NULL;
    EVP_MD_CTX_free(t->db);
    EVP_MD_CTX_free(t->agent);
    free(t);
}

static void hash_range(EVP_MD_CTX *ctx, struct evbuffer *b, const struct evbuffer_ptr *pos, size_t len)
{
    struct evbuffer_iovec v[8];
    struct evbuffer_ptr at = *pos;
    while (len > 0) {
        int n = evbuffer_peek(b, (ev_ssize_t)len, &at, v, 8);
        size_t done = 0;
        for (int i = 0; i < n && i < 8 && done < len; i++) {
            size_t take = v[i].iov_len < len - done ? v[i].iov_len : len - done;
            EVP_DigestUpdate(ctx, v[i].iov_base, take);
            done += take;
        }
        if (done == 0)
            return;
        len -= done;
        evbuffer_ptr_set(b, &at, done, EVBUFFER_PTR_ADD);
    }
}

/* Bookkeeping of one database message for the head tracker; true if it ends it. */
static bool note_db_message(pg_session *s, tracker *t, char type, struct evbuffer *in,
                            const struct evbuffer_ptr *pos, uint32_t total)
{
    if (type == 'D')
        t->rows++;
    if (type == 'E' && !t->sqlstate[0]) {
        char body[256];
        size_t want = total - PG_HEADER_LEN < sizeof body ? total - PG_HEADER_LEN : sizeof body;
        struct evbuffer_ptr at = *pos;
        evbuffer_ptr_set(in, &at, PG_HEADER_LEN, EVBUFFER_PTR_ADD);
        evbuffer_copyout_from(in, &at, body, want);
        /* Fields are code byte + NUL-terminated text; find 'C'. */
        for (size_t i = 0; i + 6 < want;) {
            if (body[i] == 'C') {
                memcpy(t->sqlstate, body + i + 1, 5);
                t->sqlstate[5] = '\0';
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
        finish(s, st->head, st->head->kind == TRACK_QUERY || st->head->rows || st->head->sqlstate[0]);
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
        hash_range(t->db, in, pos, total);
        hash_range(t->agent, in, pos, total);
        t->bytes += total;
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
    hash_range(t->db, in, &pos, total);
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
    hash_range(t->agent, out, &pos, len);
    t->bytes += len;
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
        snprintf(t->sqlstate, sizeof t->sqlstate, "%s", sqlstate);
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
