/*
 * The rewrite: masked expressions spliced into the client's text.
 *
 * libpg_query gives each node's start offset only, so the ends come from the
 * engine's own lexer (lexer.c agrees with the server's scanner on token
 * boundaries).  Splicing keeps every byte the client wrote outside the masked
 * references: comments, spacing, literals and parameter numbers stay as they
 * were, and a statement that needs no mask is forwarded untouched.
 *
 *   SELECT p.ssn, upper(p.last_name) FROM patients p
 *          ^^^^^        ^^^^^^^^^^^ replaced by the mask of each column
 *               ^ " AS \"ssn\"" inserted: the output keeps its name
 */
#include <string.h>

#include "sqlpolicy/sp_analyze.h"

void an_edit(an_run *r, uint32_t pos, uint32_t del, const char *text)
{
    sp_analysis *an = r->an;
    if (r->no_edits)
        return;
    if (an->nedits == an->capedits) {
        int ncap = an->capedits ? an->capedits * 2 : 16;
        sp_edit *n = sp_alloc_raw(r->a, (size_t)ncap * sizeof *n);
        if (an->nedits)
            memcpy(n, an->edits, (size_t)an->nedits * sizeof *n);
        an->edits = n;
        an->capedits = ncap;
    }
    sp_edit *e = &an->edits[an->nedits++];
    e->pos = pos;
    e->del = del;
    e->text = text;
    e->tlen = (uint32_t)strlen(text);
    an->st->rewritten = true;
}

const char *an_source(an_run *r, uint32_t start, uint32_t end)
{
    const sp_srcmap *m = r->an->srcmap;
    if (!m)
        return sp_strndup(r->a, r->an->sql + start, end - start);
    uint32_t s, e;
    if (!sp_srcmap_back(m, start, false, &s) || !sp_srcmap_back(m, end, true, &e) || e < s)
        return NULL;
    return sp_strndup(r->a, m->orig + s, e - s);
}

static bool tok_name(const sp_token *t)
{
    return t->kind == SPT_WORD || t->kind == SPT_QIDENT;
}

uint32_t an_colref_end(an_run *r, uint32_t loc)
{
    const sp_lexed *lx = r->an->lx;
    int i = sp_tok_at(lx, loc);
    if (i >= 0 && lx->tok[i].kind == SPT_OP && lx->tok[i].end - lx->tok[i].start == 1 && r->an->sql[loc] == '*')
        return lx->tok[i].end; /* a bare '*' */
    if (i < 0 || !tok_name(&lx->tok[i]))
        return loc; /* caller refuses: nothing safe to splice */
    while ((uint32_t)i + 2 < lx->ntok && lx->tok[i + 1].kind == SPT_DOT &&
           (tok_name(&lx->tok[i + 2]) ||
            (lx->tok[i + 2].kind == SPT_OP && lx->tok[i + 2].end - lx->tok[i + 2].start == 1 &&
             r->an->sql[lx->tok[i + 2].start] == '*')))
        i += 2;
    return lx->tok[i].end;
}

/* Reserved words that end an expression in a target list or RETURNING list. */
static bool ends_target(const char *sql, const sp_token *t, const sp_token *prev)
{
    static const char *const stops[] = {"from", "into", "where", "group", "having", "window", "order",
                                        "limit", "offset", "fetch", "for", "union", "intersect", "except",
                                        "returning", "on", "using", "as", NULL};
    if (t->kind != SPT_WORD)
        return false;
    for (int i = 0; stops[i]; i++) {
        if (!sp_tok_is_kw(sql, t, stops[i]))
            continue;
        /* IS [NOT] DISTINCT FROM and WITHIN GROUP belong to the expression */
        if (i == 0 && prev && sp_tok_is_kw(sql, prev, "distinct"))
            return false;
        if (i == 3 && prev && sp_tok_is_kw(sql, prev, "within"))
            return false;
        return true;
    }
    return false;
}

uint32_t an_expr_end(an_run *r, uint32_t loc)
{
    const sp_lexed *lx = r->an->lx;
    const char *sql = r->an->sql;
    int i = sp_tok_at(lx, loc);
    if (i < 0)
        return loc;
    int depth = 0, cases = 0;
    uint32_t end = lx->tok[i].end;
    for (uint32_t j = (uint32_t)i; j < lx->ntok; j++) {
        const sp_token *t = &lx->tok[j];
        if (depth == 0 && cases == 0 && j > (uint32_t)i) {
            if (t->kind == SPT_COMMA || t->kind == SPT_SEMI || t->kind == SPT_RPAREN || t->kind == SPT_RBRACK)
                break;
            if (ends_target(sql, t, &lx->tok[j - 1]))
                break;
        }
        if (t->kind == SPT_LPAREN || t->kind == SPT_LBRACK)
            depth++;
        else if (t->kind == SPT_RPAREN || t->kind == SPT_RBRACK)
            depth--;
        else if (sp_tok_is_kw(sql, t, "case"))
            cases++;
        else if (sp_tok_is_kw(sql, t, "end") && cases > 0)
            cases--;
        if (depth < 0)
            break;
        end = t->end;
    }
    return end;
}

/* ---- FigureColname ------------------------------------------------------------ */

/* PostgreSQL's FigureColnameInternal (parse_target.c) on the raw tree:
 * strength 2 for a name from a column or function, 1 for a weaker guess. */
static int figure(const Node *n, const char **name)
{
    if (!n)
        return 0;
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_COLUMN_REF: {
        const PgQuery__ColumnRef *c = n->column_ref;
        for (size_t i = c->n_fields; i > 0; i--) {
            const char *s = an_str(c->fields[i - 1]);
            if (s) {
                *name = s;
                return 2;
            }
        }
        return 0;
    }
    case PG_QUERY__NODE__NODE_A_INDIRECTION: {
        const PgQuery__AIndirection *ind = n->a_indirection;
        for (size_t i = ind->n_indirection; i > 0; i--) {
            const char *s = an_str(ind->indirection[i - 1]);
            if (s) {
                *name = s;
                return 2;
            }
        }
        return figure(ind->arg, name);
    }
    case PG_QUERY__NODE__NODE_FUNC_CALL: {
        const PgQuery__FuncCall *f = n->func_call;
        if (f->n_funcname) {
            *name = an_str(f->funcname[f->n_funcname - 1]);
            return *name ? 2 : 0;
        }
        return 0;
    }
    case PG_QUERY__NODE__NODE_A_EXPR:
        if (n->a_expr->kind == PG_QUERY__A__EXPR__KIND__AEXPR_NULLIF) {
            *name = "nullif";
            return 2;
        }
        return 0;
    case PG_QUERY__NODE__NODE_TYPE_CAST: {
        int st = figure(n->type_cast->arg, name);
        const PgQuery__TypeName *tn = n->type_cast->type_name;
        if (st <= 1 && tn && tn->n_names) {
            *name = an_str(tn->names[tn->n_names - 1]);
            return *name ? 1 : 0;
        }
        return st;
    }
    case PG_QUERY__NODE__NODE_COLLATE_CLAUSE:
        return figure(n->collate_clause->arg, name);
    case PG_QUERY__NODE__NODE_GROUPING_FUNC:
        *name = "grouping";
        return 2;
    case PG_QUERY__NODE__NODE_SUB_LINK:
        switch (n->sub_link->sub_link_type) {
        case PG_QUERY__SUB_LINK_TYPE__EXISTS_SUBLINK:
            *name = "exists";
            return 2;
        case PG_QUERY__SUB_LINK_TYPE__ARRAY_SUBLINK:
            *name = "array";
            return 2;
        case PG_QUERY__SUB_LINK_TYPE__EXPR_SUBLINK: {
            /* the subquery's single output column names it */
            const Node *q = n->sub_link->subselect;
            if (q && q->node_case == PG_QUERY__NODE__NODE_SELECT_STMT) {
                const PgQuery__SelectStmt *s = q->select_stmt;
                while (s->larg && s->op != PG_QUERY__SET_OPERATION__SETOP_NONE)
                    s = s->larg;
                if (s->n_target_list == 1 && s->target_list[0]->node_case == PG_QUERY__NODE__NODE_RES_TARGET) {
                    const PgQuery__ResTarget *rt = s->target_list[0]->res_target;
                    if (rt->name && *rt->name) {
                        *name = rt->name;
                        return 2;
                    }
                    if (figure(rt->val, name) > 0)
                        return 2;
                }
            }
            return 0;
        }
        default:
            return 0;
        }
    case PG_QUERY__NODE__NODE_CASE_EXPR:
        *name = "case";
        return 1;
    case PG_QUERY__NODE__NODE_A_ARRAY_EXPR:
        *name = "array";
        return 2;
    case PG_QUERY__NODE__NODE_ROW_EXPR:
        *name = "row";
        return 2;
    case PG_QUERY__NODE__NODE_COALESCE_EXPR:
        *name = "coalesce";
        return 2;
    case PG_QUERY__NODE__NODE_MIN_MAX_EXPR:
        *name = n->min_max_expr->op == PG_QUERY__MIN_MAX_OP__IS_GREATEST ? "greatest" : "least";
        return 2;
    case PG_QUERY__NODE__NODE_SQLVALUE_FUNCTION: {
        static const char *const names[] = {
            [PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_CURRENT_DATE] = "current_date",
            [PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_CURRENT_TIME] = "current_time",
            [PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_CURRENT_TIME_N] = "current_time",
            [PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_CURRENT_TIMESTAMP] = "current_timestamp",
            [PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_CURRENT_TIMESTAMP_N] = "current_timestamp",
            [PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_LOCALTIME] = "localtime",
            [PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_LOCALTIME_N] = "localtime",
            [PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_LOCALTIMESTAMP] = "localtimestamp",
            [PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_LOCALTIMESTAMP_N] = "localtimestamp",
            [PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_CURRENT_ROLE] = "current_role",
            [PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_CURRENT_USER] = "current_user",
            [PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_USER] = "user",
            [PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_SESSION_USER] = "session_user",
            [PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_CURRENT_CATALOG] = "current_catalog",
            [PG_QUERY__SQLVALUE_FUNCTION_OP__SVFOP_CURRENT_SCHEMA] = "current_schema",
        };
        unsigned op = (unsigned)n->sqlvalue_function->op;
        if (op < SP_ARRAY_LEN(names) && names[op]) {
            *name = names[op];
            return 2;
        }
        return 0;
    }
    case PG_QUERY__NODE__NODE_XML_EXPR: {
        static const char *const names[] = {"", "xmlconcat", "xmlelement", "xmlforest", "xmlparse", "xmlpi",
                                            "xmlroot", "xmlserialize", "?column?"};
        unsigned op = (unsigned)n->xml_expr->op;
        if (op >= 1 && op < SP_ARRAY_LEN(names) - 1) {
            *name = names[op];
            return 2;
        }
        return 0;
    }
    case PG_QUERY__NODE__NODE_XML_SERIALIZE:
        *name = "xmlserialize";
        return 2;
    default:
        return 0;
    }
}

const char *an_figure_colname(const Node *n)
{
    const char *name = NULL;
    if (figure(n, &name) > 0 && name)
        return name;
    return "?column?";
}

/* ---- masks --------------------------------------------------------------------- */

const char *an_mask_text(an_run *r, const char *expr, const an_col *c, const char **spec)
{
    const sp_lin *l = &c->lin;
    const char *sp = "redact";
    const char *type = NULL;
    /* Only an unchanged base column gets its class's own mask; anything
     * derived (casts, functions, several sources) is redacted whole. */
    if ((l->flags & SP_LIN_IDENT) && l->n == 1 && !(l->flags & SP_LIN_OPAQUE) && l->src[0]->phi_class >= 0) {
        const cat_col *b = l->src[0];
        sp = b->mask ? b->mask : sp_profile_mask(r->an->profile, b->phi_class);
        type = b->type_name;
    } else if (!(l->flags & SP_LIN_OPAQUE)) {
        int cls = lin_class(l);
        if (cls >= 0 && r->an->profile)
            sp = sp_profile_mask(r->an->profile, cls);
        /* a mask that needs the value's type only fits an identical column */
        sp_mask probe;
        if (!sp_mask_parse(sp, &probe) || probe.kind != SPM_REDACT)
            sp = "redact";
    }
    sp_mask m;
    if (!sp_mask_parse(sp, &m)) {
        sp = "redact";
        if (!sp_mask_parse(sp, &m))
            return NULL;
    }
    sp_buf b;
    sp_buf_init(&b, r->a, 256);
    sp_mask_sql(&b, &m, expr, type, r->an->dialect, r->an->role);
    if (spec)
        *spec = sp;
    return sp_buf_cstr(&b);
}

void an_note_mask(an_run *r, const char *spec)
{
    if (!spec)
        return;
    sp_buf *b = &r->masks;
    if (b->len) {
        /* the same spec once per output column */
        const char *p = b->p;
        size_t sl = strlen(spec);
        while (p && *p) {
            const char *comma = strstr(p, ", ");
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            if (n == sl && memcmp(p, spec, n) == 0)
                return;
            p = comma ? comma + 2 : NULL;
        }
        sp_buf_puts(b, ", ");
    }
    sp_buf_puts(b, spec);
}

void an_mask_ref(an_run *r, uint32_t loc, const an_col *c)
{
    if (r->an->role->unmasked || r->no_edits)
        return;
    uint32_t end = an_colref_end(r, loc);
    if (end <= loc) {
        an_deny(r, "engine.rewrite_conflict", "phigate cannot find the column reference it must mask");
        return;
    }
    const char *orig = an_source(r, loc, end); /* the reference as the client wrote it */
    const char *spec = NULL;
    const char *text = orig ? an_mask_text(r, orig, c, &spec) : NULL;
    if (!text) {
        an_deny(r, "engine.rewrite_conflict", "phigate cannot build the mask for a PHI column");
        return;
    }
    an_edit(r, loc, end - loc, text);
    an_note_mask(r, spec);
}
