#include "gate/min_necessary.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/audit_json.h"

/* ---- which statements -------------------------------------------------------- */

static bool node_is(const sqlp_statement *st, const char *name)
{
    return st->node && strcmp(st->node, name) == 0;
}

/* EXPLAIN returns a plan and PREPARE nothing: the EXECUTE of a prepared read is the read. */
static bool reads_phi_rows(const sqlp_statement *st)
{
    return st->stmt_class == SQLP_CLASS_READ && st->touches_phi && !node_is(st, "ExplainStmt") &&
           !node_is(st, "PrepareStmt");
}

bool minnec_phi_read(const sqlp_decision *d)
{
    if (!d || (d->verdict != SQLP_ALLOW && d->verdict != SQLP_REWRITE) || !d->touches_phi)
        return false;
    for (size_t i = 0; i < d->nstatements; i++)
        if (reads_phi_rows(&d->statements[i]))
            return true;
    return false;
}

minnec_plan_kind minnec_plan_kind_of(const sqlp_decision *d)
{
    if (d->nstatements != 1 || !d->upstream_sql)
        return MINNEC_PLAN_MULTI;
    const sqlp_statement *st = &d->statements[0];
    if (node_is(st, "FetchStmt"))
        return MINNEC_PLAN_FETCH;
    /* What EXPLAIN takes (the server's ExplainableStmt) among reads. */
    if (!node_is(st, "SelectStmt") && !node_is(st, "DeclareCursorStmt") && !node_is(st, "ExecuteStmt"))
        return MINNEC_PLAN_UNKNOWN;
    if (st->has_params)
        return MINNEC_PLAN_PARAMS;
    return MINNEC_PLAN_OK;
}

const char *minnec_plan_kind_reason(minnec_plan_kind k)
{
    switch (k) {
    case MINNEC_PLAN_OK:
        return "estimated";
    case MINNEC_PLAN_FETCH:
        return "FETCH reads a cursor whose DECLARE was estimated";
    case MINNEC_PLAN_PARAMS:
        return "the statement has bind parameters, so its plan cannot be estimated before they are bound";
    case MINNEC_PLAN_MULTI:
        return "several statements in one query string cannot be estimated together";
    case MINNEC_PLAN_UNKNOWN:
        break;
    }
    return "the planner cannot estimate this kind of statement";
}

char *minnec_explain_sql(const sqlp_decision *d, sqlp_dialect dialect)
{
    if (minnec_plan_kind_of(d) != MINNEC_PLAN_OK)
        return NULL;
    /* One statement (the engine parsed it as one), so the prefix cannot
     * change what runs: EXPLAIN without ANALYZE executes nothing. */
    const char *prefix = dialect == SQLP_DIALECT_MYSQL ? "EXPLAIN FORMAT=JSON " : "EXPLAIN (FORMAT JSON) ";
    char *out = NULL;
    if (asprintf(&out, "%s%s", prefix, d->upstream_sql) < 0)
        return NULL;
    return out;
}

/* ---- EXPLAIN output -------------------------------------------------------------- */

static bool fail(char *err, size_t errlen, const char *msg)
{
    snprintf(err, errlen, "%s", msg);
    return false;
}

/* A JSON number as a row count: non-negative, finite, rounded up. */
static bool number_rows(const aj_value *v, double *out)
{
    if (!v || v->type != AJ_NUMBER)
        return false;
    char *end;
    double x = strtod(v->str, &end);
    if (*end || !isfinite(x) || x < 0)
        return false;
    *out = x;
    return true;
}

static bool to_rows(double x, uint64_t *rows)
{
    if (!isfinite(x) || x < 0)
        return false;
    *rows = x >= 1.8e19 ? UINT64_MAX : (uint64_t)ceil(x);
    return true;
}

/* Parse json, let top() find the estimate in the tree: the steps both dialects share. */
typedef const char *(*plan_top_fn)(const aj_value *root, double *x); /* NULL or why not */

static bool plan_rows(const char *json, size_t len, plan_top_fn top, uint64_t *rows, char *err, size_t errlen)
{
    aj_arena a = {0};
    aj_value *root;
    char perr[128];
    bool ok = false;
    double x;
    const char *why;
    if (!aj_parse(&a, json, len, &root, perr, sizeof perr))
        snprintf(err, errlen, "EXPLAIN output is not JSON: %s", perr);
    else if ((why = top(root, &x)))
        fail(err, errlen, why);
    else if (!(ok = to_rows(x, rows)))
        fail(err, errlen, "EXPLAIN's row estimate is out of range");
    aj_arena_free(&a);
    return ok;
}

static const char *pg_top(const aj_value *root, double *x)
{
    if (root->type != AJ_ARRAY || !root->child || root->child->type != AJ_OBJECT)
        return "EXPLAIN output is not an array of plans";
    const aj_value *plan = aj_get(root->child, "Plan");
    if (!plan || plan->type != AJ_OBJECT || !number_rows(aj_get(plan, "Plan Rows"), x))
        return "EXPLAIN output has no \"Plan Rows\" on its top plan node";
    return NULL;
}

bool minnec_pg_plan_rows(const char *json, size_t len, uint64_t *rows, char *err, size_t errlen)
{
    return plan_rows(json, len, pg_top, rows, err, errlen);
}

/* MySQL prints numbers in some versions as strings ("rows_produced_per_join": "12"). */
static bool member_rows(const aj_value *obj, const char *key, double *out)
{
    const aj_value *v = aj_get(obj, key);
    if (v && v->type == AJ_STRING) {
        char *end;
        double x = strtod(v->str, &end);
        if (*end || !isfinite(x) || x < 0)
            return false;
        *out = x;
        return true;
    }
    return number_rows(v, out);
}

/* Rows one "table" node produces into the join. */
static bool table_rows(const aj_value *t, double *rows, bool *cumulative)
{
    double x, filtered;
    *cumulative = false;
    if (member_rows(t, "rows_produced_per_join", &x)) { /* MySQL: already the join's running total */
        *cumulative = true;
        *rows = x;
        return true;
    }
    if (member_rows(t, "rows_examined_per_scan", &x)) {
        *rows = x;
        return true;
    }
    if (member_rows(t, "rows", &x)) { /* MariaDB */
        if (member_rows(t, "filtered", &filtered))
            x = x * filtered / 100.0;
        *rows = x;
        return true;
    }
    return false;
}

static bool block_rows(const aj_value *b, int depth, double *rows);

/* A nested_loop array: MySQL's last per-join figure, else the product of each table's rows. */
static bool loop_rows(const aj_value *arr, int depth, double *rows)
{
    double product = 1.0, last = -1.0;
    bool any = false;
    for (const aj_value *e = arr->child; e; e = e->next) {
        double x;
        bool cumulative = false;
        const aj_value *t = aj_get(e, "table");
        if (t && t->type == AJ_OBJECT) {
            if (!table_rows(t, &x, &cumulative))
                return false;
        } else if (!block_rows(e, depth + 1, &x)) {
            return false;
        }
        product *= x;
        if (cumulative)
            last = x;
        any = true;
    }
    if (!any)
        return false;
    *rows = last >= 0 ? last : product;
    return true;
}

/* Any MySQL/MariaDB query block or operation wrapper. */
static bool block_rows(const aj_value *b, int depth, double *rows)
{
    if (!b || b->type != AJ_OBJECT || depth > 32)
        return false;
    const aj_value *v;
    bool cumulative;
    if ((v = aj_get(b, "query_block")))
        return block_rows(v, depth + 1, rows);
    if ((v = aj_get(b, "table")) && v->type == AJ_OBJECT)
        return table_rows(v, rows, &cumulative);
    if ((v = aj_get(b, "nested_loop")) && v->type == AJ_ARRAY)
        return loop_rows(v, depth, rows);
    if ((v = aj_get(b, "union_result")) && v->type == AJ_OBJECT) {
        const aj_value *specs = aj_get(v, "query_specifications");
        if (!specs)
            specs = aj_get(v, "query_blocks"); /* MariaDB */
        if (!specs || specs->type != AJ_ARRAY || !specs->child)
            return false;
        double sum = 0;
        for (const aj_value *e = specs->child; e; e = e->next) {
            double x;
            if (!block_rows(e, depth + 1, &x))
                return false;
            sum += x;
        }
        *rows = sum;
        return true;
    }
    /* Wrappers around the same rows (sorting, grouping, temporary tables). */
    static const char *const wrappers[] = {"ordering_operation", "grouping_operation", "duplicates_removal",
                                           "filesort", "temporary_table", "read_sorted_file", "windowing", NULL};
    for (int i = 0; wrappers[i]; i++)
        if ((v = aj_get(b, wrappers[i])))
            return block_rows(v, depth + 1, rows);
    return false;
}

static const char *mysql_top(const aj_value *root, double *x)
{
    if (root->type != AJ_OBJECT || !aj_get(root, "query_block") || !block_rows(root, 0, x))
        return "EXPLAIN output has no row estimate phigate can read";
    return NULL;
}

bool minnec_mysql_plan_rows(const char *json, size_t len, uint64_t *rows, char *err, size_t errlen)
{
    return plan_rows(json, len, mysql_top, rows, err, errlen);
}

/* ---- judging ------------------------------------------------------------------------- */

uint64_t minnec_budget_remaining(uint64_t budget, uint64_t used)
{
    return used >= budget ? 0 : budget - used;
}

const char *minnec_verdict_rule(minnec_verdict v)
{
    switch (v) {
    case MINNEC_RUN:
        return NULL;
    case MINNEC_HOLD_ESTIMATE:
        return "min_necessary.estimate";
    case MINNEC_HOLD_NO_ESTIMATE:
        return "min_necessary.no_estimate";
    case MINNEC_HOLD_BUDGET:
        return "min_necessary.budget";
    }
    return NULL;
}

static minnec_verdict judge_budget(const minnec_limits *l, const minnec_facts *f, char *reason, size_t len)
{
    uint64_t left = minnec_budget_remaining(l->budget_rows, f->used);
    unsigned long long window_s = (unsigned long long)(l->budget_window_ms + 999) / 1000;
    if (left == 0) {
        snprintf(reason, len, "PHI row budget used up: %llu of %llu rows in the %llu s window",
                 (unsigned long long)f->used, (unsigned long long)l->budget_rows, window_s);
        return MINNEC_HOLD_BUDGET;
    }
    if (f->estimated && f->estimate > left) {
        snprintf(reason, len,
                 "planner estimate %llu rows > PHI row budget left %llu (%llu of %llu used in the %llu s window)",
                 (unsigned long long)f->estimate, (unsigned long long)left, (unsigned long long)f->used,
                 (unsigned long long)l->budget_rows, window_s);
        return MINNEC_HOLD_BUDGET;
    }
    return MINNEC_RUN;
}

minnec_verdict minnec_judge(const minnec_limits *l, const minnec_facts *f, const char **rule, char *reason,
                            size_t reasonlen)
{
    minnec_verdict v = MINNEC_RUN;
    reason[0] = '\0';
    if (l->estimate_row_limit >= 0 && !f->exempt) {
        if (!f->estimated) {
            snprintf(reason, reasonlen, "no planner estimate (%s); role's estimate_row_limit is %lld",
                     f->no_estimate[0] ? f->no_estimate : "unknown", (long long)l->estimate_row_limit);
            v = MINNEC_HOLD_NO_ESTIMATE;
        } else if (f->estimate > (uint64_t)l->estimate_row_limit) {
            snprintf(reason, reasonlen, "planner estimate %llu rows > limit %lld", (unsigned long long)f->estimate,
                     (long long)l->estimate_row_limit);
            v = MINNEC_HOLD_ESTIMATE;
        }
    }
    if (v == MINNEC_RUN && l->budget_rows > 0)
        v = judge_budget(l, f, reason, reasonlen);
    *rule = minnec_verdict_rule(v);
    return v;
}

void minnec_outcome_judge(minnec_outcome *o)
{
    o->verdict = minnec_judge(o->limits, &o->facts, &o->rule, o->reason, sizeof o->reason);
}
