/*
 * Analyser plumbing: lineage sets, verdict recording, node names, scope
 * objects.  Everything is allocated in the decision's arena.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlpolicy/sp_analyze.h"

/* ---- lineage ---------------------------------------------------------------- */

/* Lineage sets are small (a handful of columns): a linear scan dedupes them. */
void lin_add_col(sp_arena *a, sp_lin *l, const cat_col *c)
{
    for (int i = 0; i < l->n; i++)
        if (l->src[i] == c)
            return;
    if (l->n == UINT16_MAX) {
        /* more sources than we track: say "anything" rather than drop one */
        l->flags |= SP_LIN_OPAQUE;
        return;
    }
    if (l->n == l->cap) {
        uint32_t ncap = l->cap ? (uint32_t)l->cap * 2 : 4;
        if (ncap > UINT16_MAX)
            ncap = UINT16_MAX;
        const cat_col **ns = sp_alloc_raw(a, ncap * sizeof *ns);
        if (l->n)
            memcpy(ns, l->src, l->n * sizeof *ns);
        l->src = ns;
        l->cap = (uint16_t)ncap;
    }
    l->src[l->n++] = c;
}

void lin_merge(sp_arena *a, sp_lin *dst, const sp_lin *src)
{
    for (int i = 0; i < src->n; i++)
        lin_add_col(a, dst, src->src[i]);
    dst->flags |= src->flags & SP_LIN_OPAQUE;
}

bool lin_phi(const sp_lin *l)
{
    if (l->flags & SP_LIN_OPAQUE)
        return true;
    for (int i = 0; i < l->n; i++)
        if (l->src[i]->phi_class >= 0)
            return true;
    return false;
}

static const int class_strength[] = {
#define X(sym, name, st) st,
    SQLP_HIPAA_CLASSES(X)
#undef X
};

int lin_class(const sp_lin *l)
{
    int best = -1;
    for (int i = 0; i < l->n; i++) {
        int c = l->src[i]->phi_class;
        if (c >= 0 && (best < 0 || class_strength[c] > class_strength[best]))
            best = c;
    }
    if (best < 0 && (l->flags & SP_LIN_OPAQUE))
        best = SQLP_HIPAA_OTHER_ID;
    return best;
}

bool col_phi(const an_col *c)
{
    return lin_phi(&c->lin);
}

/* ---- verdicts ----------------------------------------------------------------- */

/* The first denial of a statement is the one reported; later ones would
 * only repeat the consequence of the first. */
void an_deny(an_run *r, const char *rule, const char *fmt, ...)
{
    sp_stmt_result *st = r->an->st;
    if (st->deny_rule)
        return; /* the first reason is the one the agent needs */
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    st->deny_rule = rule;
    st->deny_reason = sp_strdup(r->a, buf);
}

void an_hold(an_run *r, const char *rule, const char *fmt, ...)
{
    sp_stmt_result *st = r->an->st;
    if (st->hold_rule)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    st->hold_rule = rule;
    st->hold_reason = sp_strdup(r->a, buf);
}

/* A statement of one class that also needs another (a SELECT calling
 * pg_read_file is administrative too): the role must allow both. */
void an_escalate(an_run *r, sqlp_class c, const char *why)
{
    sp_stmt_result *st = r->an->st;
    if (c == st->cls || (st->escalated & (1u << c)))
        return;
    st->escalated |= 1u << c;
    if (!st->escalated_why)
        st->escalated_why = sp_strdup(r->a, why);
}

/* "range_var" -> "RangeVar": the names libpg_query's JSON output uses. */
const char *an_node_name(const Node *n)
{
    static __thread char buf[64];
    if (!n)
        return "(empty)";
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(&pg_query__node__descriptor, (unsigned)n->node_case);
    if (!f)
        return "(unknown node)";
    size_t o = 0;
    bool up = true;
    for (const char *p = f->name; *p && o + 1 < sizeof buf; p++) {
        if (*p == '_') {
            up = true;
            continue;
        }
        buf[o++] = up ? (char)toupper((unsigned char)*p) : *p;
        up = false;
    }
    buf[o] = 0;
    return buf;
}

void an_unsupported(an_run *r, const Node *n, const char *where)
{
    if (where)
        an_deny(r, "analyse.unsupported", "phigate cannot analyse this statement: %s in %s", an_node_name(n), where);
    else
        an_deny(r, "analyse.unsupported", "phigate cannot analyse this statement: %s", an_node_name(n));
}

bool an_too_deep(an_run *r, int depth)
{
    if (depth <= SQLP_MAX_TREE_DEPTH)
        return false;
    an_deny(r, "parse.too_deep", "the statement nests deeper than phigate accepts (%d levels)", SQLP_MAX_TREE_DEPTH);
    return true;
}

const char *an_str(const Node *n)
{
    if (n && n->node_case == PG_QUERY__NODE__NODE_STRING && n->string)
        return n->string->sval;
    return NULL;
}

bool an_const_int(const Node *n, int64_t *out)
{
    if (!n || n->node_case != PG_QUERY__NODE__NODE_A_CONST || n->a_const->isnull)
        return false;
    const PgQuery__AConst *c = n->a_const;
    if (c->val_case == PG_QUERY__A__CONST__VAL_IVAL) {
        *out = c->ival ? c->ival->ival : 0;
        return true;
    }
    if (c->val_case == PG_QUERY__A__CONST__VAL_FVAL && c->fval && c->fval->fval) {
        /* a bigint literal arrives as a Float node holding its digits */
        char *end;
        long long v = strtoll(c->fval->fval, &end, 10);
        if (*end)
            return false;
        *out = v;
        return true;
    }
    return false;
}

/* ---- scopes ------------------------------------------------------------------ */

an_level *an_level_new(an_run *r, an_level *parent)
{
    an_level *lv = sp_alloc(r->a, sizeof *lv);
    lv->parent = parent;
    return lv;
}

an_rte *an_rte_new(an_run *r, const char *name)
{
    an_rte *t = sp_alloc(r->a, sizeof *t);
    t->name = name;
    return t;
}

an_col *an_rte_add_col(an_run *r, an_rte *t, const char *name)
{
    if (t->ncols == t->capcols) {
        int ncap = t->capcols ? t->capcols * 2 : 8;
        an_col *nc = sp_alloc(r->a, (size_t)ncap * sizeof *nc);
        if (t->ncols)
            memcpy(nc, t->cols, (size_t)t->ncols * sizeof *nc);
        t->cols = nc;
        t->capcols = ncap;
    }
    an_col *c = &t->cols[t->ncols++];
    memset(c, 0, sizeof *c);
    c->name = name;
    return c;
}

void an_level_add(an_run *r, an_level *lv, an_rte *t)
{
    if (lv->nrtes == lv->caprtes) {
        int ncap = lv->caprtes ? lv->caprtes * 2 : 8;
        an_rte **n = sp_alloc(r->a, (size_t)ncap * sizeof *n);
        if (lv->nrtes)
            memcpy(n, lv->rtes, (size_t)lv->nrtes * sizeof *n);
        lv->rtes = n;
        lv->caprtes = ncap;
    }
    lv->rtes[lv->nrtes++] = t;
}

an_item *an_item_add(an_run *r, an_level *lv, an_item *it)
{
    if (lv->nitems == lv->capitems) {
        int ncap = lv->capitems ? lv->capitems * 2 : 8;
        an_item **n = sp_alloc(r->a, (size_t)ncap * sizeof *n);
        if (lv->nitems)
            memcpy(n, lv->items, (size_t)lv->nitems * sizeof *n);
        lv->items = n;
        lv->capitems = ncap;
    }
    lv->items[lv->nitems++] = it;
    return it;
}

void an_note_read(an_run *r, const cat_rel *rel, an_level *lv)
{
    for (int i = 0; i < r->nreads; i++)
        if (r->reads[i].rel == rel && r->reads[i].level == lv)
            return;
    if (r->nreads == r->capreads) {
        int ncap = r->capreads ? r->capreads * 2 : 8;
        an_read *n = sp_alloc(r->a, (size_t)ncap * sizeof *n);
        if (r->nreads)
            memcpy(n, r->reads, (size_t)r->nreads * sizeof *n);
        r->reads = n;
        r->capreads = ncap;
    }
    r->reads[r->nreads].rel = rel;
    r->reads[r->nreads].level = lv;
    r->nreads++;
}

static void add_pair(an_run *r, an_read **arr, int *n, int *cap, const cat_rel *rel, an_level *lv)
{
    for (int j = 0; arr == &r->scoped && j < *n; j++)
        if ((*arr)[j].rel == rel && (*arr)[j].level == lv)
            return;
    if (*n == *cap) {
        int ncap = *cap ? *cap * 2 : 8;
        an_read *na = sp_alloc(r->a, (size_t)ncap * sizeof *na);
        if (*n)
            memcpy(na, *arr, (size_t)*n * sizeof *na);
        *arr = na;
        *cap = ncap;
    }
    (*arr)[*n].rel = rel;
    (*arr)[*n].level = lv;
    (*n)++;
}

void an_note_scoped(an_run *r, const sp_lin *l, an_level *lv)
{
    for (int i = 0; i < l->n; i++)
        add_pair(r, &r->scoped, &r->nscoped, &r->capscoped, l->src[i]->rel, lv);
}

void an_note_join(an_run *r, const sp_lin *a, const sp_lin *b, an_level *lv)
{
    if (!(a->flags & SP_LIN_IDENT) || !(b->flags & SP_LIN_IDENT) || a->n != 1 || b->n != 1)
        return;
    add_pair(r, &r->joined, &r->njoined, &r->capjoined, a->src[0]->rel, lv);
    add_pair(r, &r->joined, &r->njoined, &r->capjoined, b->src[0]->rel, lv);
}

static const an_level *up(const an_level *l)
{
    return l->bound_by ? l->bound_by : l->parent;
}

/* rel is restricted for reads at level lv: by a WHERE of lv or of a level
 * above it, or a LIMIT / one-row aggregate there. */
static bool scoped_at(const an_run *r, const cat_rel *rel, const an_level *lv)
{
    for (const an_level *l = lv; l; l = up(l)) {
        if (l->limited || (l->aggregated && !l->collecting && !l->has_group))
            return true;
        for (int i = 0; i < r->nscoped; i++)
            if (r->scoped[i].rel == rel && r->scoped[i].level == l)
                return true;
    }
    return false;
}

/* Closes over key joins: "p.id = 1 AND e.patient_id = p.id" restricts e. */
static void close_over_joins(an_run *r)
{
    bool grew = true;
    while (grew) {
        grew = false;
        for (int i = 0; i + 1 < r->njoined; i += 2) {
            const an_read *x = &r->joined[i], *y = &r->joined[i + 1];
            bool sx = scoped_at(r, x->rel, x->level), sy = scoped_at(r, y->rel, y->level);
            if (sx != sy) {
                const an_read *t = sx ? y : x;
                add_pair(r, &r->scoped, &r->nscoped, &r->capscoped, t->rel, t->level);
                grew = true;
            }
        }
    }
}

bool an_rel_scoped_at(an_run *r, const cat_rel *rel, const an_level *lv)
{
    close_over_joins(r);
    return scoped_at(r, rel, lv);
}

bool an_rel_scoped(an_run *r, const cat_rel *rel)
{
    close_over_joins(r);
    bool any = false;
    for (int i = 0; i < r->nreads; i++) {
        if (r->reads[i].rel != rel)
            continue;
        any = true;
        if (!scoped_at(r, rel, r->reads[i].level))
            return false;
    }
    return any;
}

void an_note_literal(an_run *r, const Node *n)
{
    sp_stmt_result *st = r->an->st;
    if (!n || n->node_case != PG_QUERY__NODE__NODE_A_CONST || n->a_const->location < 0) {
        st->literal_sensitive = true;
        return;
    }
    if (st->nsens == st->capsens) {
        int ncap = st->capsens ? st->capsens * 2 : 4;
        uint32_t *ns = sp_alloc(r->a, (size_t)ncap * sizeof *ns);
        if (st->nsens)
            memcpy(ns, st->sens, (size_t)st->nsens * sizeof *ns);
        st->sens = ns;
        st->capsens = ncap;
    }
    st->sens[st->nsens++] = (uint32_t)n->a_const->location;
}

void an_search_path(an_run *r, bool local, const char *path)
{
    sp_stmt_result *st = r->an->st;
    st->uncacheable = true;
    if (local) {
        /* it ends with the transaction, which phigate does not follow */
        an_deny(r, "session.search_path",
                "phigate follows search_path per session; set it with SET search_path (not LOCAL)");
        return;
    }
    st->effect = SPE_SEARCH_PATH;
    st->effect_name = path;
}
