/*
 * INSERT, UPDATE and DELETE.
 *
 * Writes are the write class; what they must not do with PHI:
 *   - copy it: a value derived from a PHI column written into any column
 *     (INSERT ... SELECT ssn, UPDATE t SET x = p.ssn) would come back later
 *     through a column no rule covers (rule phi.copy);
 *   - filter on it beyond the role's predicate rules (WHERE, USING, FROM);
 *   - return it raw: RETURNING is output, masked like a SELECT list;
 *   - change every row of a PHI table at once without approval
 *     (UPDATE / DELETE without WHERE: rule phi.unscoped_write).
 */
#include <string.h>

#include "sqlpolicy/sp_analyze.h"

static void no_copy(an_run *r, const sp_lin *l, const char *target, const char *column)
{
    if (!lin_phi(l) || r->an->role->unmasked)
        return;
    r->an->st->touches_phi = true;
    const cat_col *src = NULL;
    for (int i = 0; i < l->n && !src; i++)
        if (l->src[i]->phi_class >= 0)
            src = l->src[i];
    /* writing a column's own value back (SET ssn = ssn) copies nothing */
    if (src && l->n == 1 && (l->flags & SP_LIN_IDENT) && column && strcmp(src->name, column) == 0 &&
        strcmp(src->rel->name, target) == 0)
        return;
    an_deny(r, "phi.copy", "the statement copies PHI (%s%s%s) into %s%s%s; copying PHI is not allowed",
            src ? src->rel->name : "a PHI value", src ? "." : "", src ? src->name : "", target,
            column ? "." : "", column ? column : "");
}

static bool rte_phi(const an_rte *t)
{
    if (t->rel && t->rel->has_phi)
        return true;
    for (int i = 0; i < t->ncols; i++)
        if (col_phi(&t->cols[i]))
            return true;
    return false;
}

/* A write touches every row unless its WHERE has a selective predicate on the
 * target ("id > 0" and "id = 1 OR true" do not count; see analyze_expr.c). */
static bool write_scoped(an_run *r, const an_rte *t, const an_level *lv, const Node *where)
{
    return t->rel ? an_rel_scoped_at(r, t->rel, lv) : where != NULL;
}

static void target_rel(an_run *r, an_rte *t)
{
    if (t->rel && t->rel->viewdef && !t->rel->system && rte_phi(t))
        an_deny(r, "phi.write_view", "writing through view %s, which shows PHI, is not analysed by phigate",
                t->rel->name);
    if (rte_phi(t))
        r->an->st->touches_phi = true;
}

/* RETURNING * means the target's columns: the target is the first FROM item */
static void target_item(an_run *r, an_level *lv, an_rte *t)
{
    an_item *it = sp_alloc(r->a, sizeof *it);
    it->rte = t;
    an_item_add(r, lv, it);
}

static void returning(an_run *r, Node *const *list, size_t n, an_level *lv, an_ctx ctx, an_col **cols, int *ncols,
                      int depth)
{
    if (!n)
        return;
    an_targets(r, list, n, lv, ctx, cols, ncols, depth + 1);
}

void an_insert(an_run *r, const PgQuery__InsertStmt *s, an_level *parent, an_ctx ctx, an_col **cols, int *ncols,
               int depth)
{
    *cols = NULL;
    *ncols = 0;
    an_level *lv = an_level_new(r, parent);
    an_with(r, s->with_clause, lv, depth + 1);
    an_rte *t = an_relation(r, lv, s->relation, true);
    lv->limited = true; /* RETURNING gives back the rows this statement wrote */
    target_rel(r, t);
    const char *tname = s->relation->relname ? s->relation->relname : "?";
    if (s->select_stmt) {
        an_col *src = NULL;
        int nsrc = 0;
        /* the source sees the WITH clause, not the target */
        an_level *sl = an_level_new(r, parent);
        sl->ctes = lv->ctes;
        an_query(r, s->select_stmt, sl, AN_INTER, &src, &nsrc, depth + 1);
        for (int i = 0; i < nsrc; i++) {
            const char *col = NULL;
            if ((size_t)i < s->n_cols && s->cols[i]->node_case == PG_QUERY__NODE__NODE_RES_TARGET)
                col = s->cols[i]->res_target->name;
            else if (i < t->ncols)
                col = t->cols[i].name;
            /* INSERT ... SELECT never writes a value back into its own row */
            sp_lin l = src[i].lin;
            l.flags &= (uint8_t)~SP_LIN_IDENT;
            no_copy(r, &l, tname, col);
        }
    }
    an_level_add(r, lv, t);
    target_item(r, lv, t);
    if (s->on_conflict_clause) {
        const PgQuery__OnConflictClause *oc = s->on_conflict_clause;
        /* EXCLUDED is the proposed row: same columns as the target */
        an_rte *ex = an_rte_new(r, "excluded");
        for (int i = 0; i < t->ncols; i++) {
            an_col *c = an_rte_add_col(r, ex, t->cols[i].name);
            *c = t->cols[i];
        }
        an_level_add(r, lv, ex);
        for (size_t i = 0; i < oc->n_target_list; i++) {
            const Node *tn = oc->target_list[i];
            if (tn->node_case != PG_QUERY__NODE__NODE_RES_TARGET)
                continue;
            sp_lin l = {0};
            an_expr(r, tn->res_target->val, lv, AN_INTER, &l, depth + 1);
            no_copy(r, &l, tname, tn->res_target->name);
        }
        an_pred(r, oc->where_clause, lv, "ON CONFLICT ... WHERE", depth + 1);
    }
    returning(r, s->returning_list, s->n_returning_list, lv, ctx, cols, ncols, depth);
}

static void set_list(an_run *r, Node *const *targets, size_t n, an_level *lv, const char *tname, int depth)
{
    for (size_t i = 0; i < n; i++) {
        const Node *tn = targets[i];
        if (tn->node_case != PG_QUERY__NODE__NODE_RES_TARGET) {
            an_unsupported(r, tn, "SET");
            continue;
        }
        const PgQuery__ResTarget *rt = tn->res_target;
        sp_lin l = {0};
        an_expr(r, rt->val, lv, AN_INTER, &l, depth + 1);
        no_copy(r, &l, tname, rt->name);
        for (size_t k = 0; k < rt->n_indirection; k++) {
            sp_lin x = {0};
            an_expr(r, rt->indirection[k], lv, AN_PRED, &x, depth + 1);
        }
    }
}

void an_update(an_run *r, const PgQuery__UpdateStmt *s, an_level *parent, an_ctx ctx, an_col **cols, int *ncols,
               int depth)
{
    *cols = NULL;
    *ncols = 0;
    an_level *lv = an_level_new(r, parent);
    an_with(r, s->with_clause, lv, depth + 1);
    an_rte *t = an_relation(r, lv, s->relation, true);
    target_rel(r, t);
    an_level_add(r, lv, t);
    target_item(r, lv, t);
    for (size_t i = 0; i < s->n_from_clause; i++) {
        an_item *it = an_from_item(r, lv, s->from_clause[i], depth + 1);
        if (it)
            an_item_add(r, lv, it);
    }
    const char *tname = s->relation->relname ? s->relation->relname : "?";
    set_list(r, s->target_list, s->n_target_list, lv, tname, depth);
    bool saved = r->in_where;
    r->in_where = true;
    an_pred(r, s->where_clause, lv, "WHERE", depth + 1);
    r->in_where = saved;
    if (rte_phi(t) && !write_scoped(r, t, lv, s->where_clause))
        an_hold(r, "phi.unscoped_write", "UPDATE of every row of %s, which holds PHI, needs approval", tname);
    returning(r, s->returning_list, s->n_returning_list, lv, ctx, cols, ncols, depth);
}

void an_delete(an_run *r, const PgQuery__DeleteStmt *s, an_level *parent, an_ctx ctx, an_col **cols, int *ncols,
               int depth)
{
    *cols = NULL;
    *ncols = 0;
    an_level *lv = an_level_new(r, parent);
    an_with(r, s->with_clause, lv, depth + 1);
    an_rte *t = an_relation(r, lv, s->relation, true);
    target_rel(r, t);
    an_level_add(r, lv, t);
    target_item(r, lv, t);
    for (size_t i = 0; i < s->n_using_clause; i++) {
        an_item *it = an_from_item(r, lv, s->using_clause[i], depth + 1);
        if (it)
            an_item_add(r, lv, it);
    }
    bool saved = r->in_where;
    r->in_where = true;
    an_pred(r, s->where_clause, lv, "WHERE", depth + 1);
    r->in_where = saved;
    const char *tname = s->relation->relname ? s->relation->relname : "?";
    if (rte_phi(t) && !write_scoped(r, t, lv, s->where_clause))
        an_hold(r, "phi.unscoped_write", "DELETE of every row of %s, which holds PHI, needs approval", tname);
    returning(r, s->returning_list, s->n_returning_list, lv, ctx, cols, ncols, depth);
}
