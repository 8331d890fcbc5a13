/*
 * sqlpolicy: the protocol-independent statement engine.
 *
 *   statement text + session context  ->  decision (allow, rewrite, hold, deny),
 *                                         the text to send upstream,
 *                                         per-output-column masking facts.
 *
 * No I/O happens in here: the fronts read the upstream catalog and hand the rows
 * to sqlp_catalog_add_*; masking rules are loaded from files by the caller's
 * choice of path.  Everything is plain C structs so pgfront and myfront share it.
 *
 * Thread-safety: an engine (catalog + rules + roles) is immutable once built and
 * may be shared; reload builds a new engine and swaps it (reference counted).
 */
#ifndef PHIGATE_SQLPOLICY_H
#define PHIGATE_SQLPOLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    SQLP_DIALECT_POSTGRES = 0,
    SQLP_DIALECT_MYSQL = 1,
} sqlp_dialect;

typedef enum {
    SQLP_ALLOW = 0,   /* forward as received */
    SQLP_REWRITE = 1, /* forward decision->upstream_sql (PHI masked) */
    SQLP_HOLD = 2,    /* needs a human's approval before it may run */
    SQLP_DENY = 3,    /* refuse with decision->reason */
} sqlp_verdict;

/* Statement classes from the SPEC.  X-macro so names and enum never drift. */
#define SQLP_CLASSES(X) \
    X(READ, "read") \
    X(WRITE, "write") \
    X(DDL, "ddl") \
    X(PRIVILEGE, "privilege") \
    X(SESSION, "session") \
    X(EXPORT, "export") \
    X(PROCEDURAL, "procedural") \
    X(ADMIN, "administrative")

typedef enum {
#define SQLP_CLASS_ENUM(sym, name) SQLP_CLASS_##sym,
    SQLP_CLASSES(SQLP_CLASS_ENUM)
#undef SQLP_CLASS_ENUM
    SQLP_CLASS_COUNT
} sqlp_class;

const char *sqlp_class_name(sqlp_class c);
bool sqlp_class_from_name(const char *name, sqlp_class *out);
const char *sqlp_verdict_name(sqlp_verdict v);

/* What a role may do with a statement class. */
typedef enum {
    SQLP_CLASS_DENY = 0,
    SQLP_CLASS_HOLD = 1,
    SQLP_CLASS_ALLOW = 2,
} sqlp_class_rule;

/* How PHI columns may be used in WHERE / JOIN / GROUP BY / ORDER BY / HAVING. */
typedef enum {
    SQLP_PRED_DENY = 0,
    SQLP_PRED_EQUALITY = 1,
    SQLP_PRED_ALLOW = 2,
} sqlp_predicate_rule;

/* A role as the configuration describes it (filled by gate/config.c). */
typedef struct sqlp_role {
    char *name;
    sqlp_class_rule classes[SQLP_CLASS_COUNT];
    uint64_t unscoped_row_limit;     /* LIMIT at or below this counts as scoped */
    char *masking_profile;           /* name of a profile under masking-rules/ */
    char **function_allow;           /* NULL-terminated extra allowed functions, may be NULL */
    char **function_deny;            /* NULL-terminated extra denied functions, may be NULL */
    bool unmasked;                   /* a trusted role that sees PHI raw (never the default) */
    unsigned char token_key[32];     /* role's HMAC key for keyed tokens */
} sqlp_role;

/* Opaque: the upstream schema plus the PHI classification of its columns. */
typedef struct sqlp_catalog sqlp_catalog;

sqlp_catalog *sqlp_catalog_new(void);
void sqlp_catalog_free(sqlp_catalog *cat);
/* One row of the upstream's column catalog (pg_catalog or information_schema). */
bool sqlp_catalog_add_column(sqlp_catalog *cat, const char *schema, const char *table,
                             const char *column, int ordinal, uint32_t table_oid,
                             const char *type_name);
/* A view and its definition (the SELECT text), resolved to base columns lazily. */
bool sqlp_catalog_add_view(sqlp_catalog *cat, const char *schema, const char *view,
                           const char *definition);
/* Load masking-rules files (profile + catalog) from a directory; errors go to err. */
bool sqlp_catalog_load_rules(sqlp_catalog *cat, const char *rules_dir, char *err, size_t errlen);

/* PHI classification of a base column, for the fronts' defence in depth
 * (RowDescription table OID + attnum, MySQL org_table/org_name). */
typedef struct sqlp_phi_column {
    const char *hipaa_class; /* e.g. "ssn", NULL when not PHI */
    const char *mask;        /* mask kind name, e.g. "partial_last4" */
} sqlp_phi_column;
bool sqlp_catalog_phi_by_oid(const sqlp_catalog *cat, uint32_t table_oid, int attnum,
                             sqlp_phi_column *out);
bool sqlp_catalog_phi_by_name(const sqlp_catalog *cat, const char *schema, const char *table,
                              const char *column, sqlp_phi_column *out);

/* Per-session context of one decision. */
typedef struct sqlp_context {
    const char *identity;
    const sqlp_role *role;
    const char *database;
    const char *search_path; /* comma separated, NULL = "$user", public */
    sqlp_dialect dialect;
} sqlp_context;

/* Masking facts for one output column of the (rewritten) statement. */
typedef struct sqlp_output_column {
    char *name;             /* output column name, as the client will see it */
    bool phi;               /* derives from at least one PHI column */
    char *hipaa_class;      /* strongest class it derives from, NULL if none */
    char *mask;             /* mask applied in upstream_sql, NULL if none */
    char *sources;          /* "schema.table.column,..." lineage, for the audit log */
} sqlp_output_column;

/* One statement of a (possibly multi-statement) string. */
typedef struct sqlp_statement {
    sqlp_verdict verdict;
    sqlp_class stmt_class;
    char *rule;             /* the rule that decided, e.g. "phi.unscoped_read" */
    char *reason;           /* human-readable, never contains a PHI value */
    bool touches_phi;       /* reads, writes or filters on a PHI column */
    char *fingerprint;      /* pg_query_fingerprint hex, for approvals */
    size_t ncolumns;
    sqlp_output_column *columns;
} sqlp_statement;

typedef struct sqlp_decision {
    sqlp_verdict verdict;   /* the strictest over all statements */
    char *rule;
    char *reason;           /* for DENY/HOLD: what to tell the client */
    char *upstream_sql;     /* what to send upstream (== input when ALLOW) */
    bool touches_phi;
    size_t nstatements;
    sqlp_statement *statements;
} sqlp_decision;

typedef struct sqlp_engine sqlp_engine;

/* The engine takes ownership of the catalog. */
sqlp_engine *sqlp_engine_new(sqlp_catalog *cat);
void sqlp_engine_ref(sqlp_engine *eng);
void sqlp_engine_unref(sqlp_engine *eng);
const sqlp_catalog *sqlp_engine_catalog(const sqlp_engine *eng);

/* Decide one query string.  Never returns NULL (allocation failure -> DENY
 * decision from a static object is fine as long as sqlp_decision_free accepts it). */
sqlp_decision *sqlp_decide(sqlp_engine *eng, const sqlp_context *ctx, const char *sql, size_t len);
void sqlp_decision_free(sqlp_decision *d);

/* Largest statement the engine will parse; longer text is denied before parsing. */
#define SQLP_MAX_STATEMENT_BYTES (1u << 20)

#endif
