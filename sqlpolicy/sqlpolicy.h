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
 * Thread-safety: an engine (catalog + rules + roles) is immutable once built;
 * reload builds a new engine and swaps it (reference counted).  The engine's
 * decision cache is updated by sqlp_decide, so one engine is used from one
 * thread at a time (phigate's single event-loop thread).
 *
 * Roles: sqlp_decide caches decisions per role, so a role must not change while
 * an engine that has seen it is alive (a config reload builds new roles and a
 * new engine).
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

/* The 18 HIPAA Safe Harbor identifier classes, plus free text (notes that may
 * embed any of them) and system_text (catalog values such as other sessions'
 * query text).  The number is the class's strength: an output deriving from
 * several classes reports the strongest. */
#define SQLP_HIPAA_CLASSES(X) \
    X(NAMES, "names", 8) \
    X(GEOGRAPHIC, "geographic", 5) \
    X(DATES, "dates", 4) \
    X(PHONE, "phone", 8) \
    X(FAX, "fax", 8) \
    X(EMAIL, "email", 8) \
    X(SSN, "ssn", 10) \
    X(MRN, "mrn", 9) \
    X(HEALTH_PLAN, "health_plan_beneficiary", 9) \
    X(ACCOUNT, "account", 9) \
    X(CERTIFICATE, "certificate_license", 9) \
    X(VEHICLE, "vehicle", 7) \
    X(DEVICE, "device", 7) \
    X(URL, "url", 6) \
    X(IP, "ip", 6) \
    X(BIOMETRIC, "biometric", 10) \
    X(PHOTO, "photo", 10) \
    X(OTHER_ID, "other_unique_id", 8) \
    X(FREE_TEXT, "free_text", 10) \
    X(SYSTEM_TEXT, "system_text", 3)

typedef enum {
#define SQLP_HIPAA_ENUM(sym, name, strength) SQLP_HIPAA_##sym,
    SQLP_HIPAA_CLASSES(SQLP_HIPAA_ENUM)
#undef SQLP_HIPAA_ENUM
    SQLP_HIPAA_COUNT
} sqlp_hipaa_class;

const char *sqlp_hipaa_class_name(sqlp_hipaa_class c);
bool sqlp_hipaa_class_from_name(const char *name, sqlp_hipaa_class *out);

/* A role as the configuration describes it (filled by gate/config.c).
 * All-zero is the safest role there is: every class denied, every PHI
 * predicate denied.  sqlp_role_init_agent() gives the SPEC's agent defaults. */
typedef struct sqlp_role {
    char *name;
    sqlp_class_rule classes[SQLP_CLASS_COUNT];
    uint64_t unscoped_row_limit;     /* LIMIT at or below this counts as scoped */
    char *masking_profile;           /* name of a profile under masking-rules/ */
    char **function_allow;           /* NULL-terminated extra allowed functions, may be NULL */
    char **function_deny;            /* NULL-terminated extra denied functions, may be NULL */
    bool unmasked;                   /* a trusted role that sees PHI raw (never the default) */
    unsigned char token_key[32];     /* role's HMAC key for keyed tokens */
    /* Use of PHI columns of each class in WHERE / JOIN / GROUP BY / ORDER BY /
     * HAVING / window and aggregate clauses.  Zero (DENY) is the agent default:
     * a masked column must not become an oracle through a filter or a sort.
     * Join keys declared in the catalog may always be joined on with '='. */
    sqlp_predicate_rule predicates[SQLP_HIPAA_COUNT];
} sqlp_role;

/* Agent defaults: read and session allowed, every other class denied, PHI
 * predicates denied, unscoped_row_limit 100.  Leaves name, profile, lists and
 * token_key alone (the caller fills token_key from a secret). */
void sqlp_role_init_agent(sqlp_role *role);

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
/* Load masking-rules files (profile + catalog) from a directory; errors go to err.
 * Every *.yaml / *.yml file in the directory is read (sorted by name); a path to
 * one file loads just that file.  Format: masking-rules/README.md. */
bool sqlp_catalog_load_rules(sqlp_catalog *cat, const char *rules_dir, char *err, size_t errlen);

/* The catalog query a front runs on a PostgreSQL upstream at start, so catalog
 * knowledge lives in one place.  One row per column of every table, view,
 * materialized view, foreign and partitioned table (system schemas included,
 * so pg_catalog names resolve like the server resolves them).  Columns, all
 * text, in this order:
 *   0 schema  1 table  2 column  3 attnum  4 table oid  5 type name
 *   6 relkind  7 view definition (pg_get_viewdef; on attnum 1 of views only)
 *   8 parent table of a partition ("schema.table", else NULL)
 *   9 the session's effective search path (current_schemas(false)::text),
 *     which view definitions were printed against
 * Run it with the default search_path; feed each row to sqlp_catalog_add_pg_row. */
#define SQLP_CATALOG_PG_NFIELDS 10
const char *sqlp_catalog_pg_query(void);
/* fields: nfields text values (NULL for SQL NULL) of one row of that query. */
bool sqlp_catalog_add_pg_row(sqlp_catalog *cat, const char *const *fields, size_t nfields);

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
/* Both return false when the column is unknown; a known non-PHI column returns
 * true with hipaa_class == NULL.  The mask is the catalog's (or the default
 * profile's) canonical mask spec, which sqlp_mask_value understands. */

/* Mask one text-format value the way the engine's SQL would (defence in depth
 * for a PHI column that reaches a front unmasked).  mask is a canonical mask
 * spec ("partial(4,'***-**-')", "year", "token", ...); an unknown spec redacts.
 * Returns a malloc'd NUL-terminated string, NULL only when out of memory.
 * Tokens use role->token_key, so they equal the ones the rewritten SQL makes. */
char *sqlp_mask_value(const char *mask, const char *value, size_t len, const struct sqlp_role *role);

/* Scrub an upstream error / notice text: keeps the shape and the identifiers
 * (relation "patients", column "ssn", constraint "...") but replaces quoted
 * values, key values and row contents with ***.  Returns malloc'd text, NULL
 * only when out of memory. */
char *sqlp_scrub_message(const char *msg);

/* Per-session state the engine needs to judge SQL-level EXECUTE / FETCH:
 * the names it saw PREPAREd and DECLAREd.  Owned by the front's session. */
typedef struct sqlp_session sqlp_session;
sqlp_session *sqlp_session_new(void);
void sqlp_session_free(sqlp_session *s);
/* Forget everything (reconnect, DISCARD ALL). */
void sqlp_session_reset(sqlp_session *s);

/* Per-session context of one decision. */
typedef struct sqlp_context {
    const char *identity;
    const sqlp_role *role;
    const char *database;
    const char *search_path; /* comma separated, NULL = "$user", public */
    sqlp_dialect dialect;
    /* NULL: SQL-level EXECUTE / FETCH / MOVE are denied (the engine cannot know
     * what they run).  Statements that change it (PREPARE, DECLARE, ...) are
     * recorded in it when the decision is not DENY. */
    sqlp_session *session;
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
    char *fingerprint;      /* pg_query_fingerprint hex, for approvals (HOLD only, else NULL) */
    const char *node;       /* parse node, e.g. "SelectStmt", "FetchStmt"; NULL when unknown (MySQL) */
    bool has_params;        /* refers to bind parameters ($1): its plan needs their values */
    int64_t row_limit;      /* a top-level SELECT's constant LIMIT (caps a row estimate); -1 = none */
    size_t ncolumns;
    sqlp_output_column *columns;
} sqlp_statement;

/* A decision is immutable and reference counted: a cache hit hands out another
 * reference to the same object (no copy), so callers must treat every field as
 * read-only.  sqlp_decision_free drops the caller's reference. */
typedef struct sqlp_decision {
    sqlp_verdict verdict;   /* the strictest over all statements */
    char *rule;
    char *reason;           /* for DENY/HOLD: what to tell the client */
    char *upstream_sql;     /* what to send upstream: the input (ALLOW), the rewritten
                             * text (REWRITE), what to run once approved (HOLD);
                             * NULL for DENY.  NUL-terminated. */
    size_t upstream_len;
    bool touches_phi;
    size_t nstatements;
    sqlp_statement *statements;
} sqlp_decision;

typedef struct sqlp_engine sqlp_engine;

/* The engine takes ownership of the catalog. */
sqlp_engine *sqlp_engine_new(sqlp_catalog *cat);
/* Where the masking rules are when the configuration names no folder. */
#define SQLP_DEFAULT_RULES_DIR "masking-rules"
/* What both fronts do once the upstream's columns are in cat: load the masking
 * rules from rules_dir (NULL: the default) and build the engine.  Takes the
 * catalog in every case; NULL with err when the rules do not load. */
sqlp_engine *sqlp_engine_from_catalog(sqlp_catalog *cat, const char *rules_dir, char *err, size_t errlen);
void sqlp_engine_ref(sqlp_engine *eng);
void sqlp_engine_unref(sqlp_engine *eng);
const sqlp_catalog *sqlp_engine_catalog(const sqlp_engine *eng);

/* Decide one query string.  Never returns NULL (allocation failure -> DENY
 * decision from a static object is fine as long as sqlp_decision_free accepts it). */
sqlp_decision *sqlp_decide(sqlp_engine *eng, const sqlp_context *ctx, const char *sql, size_t len);
/* Drops one reference (see sqlp_decision); NULL and the static OOM decision are fine. */
void sqlp_decision_free(sqlp_decision *d);

/* Decision cache bounds: entries and bytes (statement text + decision).  0 turns
 * the cache off.  Defaults 4096 entries / 32 MiB; statements over 64 KiB are
 * never cached.  Changing the limits empties the cache. */
void sqlp_engine_set_cache_limits(sqlp_engine *eng, size_t max_entries, size_t max_bytes);
typedef struct sqlp_cache_stats {
    uint64_t hits, misses, evictions, entries, bytes;
} sqlp_cache_stats;
void sqlp_engine_cache_stats(const sqlp_engine *eng, sqlp_cache_stats *out);

/* pg_query_fingerprint of a statement as hex (malloc'd), NULL when it does not parse. */
char *sqlp_fingerprint(const char *sql, size_t len);

/* Largest statement the engine will parse; longer text is denied before parsing. */
#define SQLP_MAX_STATEMENT_BYTES (1u << 20)
/* Deepest expression / query nesting the engine accepts.  Checked on the text
 * before parsing (libpg_query's recursive output overflows the stack on a few
 * thousand chained operators) and again by every tree walker. */
#define SQLP_MAX_TREE_DEPTH 1000

#endif
