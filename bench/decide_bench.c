/*
 * decide_bench: the cost of one policy decision (sqlp_decide), the way the
 * fronts pay it per Query / Parse.
 *
 *   decide_bench [--catalog TSV] [--rules DIR] [--seconds S] [--only cached|shape|cold]
 *
 * For three statements - a 52-byte point select, a ~300-byte three-table
 * join over PHI, a ~2 KB analytic query - prints nanoseconds per decision:
 *   cached  the same text again (what a driver re-sending a statement costs)
 *   shape   new text of a cached shape (other literals or comments: pgbench
 *           -M simple): lex, shape lookup, replay of the rewrite
 *   cold    the cache turned off: lex, parse (libpg_query), analyse, rewrite
 * Run from the repository root (defaults: the unit tests' clinic catalog and
 * masking-rules/).  SPEC target: cached in microseconds, cold in tens of.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sqlpolicy/sqlpolicy.h"

static const char point[] = "SELECT ssn, state FROM patients WHERE id = 123456789";

static const char join3[] =
    "SELECT p.id, p.first_name, p.last_name, e.admitted_at, e.diagnosis_code, w.name AS ward, e.notes\n"
    "  FROM patients p\n"
    "  JOIN encounters e ON e.patient_id = p.id\n"
    "  JOIN wards w ON w.id = e.ward_id\n"
    " WHERE p.id = $1 AND e.discharged_at IS NOT NULL AND w.floor > 2\n"
    " ORDER BY e.id DESC\n"
    " LIMIT 20";

static const char analytic[] =
    "WITH recent AS (\n"
    "    SELECT e.id, e.patient_id, e.ward_id, e.diagnosis_code, e.admitted_at, e.discharged_at,\n"
    "           e.attending_npi, e.notes\n"
    "      FROM encounters e\n"
    "     WHERE e.ward_id IN (1, 2, 3, 5, 8) AND e.attending_npi <> '0000000000'\n"
    "), per_patient AS (\n"
    "    SELECT r.patient_id, count(*) AS visits, max(r.admitted_at) AS last_visit,\n"
    "           count(DISTINCT r.diagnosis_code) AS diagnoses, array_agg(DISTINCT r.ward_id) AS wards\n"
    "      FROM recent r\n"
    "     GROUP BY r.patient_id\n"
    "), rx AS (\n"
    "    SELECT e.patient_id, count(*) AS prescriptions, string_agg(DISTINCT pr.drug, ', ') AS drugs\n"
    "      FROM prescriptions pr\n"
    "      JOIN encounters e ON e.id = pr.encounter_id\n"
    "     WHERE pr.dose NOT LIKE '%placebo%'\n"
    "     GROUP BY e.patient_id\n"
    "), billing AS (\n"
    "    SELECT b.patient_id, sum(b.balance_cents) AS balance, min(i.name) AS plan, min(i.payer) AS payer\n"
    "      FROM billing_accounts b\n"
    "      JOIN insurance_plans i ON i.id = b.plan_id\n"
    "     GROUP BY b.patient_id\n"
    ")\n"
    "SELECT p.id, p.mrn, p.first_name, p.last_name, p.dob, p.state, p.zip,\n"
    "       pp.visits, pp.last_visit, pp.diagnoses, pp.wards,\n"
    "       coalesce(rx.prescriptions, 0) AS prescriptions, rx.drugs,\n"
    "       bl.balance, bl.plan, bl.payer,\n"
    "       rank() OVER (PARTITION BY p.state ORDER BY pp.visits DESC, bl.balance DESC) AS state_rank,\n"
    "       round(100.0 * pp.visits / sum(pp.visits) OVER (PARTITION BY p.state), 2) AS pct_of_state,\n"
    "       CASE WHEN bl.balance > 100000 THEN 'high'\n"
    "            WHEN bl.balance > 10000 THEN 'medium'\n"
    "            ELSE 'low' END AS balance_band,\n"
    "       (SELECT count(*) FROM encounters e2 WHERE e2.patient_id = p.id AND e2.discharged_at IS NULL) AS open_stays,\n"
    "       (SELECT d.description FROM diagnosis_codes d\n"
    "         WHERE d.code = (SELECT r2.diagnosis_code FROM recent r2 WHERE r2.patient_id = p.id\n"
    "                          ORDER BY r2.id DESC LIMIT 1)) AS latest_diagnosis,\n"
    "       EXISTS (SELECT 1 FROM recent r3 JOIN wards w ON w.id = r3.ward_id\n"
    "                WHERE r3.patient_id = p.id AND w.floor >= 5) AS upper_floors,\n"
    "       extract(year FROM pp.last_visit) AS last_year\n"
    "  FROM patients p\n"
    "  JOIN per_patient pp ON pp.patient_id = p.id\n"
    "  LEFT JOIN rx ON rx.patient_id = p.id\n"
    "  LEFT JOIN billing bl ON bl.patient_id = p.id\n"
    " WHERE p.state IN ('OH', 'TX', 'WA', 'CO', 'GA') AND p.created_at < now() - interval '1 year'\n"
    "   AND pp.visits >= 2\n"
    " ORDER BY p.state, state_rank\n"
    " LIMIT 50";

static char *unescape(char *s)
{
    if (strcmp(s, "\\N") == 0)
        return NULL;
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p == '\\' && p[1]) {
            p++;
            *o++ = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
    return s;
}

static sqlp_engine *load(const char *tsv, const char *rules)
{
    sqlp_catalog *cat = sqlp_catalog_new();
    FILE *f = fopen(tsv, "r");
    if (!cat || !f) {
        perror(tsv);
        exit(2);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] == '\n')
            line[n - 1] = 0;
        const char *fields[SQLP_CATALOG_PG_NFIELDS];
        size_t nf = 0;
        char *p = line;
        while (nf < SQLP_CATALOG_PG_NFIELDS) {
            char *tab = strchr(p, '\t');
            if (tab)
                *tab = 0;
            fields[nf++] = unescape(p);
            if (!tab)
                break;
            p = tab + 1;
        }
        if (!sqlp_catalog_add_pg_row(cat, fields, nf)) {
            fprintf(stderr, "%s: a row was not accepted\n", tsv);
            exit(2);
        }
    }
    free(line);
    fclose(f);
    char err[512];
    if (!sqlp_catalog_load_rules(cat, rules, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        exit(2);
    }
    return sqlp_engine_new(cat);
}

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* ns per decision over about `seconds` of repetitions */
static double run(sqlp_engine *eng, const sqlp_context *ctx, const char *sql, double seconds, sqlp_verdict *v)
{
    size_t len = strlen(sql);
    /* calibrate */
    long iters = 16;
    double t0, t1;
    for (;;) {
        t0 = now_ns();
        for (long i = 0; i < iters; i++)
            sqlp_decision_free(sqlp_decide(eng, ctx, sql, len));
        t1 = now_ns();
        if (t1 - t0 > seconds * 1e9 / 10 || iters > (1L << 28))
            break;
        iters *= 4;
    }
    long total = (long)(iters * (seconds * 1e9 / 10) / (t1 - t0 + 1)) * 10;
    if (total < iters)
        total = iters;
    t0 = now_ns();
    for (long i = 0; i < total; i++)
        sqlp_decision_free(sqlp_decide(eng, ctx, sql, len));
    t1 = now_ns();
    sqlp_decision *d = sqlp_decide(eng, ctx, sql, len);
    *v = d->verdict;
    sqlp_decision_free(d);
    return (t1 - t0) / (double)total;
}

/* ns per decision when each text is new but of a cached shape: the same
 * statement with another trailing comment, as literals varying would be */
static double run_shape(sqlp_engine *eng, const sqlp_context *ctx, const char *sql, double seconds)
{
    size_t len = strlen(sql);
    char *buf = malloc(len + 32);
    memcpy(buf, sql, len);
    long total = 0;
    double t0 = now_ns(), t1;
    do {
        for (int i = 0; i < 256; i++, total++) {
            int n = snprintf(buf + len, 32, " -- %ld", total);
            sqlp_decision_free(sqlp_decide(eng, ctx, buf, len + (size_t)n));
        }
        t1 = now_ns();
    } while (t1 - t0 < seconds * 1e9);
    free(buf);
    return (t1 - t0) / (double)total;
}

int main(int argc, char **argv)
{
    const char *tsv = "tests/unit/sqlpolicy/clinic_catalog.tsv", *rules = "masking-rules";
    double seconds = 1.0;
    const char *only = NULL; /* --only cached|shape|cold, for profiling one path */
    static const struct option opts[] = {
        {"only", required_argument, NULL, 'o'},
        {"catalog", required_argument, NULL, 'c'},
        {"rules", required_argument, NULL, 'r'},
        {"seconds", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "c:r:s:o:", opts, NULL)) != -1) {
        if (o == 'o')
            only = optarg;
        else if (o == 'c')
            tsv = optarg;
        else if (o == 'r')
            rules = optarg;
        else if (o == 's')
            seconds = atof(optarg);
        else {
            fprintf(stderr, "usage: decide_bench [--catalog TSV] [--rules DIR] [--seconds S] [--only cached|shape|cold]\n");
            return 2;
        }
    }
    sqlp_engine *eng = load(tsv, rules);
    sqlp_role role;
    memset(&role, 0, sizeof role);
    sqlp_role_init_agent(&role);
    role.name = "bench";
    /* the analytic query filters on a date; an analyst role may */
    role.predicates[SQLP_HIPAA_DATES] = SQLP_PRED_ALLOW;
    sqlp_context ctx = {.identity = "bench", .role = &role, .database = "clinic"};
    static const struct {
        const char *name;
        const char *sql;
    } qs[] = {{"point select", point}, {"3-table join", join3}, {"analytic", analytic}};
    printf("%-14s %6s %-8s %14s %14s %14s\n", "statement", "bytes", "verdict", "cached ns/op", "shape ns/op",
           "cold ns/op");
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        sqlp_verdict v;
        double cached = 0, cold = 0, shape = 0;
        if (!only || strcmp(only, "cached") == 0) {
            sqlp_engine_set_cache_limits(eng, 4096, 32u << 20);
            cached = run(eng, &ctx, qs[i].sql, seconds, &v);
        }
        if (!only || strcmp(only, "shape") == 0) {
            sqlp_engine_set_cache_limits(eng, 4096, 32u << 20);
            shape = run_shape(eng, &ctx, qs[i].sql, seconds);
        }
        if (!only || strcmp(only, "cold") == 0) {
            sqlp_engine_set_cache_limits(eng, 0, 0);
            cold = run(eng, &ctx, qs[i].sql, seconds, &v);
        }
        printf("%-14s %6zu %-8s %14.0f %14.0f %14.0f\n", qs[i].name, strlen(qs[i].sql), sqlp_verdict_name(v), cached,
               shape, cold);
    }
    sqlp_engine_unref(eng);
    return 0;
}
