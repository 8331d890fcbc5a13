/*
 * SELECT: target lists (with '*' expansion), WHERE / GROUP BY / HAVING /
 * ORDER BY / DISTINCT / LIMIT, VALUES and set operations.
 *
 * Output columns come back with their lineage.  In output context the PHI
 * references have already been replaced by masks as the walk met them; a
 * target whose PHI cannot be masked column by column (a whole-row reference
 * such as row_to_json(p)) is redacted as a whole.
 */
#include <string.h>

#include "sqlpolicy/sp_analyze.h"

static void add_out(an_run *r, an_col **cols, int *n, int *cap, const an_col *c)
{
    if (*n == *cap) {
        int ncap = *cap ? *cap * 2 : 8;
        an_col *nc = sp_alloc(r->a, (size_t)ncap * sizeof *nc);
        if (*n)
            memcpy(nc, *cols, (size_t)*n * sizeof *nc);
        *cols = nc;
        *cap = ncap;
    }
    (*cols)[(*n)++] = *c;
}

static const char *quoted(an_run *r, const char *ident)
{
    sp_buf b;
    sp_buf_init(&b, r->a, strlen(ident) + 3);
    sp_buf_ident(&b, ident, r->an->dialect);
    return sp_buf_cstr(&b);
}

/* ---- '*' ------------------------------------------------------------------------------ */

typedef struct star_list {
    an_rte **rte;
    an_col **col;
    bool *merged;
    int n, cap;
} star_list;

static void star_add(an_run *r, star_list *s, an_rte *t, an_col *c, bool merged)
{
    if (s->n == s->cap) {
        int ncap = s->cap ? s->cap * 2 : 16;
        an_rte **nr = sp_alloc(r->a, (size_t)ncap * sizeof *nr);
        an_col **nc = sp_alloc(r->a, (size_t)ncap * sizeof *nc);
        bool *nm = sp_alloc(r->a, (size_t)ncap * sizeof *nm);
        if (s->n) {
            memcpy(nr, s->rte, (size_t)s->n * sizeof *nr);
            memcpy(nc, s->col, (size_t)s->n * sizeof *nc);
            memcpy(nm, s->merged, (size_t)s->n * sizeof *nm);
        }
        s->rte = nr;
        s->col = nc;
        s->merged = nm;
        s->cap = ncap;
    }
    s->rte[s->n] = t;
    s->col[s->n] = c;
    s->merged[s->n] = merged;
    s->n++;
}

/* Columns of '*' over a FROM item, in the server's order (USING merges first). */
/* The server's order for '*' (expandRelAttrs / expandNSItemAttrs): a join's
 * merged USING columns first, then the left side's, then the right side's. */
static bool item_star(an_run *r, an_item *it, star_list *s)
{
    if (!it->l) {
        if (it->rte->unknown)
            return false;
        for (int i = 0; i < it->rte->ncols; i++)
            if (!it->rte->cols[i].hidden)
                star_add(r, s, it->rte, &it->rte->cols[i], false);
        return true;
    }
    for (int i = 0; i < it->nmerged; i++)
        if (!it->rte->cols[i].hidden)
            star_add(r, s, it->rte, &it->rte->cols[i], true);
    return item_star(r, it->l, s) && item_star(r, it->r, s);
}

/* '*' over PHI in output becomes an explicit list, each PHI column masked and
 * named as '*' would have named it; '*' without PHI stays as written. */
static void star(an_run *r, const PgQuery__ResTarget *rt, an_level *lv, an_ctx ctx, an_col **cols, int *n,
                 int *cap)
{
    const PgQuery__ColumnRef *cr = rt->val->column_ref;
    star_list s = {0};
    bool known = true;
    if (cr->n_fields == 1) {
        for (int i = 0; i < lv->nitems && known; i++)
            known = item_star(r, lv->items[i], &s);
    } else {
        an_rte *t = NULL;
        bool whole = false, amb = false;
        (void)an_resolve(r, lv, cr, &t, &whole, &amb);
        if (!t || !whole) {
            an_deny(r, "analyse.unknown_column", "the relation of a qualified '*' is not in phigate's catalog");
            return;
        }
        if (t->unknown)
            known = false;
        for (int i = 0; i < t->ncols && known; i++)
            star_add(r, &s, t, &t->cols[i], false);
    }
    bool phi = false;
    for (int i = 0; i < s.n; i++)
        if (col_phi(s.col[i]))
            phi = true;
    if (!known) {
        /* '*' over a relation the catalog does not know: only safe when no
         * masking rule names it */
        for (int i = 0; i < lv->nrtes; i++)
            if (lv->rtes[i]->unknown && (lv->rtes[i]->rel || lin_phi(&lv->rtes[i]->unknown_lin)))
                phi = true;
        if (phi && ctx != AN_INTER) {
            an_deny(r, "analyse.unknown_relation",
                    "'*' over a relation phigate's catalog does not list, while masking rules name it; "
                    "list the columns or reload phigate");
            return;
        }
    }
    if (phi)
        r->an->st->touches_phi = true;
    bool rewrite = phi && ctx == AN_OUTPUT && !r->an->role->unmasked;
    sp_buf text;
    if (rewrite)
        sp_buf_init(&text, r->a, 256);
    for (int i = 0; i < s.n; i++) {
        an_col oc = *s.col[i];
        oc.hidden = false;
        oc.lin.cap = oc.lin.n;
        oc.masks = NULL;
        if (ctx == AN_PRED || ctx == AN_PRED_EQ)
            an_check_pred(r, s.col[i], ctx == AN_PRED_EQ);
        if (rewrite) {
            const char *ref;
            if (s.merged[i] || !s.rte[i]->name)
                ref = quoted(r, s.col[i]->name);
            else
                ref = sp_printf(r->a, "%s.%s", quoted(r, s.rte[i]->name), quoted(r, s.col[i]->name));
            if (i)
                sp_buf_puts(&text, ", ");
            if (col_phi(s.col[i])) {
                const char *spec = NULL;
                const char *m = an_mask_text(r, ref, s.col[i], &spec);
                sp_buf_printf(&text, "%s AS %s", m ? m : "NULL", quoted(r, s.col[i]->name));
                oc.masks = spec;
            } else {
                sp_buf_puts(&text, ref);
            }
        }
        add_out(r, cols, n, cap, &oc);
    }
    if (rewrite) {
        if (cr->location < 0 || s.n == 0) {
            an_deny(r, "analyse.unsupported", "phigate cannot rewrite TABLE or an empty '*' over PHI; use SELECT with "
                                              "a column list");
            return;
        }
        uint32_t loc = (uint32_t)cr->location;
        uint32_t end = an_colref_end(r, loc);
        if (end <= loc) {
            an_deny(r, "engine.rewrite_conflict", "phigate cannot find the '*' it must expand");
            return;
        }
        an_edit(r, loc, end - loc, sp_buf_cstr(&text));
    }
}

/* ---- target lists ----------------------------------------------------------------------- */

/* End of a named target's expression: before AS, or before a bare alias. */
static uint32_t named_end(an_run *r, uint32_t loc, const char *alias)
{
    uint32_t end = an_expr_end(r, loc);
    const sp_lexed *lx = r->an->lx;
    int i = sp_tok_at(lx, loc);
    if (i < 0)
        return end;
    /* the last token inside [loc, end) */
    int last = i;
    while ((uint32_t)last + 1 < lx->ntok && lx->tok[last + 1].end <= end)
        last++;
    const sp_token *t = &lx->tok[last];
    if (last > i && (t->kind == SPT_WORD || t->kind == SPT_QIDENT)) {
        size_t tl = t->end - t->start;
        const char *ts = r->an->sql + t->start;
        bool same = t->kind == SPT_WORD ? sp_strneq_ci(ts, tl, alias)
                                        : (tl == strlen(alias) + 2 && memcmp(ts + 1, alias, tl - 2) == 0);
        if (same)
            return lx->tok[last - 1].end;
    }
    return end;
}

void an_targets(an_run *r, Node *const *targets, size_t n, an_level *lv, an_ctx ctx, an_col **cols, int *ncols,
                int depth)
{
    int cap = 0;
    *cols = NULL;
    *ncols = 0;
    for (size_t i = 0; i < n; i++) {
        const Node *tn = targets[i];
        if (tn->node_case != PG_QUERY__NODE__NODE_RES_TARGET) {
            an_unsupported(r, tn, "a target list");
            return;
        }
        const PgQuery__ResTarget *rt = tn->res_target;
        const Node *val = rt->val;
        bool named = rt->name && *rt->name; /* protobuf-c gives "" for no name */
        if (val && val->node_case == PG_QUERY__NODE__NODE_COLUMN_REF && val->column_ref->n_fields &&
            val->column_ref->fields[val->column_ref->n_fields - 1]->node_case == PG_QUERY__NODE__NODE_A_STAR) {
            star(r, rt, lv, ctx, cols, ncols, &cap);
            continue;
        }
        int mark = r->an->nedits;
        bool saved_whole = r->whole_row;
        sp_buf saved_masks = r->masks;
        r->whole_row = false;
        sp_buf_init(&r->masks, r->a, 32);
        an_col oc = {0};
        an_expr(r, val, lv, ctx, &oc.lin, depth + 1);
        oc.name = named ? rt->name : an_figure_colname(val);
        if (!named && r->an->srcmap && rt->location >= 0) {
            /* MySQL names an unnamed output by its text as written (a column by its
             * name as written): the name kept after masking must be that one */
            uint32_t loc = (uint32_t)rt->location, end = an_expr_end(r, loc);
            if (val && val->node_case == PG_QUERY__NODE__NODE_COLUMN_REF) {
                const sp_lexed *lx = r->an->lx;
                int t = sp_tok_at(lx, loc);
                while (t >= 0 && (uint32_t)t + 1 < lx->ntok && lx->tok[t + 1].end <= end)
                    t++;
                if (t >= 0)
                    loc = lx->tok[t].start;
            }
            const char *src = an_source(r, loc, end);
            if (src) {
                size_t n = strlen(src);
                if (n >= 2 && src[0] == '`' && src[n - 1] == '`')
                    src = sp_strndup(r->a, src + 1, n - 2);
                oc.name = src;
            }
        }
        if ((oc.lin.flags & SP_LIN_IDENT) && oc.lin.n == 1)
            oc.type = oc.lin.src[0]->type_name;
        if (ctx == AN_OUTPUT && !r->an->role->unmasked && !r->no_edits && rt->location >= 0) {
            uint32_t loc = (uint32_t)rt->location;
            if (r->whole_row) {
                /* PHI we cannot follow column by column: the whole value is
                 * redacted, and the expression is not even evaluated - a cast
                 * error or a pg_notify() would carry the raw row out */
                r->an->nedits = mark;
                uint32_t end = named ? named_end(r, loc, rt->name) : an_expr_end(r, loc);
                if (!an_source(r, loc, end))
                    an_deny(r, "engine.rewrite_conflict", "phigate cannot find the output it must redact");
                const char *txt = sp_printf(r->a, "'[REDACTED]'::text%s%s", named ? "" : " AS ",
                                            named ? "" : quoted(r, oc.name));
                an_edit(r, loc, end - loc, txt);
                r->masks.len = 0;
                an_note_mask(r, "redact");
                oc.lin.flags |= SP_LIN_OPAQUE;
            } else if (r->an->nedits > mark && !named) {
                /* masking changed the expression: keep the name the client expects */
                uint32_t end = an_expr_end(r, loc);
                an_edit(r, end, 0, sp_printf(r->a, " AS %s", quoted(r, oc.name)));
            }
        }
        oc.masks = r->masks.len ? sp_buf_cstr(&r->masks) : NULL;
        r->whole_row = saved_whole;
        r->masks = saved_masks;
        add_out(r, cols, ncols, &cap, &oc);
    }
}

/* ---- clauses over the output ------------------------------------------------------------- */

static an_col *output_ref(an_run *r, const Node *n, an_col *outs, int nouts, bool by_name)
{
    int64_t k;
    if (an_const_int(n, &k)) {
        an_note_literal(r, n); /* ORDER BY 1 and ORDER BY 2 differ */
        return k >= 1 && k <= nouts ? &outs[k - 1] : NULL;
    }
    if (by_name && n && n->node_case == PG_QUERY__NODE__NODE_COLUMN_REF && n->column_ref->n_fields == 1) {
        const char *name = an_str(n->column_ref->fields[0]);
        for (int i = 0; name && i < nouts; i++)
            if (outs[i].name && strcmp(outs[i].name, name) == 0)
                return &outs[i];
    }
    return NULL;
}

/* ORDER BY / DISTINCT ON: a bare name or a number means an output column
 * (already masked in output context); anything else is an expression over
 * the input, a predicate-like use. */
static void sort_clause(an_run *r, Node *const *items, size_t n, an_level *lv, an_col *outs, int nouts, an_ctx ctx,
                        const char *clause, int depth)
{
    for (size_t i = 0; i < n; i++) {
        const Node *it = items[i];
        const Node *e = it && it->node_case == PG_QUERY__NODE__NODE_SORT_BY ? it->sort_by->node : it;
        if (it && it->node_case == PG_QUERY__NODE__NODE_SORT_BY && it->sort_by->n_use_op == 2) {
            const char *sch = an_str(it->sort_by->use_op[0]);
            if (!sch || strcmp(sch, "pg_catalog") != 0)
                an_deny(r, "function.unknown", "ORDER BY USING an operator outside pg_catalog");
        }
        an_col *oc = output_ref(r, e, outs, nouts, true);
        if (oc) {
            if (ctx != AN_OUTPUT || r->an->role->unmasked) {
                const char *saved = r->clause;
                r->clause = clause;
                an_check_pred(r, oc, false);
                r->clause = saved;
            }
            continue;
        }
        an_pred(r, e, lv, clause, depth + 1);
    }
}

static void group_clause(an_run *r, Node *const *items, size_t n, an_level *lv, an_col *outs, int nouts,
                         an_ctx ctx, int depth)
{
    for (size_t i = 0; i < n; i++) {
        const Node *e = items[i];
        if (e && e->node_case == PG_QUERY__NODE__NODE_GROUPING_SET) {
            group_clause(r, e->grouping_set->content, e->grouping_set->n_content, lv, outs, nouts, ctx, depth + 1);
            continue;
        }
        an_col *oc = output_ref(r, e, outs, nouts, false);
        if (!oc && e && e->node_case == PG_QUERY__NODE__NODE_COLUMN_REF && e->column_ref->n_fields == 1) {
            /* GROUP BY prefers an input column; an output name only when none matches */
            an_rte *t;
            bool whole, amb;
            if (!an_resolve(r, lv, e->column_ref, &t, &whole, &amb) && !whole)
                oc = output_ref(r, e, outs, nouts, true);
        }
        const char *saved = r->clause;
        r->clause = "GROUP BY";
        if (oc) {
            if (ctx != AN_OUTPUT)
                an_check_pred(r, oc, true);
        } else {
            sp_lin l = {0};
            /* grouping compares values for equality */
            an_expr_eq(r, e, lv, AN_PRED, &l, depth + 1, true);
        }
        r->clause = saved;
    }
}

static void limit_clause(an_run *r, const PgQuery__SelectStmt *s, an_level *lv, int depth)
{
    int64_t k;
    if (s->limit_count && an_const_int(s->limit_count, &k) && k >= 0 &&
        (uint64_t)k <= r->an->role->unscoped_row_limit)
        lv->limited = true;
    /* LIMIT 5 and LIMIT 500 are judged differently; an expression is never "limited" */
    if (s->limit_count && s->limit_count->node_case == PG_QUERY__NODE__NODE_A_CONST)
        an_note_literal(r, s->limit_count);
    an_pred(r, s->limit_count, lv, "LIMIT", depth + 1);
    an_pred(r, s->limit_offset, lv, "OFFSET", depth + 1);
}

/* ---- SELECT ------------------------------------------------------------------------------- */

/* VALUES rows: column k derives from every row's k-th expression. */
static void values(an_run *r, const PgQuery__SelectStmt *s, an_level *lv, an_ctx ctx, an_col **cols, int *ncols,
                   int depth)
{
    int cap = 0;
    *cols = NULL;
    *ncols = 0;
    for (size_t i = 0; i < s->n_values_lists; i++) {
        const Node *row = s->values_lists[i];
        if (row->node_case != PG_QUERY__NODE__NODE_LIST) {
            an_unsupported(r, row, "VALUES");
            return;
        }
        for (size_t k = 0; k < row->list->n_items; k++) {
            if ((int)k >= *ncols) {
                an_col c = {.name = sp_printf(r->a, "column%zu", k + 1)};
                add_out(r, cols, ncols, &cap, &c);
            }
            sp_lin l = {0};
            an_expr(r, row->list->items[k], lv, ctx, &l, depth + 1);
            lin_merge(r->a, &(*cols)[k].lin, &l);
            (*cols)[k].lin.flags &= (uint8_t)~SP_LIN_IDENT;
        }
    }
}

/* UNION / INTERSECT / EXCEPT: in output each branch masks its own targets;
 * the result column derives from both branches. */
static void set_operation(an_run *r, const PgQuery__SelectStmt *s, an_level *parent, an_ctx ctx, an_col **cols,
                          int *ncols, int depth)
{
    an_level *lv = an_level_new(r, parent);
    an_with(r, s->with_clause, lv, depth + 1);
    limit_clause(r, s, lv, depth);
    an_col *lc = NULL, *rc = NULL;
    int ln = 0, rn = 0;
    an_select(r, s->larg, lv, ctx, &lc, &ln, depth + 1);
    an_select(r, s->rarg, lv, ctx, &rc, &rn, depth + 1);
    int n = ln < rn ? ln : rn;
    an_col *out = sp_alloc(r->a, (size_t)(n ? n : 1) * sizeof *out);
    for (int i = 0; i < n; i++) {
        out[i].name = lc[i].name;
        lin_merge(r->a, &out[i].lin, &lc[i].lin);
        lin_merge(r->a, &out[i].lin, &rc[i].lin);
        out[i].lin.flags &= (uint8_t)~SP_LIN_IDENT;
        if (lc[i].masks || rc[i].masks)
            out[i].masks = lc[i].masks ? lc[i].masks : rc[i].masks;
        /* INTERSECT, EXCEPT and UNION without ALL compare rows with '=' */
        if (ctx != AN_OUTPUT && !(s->op == PG_QUERY__SET_OPERATION__SETOP_UNION && s->all)) {
            const char *saved = r->clause;
            r->clause = "a set operation's row comparison";
            an_check_pred(r, &out[i], false);
            r->clause = saved;
        }
    }
    sort_clause(r, s->sort_clause, s->n_sort_clause, lv, out, n, ctx, "ORDER BY", depth);
    *cols = out;
    *ncols = n;
}

void an_select(an_run *r, const PgQuery__SelectStmt *s, an_level *parent, an_ctx ctx, an_col **cols, int *ncols,
               int depth)
{
    *cols = NULL;
    *ncols = 0;
    if (!s || an_too_deep(r, depth))
        return;
    if (s->op != PG_QUERY__SET_OPERATION__SETOP_NONE && s->op != PG_QUERY__SET_OPERATION__SET_OPERATION_UNDEFINED) {
        set_operation(r, s, parent, ctx, cols, ncols, depth);
        return;
    }
    an_level *lv = an_level_new(r, parent);
    an_with(r, s->with_clause, lv, depth + 1);
    if (s->n_values_lists) {
        values(r, s, lv, ctx, cols, ncols, depth);
        limit_clause(r, s, lv, depth);
        return;
    }
    for (size_t i = 0; i < s->n_from_clause; i++) {
        an_item *it = an_from_item(r, lv, s->from_clause[i], depth + 1);
        if (it)
            an_item_add(r, lv, it);
    }
    bool saved_where = r->in_where;
    r->in_where = true;
    an_pred(r, s->where_clause, lv, "WHERE", depth + 1);
    r->in_where = saved_where;
    an_targets(r, s->target_list, s->n_target_list, lv, ctx, cols, ncols, depth + 1);
    lv->has_group = s->n_group_clause > 0;
    group_clause(r, s->group_clause, s->n_group_clause, lv, *cols, *ncols, ctx, depth + 1);
    an_pred(r, s->having_clause, lv, "HAVING", depth + 1);
    for (size_t i = 0; i < s->n_window_clause; i++) {
        const Node *w = s->window_clause[i];
        if (w->node_case != PG_QUERY__NODE__NODE_WINDOW_DEF) {
            an_unsupported(r, w, "WINDOW");
            continue;
        }
        for (size_t k = 0; k < w->window_def->n_partition_clause; k++)
            an_pred(r, w->window_def->partition_clause[k], lv, "a window clause", depth + 1);
        for (size_t k = 0; k < w->window_def->n_order_clause; k++)
            an_pred(r, w->window_def->order_clause[k], lv, "a window clause", depth + 1);
    }
    if (s->n_distinct_clause) {
        bool plain = s->n_distinct_clause == 1 && (!s->distinct_clause[0] ||
                                                   s->distinct_clause[0]->node_case == PG_QUERY__NODE__NODE__NOT_SET);
        if (plain) {
            /* DISTINCT compares whole output rows */
            if (ctx != AN_OUTPUT) {
                const char *saved = r->clause;
                r->clause = "DISTINCT";
                for (int i = 0; i < *ncols; i++)
                    an_check_pred(r, &(*cols)[i], true);
                r->clause = saved;
            }
        } else {
            sort_clause(r, s->distinct_clause, s->n_distinct_clause, lv, *cols, *ncols, ctx, "DISTINCT ON",
                        depth + 1);
        }
    }
    sort_clause(r, s->sort_clause, s->n_sort_clause, lv, *cols, *ncols, ctx, "ORDER BY", depth + 1);
    limit_clause(r, s, lv, depth);
}

void an_query(an_run *r, const Node *n, an_level *parent, an_ctx ctx, an_col **cols, int *ncols, int depth)
{
    *cols = NULL;
    *ncols = 0;
    if (!n || an_too_deep(r, depth))
        return;
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_SELECT_STMT:
        if (n->select_stmt->into_clause) {
            an_deny(r, "analyse.unsupported", "phigate cannot analyse this statement: SELECT INTO inside a query");
            return;
        }
        an_select(r, n->select_stmt, parent, ctx, cols, ncols, depth);
        return;
    case PG_QUERY__NODE__NODE_INSERT_STMT:
        an_escalate(r, SQLP_CLASS_WRITE, "a data-modifying WITH query writes");
        an_insert(r, n->insert_stmt, parent, ctx, cols, ncols, depth);
        return;
    case PG_QUERY__NODE__NODE_UPDATE_STMT:
        an_escalate(r, SQLP_CLASS_WRITE, "a data-modifying WITH query writes");
        an_update(r, n->update_stmt, parent, ctx, cols, ncols, depth);
        return;
    case PG_QUERY__NODE__NODE_DELETE_STMT:
        an_escalate(r, SQLP_CLASS_WRITE, "a data-modifying WITH query writes");
        an_delete(r, n->delete_stmt, parent, ctx, cols, ncols, depth);
        return;
    default:
        an_unsupported(r, n, "a subquery");
        return;
    }
}
