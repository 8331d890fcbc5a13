/*
 * min_necessary: HIPAA's "minimum necessary" checks on a PHI read that the
 * policy engine already allowed (its syntactic scope rule passed):
 *
 *   estimate  the planner's row estimate (EXPLAIN, run by the front on the
 *             session's own upstream connection) must not exceed the role's
 *             estimate_row_limit;
 *   budget    PHI rows returned per identity per window (counted in Redis,
 *             so every phigate sharing it sees the same count) must not be
 *             used up, nor smaller than the estimate.
 *
 * A statement that fails a check is held for a human's approval like any
 * other held statement.  This module is protocol neutral and does no I/O:
 * which statements the checks apply to, the EXPLAIN text and the parsing of
 * its JSON (PostgreSQL and MySQL/MariaDB), the arithmetic and the reasons.
 * The fronts run the EXPLAIN; gate/approvals.c runs the Redis script below.
 *
 *   front: decision ALLOW/REWRITE on a PHI read
 *      |-- minnec_explain_plan()  -> EXPLAIN on the upstream -> minnec_*_plan_rows()
 *      |-- approvals_budget(add 0) -> rows used in the window
 *      '-- minnec_judge()  -> run it, or hold it with the reason
 *   results: rows of a PHI read's result -> approvals_budget(add rows)
 */
#ifndef PHIGATE_MIN_NECESSARY_H
#define PHIGATE_MIN_NECESSARY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sqlpolicy/sqlpolicy.h"

#define MINNEC_WUR __attribute__((warn_unused_result))

/* A role's limits (roles.<name>.estimate_row_limit / phi_row_budget). */
typedef struct minnec_limits {
    int64_t estimate_row_limit; /* -1 = no estimate check */
    uint64_t budget_rows;       /* 0 = no budget */
    uint32_t budget_window_ms;  /* the budget's window (with budget_rows) */
} minnec_limits;

#define MINNEC_MAX_WINDOW_MS (7u * 24 * 3600 * 1000) /* a week */

static inline bool minnec_enabled(const minnec_limits *l)
{
    return l->estimate_row_limit >= 0 || l->budget_rows > 0;
}

/* The checks apply to a decision that runs (ALLOW/REWRITE), touches PHI and
 * has a statement that reads rows (class read, not an EXPLAIN).  The rows of
 * its results are what the budget counts. */
bool minnec_phi_read(const sqlp_decision *d);

/* Whether an EXPLAIN can estimate the decision, and if not, why. */
typedef enum {
    MINNEC_PLAN_OK,        /* one statement of an explainable kind, no parameters */
    MINNEC_PLAN_FETCH,     /* FETCH / MOVE: its cursor's DECLARE was estimated */
    MINNEC_PLAN_PARAMS,    /* refers to bind parameters: the plan needs their values */
    MINNEC_PLAN_MULTI,     /* several statements in one string */
    MINNEC_PLAN_UNKNOWN,   /* a statement EXPLAIN does not take */
} minnec_plan_kind;

minnec_plan_kind minnec_plan_kind_of(const sqlp_decision *d);
const char *minnec_plan_kind_reason(minnec_plan_kind k);

/* "EXPLAIN (FORMAT JSON) <upstream_sql>" (PostgreSQL) or "EXPLAIN FORMAT=JSON
 * <upstream_sql>" (MySQL); malloc'd, NULL when out of memory or unexplainable. */
char *minnec_explain_sql(const sqlp_decision *d, sqlp_dialect dialect) MINNEC_WUR;

/* The estimated rows of the top plan node: PostgreSQL's EXPLAIN (FORMAT JSON)
 * "Plan Rows".  false + err on anything unexpected (fail closed: hold). */
bool minnec_pg_plan_rows(const char *json, size_t len, uint64_t *rows, char *err, size_t errlen) MINNEC_WUR;
/* MySQL's EXPLAIN FORMAT=JSON ("rows_produced_per_join" of the last table of
 * the join, else "rows_examined_per_scan") or MariaDB's ("rows" x
 * "filtered" / 100 over the join).  Unions add their parts.  MariaDB's figure
 * ignores LIMIT (LIMIT 90 on 500 rows says 500): a front may cap the estimate
 * by the statement's constant LIMIT before judging. */
bool minnec_mysql_plan_rows(const char *json, size_t len, uint64_t *rows, char *err, size_t errlen) MINNEC_WUR;

/* What was known when the statement was judged (and goes to the audit log). */
typedef struct minnec_facts {
    bool estimated;        /* estimate is the planner's */
    uint64_t estimate;
    char no_estimate[200]; /* why there is none ("" when estimated) */
    bool exempt;           /* no estimate needed (FETCH: its DECLARE was estimated) */
    bool budget_known;     /* used / window_left came from Redis */
    uint64_t used;         /* PHI rows already returned in the window */
    int64_t window_left_ms; /* -1: no window open */
} minnec_facts;

typedef enum {
    MINNEC_RUN,
    MINNEC_HOLD_ESTIMATE,    /* estimate > estimate_row_limit */
    MINNEC_HOLD_NO_ESTIMATE, /* an estimate limit is set but no estimate could be had */
    MINNEC_HOLD_BUDGET,      /* budget used up, or smaller than the estimate */
} minnec_verdict;

/* The verdict, with the rule name and a reason naming the numbers (no PHI). */
minnec_verdict minnec_judge(const minnec_limits *l, const minnec_facts *f, const char **rule, char *reason,
                            size_t reasonlen);
const char *minnec_verdict_rule(minnec_verdict v);

uint64_t minnec_budget_remaining(uint64_t budget, uint64_t used);

/* Everything the audit record says about the checks of one statement. */
typedef struct minnec_outcome {
    const minnec_limits *limits; /* the role's; NULL = not checked */
    minnec_facts facts;
    minnec_verdict verdict;
    const char *rule;            /* minnec_verdict_rule(verdict), or "min_necessary.error" */
    bool refused;                /* could not be checked (Redis down, EXPLAIN failed): refused */
    char reason[400];            /* why held/refused; "" when it ran */
} minnec_outcome;

/* The outcome's judgement: facts filled in, verdict/rule/reason computed. */
void minnec_outcome_judge(minnec_outcome *o);

/* The Redis script behind approvals_budget(): EVALSHA sha 0 prefix identity add window_ms.
 * Key P budget:<identity>, a counter whose window opens with the first row
 * counted (PEXPIRE window_ms) and closes when the key expires.  Returns
 * {used, pttl}; pttl -2 = no window open. */
#define MINNEC_LUA_BUDGET \
    "local k = ARGV[1] .. 'budget:' .. ARGV[2]\n" \
    "local add = tonumber(ARGV[3])\n" \
    "local w = tonumber(ARGV[4])\n" \
    "if add > 0 then\n" \
    "  redis.call('INCRBY', k, add)\n" \
    "  if redis.call('PTTL', k) < 0 then redis.call('PEXPIRE', k, w) end\n" \
    "end\n" \
    "local used = tonumber(redis.call('GET', k) or '0')\n" \
    "return {used, redis.call('PTTL', k)}\n"

#endif
