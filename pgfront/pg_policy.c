/*
 * Policy on the PostgreSQL wire: see pg_policy.h.
 *
 * Decisions are taken once per Query and once per Parse (the engine caches by
 * text and role, so repeated statements cost a lookup).  Bind/Execute of a
 * prepared statement need no new decision: the statement text was decided and,
 * if needed, rewritten at Parse.
 */
#include "pgfront/pg_policy.h"

#include <event2/buffer.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/conn.h"
#include "gate/log.h"
#include "pgfront/pg_audit.h"
#include "pgfront/pg_hold.h"
#include "pgfront/pg_minnec.h"
#include "pgfront/pg_session.h"

#define MAX_TRACKED_STATEMENTS 1024

/* ---- engine loading ----------------------------------------------------------- */

static const char *libpq_sslmode(int tls_mode)
{
    static const char *const modes[] = {"disable", "prefer", "require", "verify-ca", "verify-full"};
    return modes[tls_mode];
}

static bool feed_catalog(sqlp_catalog *cat, PGresult *res, char *err, size_t errlen)
{
    int nf = PQnfields(res);
    const char *fields[32];
    if (nf > 32) {
        snprintf(err, errlen, "catalog query returned %d columns", nf);
        return false;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        for (int f = 0; f < nf; f++)
            fields[f] = PQgetisnull(res, r, f) ? NULL : PQgetvalue(res, r, f);
        if (!sqlp_catalog_add_pg_row(cat, fields, (size_t)nf)) {
            snprintf(err, errlen, "catalog row %d was not accepted", r + 1);
            return false;
        }
    }
    return true;
}

sqlp_engine *pg_policy_load_engine(const config *cfg, const cfg_upstream *up, char *err, size_t errlen)
{
    char port[16], timeout[16];
    snprintf(port, sizeof port, "%d", up->port);
    snprintf(timeout, sizeof timeout, "%d", (up->connect_timeout_ms + 999) / 1000);
    const char *keys[] = {"host", "port", "dbname", "user", "password", "sslmode", "sslrootcert",
                          "connect_timeout", "application_name", NULL};
    const char *vals[] = {up->host, port, up->database, up->user, up->password ? up->password : "",
                          libpq_sslmode(up->tls_mode), up->tls_ca_file ? up->tls_ca_file : "", timeout,
                          "phigate-catalog", NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 0);
    if (PQstatus(pg) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot read the catalog of upstream %s: %s", up->name, PQerrorMessage(pg));
        PQfinish(pg);
        return NULL;
    }
    PGresult *res = PQexec(pg, sqlp_catalog_pg_query());
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "catalog query failed on upstream %s: %s", up->name, PQresultErrorMessage(res));
        PQclear(res);
        PQfinish(pg);
        return NULL;
    }
    sqlp_catalog *cat = sqlp_catalog_new();
    bool ok = feed_catalog(cat, res, err, errlen);
    PQclear(res);
    PQfinish(pg);
    if (!ok) {
        sqlp_catalog_free(cat);
        return NULL;
    }
    return sqlp_engine_from_catalog(cat, cfg->masking_rules_dir, err, errlen);
}

/* ---- statement bookkeeping --------------------------------------------------- */

typedef struct tracked_statement {
    char *name;
    bool phi;
    char *text;          /* as the agent sent it, for the audit record of each Execute */
    sqlp_decision *d;    /* our reference to its decision */
} tracked_statement;

typedef struct pg_policy_state {
    tracked_statement *stmts;
    size_t nstmts, cap;
    bool overflow;     /* too many named statements: treat every Bind as PHI */
    bool unnamed_phi;  /* the unnamed statement touches PHI */
    tracked_statement unnamed;
    /* RowDescription of the result being relayed: masks for raw PHI columns */
    char **col_mask;   /* per column, NULL when the column is fine */
    bool *col_binary;
    uint16_t ncols;
    bool masking_rows;
} pg_policy_state;

static pg_policy_state *state_of(pg_session *s)
{
    if (!s->policy)
        s->policy = calloc(1, sizeof(pg_policy_state));
    return s->policy;
}

static void clear_row_masks(pg_policy_state *st)
{
    for (uint16_t i = 0; i < st->ncols; i++)
        free(st->col_mask[i]);
    free(st->col_mask);
    free(st->col_binary);
    st->col_mask = NULL;
    st->col_binary = NULL;
    st->ncols = 0;
    st->masking_rows = false;
}

static void free_sql_session(pg_session *s);

void pg_policy_session_free(pg_session *s)
{
    pg_policy_state *st = s->policy;
    free_sql_session(s);
    if (!st)
        return;
    for (size_t i = 0; i < st->nstmts; i++) {
        free(st->stmts[i].name);
        free(st->stmts[i].text);
        sqlp_decision_free(st->stmts[i].d);
    }
    free(st->stmts);
    free(st->unnamed.text);
    sqlp_decision_free(st->unnamed.d);
    clear_row_masks(st);
    free(st);
    s->policy = NULL;
}

static void free_sql_session(pg_session *s)
{
    if (s->sqlsession)
        sqlp_session_free(s->sqlsession);
    s->sqlsession = NULL;
}

static tracked_statement *find_statement(pg_policy_state *st, const char *name)
{
    for (size_t i = 0; i < st->nstmts; i++)
        if (strcmp(st->stmts[i].name, name) == 0)
            return &st->stmts[i];
    return NULL;
}

static void set_tracked(tracked_statement *t, const char *sql, size_t len, sqlp_decision *d)
{
    free(t->text);
    sqlp_decision_free(t->d);
    t->text = strndup(sql, len);
    t->d = d;
    t->phi = d->touches_phi;
}

/* Takes over the reference to d. */
static void remember_statement(pg_session *s, const char *name, const char *sql, size_t len, sqlp_decision *d)
{
    pg_policy_state *st = state_of(s);
    if (!*name) {
        st->unnamed_phi = d->touches_phi;
        set_tracked(&st->unnamed, sql, len, d);
        return;
    }
    tracked_statement *t = find_statement(st, name);
    if (!t && st->nstmts == MAX_TRACKED_STATEMENTS) {
        st->overflow = true;
        sqlp_decision_free(d);
        return;
    }
    if (!t) {
        if (st->nstmts == st->cap) {
            st->cap = st->cap ? st->cap * 2 : 8;
            st->stmts = realloc(st->stmts, st->cap * sizeof *st->stmts);
        }
        t = &st->stmts[st->nstmts++];
        *t = (tracked_statement){strdup(name), false, NULL, NULL};
    }
    set_tracked(t, sql, len, d);
}

void pg_policy_remember(pg_session *s, const char *name, const char *sql, size_t len, sqlp_decision *d)
{
    remember_statement(s, name, sql, len, d);
}

const sqlp_decision *pg_policy_prepared(pg_session *s, const char *name, const char **text)
{
    pg_policy_state *st = state_of(s);
    tracked_statement *t = *name ? find_statement(st, name) : &st->unnamed;
    if (!t || !t->d)
        return NULL;
    *text = t->text;
    return t->d;
}

void pg_stmt_copy_init(pg_stmt_copy *m, char type, uint32_t total, const char *name, const char *sql, size_t len,
                       const uint8_t *types, size_t types_len)
{
    memset(m, 0, sizeof *m);
    m->type = type;
    m->total = total;
    m->name = strdup(name ? name : "");
    m->sql = strndup(sql, len);
    m->len = len;
    if (types_len) {
        m->types = malloc(types_len);
        memcpy(m->types, types, types_len);
        m->types_len = types_len;
    }
}

void pg_stmt_copy_clear(pg_stmt_copy *m)
{
    free(m->name), free(m->sql), free(m->types);
    memset(m, 0, sizeof *m);
}

/* Errors and notices answering anything up to this batch are scrubbed. */
static void scrub_through(pg_session *s, uint64_t ordinal)
{
    if (ordinal > s->scrub_through)
        s->scrub_through = ordinal;
}

void pg_policy_scrub_next_batch(pg_session *s)
{
    scrub_through(s, s->syncs_sent + 1);
}

void pg_policy_note_bind(pg_session *s, struct evbuffer *in, const struct evbuffer_ptr *at, uint32_t total)
{
    pg_policy_state *st = state_of(s);
    /* Portal and statement names lead the message; NAMEDATALEN keeps them short. */
    uint8_t head[PG_HEADER_LEN + 256];
    size_t want = total < sizeof head ? total : sizeof head;
    struct evbuffer_ptr pos = *at;
    evbuffer_copyout_from(in, &pos, head, want);
    pg_cursor c;
    const char *portal, *stmt;
    pg_cursor_init(&c, head + PG_HEADER_LEN, want - PG_HEADER_LEN);
    if (!pg_get_cstring(&c, &portal, NULL) || !pg_get_cstring(&c, &stmt, NULL)) {
        scrub_through(s, s->syncs_sent + 1); /* the server will reject it; scrub to be safe */
        return;
    }
    tracked_statement *t = *stmt ? find_statement(st, stmt) : NULL;
    bool phi = *stmt ? (st->overflow || !t || t->phi) : st->unnamed_phi;
    if (phi)
        scrub_through(s, s->syncs_sent + 1);
}

/* ---- decisions on Query and Parse ------------------------------------------- */

static void refuse(pg_session *s, char type, uint32_t total, const sqlp_decision *d)
{
    char msg[600];
    if (d->verdict == SQLP_HOLD)
        snprintf(msg, sizeof msg,
                 "statement held for approval (rule %s): %s; approvals are not enabled in this phigate, "
                 "so it is refused: narrow it with a selective WHERE or a small LIMIT",
                 d->rule ? d->rule : "?", d->reason ? d->reason : "");
    else
        snprintf(msg, sizeof msg, "statement refused by phigate (rule %s): %s", d->rule ? d->rule : "?",
                 d->reason ? d->reason : "");
    pg_relay_refuse(s, type, total, "42501", msg);
}

/* Query body: the text, NUL-terminated, and nothing after it (as the server insists). */
static bool query_text(const uint8_t *msg, uint32_t total, const char **sql, size_t *len)
{
    pg_cursor c;
    pg_cursor_init(&c, msg + PG_HEADER_LEN, total - PG_HEADER_LEN);
    return pg_get_cstring(&c, sql, len) && pg_cursor_left(&c) == 0;
}

static void rewrite_query(pg_session *s, uint32_t total, const char *sql)
{
    evbuffer_drain(conn_input(s->client), total);
    pg_put_query(conn_output(s->upstream), sql, strlen(sql));
}

/* Parse body: name, text, int16 count, count x int32 type OIDs. */
static void rewrite_parse(pg_session *s, uint32_t total, const char *name, const char *sql, const uint8_t *types,
                          size_t types_len)
{
    struct evbuffer *body = evbuffer_new();
    evbuffer_add(body, name, strlen(name) + 1);
    evbuffer_add(body, sql, strlen(sql) + 1);
    evbuffer_add(body, types, types_len);
    size_t blen = evbuffer_get_length(body);
    pg_put_message(conn_output(s->upstream), 'P', evbuffer_pullup(body, -1), blen);
    evbuffer_free(body);
    evbuffer_drain(conn_input(s->client), total);
}

pg_policy_action pg_policy_client_message(pg_session *s, char type, uint32_t total)
{
    struct evbuffer *in = conn_input(s->client);
    uint8_t *msg = evbuffer_pullup(in, total);
    const char *name = "", *sql;
    size_t len;
    const uint8_t *types = NULL;
    size_t types_len = 0;
    if (type == 'Q') {
        if (!query_text(msg, total, &sql, &len)) {
            pg_session_fail(s, "08P01", "malformed Query message", NULL);
            return PG_POLICY_BROKEN;
        }
    } else {
        pg_cursor c;
        pg_cursor_init(&c, msg + PG_HEADER_LEN, total - PG_HEADER_LEN);
        uint16_t n;
        if (!pg_get_cstring(&c, &name, NULL) || !pg_get_cstring(&c, &sql, &len) || !pg_get_u16(&c, &n) ||
            pg_cursor_left(&c) != (size_t)n * 4) {
            pg_session_fail(s, "08P01", "malformed Parse message", NULL);
            return PG_POLICY_BROKEN;
        }
        types = c.data + c.pos - 2;
        types_len = 2 + (size_t)n * 4;
    }
    const char *down = pg_audit_unavailable(s);
    if (down) {
        /* Fail closed: no statement runs that the audit log cannot record. */
        char msg[400];
        snprintf(msg, sizeof msg, "phigate refuses statements: %s", down);
        pg_relay_refuse(s, type, total, "58030", msg);
        return PG_POLICY_REFUSED;
    }
    sqlp_engine *eng = s->engine;
    if (!s->sqlsession)
        s->sqlsession = sqlp_session_new();
    sqlp_context ctx = {s->user, &s->role->policy, s->up->name, NULL, SQLP_DIALECT_POSTGRES,
                        s->sqlsession};
    sqlp_decision *d = sqlp_decide(eng, &ctx, sql, len);
    /* Which batch answers this statement: a Query is its own, a Parse the next Sync. */
    if (d->touches_phi)
        scrub_through(s, s->syncs_sent + 1);
    if (d->verdict == SQLP_HOLD && pg_hold_start(s, type, total, name, sql, len, types, types_len, d, NULL))
        return PG_POLICY_HELD; /* recorded when the outcome is known */
    if (pg_minnec_start(s, type, total, name, sql, len, types, types_len, d))
        return PG_POLICY_HELD; /* estimate / budget checks first; pg_minnec applies it */
    return pg_policy_apply(s, type, total, name, sql, len, types, types_len, d, NULL);
}

pg_policy_action pg_policy_apply(pg_session *s, char type, uint32_t total, const char *name, const char *sql,
                                 size_t len, const uint8_t *types, size_t types_len, sqlp_decision *d,
                                 const minnec_outcome *mn)
{
    bool refused = d->verdict != SQLP_ALLOW && d->verdict != SQLP_REWRITE;
    /* Queries are recorded now; a Parse at each Execute, or now if it is refused. */
    if (type == 'Q' || refused)
        pg_audit_statement(s, sql, len, d, type == 'Q', mn);
    /* Kept before the rewrite drains the message that sql points into. */
    bool kept = type == 'P' && !refused;
    if (kept)
        remember_statement(s, name, sql, len, d);
    pg_policy_action action;
    switch (d->verdict) {
    case SQLP_ALLOW:
        action = PG_POLICY_FORWARD;
        break;
    case SQLP_REWRITE:
        pg_session_log(s, LOG_LEVEL_DEBUG, "statement rewritten to mask PHI");
        if (type == 'Q')
            rewrite_query(s, total, d->upstream_sql);
        else
            rewrite_parse(s, total, name, d->upstream_sql, types, types_len);
        action = PG_POLICY_REPLACED;
        break;
    default:
        refuse(s, type, total, d);
        action = PG_POLICY_REFUSED;
        break;
    }
    if (!kept)
        sqlp_decision_free(d);
    return action;
}

/* ---- the way back --------------------------------------------------------------- */

bool pg_policy_server_needs_look(const pg_session *s, char type)
{
    const pg_policy_state *st = s->policy;
    switch (type) {
    case 'T':
        return true;
    case 'D':
        return st && st->masking_rows;
    case 'C':
        return st && st->ncols;
    case 'E':
    case 'N':
        return s->syncs_done < s->scrub_through;
    default:
        return false;
    }
}

/* RowDescription: a column whose table OID and attnum name a base PHI column
 * arrived unmasked (the rewrite missed it): mask it in the stream and log the gap. */
static void inspect_row_description(pg_session *s, const uint8_t *body, size_t len)
{
    pg_policy_state *st = state_of(s);
    clear_row_masks(st);
    if (s->role->policy.unmasked)
        return;
    pg_cursor c;
    uint16_t n;
    pg_cursor_init(&c, body, len);
    if (!pg_get_u16(&c, &n))
        return;
    st->col_mask = calloc(n ? n : 1, sizeof(char *));
    st->col_binary = calloc(n ? n : 1, sizeof(bool));
    st->ncols = n;
    const sqlp_catalog *cat = sqlp_engine_catalog(s->engine);
    for (uint16_t i = 0; i < n; i++) {
        const char *name;
        uint32_t oid, typoid, typmod;
        uint16_t attnum, typlen, format;
        if (!pg_get_cstring(&c, &name, NULL) || !pg_get_u32(&c, &oid) || !pg_get_u16(&c, &attnum) ||
            !pg_get_u32(&c, &typoid) || !pg_get_u16(&c, &typlen) || !pg_get_u32(&c, &typmod) ||
            !pg_get_u16(&c, &format))
            break;
        sqlp_phi_column phi;
        if (oid != 0 && sqlp_catalog_phi_by_oid(cat, oid, (int16_t)attnum, &phi) && phi.hipaa_class) {
            st->col_mask[i] = strdup(phi.mask ? phi.mask : "redact");
            st->col_binary[i] = format == 1;
            st->masking_rows = true;
            pg_session_log(s, LOG_LEVEL_WARN,
                           "defence in depth: column %u (table oid %u attnum %u, class %s) arrived unmasked; "
                           "masked in the stream", (unsigned)i + 1, oid, (unsigned)attnum, phi.hipaa_class);
        }
    }
}

static void put_be32(struct evbuffer *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    evbuffer_add(b, x, 4);
}

/* DataRow with the flagged columns masked (binary values become NULL: a masked
 * form of a binary date or number does not exist). */
static bool mask_data_row(pg_session *s, const uint8_t *body, size_t len, struct evbuffer *out)
{
    pg_policy_state *st = state_of(s);
    pg_cursor c;
    uint16_t n;
    pg_cursor_init(&c, body, len);
    if (!pg_get_u16(&c, &n) || n != st->ncols)
        return false;
    struct evbuffer *row = evbuffer_new();
    uint8_t cnt[2] = {(uint8_t)(n >> 8), (uint8_t)n};
    evbuffer_add(row, cnt, 2);
    for (uint16_t i = 0; i < n; i++) {
        int32_t vlen;
        const uint8_t *v = NULL;
        if (!pg_get_i32(&c, &vlen) || (vlen > 0 && !pg_get_bytes(&c, (size_t)vlen, &v)) || vlen < -1) {
            evbuffer_free(row);
            return false;
        }
        if (!st->col_mask[i] || vlen < 0) {
            put_be32(row, (uint32_t)vlen);
            if (vlen > 0)
                evbuffer_add(row, v, (size_t)vlen);
            continue;
        }
        char *masked = st->col_binary[i] ? NULL
                       : sqlp_mask_value(st->col_mask[i], (const char *)v, (size_t)vlen, &s->role->policy);
        if (!masked) {
            put_be32(row, 0xffffffffu);
            continue;
        }
        put_be32(row, (uint32_t)strlen(masked));
        evbuffer_add(row, masked, strlen(masked));
        free(masked);
    }
    bool whole = pg_cursor_left(&c) == 0;
    size_t rlen = evbuffer_get_length(row);
    if (whole)
        pg_put_message(out, 'D', evbuffer_pullup(row, -1), rlen);
    evbuffer_free(row);
    return whole;
}

/* ErrorResponse / NoticeResponse: keep SQLSTATE and shape, scrub values from text fields. */
static bool scrub_error(char type, const uint8_t *body, size_t len, struct evbuffer *out)
{
    pg_error_fields f;
    if (!pg_parse_error_fields(body, len, &f))
        return false;
    struct evbuffer *b = evbuffer_new();
    for (size_t i = 0; i < f.n; i++) {
        char code = f.f[i].code;
        bool text = strchr("MDHW", code) != NULL;
        char *clean = text ? sqlp_scrub_message(f.f[i].value) : NULL;
        const char *v = clean ? clean : f.f[i].value;
        if (text && !clean)
            v = "[scrubbed]";
        if (code == 'q') /* internal query text may carry literals: drop it */
            v = "[scrubbed]";
        evbuffer_add(b, &code, 1);
        evbuffer_add(b, v, strlen(v) + 1);
        free(clean);
    }
    evbuffer_add(b, "", 1);
    size_t blen = evbuffer_get_length(b);
    pg_put_message(out, type, evbuffer_pullup(b, -1), blen);
    evbuffer_free(b);
    return true;
}

void pg_policy_server_message(pg_session *s, char type, uint32_t total, struct evbuffer *in, struct evbuffer *out)
{
    uint8_t *msg = evbuffer_pullup(in, total);
    const uint8_t *body = msg + PG_HEADER_LEN;
    size_t len = total - PG_HEADER_LEN;
    bool ok = true;
    switch (type) {
    case 'T':
        inspect_row_description(s, body, len);
        evbuffer_remove_buffer(in, out, total);
        return;
    case 'C':
        clear_row_masks(state_of(s));
        evbuffer_remove_buffer(in, out, total);
        return;
    case 'D':
        ok = mask_data_row(s, body, len, out);
        break;
    case 'E':
    case 'N':
        ok = scrub_error(type, body, len, out);
        break;
    default:
        evbuffer_remove_buffer(in, out, total);
        return;
    }
    evbuffer_drain(in, total);
    if (!ok)
        pg_session_fail(s, "08P01", "malformed message from the upstream database", NULL);
}
