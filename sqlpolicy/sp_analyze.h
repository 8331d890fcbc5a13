/*
 * The analyser's own shared state: scopes, range entries, lineage helpers and
 * the rewrite primitives.  Only analyze_*.c include this.
 *
 * The analyser walks libpg_query's raw parse tree (protobuf form).  Every
 * value it meets gets a lineage (sp_lin: the base columns it derives from)
 * and is judged by the context it is used in:
 *
 *   AN_OUTPUT  reaches the client: PHI column references are replaced in the
 *              text by their masked form (a splice at the reference's tokens)
 *   AN_PRED    filters, joins, sorts, groups: PHI use is checked against the
 *              role's predicate rules (an oracle on a masked column is a leak)
 *   AN_INTER   flows on into an enclosing query (FROM subqueries, CTEs,
 *              INSERT ... SELECT): only the lineage is recorded; the enclosing
 *              query masks or polices it where it finally goes
 *
 * Anything the walker does not recognise denies the statement (fail closed).
 */
#ifndef PHIGATE_SP_ANALYZE_H
#define PHIGATE_SP_ANALYZE_H

#include <pg_query/pg_query.pb-c.h>

#include "sqlpolicy/sp_internal.h"

typedef PgQuery__Node Node;

typedef enum {
    AN_OUTPUT,
    AN_PRED,
    AN_INTER,
    AN_PRED_EQ, /* targets of an IN / = ANY sublink: compared with '=' */
} an_ctx;

/* One column of a range entry or of a query's output. */
typedef struct an_col {
    const char *name;
    const char *type;       /* base type when known (IDENT lineage), else NULL */
    sp_lin lin;
    bool hidden;            /* a USING column merged into its join: not found unqualified */
    const char *masks;      /* masks applied to it in the rewrite (output columns) */
} an_col;

typedef struct an_level an_level;

typedef struct an_rte {
    const char *name;       /* reference name; NULL for an unaliased join */
    const char *schema;     /* relation's schema (for schema.table.column refs) */
    cat_rel *rel;           /* catalog relation or view, else NULL */
    const char *relname;    /* relation name as written (unknown relations) */
    bool unknown;           /* relation not in the catalog: columns made up on use */
    bool is_join;
    sp_lin unknown_lin;     /* lineage of made-up columns (functions returning record) */
    int ncols, capcols;
    an_col *cols;
} an_rte;

/* FROM tree, kept for the expansion of '*' (join order and USING merges). */
typedef struct an_item {
    an_rte *rte;            /* leaf, or the join's own entry (merged columns) */
    struct an_item *l, *r;  /* join children */
    int nmerged;            /* join: the first nmerged columns of rte are merged */
} an_item;

typedef struct an_cte {
    struct an_cte *next;
    const char *name;
    int ncols;
    an_col *cols;
    bool recursive_pending; /* self-reference while its first branch is analysed */
} an_cte;

struct an_level {
    an_level *parent;       /* enclosing query (correlated references) */
    an_level *bound_by;     /* FROM subqueries: the query whose LIMIT bounds their rows */
    an_rte **rtes;
    int nrtes, caprtes;
    an_item **items;
    int nitems, capitems;
    an_cte *ctes;           /* visible CTEs, innermost first */
    bool limited;           /* LIMIT at or below the role's unscoped limit */
    bool aggregated;        /* aggregate without GROUP BY: one row */
    bool has_group;
    bool collecting;        /* array_agg / string_agg ...: every row comes back in one */
};

/* A relation read somewhere in the statement, for the unscoped-read rule. */
typedef struct an_read {
    const cat_rel *rel;
    an_level *level;
} an_read;

/* Per-run state behind sp_analysis.priv. */
typedef struct an_run {
    sp_analysis *an;
    sp_arena *a;
    an_read *reads;
    int nreads, capreads;
    an_read *scoped;         /* relation restricted by a WHERE clause of a level */
    int nscoped, capscoped;
    an_read *joined;         /* pairs (x at level, y at level): joined with x.col = y.col */
    int njoined, capjoined;
    bool in_where;           /* walking a WHERE clause (scopes relations) */
    bool top_conj;           /* at the top AND-conjunction of a WHERE / ON clause: an
                                equality here restricts rows (under OR, NOT or a
                                function it restricts nothing) */
    const char *clause;      /* clause being walked, for messages */
    bool whole_row;          /* a whole-row PHI reference met in the current output target */
    sp_buf masks;            /* masks applied in the current output target */
    bool no_edits;           /* lineage only (view definitions) */
    bool explain;            /* inside EXPLAIN: no rows come back */
    bool top_write;          /* the statement itself is INSERT/UPDATE/DELETE */
    int view_depth;          /* nesting of view definitions being analysed */
} an_run;

/* ---- lineage --------------------------------------------------------------- */

void lin_add_col(sp_arena *a, sp_lin *l, const cat_col *c);
void lin_merge(sp_arena *a, sp_lin *dst, const sp_lin *src);
bool lin_phi(const sp_lin *l);
int lin_class(const sp_lin *l); /* strongest PHI class, -1 when none */
bool col_phi(const an_col *c);

/* ---- verdict helpers ------------------------------------------------------- */

void an_deny(an_run *r, const char *rule, const char *fmt, ...) SP_PRINTF(3, 4);
void an_hold(an_run *r, const char *rule, const char *fmt, ...) SP_PRINTF(3, 4);
void an_escalate(an_run *r, sqlp_class c, const char *why);
void an_unsupported(an_run *r, const Node *n, const char *where);
const char *an_node_name(const Node *n);
bool an_too_deep(an_run *r, int depth);

/* ---- scopes ---------------------------------------------------------------- */

an_level *an_level_new(an_run *r, an_level *parent);
an_rte *an_rte_new(an_run *r, const char *name);
an_col *an_rte_add_col(an_run *r, an_rte *t, const char *name);
void an_level_add(an_run *r, an_level *lv, an_rte *t);
an_item *an_item_add(an_run *r, an_level *lv, an_item *it);
/* FROM-clause entry: resolves and registers relations, subqueries, functions, joins. */
an_item *an_from_item(an_run *r, an_level *lv, const Node *n, int depth);
/* A relation as a range entry (for UPDATE / DELETE / INSERT targets too). */
an_rte *an_relation(an_run *r, an_level *lv, const PgQuery__RangeVar *rv, bool read);

/* Resolve a column reference; *rte_out and *whole set as found.  NULL when not found. */
an_col *an_resolve(an_run *r, an_level *lv, const PgQuery__ColumnRef *cr, an_rte **rte_out, bool *whole,
                   bool *ambiguous);

/* ---- queries and expressions --------------------------------------------- */

/* A SELECT (or VALUES / set operation) at any level.  Output columns in *cols. */
void an_select(an_run *r, const PgQuery__SelectStmt *s, an_level *parent, an_ctx ctx, an_col **cols, int *ncols,
               int depth);
/* Any query node that returns rows (SELECT, or INSERT/UPDATE/DELETE with RETURNING). */
void an_query(an_run *r, const Node *n, an_level *parent, an_ctx ctx, an_col **cols, int *ncols, int depth);
/* An expression: its lineage into *out (zeroed by the caller). */
void an_expr(an_run *r, const Node *n, an_level *lv, an_ctx ctx, sp_lin *out, int depth);
/* The same, for a value compared with '=' by its parent (IN / = ANY sublink targets). */
void an_expr_eq(an_run *r, const Node *n, an_level *lv, an_ctx ctx, sp_lin *out, int depth, bool eq);
/* A function name: role lists, administrative / SQL-text / unknown functions.
 * Returns the kind the rest of the walk should assume. */
sp_func_kind an_check_function(an_run *r, const char *schema, const char *name);
/* SET name = value, RESET name (value NULL), set_config(): which class, or deny. */
void an_check_setting(an_run *r, const char *name, const char *value);
/* The statement changes the session's search_path (NULL: back to the default). */
void an_search_path(an_run *r, bool local, const char *path);
/* An expression list in predicate context (WHERE and the like). */
void an_pred(an_run *r, const Node *n, an_level *lv, const char *clause, int depth);
/* Target list of a SELECT or RETURNING: output columns. */
void an_targets(an_run *r, Node *const *targets, size_t n, an_level *lv, an_ctx ctx, an_col **cols, int *ncols,
                int depth);
/* Write statements (analyze_write.c). */
void an_insert(an_run *r, const PgQuery__InsertStmt *s, an_level *parent, an_ctx ctx, an_col **cols, int *ncols,
               int depth);
void an_update(an_run *r, const PgQuery__UpdateStmt *s, an_level *parent, an_ctx ctx, an_col **cols, int *ncols,
               int depth);
void an_delete(an_run *r, const PgQuery__DeleteStmt *s, an_level *parent, an_ctx ctx, an_col **cols, int *ncols,
               int depth);
/* WITH clause: CTEs become visible in lv. */
void an_with(an_run *r, const PgQuery__WithClause *w, an_level *lv, int depth);
/* Use of a (possibly PHI) column in a predicate; eq: directly under '=' / IN / USING. */
void an_check_pred(an_run *r, const an_col *c, bool eq);
void an_note_read(an_run *r, const cat_rel *rel, an_level *lv);
/* A WHERE clause of level lv reads these columns: their relations count as
 * restricted for every read at lv or below it. */
void an_note_scoped(an_run *r, const sp_lin *l, an_level *lv);
/* a = b between two plain columns at lv: a relation joined on a key to a
 * restricted one is restricted too. */
void an_note_join(an_run *r, const sp_lin *a, const sp_lin *b, an_level *lv);
/* Every read of rel is restricted (WHERE, key join, LIMIT, one-row aggregate). */
bool an_rel_scoped(an_run *r, const cat_rel *rel);
/* rel, the target of a write at level lv, is restricted by a selective WHERE. */
bool an_rel_scoped_at(an_run *r, const cat_rel *rel, const an_level *lv);
bool an_const_int(const Node *n, int64_t *out);
/* The decision depends on this constant's value: a statement of the same shape
 * with another value here must be analysed again. */
void an_note_literal(an_run *r, const Node *n);
const char *an_str(const Node *n); /* String node value, else NULL */

/* ---- rewriting (analyze_rewrite.c) ------------------------------------------ */

void an_edit(an_run *r, uint32_t pos, uint32_t del, const char *text);
/* The client's text of the analysed span [start, end): itself, or for MySQL
 * the bytes the translation came from.  NULL when it cannot be mapped. */
const char *an_source(an_run *r, uint32_t start, uint32_t end);
/* End offset of the column reference / expression that starts at byte loc. */
uint32_t an_colref_end(an_run *r, uint32_t loc);
uint32_t an_expr_end(an_run *r, uint32_t loc);
/* Output name PostgreSQL gives an unnamed target (FigureColname). */
const char *an_figure_colname(const Node *n);
/* Replace the column reference at loc (a PHI column) by its masked form. */
void an_mask_ref(an_run *r, uint32_t loc, const an_col *c);
/* Masked SQL of expression text expr for column c; *spec gets the mask used. */
const char *an_mask_text(an_run *r, const char *expr, const an_col *c, const char **spec);
/* Append ", " + spec to the current target's mask list (once). */
void an_note_mask(an_run *r, const char *spec);

#endif
