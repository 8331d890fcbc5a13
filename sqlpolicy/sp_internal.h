/*
 * sqlpolicy internals shared by the engine's modules.  Nothing here is API.
 *
 * Memory: every decision is built in one arena (sp_arena) and freed with it.
 * An arena allocation that fails longjmps to the sqlp_decide entry, which
 * frees what it holds and returns the static DENY decision, so the hundreds of
 * allocation sites in the analyser need no error paths of their own.
 */
#ifndef PHIGATE_SP_INTERNAL_H
#define PHIGATE_SP_INTERNAL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sqlpolicy/sqlpolicy.h"

#define SP_MUSTCHECK __attribute__((warn_unused_result))
#define SP_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define SP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- arena ------------------------------------------------------------- */

typedef struct sp_arena_block sp_arena_block;
typedef struct sp_arena {
    sp_arena_block *head;
    char *cur, *end;
    size_t used;      /* bytes handed out, for the cache's byte budget */
    jmp_buf *oom;     /* where to go when malloc fails; NULL: return NULL */
} sp_arena;

void sp_arena_init(sp_arena *a);
void sp_arena_free(sp_arena *a);
void *sp_alloc(sp_arena *a, size_t n);      /* zeroed */
void *sp_alloc_raw(sp_arena *a, size_t n);  /* not zeroed */
char *sp_strdup(sp_arena *a, const char *s);
char *sp_strndup(sp_arena *a, const char *s, size_t n);
char *sp_printf(sp_arena *a, const char *fmt, ...) SP_PRINTF(2, 3);

/* Growable byte buffer living in an arena (old buffers are left to the arena). */
typedef struct sp_buf {
    sp_arena *a;
    char *p;
    size_t len, cap;
} sp_buf;
void sp_buf_init(sp_buf *b, sp_arena *a, size_t cap);
void sp_buf_add(sp_buf *b, const char *s, size_t n);
void sp_buf_puts(sp_buf *b, const char *s);
void sp_buf_printf(sp_buf *b, const char *fmt, ...) SP_PRINTF(2, 3);
void sp_buf_ident(sp_buf *b, const char *ident, sqlp_dialect d); /* always quoted */
void sp_buf_literal(sp_buf *b, const char *s, sqlp_dialect d);   /* '...' */
char *sp_buf_cstr(sp_buf *b);

/* ---- small helpers ------------------------------------------------------ */

uint64_t sp_hash(const void *p, size_t n, uint64_t seed);
static inline uint64_t sp_hash_mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h;
}
bool sp_streq_ci(const char *a, const char *b);
bool sp_strneq_ci(const char *a, size_t alen, const char *b); /* a[0..alen) == b, ASCII case-insensitive */

/* ---- lexer (PostgreSQL, standard_conforming_strings = on) ----------------- */

typedef enum {
    SPT_WORD,   /* identifier or keyword, unquoted */
    SPT_QIDENT, /* "quoted" or U&"quoted" identifier */
    SPT_STRING, /* '...', E'...', B'...', X'...', N'...', U&'...', $tag$...$tag$ */
    SPT_NUMBER,
    SPT_PARAM,  /* $1 */
    SPT_OP,     /* operator characters, including :: */
    SPT_LPAREN,
    SPT_RPAREN,
    SPT_LBRACK,
    SPT_RBRACK,
    SPT_COMMA,
    SPT_SEMI,
    SPT_DOT,
    SPT_COLON,
    SPT_OTHER,
} sp_tok_kind;

typedef struct sp_token {
    uint32_t start, end;   /* byte offsets in the statement text */
    uint8_t kind;          /* sp_tok_kind */
    uint8_t prefix;        /* strings: bytes of prefix kept in the normalised key */
} sp_token;

typedef struct sp_lexed {
    sp_token *tok;
    uint32_t ntok;
    bool ok;               /* false: the text did not lex (unterminated quote...) */
    uint32_t depth_estimate; /* upper bound on the parse tree's nesting (see lexer.c) */
} sp_lexed;

/* Tokenise text[0..len).  Tokens live in the arena. */
void sp_lex(sp_arena *a, const char *text, size_t len, sp_lexed *out);
/* Index of the token starting at byte offset pos, or -1. */
int sp_tok_at(const sp_lexed *lx, uint32_t pos);
bool sp_tok_is_kw(const char *text, const sp_token *t, const char *kw);

/* ---- catalog ------------------------------------------------------------ */

typedef struct cat_rel cat_rel;

typedef struct cat_col {
    const char *name;
    const char *type_name;   /* format_type(base type, NULL) */
    cat_rel *rel;
    int attnum;
    int phi_class;           /* sqlp_hipaa_class, -1 when not PHI */
    const char *mask;        /* canonical spec from the catalog rules, NULL: profile default */
    bool join_key;           /* declared join key: '=' joins on it are allowed */
} cat_col;

/* Lineage of a value: the base columns it derives from. */
typedef struct sp_lin {
    const cat_col **src;
    uint16_t n, cap;
    uint8_t flags;
} sp_lin;
#define SP_LIN_IDENT 0x01  /* exactly src[0], same value and type */
#define SP_LIN_OPAQUE 0x02 /* may carry anything (unknown function, unanalysable view) */

struct cat_rel {
    const char *schema, *name;
    uint32_t oid;
    char relkind;            /* r v m f p */
    bool system;             /* pg_catalog / information_schema */
    bool blocked;            /* exposes data values: any use is denied */
    const char *blocked_why;
    int ncols, capcols;
    cat_col *cols;           /* ordered by attnum */
    const char *viewdef;
    const char *parent;      /* "schema.table" of a partition's parent */
    /* view lineage, computed when the engine is built */
    int view_state;          /* 0 not done, 1 in progress, 2 done, 3 failed */
    const char *view_error;
    sp_lin *view_lin;        /* one per column */
    bool has_phi;            /* a column is PHI (tables) or derives from PHI (views) */
};

typedef struct sp_profile {
    const char *name;
    const char *class_mask[SQLP_HIPAA_COUNT]; /* canonical specs */
} sp_profile;

typedef struct sp_rule_col {
    const char *schema;      /* NULL: any schema */
    const char *table, *column;
    int phi_class;
    const char *mask;        /* canonical, may be NULL */
    bool join_key;
} sp_rule_col;

typedef struct sp_strmap sp_strmap; /* string -> pointer, open addressing */

struct sqlp_catalog {
    sp_arena a;
    cat_rel **rels;
    int nrels, caprels;
    sp_strmap *by_name;      /* "schema\0name" -> cat_rel */
    sp_strmap *by_oid;       /* oid as decimal text -> cat_rel */
    bool has_system;         /* pg_catalog rows were loaded */
    const char **view_path;  /* search path view definitions were printed for */
    int nview_path;
    sp_profile *profiles;
    int nprofiles, capprofiles;
    sp_rule_col *rules;
    int nrules, caprules;
    sp_strmap *rule_by_name; /* "schema.table.column" / "*.table.column" -> sp_rule_col */
    bool finalized;
};

cat_rel *sp_cat_find(const sqlp_catalog *cat, const char *schema, const char *name);
const sp_rule_col *sp_cat_rule(const sqlp_catalog *cat, const char *schema, const char *table,
                               const char *column);
const sp_profile *sp_cat_profile(const sqlp_catalog *cat, const char *name);
const char *sp_profile_mask(const sp_profile *p, int cls); /* canonical spec */
const char *sp_blocked_relation(const char *schema, const char *name); /* why, or NULL */
/* Apply the rules to the columns and analyse views (called by sqlp_engine_new). */
void sp_cat_finalize(sqlp_catalog *cat, sqlp_engine *eng);

sp_strmap *sp_strmap_new(void);
void sp_strmap_free(sp_strmap *m);
bool sp_strmap_put(sp_strmap *m, const char *key, size_t klen, void *val) SP_MUSTCHECK;
void *sp_strmap_get(const sp_strmap *m, const char *key, size_t klen);

/* ---- masks -------------------------------------------------------------- */

typedef enum {
    SPM_REDACT,
    SPM_PARTIAL,
    SPM_YEAR,
    SPM_BIRTH_YEAR,
    SPM_ZIP3,
    SPM_TOKEN,
    SPM_EMAIL_TOKEN,
    SPM_AGE_CAP,
} sp_mask_kind;

typedef struct sp_mask {
    sp_mask_kind kind;
    int n;                /* partial: keep last n; birth_year/age_cap: the age */
    char text[48];        /* partial: prefix; redact: replacement */
} sp_mask;

/* Parse a canonical or written spec; false when it is not one. */
bool sp_mask_parse(const char *spec, sp_mask *out) SP_MUSTCHECK;
/* Canonical text of a parsed mask, into buf. */
void sp_mask_canonical(const sp_mask *m, char *buf, size_t len);
/* Append the SQL computing mask m of value expression `expr` (already valid
 * SQL, e.g. a quoted column reference) of type `type_name` to b. */
void sp_mask_sql(sp_buf *b, const sp_mask *m, const char *expr, const char *type_name,
                 sqlp_dialect d, const sqlp_role *role);

/* ---- functions ---------------------------------------------------------- */

typedef enum {
    SPF_UNKNOWN = 0,   /* not a built-in we know: unknown lineage */
    SPF_SAFE,          /* built-in, result derives from its arguments only */
    SPF_AGGREGATE,     /* built-in aggregate */
    SPF_ADMIN,         /* file, large object, server control, dblink: administrative class */
    SPF_SQL_TEXT,      /* runs SQL text or reads whole tables by name: never analysable */
    SPF_ACTIVITY,      /* returns other sessions' query text */
    SPF_SET_CONFIG,    /* set_config(): checked by argument */
} sp_func_kind;

sp_func_kind sp_func_lookup(const char *schema, const char *name);
sp_func_kind sp_func_lookup_mysql(const char *schema, const char *name); /* MariaDB built-ins */
const char *sp_func_why_mysql(const char *name);
const char *sp_func_why(const char *name); /* short reason for ADMIN / SQL_TEXT names */
/* Output column names of well-known set-returning functions, NULL when unknown
 * (a scalar function's single column is named by the caller). */
const char *const *sp_srf_columns(const char *name);

bool sp_func_returns_record(const char *name);

/* ---- analysis results ----------------------------------------------------- */

/* One splice into the statement string: replace del bytes at pos with text. */
typedef struct sp_edit {
    uint32_t pos, del;
    const char *text;
    uint32_t tlen;
} sp_edit;

/* Facts about one output column, gathered while analysing. */
typedef struct sp_outinfo {
    const char *name;
    sp_lin lin;
    const char *masks;    /* mask specs applied, ", " separated, NULL if none */
} sp_outinfo;

typedef enum {
    SPE_NONE,
    SPE_PREPARE,   /* name */
    SPE_DECLARE,   /* name */
    SPE_DEALLOCATE,/* name, NULL: all */
    SPE_CLOSE,     /* name, NULL: all */
    SPE_DISCARD,   /* DISCARD ALL: forget everything */
    SPE_SEARCH_PATH, /* name: the new search path ("a", "b" quoted list), NULL: back to the default */
} sp_effect_kind;

typedef struct sp_stmt_result {
    uint32_t loc, len;          /* the statement's span in the string */
    sqlp_class cls;             /* its class */
    unsigned escalated;         /* bit per further class it needs (admin functions...) */
    const char *escalated_why;  /* what needed the first of them */
    const char *deny_rule, *deny_reason;
    const char *hold_rule, *hold_reason;
    bool touches_phi;
    bool literal_sensitive;     /* a literal's value was consulted where we cannot say which */
    uint32_t *sens;             /* byte offsets of literals whose value was consulted (LIMIT 5) */
    int nsens, capsens;
    bool uncacheable;           /* depends on or changes session state */
    bool rewritten;             /* produced edits */
    sp_outinfo *cols;
    int ncols;
    sp_effect_kind effect;
    const char *effect_name;
    sqlp_class effect_class;    /* PREPARE: class of what EXECUTE will run */
    const char *node;           /* statement node name, for messages */
    bool params;                /* a ParamRef ($1) appears */
    int64_t row_limit;          /* the top-level SELECT's constant LIMIT; -1 = none */
} sp_stmt_result;

typedef struct sp_sess_entry sp_sess_entry;
struct sp_sess_entry {
    sp_sess_entry *next;
    char *name;
    sqlp_class cls;
    size_t ncols;
    sqlp_output_column *cols;
};

struct sqlp_session {
    sp_sess_entry *prepared;
    sp_sess_entry *cursors;
    char *search_path;          /* set by SET search_path / set_config(); NULL: the context's */
};
const sp_sess_entry *sp_session_find(const sqlp_session *s, bool cursor, const char *name);

typedef struct sp_span {
    uint32_t start, end;
} sp_span;

/* MySQL text is analysed as a PostgreSQL translation (mysql.c); this maps
 * the translation's tokens back to the client's bytes, for the rewrite. */
typedef struct sp_srcmap {
    const char *orig;           /* the client's text */
    uint32_t n;                 /* tokens of the translation, in order */
    uint32_t *pg_s, *pg_e;      /* token span in the translation */
    uint32_t *my_s, *my_e;      /* ... and in the client's text */
} sp_srcmap;
/* Client offset of a translation offset that starts (end = false) or ends a token. */
bool sp_srcmap_back(const sp_srcmap *m, uint32_t pos, bool end, uint32_t *out);

/* One statement of a MySQL string, as mysql.c classified it. */
typedef struct sp_my_stmt {
    bool native;                /* parsed and analysed as its PostgreSQL translation */
    bool explain;               /* EXPLAIN / DESCRIBE of a statement: no rows, no edits */
    sqlp_class cls;             /* not native: the class */
    unsigned escalated;
    const char *why;            /* what needed the escalation */
    const char *deny_rule, *deny_reason;
    const char *hold_rule, *hold_reason;
    bool touches_phi;
} sp_my_stmt;

typedef struct sp_mysql {
    char *pg;                   /* the translation: native statements, "SELECT NULL" for the rest */
    size_t pglen;
    sp_srcmap map;
    sp_my_stmt *stmts;
    int nstmts;
} sp_mysql;

/* Split and translate a MySQL string.  False with *why when it cannot be
 * read safely (executable comments, unterminated quotes ...). */
bool sp_mysql_prepare(sp_arena *a, const sqlp_catalog *cat, const char *text, size_t len, const char *database,
                      sp_mysql *out, const char **why);
/* A relation MySQL users must not read (other sessions' statements, password hashes). */
const char *sp_mysql_blocked(const char *schema, const char *name);

/* The analysis of one query string (every statement in it). */
typedef struct sp_analysis {
    sp_arena *a;
    sqlp_engine *eng;
    const sqlp_catalog *cat;
    const sqlp_role *role;
    const sp_profile *profile;
    sqlp_dialect dialect;
    const sqlp_session *session;
    const char *sql;
    size_t len;
    const sp_lexed *lx;
    const sp_srcmap *srcmap;    /* MySQL: sql is a translation of srcmap->orig */
    const char **path;          /* search path */
    int npath;
    sp_stmt_result *st;         /* current statement */
    sp_stmt_result *stmts;
    int nstmts;
    sp_edit *edits;
    int nedits, capedits;
    /* verify mode: the string is a rewrite; every PHI reference that needs a
     * mask must lie inside one of these inserted spans */
    bool verify;
    const sp_span *spans;
    int nspans;
    bool verify_failed;
    const char *verify_why;
    void *priv;                 /* analyze.c's per-run state */
} sp_analysis;

/* Analyse every statement of the parsed string (a PgQuery__ParseResult). */
void sp_analyse(sp_analysis *an, const void *parse_result);

/* ---- engine ------------------------------------------------------------- */

typedef struct sp_cache sp_cache;

struct sqlp_engine {
    int refs;
    sqlp_catalog *cat;
    sp_cache *cache;
    sqlp_role view_role;     /* the role view definitions are analysed with */
};

/* Decision references (engine.c) and the decision cache (cache.c). */
void sp_decision_ref(sqlp_decision *d);
size_t sp_decision_bytes(const sqlp_decision *d);
sp_cache *sp_cache_new(size_t max_entries, size_t max_bytes);
void sp_cache_free(sp_cache *c);
/* A new reference to the cached decision for this key, or NULL.  shape: the
 * key is a statement's shape (its tokens with literal contents left out,
 * engine.c), not its text. */
sqlp_decision *sp_cache_get(sp_cache *c, const sqlp_role *role, int dialect, const char *path, const char *key,
                            size_t len, bool shape);
/* Stores a new reference to d (the caller keeps its own). */
void sp_cache_put(sp_cache *c, const sqlp_role *role, int dialect, const char *path, const char *key, size_t len,
                  bool shape, sqlp_decision *d);
void sp_cache_stats(const sp_cache *c, sqlp_cache_stats *out);
#define SP_CACHE_MAX_TEXT (64u * 1024)

/* Analyse a view definition for the catalog (lineage of its columns). */
bool sp_analyse_view(sqlp_engine *eng, cat_rel *rel, int depth);

#endif
