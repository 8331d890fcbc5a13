/*
 * Statements: the class of each (SPEC "Statements"), the statement-level
 * rules, and the entry points sp_analyse() and sp_analyse_view().
 *
 * A statement type this file does not name is refused with the node's name
 * ("phigate cannot analyse this statement: MergeStmt"): fail closed.
 */
#include <pg_query.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlpolicy/sp_analyze.h"

static void stmt(an_run *r, const Node *n, int depth);

/* ---- helpers ------------------------------------------------------------------------ */

/* Resolve a relation name the way the server does (pg_catalog, then the path). */
static cat_rel *lookup_rel(an_run *r, const char *schema, const char *name)
{
    const sqlp_catalog *cat = r->an->cat;
    if (!name)
        return NULL;
    if (schema && *schema)
        return sp_cat_find(cat, schema, name);
    cat_rel *rel = sp_cat_find(cat, "pg_catalog", name);
    for (int i = 0; i < r->an->npath && !rel; i++)
        rel = sp_cat_find(cat, r->an->path[i], name);
    return rel;
}

static bool rel_phi(an_run *r, const char *schema, const char *name)
{
    cat_rel *rel = lookup_rel(r, schema, name);
    if (rel)
        return rel->has_phi;
    const sqlp_catalog *cat = r->an->cat;
    for (int i = 0; i < cat->nrules; i++)
        if (name && strcmp(cat->rules[i].table, name) == 0)
            return true; /* not in the catalog, but a rule names it */
    return false;
}

static bool rangevar_phi(an_run *r, const PgQuery__RangeVar *rv)
{
    return rv && rel_phi(r, rv->schemaname, rv->relname);
}

/* A qualified name as a List of Strings (DROP TABLE a.b). */
static bool name_list_phi(an_run *r, const Node *n)
{
    if (!n || n->node_case != PG_QUERY__NODE__NODE_LIST)
        return false;
    const PgQuery__List *l = n->list;
    if (l->n_items == 1)
        return rel_phi(r, NULL, an_str(l->items[0]));
    if (l->n_items >= 2)
        return rel_phi(r, an_str(l->items[l->n_items - 2]), an_str(l->items[l->n_items - 1]));
    return false;
}

static void phi_ddl(an_run *r, const char *what, const char *name)
{
    r->an->st->touches_phi = true;
    an_deny(r, "phi.ddl",
            "%s on %s, which holds PHI, is not allowed through phigate (the masking catalog would no longer "
            "describe it)", what, name ? name : "a relation");
}

/* What the client will see per column, for the decision and the audit log. */
static void set_outputs(an_run *r, an_col *cols, int ncols)
{
    sp_stmt_result *st = r->an->st;
    st->ncols = ncols;
    st->cols = ncols ? sp_alloc(r->a, (size_t)ncols * sizeof *st->cols) : NULL;
    for (int i = 0; i < ncols; i++) {
        st->cols[i].name = cols[i].name;
        st->cols[i].lin = cols[i].lin;
        st->cols[i].masks = cols[i].masks;
        if (lin_phi(&cols[i].lin))
            st->touches_phi = true;
    }
}

/* SPEC: a read of a PHI table with no selective predicate on it and no small
 * LIMIT is held.  Judged on what comes back: output columns that derive
 * from PHI of a relation nothing restricts. */
static void check_unscoped(an_run *r, const an_col *cols, int ncols)
{
    if (r->explain)
        return;
    for (int i = 0; i < ncols; i++) {
        const sp_lin *l = &cols[i].lin;
        for (int k = 0; k < l->n; k++) {
            const cat_col *c = l->src[k];
            if (c->phi_class < 0 || c->rel->system || an_rel_scoped(r, c->rel))
                continue;
            an_hold(r, "phi.unscoped_read",
                    "the statement returns PHI (%s.%s) from every row of %s: no WHERE condition on it and no "
                    "LIMIT of at most %llu rows; narrow it or ask for approval",
                    c->rel->name, c->name, c->rel->name, (unsigned long long)r->an->role->unscoped_row_limit);
            return;
        }
    }
}

/* A SET value as the server would read it: string, number, or on/off. */
static const char *const_text(an_run *r, const Node *n)
{
    if (!n || n->node_case != PG_QUERY__NODE__NODE_A_CONST || n->a_const->isnull)
        return NULL;
    const PgQuery__AConst *c = n->a_const;
    switch (c->val_case) {
    case PG_QUERY__A__CONST__VAL_SVAL:
        return c->sval->sval;
    case PG_QUERY__A__CONST__VAL_IVAL:
        return sp_printf(r->a, "%d", c->ival ? c->ival->ival : 0);
    case PG_QUERY__A__CONST__VAL_FVAL:
        return c->fval->fval;
    case PG_QUERY__A__CONST__VAL_BOOLVAL:
        return c->boolval && c->boolval->boolval ? "on" : "off";
    default:
        return NULL;
    }
}

/* ---- statements that contain queries ----------------------------------------------- */

/* A query whose rows go to the client: masked, and held when unscoped. */
static void top_query(an_run *r, const Node *n, an_ctx ctx, int depth)
{
    an_col *cols = NULL;
    int ncols = 0;
    an_query(r, n, NULL, ctx, &cols, &ncols, depth);
    set_outputs(r, cols, ncols);
    check_unscoped(r, cols, ncols);
}

/* CREATE TABLE AS, SELECT INTO, CREATE VIEW, CREATE MATERIALIZED VIEW */
static void copying_query(an_run *r, const Node *q, const char *what, int depth)
{
    an_col *cols = NULL;
    int ncols = 0;
    r->an->st->cls = SQLP_CLASS_DDL;
    an_query(r, q, NULL, AN_INTER, &cols, &ncols, depth);
    for (int i = 0; i < ncols; i++) {
        if (!lin_phi(&cols[i].lin))
            continue;
        r->an->st->touches_phi = true;
        if (r->an->role->unmasked)
            continue;
        const sp_lin *l = &cols[i].lin;
        const cat_col *c = NULL;
        for (int k = 0; k < l->n && !c; k++)
            if (l->src[k]->phi_class >= 0)
                c = l->src[k];
        an_deny(r, "phi.copy", "%s would copy PHI (%s%s%s) into a new object; copying PHI is not allowed", what,
                c ? c->rel->name : "a PHI value", c ? "." : "", c ? c->name : "");
        return;
    }
}

/* EXPLAIN ANALYZE runs the statement, so it keeps the statement's class. */
static bool explain_analyze(const PgQuery__ExplainStmt *e)
{
    for (size_t i = 0; i < e->n_options; i++) {
        const Node *o = e->options[i];
        if (o->node_case != PG_QUERY__NODE__NODE_DEF_ELEM || !o->def_elem->defname)
            continue;
        if (strcmp(o->def_elem->defname, "analyze") == 0) {
            const Node *a = o->def_elem->arg;
            const char *v = NULL;
            if (!a)
                return true;
            if (a->node_case == PG_QUERY__NODE__NODE_STRING)
                v = a->string->sval;
            else if (a->node_case == PG_QUERY__NODE__NODE_BOOLEAN)
                return a->boolean->boolval;
            else if (a->node_case == PG_QUERY__NODE__NODE_INTEGER)
                return a->integer->ival != 0;
            return !v || !(sp_streq_ci(v, "off") || sp_streq_ci(v, "false") || strcmp(v, "0") == 0);
        }
    }
    return false;
}

static void explain(an_run *r, const PgQuery__ExplainStmt *e, int depth)
{
    sp_stmt_result *st = r->an->st;
    bool analyze = explain_analyze(e);
    if (e->n_options)
        st->literal_sensitive = true; /* EXPLAIN (ANALYZE 'off') */
    /* The plan shows no values, so the inner statement runs unmasked (a
     * masked plan would print the masking expressions, token key included);
     * its predicates are still judged and ANALYZE still runs its class. */
    bool saved_edits = r->no_edits, saved_explain = r->explain;
    r->no_edits = true;
    r->explain = true;
    stmt(r, e->query, depth + 1);
    r->no_edits = saved_edits;
    r->explain = saved_explain;
    st->rewritten = false;
    st->ncols = 0;
    st->cols = NULL;
    if (st->hold_rule && strcmp(st->hold_rule, "phi.unscoped_read") == 0) {
        st->hold_rule = NULL;
        st->hold_reason = NULL;
    }
    if (!analyze)
        st->cls = SQLP_CLASS_READ; /* nothing runs */
    else if (st->touches_phi && !r->an->role->unmasked)
        /* it runs the statement unmasked: errors and functions see raw values */
        an_deny(r, "explain.analyze_phi",
                "EXPLAIN ANALYZE would run this statement on unmasked PHI; use EXPLAIN without ANALYZE");
    st->effect = SPE_NONE;
}

/* COPY t TO STDOUT of a PHI table becomes COPY (SELECT masked columns FROM t) TO STDOUT. */
static void copy_stmt(an_run *r, const PgQuery__CopyStmt *c, int depth)
{
    sp_stmt_result *st = r->an->st;
    st->cls = SQLP_CLASS_EXPORT;
    if (c->is_program || (c->filename && *c->filename))
        an_escalate(r, SQLP_CLASS_ADMIN, "COPY to or from a server file or program");
    if (c->query) {
        top_query(r, c->query, AN_OUTPUT, depth + 1);
        return;
    }
    if (!c->relation)
        return;
    an_level *lv = an_level_new(r, NULL);
    an_rte *t = an_relation(r, lv, c->relation, !c->is_from);
    an_level_add(r, lv, t);
    an_item *it = sp_alloc(r->a, sizeof *it);
    it->rte = t;
    an_item_add(r, lv, it);
    if (c->where_clause)
        an_pred(r, c->where_clause, lv, "COPY ... WHERE", depth + 1);
    bool phi = t->rel && t->rel->has_phi;
    if (!phi)
        return;
    st->touches_phi = true;
    if (c->is_from)
        return; /* loading rows into a PHI table: the write class decides */
    if (t->unknown) {
        an_deny(r, "phi.export", "COPY of %s, which masking rules name but phigate's catalog does not list",
                c->relation->relname);
        return;
    }
    /* the columns to export, masked */
    an_col *cols = sp_alloc(r->a, (size_t)(t->ncols + (int)c->n_attlist + 1) * sizeof *cols);
    int ncols = 0;
    sp_buf sel;
    sp_buf_init(&sel, r->a, 256);
    sp_buf_puts(&sel, "(SELECT ");
    /* the attribute list's order, else the table's */
    int nwant = c->n_attlist ? (int)c->n_attlist : t->ncols;
    for (int i = 0; i < nwant; i++) {
        an_col *col = NULL;
        if (c->n_attlist) {
            const char *want = an_str(c->attlist[i]);
            for (int k = 0; want && k < t->ncols && !col; k++)
                if (strcmp(t->cols[k].name, want) == 0)
                    col = &t->cols[k];
            if (!col)
                continue; /* the server reports the unknown column */
        } else {
            col = &t->cols[i];
        }
        sp_buf ref;
        sp_buf_init(&ref, r->a, 32);
        sp_buf_ident(&ref, col->name, r->an->dialect);
        if (ncols)
            sp_buf_puts(&sel, ", ");
        cols[ncols] = *col;
        if (col_phi(col) && !r->an->role->unmasked) {
            const char *spec = NULL;
            const char *m = an_mask_text(r, sp_buf_cstr(&ref), col, &spec);
            sp_buf_printf(&sel, "%s AS ", m ? m : "NULL");
            sp_buf_ident(&sel, col->name, r->an->dialect);
            cols[ncols].masks = spec;
        } else {
            sp_buf_puts(&sel, ref.p);
        }
        ncols++;
    }
    set_outputs(r, cols, ncols);
    if (r->an->role->unmasked) {
        check_unscoped(r, cols, ncols);
        return;
    }
    /* the relation's tokens, and its column list if any, become the query */
    const sp_lexed *lx = r->an->lx;
    uint32_t loc = c->relation->location >= 0 ? (uint32_t)c->relation->location : 0;
    uint32_t end = an_colref_end(r, loc);
    int i = sp_tok_at(lx, loc);
    if (end <= loc || i < 0) {
        an_deny(r, "engine.rewrite_conflict", "phigate cannot rewrite this COPY");
        return;
    }
    while ((uint32_t)i < lx->ntok && lx->tok[i].end <= end)
        i++;
    if (c->n_attlist && (uint32_t)i < lx->ntok && lx->tok[i].kind == SPT_LPAREN) {
        int d = 0;
        for (; (uint32_t)i < lx->ntok; i++) {
            if (lx->tok[i].kind == SPT_LPAREN)
                d++;
            else if (lx->tok[i].kind == SPT_RPAREN && --d == 0) {
                end = lx->tok[i].end;
                break;
            }
        }
    }
    sp_buf_printf(&sel, " FROM %.*s)", (int)(an_colref_end(r, loc) - loc), r->an->sql + loc);
    an_edit(r, loc, end - loc, sp_buf_cstr(&sel));
    an_hold(r, "phi.export", "COPY exports every row of %s, which holds PHI (masked in the export); bulk exports "
                             "need approval", c->relation->relname);
}

/* ---- session statements ------------------------------------------------------------------- */

static void variable_set(an_run *r, const PgQuery__VariableSetStmt *v)
{
    sp_stmt_result *st = r->an->st;
    st->cls = SQLP_CLASS_SESSION;
    st->literal_sensitive = true; /* SET x = 'on' and SET x = 'off' differ */
    switch (v->kind) {
    case PG_QUERY__VARIABLE_SET_KIND__VAR_RESET_ALL:
        an_search_path(r, false, NULL);
        return;
    case PG_QUERY__VARIABLE_SET_KIND__VAR_SET_MULTI: /* SET TRANSACTION ..., SET SESSION CHARACTERISTICS */
        return;
    case PG_QUERY__VARIABLE_SET_KIND__VAR_RESET:
    case PG_QUERY__VARIABLE_SET_KIND__VAR_SET_DEFAULT:
    case PG_QUERY__VARIABLE_SET_KIND__VAR_SET_CURRENT:
        an_check_setting(r, v->name, NULL);
        if (v->name && sp_streq_ci(v->name, "search_path"))
            an_search_path(r, v->is_local, NULL);
        return;
    default:
        break;
    }
    const char *value = v->n_args ? const_text(r, v->args[0]) : NULL;
    an_check_setting(r, v->name, value ? value : "");
    if (v->name && sp_streq_ci(v->name, "search_path")) {
        /* names resolve on this path from now on: one quoted entry per element */
        sp_buf b;
        sp_buf_init(&b, r->a, 64);
        for (size_t i = 0; i < v->n_args; i++) {
            const char *e = const_text(r, v->args[i]);
            if (!e) {
                an_deny(r, "session.search_path", "SET search_path needs constant schema names behind phigate");
                return;
            }
            if (i)
                sp_buf_puts(&b, ", ");
            sp_buf_ident(&b, e, SQLP_DIALECT_POSTGRES);
        }
        an_search_path(r, v->is_local, b.len ? sp_buf_cstr(&b) : "\"\"");
    }
}

/* EXECUTE / FETCH run what was judged when it was prepared / declared in
 * this session; a name phigate never saw could run anything. */
static void session_lookup(an_run *r, bool cursor, const char *name)
{
    sp_stmt_result *st = r->an->st;
    st->uncacheable = true;
    const sp_sess_entry *e = sp_session_find(r->an->session, cursor, name);
    if (!e) {
        an_deny(r, cursor ? "session.unknown_cursor" : "session.unknown_prepared",
                "%s %s was not %s through phigate in this session, so phigate cannot tell what it runs",
                cursor ? "cursor" : "prepared statement", name ? name : "?", cursor ? "declared" : "prepared");
        return;
    }
    st->cls = e->cls;
    for (size_t i = 0; i < e->ncols; i++)
        if (e->cols[i].phi)
            st->touches_phi = true;
}

/* ---- the dispatcher ----------------------------------------------------------------------- */

/* Statements that only carry a class: no query inside, no relation to check. */
static bool plain_class(PgQuery__Node__NodeCase k, sqlp_class *out)
{
    switch (k) {
    case PG_QUERY__NODE__NODE_VARIABLE_SHOW_STMT:
    case PG_QUERY__NODE__NODE_TRANSACTION_STMT:
    case PG_QUERY__NODE__NODE_LISTEN_STMT:
    case PG_QUERY__NODE__NODE_UNLISTEN_STMT:
    case PG_QUERY__NODE__NODE_NOTIFY_STMT:
    case PG_QUERY__NODE__NODE_CONSTRAINTS_SET_STMT:
        *out = SQLP_CLASS_SESSION;
        return true;
    case PG_QUERY__NODE__NODE_CHECK_POINT_STMT:
    case PG_QUERY__NODE__NODE_ALTER_SYSTEM_STMT:
    case PG_QUERY__NODE__NODE_CREATEDB_STMT:
    case PG_QUERY__NODE__NODE_DROPDB_STMT:
    case PG_QUERY__NODE__NODE_ALTER_DATABASE_STMT:
    case PG_QUERY__NODE__NODE_ALTER_DATABASE_SET_STMT:
    case PG_QUERY__NODE__NODE_ALTER_DATABASE_REFRESH_COLL_STMT:
    case PG_QUERY__NODE__NODE_CREATE_TABLE_SPACE_STMT:
    case PG_QUERY__NODE__NODE_DROP_TABLE_SPACE_STMT:
    case PG_QUERY__NODE__NODE_ALTER_TABLE_SPACE_OPTIONS_STMT:
    case PG_QUERY__NODE__NODE_ALTER_TABLE_MOVE_ALL_STMT:
    case PG_QUERY__NODE__NODE_LOAD_STMT:
    case PG_QUERY__NODE__NODE_CREATE_EXTENSION_STMT:
    case PG_QUERY__NODE__NODE_ALTER_EXTENSION_STMT:
    case PG_QUERY__NODE__NODE_ALTER_EXTENSION_CONTENTS_STMT:
    case PG_QUERY__NODE__NODE_CREATE_FDW_STMT:
    case PG_QUERY__NODE__NODE_ALTER_FDW_STMT:
    case PG_QUERY__NODE__NODE_CREATE_FOREIGN_SERVER_STMT:
    case PG_QUERY__NODE__NODE_ALTER_FOREIGN_SERVER_STMT:
    case PG_QUERY__NODE__NODE_CREATE_USER_MAPPING_STMT:
    case PG_QUERY__NODE__NODE_ALTER_USER_MAPPING_STMT:
    case PG_QUERY__NODE__NODE_DROP_USER_MAPPING_STMT:
    case PG_QUERY__NODE__NODE_IMPORT_FOREIGN_SCHEMA_STMT:
    case PG_QUERY__NODE__NODE_CREATE_FOREIGN_TABLE_STMT:
    case PG_QUERY__NODE__NODE_CREATE_PUBLICATION_STMT:
    case PG_QUERY__NODE__NODE_ALTER_PUBLICATION_STMT:
    case PG_QUERY__NODE__NODE_CREATE_SUBSCRIPTION_STMT:
    case PG_QUERY__NODE__NODE_ALTER_SUBSCRIPTION_STMT:
    case PG_QUERY__NODE__NODE_DROP_SUBSCRIPTION_STMT:
    case PG_QUERY__NODE__NODE_CREATE_EVENT_TRIG_STMT:
    case PG_QUERY__NODE__NODE_ALTER_EVENT_TRIG_STMT:
    case PG_QUERY__NODE__NODE_CREATE_PLANG_STMT:
    case PG_QUERY__NODE__NODE_CREATE_AM_STMT:
    case PG_QUERY__NODE__NODE_CREATE_TRANSFORM_STMT:
        *out = SQLP_CLASS_ADMIN;
        return true;
    case PG_QUERY__NODE__NODE_GRANT_STMT:
    case PG_QUERY__NODE__NODE_GRANT_ROLE_STMT:
    case PG_QUERY__NODE__NODE_CREATE_ROLE_STMT:
    case PG_QUERY__NODE__NODE_ALTER_ROLE_STMT:
    case PG_QUERY__NODE__NODE_ALTER_ROLE_SET_STMT:
    case PG_QUERY__NODE__NODE_DROP_ROLE_STMT:
    case PG_QUERY__NODE__NODE_ALTER_DEFAULT_PRIVILEGES_STMT:
    case PG_QUERY__NODE__NODE_DROP_OWNED_STMT:
    case PG_QUERY__NODE__NODE_REASSIGN_OWNED_STMT:
    case PG_QUERY__NODE__NODE_ALTER_OWNER_STMT:
    case PG_QUERY__NODE__NODE_ALTER_POLICY_STMT:
    case PG_QUERY__NODE__NODE_SEC_LABEL_STMT:
        *out = SQLP_CLASS_PRIVILEGE;
        return true;
    case PG_QUERY__NODE__NODE_ALTER_FUNCTION_STMT:
        *out = SQLP_CLASS_PROCEDURAL;
        return true;
    case PG_QUERY__NODE__NODE_CREATE_SEQ_STMT:
    case PG_QUERY__NODE__NODE_ALTER_SEQ_STMT:
    case PG_QUERY__NODE__NODE_COMMENT_STMT:
    case PG_QUERY__NODE__NODE_CREATE_DOMAIN_STMT:
    case PG_QUERY__NODE__NODE_ALTER_DOMAIN_STMT:
    case PG_QUERY__NODE__NODE_DEFINE_STMT:
    case PG_QUERY__NODE__NODE_COMPOSITE_TYPE_STMT:
    case PG_QUERY__NODE__NODE_CREATE_ENUM_STMT:
    case PG_QUERY__NODE__NODE_CREATE_RANGE_STMT:
    case PG_QUERY__NODE__NODE_ALTER_ENUM_STMT:
    case PG_QUERY__NODE__NODE_ALTER_TYPE_STMT:
    case PG_QUERY__NODE__NODE_ALTER_OBJECT_DEPENDS_STMT:
    case PG_QUERY__NODE__NODE_CREATE_CAST_STMT:
    case PG_QUERY__NODE__NODE_CREATE_CONVERSION_STMT:
    case PG_QUERY__NODE__NODE_CREATE_OP_CLASS_STMT:
    case PG_QUERY__NODE__NODE_CREATE_OP_FAMILY_STMT:
    case PG_QUERY__NODE__NODE_ALTER_OP_FAMILY_STMT:
    case PG_QUERY__NODE__NODE_ALTER_OPERATOR_STMT:
    case PG_QUERY__NODE__NODE_ALTER_STATS_STMT:
    case PG_QUERY__NODE__NODE_ALTER_TSDICTIONARY_STMT:
    case PG_QUERY__NODE__NODE_ALTER_TSCONFIGURATION_STMT:
    case PG_QUERY__NODE__NODE_ALTER_COLLATION_STMT:
    case PG_QUERY__NODE__NODE_REINDEX_STMT:
        *out = SQLP_CLASS_DDL;
        return true;
    default:
        return false;
    }
}

/* ---- code --------------------------------------------------------------------------------- */

static bool word_is(const char *s, const sp_token *t, const char *w)
{
    return (t->kind == SPT_WORD || t->kind == SPT_QIDENT) && sp_strneq_ci(s + t->start, t->end - t->start, w);
}

/* The reason a piece of procedural code must not run through phigate, or NULL.
 * Its statements are never seen by the engine (plpgsql runs them inside the
 * server), so their results would reach notices, errors and tables unmasked:
 * code that names a relation holding PHI, runs dynamic SQL, or calls a
 * function phigate refuses is refused itself.  Nested strings are searched
 * too, as code often builds its queries in them. */
static const char *code_risk(an_run *r, const char *code, size_t len, int depth)
{
    if (depth > 4)
        return "it nests code too deeply to be read";
    sp_lexed lx;
    sp_lex(r->a, code, len, &lx);
    for (uint32_t i = 0; i < lx.ntok; i++) {
        const sp_token *t = &lx.tok[i];
        if (t->kind == SPT_STRING) {
            /* a body or a query in a string: read its contents as code */
            const char *s = code + t->start + t->prefix;
            size_t n = t->end - t->start - t->prefix;
            if (n >= 2 && s[0] == '$') {
                const char *open = memchr(s + 1, '$', n - 1);
                if (open && (size_t)(open - s) + 1 < n) {
                    size_t tag = (size_t)(open - s) + 1;
                    if (n >= 2 * tag) {
                        const char *why = code_risk(r, s + tag, n - 2 * tag, depth + 1);
                        if (why)
                            return why;
                    }
                }
            } else if (n >= 2) {
                const char *why = code_risk(r, s + 1, n - 2, depth + 1);
                if (why)
                    return why;
            }
            continue;
        }
        if (t->kind != SPT_WORD && t->kind != SPT_QIDENT)
            continue;
        char name[128];
        size_t nl = t->end - t->start;
        if (t->kind == SPT_QIDENT) {
            if (nl < 2 || nl - 2 >= sizeof name)
                continue;
            memcpy(name, code + t->start + 1, nl - 2);
            name[nl - 2] = 0;
        } else {
            if (nl >= sizeof name)
                continue;
            for (size_t k = 0; k < nl; k++) {
                char ch = code[t->start + k];
                name[k] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
            }
            name[nl] = 0;
        }
        if (word_is(code, t, "execute") && !(i > 0 && word_is(code, &lx.tok[i - 1], "for")))
            return "it runs dynamic SQL (EXECUTE)";
        const sqlp_catalog *cat = r->an->cat;
        for (int k = 0; k < cat->nrels; k++)
            if (cat->rels[k]->has_phi && !cat->rels[k]->system && strcmp(cat->rels[k]->name, name) == 0)
                return sp_printf(r->a, "it reads %s, which holds PHI", name);
        for (int k = 0; k < cat->nrules; k++)
            if (strcmp(cat->rules[k].table, name) == 0)
                return sp_printf(r->a, "it reads %s, which holds PHI", name);
        if (i + 1 < lx.ntok && lx.tok[i + 1].kind == SPT_LPAREN) {
            sp_func_kind k = sp_func_lookup(NULL, name);
            if (k == SPF_SQL_TEXT || k == SPF_ADMIN || k == SPF_ACTIVITY)
                return sp_printf(r->a, "it calls %s(), which %s", name, sp_func_why(name));
        }
        if (strcmp(name, "pg_stat_activity") == 0 || sp_blocked_relation(NULL, name))
            return sp_printf(r->a, "it reads %s", name);
    }
    return NULL;
}

static const char *defelem_str(const Node *n, const char *name)
{
    if (!n || n->node_case != PG_QUERY__NODE__NODE_DEF_ELEM || !n->def_elem->defname ||
        strcmp(n->def_elem->defname, name) != 0)
        return NULL;
    const Node *a = n->def_elem->arg;
    if (a && a->node_case == PG_QUERY__NODE__NODE_LIST && a->list->n_items)
        a = a->list->items[0];
    return an_str(a);
}

/* DO, CREATE FUNCTION / PROCEDURE: code in plpgsql or SQL whose text shows no
 * PHI, dynamic SQL or refused function; other languages are refused. */
static void code_stmt(an_run *r, Node *const *opts, size_t nopts, const Node *sql_body)
{
    sp_stmt_result *st = r->an->st;
    st->cls = SQLP_CLASS_PROCEDURAL;
    st->literal_sensitive = true; /* the body is a string: its contents decide */
    const char *lang = NULL;
    for (size_t i = 0; i < nopts; i++)
        if (!lang)
            lang = defelem_str(opts[i], "language");
    if (lang && strcmp(lang, "plpgsql") != 0 && strcmp(lang, "sql") != 0 && !r->an->role->unmasked) {
        an_deny(r, "phi.procedural", "code in language %s is not analysed by phigate", lang);
        return;
    }
    (void)sql_body; /* a SQL-standard body is in the statement's text, read below */
    uint32_t end = st->loc + st->len <= r->an->len ? st->loc + st->len : (uint32_t)r->an->len;
    const char *why = code_risk(r, r->an->sql + st->loc, end - st->loc, 0);
    if (why && !r->an->role->unmasked) {
        st->touches_phi = true;
        an_deny(r, "phi.procedural",
                "phigate does not run code it cannot analyse when %s; its results would bypass masking", why);
    }
}

/* A statement nested in another (rule actions, CREATE SCHEMA elements): its
 * denials count, its class does not replace the outer one. */
static void nested(an_run *r, const Node *n, int depth)
{
    sp_stmt_result *st = r->an->st;
    sqlp_class cls = st->cls;
    stmt(r, n, depth + 1);
    st->cls = cls;
    st->ncols = 0;
    st->cols = NULL;
}

static void stmt(an_run *r, const Node *n, int depth)
{
    sp_stmt_result *st = r->an->st;
    if (!n || an_too_deep(r, depth))
        return;
    sqlp_class cls;
    if (plain_class(n->node_case, &cls)) {
        st->cls = cls;
        return;
    }
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_SELECT_STMT:
        if (n->select_stmt->into_clause) {
            PgQuery__SelectStmt copy = *n->select_stmt;
            copy.into_clause = NULL;
            Node q = *n;
            q.select_stmt = &copy;
            copying_query(r, &q, "SELECT INTO", depth + 1);
            return;
        }
        st->cls = SQLP_CLASS_READ;
        top_query(r, n, AN_OUTPUT, depth + 1);
        return;
    case PG_QUERY__NODE__NODE_INSERT_STMT:
    case PG_QUERY__NODE__NODE_UPDATE_STMT:
    case PG_QUERY__NODE__NODE_DELETE_STMT: {
        st->cls = SQLP_CLASS_WRITE;
        an_col *cols = NULL;
        int ncols = 0;
        if (n->node_case == PG_QUERY__NODE__NODE_INSERT_STMT)
            an_insert(r, n->insert_stmt, NULL, AN_OUTPUT, &cols, &ncols, depth + 1);
        else if (n->node_case == PG_QUERY__NODE__NODE_UPDATE_STMT)
            an_update(r, n->update_stmt, NULL, AN_OUTPUT, &cols, &ncols, depth + 1);
        else
            an_delete(r, n->delete_stmt, NULL, AN_OUTPUT, &cols, &ncols, depth + 1);
        set_outputs(r, cols, ncols);
        return;
    }
    case PG_QUERY__NODE__NODE_EXPLAIN_STMT:
        explain(r, n->explain_stmt, depth);
        return;
    case PG_QUERY__NODE__NODE_CREATE_TABLE_AS_STMT:
        copying_query(r, n->create_table_as_stmt->query,
                      n->create_table_as_stmt->objtype == PG_QUERY__OBJECT_TYPE__OBJECT_MATVIEW
                          ? "CREATE MATERIALIZED VIEW" : "CREATE TABLE AS",
                      depth + 1);
        return;
    case PG_QUERY__NODE__NODE_VIEW_STMT:
        copying_query(r, n->view_stmt->query, "CREATE VIEW", depth + 1);
        return;
    case PG_QUERY__NODE__NODE_COPY_STMT:
        copy_stmt(r, n->copy_stmt, depth);
        return;
    case PG_QUERY__NODE__NODE_PREPARE_STMT:
        stmt(r, n->prepare_stmt->query, depth + 1);
        st->effect = SPE_PREPARE;
        st->effect_name = n->prepare_stmt->name;
        st->effect_class = st->cls;
        st->uncacheable = true;
        return;
    case PG_QUERY__NODE__NODE_EXECUTE_STMT: {
        st->cls = SQLP_CLASS_READ;
        session_lookup(r, false, n->execute_stmt->name);
        an_level *lv = an_level_new(r, NULL);
        for (size_t i = 0; i < n->execute_stmt->n_params; i++) {
            sp_lin l = {0};
            an_expr(r, n->execute_stmt->params[i], lv, AN_INTER, &l, depth + 1);
        }
        return;
    }
    case PG_QUERY__NODE__NODE_DEALLOCATE_STMT:
        st->cls = SQLP_CLASS_SESSION;
        st->effect = SPE_DEALLOCATE;
        st->effect_name = n->deallocate_stmt->name && *n->deallocate_stmt->name ? n->deallocate_stmt->name
                                                                                : NULL; /* NULL: ALL */
        st->uncacheable = true;
        return;
    case PG_QUERY__NODE__NODE_DECLARE_CURSOR_STMT:
        st->cls = SQLP_CLASS_READ;
        top_query(r, n->declare_cursor_stmt->query, AN_OUTPUT, depth + 1);
        st->effect = SPE_DECLARE;
        st->effect_name = n->declare_cursor_stmt->portalname;
        st->uncacheable = true;
        return;
    case PG_QUERY__NODE__NODE_FETCH_STMT:
        st->cls = SQLP_CLASS_READ;
        session_lookup(r, true, n->fetch_stmt->portalname);
        return;
    case PG_QUERY__NODE__NODE_CLOSE_PORTAL_STMT:
        st->cls = SQLP_CLASS_SESSION;
        st->effect = SPE_CLOSE;
        st->effect_name = n->close_portal_stmt->portalname && *n->close_portal_stmt->portalname
                              ? n->close_portal_stmt->portalname
                              : NULL; /* NULL: ALL */
        st->uncacheable = true;
        return;
    case PG_QUERY__NODE__NODE_DISCARD_STMT:
        st->cls = SQLP_CLASS_SESSION;
        if (n->discard_stmt->target == PG_QUERY__DISCARD_MODE__DISCARD_ALL) {
            st->effect = SPE_DISCARD;
            st->uncacheable = true;
        }
        return;
    case PG_QUERY__NODE__NODE_VARIABLE_SET_STMT:
        variable_set(r, n->variable_set_stmt);
        return;
    case PG_QUERY__NODE__NODE_LOCK_STMT:
        st->cls = SQLP_CLASS_WRITE;
        return;
    case PG_QUERY__NODE__NODE_DO_STMT:
        code_stmt(r, n->do_stmt->args, n->do_stmt->n_args, NULL);
        return;
    case PG_QUERY__NODE__NODE_CREATE_FUNCTION_STMT:
        code_stmt(r, n->create_function_stmt->options, n->create_function_stmt->n_options,
                  n->create_function_stmt->sql_body);
        return;
    case PG_QUERY__NODE__NODE_CALL_STMT: {
        /* a procedure is a function phigate does not know unless the role lists it */
        st->cls = SQLP_CLASS_PROCEDURAL;
        if (n->call_stmt->funccall) {
            Node fn = {.node_case = PG_QUERY__NODE__NODE_FUNC_CALL, .func_call = n->call_stmt->funccall};
            sp_lin l = {0};
            an_expr(r, &fn, an_level_new(r, NULL), AN_INTER, &l, depth + 1);
        }
        return;
    }
    case PG_QUERY__NODE__NODE_TRUNCATE_STMT:
        st->cls = SQLP_CLASS_WRITE;
        for (size_t i = 0; i < n->truncate_stmt->n_relations; i++) {
            const Node *rv = n->truncate_stmt->relations[i];
            if (rv->node_case == PG_QUERY__NODE__NODE_RANGE_VAR && rangevar_phi(r, rv->range_var)) {
                st->touches_phi = true;
                an_hold(r, "phi.unscoped_write", "TRUNCATE of %s, which holds PHI, needs approval",
                        rv->range_var->relname);
            }
        }
        return;
    case PG_QUERY__NODE__NODE_CREATE_STMT: {
        /* a partition or child of a PHI table would hold PHI under a name no
         * rule covers (catalog rules follow the parent only at load time) */
        const PgQuery__CreateStmt *c = n->create_stmt;
        st->cls = SQLP_CLASS_DDL;
        for (size_t i = 0; i < c->n_inh_relations; i++) {
            const Node *rv = c->inh_relations[i];
            if (rv->node_case == PG_QUERY__NODE__NODE_RANGE_VAR && rangevar_phi(r, rv->range_var))
                phi_ddl(r, c->partbound ? "a new partition" : "a new inheritance child", rv->range_var->relname);
        }
        return;
    }
    case PG_QUERY__NODE__NODE_ALTER_TABLE_STMT:
        st->cls = SQLP_CLASS_DDL;
        if (rangevar_phi(r, n->alter_table_stmt->relation))
            phi_ddl(r, "ALTER", n->alter_table_stmt->relation->relname);
        return;
    case PG_QUERY__NODE__NODE_RENAME_STMT: {
        const PgQuery__RenameStmt *rs = n->rename_stmt;
        st->cls = SQLP_CLASS_DDL;
        if (rangevar_phi(r, rs->relation))
            phi_ddl(r, "RENAME", rs->relation->relname);
        if (rs->rename_type == PG_QUERY__OBJECT_TYPE__OBJECT_SCHEMA) {
            const sqlp_catalog *cat = r->an->cat;
            for (int i = 0; i < cat->nrels; i++)
                if (cat->rels[i]->has_phi && rs->subname && strcmp(cat->rels[i]->schema, rs->subname) == 0) {
                    phi_ddl(r, "RENAME SCHEMA", rs->subname);
                    break;
                }
        }
        return;
    }
    case PG_QUERY__NODE__NODE_ALTER_OBJECT_SCHEMA_STMT:
        st->cls = SQLP_CLASS_DDL;
        if (rangevar_phi(r, n->alter_object_schema_stmt->relation))
            phi_ddl(r, "ALTER ... SET SCHEMA", n->alter_object_schema_stmt->relation->relname);
        return;
    case PG_QUERY__NODE__NODE_DROP_STMT: {
        const PgQuery__DropStmt *d = n->drop_stmt;
        st->cls = SQLP_CLASS_DDL;
        PgQuery__ObjectType t = d->remove_type;
        if (t == PG_QUERY__OBJECT_TYPE__OBJECT_TABLE || t == PG_QUERY__OBJECT_TYPE__OBJECT_VIEW ||
            t == PG_QUERY__OBJECT_TYPE__OBJECT_MATVIEW || t == PG_QUERY__OBJECT_TYPE__OBJECT_FOREIGN_TABLE)
            for (size_t i = 0; i < d->n_objects; i++)
                if (name_list_phi(r, d->objects[i]))
                    phi_ddl(r, "DROP", "a relation");
        if (t == PG_QUERY__OBJECT_TYPE__OBJECT_SCHEMA)
            for (size_t i = 0; i < d->n_objects; i++) {
                const char *s = an_str(d->objects[i]);
                const sqlp_catalog *cat = r->an->cat;
                for (int k = 0; s && k < cat->nrels; k++)
                    if (cat->rels[k]->has_phi && strcmp(cat->rels[k]->schema, s) == 0) {
                        phi_ddl(r, "DROP SCHEMA", s);
                        break;
                    }
            }
        return;
    }
    case PG_QUERY__NODE__NODE_INDEX_STMT:
        st->cls = SQLP_CLASS_DDL;
        if (rangevar_phi(r, n->index_stmt->relation))
            st->touches_phi = true;
        return;
    case PG_QUERY__NODE__NODE_CREATE_STATS_STMT:
    case PG_QUERY__NODE__NODE_VACUUM_STMT:
    case PG_QUERY__NODE__NODE_CLUSTER_STMT:
        st->cls = SQLP_CLASS_DDL;
        return;
    case PG_QUERY__NODE__NODE_REFRESH_MAT_VIEW_STMT:
        st->cls = SQLP_CLASS_DDL;
        if (rangevar_phi(r, n->refresh_mat_view_stmt->relation))
            phi_ddl(r, "REFRESH MATERIALIZED VIEW", n->refresh_mat_view_stmt->relation->relname);
        return;
    case PG_QUERY__NODE__NODE_CREATE_TRIG_STMT:
        st->cls = SQLP_CLASS_PROCEDURAL;
        if (rangevar_phi(r, n->create_trig_stmt->relation))
            phi_ddl(r, "CREATE TRIGGER", n->create_trig_stmt->relation->relname);
        return;
    case PG_QUERY__NODE__NODE_RULE_STMT:
        st->cls = SQLP_CLASS_DDL;
        if (rangevar_phi(r, n->rule_stmt->relation))
            phi_ddl(r, "CREATE RULE", n->rule_stmt->relation->relname);
        for (size_t i = 0; i < n->rule_stmt->n_actions; i++)
            nested(r, n->rule_stmt->actions[i], depth);
        return;
    case PG_QUERY__NODE__NODE_CREATE_POLICY_STMT:
        st->cls = SQLP_CLASS_PRIVILEGE;
        if (rangevar_phi(r, n->create_policy_stmt->table))
            phi_ddl(r, "CREATE POLICY", n->create_policy_stmt->table->relname);
        return;
    case PG_QUERY__NODE__NODE_CREATE_SCHEMA_STMT:
        st->cls = SQLP_CLASS_DDL;
        for (size_t i = 0; i < n->create_schema_stmt->n_schema_elts; i++)
            nested(r, n->create_schema_stmt->schema_elts[i], depth);
        return;
    default:
        st->cls = SQLP_CLASS_ADMIN;
        an_unsupported(r, n, NULL);
        return;
    }
}

/* A top-level SELECT's constant LIMIT, or -1: what a planner estimate that
 * ignores LIMIT (MariaDB's EXPLAIN) is capped by. */
static int64_t top_row_limit(const Node *n)
{
    int64_t k;
    if (!n || n->node_case != PG_QUERY__NODE__NODE_SELECT_STMT)
        return -1;
    const PgQuery__SelectStmt *s = n->select_stmt;
    if (s->limit_count && an_const_int(s->limit_count, &k) && k >= 0)
        return k;
    return -1;
}

/* ---- entry points ------------------------------------------------------------------------- */

/* Each statement of a multi-statement string is judged on its own run state
 * (scopes, reads, joins): nothing of one leaks into the next's decision. */
void sp_analyse(sp_analysis *an, const void *parse_result)
{
    const PgQuery__ParseResult *pr = parse_result;
    an->nstmts = 0;
    an->stmts = sp_alloc(an->a, (pr->n_stmts ? pr->n_stmts : 1) * sizeof *an->stmts);
    for (size_t i = 0; i < pr->n_stmts; i++) {
        const PgQuery__RawStmt *raw = pr->stmts[i];
        sp_stmt_result *st = &an->stmts[i];
        uint32_t loc = raw->stmt_location > 0 ? (uint32_t)raw->stmt_location : 0;
        if (loc > an->len)
            loc = (uint32_t)an->len;
        st->loc = loc;
        st->len = raw->stmt_len > 0 ? (uint32_t)raw->stmt_len : (uint32_t)(an->len - loc);
        st->cls = SQLP_CLASS_READ;
        an->st = st;
        an->nstmts = (int)i + 1;
        an_run run = {.an = an, .a = an->a};
        sp_buf_init(&run.masks, an->a, 32);
        an->priv = &run;
        st->node = raw->stmt ? sp_strdup(an->a, an_node_name(raw->stmt)) : "(empty)";
        st->row_limit = top_row_limit(raw->stmt);
        stmt(&run, raw->stmt, 1);
        an->priv = NULL;
    }
}

/* A view's columns get the lineage of its definition, analysed once when the
 * engine is built (catalog.c), with a role that may read everything: only
 * lineage is wanted.  A view that cannot be analysed is treated as showing
 * PHI of unknown class in every column (redacted, never a predicate). */
bool sp_analyse_view(sqlp_engine *eng, cat_rel *rel, int depth)
{
    if (rel->view_state == 2)
        return true;
    if (rel->view_state == 1 || rel->view_state == 3)
        return false; /* a cycle, or already failed */
    if (depth > 16) {
        rel->view_state = 3;
        rel->view_error = "views nest too deep";
        return false;
    }
    rel->view_state = 1;
    sqlp_catalog *cat = eng->cat;
    sp_arena tmp;
    sp_arena_init(&tmp);
    PgQuery__ParseResult *volatile tree = NULL;
    jmp_buf jb;
    if (setjmp(jb)) {
        if (tree)
            pg_query__parse_result__free_unpacked(tree, NULL);
        sp_arena_free(&tmp);
        rel->view_state = 3;
        rel->view_error = "out of memory";
        return false;
    }
    tmp.oom = &jb;
    const char *err = NULL;
    size_t len = strlen(rel->viewdef);
    char *text = sp_strndup(&tmp, rel->viewdef, len);
    sp_lexed lx;
    sp_lex(&tmp, text, len, &lx);
    PgQueryProtobufParseResult pr = pg_query_parse_protobuf(text);
    if (pr.error)
        err = "the view definition does not parse";
    else
        tree = pg_query__parse_result__unpack(NULL, pr.parse_tree.len, (const uint8_t *)pr.parse_tree.data);
    pg_query_free_protobuf_parse_result(pr);
    if (!err && (!tree || tree->n_stmts != 1 || !tree->stmts[0]->stmt ||
                 tree->stmts[0]->stmt->node_case != PG_QUERY__NODE__NODE_SELECT_STMT))
        err = "the view definition is not a single SELECT";
    an_col *cols = NULL;
    int ncols = 0;
    sp_stmt_result st = {0};
    if (!err) {
        static const char *const dflt[] = {"public"};
        sp_analysis an = {
            .a = &tmp, .eng = eng, .cat = cat, .role = &eng->view_role,
            .profile = sp_cat_profile(cat, NULL), .dialect = SQLP_DIALECT_POSTGRES,
            .sql = text, .len = len, .lx = &lx,
            .path = cat->view_path ? cat->view_path : (const char **)dflt,
            .npath = cat->view_path ? cat->nview_path : 1,
            .st = &st, .stmts = &st, .nstmts = 1,
        };
        an_run run = {.an = &an, .a = &tmp, .no_edits = true, .view_depth = depth};
        sp_buf_init(&run.masks, &tmp, 32);
        an.priv = &run;
        an_select(&run, tree->stmts[0]->stmt->select_stmt, NULL, AN_INTER, &cols, &ncols, 1);
        if (st.deny_rule)
            err = sp_strdup(&cat->a, st.deny_reason ? st.deny_reason : st.deny_rule);
    }
    if (!err) {
        /* lineage moves into the catalog's arena, which outlives this analysis */
        sp_lin *lins = sp_alloc(&cat->a, (size_t)(rel->ncols ? rel->ncols : 1) * sizeof *lins);
        if (!lins)
            err = "out of memory";
        bool phi = false;
        for (int i = 0; !err && i < rel->ncols; i++) {
            sp_lin *dst = &lins[i];
            if (i >= ncols) {
                dst->flags = SP_LIN_OPAQUE;
                phi = true;
                continue;
            }
            const sp_lin *src = &cols[i].lin;
            dst->flags = src->flags;
            int n = 0;
            const cat_col **arr = src->n ? sp_alloc(&cat->a, src->n * sizeof *arr) : NULL;
            if (src->n && !arr) {
                err = "out of memory";
                break;
            }
            for (int k = 0; k < src->n; k++) {
                if (src->src[k]->rel->relkind == 'u')
                    dst->flags |= SP_LIN_OPAQUE; /* a relation only this analysis saw */
                else
                    arr[n++] = src->src[k];
            }
            dst->src = arr;
            dst->n = dst->cap = (uint16_t)n;
            if (dst->flags & SP_LIN_OPAQUE)
                dst->flags &= (uint8_t)~SP_LIN_IDENT;
            if (lin_phi(dst))
                phi = true;
        }
        if (!err) {
            rel->view_lin = lins;
            rel->has_phi = phi;
        }
    }
    if (tree)
        pg_query__parse_result__free_unpacked(tree, NULL);
    tree = NULL;
    sp_arena_free(&tmp);
    if (err) {
        rel->view_state = 3;
        rel->view_error = err;
        rel->has_phi = true; /* unknown lineage: treated as PHI */
        return false;
    }
    rel->view_state = 2;
    return true;
}
