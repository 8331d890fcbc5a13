/*
 * FROM clauses and name resolution: relations (tables, views, relations the
 * catalog does not know), subqueries, functions, joins, CTEs; and the lookup
 * of a column reference through the levels of a query the way the server's
 * parse_relation.c does it (innermost level first, then enclosing ones).
 */
#include <string.h>

#include "sqlpolicy/sp_analyze.h"

/* ---- relations ------------------------------------------------------------------ */

static bool rules_mention(const sqlp_catalog *cat, const char *schema, const char *table)
{
    for (int i = 0; i < cat->nrules; i++) {
        const sp_rule_col *rc = &cat->rules[i];
        if (strcmp(rc->table, table) == 0 && (!schema || !rc->schema || strcmp(rc->schema, schema) == 0))
            return true;
    }
    return false;
}

/* A relation the catalog does not know (created since the catalog was read,
 * a temp table): its columns are made up as they are referenced, and a
 * masking rule naming it still applies. */
static cat_rel *synthetic_rel(an_run *r, const char *schema, const char *name)
{
    cat_rel *rel = sp_alloc(r->a, sizeof *rel);
    rel->schema = schema ? schema : "?";
    rel->name = name;
    rel->relkind = 'u'; /* lives in this decision's arena only */
    rel->has_phi = true;
    return rel;
}

static void rename_cols(an_run *r, an_col *cols, int n, const PgQuery__Alias *alias)
{
    (void)r;
    if (!alias)
        return;
    for (size_t i = 0; i < alias->n_colnames && (int)i < n; i++) {
        const char *s = an_str(alias->colnames[i]);
        if (s)
            cols[i].name = s;
    }
}

static void copy_cols(an_run *r, an_rte *t, const an_col *cols, int n)
{
    for (int i = 0; i < n; i++) {
        an_col *c = an_rte_add_col(r, t, cols[i].name);
        *c = cols[i];
        c->hidden = false;
        c->lin.cap = c->lin.n; /* shared source array: any addition copies it */
    }
}

an_rte *an_relation(an_run *r, an_level *lv, const PgQuery__RangeVar *rv, bool read)
{
    const sqlp_catalog *cat = r->an->cat;
    const char *schema = rv->schemaname && *rv->schemaname ? rv->schemaname : NULL;
    const char *name = rv->relname ? rv->relname : "";
    cat_rel *rel = NULL;
    if (schema) {
        rel = sp_cat_find(cat, schema, name);
    } else {
        /* pg_catalog is searched before the path unless the path names it */
        rel = sp_cat_find(cat, "pg_catalog", name);
        for (int i = 0; i < r->an->npath && !rel; i++)
            rel = sp_cat_find(cat, r->an->path[i], name);
    }
    const char *why = rel ? (rel->blocked ? rel->blocked_why : NULL) : sp_blocked_relation(schema, name);
    if (!why && r->an->dialect == SQLP_DIALECT_MYSQL)
        why = sp_mysql_blocked(schema, name);
    if (why)
        an_deny(r, "relation.blocked", "%s%s%s may not be read through phigate: %s", schema ? schema : "",
                schema ? "." : "", name, why);
    an_rte *t = an_rte_new(r, rv->alias && rv->alias->aliasname ? rv->alias->aliasname : name);
    t->relname = name;
    t->schema = rel ? rel->schema : schema;
    if (!rel) {
        t->unknown = true;
        const char *rs = schema;
        bool mention = rules_mention(cat, schema, name);
        for (int i = 0; !schema && !mention && i < r->an->npath; i++)
            if (rules_mention(cat, r->an->path[i], name)) {
                mention = true;
                rs = r->an->path[i];
            }
        if (mention) {
            t->rel = synthetic_rel(r, rs, name);
            if (read)
                an_note_read(r, t->rel, lv);
        }
        return t;
    }
    t->rel = rel;
    bool view = rel->viewdef && !rel->system;
    if (view && rel->view_state == 0)
        (void)sp_analyse_view(r->an->eng, rel, r->view_depth + 1);
    for (int i = 0; i < rel->ncols; i++) {
        const cat_col *cc = &rel->cols[i];
        an_col *c = an_rte_add_col(r, t, cc->name);
        if (view) {
            if (rel->view_state == 2 && rel->view_lin) {
                c->lin = rel->view_lin[i];
                c->lin.cap = c->lin.n;
                if ((c->lin.flags & SP_LIN_IDENT) && c->lin.n == 1)
                    c->type = c->lin.src[0]->type_name;
            } else {
                c->lin.flags = SP_LIN_OPAQUE; /* a view we could not analyse may show anything */
            }
        } else {
            lin_add_col(r->a, &c->lin, cc);
            c->lin.flags |= SP_LIN_IDENT;
            c->type = cc->type_name;
        }
        if (read)
            for (int j = 0; j < c->lin.n; j++)
                an_note_read(r, c->lin.src[j]->rel, lv);
    }
    if (read && !view)
        an_note_read(r, rel, lv);
    rename_cols(r, t->cols, t->ncols, rv->alias);
    return t;
}

/* A column of an unknown relation, made up on first use. */
static an_col *unknown_col(an_run *r, an_rte *t, const char *name)
{
    for (int i = 0; i < t->ncols; i++)
        if (strcmp(t->cols[i].name, name) == 0)
            return &t->cols[i];
    an_col *c = an_rte_add_col(r, t, name);
    c->lin = t->unknown_lin;
    c->lin.cap = c->lin.n;
    c->lin.flags &= (uint8_t)~SP_LIN_IDENT;
    if (!t->relname || !t->rel)
        return c;
    const sqlp_catalog *cat = r->an->cat;
    const sp_rule_col *rc = sp_cat_rule(cat, t->schema, t->relname, name);
    for (int i = 0; !rc && !t->schema && i < r->an->npath; i++)
        rc = sp_cat_rule(cat, r->an->path[i], t->relname, name);
    if (rc) {
        cat_col *cc = sp_alloc(r->a, sizeof *cc);
        cc->name = name;
        cc->type_name = "unknown";
        cc->rel = t->rel;
        cc->attnum = 0;
        cc->phi_class = rc->phi_class;
        cc->mask = rc->mask;
        cc->join_key = rc->join_key;
        c->lin = (sp_lin){0};
        lin_add_col(r->a, &c->lin, cc);
        c->lin.flags |= SP_LIN_IDENT;
    }
    return c;
}

/* ---- column references ----------------------------------------------------------- */

/* Unqualified lookups skip columns a USING join merged (the join's merged
 * column answers instead); a qualified one sees them, as in the server. */
static an_col *find_col(an_run *r, an_rte *t, const char *name, bool qualified)
{
    for (int i = 0; i < t->ncols; i++) {
        an_col *c = &t->cols[i];
        if (!qualified && c->hidden)
            continue;
        if (strcmp(c->name, name) == 0)
            return c;
    }
    if (t->unknown && qualified)
        return unknown_col(r, t, name);
    return NULL;
}

/* System columns carry no data values (row location, transaction ids). */
static bool is_system_column(const char *n)
{
    static const char *const sys[] = {"ctid", "xmin", "xmax", "cmin", "cmax", "tableoid", NULL};
    for (int i = 0; sys[i]; i++)
        if (strcmp(n, sys[i]) == 0)
            return true;
    return false;
}

an_col *an_resolve(an_run *r, an_level *lv, const PgQuery__ColumnRef *cr, an_rte **rte_out, bool *whole,
                   bool *ambiguous)
{
    const char *names[4];
    int nf = 0;
    bool star = false;
    *whole = false;
    *ambiguous = false;
    *rte_out = NULL;
    for (size_t i = 0; i < cr->n_fields; i++) {
        const Node *f = cr->fields[i];
        if (f->node_case == PG_QUERY__NODE__NODE_A_STAR && i + 1 == cr->n_fields)
            star = true;
        else if (an_str(f) && nf < 4)
            names[nf++] = an_str(f);
        else
            return NULL;
    }
    if (star && nf == 0) {
        /* a bare '*' inside an expression: every column of the level */
        an_rte *all = an_rte_new(r, NULL);
        for (int i = 0; i < lv->nrtes; i++)
            copy_cols(r, all, lv->rtes[i]->cols, lv->rtes[i]->ncols);
        *rte_out = all;
        *whole = true;
        return NULL;
    }
    if (nf == 0)
        return NULL;
    for (an_level *l = lv; l; l = l->parent) {
        if (nf == 1 && !star) {
            const char *name = names[0];
            an_col *found = NULL;
            int hits = 0;
            for (int i = 0; i < l->nrtes; i++) {
                an_col *c = find_col(r, l->rtes[i], name, false);
                if (c) {
                    if (!found) {
                        found = c;
                        *rte_out = l->rtes[i];
                    }
                    hits++;
                }
            }
            *ambiguous = hits > 1;
            if (found)
                return found;
            for (int i = 0; i < l->nrtes; i++)
                if (l->rtes[i]->name && strcmp(l->rtes[i]->name, name) == 0) {
                    *rte_out = l->rtes[i];
                    *whole = true; /* "SELECT p FROM patients p": the whole row */
                    return NULL;
                }
            /* an unknown relation at this level may have it; one with a PHI rule first */
            an_rte *cand = NULL;
            for (int i = 0; i < l->nrtes; i++)
                if (l->rtes[i]->unknown && (!cand || l->rtes[i]->rel))
                    cand = l->rtes[i];
            if (cand) {
                *rte_out = cand;
                return unknown_col(r, cand, name);
            }
            continue;
        }
        const char *relq = star ? names[nf - 1] : names[nf - 2];
        const char *schq = star ? (nf >= 2 ? names[nf - 2] : NULL) : (nf >= 3 ? names[nf - 3] : NULL);
        for (int i = 0; i < l->nrtes; i++) {
            an_rte *t = l->rtes[i];
            if (!t->name || strcmp(t->name, relq) != 0)
                continue;
            if (schq && !(t->relname && strcmp(t->name, t->relname) == 0 && t->schema && strcmp(t->schema, schq) == 0))
                continue;
            *rte_out = t;
            if (star) {
                *whole = true;
                return NULL;
            }
            return find_col(r, t, names[nf - 1], true);
        }
    }
    if (!star && nf == 2) {
        /* "addr.zip": a field of a composite column; derived, never identical */
        PgQuery__ColumnRef one = *cr;
        one.n_fields = 1;
        bool w, a;
        an_col *base = an_resolve(r, lv, &one, rte_out, &w, &a);
        if (base && !w) {
            an_col *d = sp_alloc(r->a, sizeof *d);
            *d = *base;
            d->lin.cap = d->lin.n;
            d->lin.flags &= (uint8_t)~SP_LIN_IDENT;
            d->type = NULL;
            return d;
        }
    }
    if (!star && is_system_column(names[nf - 1])) {
        static an_col sys = {.name = "(system column)"};
        return &sys;
    }
    return NULL;
}

/* ---- FROM items --------------------------------------------------------------------- */

static an_cte *find_cte(an_level *lv, const char *name)
{
    for (an_level *l = lv; l; l = l->parent)
        for (an_cte *c = l->ctes; c; c = c->next)
            if (strcmp(c->name, name) == 0)
                return c;
    return NULL;
}

/* What a non-LATERAL subquery or function in FROM may see: the enclosing
 * query's levels and this level's CTEs, not its sibling FROM items. */
static an_level *outer_view(an_run *r, an_level *lv)
{
    an_level *o = an_level_new(r, lv->parent);
    o->ctes = lv->ctes;
    o->bound_by = lv; /* not visible by name, but its LIMIT bounds the rows */
    return o;
}

static an_item *leaf(an_run *r, an_level *lv, an_rte *t)
{
    an_level_add(r, lv, t);
    an_item *it = sp_alloc(r->a, sizeof *it);
    it->rte = t;
    return it;
}

/* Visible column of an item by name, for USING / NATURAL. */
static an_col *item_find(an_item *it, const char *name)
{
    if (!it)
        return NULL;
    if (!it->l) {
        for (int i = 0; i < it->rte->ncols; i++)
            if (!it->rte->cols[i].hidden && strcmp(it->rte->cols[i].name, name) == 0)
                return &it->rte->cols[i];
        return NULL;
    }
    for (int i = 0; i < it->nmerged; i++)
        if (!it->rte->cols[i].hidden && strcmp(it->rte->cols[i].name, name) == 0)
            return &it->rte->cols[i];
    an_col *c = item_find(it->l, name);
    return c ? c : item_find(it->r, name);
}


static void visible_names(an_run *r, an_item *it, const char ***names, int *n, int *cap)
{
    if (!it)
        return;
    int from = 0, to = it->l ? it->nmerged : it->rte->ncols;
    for (int i = from; i < to; i++) {
        an_col *c = &it->rte->cols[i];
        if (c->hidden)
            continue;
        if (*n == *cap) {
            int ncap = *cap ? *cap * 2 : 16;
            const char **nn = sp_alloc(r->a, (size_t)ncap * sizeof *nn);
            if (*n)
                memcpy(nn, *names, (size_t)*n * sizeof *nn);
            *names = nn;
            *cap = ncap;
        }
        (*names)[(*n)++] = c->name;
    }
    if (it->l) {
        visible_names(r, it->l, names, n, cap);
        visible_names(r, it->r, names, n, cap);
    }
}

/* A join: USING / NATURAL columns merge (and are compared with '=', a join
 * on them is a predicate), ON is a predicate, an alias names the whole. */
static an_item *join(an_run *r, an_level *lv, const PgQuery__JoinExpr *j, int depth)
{
    an_item *li = an_from_item(r, lv, j->larg, depth + 1);
    an_item *ri = an_from_item(r, lv, j->rarg, depth + 1);
    if (!li || !ri)
        return NULL;
    const char *alias = j->alias && j->alias->aliasname ? j->alias->aliasname
                        : j->join_using_alias && j->join_using_alias->aliasname ? j->join_using_alias->aliasname
                                                                                 : NULL;
    an_rte *jt = an_rte_new(r, alias);
    jt->is_join = true;
    const char **names = NULL;
    int nnames = 0, cap = 0;
    if (j->is_natural) {
        const char **ln = NULL, **rn = NULL;
        int nl = 0, cl = 0, nr = 0, cr = 0;
        visible_names(r, li, &ln, &nl, &cl);
        visible_names(r, ri, &rn, &nr, &cr);
        names = sp_alloc(r->a, (size_t)(nl ? nl : 1) * sizeof *names);
        for (int i = 0; i < nl; i++)
            for (int k = 0; k < nr; k++)
                if (strcmp(ln[i], rn[k]) == 0) {
                    names[nnames++] = ln[i];
                    break;
                }
    } else if (j->n_using_clause) {
        names = sp_alloc(r->a, j->n_using_clause * sizeof *names);
        for (size_t i = 0; i < j->n_using_clause; i++)
            if (an_str(j->using_clause[i]))
                names[nnames++] = an_str(j->using_clause[i]);
    }
    (void)cap;
    const char *saved = r->clause;
    r->clause = j->is_natural ? "NATURAL JOIN" : "JOIN ... USING";
    int nmerged = 0;
    for (int i = 0; i < nnames; i++) {
        an_col *lc = item_find(li, names[i]), *rc = item_find(ri, names[i]);
        if (!lc || !rc)
            continue; /* the server reports it */
        /* joining on them compares them with '=' */
        an_check_pred(r, lc, true);
        an_check_pred(r, rc, true);
        an_note_join(r, &lc->lin, &rc->lin, lv);
        an_col *m = an_rte_add_col(r, jt, names[i]);
        const an_col *src = j->jointype == PG_QUERY__JOIN_TYPE__JOIN_RIGHT ? rc : lc;
        if (j->jointype == PG_QUERY__JOIN_TYPE__JOIN_FULL) {
            lin_merge(r->a, &m->lin, &lc->lin);
            lin_merge(r->a, &m->lin, &rc->lin);
        } else {
            m->lin = src->lin;
            m->lin.cap = m->lin.n;
            m->type = src->type;
        }
        lc->hidden = rc->hidden = true;
        nmerged++;
    }
    r->clause = saved;
    if (alias) {
        /* an aliased join exposes all its columns under the alias */
        const char **vn = NULL;
        int nv = 0, cv = 0;
        visible_names(r, li, &vn, &nv, &cv);
        visible_names(r, ri, &vn, &nv, &cv);
        for (int i = 0; i < nv; i++) {
            an_col *c = item_find(li, vn[i]);
            if (!c)
                c = item_find(ri, vn[i]);
            if (c) {
                an_col *k = an_rte_add_col(r, jt, vn[i]);
                *k = *c;
                k->hidden = false;
                k->lin.cap = k->lin.n;
            }
        }
        rename_cols(r, jt->cols, jt->ncols, j->alias);
    }
    an_level_add(r, lv, jt);
    an_pred(r, j->quals, lv, "JOIN ... ON", depth + 1);
    an_item *it = sp_alloc(r->a, sizeof *it);
    it->rte = jt;
    it->l = li;
    it->r = ri;
    it->nmerged = nmerged;
    return it;
}

static an_item *range_function(an_run *r, an_level *lv, const PgQuery__RangeFunction *rf, int depth)
{
    /* a function in FROM sees the items before it, LATERAL or not (PostgreSQL docs, 7.2.1.5) */
    an_level *sees = lv;
    an_rte *t = an_rte_new(r, rf->alias && rf->alias->aliasname ? rf->alias->aliasname : NULL);
    bool unknown_cols = false;
    for (size_t i = 0; i < rf->n_functions; i++) {
        const Node *item = rf->functions[i];
        if (item->node_case != PG_QUERY__NODE__NODE_LIST || item->list->n_items < 1) {
            an_unsupported(r, item, "FROM");
            return NULL;
        }
        const Node *fn = item->list->items[0];
        const Node *defs = item->list->n_items > 1 ? item->list->items[1] : NULL;
        sp_lin l = {0};
        an_expr(r, fn, sees, AN_INTER, &l, depth + 1);
        l.flags &= (uint8_t)~SP_LIN_IDENT;
        const char *fname = "?column?";
        if (fn->node_case == PG_QUERY__NODE__NODE_FUNC_CALL && fn->func_call->n_funcname)
            fname = an_str(fn->func_call->funcname[fn->func_call->n_funcname - 1]);
        else
            fname = an_figure_colname(fn);
        if (!fname)
            fname = "?column?";
        if (!t->name)
            t->name = fname;
        Node *const *coldefs = NULL;
        size_t ncoldefs = 0;
        if (defs && defs->node_case == PG_QUERY__NODE__NODE_LIST) {
            coldefs = defs->list->items;
            ncoldefs = defs->list->n_items;
        } else if (rf->n_functions == 1 && rf->n_coldeflist) {
            coldefs = rf->coldeflist;
            ncoldefs = rf->n_coldeflist;
        }
        const char *const *srf = sp_srf_columns(fname);
        if (ncoldefs) {
            for (size_t k = 0; k < ncoldefs; k++) {
                const Node *cd = coldefs[k];
                const char *cn = cd->node_case == PG_QUERY__NODE__NODE_COLUMN_DEF ? cd->column_def->colname : NULL;
                an_col *c = an_rte_add_col(r, t, cn ? cn : "?column?");
                c->lin = l;
                c->lin.cap = c->lin.n;
            }
        } else if (srf) {
            for (int k = 0; srf[k]; k++) {
                an_col *c = an_rte_add_col(r, t, srf[k]);
                c->lin = l;
                c->lin.cap = c->lin.n;
            }
        } else if (sp_func_returns_record(fname)) {
            unknown_cols = true;
            lin_merge(r->a, &t->unknown_lin, &l);
        } else {
            /* a scalar function: one column, named by the alias when there is one */
            const char *cn = rf->alias && rf->alias->aliasname && rf->n_functions == 1 ? rf->alias->aliasname : fname;
            an_col *c = an_rte_add_col(r, t, cn);
            c->lin = l;
            c->lin.cap = c->lin.n;
        }
    }
    if (unknown_cols) {
        t->unknown = true;
        if (lin_phi(&t->unknown_lin))
            t->unknown_lin.flags |= SP_LIN_OPAQUE;
        if (rf->alias)
            for (size_t i = 0; i < rf->alias->n_colnames; i++)
                if (an_str(rf->alias->colnames[i]))
                    (void)unknown_col(r, t, an_str(rf->alias->colnames[i]));
    }
    if (rf->ordinality)
        (void)an_rte_add_col(r, t, "ordinality");
    if (!unknown_cols)
        rename_cols(r, t->cols, t->ncols, rf->alias);
    return leaf(r, lv, t);
}

an_item *an_from_item(an_run *r, an_level *lv, const Node *n, int depth)
{
    if (!n || an_too_deep(r, depth))
        return NULL;
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_RANGE_VAR: {
        const PgQuery__RangeVar *rv = n->range_var;
        an_cte *ce = (!rv->schemaname || !*rv->schemaname) && rv->relname ? find_cte(lv, rv->relname) : NULL;
        if (ce) {
            an_rte *t = an_rte_new(r, rv->alias && rv->alias->aliasname ? rv->alias->aliasname : ce->name);
            copy_cols(r, t, ce->cols, ce->ncols);
            rename_cols(r, t->cols, t->ncols, rv->alias);
            return leaf(r, lv, t);
        }
        return leaf(r, lv, an_relation(r, lv, rv, true));
    }
    case PG_QUERY__NODE__NODE_RANGE_SUBSELECT: {
        const PgQuery__RangeSubselect *rs = n->range_subselect;
        an_col *cols = NULL;
        int ncols = 0;
        an_query(r, rs->subquery, rs->lateral ? lv : outer_view(r, lv), AN_INTER, &cols, &ncols, depth + 1);
        an_rte *t = an_rte_new(r, rs->alias && rs->alias->aliasname ? rs->alias->aliasname : NULL);
        copy_cols(r, t, cols, ncols);
        rename_cols(r, t->cols, t->ncols, rs->alias);
        return leaf(r, lv, t);
    }
    case PG_QUERY__NODE__NODE_RANGE_FUNCTION:
        return range_function(r, lv, n->range_function, depth);
    case PG_QUERY__NODE__NODE_JOIN_EXPR:
        return join(r, lv, n->join_expr, depth);
    case PG_QUERY__NODE__NODE_RANGE_TABLE_SAMPLE: {
        const PgQuery__RangeTableSample *ts = n->range_table_sample;
        sp_lin l = {0};
        for (size_t i = 0; i < ts->n_args; i++)
            an_expr(r, ts->args[i], lv, AN_PRED, &l, depth + 1);
        return an_from_item(r, lv, ts->relation, depth + 1);
    }
    default:
        an_unsupported(r, n, "FROM");
        return NULL;
    }
}

/* ---- WITH ------------------------------------------------------------------------ */

static an_col *renamed(an_run *r, an_col *cols, int n, const PgQuery__CommonTableExpr *c)
{
    an_col *out = sp_alloc(r->a, (size_t)(n ? n : 1) * sizeof *out);
    for (int i = 0; i < n; i++) {
        out[i] = cols[i];
        out[i].lin.cap = out[i].lin.n;
        if ((size_t)i < c->n_aliascolnames && an_str(c->aliascolnames[i]))
            out[i].name = an_str(c->aliascolnames[i]);
    }
    return out;
}

void an_with(an_run *r, const PgQuery__WithClause *w, an_level *lv, int depth)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_ctes; i++) {
        const Node *n = w->ctes[i];
        if (n->node_case != PG_QUERY__NODE__NODE_COMMON_TABLE_EXPR) {
            an_unsupported(r, n, "WITH");
            return;
        }
        const PgQuery__CommonTableExpr *c = n->common_table_expr;
        if (c->search_clause || c->cycle_clause) {
            an_deny(r, "analyse.unsupported", "phigate cannot analyse this statement: SEARCH / CYCLE in WITH");
            return;
        }
        an_cte *ce = sp_alloc(r->a, sizeof *ce);
        ce->name = c->ctename ? c->ctename : "";
        const Node *q = c->ctequery;
        an_col *cols = NULL;
        int ncols = 0;
        if (w->recursive && q && q->node_case == PG_QUERY__NODE__NODE_SELECT_STMT &&
            q->select_stmt->op == PG_QUERY__SET_OPERATION__SETOP_UNION && q->select_stmt->larg) {
            /* the first branch gives the columns the recursive branch reads */
            an_select(r, q->select_stmt->larg, lv, AN_INTER, &cols, &ncols, depth + 1);
            ce->cols = renamed(r, cols, ncols, c);
            ce->ncols = ncols;
            ce->next = lv->ctes;
            lv->ctes = ce;
            an_col *rc = NULL;
            int rn = 0;
            an_select(r, q->select_stmt->rarg, lv, AN_INTER, &rc, &rn, depth + 1);
            /* iteration can move any column's value into any other: every
             * column derives from everything either branch reads */
            sp_lin all = {0};
            for (int k = 0; k < ncols; k++)
                lin_merge(r->a, &all, &ce->cols[k].lin);
            for (int k = 0; k < rn; k++)
                lin_merge(r->a, &all, &rc[k].lin);
            all.flags &= (uint8_t)~SP_LIN_IDENT;
            for (int k = 0; k < ncols; k++) {
                ce->cols[k].lin = all;
                ce->cols[k].lin.cap = all.n;
                ce->cols[k].type = NULL;
            }
            continue;
        }
        an_query(r, q, lv, AN_INTER, &cols, &ncols, depth + 1);
        ce->cols = renamed(r, cols, ncols, c);
        ce->ncols = ncols;
        ce->next = lv->ctes;
        lv->ctes = ce;
    }
}
