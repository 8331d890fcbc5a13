/*
 * Policy on the MySQL wire: see my_policy.h.
 *
 * Decisions are taken once per COM_QUERY and once per COM_STMT_PREPARE (the
 * engine caches by text and role); COM_STMT_EXECUTE needs none, the text was
 * decided and if need be rewritten when it was prepared.
 */
#include "myfront/my_policy.h"

#include <event2/buffer.h>
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gate/conn.h"
#include "gate/log.h"
#include "myfront/my_session.h"

#define NAME_MAX_LEN 256

/* ---- engine loading --------------------------------------------------------------- */

/* Modes under which the server reads a statement differently from MySQL's
 * default grammar that the engine parses with. */
const char *my_policy_sql_mode_unsafe(const char *mode, size_t len)
{
    static const char *const unsafe[] = {"ANSI_QUOTES", "NO_BACKSLASH_ESCAPES", "PIPES_AS_CONCAT", "IGNORE_SPACE",
                                         "ORACLE", "MSSQL", "DB2", "POSTGRESQL", "MAXDB", "ANSI", NULL};
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && mode[j] != ',')
            j++;
        for (const char *const *u = unsafe; *u; u++)
            if (j - i == strlen(*u) && strncasecmp(mode + i, *u, j - i) == 0)
                return *u;
        i = j + 1;
    }
    return NULL;
}

bool my_policy_charset_unsafe(const char *name, size_t len)
{
    static const char *const unsafe[] = {"big5", "sjis", "cp932", "gbk", "gb18030", NULL};
    for (const char *const *u = unsafe; *u; u++)
        if (len == strlen(*u) && strncasecmp(name, *u, len) == 0)
            return true;
    return false;
}

static bool query_rows(MYSQL *m, const char *sql, MYSQL_RES **res, const cfg_upstream *up, char *err,
                       size_t errlen)
{
    if (mysql_query(m, sql) != 0 || !(*res = mysql_store_result(m))) {
        snprintf(err, errlen, "catalog query failed on upstream %s: %s", up->name, mysql_error(m));
        return false;
    }
    return true;
}

/* Every column the upstream user can see: the schema is the database. */
static bool feed_columns(MYSQL *m, sqlp_catalog *cat, const cfg_upstream *up, char *err, size_t errlen)
{
    MYSQL_RES *res;
    if (!query_rows(m,
                    "SELECT table_schema, table_name, column_name, ordinal_position, data_type "
                    "FROM information_schema.columns ORDER BY table_schema, table_name, ordinal_position",
                    &res, up, err, errlen))
        return false;
    MYSQL_ROW row;
    size_t n = 0;
    bool ok = true;
    while (ok && (row = mysql_fetch_row(res))) {
        if (!row[0] || !row[1] || !row[2] || !row[3])
            continue;
        if (!sqlp_catalog_add_column(cat, row[0], row[1], row[2], atoi(row[3]), 0, row[4] ? row[4] : "")) {
            snprintf(err, errlen, "catalog column %s.%s.%s was not accepted", row[0], row[1], row[2]);
            ok = false;
        }
        n++;
    }
    mysql_free_result(res);
    if (ok && n == 0) {
        snprintf(err, errlen, "upstream %s: information_schema.columns shows no columns to phigate's user", up->name);
        ok = false;
    }
    return ok;
}

static void feed_views(MYSQL *m, sqlp_catalog *cat, const cfg_upstream *up)
{
    MYSQL_RES *res;
    char err[256];
    if (!query_rows(m,
                    "SELECT table_schema, table_name, view_definition FROM information_schema.views "
                    "WHERE table_schema NOT IN ('information_schema', 'performance_schema', 'mysql', 'sys')",
                    &res, up, err, sizeof err)) {
        log_warn("%s", err);
        return;
    }
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(res)))
        if (row[0] && row[1] && row[2] && !sqlp_catalog_add_view(cat, row[0], row[1], row[2]))
            log_warn("upstream %s: view %s.%s not taken into the catalog (statements over it are judged without "
                     "its definition)", up->name, row[0], row[1]);
    mysql_free_result(res);
}

/* The server's own default sql_mode must parse like the engine does. */
static bool check_sql_mode(MYSQL *m, const cfg_upstream *up, char *err, size_t errlen)
{
    MYSQL_RES *res;
    if (!query_rows(m, "SELECT @@GLOBAL.sql_mode", &res, up, err, errlen))
        return false;
    MYSQL_ROW row = mysql_fetch_row(res);
    const char *bad = row && row[0] ? my_policy_sql_mode_unsafe(row[0], strlen(row[0])) : NULL;
    if (bad)
        snprintf(err, errlen, "upstream %s: its default sql_mode contains %s, which changes how statements parse; "
                 "phigate follows MySQL's default grammar: remove %s from the server's sql_mode", up->name, bad, bad);
    mysql_free_result(res);
    return bad == NULL;
}

static void set_tls(MYSQL *m, const cfg_upstream *up)
{
    if (up->tls_mode == UPSTREAM_TLS_DISABLE)
        return;
    my_bool yes = 1;
    mysql_ssl_set(m, NULL, NULL, up->tls_ca_file, NULL, NULL);
    if (up->tls_mode >= UPSTREAM_TLS_REQUIRE)
        mysql_options(m, MYSQL_OPT_SSL_ENFORCE, &yes);
    if (up->tls_mode == UPSTREAM_TLS_VERIFY_FULL)
        mysql_options(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &yes);
}

void my_policy_library_init(void)
{
    /* Not thread-safe itself: mysql_init on the workers would call it otherwise. */
    mysql_library_init(0, NULL, NULL);
}

sqlp_engine *my_policy_load_engine(const config *cfg, const cfg_upstream *up, char *version, size_t vlen,
                                   char *err, size_t errlen)
{
    MYSQL *m = mysql_init(NULL);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    unsigned int timeout = (unsigned int)(up->connect_timeout_ms + 999) / 1000;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_optionsv(m, MYSQL_OPT_CONNECT_ATTR_ADD, "program_name", "phigate-catalog");
    set_tls(m, up);
    if (!mysql_real_connect(m, up->host, up->user, up->password ? up->password : "", up->database,
                            (unsigned int)up->port, NULL, 0)) {
        snprintf(err, errlen, "cannot read the catalog of MySQL upstream %s: %s", up->name, mysql_error(m));
        mysql_close(m);
        mysql_thread_end();
        return NULL;
    }
    snprintf(version, vlen, "%s", mysql_get_server_info(m));
    sqlp_catalog *cat = sqlp_catalog_new();
    bool ok = cat && check_sql_mode(m, up, err, errlen) && feed_columns(m, cat, up, err, errlen);
    if (ok)
        feed_views(m, cat, up);
    mysql_close(m);
    mysql_thread_end(); /* this worker thread's libmariadb state */
    if (!ok) {
        sqlp_catalog_free(cat);
        return NULL;
    }
    return sqlp_engine_from_catalog(cat, cfg->masking_rules_dir, err, errlen);
}

/* ---- per-session state ------------------------------------------------------------- */

typedef struct my_policy_state {
    my_stmt *stmts;          /* sorted by id */
    size_t nstmts, cap;
    char *pending_text;      /* the PREPARE in flight */
    sqlp_decision *pending_d;
    char *pending_approval;
    /* the result set being relayed: masks for raw PHI columns */
    char **col_mask;         /* per column, NULL when the column is fine */
    uint8_t *col_type;
    uint32_t ncols;
    bool masking;
} my_policy_state;

static my_policy_state *state_of(my_session *s)
{
    if (!s->policy)
        s->policy = calloc(1, sizeof(my_policy_state));
    return s->policy;
}

sqlp_decision *my_policy_decide(my_session *s, const char *sql, size_t len)
{
    if (!s->sqlsession)
        s->sqlsession = sqlp_session_new();
    /* Unqualified names resolve in the session's database, MySQL's one-entry
     * "search path"; quoted so any name reads as one entry. */
    char path[2 * NAME_MAX_LEN + 3];
    size_t n = 0;
    path[n++] = '"';
    for (const char *p = s->up->database; *p && n < sizeof path - 3; p++) {
        if (*p == '"')
            path[n++] = '"';
        path[n++] = *p;
    }
    path[n++] = '"';
    path[n] = '\0';
    sqlp_context ctx = {s->user, &s->role->policy, s->up->database, path, SQLP_DIALECT_MYSQL,
                        s->sqlsession};
    return sqlp_decide(s->engine, &ctx, sql, len);
}

/* ---- prepared statements ---------------------------------------------------------- */

static void clear_stmt(my_stmt *st)
{
    free(st->text);
    free(st->types);
    free(st->long_data);
    free(st->approval_id);
    sqlp_decision_free(st->d);
}

static size_t find_slot(const my_policy_state *ps, uint32_t id)
{
    size_t lo = 0, hi = ps->nstmts;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ps->stmts[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

my_stmt *my_policy_stmt(my_session *s, uint32_t id)
{
    my_policy_state *ps = state_of(s);
    size_t i = find_slot(ps, id);
    return i < ps->nstmts && ps->stmts[i].id == id ? &ps->stmts[i] : NULL;
}

bool my_policy_statement_table_full(my_session *s) { return state_of(s)->nstmts >= MY_MAX_STATEMENTS; }

static void drop_pending(my_policy_state *ps)
{
    free(ps->pending_text);
    free(ps->pending_approval);
    sqlp_decision_free(ps->pending_d);
    ps->pending_text = NULL;
    ps->pending_approval = NULL;
    ps->pending_d = NULL;
}

void my_policy_prepare_sent(my_session *s, const char *text, size_t len, sqlp_decision *d, const char *approval_id)
{
    my_policy_state *ps = state_of(s);
    drop_pending(ps);
    ps->pending_text = strndup(text, len);
    ps->pending_d = d;
    ps->pending_approval = approval_id ? strdup(approval_id) : NULL;
}

void my_policy_prepare_failed(my_session *s) { drop_pending(state_of(s)); }

bool my_policy_prepare_ok(my_session *s, const my_prepare_ok *ok)
{
    my_policy_state *ps = state_of(s);
    if (!ps->pending_d || ps->nstmts >= MY_MAX_STATEMENTS)
        return false;
    size_t i = find_slot(ps, ok->statement_id);
    if (i < ps->nstmts && ps->stmts[i].id == ok->statement_id) {
        clear_stmt(&ps->stmts[i]); /* the server reused an id we thought open */
    } else {
        if (ps->nstmts == ps->cap) {
            ps->cap = ps->cap ? ps->cap * 2 : 8;
            ps->stmts = realloc(ps->stmts, ps->cap * sizeof *ps->stmts);
        }
        memmove(&ps->stmts[i + 1], &ps->stmts[i], (ps->nstmts - i) * sizeof *ps->stmts);
        ps->nstmts++;
    }
    my_stmt *st = &ps->stmts[i];
    *st = (my_stmt){
        .id = ok->statement_id,
        .nparams = ok->params,
        .ncols = ok->columns,
        .text = ps->pending_text,
        .d = ps->pending_d,
        .approval_id = ps->pending_approval,
        .budget_pass = ps->pending_approval != NULL,
        .types = calloc((size_t)ok->params * 2 + 1, 1),
        .long_data = calloc(((size_t)ok->params + 7) / 8 + 1, 1),
    };
    ps->pending_text = NULL;
    ps->pending_d = NULL;
    ps->pending_approval = NULL;
    return true;
}

void my_policy_stmt_close(my_session *s, uint32_t id)
{
    my_policy_state *ps = state_of(s);
    size_t i = find_slot(ps, id);
    if (i >= ps->nstmts || ps->stmts[i].id != id)
        return;
    clear_stmt(&ps->stmts[i]);
    memmove(&ps->stmts[i], &ps->stmts[i + 1], (ps->nstmts - i - 1) * sizeof *ps->stmts);
    ps->nstmts--;
}

void my_policy_reset(my_session *s)
{
    my_policy_state *ps = state_of(s);
    for (size_t i = 0; i < ps->nstmts; i++)
        clear_stmt(&ps->stmts[i]);
    ps->nstmts = 0;
    drop_pending(ps);
    if (s->sqlsession)
        sqlp_session_reset(s->sqlsession);
}

/* ---- results ------------------------------------------------------------------------ */

static void clear_result(my_policy_state *ps)
{
    for (uint32_t i = 0; i < ps->ncols; i++)
        free(ps->col_mask[i]);
    free(ps->col_mask);
    free(ps->col_type);
    ps->col_mask = NULL;
    ps->col_type = NULL;
    ps->ncols = 0;
    ps->masking = false;
}

void my_policy_result_begin(my_session *s, uint32_t ncols)
{
    my_policy_state *ps = state_of(s);
    clear_result(ps);
    ps->col_mask = calloc(ncols, sizeof(char *));
    ps->col_type = calloc(ncols, 1);
    ps->ncols = ncols;
}

void my_policy_result_end(my_session *s)
{
    if (s->policy)
        clear_result(s->policy);
}

bool my_policy_masking(const my_session *s) { return s->policy && s->policy->masking; }

static void copy_name(char *out, const uint8_t *p, size_t len)
{
    if (len >= NAME_MAX_LEN)
        len = NAME_MAX_LEN - 1;
    memcpy(out, p, len);
    out[len] = '\0';
}

/* org_schema.org_table.org_name of a base PHI column arrived unmasked (the
 * rewrite missed it): mask it in the stream and log the gap. */
void my_policy_column(my_session *s, uint32_t index, const my_column_def *def)
{
    my_policy_state *ps = state_of(s);
    if (index >= ps->ncols)
        return;
    ps->col_type[index] = def->type;
    if (s->role->policy.unmasked || def->org_table_len == 0 || def->org_name_len == 0)
        return;
    char schema[NAME_MAX_LEN], table[NAME_MAX_LEN], column[NAME_MAX_LEN];
    copy_name(schema, def->schema, def->schema_len);
    copy_name(table, def->org_table, def->org_table_len);
    copy_name(column, def->org_name, def->org_name_len);
    sqlp_phi_column phi;
    if (!sqlp_catalog_phi_by_name(sqlp_engine_catalog(s->engine), schema, table, column, &phi) || !phi.hipaa_class)
        return;
    ps->col_mask[index] = strdup(phi.mask ? phi.mask : "redact");
    ps->masking = true;
    char esc[200];
    char full[3 * NAME_MAX_LEN];
    snprintf(full, sizeof full, "%s.%s.%s", schema, table, column);
    my_session_log(s, LOG_LEVEL_WARN,
                   "defence in depth: column %u (%s, class %s) arrived unmasked; masked in the stream",
                   (unsigned)index + 1, log_escape(full, strlen(full), 150, esc, sizeof esc), phi.hipaa_class);
}

static void put_masked(my_session *s, const char *mask, const uint8_t *v, size_t len, struct evbuffer *out)
{
    char *m = sqlp_mask_value(mask, (const char *)v, len, &s->role->policy);
    /* Out of memory: a fixed redaction rather than the raw value. */
    const char *text = m ? m : "***";
    my_put_lenenc_str(out, text, strlen(text));
    free(m);
}

static bool mask_text_row(my_session *s, my_policy_state *ps, const uint8_t *p, size_t len, struct evbuffer *out)
{
    my_cursor c;
    my_cursor_init(&c, p, len);
    for (uint32_t i = 0; i < ps->ncols; i++) {
        size_t start = c.pos;
        const uint8_t *v;
        size_t vl;
        bool is_null;
        if (!my_get_text_value(&c, &v, &vl, &is_null))
            return false;
        if (ps->col_mask[i] && !is_null)
            put_masked(s, ps->col_mask[i], v, vl, out);
        else
            evbuffer_add(out, p + start, c.pos - start);
    }
    return my_cursor_left(&c) == 0;
}

/* Types whose binary value is a length-encoded string, so a masked text fits. */
static bool binary_is_string(uint8_t type)
{
    return type == MY_TYPE_DECIMAL || type == MY_TYPE_VARCHAR || type >= 0xf5;
}

/*   0x00 | NULL bitmap, (ncols + 7 + 2) / 8 bytes, bits offset by 2 | values of non-NULL columns */
static bool mask_binary_row(my_session *s, my_policy_state *ps, const uint8_t *p, size_t len, struct evbuffer *out)
{
    my_cursor c;
    uint8_t h;
    const uint8_t *bitmap;
    size_t nbytes = ((size_t)ps->ncols + 7 + 2) / 8;
    my_cursor_init(&c, p, len);
    if (!my_get_u8(&c, &h) || h != 0x00 || !my_get_bytes(&c, nbytes, &bitmap))
        return false;
    uint8_t *nulls = malloc(nbytes);
    memcpy(nulls, bitmap, nbytes);
    struct evbuffer *values = evbuffer_new();
    bool ok = true;
    for (uint32_t i = 0; i < ps->ncols && ok; i++) {
        size_t bit = i + 2;
        if (nulls[bit / 8] & (1u << (bit % 8)))
            continue;
        size_t start = c.pos;
        if (!my_skip_binary_value(&c, ps->col_type[i])) {
            ok = false;
            break;
        }
        if (!ps->col_mask[i]) {
            evbuffer_add(values, p + start, c.pos - start);
        } else if (binary_is_string(ps->col_type[i])) {
            my_cursor v;
            const uint8_t *text;
            size_t tl;
            my_cursor_init(&v, p + start, c.pos - start);
            ok = my_get_lenenc_str(&v, &text, &tl);
            if (ok)
                put_masked(s, ps->col_mask[i], text, tl, values);
        } else {
            /* A binary date or number has no masked form: it becomes NULL. */
            nulls[bit / 8] |= (uint8_t)(1u << (bit % 8));
        }
    }
    ok = ok && my_cursor_left(&c) == 0;
    if (ok) {
        evbuffer_add(out, &h, 1);
        evbuffer_add(out, nulls, nbytes);
        evbuffer_add_buffer(out, values);
    }
    evbuffer_free(values);
    free(nulls);
    return ok;
}

bool my_policy_mask_row(my_session *s, const uint8_t *payload, size_t len, bool binary, struct evbuffer *out)
{
    my_policy_state *ps = state_of(s);
    return binary ? mask_binary_row(s, ps, payload, len, out) : mask_text_row(s, ps, payload, len, out);
}

char *my_policy_scrub(const char *msg, size_t len)
{
    char *copy = strndup(msg, len);
    if (!copy)
        return NULL;
    char *clean = sqlp_scrub_message(copy);
    free(copy);
    return clean;
}

void my_policy_session_free(my_session *s)
{
    my_policy_state *ps = s->policy;
    if (s->sqlsession)
        sqlp_session_free(s->sqlsession);
    s->sqlsession = NULL;
    if (!ps)
        return;
    for (size_t i = 0; i < ps->nstmts; i++)
        clear_stmt(&ps->stmts[i]);
    free(ps->stmts);
    drop_pending(ps);
    clear_result(ps);
    free(ps);
    s->policy = NULL;
}
