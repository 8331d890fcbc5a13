/*
 * The engine: sqlp_decide() and what it hands back.
 *
 *   text -> size cap -> cache -> lex (depth estimate) -> libpg_query parse
 *        -> sp_analyse (per statement: class, PHI use, edits)
 *        -> per-statement verdict from the role -> splice the edits -> decision
 *
 * A decision and everything it points to live in one arena inside a
 * reference-counted box, so a cache hit is a counter increment and the front
 * may keep a decision (a prepared statement's) after the cache dropped it.
 * Allocation failure anywhere longjmps back here and yields the static DENY.
 */
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlpolicy/sp_internal.h"

/* ---- names -------------------------------------------------------------------- */

static const char *const class_names[] = {
#define X(sym, name) name,
    SQLP_CLASSES(X)
#undef X
};
_Static_assert(SP_ARRAY_LEN(class_names) == SQLP_CLASS_COUNT, "one name per statement class");

const char *sqlp_class_name(sqlp_class c)
{
    return (unsigned)c < SQLP_CLASS_COUNT ? class_names[c] : "unknown";
}

bool sqlp_class_from_name(const char *name, sqlp_class *out)
{
    if (!name)
        return false;
    for (int i = 0; i < SQLP_CLASS_COUNT; i++)
        if (strcmp(name, class_names[i]) == 0) {
            *out = (sqlp_class)i;
            return true;
        }
    if (strcmp(name, "admin") == 0) { /* the short spelling people write in configs */
        *out = SQLP_CLASS_ADMIN;
        return true;
    }
    return false;
}

const char *sqlp_verdict_name(sqlp_verdict v)
{
    static const char *const names[] = {"allow", "rewrite", "hold", "deny"};
    return (unsigned)v < SP_ARRAY_LEN(names) ? names[v] : "unknown";
}

void sqlp_role_init_agent(sqlp_role *role)
{
    for (int i = 0; i < SQLP_CLASS_COUNT; i++)
        role->classes[i] = SQLP_CLASS_DENY;
    role->classes[SQLP_CLASS_READ] = SQLP_CLASS_ALLOW;
    role->classes[SQLP_CLASS_SESSION] = SQLP_CLASS_ALLOW;
    role->unscoped_row_limit = 100;
    role->unmasked = false;
    for (int i = 0; i < SQLP_HIPAA_COUNT; i++)
        role->predicates[i] = SQLP_PRED_DENY;
}

/* ---- decisions ------------------------------------------------------------------ */

/* The rewrite of a cached decision, anchored to tokens instead of bytes, so
 * a statement of the same shape (other literals) can be rebuilt from it. */
typedef struct plan_edit {
    uint32_t a, b;          /* replace tokens a..b, or insert after token a */
    bool insert;
    const char *text;
    uint32_t tlen;
} plan_edit;

typedef struct decision_box {
    int refs;
    sp_arena arena;            /* the decision */
    sp_arena scratch;          /* tokens, parse tree, analysis: freed before sqlp_decide returns */
    struct decision_box *base; /* derived: shares base's statements, holds a reference */
    plan_edit *plan;           /* shape-cacheable decisions: the edits by token */
    int nplan;
    uint32_t ntok;
    uint32_t *sens;            /* literal tokens whose value the analysis consulted */
    const char **sens_text;    /* ... and that value: another value is another decision */
    int nsens;
    sqlp_decision d;
} decision_box;

#define BOX_OF(dp) ((decision_box *)((char *)(dp) - offsetof(decision_box, d)))

/* Returned when even a DENY cannot be allocated; never freed. */
static sqlp_decision oom_decision = {
    .verdict = SQLP_DENY,
    .rule = "engine.out_of_memory",
    .reason = "phigate ran out of memory while deciding this statement",
};

void sp_decision_ref(sqlp_decision *d)
{
    if (d && d != &oom_decision)
        BOX_OF(d)->refs++;
}

size_t sp_decision_bytes(const sqlp_decision *d)
{
    if (!d || d == &oom_decision)
        return 0;
    return BOX_OF(d)->arena.used + sizeof(decision_box);
}

void sqlp_decision_free(sqlp_decision *d)
{
    if (!d || d == &oom_decision)
        return;
    decision_box *b = BOX_OF(d);
    if (--b->refs > 0)
        return;
    decision_box *base = b->base;
    sp_arena_free(&b->arena);
    free(b);
    if (base)
        sqlp_decision_free(&base->d);
}

static decision_box *box_new(void)
{
    decision_box *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->refs = 1;
    sp_arena_init(&b->arena);
    return b;
}

/* A one-statement DENY built outside the analyser (caps, parse errors). */
static sqlp_decision *simple_deny(const char *rule, const char *reason)
{
    decision_box *b = box_new();
    if (!b)
        return &oom_decision;
    sqlp_decision *d = &b->d;
    d->verdict = SQLP_DENY;
    d->rule = sp_strdup(&b->arena, rule);
    d->reason = sp_strdup(&b->arena, reason);
    d->statements = sp_alloc(&b->arena, sizeof *d->statements);
    if (!d->rule || !d->reason || !d->statements) {
        sp_arena_free(&b->arena);
        free(b);
        return &oom_decision;
    }
    d->nstatements = 1;
    d->statements[0].verdict = SQLP_DENY;
    d->statements[0].stmt_class = SQLP_CLASS_READ;
    d->statements[0].rule = d->rule;
    d->statements[0].reason = d->reason;
    d->statements[0].row_limit = -1;
    return d;
}

/* ---- engine ---------------------------------------------------------------------- */

sqlp_engine *sqlp_engine_from_catalog(sqlp_catalog *cat, const char *rules_dir, char *err, size_t errlen)
{
    if (!sqlp_catalog_load_rules(cat, rules_dir ? rules_dir : SQLP_DEFAULT_RULES_DIR, err, errlen)) {
        sqlp_catalog_free(cat);
        return NULL;
    }
    return sqlp_engine_new(cat);
}

sqlp_engine *sqlp_engine_new(sqlp_catalog *cat)
{
    if (!cat)
        return NULL;
    sqlp_engine *eng = calloc(1, sizeof *eng);
    if (!eng) {
        sqlp_catalog_free(cat);
        return NULL;
    }
    eng->refs = 1;
    eng->cat = cat;
    /* Views are analysed for lineage only: a role that may read everything. */
    sqlp_role_init_agent(&eng->view_role);
    eng->view_role.name = "(view analysis)";
    for (int i = 0; i < SQLP_HIPAA_COUNT; i++)
        eng->view_role.predicates[i] = SQLP_PRED_ALLOW;
    eng->cache = sp_cache_new(4096, 32u << 20);
    if (!eng->cache) {
        sqlp_catalog_free(cat);
        free(eng);
        return NULL;
    }
    sp_cat_finalize(cat, eng);
    return eng;
}

void sqlp_engine_ref(sqlp_engine *eng)
{
    if (eng)
        eng->refs++;
}

void sqlp_engine_unref(sqlp_engine *eng)
{
    if (!eng || --eng->refs > 0)
        return;
    sp_cache_free(eng->cache);
    sqlp_catalog_free(eng->cat);
    free(eng);
}

const sqlp_catalog *sqlp_engine_catalog(const sqlp_engine *eng)
{
    return eng ? eng->cat : NULL;
}

void sqlp_engine_set_cache_limits(sqlp_engine *eng, size_t max_entries, size_t max_bytes)
{
    if (!eng)
        return;
    sp_cache *c = sp_cache_new(max_entries, max_bytes);
    if (!c)
        return; /* keep the old cache rather than none */
    sp_cache_free(eng->cache);
    eng->cache = c;
}

void sqlp_engine_cache_stats(const sqlp_engine *eng, sqlp_cache_stats *out)
{
    memset(out, 0, sizeof *out);
    if (eng && eng->cache)
        sp_cache_stats(eng->cache, out);
}

char *sqlp_fingerprint(const char *sql, size_t len)
{
    if (!sql || len > SQLP_MAX_STATEMENT_BYTES || memchr(sql, 0, len))
        return NULL;
    char *text = strndup(sql, len);
    if (!text)
        return NULL;
    PgQueryFingerprintResult fr = pg_query_fingerprint(text);
    free(text);
    char *out = NULL;
    if (!fr.error && fr.fingerprint_str)
        out = strdup(fr.fingerprint_str);
    pg_query_free_fingerprint_result(fr);
    return out;
}

/* ---- sessions ------------------------------------------------------------------- */

sqlp_session *sqlp_session_new(void)
{
    return calloc(1, sizeof(sqlp_session));
}

static void entry_free(sp_sess_entry *e)
{
    while (e) {
        sp_sess_entry *n = e->next;
        for (size_t i = 0; i < e->ncols; i++) {
            free(e->cols[i].name);
            free(e->cols[i].hipaa_class);
            free(e->cols[i].mask);
            free(e->cols[i].sources);
        }
        free(e->cols);
        free(e->name);
        free(e);
        e = n;
    }
}

void sqlp_session_reset(sqlp_session *s)
{
    if (!s)
        return;
    entry_free(s->prepared);
    entry_free(s->cursors);
    s->prepared = s->cursors = NULL;
    free(s->search_path);
    s->search_path = NULL;
}

void sqlp_session_free(sqlp_session *s)
{
    sqlp_session_reset(s);
    free(s);
}

const sp_sess_entry *sp_session_find(const sqlp_session *s, bool cursor, const char *name)
{
    if (!s || !name)
        return NULL;
    for (const sp_sess_entry *e = cursor ? s->cursors : s->prepared; e; e = e->next)
        if (strcmp(e->name, name) == 0)
            return e;
    return NULL;
}

static void session_remove(sp_sess_entry **list, const char *name)
{
    for (sp_sess_entry **pp = list; *pp;) {
        sp_sess_entry *e = *pp;
        if (!name || strcmp(e->name, name) == 0) {
            *pp = e->next;
            e->next = NULL;
            entry_free(e);
        } else {
            pp = &e->next;
        }
    }
}

static char *dupnull(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Remember what PREPARE / DECLARE will run; allocation failure forgets it,
 * which later denies EXECUTE / FETCH of that name: fail closed. */
static void session_record(sqlp_session *s, bool cursor, const char *name, const sqlp_statement *st)
{
    sp_sess_entry **list = cursor ? &s->cursors : &s->prepared;
    session_remove(list, name);
    sp_sess_entry *e = calloc(1, sizeof *e);
    if (!e)
        return;
    e->name = strdup(name);
    e->cls = st->stmt_class;
    e->cols = st->ncolumns ? calloc(st->ncolumns, sizeof *e->cols) : NULL;
    if (!e->name || (st->ncolumns && !e->cols)) {
        free(e->name);
        free(e->cols);
        free(e);
        return;
    }
    e->ncols = st->ncolumns;
    for (size_t i = 0; i < st->ncolumns; i++) {
        e->cols[i].name = dupnull(st->columns[i].name);
        e->cols[i].phi = st->columns[i].phi;
        e->cols[i].hipaa_class = dupnull(st->columns[i].hipaa_class);
        e->cols[i].mask = dupnull(st->columns[i].mask);
        e->cols[i].sources = dupnull(st->columns[i].sources);
    }
    e->next = *list;
    *list = e;
}

static void apply_effects(sqlp_session *s, const sp_analysis *an, const sqlp_decision *d)
{
    for (int i = 0; i < an->nstmts; i++) {
        const sp_stmt_result *r = &an->stmts[i];
        switch (r->effect) {
        case SPE_PREPARE:
            session_record(s, false, r->effect_name, &d->statements[i]);
            break;
        case SPE_DECLARE:
            session_record(s, true, r->effect_name, &d->statements[i]);
            break;
        case SPE_DEALLOCATE:
            session_remove(&s->prepared, r->effect_name);
            break;
        case SPE_CLOSE:
            session_remove(&s->cursors, r->effect_name);
            break;
        case SPE_DISCARD:
            sqlp_session_reset(s); /* DISCARD ALL also resets search_path */
            break;
        case SPE_SEARCH_PATH:
            /* A ROLLBACK undoes a SET on the server but not here: phigate then
             * resolves names on the path the session last asked for. */
            free(s->search_path);
            s->search_path = r->effect_name ? strdup(r->effect_name) : NULL;
            break;
        case SPE_NONE:
            break;
        }
    }
}

/* ---- building the decision ------------------------------------------------------- */

static int cmp_edit(const void *x, const void *y)
{
    const sp_edit *a = x, *b = y;
    if (a->pos != b->pos)
        return a->pos < b->pos ? -1 : 1;
    /* at one offset an insertion (the end of what precedes) goes before a replacement */
    if ((a->del > 0) != (b->del > 0))
        return a->del > 0 ? 1 : -1;
    return a < b ? -1 : 1;
}

/* Splice the edits into the text; NULL when two edits overlap (a bug: refuse). */
static char *apply_edits(sp_arena *a, const char *sql, size_t len, sp_edit *e, int n, size_t *outlen)
{
    qsort(e, (size_t)n, sizeof *e, cmp_edit);
    sp_buf b;
    sp_buf_init(&b, a, len + 256);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        if (e[i].pos < at || e[i].pos + e[i].del > len)
            return NULL;
        sp_buf_add(&b, sql + at, e[i].pos - at);
        sp_buf_add(&b, e[i].text, e[i].tlen);
        at = e[i].pos + e[i].del;
    }
    sp_buf_add(&b, sql + at, len - at);
    *outlen = b.len;
    return sp_buf_cstr(&b);
}

static const char *role_name(const sqlp_role *r)
{
    return r->name ? r->name : "(unnamed)";
}

static int strictness(sqlp_verdict v)
{
    return v == SQLP_DENY ? 3 : v == SQLP_HOLD ? 2 : v == SQLP_REWRITE ? 1 : 0;
}

/* Verdict of one analysed statement under the role. */
static void judge(sp_arena *a, const sqlp_role *role, const sp_stmt_result *r, sqlp_statement *out)
{
    out->stmt_class = r->cls;
    out->touches_phi = r->touches_phi;
    if (r->deny_rule) {
        out->verdict = SQLP_DENY;
        out->rule = sp_strdup(a, r->deny_rule);
        out->reason = sp_strdup(a, r->deny_reason);
        return;
    }
    /* the statement's class, then every class it escalated to (admin functions...) */
    sqlp_class_rule worst = SQLP_CLASS_ALLOW;
    sqlp_class worst_cls = r->cls;
    for (int c = -1; c < SQLP_CLASS_COUNT; c++) {
        sqlp_class k = c < 0 ? r->cls : (sqlp_class)c;
        if (c >= 0 && !(r->escalated & (1u << c)))
            continue;
        if (role->classes[k] < worst) {
            worst = role->classes[k];
            worst_cls = k;
        }
    }
    if (worst == SQLP_CLASS_DENY) {
        out->verdict = SQLP_DENY;
        out->rule = sp_printf(a, "class.%s", sqlp_class_name(worst_cls));
        if (worst_cls != r->cls)
            out->reason = sp_printf(a, "role %s may not run %s statements: %s", role_name(role),
                                    sqlp_class_name(worst_cls), r->escalated_why ? r->escalated_why : "used");
        else
            out->reason = sp_printf(a, "role %s may not run %s statements", role_name(role),
                                    sqlp_class_name(worst_cls));
        return;
    }
    if (r->hold_rule) {
        out->verdict = SQLP_HOLD;
        out->rule = sp_strdup(a, r->hold_rule);
        out->reason = sp_strdup(a, r->hold_reason);
        return;
    }
    if (worst == SQLP_CLASS_HOLD) {
        out->verdict = SQLP_HOLD;
        out->rule = sp_printf(a, "class.%s", sqlp_class_name(worst_cls));
        out->reason = sp_printf(a, "role %s needs approval for %s statements", role_name(role),
                                sqlp_class_name(worst_cls));
        return;
    }
    out->verdict = r->rewritten ? SQLP_REWRITE : SQLP_ALLOW;
    out->rule = sp_strdup(a, r->rewritten ? "phi.masked" : "allow");
}

static const char *const hipaa_names[] = {
#define X(sym, name, strength) name,
    SQLP_HIPAA_CLASSES(X)
#undef X
};

static void output_columns(sp_arena *a, const sp_stmt_result *r, sqlp_statement *out)
{
    out->ncolumns = (size_t)r->ncols;
    out->columns = r->ncols ? sp_alloc(a, (size_t)r->ncols * sizeof *out->columns) : NULL;
    for (int i = 0; i < r->ncols; i++) {
        const sp_outinfo *o = &r->cols[i];
        sqlp_output_column *c = &out->columns[i];
        c->name = sp_strdup(a, o->name ? o->name : "?column?");
        int best = -1, bests = -1;
        sp_buf src;
        sp_buf_init(&src, a, 64);
        for (int j = 0; j < o->lin.n; j++) {
            const cat_col *s = o->lin.src[j];
            if (s->phi_class >= 0) {
                static const int strength[] = {
#define X(sym, name, st) st,
                    SQLP_HIPAA_CLASSES(X)
#undef X
                };
                if (strength[s->phi_class] > bests) {
                    bests = strength[s->phi_class];
                    best = s->phi_class;
                }
            }
            sp_buf_printf(&src, "%s%s.%s.%s", src.len ? "," : "", s->rel->schema, s->rel->name, s->name);
        }
        if (best < 0 && (o->lin.flags & SP_LIN_OPAQUE))
            best = SQLP_HIPAA_OTHER_ID;
        c->phi = best >= 0;
        c->hipaa_class = best >= 0 ? sp_strdup(a, hipaa_names[best]) : NULL;
        c->mask = o->masks ? sp_strdup(a, o->masks) : NULL;
        c->sources = src.len ? sp_buf_cstr(&src) : NULL;
    }
}

/* The path names resolve on: what the session SET, else the front's. */
static const char *effective_path(const sqlp_context *ctx)
{
    if (ctx->session && ctx->session->search_path)
        return ctx->session->search_path;
    return ctx->search_path ? ctx->search_path : "";
}

/* Split "a, b" into the analysis's search path (quotes and "$user" handled). */
static void set_path(sp_analysis *an, const char *path)
{
    static const char *const dflt[] = {"public"};
    if (!path || !*path) {
        an->path = (const char **)dflt;
        an->npath = 1;
        return;
    }
    const char **items = sp_alloc(an->a, 33 * sizeof *items);
    int n = 0;
    const char *p = path;
    while (*p && n < 32) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        sp_buf b;
        sp_buf_init(&b, an->a, 32);
        bool quoted = *p == '"';
        if (*p == '"') {
            p++;
            while (*p && !(*p == '"' && p[1] != '"')) {
                if (*p == '"')
                    p++;
                sp_buf_add(&b, p++, 1);
            }
            if (*p)
                p++;
        } else {
            while (*p && *p != ',' && *p != ' ')
                sp_buf_add(&b, p++, 1);
        }
        char *name = sp_buf_cstr(&b);
        if (!quoted)
            for (char *c = name; *c; c++) /* unquoted names fold to lower case, as the server's do */
                if (*c >= 'A' && *c <= 'Z')
                    *c = (char)(*c + 32);
        if (strcmp(name, "$user") != 0 && *name) /* the upstream login's schema: not known here */
            items[n++] = name;
    }
    an->path = items;
    an->npath = n;
}

/* ---- shapes ---------------------------------------------------------------------- */

/* The statement's tokens with literal contents left out: kind byte, then the
 * token's bytes (a string keeps only its prefix, E'' vs '', a number nothing),
 * NUL-separated.  Spacing and comments are not part of it either: edits are
 * replayed by token, and the text around them is the new statement's own. */
static const char *shape_key(sp_arena *a, const char *text, const sp_lexed *lx, size_t *klen)
{
    sp_buf b;
    sp_buf_init(&b, a, lx->ntok * 8 + 16);
    for (uint32_t i = 0; i < lx->ntok; i++) {
        const sp_token *t = &lx->tok[i];
        char k = (char)('A' + t->kind);
        sp_buf_add(&b, &k, 1);
        if (t->kind == SPT_STRING)
            sp_buf_add(&b, text + t->start, t->prefix);
        else if (t->kind != SPT_NUMBER)
            sp_buf_add(&b, text + t->start, t->end - t->start);
        sp_buf_add(&b, "", 1);
    }
    *klen = b.len;
    return b.p;
}

/* Index of the token ending exactly at pos, or -1. */
static int tok_ending_at(const sp_lexed *lx, uint32_t pos)
{
    uint32_t lo = 0, hi = lx->ntok;
    while (lo < hi) { /* first token starting at or after pos */
        uint32_t mid = (lo + hi) / 2;
        if (lx->tok[mid].start < pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo > 0 && lx->tok[lo - 1].end == pos)
        return (int)lo - 1;
    return -1;
}

/* Edits (sorted) as token anchors; false when one does not sit on token
 * boundaries or carries a literal of the original text along. */
static bool make_plan(decision_box *box, const sp_lexed *lx, const sp_edit *e, int n)
{
    plan_edit *p = sp_alloc(&box->arena, (size_t)(n ? n : 1) * sizeof *p);
    for (int i = 0; i < n; i++) {
        if (e[i].del == 0) {
            int t = tok_ending_at(lx, e[i].pos);
            if (t < 0)
                return false;
            p[i] = (plan_edit){(uint32_t)t, (uint32_t)t, true, sp_strndup(&box->arena, e[i].text, e[i].tlen),
                               e[i].tlen};
            continue;
        }
        int a = sp_tok_at(lx, e[i].pos), b = tok_ending_at(lx, e[i].pos + e[i].del);
        if (a < 0 || b < a)
            return false;
        for (int k = a; k <= b; k++)
            if (lx->tok[k].kind == SPT_STRING || lx->tok[k].kind == SPT_NUMBER)
                return false; /* the edit's text repeats this literal */
        p[i] = (plan_edit){(uint32_t)a, (uint32_t)b, false, sp_strndup(&box->arena, e[i].text, e[i].tlen),
                           e[i].tlen};
    }
    box->plan = p;
    box->nplan = n;
    box->ntok = lx->ntok;
    return true;
}

/* Remember the literals the analysis consulted; false when one is not a plain literal token. */
static bool plan_literals(decision_box *box, const char *text, const sp_lexed *lx, const sp_analysis *an)
{
    int n = 0;
    for (int i = 0; i < an->nstmts; i++)
        n += an->stmts[i].nsens;
    box->sens = sp_alloc(&box->arena, (size_t)(n ? n : 1) * sizeof *box->sens);
    box->sens_text = sp_alloc(&box->arena, (size_t)(n ? n : 1) * sizeof *box->sens_text);
    box->nsens = 0;
    for (int i = 0; i < an->nstmts; i++)
        for (int k = 0; k < an->stmts[i].nsens; k++) {
            int t = sp_tok_at(lx, an->stmts[i].sens[k]);
            if (t < 0 || (lx->tok[t].kind != SPT_NUMBER && lx->tok[t].kind != SPT_STRING))
                return false;
            box->sens[box->nsens] = (uint32_t)t;
            box->sens_text[box->nsens] = sp_strndup(&box->arena, text + lx->tok[t].start,
                                                    lx->tok[t].end - lx->tok[t].start);
            box->nsens++;
        }
    return true;
}

/* A decision for text built from a cached decision of the same shape. */
static sqlp_decision *derive(decision_box *box, sqlp_decision *hit, const char *text, size_t len,
                             const sp_lexed *lx)
{
    decision_box *base = BOX_OF(hit);
    if (base->base)
        base = base->base;
    if (base->ntok != lx->ntok)
        return NULL;
    for (int i = 0; i < base->nsens; i++) {
        const sp_token *t = &lx->tok[base->sens[i]];
        if (strlen(base->sens_text[i]) != t->end - t->start ||
            memcmp(base->sens_text[i], text + t->start, t->end - t->start) != 0)
            return NULL; /* LIMIT 5 cached, LIMIT 500 asked: analyse again */
    }
    sqlp_decision *d = &box->d;
    *d = base->d; /* statements, rules, reasons: shared with the base */
    if (base->d.upstream_sql && base->nplan == 0) {
        d->upstream_sql = (char *)text;
        d->upstream_len = len;
    } else if (base->d.upstream_sql) {
        sp_buf b;
        sp_buf_init(&b, &box->arena, len + 256);
        uint32_t at = 0;
        for (int i = 0; i < base->nplan; i++) {
            const plan_edit *p = &base->plan[i];
            uint32_t pos = p->insert ? lx->tok[p->a].end : lx->tok[p->a].start;
            uint32_t end = p->insert ? pos : lx->tok[p->b].end;
            if (pos < at)
                return NULL;
            sp_buf_add(&b, text + at, pos - at);
            sp_buf_add(&b, p->text, p->tlen);
            at = end;
        }
        sp_buf_add(&b, text + at, len - at);
        d->upstream_sql = sp_buf_cstr(&b);
        d->upstream_len = b.len;
    }
    base->refs++;
    box->base = base;
    return d;
}

/* protobuf-c allocates the unpacked tree from the decision's arena: no
 * per-node malloc, and no free_unpacked walk (a fifth of a cold decision). */
static void *pb_alloc(void *data, size_t size)
{
    sp_arena *a = data;
    jmp_buf *saved = a->oom;
    a->oom = NULL; /* inside protobuf-c: report failure, do not longjmp */
    void *p = sp_alloc_raw(a, size);
    a->oom = saved;
    return p;
}

static void pb_free(void *data, void *p)
{
    (void)data;
    (void)p;
}

/* Statements mysql.c judged itself replace their placeholders' results. */
static bool mysql_results(sp_analysis *an, const sp_mysql *my)
{
    if (an->nstmts != my->nstmts)
        return false;
    for (int i = 0; i < an->nstmts; i++) {
        const sp_my_stmt *m = &my->stmts[i];
        sp_stmt_result *r = &an->stmts[i];
        if (m->native) {
            if (m->deny_rule && !r->deny_rule) {
                r->deny_rule = m->deny_rule;
                r->deny_reason = m->deny_reason;
            }
            continue;
        }
        r->cls = m->cls;
        r->escalated = m->escalated;
        r->escalated_why = m->why;
        r->deny_rule = m->deny_rule;
        r->deny_reason = m->deny_reason;
        r->hold_rule = m->hold_rule;
        r->hold_reason = m->hold_reason;
        r->touches_phi = m->touches_phi;
        r->rewritten = false;
        r->ncols = 0;
        r->cols = NULL;
        r->literal_sensitive = true;
    }
    return true;
}

/* Edits are offsets in the translation; each starts or ends on a translated
 * token, whose client bytes the map gives. */
static bool mysql_edits_back(sp_analysis *an, const sp_mysql *my)
{
    for (int i = 0; i < an->nedits; i++) {
        sp_edit *e = &an->edits[i];
        uint32_t s, t;
        if (e->del == 0) {
            if (!sp_srcmap_back(&my->map, e->pos, true, &s))
                return false;
            e->pos = s;
            continue;
        }
        if (!sp_srcmap_back(&my->map, e->pos, false, &s) || !sp_srcmap_back(&my->map, e->pos + e->del, true, &t) ||
            t < s)
            return false;
        e->pos = s;
        e->del = t - s;
    }
    return true;
}

sqlp_decision *sqlp_decide(sqlp_engine *eng, const sqlp_context *ctx, const char *sql, size_t len)
{
    if (!eng || !ctx || !ctx->role || (!sql && len))
        return simple_deny("engine.misuse", "phigate has no policy for this session");
    if (!sql)
        return sqlp_decide(eng, ctx, "", 0);
    if (len > SQLP_MAX_STATEMENT_BYTES)
        return simple_deny("parse.too_large", "the statement is larger than phigate accepts (1 MiB)");
    const char *path = effective_path(ctx);
    if (len <= SP_CACHE_MAX_TEXT) {
        sqlp_decision *hit = sp_cache_get(eng->cache, ctx->role, (int)ctx->dialect, path, sql, len, false);
        if (hit)
            return hit;
    }
    if (memchr(sql, 0, len))
        return simple_deny("parse.error", "the statement contains a NUL byte");

    decision_box *volatile box = box_new();
    if (!box)
        return &oom_decision;
    /* Everything below lives in the two arenas, the unpacked parse tree included. */
    PgQuery__ParseResult *tree = NULL;
    jmp_buf jb;
    if (setjmp(jb)) {
        sp_arena_free(&box->scratch);
        sp_arena_free(&box->arena);
        free(box);
        return &oom_decision;
    }
    sp_arena *a = &box->arena, *sc = &box->scratch;
    a->oom = &jb;
    sc->oom = &jb;
    sqlp_decision *d = &box->d;
    const char *deny_rule = NULL, *deny_reason = NULL;

    char *text = sp_strndup(a, sql, len);
    /* MySQL is analysed as its PostgreSQL translation (mysql.c); edits are
     * mapped back onto the client's text before they are applied */
    bool mysql = ctx->dialect == SQLP_DIALECT_MYSQL;
    sp_mysql my;
    const char *ptext = text;
    size_t plen = len;
    if (mysql) {
        const char *why = NULL;
        if (!sp_mysql_prepare(sc, eng->cat, text, len, ctx->database, &my, &why)) {
            deny_rule = "parse.error";
            deny_reason = sp_printf(a, "the statement cannot be read safely: %s", why ? why : "lexical error");
        } else {
            ptext = my.pg;
            plen = my.pglen;
        }
    }
    sp_lexed lx;
    sp_lex(sc, ptext, plen, &lx);
    if (deny_rule) {
        /* keeps the MySQL lexer's reason */
    } else if (!lx.ok) {
        deny_rule = "parse.error";
        deny_reason = "the statement does not parse (unterminated quoted string, identifier or comment)";
    } else if (lx.depth_estimate > SQLP_MAX_TREE_DEPTH) {
        deny_rule = "parse.too_deep";
        deny_reason = sp_printf(a, "the statement nests deeper than phigate accepts (%d levels)", SQLP_MAX_TREE_DEPTH);
    }
    const char *shape = NULL;
    size_t shapelen = 0;
    if (!deny_rule && !mysql && len <= SP_CACHE_MAX_TEXT && eng->cache) {
        shape = shape_key(sc, text, &lx, &shapelen);
        sqlp_decision *hit = sp_cache_get(eng->cache, ctx->role, (int)ctx->dialect, path, shape, shapelen, true);
        if (hit) {
            sqlp_decision *d2 = derive(box, hit, text, len, &lx);
            sqlp_decision_free(hit); /* derive took its own reference */
            if (d2) {
                sp_arena_free(sc);
                a->oom = NULL;
                sp_cache_put(eng->cache, ctx->role, (int)ctx->dialect, path, sql, len, false, d2);
                return d2;
            }
        }
    }
    if (!deny_rule) {
        char msg[300];
        msg[0] = 0;
        PgQueryProtobufParseResult pr = pg_query_parse_protobuf(ptext);
        if (pr.error)
            snprintf(msg, sizeof msg, "the statement does not parse: %s",
                     pr.error->message ? pr.error->message : "syntax error");
        else
        {
            ProtobufCAllocator pa = {pb_alloc, pb_free, sc};
            tree = pg_query__parse_result__unpack(&pa, pr.parse_tree.len, (const uint8_t *)pr.parse_tree.data);
        }
        pg_query_free_protobuf_parse_result(pr);
        if (msg[0] || !tree) {
            deny_rule = "parse.error";
            deny_reason = msg[0] ? sp_strdup(a, msg) : "the parse tree could not be read";
        }
    }
    sp_analysis an = {0};
    if (!deny_rule) {
        an.a = sc;
        an.eng = eng;
        an.cat = eng->cat;
        an.role = ctx->role;
        an.profile = sp_cat_profile(eng->cat, ctx->role->masking_profile);
        an.dialect = ctx->dialect;
        an.session = ctx->session;
        an.sql = ptext;
        an.len = plen;
        an.lx = &lx;
        an.srcmap = mysql ? &my.map : NULL;
        set_path(&an, *path ? path : NULL);
        sp_analyse(&an, tree);
        if (mysql && !mysql_results(&an, &my)) {
            deny_rule = "parse.error";
            deny_reason = "the statement's MySQL translation does not parse as the same statements";
        }
    }
    bool cacheable = len <= SP_CACHE_MAX_TEXT;
    if (deny_rule) {
        d->verdict = SQLP_DENY;
        d->rule = sp_strdup(a, deny_rule);
        d->reason = sp_strdup(a, deny_reason);
        d->nstatements = 1;
        d->statements = sp_alloc(a, sizeof *d->statements);
        d->statements[0].verdict = SQLP_DENY;
        d->statements[0].rule = d->rule;
        d->statements[0].reason = d->reason;
        d->statements[0].row_limit = -1;
    } else {
        d->nstatements = (size_t)an.nstmts;
        d->statements = sp_alloc(a, (an.nstmts ? (size_t)an.nstmts : 1) * sizeof *d->statements);
        int worst = -1, worsti = -1;
        for (int i = 0; i < an.nstmts; i++) {
            sqlp_statement *st = &d->statements[i];
            const sp_stmt_result *r = &an.stmts[i];
            judge(a, ctx->role, r, st);
            output_columns(a, r, st);
            st->node = r->node ? sp_strdup(a, r->node) : NULL;
            st->has_params = r->params;
            st->row_limit = r->row_limit;
            if (r->uncacheable)
                cacheable = false;
            if (st->touches_phi)
                d->touches_phi = true;
            if (st->verdict == SQLP_HOLD)
                st->fingerprint = sqlp_fingerprint(ptext + r->loc, r->len);
            if (st->fingerprint) { /* malloc'd by sqlp_fingerprint: move it into the arena */
                char *f = sp_strdup(a, st->fingerprint);
                free(st->fingerprint);
                st->fingerprint = f;
            }
            if (strictness(st->verdict) > worst) {
                worst = strictness(st->verdict);
                worsti = i;
            }
        }
        if (worsti < 0) { /* an empty query: nothing to judge */
            d->verdict = SQLP_ALLOW;
            d->rule = sp_strdup(a, "allow");
        } else {
            d->verdict = d->statements[worsti].verdict;
            d->rule = d->statements[worsti].rule;
            d->reason = d->statements[worsti].reason;
            if (an.nstmts > 1 && d->verdict == SQLP_DENY)
                d->reason = sp_printf(a, "statement %d of %d: %s", worsti + 1, an.nstmts,
                                      d->reason ? d->reason : "refused");
        }
        bool plan_ok = shape != NULL;
        for (int i = 0; i < an.nstmts; i++)
            if (an.stmts[i].literal_sensitive || an.stmts[i].uncacheable)
                plan_ok = false; /* a literal's value decided something */
        if (mysql && an.nedits > 0 && !mysql_edits_back(&an, &my))
            an.nedits = -1; /* an edit that does not sit on the client's tokens: refuse below */
        if (d->verdict != SQLP_DENY && an.nedits < 0) {
            d->verdict = SQLP_DENY;
            d->rule = sp_strdup(a, "engine.rewrite_conflict");
            d->reason = sp_strdup(a, "phigate cannot rewrite this statement safely");
        } else if (d->verdict != SQLP_DENY && an.nedits > 0) {
            size_t olen = 0;
            char *out = apply_edits(a, text, len, an.edits, an.nedits, &olen);
            /* apply_edits sorted them: the plan replays them in order */
            if (out && plan_ok)
                plan_ok = make_plan(box, &lx, an.edits, an.nedits);
            if (!out) {
                d->verdict = SQLP_DENY;
                d->rule = sp_strdup(a, "engine.rewrite_conflict");
                d->reason = sp_strdup(a, "phigate cannot rewrite this statement safely");
            } else {
                d->upstream_sql = out;
                d->upstream_len = olen;
                if (d->verdict == SQLP_ALLOW)
                    d->verdict = SQLP_REWRITE;
            }
        } else if (d->verdict != SQLP_DENY) {
            d->upstream_sql = text; /* byte for byte what the client sent */
            d->upstream_len = len;
        }
        if (d->verdict == SQLP_DENY) {
            d->upstream_sql = NULL;
            d->upstream_len = 0;
        }
        if (d->verdict != SQLP_DENY && d->verdict != SQLP_HOLD && ctx->session)
            apply_effects(ctx->session, &an, d);
        if (plan_ok && !box->plan) {
            box->ntok = lx.ntok; /* no edits: upstream is the text itself, or none */
            box->nplan = 0;
        }
        if (plan_ok)
            plan_ok = plan_literals(box, text, &lx, &an);
        if (!plan_ok)
            shape = NULL;
    }
    a->oom = NULL;
    if (cacheable && eng->cache) {
        sp_cache_put(eng->cache, ctx->role, (int)ctx->dialect, path, sql, len, false, d);
        if (shape && !deny_rule)
            sp_cache_put(eng->cache, ctx->role, (int)ctx->dialect, path, shape, shapelen, true, d);
    }
    sp_arena_free(sc); /* the shape key lived here */
    return d;
}
