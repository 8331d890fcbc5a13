/*
 * Expressions: lineage, masking of PHI references in output, predicate rules.
 *
 * One walker serves every context (see sp_analyze.h).  It merges the lineage
 * of every column an expression reads into *out; a bare column reference
 * keeps SP_LIN_IDENT so the output column can use its class's own mask and a
 * predicate can tell "ssn = $1" from "upper(ssn) = $1".
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sqlpolicy/sp_analyze.h"

static void expr(an_run *r, const Node *n, an_level *lv, an_ctx ctx, sp_lin *out, int depth, bool eq);

/* ---- predicates ------------------------------------------------------------------ */

void an_check_pred(an_run *r, const an_col *c, bool eq)
{
    const sqlp_role *role = r->an->role;
    if (!col_phi(c))
        return;
    r->an->st->touches_phi = true;
    if (role->unmasked)
        return;
    const char *clause = r->clause ? r->clause : "a filter";
    if (c->lin.flags & SP_LIN_OPAQUE) {
        an_deny(r, "phi.predicate", "column %s may carry PHI of unknown origin and may not be used in %s",
                c->name ? c->name : "?", clause);
        return;
    }
    bool ident = (c->lin.flags & SP_LIN_IDENT) && c->lin.n == 1;
    for (int i = 0; i < c->lin.n; i++) {
        const cat_col *s = c->lin.src[i];
        if (s->phi_class < 0)
            continue;
        sqlp_predicate_rule rule = role->predicates[s->phi_class];
        if (rule == SQLP_PRED_ALLOW)
            continue;
        if (eq && ident && (rule == SQLP_PRED_EQUALITY || s->join_key))
            continue;
        an_deny(r, "phi.predicate",
                "PHI column %s.%s (class %s) may not be used in %s%s", s->rel->name, s->name,
                sqlp_hipaa_class_name((sqlp_hipaa_class)s->phi_class), clause,
                rule == SQLP_PRED_EQUALITY || s->join_key ? " except as a plain column compared with '='" : "");
        return;
    }
}

/* ---- functions and settings ---------------------------------------------------- */

/* A role's functions_allow / functions_deny entry: "name" or "schema.name". */
static bool listed(char *const *list, const char *schema, const char *name)
{
    if (!list)
        return false;
    char full[256];
    snprintf(full, sizeof full, "%s.%s", schema ? schema : "", name);
    for (int i = 0; list[i]; i++)
        if (strcmp(list[i], name) == 0 || (schema && strcmp(list[i], full) == 0))
            return true;
    return false;
}

sp_func_kind an_check_function(an_run *r, const char *schema, const char *name)
{
    const sqlp_role *role = r->an->role;
    if (listed(role->function_deny, schema, name)) {
        an_deny(r, "function.denied", "function %s is denied for this role", name);
        return SPF_UNKNOWN;
    }
    bool my = r->an->dialect == SQLP_DIALECT_MYSQL;
    sp_func_kind k = my ? sp_func_lookup_mysql(schema, name) : sp_func_lookup(schema, name);
    if (k == SPF_UNKNOWN && listed(role->function_allow, schema, name))
        return SPF_SAFE; /* the administrator vouches for its lineage */
    if (my && k == SPF_ADMIN) {
        an_escalate(r, SQLP_CLASS_ADMIN, sp_printf(r->a, "%s() %s", name, sp_func_why_mysql(name)));
        return k;
    }
    switch (k) {
    case SPF_UNKNOWN:
        an_deny(r, "function.unknown",
                "function %s%s%s is not a PostgreSQL built-in phigate knows, so what it reads cannot be traced "
                "(an administrator may list it in the role's functions_allow)",
                schema ? schema : "", schema ? "." : "", name);
        break;
    case SPF_ADMIN:
        an_escalate(r, SQLP_CLASS_ADMIN, sp_printf(r->a, "%s() %s", name, sp_func_why(name)));
        break;
    case SPF_SQL_TEXT:
        an_deny(r, "function.sql_text", "%s() %s, which phigate cannot analyse", name, sp_func_why(name));
        break;
    case SPF_ACTIVITY:
        an_deny(r, "function.activity", "%s() %s", name, sp_func_why(name));
        break;
    default:
        break;
    }
    return k;
}

static bool value_is_on(const char *v)
{
    return v && (sp_streq_ci(v, "on") || sp_streq_ci(v, "true") || sp_streq_ci(v, "yes") || strcmp(v, "1") == 0);
}

/* Most settings only shape the session (session class).  A few change who
 * the session is (privilege), what the server does for everyone or loads
 * (administrative), or how phigate's own lexer must read the next statement
 * (standard_conforming_strings, client_encoding): those would let a later
 * statement parse one way here and another way on the server. */
void an_check_setting(an_run *r, const char *name, const char *value)
{
    static const char *const unsafe_enc[] = {"sjis", "shift_jis", "shiftjis", "big5", "gbk", "uhc", "gb18030",
                                             "johab", "windows932", "windows936", "windows949", "windows950",
                                             "cp932", "cp936", "cp949", "cp950", "mskanji", "tcvn", NULL};
    static const char *const admin[] = {"session_preload_libraries", "local_preload_libraries",
                                        "shared_preload_libraries", "dynamic_library_path",
                                        "allow_system_table_mods", "session_replication_role",
                                        "lo_compat_privileges", "zero_damaged_pages", "ignore_checksum_failure",
                                        "ignore_system_indexes", "ignore_invalid_pages", "jit_provider",
                                        "default_transaction_deferrable_hack", NULL};
    if (!name)
        return;
    if (sp_streq_ci(name, "standard_conforming_strings")) {
        /* phigate's lexer and the server must agree on what a backslash means */
        if (!value_is_on(value))
            an_deny(r, "session.standard_conforming_strings",
                    "standard_conforming_strings must stay on behind phigate (it parses statements that way)");
        return;
    }
    if (sp_streq_ci(name, "client_encoding") || sp_streq_ci(name, "names")) {
        if (value) {
            char v[32];
            size_t k = 0;
            for (const char *p = value; *p && k + 1 < sizeof v; p++)
                if (*p != '-' && *p != '_')
                    v[k++] = *p;
            v[k] = 0;
            for (int i = 0; unsafe_enc[i]; i++) {
                char u[32];
                size_t m = 0;
                for (const char *p = unsafe_enc[i]; *p; p++)
                    if (*p != '_')
                        u[m++] = *p;
                u[m] = 0;
                if (sp_streq_ci(v, u)) {
                    an_deny(r, "session.client_encoding",
                            "client encoding %s can hide quote characters inside multibyte characters", value);
                    return;
                }
            }
        }
        return;
    }
    if (sp_streq_ci(name, "role") || sp_streq_ci(name, "session_authorization")) {
        an_escalate(r, SQLP_CLASS_PRIVILEGE, sp_printf(r->a, "SET %s changes the database identity", name));
        return;
    }
    if (strncasecmp(name, "log_", 4) == 0 || strncasecmp(name, "debug_", 6) == 0 ||
        strncasecmp(name, "trace_", 6) == 0 || strncasecmp(name, "track_", 6) == 0) {
        an_escalate(r, SQLP_CLASS_ADMIN, sp_printf(r->a, "setting %s is server administration", name));
        return;
    }
    for (int i = 0; admin[i]; i++)
        if (sp_streq_ci(name, admin[i])) {
            an_escalate(r, SQLP_CLASS_ADMIN, sp_printf(r->a, "setting %s is server administration", name));
            return;
        }
}

/* ---- the walker ------------------------------------------------------------------- */

static void walk_list(an_run *r, Node *const *items, size_t n, an_level *lv, an_ctx ctx, sp_lin *out, int depth)
{
    for (size_t i = 0; i < n; i++)
        expr(r, items[i], lv, ctx, out, depth, false);
}

/* The one place a value enters the walk: every PHI reference is masked,
 * policed or merely traced here, according to ctx. */
static void colref(an_run *r, const PgQuery__ColumnRef *cr, an_level *lv, an_ctx ctx, sp_lin *out, bool eq)
{
    an_rte *rte = NULL;
    bool whole = false, amb = false;
    an_col *c = an_resolve(r, lv, cr, &rte, &whole, &amb);
    if (whole) {
        /* a whole row carries every column; masking it column by column is
         * impossible inside an expression, so the output target is redacted */
        sp_lin l = {0};
        for (int i = 0; rte && i < rte->ncols; i++)
            lin_merge(r->a, &l, &rte->cols[i].lin);
        if (rte && rte->unknown) {
            lin_merge(r->a, &l, &rte->unknown_lin); /* columns we never saw */
            if (rte->rel)
                l.flags |= SP_LIN_OPAQUE; /* unknown relation with PHI rules: its row is opaque */
        }
        if (lin_phi(&l)) {
            r->an->st->touches_phi = true;
            if (ctx == AN_OUTPUT)
                r->whole_row = true;
            else if ((ctx == AN_PRED || ctx == AN_PRED_EQ) && !r->an->role->unmasked)
                an_deny(r, "phi.predicate", "a whole-row reference to %s (which holds PHI) may not be used in %s",
                        rte && rte->name ? rte->name : "a relation", r->clause ? r->clause : "a filter");
        }
        lin_merge(r->a, out, &l);
        out->flags &= (uint8_t)~SP_LIN_IDENT;
        return;
    }
    if (!c) {
        /* A known relation without this column: the catalog is stale (a column
         * added or renamed since it was read) and the column could be PHI. */
        const char *nm = cr->n_fields ? an_str(cr->fields[cr->n_fields - 1]) : NULL;
        an_deny(r, "analyse.unknown_column",
                "column %s is not in phigate's catalog (if it was added since phigate started, reload phigate)",
                nm ? nm : "?");
        return;
    }
    if (col_phi(c)) {
        r->an->st->touches_phi = true;
        if (ctx == AN_OUTPUT)
            an_mask_ref(r, (uint32_t)cr->location, c);
        else if (ctx == AN_PRED || ctx == AN_PRED_EQ)
            an_check_pred(r, c, eq || ctx == AN_PRED_EQ);
    }
    /* only a bare reference keeps IDENT: the mask of its class fits its type */
    bool first = out->n == 0 && !(out->flags & SP_LIN_OPAQUE);
    lin_merge(r->a, out, &c->lin);
    if (first && (c->lin.flags & SP_LIN_IDENT))
        out->flags |= SP_LIN_IDENT;
    else
        out->flags &= (uint8_t)~SP_LIN_IDENT;
}

/* Aggregates that return every input row in one value: one row out, all PHI
 * in it, so they do not make a read "scoped" the way count() or max() do. */
static bool collecting_agg(const char *name)
{
    static const char *const c[] = {"array_agg", "string_agg", "json_agg", "jsonb_agg", "json_object_agg",
                                    "jsonb_object_agg", "xmlagg", "json_agg_strict", "jsonb_agg_strict",
                                    "json_object_agg_strict", "jsonb_object_agg_strict", NULL};
    for (int i = 0; c[i]; i++)
        if (strcmp(c[i], name) == 0)
            return true;
    return false;
}

/* PARTITION BY and ORDER BY of a window order or group rows by raw values:
 * the row numbers and ranks they produce are an oracle, so they are predicates. */
static void window_def(an_run *r, const PgQuery__WindowDef *w, an_level *lv, int depth)
{
    if (!w)
        return;
    const char *saved = r->clause;
    r->clause = "a window clause";
    sp_lin l = {0};
    for (size_t i = 0; i < w->n_partition_clause; i++)
        expr(r, w->partition_clause[i], lv, AN_PRED, &l, depth + 1, false);
    for (size_t i = 0; i < w->n_order_clause; i++)
        expr(r, w->order_clause[i], lv, AN_PRED, &l, depth + 1, false);
    expr(r, w->start_offset, lv, AN_PRED, &l, depth + 1, false);
    expr(r, w->end_offset, lv, AN_PRED, &l, depth + 1, false);
    r->clause = saved;
}

/* Built-ins that read a text argument as a name, a setting, an encoding or a
 * format, or hand it to other sessions: their errors quote it like an
 * identifier ("relation "x" does not exist"), which scrubbing keeps. */
static bool interprets_value(const char *name)
{
    static const char *const fns[] = {"current_setting", "set_config", "nextval", "currval", "setval", "pg_notify",
                                      "pg_get_serial_sequence", "convert", "convert_to", "convert_from", "format",
                                      "to_regclass", "to_regtype", "to_regproc", "to_regprocedure", "to_regoper",
                                      "to_regoperator", "to_regrole", "to_regnamespace", "to_regcollation",
                                      "pg_advisory_lock", "pg_advisory_xact_lock", "pg_try_advisory_lock",
                                      "pg_try_advisory_xact_lock", "pg_advisory_lock_shared", "txid_status",
                                      "pg_column_size", "pg_relation_size", "pg_total_relation_size",
                                      "pg_table_size", "pg_indexes_size", "obj_description", "col_description",
                                      "shobj_description", NULL};
    if (strncmp(name, "has_", 4) == 0 && strstr(name, "_privilege"))
        return true;
    if (strcmp(name, "pg_has_role") == 0)
        return true;
    for (int i = 0; fns[i]; i++)
        if (strcmp(name, fns[i]) == 0)
            return true;
    return false;
}

static void funccall(an_run *r, const PgQuery__FuncCall *f, an_level *lv, an_ctx ctx, sp_lin *out, int depth)
{
    const char *schema = NULL, *name = NULL;
    if (f->n_funcname == 1) {
        name = an_str(f->funcname[0]);
    } else if (f->n_funcname >= 2) {
        schema = an_str(f->funcname[f->n_funcname - 2]);
        name = an_str(f->funcname[f->n_funcname - 1]);
    }
    if (!name) {
        an_deny(r, "analyse.unsupported", "phigate cannot analyse this statement: a function name it cannot read");
        return;
    }
    sp_func_kind k = an_check_function(r, schema, name);
    if (k == SPF_SET_CONFIG) {
        const char *setting = NULL, *value = NULL;
        if (f->n_args >= 1 && f->args[0]->node_case == PG_QUERY__NODE__NODE_A_CONST &&
            f->args[0]->a_const->val_case == PG_QUERY__A__CONST__VAL_SVAL)
            setting = f->args[0]->a_const->sval->sval;
        if (f->n_args >= 2 && f->args[1]->node_case == PG_QUERY__NODE__NODE_A_CONST &&
            f->args[1]->a_const->val_case == PG_QUERY__A__CONST__VAL_SVAL)
            value = f->args[1]->a_const->sval->sval;
        if (!setting)
            an_deny(r, "function.set_config", "set_config() needs a constant setting name behind phigate");
        else
            an_check_setting(r, setting, value ? value : "");
        r->an->st->literal_sensitive = true;
        if (setting && sp_streq_ci(setting, "search_path")) {
            const Node *loc = f->n_args >= 3 ? f->args[2] : NULL;
            bool known = loc && loc->node_case == PG_QUERY__NODE__NODE_A_CONST &&
                         loc->a_const->val_case == PG_QUERY__A__CONST__VAL_BOOLVAL;
            if (!value || !known)
                an_deny(r, "session.search_path", "set_config('search_path', ...) needs constant arguments behind phigate");
            else
                an_search_path(r, loc->a_const->boolval && loc->a_const->boolval->boolval, *value ? value : "\"\"");
        }
    }
    /* an aggregate without OVER folds rows: a one-row result is "scoped" */
    if (ctx == AN_INTER && interprets_value(name)) {
        /* a raw value read as a name, a setting, a format, or sent to listeners:
         * the error or the side effect carries it out, so it is a predicate use */
        const char *saved = r->clause;
        if (!r->clause)
            r->clause = sp_printf(r->a, "%s() inside a subquery", name);
        ctx = AN_PRED;
        sp_lin l = {0};
        walk_list(r, f->args, f->n_args, lv, ctx, &l, depth + 1);
        r->clause = saved;
        lin_merge(r->a, out, &l);
        return;
    }
    bool agg = k == SPF_AGGREGATE && !f->over;
    if (agg) {
        if (collecting_agg(name))
            lv->collecting = true;
        else
            lv->aggregated = true;
    }
    walk_list(r, f->args, f->n_args, lv, ctx, out, depth + 1);
    /* ordering and filtering inside an aggregate look at raw values */
    if (f->n_agg_order || f->agg_filter) {
        const char *saved = r->clause;
        sp_lin l = {0};
        r->clause = "an aggregate's ORDER BY";
        for (size_t i = 0; i < f->n_agg_order; i++)
            expr(r, f->agg_order[i], lv, AN_PRED, &l, depth + 1, false);
        r->clause = "an aggregate's FILTER";
        expr(r, f->agg_filter, lv, AN_PRED, &l, depth + 1, false);
        r->clause = saved;
    }
    window_def(r, f->over, lv, depth);
}

/* '=' (also what IN and = ANY use): the only comparison declared join keys
 * and the EQUALITY rule allow, as it tells nothing beyond membership. */
static bool op_is_eq(Node *const *names, size_t n)
{
    return n >= 1 && an_str(names[n - 1]) && strcmp(an_str(names[n - 1]), "=") == 0;
}

/*
 * The SPEC's "selective predicate": a relation counts as scoped by its WHERE
 * only through "col = <value>", "col IN (<values>)", "col = ANY(<array>)" or
 * IS NOT DISTINCT FROM, at the top AND-conjunction, where the value side reads
 * no column.  "id > 0", "id IS NOT NULL", "id = id" or "id = 1 OR true" select
 * (nearly) every row: those reads stay held for approval.
 */
static void note_selective(an_run *r, const PgQuery__AExpr *e, const sp_lin *ll, const sp_lin *rl, an_level *lv)
{
    if (e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_OP || e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_NOT_DISTINCT)
        an_note_join(r, ll, rl, lv);
    if (!r->in_where)
        return;
    if ((ll->flags & SP_LIN_IDENT) && rl->n == 0 && !(rl->flags & SP_LIN_OPAQUE))
        an_note_scoped(r, ll, lv);
    else if ((rl->flags & SP_LIN_IDENT) && ll->n == 0 && !(ll->flags & SP_LIN_OPAQUE) &&
             e->kind != PG_QUERY__A__EXPR__KIND__AEXPR_IN && e->kind != PG_QUERY__A__EXPR__KIND__AEXPR_OP_ANY)
        an_note_scoped(r, rl, lv);
}

static void a_expr(an_run *r, const PgQuery__AExpr *e, an_level *lv, an_ctx ctx, sp_lin *out, int depth)
{
    if (e->n_name == 2) {
        const char *schema = an_str(e->name[0]);
        if (!schema || strcmp(schema, "pg_catalog") != 0) {
            /* an operator outside pg_catalog runs a function we do not know */
            an_deny(r, "function.unknown", "operator %s.%s is not a built-in phigate knows", schema ? schema : "?",
                    an_str(e->name[1]) ? an_str(e->name[1]) : "?");
            return;
        }
    }
    bool eq = false;
    switch (e->kind) {
    case PG_QUERY__A__EXPR__KIND__AEXPR_OP:
    case PG_QUERY__A__EXPR__KIND__AEXPR_OP_ANY:
    case PG_QUERY__A__EXPR__KIND__AEXPR_IN:
        eq = op_is_eq(e->name, e->n_name);
        break;
    case PG_QUERY__A__EXPR__KIND__AEXPR_NOT_DISTINCT:
        eq = true;
        break;
    default:
        break;
    }
    /* On raw values (a subquery or CTE whose result flows on) a comparison or
     * arithmetic is an oracle even when the result is masked later: the rows
     * it selects, or the error it raises ("division by zero"), depend on the
     * value.  So it is judged as a predicate.  Concatenation and JSON field
     * access raise nothing that depends on the value. */
    if (ctx == AN_INTER && !(e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_OP && e->n_name == 1 && an_str(e->name[0]) &&
                             (strcmp(an_str(e->name[0]), "||") == 0 || strcmp(an_str(e->name[0]), "->") == 0 ||
                              strcmp(an_str(e->name[0]), "->>") == 0))) {
        const char *saved = r->clause;
        bool top = r->top_conj;
        if (!r->clause)
            r->clause = "a comparison inside a subquery";
        ctx = AN_PRED;
        sp_lin ll = {0}, rl = {0};
        r->top_conj = false;
        expr(r, e->lexpr, lv, ctx, &ll, depth + 1, eq);
        expr(r, e->rexpr, lv, ctx, &rl, depth + 1, eq);
        r->top_conj = top;
        r->clause = saved;
        lin_merge(r->a, out, &ll);
        lin_merge(r->a, out, &rl);
        return;
    }
    sp_lin ll = {0}, rl = {0};
    bool top = r->top_conj;
    r->top_conj = false; /* the operands are not themselves conjuncts */
    expr(r, e->lexpr, lv, ctx, &ll, depth + 1, eq);
    expr(r, e->rexpr, lv, ctx, &rl, depth + 1, eq);
    r->top_conj = top;
    if (top && eq && ctx == AN_PRED)
        note_selective(r, e, &ll, &rl, lv);
    lin_merge(r->a, out, &ll);
    lin_merge(r->a, out, &rl);
}

static void sublink(an_run *r, const PgQuery__SubLink *s, an_level *lv, an_ctx ctx, sp_lin *out, int depth,
                    bool eq)
{
    an_col *cols = NULL;
    int ncols = 0;
    bool pred = ctx == AN_PRED || ctx == AN_PRED_EQ;
    switch (s->sub_link_type) {
    case PG_QUERY__SUB_LINK_TYPE__EXISTS_SUBLINK:
        /* only whether a row exists comes back: the subquery's values go nowhere */
        an_query(r, s->subselect, lv, AN_INTER, &cols, &ncols, depth + 1);
        return;
    case PG_QUERY__SUB_LINK_TYPE__EXPR_SUBLINK:
    case PG_QUERY__SUB_LINK_TYPE__ARRAY_SUBLINK:
        an_query(r, s->subselect, lv, pred ? (eq ? AN_PRED_EQ : AN_PRED) : ctx, &cols, &ncols, depth + 1);
        for (int i = 0; i < ncols; i++)
            lin_merge(r->a, out, &cols[i].lin);
        return;
    default: {
        /* x IN (SELECT ...), x op ANY/ALL (SELECT ...), row comparisons */
        bool is_eq = (s->sub_link_type == PG_QUERY__SUB_LINK_TYPE__ANY_SUBLINK &&
                      (s->n_oper_name == 0 || op_is_eq(s->oper_name, s->n_oper_name)));
        an_ctx sub = pred ? (is_eq ? AN_PRED_EQ : AN_PRED) : ctx;
        expr(r, s->testexpr, lv, pred ? AN_PRED : ctx, out, depth + 1, is_eq);
        an_query(r, s->subselect, lv, sub, &cols, &ncols, depth + 1);
        /* in output the comparison ran on masked values: its boolean says
         * nothing more; elsewhere it compared raw values and carries them */
        for (int i = 0; ctx != AN_OUTPUT && i < ncols; i++)
            lin_merge(r->a, out, &cols[i].lin);
        return;
    }
    }
}

void an_expr_eq(an_run *r, const Node *n, an_level *lv, an_ctx ctx, sp_lin *out, int depth, bool eq)
{
    expr(r, n, lv, ctx, out, depth, eq);
}

void an_expr(an_run *r, const Node *n, an_level *lv, an_ctx ctx, sp_lin *out, int depth)
{
    expr(r, n, lv, ctx, out, depth, false);
}

void an_pred(an_run *r, const Node *n, an_level *lv, const char *clause, int depth)
{
    if (!n)
        return;
    const char *saved = r->clause;
    bool saved_top = r->top_conj;
    r->clause = clause;
    r->top_conj = true;
    sp_lin l = {0};
    expr(r, n, lv, AN_PRED, &l, depth, false);
    r->clause = saved;
    r->top_conj = saved_top;
}

static bool cast_to_text(const PgQuery__TypeName *tn)
{
    static const char *const texts[] = {"text", "varchar", "bpchar", "char", "character", "citext", NULL};
    if (!tn || !tn->n_names || tn->n_array_bounds)
        return false;
    const char *t = an_str(tn->names[tn->n_names - 1]);
    for (int i = 0; t && texts[i]; i++)
        if (strcmp(t, texts[i]) == 0)
            return true;
    return false;
}

static void expr_node(an_run *r, const Node *n, an_level *lv, an_ctx ctx, sp_lin *out, int depth, bool eq);

/* Only AND keeps its operands conjuncts of the clause (see note_selective). */
static void expr(an_run *r, const Node *n, an_level *lv, an_ctx ctx, sp_lin *out, int depth, bool eq)
{
    bool top = r->top_conj;
    if (n && !(n->node_case == PG_QUERY__NODE__NODE_A_EXPR ||
               (n->node_case == PG_QUERY__NODE__NODE_BOOL_EXPR &&
                n->bool_expr->boolop == PG_QUERY__BOOL_EXPR_TYPE__AND_EXPR)))
        r->top_conj = false;
    expr_node(r, n, lv, ctx, out, depth, eq);
    r->top_conj = top;
}

/* Unknown node types refuse the statement (default:), never pass it. */
static void expr_node(an_run *r, const Node *n, an_level *lv, an_ctx ctx, sp_lin *out, int depth, bool eq)
{
    if (!n || n->node_case == PG_QUERY__NODE__NODE__NOT_SET)
        return;
    if (an_too_deep(r, depth))
        return;
    if (ctx == AN_PRED_EQ) {
        /* only the top of a compared target is compared directly */
        ctx = AN_PRED;
        eq = true;
    }
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_COLUMN_REF:
        colref(r, n->column_ref, lv, ctx, out, eq);
        return; /* keeps SP_LIN_IDENT */
    case PG_QUERY__NODE__NODE_PARAM_REF:
        r->an->st->params = true;
        break;
    case PG_QUERY__NODE__NODE_A_CONST:
    case PG_QUERY__NODE__NODE_SQLVALUE_FUNCTION:
    case PG_QUERY__NODE__NODE_SET_TO_DEFAULT:
    case PG_QUERY__NODE__NODE_CURRENT_OF_EXPR:
        break;
    case PG_QUERY__NODE__NODE_TYPE_CAST: {
        /* A cast of a raw value can fail with the value in the message, or read
         * it as a name (::regclass -> relation "..." does not exist): on raw
         * values it is judged as a predicate, unless it casts to text. */
        an_ctx cctx = ctx;
        if (ctx == AN_INTER && !cast_to_text(n->type_cast->type_name)) {
            cctx = AN_PRED;
            if (!r->clause)
                r->clause = "a cast inside a subquery";
        }
        const char *saved = r->clause;
        expr(r, n->type_cast->arg, lv, cctx, out, depth + 1, false);
        r->clause = saved;
        break;
    }
    case PG_QUERY__NODE__NODE_COLLATE_CLAUSE:
        expr(r, n->collate_clause->arg, lv, ctx, out, depth + 1, false);
        break;
    case PG_QUERY__NODE__NODE_A_EXPR:
        a_expr(r, n->a_expr, lv, ctx, out, depth);
        break;
    case PG_QUERY__NODE__NODE_BOOL_EXPR:
        walk_list(r, n->bool_expr->args, n->bool_expr->n_args, lv, ctx, out, depth + 1);
        break;
    case PG_QUERY__NODE__NODE_NULL_TEST:
        /* IS NULL says no more than '=' does */
        expr(r, n->null_test->arg, lv, ctx == AN_INTER ? AN_PRED : ctx, out, depth + 1, true);
        break;
    case PG_QUERY__NODE__NODE_BOOLEAN_TEST:
        expr(r, n->boolean_test->arg, lv, ctx == AN_INTER ? AN_PRED : ctx, out, depth + 1, false);
        break;
    case PG_QUERY__NODE__NODE_FUNC_CALL:
        funccall(r, n->func_call, lv, ctx, out, depth);
        break;
    case PG_QUERY__NODE__NODE_SUB_LINK:
        sublink(r, n->sub_link, lv, ctx, out, depth, eq);
        break;
    case PG_QUERY__NODE__NODE_CASE_EXPR: {
        const PgQuery__CaseExpr *c = n->case_expr;
        /* CASE x WHEN v compares x with '=' (a predicate on raw values) */
        expr(r, c->arg, lv, ctx == AN_INTER ? AN_PRED : ctx, out, depth + 1, true);
        for (size_t i = 0; i < c->n_args; i++) {
            const Node *w = c->args[i];
            if (w->node_case != PG_QUERY__NODE__NODE_CASE_WHEN) {
                an_unsupported(r, w, "CASE");
                return;
            }
            expr(r, w->case_when->expr, lv, ctx, out, depth + 1, false);
            expr(r, w->case_when->result, lv, ctx, out, depth + 1, false);
        }
        expr(r, c->defresult, lv, ctx, out, depth + 1, false);
        break;
    }
    case PG_QUERY__NODE__NODE_COALESCE_EXPR:
        walk_list(r, n->coalesce_expr->args, n->coalesce_expr->n_args, lv, ctx, out, depth + 1);
        break;
    case PG_QUERY__NODE__NODE_MIN_MAX_EXPR:
        walk_list(r, n->min_max_expr->args, n->min_max_expr->n_args, lv, ctx, out, depth + 1);
        break;
    case PG_QUERY__NODE__NODE_ROW_EXPR:
        walk_list(r, n->row_expr->args, n->row_expr->n_args, lv, ctx, out, depth + 1);
        break;
    case PG_QUERY__NODE__NODE_A_ARRAY_EXPR:
        walk_list(r, n->a_array_expr->elements, n->a_array_expr->n_elements, lv, ctx, out, depth + 1);
        break;
    case PG_QUERY__NODE__NODE_LIST:
        walk_list(r, n->list->items, n->list->n_items, lv, ctx, out, depth + 1);
        break;
    case PG_QUERY__NODE__NODE_A_INDIRECTION: {
        const PgQuery__AIndirection *ind = n->a_indirection;
        expr(r, ind->arg, lv, ctx, out, depth + 1, false);
        for (size_t i = 0; i < ind->n_indirection; i++) {
            const Node *x = ind->indirection[i];
            if (x->node_case == PG_QUERY__NODE__NODE_A_INDICES) {
                expr(r, x->a_indices->lidx, lv, ctx, out, depth + 1, false);
                expr(r, x->a_indices->uidx, lv, ctx, out, depth + 1, false);
            } else if (x->node_case != PG_QUERY__NODE__NODE_STRING && x->node_case != PG_QUERY__NODE__NODE_A_STAR) {
                an_unsupported(r, x, "an indirection");
                return;
            }
        }
        break;
    }
    case PG_QUERY__NODE__NODE_GROUPING_FUNC: {
        sp_lin l = {0};
        walk_list(r, n->grouping_func->args, n->grouping_func->n_args, lv, AN_PRED, &l, depth + 1);
        break;
    }
    case PG_QUERY__NODE__NODE_NAMED_ARG_EXPR:
        expr(r, n->named_arg_expr->arg, lv, ctx, out, depth + 1, false);
        break;
    case PG_QUERY__NODE__NODE_XML_EXPR: {
        const PgQuery__XmlExpr *x = n->xml_expr;
        walk_list(r, x->args, x->n_args, lv, ctx, out, depth + 1);
        for (size_t i = 0; i < x->n_named_args; i++) {
            const Node *a = x->named_args[i];
            if (a->node_case == PG_QUERY__NODE__NODE_RES_TARGET)
                expr(r, a->res_target->val, lv, ctx, out, depth + 1, false);
            else
                expr(r, a, lv, ctx, out, depth + 1, false);
        }
        break;
    }
    case PG_QUERY__NODE__NODE_XML_SERIALIZE:
        expr(r, n->xml_serialize->expr, lv, ctx, out, depth + 1, false);
        break;
    case PG_QUERY__NODE__NODE_MULTI_ASSIGN_REF:
        expr(r, n->multi_assign_ref->source, lv, ctx, out, depth + 1, false);
        break;
    case PG_QUERY__NODE__NODE_SORT_BY:
        expr(r, n->sort_by->node, lv, ctx, out, depth + 1, false);
        break;
    default:
        an_unsupported(r, n, "an expression");
        return;
    }
    out->flags &= (uint8_t)~SP_LIN_IDENT;
}
