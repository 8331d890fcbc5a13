/*
 * Table-driven tests of the sqlpolicy engine: statement in, decision and
 * rewrite out (pgbouncer's hba_test.rules / .eval, libpg_query's
 * input/expected pairs).
 *
 * The engine is built without a server: the clinic catalog comes from
 * tests/unit/sqlpolicy/clinic_catalog.tsv (rows of sqlp_catalog_pg_query()
 * as the clinic fixture answers it, plus a few views), the rules from
 * masking-rules/.  Cases live in tests/unit/sqlpolicy/NAME.cases:
 *
 *   # comment
 *   role tester                 switch role (agent, tester, eq, unmasked, holder, power)
 *   session                     a fresh SQL session (PREPARE / DECLARE state)
 *   dialect mysql               the rest of the file is MySQL (the MySQL clinic catalog)
 *   sql SELECT ...              the statement ("+ ..." lines continue the line before)
 *   verdict rewrite             allow | rewrite | hold | deny
 *   rule phi.masked             the decision's rule (optional)
 *   class read                  class of the first statement (optional)
 *   same                        upstream_sql is the input, byte for byte
 *   upstream <text>             upstream_sql exactly
 *   has <text>                  upstream_sql contains text
 *   lacks <text>                upstream_sql does not contain text
 *   reason <text>               reason contains text
 *   phi yes|no                  touches_phi
 *   col <i> <name> <class|-> <mask|->   output column i of statement 0
 *   end                         (a blank line also ends a case)
 *
 * Usage: test_sqlpolicy [-v] [-d out] [dir]   run every NAME.cases file
 *        (-d: also write each rewritten upstream_sql to out/, one file per case)
 *        test_sqlpolicy -e 'SQL' [role [mysql]]   print one decision (a debugging aid)
 * The last line is "N passed, N failed"; the exit status is 1 on a failure.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sqlpolicy/sqlpolicy.h"

static int passed, failed;
static bool verbose;
static const char *dump_dir; /* -d DIR: write each case's upstream_sql there (tests/pgtap/run_rewrites.sh) */
static int dumped;

/* ---- engine from files --------------------------------------------------------- */

static char *unescape_copy(char *s)
{
    /* COPY text format: \N is NULL, backslash escapes \t \n \\ */
    if (strcmp(s, "\\N") == 0)
        return NULL;
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p == '\\' && p[1]) {
            p++;
            *o++ = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p == 'r' ? '\r' : *p;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
    return s;
}

static bool load_catalog(sqlp_catalog *cat, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return false;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int lineno = 0;
    bool ok = true;
    while ((n = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (line[n - 1] == '\n')
            line[--n] = 0;
        if (!*line || *line == '#')
            continue;
        const char *fields[SQLP_CATALOG_PG_NFIELDS] = {0};
        size_t nf = 0;
        char *p = line;
        while (nf < SQLP_CATALOG_PG_NFIELDS) {
            char *tab = strchr(p, '\t');
            if (tab)
                *tab = 0;
            fields[nf++] = unescape_copy(p);
            if (!tab)
                break;
            p = tab + 1;
        }
        if (!sqlp_catalog_add_pg_row(cat, fields, nf)) {
            fprintf(stderr, "%s:%d: row not accepted\n", path, lineno);
            ok = false;
        }
    }
    free(line);
    fclose(f);
    return ok;
}

static const char *data_dir = "tests/unit/sqlpolicy";

/* The MySQL engine: the clinic fixture as MariaDB's information_schema shows
 * it (schema = database "clinic"), and the rules with the clinic catalog aimed
 * there, as tests/mysql/myharness.py does. */
static sqlp_engine *build_mysql_engine(void)
{
    char path[512], err[512], dir[] = "/tmp/sqlp_myrulesXXXXXX";
    if (!mkdtemp(dir))
        return NULL;
    static const char *const files[] = {"safe_harbor.yaml", "clinic.yaml"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "masking-rules/%s", files[i]);
        FILE *in = fopen(path, "r");
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        FILE *out = fopen(path, "w");
        char line[1024];
        while (in && out && fgets(line, sizeof line, in))
            fputs(strcmp(line, "schema: public\n") == 0 ? "schema: clinic\n" : line, out);
        if (in)
            fclose(in);
        if (out)
            fclose(out);
    }
    sqlp_catalog *cat = sqlp_catalog_new();
    snprintf(path, sizeof path, "%s/clinic_mysql_catalog.tsv", data_dir);
    bool ok = cat && load_catalog(cat, path) && sqlp_catalog_load_rules(cat, dir, err, sizeof err);
    if (!ok)
        fprintf(stderr, "mysql engine: %s\n", err);
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    if (!ok) {
        sqlp_catalog_free(cat);
        return NULL;
    }
    return sqlp_engine_new(cat);
}

static sqlp_engine *build_engine(void)
{
    char path[512], err[512];
    sqlp_catalog *cat = sqlp_catalog_new();
    snprintf(path, sizeof path, "%s/clinic_catalog.tsv", data_dir);
    if (!cat || !load_catalog(cat, path))
        return NULL;
    if (!sqlp_catalog_load_rules(cat, "masking-rules", err, sizeof err)) {
        fprintf(stderr, "masking-rules: %s\n", err);
        sqlp_catalog_free(cat);
        return NULL;
    }
    return sqlp_engine_new(cat);
}

/* ---- roles --------------------------------------------------------------------- */

static sqlp_role roles[6];
static const char *role_names[] = {"agent", "tester", "eq", "unmasked", "holder", "power"};
#define NROLES 6

static void init_roles(void)
{
    for (int i = 0; i < NROLES; i++) {
        sqlp_role_init_agent(&roles[i]);
        roles[i].name = (char *)role_names[i];
        for (int k = 0; k < 32; k++)
            roles[i].token_key[k] = (unsigned char)(k * 7 + 1);
    }
    /* the integration suite's test role: it may write, create and export */
    sqlp_role *t = &roles[1];
    t->classes[SQLP_CLASS_WRITE] = SQLP_CLASS_ALLOW;
    t->classes[SQLP_CLASS_DDL] = SQLP_CLASS_ALLOW;
    t->classes[SQLP_CLASS_EXPORT] = SQLP_CLASS_ALLOW;
    /* equality on names and SSNs allowed, everything else default */
    roles[2].predicates[SQLP_HIPAA_NAMES] = SQLP_PRED_EQUALITY;
    roles[2].predicates[SQLP_HIPAA_SSN] = SQLP_PRED_EQUALITY;
    roles[2].predicates[SQLP_HIPAA_DATES] = SQLP_PRED_ALLOW;
    roles[3].unmasked = true;
    roles[3].classes[SQLP_CLASS_WRITE] = SQLP_CLASS_ALLOW;
    roles[4].classes[SQLP_CLASS_WRITE] = SQLP_CLASS_HOLD;
    roles[4].classes[SQLP_CLASS_EXPORT] = SQLP_CLASS_HOLD;
    /* the leak suite's power role: every class allowed, PHI rules still apply */
    for (int c = 0; c < SQLP_CLASS_COUNT; c++)
        roles[5].classes[c] = SQLP_CLASS_ALLOW;
}

static const sqlp_role *role_by_name(const char *n)
{
    for (int i = 0; i < NROLES; i++)
        if (strcmp(role_names[i], n) == 0)
            return &roles[i];
    return NULL;
}

/* ---- one case ------------------------------------------------------------------ */

typedef struct tcase {
    char file[256];
    int line;
    char *sql;
    size_t sqllen;
    char *lines[64]; /* expectation lines */
    int nlines;
} tcase;

static void print_decision(const sqlp_decision *d)
{
    printf("verdict: %s\nrule: %s\nreason: %s\nphi: %s\n", sqlp_verdict_name(d->verdict), d->rule ? d->rule : "-",
           d->reason ? d->reason : "-", d->touches_phi ? "yes" : "no");
    for (size_t i = 0; i < d->nstatements; i++) {
        const sqlp_statement *s = &d->statements[i];
        printf("statement %zu: %s %s %s\n", i, sqlp_class_name(s->stmt_class), sqlp_verdict_name(s->verdict),
               s->rule ? s->rule : "-");
        for (size_t k = 0; k < s->ncolumns; k++)
            printf("  col %zu %s %s %s  [%s]\n", k, s->columns[k].name, s->columns[k].hipaa_class ? s->columns[k].hipaa_class : "-",
                   s->columns[k].mask ? s->columns[k].mask : "-", s->columns[k].sources ? s->columns[k].sources : "");
    }
    printf("upstream: %s\n", d->upstream_sql ? d->upstream_sql : "(null)");
}

static bool check_line(const tcase *c, const sqlp_decision *d, const char *l, char *why, size_t wl)
{
    const char *sp = strchr(l, ' ');
    const char *arg = sp ? sp + 1 : "";
    size_t kl = sp ? (size_t)(sp - l) : strlen(l);
#define KEY(k) (kl == strlen(k) && strncmp(l, k, kl) == 0)
    const char *up = d->upstream_sql ? d->upstream_sql : "";
    if (KEY("verdict")) {
        if (strcmp(sqlp_verdict_name(d->verdict), arg) == 0)
            return true;
        snprintf(why, wl, "verdict %s (rule %s: %s), expected %s", sqlp_verdict_name(d->verdict),
                 d->rule ? d->rule : "-", d->reason ? d->reason : "-", arg);
        return false;
    }
    if (KEY("rule")) {
        if (d->rule && strcmp(d->rule, arg) == 0)
            return true;
        snprintf(why, wl, "rule %s (%s), expected %s", d->rule ? d->rule : "-", d->reason ? d->reason : "-", arg);
        return false;
    }
    if (KEY("class")) {
        if (d->nstatements && strcmp(sqlp_class_name(d->statements[0].stmt_class), arg) == 0)
            return true;
        snprintf(why, wl, "class %s, expected %s",
                 d->nstatements ? sqlp_class_name(d->statements[0].stmt_class) : "-", arg);
        return false;
    }
    if (KEY("same")) {
        if (d->upstream_sql && d->upstream_len == c->sqllen && memcmp(d->upstream_sql, c->sql, c->sqllen) == 0)
            return true;
        snprintf(why, wl, "upstream differs from the input: %s", d->upstream_sql ? d->upstream_sql : "(null)");
        return false;
    }
    if (KEY("upstream")) {
        if (strcmp(up, arg) == 0)
            return true;
        snprintf(why, wl, "upstream\n      got: %s\n expected: %s", up, arg);
        return false;
    }
    if (KEY("has")) {
        if (strstr(up, arg))
            return true;
        snprintf(why, wl, "upstream lacks \"%s\": %s", arg, up);
        return false;
    }
    if (KEY("lacks")) {
        if (!strstr(up, arg))
            return true;
        snprintf(why, wl, "upstream has \"%s\": %s", arg, up);
        return false;
    }
    if (KEY("reason")) {
        if (d->reason && strstr(d->reason, arg))
            return true;
        snprintf(why, wl, "reason \"%s\" lacks \"%s\"", d->reason ? d->reason : "-", arg);
        return false;
    }
    if (KEY("phi")) {
        bool want = strcmp(arg, "yes") == 0;
        if (d->touches_phi == want)
            return true;
        snprintf(why, wl, "touches_phi %s, expected %s", d->touches_phi ? "yes" : "no", arg);
        return false;
    }
    if (KEY("col")) {
        size_t i;
        char name[128], cls[64], mask[128];
        if (sscanf(arg, "%zu %127s %63s %127[^\n]", &i, name, cls, mask) != 4) {
            snprintf(why, wl, "bad col line");
            return false;
        }
        if (!d->nstatements || i >= d->statements[0].ncolumns) {
            snprintf(why, wl, "no output column %zu", i);
            return false;
        }
        const sqlp_output_column *oc = &d->statements[0].columns[i];
        const char *gc = oc->hipaa_class ? oc->hipaa_class : "-", *gm = oc->mask ? oc->mask : "-";
        if (strcmp(oc->name, name) == 0 && strcmp(gc, cls) == 0 && strcmp(gm, mask) == 0)
            return true;
        snprintf(why, wl, "col %zu is %s %s %s, expected %s %s %s", i, oc->name, gc, gm, name, cls, mask);
        return false;
    }
    snprintf(why, wl, "unknown expectation \"%s\"", l);
    return false;
#undef KEY
}

static bool mysql_mode; /* "dialect mysql" in a .cases file */
static sqlp_engine *mysql_engine;

static void run_case(sqlp_engine *eng, const sqlp_role *role, sqlp_session *sess, tcase *c)
{
    sqlp_context ctx = {.identity = "test", .role = role, .database = "clinic", .session = sess};
    if (mysql_mode) {
        ctx.dialect = SQLP_DIALECT_MYSQL;
        ctx.search_path = "\"clinic\"";
        if (!mysql_engine)
            mysql_engine = build_mysql_engine();
        eng = mysql_engine;
        if (!eng) {
            failed++;
            printf("FAIL %s:%d: no MySQL engine\n", c->file, c->line);
            return;
        }
    }
    sqlp_decision *d = sqlp_decide(eng, &ctx, c->sql, c->sqllen);
    bool ok = true;
    char why[4096];
    for (int i = 0; i < c->nlines && ok; i++)
        if (!check_line(c, d, c->lines[i], why, sizeof why)) {
            ok = false;
            printf("FAIL %s:%d: %s\n  sql: %s\n  %s\n", c->file, c->line, role->name, c->sql, why);
        }
    if (ok && verbose)
        printf("ok   %s:%d\n", c->file, c->line);
    if (dump_dir && d->upstream_sql && (d->verdict == SQLP_REWRITE || d->verdict == SQLP_HOLD) &&
        (d->upstream_len != c->sqllen || memcmp(d->upstream_sql, c->sql, c->sqllen) != 0)) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s%04d_%.200s_%d.sql", dump_dir, mysql_mode ? "mysql_" : "", ++dumped,
                 c->file, c->line);
        FILE *f = fopen(path, "w");
        if (f) {
            fprintf(f, "%s\n", d->upstream_sql);
            fclose(f);
        }
    }
    if (ok) {
        /* a second decision comes from the cache and must be the same object's twin */
        sqlp_decision *d2 = sqlp_decide(eng, &ctx, c->sql, c->sqllen);
        if (d2->verdict != d->verdict ||
            (d->upstream_sql && (!d2->upstream_sql || strcmp(d->upstream_sql, d2->upstream_sql) != 0))) {
            ok = false;
            printf("FAIL %s:%d: second decision differs (%s vs %s)\n", c->file, c->line,
                   sqlp_verdict_name(d2->verdict), sqlp_verdict_name(d->verdict));
        }
        sqlp_decision_free(d2);
    }
    sqlp_decision_free(d);
    if (ok)
        passed++;
    else
        failed++;
}

static void run_file(sqlp_engine *eng, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        failed++;
        return;
    }
    const sqlp_role *role = role_by_name("agent");
    sqlp_session *sess = sqlp_session_new();
    tcase c = {0};
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    snprintf(c.file, sizeof c.file, "%.200s", base);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int lineno = 0;
    for (;;) {
        n = getline(&line, &cap, f);
        bool eof = n <= 0;
        if (!eof) {
            lineno++;
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = 0;
        }
        bool blank = eof || n == 0 || strcmp(line, "end") == 0;
        if (blank) {
            if (c.sql)
                run_case(eng, role, sess, &c);
            free(c.sql);
            for (int i = 0; i < c.nlines; i++)
                free(c.lines[i]);
            c.sql = NULL;
            c.sqllen = 0;
            c.nlines = 0;
            if (eof)
                break;
            continue;
        }
        if (line[0] == '#')
            continue;
        if (strncmp(line, "role ", 5) == 0) {
            role = role_by_name(line + 5);
            if (!role) {
                printf("FAIL %s:%d: unknown role %s\n", c.file, lineno, line + 5);
                failed++;
                role = role_by_name("agent");
            }
        } else if (strcmp(line, "session") == 0) {
            sqlp_session_reset(sess);
        } else if (strncmp(line, "dialect ", 8) == 0) {
            mysql_mode = strcmp(line + 8, "mysql") == 0;
        } else if (strncmp(line, "sql ", 4) == 0) {
            free(c.sql);
            c.sql = strdup(line + 4);
            c.sqllen = strlen(c.sql);
            c.line = lineno;
        } else if (strncmp(line, "+ ", 2) == 0 && c.sql && c.nlines == 0) {
            /* continues the statement */
            size_t add = strlen(line + 2);
            c.sql = realloc(c.sql, c.sqllen + add + 2);
            c.sql[c.sqllen++] = '\n';
            memcpy(c.sql + c.sqllen, line + 2, add + 1);
            c.sqllen += add;
        } else if (strncmp(line, "+ ", 2) == 0 && c.nlines > 0) {
            /* continues the last expectation */
            char *prev = c.lines[c.nlines - 1];
            size_t pl = strlen(prev), add = strlen(line + 2);
            prev = realloc(prev, pl + add + 2);
            prev[pl] = '\n';
            memcpy(prev + pl + 1, line + 2, add + 1);
            c.lines[c.nlines - 1] = prev;
        } else if (c.nlines < 64) {
            c.lines[c.nlines++] = strdup(line);
        }
    }
    free(line);
    sqlp_session_free(sess);
    fclose(f);
    mysql_mode = false; /* a dialect lasts one file */
}

/* ---- checks that do not fit a table ------------------------------------------- */

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (cond) {                                                             \
            passed++;                                                           \
        } else {                                                                \
            failed++;                                                           \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                         \
            printf(__VA_ARGS__);                                                \
            printf("\n");                                                       \
        }                                                                       \
    } while (0)

static sqlp_decision *decide(sqlp_engine *eng, const sqlp_role *role, const char *sql, size_t len)
{
    sqlp_context ctx = {.identity = "test", .role = role, .database = "clinic"};
    return sqlp_decide(eng, &ctx, sql, len);
}

/* Each statement's parse node and bind parameters (gate/min_necessary.c estimates by them). */
static void check_node_and_params(sqlp_engine *eng)
{
    const sqlp_role *agent = role_by_name("agent");
    static const struct {
        const char *sql, *node;
        bool params;
        bool mysql;
        int64_t row_limit; /* the constant LIMIT a row estimate is capped by */
    } cases[] = {
        {"SELECT first_name FROM patients WHERE id = 3", "SelectStmt", false, false, -1},
        {"SELECT first_name FROM patients WHERE id = $1", "SelectStmt", true, false, -1},
        {"SELECT first_name FROM patients WHERE id = 3 LIMIT $1", "SelectStmt", true, false, -1},
        {"SELECT first_name FROM patients LIMIT 7 OFFSET 3", "SelectStmt", false, false, 7},
        {"SELECT first_name FROM (SELECT * FROM patients LIMIT 2) p", "SelectStmt", false, false, -1},
        {"FETCH 5 FROM nowhere", "FetchStmt", false, false, -1},
        {"EXPLAIN SELECT first_name FROM patients WHERE id = 3", "ExplainStmt", false, false, -1},
        {"SELECT first_name FROM patients WHERE id = 3", "SelectStmt", false, true, -1},
        {"SELECT first_name FROM patients WHERE id = ?", "SelectStmt", true, true, -1},
        {"SELECT first_name FROM patients LIMIT 90", "SelectStmt", false, true, 90},
        {"SELECT first_name FROM patients LIMIT 100, 6", "SelectStmt", false, true, 6},
    };
    sqlp_session *sess = sqlp_session_new();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sqlp_engine *e = cases[i].mysql ? mysql_engine : eng;
        CHECK(e != NULL, "engine for %s", cases[i].sql);
        if (!e)
            continue;
        sqlp_context ctx = {.identity = "test", .role = agent, .database = "clinic", .session = sess,
                            .dialect = cases[i].mysql ? SQLP_DIALECT_MYSQL : SQLP_DIALECT_POSTGRES,
                            .search_path = cases[i].mysql ? "\"clinic\"" : NULL};
        sqlp_decision *d = sqlp_decide(e, &ctx, cases[i].sql, strlen(cases[i].sql));
        const sqlp_statement *st = d->nstatements ? &d->statements[0] : NULL;
        CHECK(st && st->node && strcmp(st->node, cases[i].node) == 0 && st->has_params == cases[i].params &&
                  st->row_limit == cases[i].row_limit,
              "%s: node %s params %d row_limit %lld (%s)", cases[i].sql, st && st->node ? st->node : "(null)",
              st ? st->has_params : -1, st ? (long long)st->row_limit : -2, d->rule ? d->rule : "");
        sqlp_decision_free(d);
    }
    sqlp_session_free(sess);
}

static void check_limits(sqlp_engine *eng)
{
    const sqlp_role *agent = role_by_name("agent");
    /* size cap: refused before parsing */
    size_t big = SQLP_MAX_STATEMENT_BYTES + 1;
    char *s = malloc(big + 1);
    memset(s, ' ', big);
    memcpy(s, "SELECT 1", 8);
    s[big] = 0;
    sqlp_decision *d = decide(eng, agent, s, big);
    CHECK(d->verdict == SQLP_DENY && strcmp(d->rule, "parse.too_large") == 0, "1 MiB + 1: %s", d->rule);
    sqlp_decision_free(d);
    d = decide(eng, agent, s, SQLP_MAX_STATEMENT_BYTES);
    CHECK(d->verdict == SQLP_ALLOW, "exactly 1 MiB of a valid statement: %s", sqlp_verdict_name(d->verdict));
    sqlp_decision_free(d);
    free(s);

    /* depth caps, on the text before libpg_query sees it */
    static const char *const deep[] = {"(", "1+", "NOT ", "- "};
    for (size_t k = 0; k < 4; k++) {
        size_t n = 5000, pl = strlen(deep[k]);
        char *q = malloc(n * (pl + 1) + 32);
        size_t o = (size_t)sprintf(q, "SELECT ");
        for (size_t i = 0; i < n; i++) {
            memcpy(q + o, deep[k], pl);
            o += pl;
        }
        o += (size_t)sprintf(q + o, "%s", k == 2 ? "true" : "1");
        if (k == 0)
            for (size_t i = 0; i < n; i++)
                q[o++] = ')';
        q[o] = 0;
        d = decide(eng, agent, q, o);
        CHECK(d->verdict == SQLP_DENY && (strcmp(d->rule, "parse.too_deep") == 0 || strcmp(d->rule, "parse.error") == 0),
              "5000 x '%s': %s %s", deep[k], sqlp_verdict_name(d->verdict), d->rule);
        sqlp_decision_free(d);
        free(q);
    }
    /* a long flat list is not deep */
    {
        size_t n = 20000;
        char *q = malloc(n * 4 + 32);
        size_t o = (size_t)sprintf(q, "SELECT 1");
        for (size_t i = 0; i < n; i++)
            o += (size_t)sprintf(q + o, ",1");
        d = decide(eng, agent, q, o);
        CHECK(d->verdict == SQLP_ALLOW, "20000 columns: %s %s", sqlp_verdict_name(d->verdict), d->rule);
        sqlp_decision_free(d);
        free(q);
    }
    d = decide(eng, agent, "SELECT 1\0; DROP TABLE x", 23);
    CHECK(d->verdict == SQLP_DENY && strcmp(d->rule, "parse.error") == 0, "NUL byte: %s", d->rule);
    sqlp_decision_free(d);
    sqlp_context noctx = {.role = NULL};
    d = sqlp_decide(eng, &noctx, "SELECT 1", 8);
    CHECK(d->verdict == SQLP_DENY, "no role must deny");
    sqlp_decision_free(d);
    d = sqlp_decide(NULL, &noctx, "SELECT 1", 8);
    CHECK(d->verdict == SQLP_DENY, "no engine must deny");
    sqlp_decision_free(d);
    sqlp_decision_free(NULL);
    /* the zero role: every class denied */
    sqlp_role zero = {0};
    d = decide(eng, &zero, "SELECT 1", 8);
    CHECK(d->verdict == SQLP_DENY && strcmp(d->rule, "class.read") == 0, "zero role: %s", d->rule);
    sqlp_decision_free(d);
}

static void check_cache(sqlp_engine *eng)
{
    const sqlp_role *agent = role_by_name("agent");
    sqlp_engine_set_cache_limits(eng, 4, 1u << 20);
    sqlp_cache_stats st;
    sqlp_decision *keep = decide(eng, agent, "SELECT 42", 9);
    sqlp_decision *again = decide(eng, agent, "SELECT 42", 9);
    CHECK(keep == again, "a cache hit hands out the same decision");
    sqlp_engine_cache_stats(eng, &st);
    /* one miss for the text, one for its shape; both stored */
    CHECK(st.hits == 1 && st.misses == 2 && st.entries == 2, "hits %llu misses %llu entries %llu",
          (unsigned long long)st.hits, (unsigned long long)st.misses, (unsigned long long)st.entries);
    char q[64];
    for (int i = 0; i < 10; i++) {
        int n = snprintf(q, sizeof q, "SELECT 1 AS c%d", i); /* ten shapes */
        sqlp_decision_free(decide(eng, agent, q, (size_t)n));
    }
    sqlp_engine_cache_stats(eng, &st);
    CHECK(st.entries == 4 && st.evictions == 18, "LRU bound: entries %llu evictions %llu",
          (unsigned long long)st.entries, (unsigned long long)st.evictions);
    /* the evicted decision is still ours */
    CHECK(keep->upstream_sql && strcmp(keep->upstream_sql, "SELECT 42") == 0, "evicted decision kept alive");
    sqlp_decision_free(keep);
    sqlp_decision_free(again);
    sqlp_engine_set_cache_limits(eng, 4096, 32u << 20);
    /* statements of one shape share an analysis, rebuilt around their literals */
    static const char *const same_shape[] = {
        "SELECT abalance FROM pgbench_accounts WHERE aid = 48213",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 7",
        "select abalance   from pgbench_accounts where aid = 123456789",
    };
    for (int i = 0; i < 3; i++) {
        sqlp_decision *d = decide(eng, agent, same_shape[i], strlen(same_shape[i]));
        CHECK(d->verdict == SQLP_ALLOW && d->upstream_len == strlen(same_shape[i]) &&
                  memcmp(d->upstream_sql, same_shape[i], d->upstream_len) == 0,
              "same shape %d: %s", i, d->upstream_sql ? d->upstream_sql : "-");
        sqlp_decision_free(d);
    }
    sqlp_engine_cache_stats(eng, &st);
    CHECK(st.hits >= 1, "shape hits: %llu", (unsigned long long)st.hits);
    static const struct {
        const char *sql, *up;
    } rw[] = {
        {"SELECT ssn FROM patients WHERE id = 1",
         "SELECT ('***-**-' || right(ssn, least(4, length(ssn) / 2))) AS \"ssn\" FROM patients WHERE id = 1"},
        {"SELECT  ssn  FROM patients WHERE id = 22 -- x",
         "SELECT  ('***-**-' || right(ssn, least(4, length(ssn) / 2))) AS \"ssn\"  FROM patients WHERE id = 22 -- x"},
        {"SELECT ssn, 'it''s' FROM patients WHERE id = 3",
         "SELECT ('***-**-' || right(ssn, least(4, length(ssn) / 2))) AS \"ssn\", 'it''s' FROM patients WHERE id = 3"},
        {"SELECT ssn, 'x' FROM patients WHERE id = 4",
         "SELECT ('***-**-' || right(ssn, least(4, length(ssn) / 2))) AS \"ssn\", 'x' FROM patients WHERE id = 4"},
        {"SELECT format('%s', p) FROM patients p WHERE id = 1",
         "SELECT '[REDACTED]'::text AS \"format\" FROM patients p "
         "WHERE id = 1"},
        {"SELECT format('%I', p) FROM patients p WHERE id = 1",
         "SELECT '[REDACTED]'::text AS \"format\" FROM patients p "
         "WHERE id = 1"},
        {"SELECT first_name FROM patients LIMIT 5", NULL},
        {"SELECT first_name FROM patients LIMIT 500", NULL},
    };
    for (size_t i = 0; i < sizeof rw / sizeof rw[0]; i++) {
        sqlp_decision *d = decide(eng, agent, rw[i].sql, strlen(rw[i].sql));
        if (rw[i].up)
            CHECK(d->verdict == SQLP_REWRITE && d->upstream_sql && strcmp(d->upstream_sql, rw[i].up) == 0,
                  "shape rebuild of %s: %s", rw[i].sql, d->upstream_sql ? d->upstream_sql : "-");
        else
            CHECK(d->verdict == (strstr(rw[i].sql, "500") ? SQLP_HOLD : SQLP_REWRITE),
                  "LIMIT decides by its value: %s %s", rw[i].sql, sqlp_verdict_name(d->verdict));
        sqlp_decision_free(d);
    }
    /* another role never gets this role's decision */
    sqlp_decision *a = decide(eng, agent, "SELECT ssn FROM patients WHERE id = 1", 37);
    sqlp_decision *b = decide(eng, role_by_name("unmasked"), "SELECT ssn FROM patients WHERE id = 1", 37);
    CHECK(a->verdict == SQLP_REWRITE && b->verdict == SQLP_ALLOW, "decisions are per role: %s %s",
          sqlp_verdict_name(a->verdict), sqlp_verdict_name(b->verdict));
    sqlp_decision_free(a);
    sqlp_decision_free(b);
    /* byte budget: nothing fits in 100 bytes */
    sqlp_engine_set_cache_limits(eng, 100, 100);
    sqlp_decision_free(decide(eng, agent, "SELECT 7", 8));
    sqlp_engine_cache_stats(eng, &st);
    CHECK(st.entries == 0, "byte budget respected: %llu entries", (unsigned long long)st.entries);
    sqlp_engine_set_cache_limits(eng, 0, 0);
    sqlp_decision_free(decide(eng, agent, "SELECT 8", 8));
    sqlp_engine_cache_stats(eng, &st);
    CHECK(st.entries == 0, "cache off");
    sqlp_engine_set_cache_limits(eng, 4096, 32u << 20);
    /* held statements carry a fingerprint for approvals */
    sqlp_decision *h = decide(eng, agent, "SELECT * FROM patients", 22);
    char *fp = sqlp_fingerprint("select *   from patients", 24);
    CHECK(h->verdict == SQLP_HOLD && h->statements[0].fingerprint && fp &&
              strcmp(h->statements[0].fingerprint, fp) == 0,
          "fingerprint of a held statement: %s vs %s", h->statements[0].fingerprint ? h->statements[0].fingerprint : "-",
          fp ? fp : "-");
    free(fp);
    sqlp_decision_free(h);
    CHECK(sqlp_fingerprint("SELEC 1", 7) == NULL, "fingerprint of garbage is NULL");
}

static void check_values(void)
{
    static const struct {
        const char *mask, *in, *out;
    } v[] = {
        {"partial(4,'***-**-')", "918-17-2821", "***-**-2821"},
        {"partial(4,'***-***-')", "312-555-0178", "***-***-0178"},
        {"partial(4,'ACCT-****')", "ACCT-58231979", "ACCT-****1979"},
        {"partial(3,'MRN-***')", "MRN-0948212", "MRN-***212"},
        {"partial(4,'***')", "XQZ255586528", "***6528"},
        {"partial(4,'x')", "abc", "xc"},
        {"redact", "Vraxywen", "[REDACTED]"},
        {"redact('gone')", "x", "gone"},
        {"year", "1972-06-27", "1972-01-01"},
        {"year", "2023-03-04 10:11:12", "2023-01-01 00:00:00"},
        {"zip3", "69533", "695**"},
        {"zip3", "03601", "000**"},
        {"zip3", "82301", "000**"},
        {"age_cap", "95", "90"},
        {"age_cap", "89", "89"},
        {"birth_year", "1990-05-05", "1990-01-01"},
        {"no_such_mask", "x", "[REDACTED]"},
    };
    sqlp_role r = {0};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char *o = sqlp_mask_value(v[i].mask, v[i].in, strlen(v[i].in), &r);
        CHECK(o && strcmp(o, v[i].out) == 0, "mask %s(%s) = %s, expected %s", v[i].mask, v[i].in, o ? o : "-",
              v[i].out);
        free(o);
    }
    char *t1 = sqlp_mask_value("token", "5", 1, &roles[0]);
    char *t2 = sqlp_mask_value("token", "5", 1, &roles[0]);
    char *t3 = sqlp_mask_value("token", "5", 1, &r);
    CHECK(t1 && t2 && t3 && strcmp(t1, t2) == 0 && strcmp(t1, t3) != 0 && strncmp(t1, "tok_", 4) == 0 &&
              strlen(t1) == 20,
          "tokens are keyed and deterministic: %s %s", t1, t3);
    free(t1);
    free(t2);
    free(t3);
    char *e = sqlp_mask_value("email_token", "a.b@example.org", 15, &r);
    CHECK(e && strncmp(e, "tok_", 4) == 0 && strcmp(e + 16, "@example.org") == 0, "email token %s", e);
    free(e);

    static const struct {
        const char *in, *out;
    } sc[] = {
        {"invalid input syntax for type date: \"Vraxywen\"", "invalid input syntax for type date: \"***\""},
        {"duplicate key value violates unique constraint \"patients_ssn_key\"",
         "duplicate key value violates unique constraint \"patients_ssn_key\""},
        {"Key (ssn)=(918-17-2821) already exists.", "Key (ssn)=(***) already exists."},
        {"Failing row contains (1, MRN-0948212, Vraxywen).", "Failing row contains (***)."},
        {"relation \"patients\" does not exist", "relation \"***\" does not exist"},
        {"relation \"patients\" already exists", "relation \"patients\" already exists"},
        {"column \"ssn\" is of type integer but expression is of type text",
         "column \"ssn\" is of type integer but expression is of type text"},
        {"value too long for type character varying(11)", "value too long for type character varying(11)"},
        {"invalid input value for enum mood: 'x'", "invalid input value for enum mood: '***'"},
        {"invalid input syntax for type integer: \"(1,MRN-0948212,\"182 Zerrick Lane\",2020-08-31)\"",
         "invalid input syntax for type integer: \"***\""},
        {"relation \"vraxywen\" does not exist", "relation \"***\" does not exist"},
        {"unrecognized configuration parameter \"leak.vraxywen\"", "unrecognized configuration parameter \"***\""},
        {"column \"ssn\" of relation \"patients\" is of type integer",
         "column \"ssn\" of relation \"patients\" is of type integer"},
    };
    for (size_t i = 0; i < sizeof sc / sizeof sc[0]; i++) {
        char *o = sqlp_scrub_message(sc[i].in);
        CHECK(o && strcmp(o, sc[i].out) == 0, "scrub \"%s\" = \"%s\"", sc[i].in, o ? o : "-");
        free(o);
    }
    sqlp_class c;
    CHECK(sqlp_class_from_name("administrative", &c) && c == SQLP_CLASS_ADMIN &&
              strcmp(sqlp_class_name(SQLP_CLASS_EXPORT), "export") == 0 && !sqlp_class_from_name("bogus", &c),
          "class names");
    CHECK(strcmp(sqlp_verdict_name(SQLP_HOLD), "hold") == 0, "verdict names");
}

static void check_catalog(sqlp_engine *eng)
{
    const sqlp_catalog *cat = sqlp_engine_catalog(eng);
    sqlp_phi_column pc;
    CHECK(sqlp_catalog_phi_by_name(cat, "public", "patients", "ssn", &pc) && pc.hipaa_class &&
              strcmp(pc.hipaa_class, "ssn") == 0 && strcmp(pc.mask, "partial(4,'***-**-')") == 0,
          "phi_by_name ssn");
    CHECK(sqlp_catalog_phi_by_name(cat, "public", "patients", "state", &pc) && !pc.hipaa_class, "state is not PHI");
    CHECK(!sqlp_catalog_phi_by_name(cat, "public", "patients", "nope", &pc), "unknown column");
    CHECK(sqlp_catalog_phi_by_name(cat, "public", "patient_summary", "ln", &pc) && pc.hipaa_class &&
              strcmp(pc.mask, "redact") == 0,
          "a derived view column redacts");
    CHECK(sqlp_catalog_phi_by_name(cat, "pg_catalog", "pg_stat_activity", "query", &pc) && pc.hipaa_class &&
              strcmp(pc.hipaa_class, "system_text") == 0,
          "other sessions' statements");
}

/* A masking rule for a table created after the catalog was read still applies. */
static void check_late_table(void)
{
    char dir[] = "/tmp/sqlp_rulesXXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp");
        return;
    }
    char path[256], err[256];
    snprintf(path, sizeof path, "%s/late.yaml", dir);
    FILE *f = fopen(path, "w");
    fputs("kind: catalog\nname: late\nschema: public\ncolumns:\n"
          "  - {table: intake_forms, column: phone, class: phone}\n",
          f);
    fclose(f);
    sqlp_catalog *cat = sqlp_catalog_new();
    char tsv[512];
    snprintf(tsv, sizeof tsv, "%s/clinic_catalog.tsv", data_dir);
    bool ok = load_catalog(cat, tsv) && sqlp_catalog_load_rules(cat, dir, err, sizeof err);
    CHECK(ok, "late rules load: %s", err);
    sqlp_engine *eng = sqlp_engine_new(cat);
    const sqlp_role *agent = role_by_name("agent");
    sqlp_decision *d = decide(eng, agent, "SELECT phone, note FROM intake_forms LIMIT 3", 44);
    CHECK(d->verdict == SQLP_REWRITE && d->upstream_sql && strstr(d->upstream_sql, "'***-***-' || right((phone)::text") &&
              strstr(d->upstream_sql, ", note FROM"),
          "unknown table with a rule: %s %s", sqlp_verdict_name(d->verdict), d->upstream_sql ? d->upstream_sql : "-");
    sqlp_decision_free(d);
    d = decide(eng, agent, "SELECT * FROM intake_forms LIMIT 3", 34);
    CHECK(d->verdict == SQLP_DENY, "'*' over an unknown table with rules: %s", sqlp_verdict_name(d->verdict));
    sqlp_decision_free(d);
    d = decide(eng, agent, "SELECT note FROM intake_forms WHERE phone = '1'", 47);
    CHECK(d->verdict == SQLP_DENY && strcmp(d->rule, "phi.predicate") == 0, "predicate on it: %s", d->rule);
    sqlp_decision_free(d);
    sqlp_engine_unref(eng);
    snprintf(path, sizeof path, "%s/late.yaml", dir);
    unlink(path);
    rmdir(dir);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    init_roles();
    int ai = 1;
    for (;;) {
        if (ai < argc && strcmp(argv[ai], "-v") == 0) {
            verbose = true;
            ai++;
        } else if (ai + 1 < argc && strcmp(argv[ai], "-d") == 0) {
            dump_dir = argv[ai + 1];
            ai += 2;
        } else {
            break;
        }
    }
    if (ai + 1 < argc + 1 && ai < argc && strcmp(argv[ai], "-e") == 0 && ai + 1 < argc) {
        sqlp_engine *eng = build_engine();
        if (!eng)
            return 2;
        const sqlp_role *role = role_by_name(ai + 2 < argc ? argv[ai + 2] : "agent");
        sqlp_context ctx = {.identity = "cli", .role = role ? role : &roles[0], .database = "clinic"};
        if (ai + 3 < argc && strcmp(argv[ai + 3], "mysql") == 0) {
            sqlp_engine_unref(eng);
            eng = build_mysql_engine();
            ctx.dialect = SQLP_DIALECT_MYSQL;
            ctx.search_path = "\"clinic\"";
        }
        sqlp_decision *d = sqlp_decide(eng, &ctx, argv[ai + 1], strlen(argv[ai + 1]));
        print_decision(d);
        sqlp_decision_free(d);
        sqlp_engine_unref(eng);
        return 0;
    }
    if (ai < argc)
        data_dir = argv[ai];
    sqlp_engine *eng = build_engine();
    if (!eng) {
        printf("0 passed, 1 failed\n");
        return 1;
    }
    check_limits(eng);
    check_cache(eng);
    check_values();
    check_catalog(eng);
    check_late_table();
    if (!mysql_engine)
        mysql_engine = build_mysql_engine();
    check_node_and_params(eng);
    DIR *dir = opendir(data_dir);
    char *names[256];
    int nn = 0;
    struct dirent *de;
    while (dir && (de = readdir(dir)) && nn < 256) {
        size_t l = strlen(de->d_name);
        if (l > 6 && strcmp(de->d_name + l - 6, ".cases") == 0)
            names[nn++] = strdup(de->d_name);
    }
    if (dir)
        closedir(dir);
    qsort(names, (size_t)nn, sizeof *names, cmp_names);
    for (int i = 0; i < nn; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", data_dir, names[i]);
        run_file(eng, path);
        free(names[i]);
    }
    if (nn == 0) {
        printf("no .cases files in %s\n", data_dir);
        failed++;
    }
    sqlp_engine_unref(eng);
    sqlp_engine_unref(mysql_engine);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
