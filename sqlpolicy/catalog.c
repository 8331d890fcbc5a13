/*
 * The schema catalog (what the upstream has) and the masking rules (which of
 * its columns hold which PHI class, how each class is masked).
 *
 * The catalog is filled row by row from the upstream, rules are loaded from
 * masking-rules/, and sqlp_engine_new() finalizes both: rules are applied to
 * columns and views are analysed down to base columns.  After that the
 * catalog is read-only.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "sqlpolicy/sp_internal.h"

/* ---- names ---------------------------------------------------------------- */

static const char *const hipaa_names[] = {
#define X(sym, name, strength) name,
    SQLP_HIPAA_CLASSES(X)
#undef X
};
_Static_assert(SP_ARRAY_LEN(hipaa_names) == SQLP_HIPAA_COUNT, "one name per HIPAA class");

const char *sqlp_hipaa_class_name(sqlp_hipaa_class c)
{
    return (unsigned)c < SQLP_HIPAA_COUNT ? hipaa_names[c] : "unknown";
}

bool sqlp_hipaa_class_from_name(const char *name, sqlp_hipaa_class *out)
{
    if (!name)
        return false;
    for (int i = 0; i < SQLP_HIPAA_COUNT; i++)
        if (strcmp(name, hipaa_names[i]) == 0) {
            *out = (sqlp_hipaa_class)i;
            return true;
        }
    /* spellings of the clinic fixture and common synonyms */
    static const struct {
        const char *alias;
        sqlp_hipaa_class c;
    } aliases[] = {
        {"name", SQLP_HIPAA_NAMES},        {"date", SQLP_HIPAA_DATES},
        {"address", SQLP_HIPAA_GEOGRAPHIC}, {"health_plan", SQLP_HIPAA_HEALTH_PLAN},
        {"account_number", SQLP_HIPAA_ACCOUNT}, {"license", SQLP_HIPAA_CERTIFICATE},
        {"ip_address", SQLP_HIPAA_IP},     {"other", SQLP_HIPAA_OTHER_ID},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(aliases); i++)
        if (strcmp(name, aliases[i].alias) == 0) {
            *out = aliases[i].c;
            return true;
        }
    return false;
}

/* ---- catalog objects ---------------------------------------------------------- */

sqlp_catalog *sqlp_catalog_new(void)
{
    sqlp_catalog *cat = calloc(1, sizeof *cat);
    if (!cat)
        return NULL;
    sp_arena_init(&cat->a);
    cat->by_name = sp_strmap_new();
    cat->by_oid = sp_strmap_new();
    cat->rule_by_name = sp_strmap_new();
    if (!cat->by_name || !cat->by_oid || !cat->rule_by_name) {
        sqlp_catalog_free(cat);
        return NULL;
    }
    return cat;
}

void sqlp_catalog_free(sqlp_catalog *cat)
{
    if (!cat)
        return;
    for (int i = 0; i < cat->nrels; i++)
        free(cat->rels[i]->cols);
    free(cat->rels);
    free(cat->profiles);
    free(cat->rules);
    sp_strmap_free(cat->by_name);
    sp_strmap_free(cat->by_oid);
    sp_strmap_free(cat->rule_by_name);
    sp_arena_free(&cat->a);
    free(cat);
}

static size_t rel_key(char *buf, size_t len, const char *schema, const char *name)
{
    int n = snprintf(buf, len, "%s%c%s", schema, 0, name);
    return n < 0 || (size_t)n >= len ? 0 : (size_t)n;
}

cat_rel *sp_cat_find(const sqlp_catalog *cat, const char *schema, const char *name)
{
    char key[256];
    size_t k = rel_key(key, sizeof key, schema, name);
    return k ? sp_strmap_get(cat->by_name, key, k) : NULL;
}

static bool is_system_schema(const char *s)
{
    return strcmp(s, "pg_catalog") == 0 || strcmp(s, "information_schema") == 0;
}

static cat_rel *rel_get(sqlp_catalog *cat, const char *schema, const char *name, bool create)
{
    cat_rel *r = sp_cat_find(cat, schema, name);
    if (r || !create)
        return r;
    char key[256];
    size_t k = rel_key(key, sizeof key, schema, name);
    if (!k)
        return NULL;
    if (cat->nrels == cat->caprels) {
        int ncap = cat->caprels ? cat->caprels * 2 : 64;
        cat_rel **nr = realloc(cat->rels, (size_t)ncap * sizeof *nr);
        if (!nr)
            return NULL;
        cat->rels = nr;
        cat->caprels = ncap;
    }
    r = sp_alloc(&cat->a, sizeof *r);
    if (!r)
        return NULL;
    r->schema = sp_strdup(&cat->a, schema);
    r->name = sp_strdup(&cat->a, name);
    if (!r->schema || !r->name || !sp_strmap_put(cat->by_name, key, k, r))
        return NULL;
    r->relkind = 'r';
    r->system = is_system_schema(schema);
    if (r->system)
        cat->has_system = true;
    cat->rels[cat->nrels++] = r;
    cat->finalized = false;
    return r;
}

static bool rel_set_oid(sqlp_catalog *cat, cat_rel *r, uint32_t oid)
{
    if (!oid || r->oid == oid)
        return true;
    r->oid = oid;
    char key[16];
    int n = snprintf(key, sizeof key, "%u", oid);
    return sp_strmap_put(cat->by_oid, key, (size_t)n, r);
}

bool sqlp_catalog_add_column(sqlp_catalog *cat, const char *schema, const char *table, const char *column,
                             int ordinal, uint32_t table_oid, const char *type_name)
{
    if (!cat || !schema || !table || !column || ordinal <= 0 || ordinal > 1600)
        return false;
    cat_rel *r = rel_get(cat, schema, table, true);
    if (!r || !rel_set_oid(cat, r, table_oid))
        return false;
    for (int i = 0; i < r->ncols; i++)
        if (r->cols[i].attnum == ordinal || strcmp(r->cols[i].name, column) == 0)
            return false; /* a duplicate row means the feed is confused */
    if (r->ncols == r->capcols) {
        int ncap = r->capcols ? r->capcols * 2 : 16;
        cat_col *nc = realloc(r->cols, (size_t)ncap * sizeof *nc);
        if (!nc)
            return false;
        r->cols = nc;
        r->capcols = ncap;
    }
    /* keep attnum order: rows usually arrive sorted, so this is an append */
    int at = r->ncols;
    while (at > 0 && r->cols[at - 1].attnum > ordinal)
        at--;
    memmove(&r->cols[at + 1], &r->cols[at], (size_t)(r->ncols - at) * sizeof *r->cols);
    cat_col *c = &r->cols[at];
    memset(c, 0, sizeof *c);
    c->name = sp_strdup(&cat->a, column);
    c->type_name = sp_strdup(&cat->a, type_name ? type_name : "unknown");
    c->attnum = ordinal;
    c->phi_class = -1;
    r->ncols++;
    for (int i = 0; i < r->ncols; i++)
        r->cols[i].rel = r; /* realloc moved them */
    cat->finalized = false;
    return c->name && c->type_name;
}

bool sqlp_catalog_add_view(sqlp_catalog *cat, const char *schema, const char *view, const char *definition)
{
    if (!cat || !schema || !view || !definition)
        return false;
    cat_rel *r = rel_get(cat, schema, view, true);
    if (!r)
        return false;
    if (r->relkind != 'm')
        r->relkind = 'v';
    r->viewdef = sp_strdup(&cat->a, definition);
    cat->finalized = false;
    return r->viewdef != NULL;
}

/* ---- the PostgreSQL catalog query ------------------------------------------ */

const char *sqlp_catalog_pg_query(void)
{
    return "SELECT n.nspname, c.relname, a.attname, a.attnum::text, c.oid::text,\n"
           "       pg_catalog.format_type(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END, NULL),\n"
           "       c.relkind::text,\n"
           "       CASE WHEN c.relkind IN ('v', 'm') AND a.attnum = 1\n"
           "                 AND n.nspname NOT IN ('pg_catalog', 'information_schema')\n"
           "            THEN pg_catalog.pg_get_viewdef(c.oid) END,\n"
           "       (SELECT pn.nspname || '.' || pc.relname\n"
           "          FROM pg_catalog.pg_inherits i\n"
           "          JOIN pg_catalog.pg_class pc ON pc.oid = i.inhparent\n"
           "          JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace\n"
           "         WHERE i.inhrelid = c.oid ORDER BY i.inhseqno LIMIT 1),\n"
           "       pg_catalog.current_schemas(false)::text\n"
           "  FROM pg_catalog.pg_class c\n"
           "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace\n"
           "  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid\n"
           "  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid\n"
           " WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p')\n"
           "   AND a.attnum > 0 AND NOT a.attisdropped\n"
           "   AND n.nspname <> 'pg_toast' AND n.nspname NOT LIKE 'pg\\_temp\\_%'\n"
           "   AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'\n"
           " ORDER BY 1, 2, a.attnum";
}

/* "{public,\"my schema\"}" -> list of names */
static bool parse_name_array(sqlp_catalog *cat, const char *s)
{
    if (!s || *s != '{')
        return false;
    const char *items[32];
    int n = 0;
    const char *p = s + 1;
    char buf[256];
    while (*p && *p != '}' && n < 32) {
        size_t k = 0;
        if (*p == '"') {
            p++;
            while (*p && *p != '"') {
                if (*p == '\\' && p[1])
                    p++;
                if (k + 1 < sizeof buf)
                    buf[k++] = *p;
                p++;
            }
            if (*p == '"')
                p++;
        } else {
            while (*p && *p != ',' && *p != '}') {
                if (k + 1 < sizeof buf)
                    buf[k++] = *p;
                p++;
            }
        }
        buf[k] = 0;
        items[n] = sp_strdup(&cat->a, buf);
        if (!items[n])
            return false;
        n++;
        if (*p == ',')
            p++;
    }
    const char **arr = sp_alloc(&cat->a, (size_t)(n ? n : 1) * sizeof *arr);
    if (!arr)
        return false;
    memcpy(arr, items, (size_t)n * sizeof *arr);
    cat->view_path = arr;
    cat->nview_path = n;
    return true;
}

bool sqlp_catalog_add_pg_row(sqlp_catalog *cat, const char *const *f, size_t nfields)
{
    if (!cat || !f || nfields < 7 || !f[0] || !f[1] || !f[2] || !f[3] || !f[6])
        return false;
    char *end;
    long attnum = strtol(f[3], &end, 10);
    if (*end || attnum <= 0)
        return false;
    unsigned long oid = f[4] ? strtoul(f[4], &end, 10) : 0;
    if (f[4] && *end)
        return false;
    if (!sqlp_catalog_add_column(cat, f[0], f[1], f[2], (int)attnum, (uint32_t)oid, f[5]))
        return false;
    cat_rel *r = sp_cat_find(cat, f[0], f[1]);
    r->relkind = f[6][0];
    if (nfields > 7 && f[7] && !sqlp_catalog_add_view(cat, f[0], f[1], f[7]))
        return false;
    if (nfields > 8 && f[8] && !r->parent)
        r->parent = sp_strdup(&cat->a, f[8]);
    if (nfields > 9 && f[9] && !cat->view_path && !parse_name_array(cat, f[9]))
        return false;
    return true;
}

/* ---- blocked system relations ---------------------------------------------- */

/* Relations whose rows are data values (statistics samples, other sessions'
 * statements, password hashes, large objects, server config files).
 * pg_statistic_ext is not one: it holds the definitions psql's \d lists; the
 * sampled values live in pg_statistic_ext_data. */
static const struct {
    const char *name;
    const char *why;
} blocked_rels[] = {
    {"pg_stats", "column statistics hold sampled data values (most_common_vals, histogram_bounds)"},
    {"pg_stats_ext", "extended statistics hold sampled data values"},
    {"pg_stats_ext_exprs", "extended statistics hold sampled data values"},
    {"pg_statistic", "column statistics hold sampled data values"},
    {"pg_statistic_ext_data", "extended statistics hold sampled data values"},
    {"pg_stat_statements", "holds other sessions' statement text"},
    {"pg_stat_statements_info", "pg_stat_statements is not available through phigate"},
    {"pg_authid", "holds password hashes"},
    {"pg_shadow", "holds password hashes"},
    {"pg_user_mapping", "holds foreign-server credentials"},
    {"pg_user_mappings", "holds foreign-server credentials"},
    {"pg_subscription", "holds replication connection strings"},
    {"pg_largeobject", "large objects are not analysable"},
    {"pg_largeobject_metadata", "large objects are not analysable"},
    {"pg_file_settings", "server configuration files are administrative"},
    {"pg_hba_file_rules", "server configuration files are administrative"},
    {"pg_ident_file_mappings", "server configuration files are administrative"},
};

const char *sp_blocked_relation(const char *schema, const char *name)
{
    for (size_t i = 0; i < SP_ARRAY_LEN(blocked_rels); i++)
        if (strcmp(name, blocked_rels[i].name) == 0) {
            /* extension views live in user schemas too (pg_stat_statements) */
            if (!schema || is_system_schema(schema) || strncmp(name, "pg_stat_statements", 18) == 0)
                return blocked_rels[i].why;
        }
    return NULL;
}

/* ---- rules ---------------------------------------------------------------- */

/* The shipped profile, compiled in so an engine without rule files still masks
 * every class (masking-rules/safe_harbor.yaml says the same and may override). */
static const char *const builtin_class_mask[SQLP_HIPAA_COUNT] = {
    [SQLP_HIPAA_NAMES] = "redact",
    [SQLP_HIPAA_GEOGRAPHIC] = "redact",
    [SQLP_HIPAA_DATES] = "year",
    [SQLP_HIPAA_PHONE] = "partial(4,'***-***-')",
    [SQLP_HIPAA_FAX] = "partial(4,'***-***-')",
    [SQLP_HIPAA_EMAIL] = "email_token",
    [SQLP_HIPAA_SSN] = "partial(4,'***-**-')",
    [SQLP_HIPAA_MRN] = "token",
    [SQLP_HIPAA_HEALTH_PLAN] = "partial(4,'***')",
    [SQLP_HIPAA_ACCOUNT] = "partial(4,'****')",
    [SQLP_HIPAA_CERTIFICATE] = "partial(4,'****')",
    [SQLP_HIPAA_VEHICLE] = "token",
    [SQLP_HIPAA_DEVICE] = "token",
    [SQLP_HIPAA_URL] = "redact",
    [SQLP_HIPAA_IP] = "redact",
    [SQLP_HIPAA_BIOMETRIC] = "redact",
    [SQLP_HIPAA_PHOTO] = "redact",
    [SQLP_HIPAA_OTHER_ID] = "token",
    [SQLP_HIPAA_FREE_TEXT] = "redact",
    [SQLP_HIPAA_SYSTEM_TEXT] = "redact",
};

static const sp_profile builtin_profile = {
    .name = "safe_harbor",
    .class_mask = {
#define X(sym, name, strength) [SQLP_HIPAA_##sym] = NULL,
        SQLP_HIPAA_CLASSES(X)
#undef X
    },
};

/* A profile name nobody defined masks everything with redact: fail closed. */
static const sp_profile redact_profile = {.name = "(unknown profile: redact all)"};

const sp_profile *sp_cat_profile(const sqlp_catalog *cat, const char *name)
{
    if (!name || !*name)
        name = "safe_harbor";
    for (int i = 0; i < cat->nprofiles; i++)
        if (strcmp(cat->profiles[i].name, name) == 0)
            return &cat->profiles[i];
    if (strcmp(name, "safe_harbor") == 0 || strcmp(name, "hipaa_safe_harbor") == 0 ||
        strcmp(name, "hipaa-safe-harbor") == 0)
        return &builtin_profile;
    return &redact_profile;
}

const char *sp_profile_mask(const sp_profile *p, int cls)
{
    if (cls < 0 || cls >= SQLP_HIPAA_COUNT)
        return "redact";
    if (p == &redact_profile)
        return "redact";
    if (p->class_mask[cls])
        return p->class_mask[cls];
    return builtin_class_mask[cls];
}

static size_t rule_key(char *buf, size_t len, const char *schema, const char *table, const char *column)
{
    int n = snprintf(buf, len, "%s%c%s%c%s", schema ? schema : "*", 0, table, 0, column);
    return n < 0 || (size_t)n >= len ? 0 : (size_t)n;
}

const sp_rule_col *sp_cat_rule(const sqlp_catalog *cat, const char *schema, const char *table, const char *column)
{
    char key[512];
    size_t k = rule_key(key, sizeof key, schema, table, column);
    const sp_rule_col *r = k ? sp_strmap_get(cat->rule_by_name, key, k) : NULL;
    if (r)
        return r;
    k = rule_key(key, sizeof key, NULL, table, column);
    return k ? sp_strmap_get(cat->rule_by_name, key, k) : NULL;
}

/* -- YAML loading -- */

typedef struct rules_ctx {
    sqlp_catalog *cat;
    yaml_document_t *doc;
    const char *file;
    char *err;
    size_t errlen;
    bool failed;
    /* named masks: name -> canonical spec */
    sp_strmap *named;
} rules_ctx;

static void rerr(rules_ctx *c, const yaml_node_t *n, const char *fmt, ...) SP_PRINTF(3, 4);
static void rerr(rules_ctx *c, const yaml_node_t *n, const char *fmt, ...)
{
    if (c->failed)
        return;
    c->failed = true;
    int off = snprintf(c->err, c->errlen, "%s:%lu: ", c->file, n ? (unsigned long)n->start_mark.line + 1 : 0ul);
    if (off < 0 || (size_t)off >= c->errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err + off, c->errlen - (size_t)off, fmt, ap);
    va_end(ap);
}

static yaml_node_t *ynode(rules_ctx *c, int id)
{
    return id ? yaml_document_get_node(c->doc, id) : NULL;
}

static const char *yscalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static yaml_node_t *yget(rules_ctx *c, const yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        const char *k = yscalar(ynode(c, p->key));
        if (k && strcmp(k, key) == 0)
            return ynode(c, p->value);
    }
    return NULL;
}

static bool only_keys(rules_ctx *c, const yaml_node_t *map, const char *const *keys, const char *where)
{
    if (!map || map->type != YAML_MAPPING_NODE) {
        rerr(c, map, "%s must be a mapping", where);
        return false;
    }
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = ynode(c, p->key);
        const char *k = yscalar(kn);
        int i;
        for (i = 0; keys[i]; i++)
            if (k && strcmp(k, keys[i]) == 0)
                break;
        if (!keys[i]) {
            rerr(c, kn, "unknown key \"%s\" in %s", k ? k : "?", where);
            return false;
        }
    }
    return true;
}

/* A mask value: a spec, or the name of a mask a profile declared. */
static const char *resolve_mask(rules_ctx *c, const yaml_node_t *n, const char *v)
{
    sp_mask m;
    char canon[128];
    if (sp_mask_parse(v, &m)) {
        sp_mask_canonical(&m, canon, sizeof canon);
        return sp_strdup(&c->cat->a, canon);
    }
    const char *named = sp_strmap_get(c->named, v, strlen(v));
    if (named)
        return named;
    rerr(c, n, "\"%s\" is neither a mask spec nor a declared mask name", v);
    return NULL;
}

static bool parse_bool(const char *s, bool *out)
{
    if (!s)
        return false;
    if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on")) {
        *out = true;
        return true;
    }
    if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off")) {
        *out = false;
        return true;
    }
    return false;
}

static void load_masks_section(rules_ctx *c, const yaml_node_t *masks)
{
    if (!masks)
        return;
    if (masks->type != YAML_MAPPING_NODE) {
        rerr(c, masks, "masks must be a mapping of name: spec");
        return;
    }
    for (yaml_node_pair_t *p = masks->data.mapping.pairs.start; p < masks->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = ynode(c, p->key), *vn = ynode(c, p->value);
        const char *k = yscalar(kn), *v = yscalar(vn);
        sp_mask m;
        if (!k || !v || !sp_mask_parse(v, &m)) {
            rerr(c, vn ? vn : kn, "mask %s: \"%s\" is not a mask spec", k ? k : "?", v ? v : "?");
            return;
        }
        char canon[128];
        sp_mask_canonical(&m, canon, sizeof canon);
        const char *cs = sp_strdup(&c->cat->a, canon);
        if (!cs || !sp_strmap_put(c->named, k, strlen(k), (void *)cs)) {
            rerr(c, kn, "out of memory");
            return;
        }
    }
}

static void load_profile(rules_ctx *c, const yaml_node_t *root)
{
    static const char *const keys[] = {"kind", "name", "description", "masks", "classes", NULL};
    if (!only_keys(c, root, keys, "a profile"))
        return;
    const char *name = yscalar(yget(c, root, "name"));
    if (!name) {
        rerr(c, root, "a profile needs a name");
        return;
    }
    load_masks_section(c, yget(c, root, "masks"));
    yaml_node_t *classes = yget(c, root, "classes");
    if (!classes || classes->type != YAML_MAPPING_NODE) {
        rerr(c, root, "profile %s: classes must map every identifier class to a mask", name);
        return;
    }
    sqlp_catalog *cat = c->cat;
    if (cat->nprofiles == cat->capprofiles) {
        int ncap = cat->capprofiles ? cat->capprofiles * 2 : 4;
        sp_profile *np = realloc(cat->profiles, (size_t)ncap * sizeof *np);
        if (!np) {
            rerr(c, root, "out of memory");
            return;
        }
        cat->profiles = np;
        cat->capprofiles = ncap;
    }
    sp_profile p = {.name = sp_strdup(&cat->a, name)};
    for (yaml_node_pair_t *pr = classes->data.mapping.pairs.start; pr < classes->data.mapping.pairs.top; pr++) {
        yaml_node_t *kn = ynode(c, pr->key), *vn = ynode(c, pr->value);
        const char *k = yscalar(kn), *v = yscalar(vn);
        sqlp_hipaa_class hc;
        if (!k || !sqlp_hipaa_class_from_name(k, &hc)) {
            rerr(c, kn, "profile %s: unknown identifier class \"%s\"", name, k ? k : "?");
            return;
        }
        if (!v) {
            rerr(c, vn, "profile %s: class %s needs a mask", name, k);
            return;
        }
        p.class_mask[hc] = resolve_mask(c, vn, v);
        if (!p.class_mask[hc])
            return;
    }
    /* the 18 Safe Harbor identifiers must all be covered by a profile */
    for (int i = 0; i < SQLP_HIPAA_COUNT; i++) {
        if (i == SQLP_HIPAA_FREE_TEXT || i == SQLP_HIPAA_SYSTEM_TEXT)
            continue;
        if (!p.class_mask[i]) {
            rerr(c, classes, "profile %s does not say how to mask class %s", name, hipaa_names[i]);
            return;
        }
    }
    for (int i = 0; i < cat->nprofiles; i++)
        if (strcmp(cat->profiles[i].name, name) == 0) {
            cat->profiles[i] = p; /* a later file replaces the profile */
            return;
        }
    cat->profiles[cat->nprofiles++] = p;
}

static void load_catalog_rules(rules_ctx *c, const yaml_node_t *root)
{
    static const char *const keys[] = {"kind", "name", "description", "schema", "masks", "columns", NULL};
    static const char *const colkeys[] = {"schema", "table", "column", "class", "mask", "join_key", "note", NULL};
    if (!only_keys(c, root, keys, "a catalog"))
        return;
    load_masks_section(c, yget(c, root, "masks"));
    const char *defschema = yscalar(yget(c, root, "schema"));
    yaml_node_t *cols = yget(c, root, "columns");
    if (!cols || cols->type != YAML_SEQUENCE_NODE) {
        rerr(c, root, "a catalog needs a columns list");
        return;
    }
    sqlp_catalog *cat = c->cat;
    for (yaml_node_item_t *it = cols->data.sequence.items.start; it < cols->data.sequence.items.top; it++) {
        yaml_node_t *e = ynode(c, *it);
        if (!only_keys(c, e, colkeys, "a columns entry"))
            return;
        const char *schema = yscalar(yget(c, e, "schema"));
        const char *table = yscalar(yget(c, e, "table"));
        const char *column = yscalar(yget(c, e, "column"));
        const char *cls = yscalar(yget(c, e, "class"));
        const char *mask = yscalar(yget(c, e, "mask"));
        const char *jk = yscalar(yget(c, e, "join_key"));
        if (!schema)
            schema = defschema;
        if (!table || !column) {
            rerr(c, e, "a columns entry needs table and column");
            return;
        }
        sqlp_hipaa_class hc;
        if (!cls || !sqlp_hipaa_class_from_name(cls, &hc)) {
            rerr(c, e, "%s.%s: unknown identifier class \"%s\"", table, column, cls ? cls : "?");
            return;
        }
        sp_rule_col rc = {
            .schema = schema ? sp_strdup(&cat->a, schema) : NULL,
            .table = sp_strdup(&cat->a, table),
            .column = sp_strdup(&cat->a, column),
            .phi_class = (int)hc,
        };
        if (mask && !(rc.mask = resolve_mask(c, yget(c, e, "mask"), mask)))
            return;
        if (jk && !parse_bool(jk, &rc.join_key)) {
            rerr(c, e, "%s.%s: join_key must be true or false", table, column);
            return;
        }
        if (cat->nrules == cat->caprules) {
            int ncap = cat->caprules ? cat->caprules * 2 : 32;
            sp_rule_col *nr = realloc(cat->rules, (size_t)ncap * sizeof *nr);
            if (!nr) {
                rerr(c, e, "out of memory");
                return;
            }
            cat->rules = nr;
            cat->caprules = ncap;
            /* the map points into the array: rebuild it */
            for (int i = 0; i < cat->nrules; i++) {
                char key[512];
                size_t k = rule_key(key, sizeof key, cat->rules[i].schema, cat->rules[i].table, cat->rules[i].column);
                if (!k || !sp_strmap_put(cat->rule_by_name, key, k, &cat->rules[i])) {
                    rerr(c, e, "out of memory");
                    return;
                }
            }
        }
        cat->rules[cat->nrules] = rc;
        char key[512];
        size_t k = rule_key(key, sizeof key, rc.schema, rc.table, rc.column);
        if (!k || !sp_strmap_put(cat->rule_by_name, key, k, &cat->rules[cat->nrules])) {
            rerr(c, e, "name too long or out of memory");
            return;
        }
        cat->nrules++;
    }
    cat->finalized = false;
}

static bool load_rules_file(sqlp_catalog *cat, sp_strmap *named, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return false;
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        snprintf(err, errlen, "%s: out of memory", path);
        return false;
    }
    yaml_parser_set_input_file(&parser, f);
    bool ok = yaml_parser_load(&parser, &doc);
    if (!ok) {
        snprintf(err, errlen, "%s:%lu: %s", path, (unsigned long)parser.problem_mark.line + 1,
                 parser.problem ? parser.problem : "YAML error");
        yaml_parser_delete(&parser);
        fclose(f);
        return false;
    }
    rules_ctx c = {.cat = cat, .doc = &doc, .file = path, .err = err, .errlen = errlen, .named = named};
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root) {
        const char *kind = yscalar(yget(&c, root, "kind"));
        if (kind && strcmp(kind, "profile") == 0)
            load_profile(&c, root);
        else if (kind && strcmp(kind, "catalog") == 0)
            load_catalog_rules(&c, root);
        else
            rerr(&c, root, "kind must be profile or catalog");
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    return !c.failed;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool has_yaml_ext(const char *n)
{
    size_t l = strlen(n);
    return (l > 5 && strcmp(n + l - 5, ".yaml") == 0) || (l > 4 && strcmp(n + l - 4, ".yml") == 0);
}

bool sqlp_catalog_load_rules(sqlp_catalog *cat, const char *rules_dir, char *err, size_t errlen)
{
    if (!cat || !rules_dir) {
        snprintf(err, errlen, "no catalog or rules path");
        return false;
    }
    sp_strmap *named = sp_strmap_new();
    if (!named) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    struct stat st;
    bool ok = true;
    if (stat(rules_dir, &st) != 0) {
        snprintf(err, errlen, "%s: %s", rules_dir, strerror(errno));
        ok = false;
    } else if (!S_ISDIR(st.st_mode)) {
        ok = load_rules_file(cat, named, rules_dir, err, errlen);
    } else {
        DIR *d = opendir(rules_dir);
        char **names = NULL;
        size_t n = 0, cap = 0;
        if (!d) {
            snprintf(err, errlen, "%s: %s", rules_dir, strerror(errno));
            ok = false;
        } else {
            struct dirent *de;
            while ((de = readdir(d))) {
                if (de->d_name[0] == '.' || !has_yaml_ext(de->d_name))
                    continue;
                if (n == cap) {
                    cap = cap ? cap * 2 : 16;
                    char **nn = realloc(names, cap * sizeof *nn);
                    if (!nn) {
                        ok = false;
                        break;
                    }
                    names = nn;
                }
                if (!(names[n] = strdup(de->d_name))) {
                    ok = false;
                    break;
                }
                n++;
            }
            closedir(d);
            if (!ok)
                snprintf(err, errlen, "out of memory");
            if (names)
                qsort(names, n, sizeof *names, cmp_str);
            /* profiles first, so catalogs may name the masks a profile declares */
            for (int pass = 0; pass < 2 && ok; pass++) {
                for (size_t i = 0; i < n && ok; i++) {
                    char path[4096];
                    snprintf(path, sizeof path, "%s/%s", rules_dir, names[i]);
                    FILE *f = fopen(path, "r");
                    char head[4096] = {0};
                    if (f) {
                        size_t got = fread(head, 1, sizeof head - 1, f);
                        head[got] = 0;
                        fclose(f);
                    }
                    bool is_profile = strstr(head, "kind: profile") != NULL;
                    if ((pass == 0) == is_profile)
                        ok = load_rules_file(cat, named, path, err, errlen);
                }
            }
            for (size_t i = 0; i < n; i++)
                free(names[i]);
            free(names);
        }
    }
    sp_strmap_free(named);
    return ok;
}

/* ---- finalize and lookups -------------------------------------------------- */

static const sp_rule_col *rule_for(const sqlp_catalog *cat, const cat_rel *r, const char *column)
{
    const sp_rule_col *rc = sp_cat_rule(cat, r->schema, r->name, column);
    if (rc || !r->parent)
        return rc;
    /* a partition or inheritance child is classified like its parent */
    const char *dot = strchr(r->parent, '.');
    if (!dot)
        return NULL;
    char schema[128];
    size_t n = (size_t)(dot - r->parent);
    if (n >= sizeof schema)
        return NULL;
    memcpy(schema, r->parent, n);
    schema[n] = 0;
    return sp_cat_rule(cat, schema, dot + 1, column);
}

void sp_cat_finalize(sqlp_catalog *cat, sqlp_engine *eng)
{
    for (int i = 0; i < cat->nrels; i++) {
        cat_rel *r = cat->rels[i];
        r->blocked_why = sp_blocked_relation(r->schema, r->name);
        r->blocked = r->blocked_why != NULL;
        r->has_phi = false;
        for (int j = 0; j < r->ncols; j++) {
            cat_col *c = &r->cols[j];
            c->phi_class = -1;
            c->mask = NULL;
            c->join_key = false;
            if (r->system) {
                /* other sessions' statements: scrubbed, never shown */
                if (strcmp(r->name, "pg_stat_activity") == 0 && strcmp(c->name, "query") == 0) {
                    c->phi_class = SQLP_HIPAA_SYSTEM_TEXT;
                    r->has_phi = true;
                }
                continue;
            }
            const sp_rule_col *rc = rule_for(cat, r, c->name);
            if (rc) {
                c->phi_class = rc->phi_class;
                c->mask = rc->mask;
                c->join_key = rc->join_key;
                r->has_phi = true;
            }
        }
        r->view_state = 0;
    }
    cat->finalized = true;
    /* views last: their lineage needs the tables' classification */
    for (int i = 0; i < cat->nrels; i++) {
        cat_rel *r = cat->rels[i];
        if (!r->system && r->viewdef && r->view_state == 0)
            (void)sp_analyse_view(eng, r, 0);
    }
}

static bool phi_of(const sqlp_catalog *cat, const cat_rel *r, const char *column, int attnum, sqlp_phi_column *out)
{
    const cat_col *c = NULL;
    for (int i = 0; i < r->ncols; i++)
        if ((column && strcmp(r->cols[i].name, column) == 0) || (!column && r->cols[i].attnum == attnum)) {
            c = &r->cols[i];
            break;
        }
    if (!c)
        return false;
    out->hipaa_class = NULL;
    out->mask = NULL;
    int cls = c->phi_class;
    const char *mask = c->mask;
    if (!cat->finalized && !r->system) {
        const sp_rule_col *rc = rule_for(cat, r, c->name);
        cls = rc ? rc->phi_class : -1;
        mask = rc ? rc->mask : NULL;
    }
    if (r->viewdef && r->view_state == 2 && r->view_lin) {
        /* a view column reports the strongest class it derives from */
        const sp_lin *l = &r->view_lin[c - r->cols];
        for (int i = 0; i < l->n; i++)
            if (l->src[i]->phi_class >= 0) {
                cls = l->src[i]->phi_class;
                mask = (l->flags & SP_LIN_IDENT) ? l->src[i]->mask : "redact";
            }
        if (l->flags & SP_LIN_OPAQUE) {
            cls = SQLP_HIPAA_OTHER_ID;
            mask = "redact";
        }
    }
    if (cls < 0)
        return true;
    out->hipaa_class = hipaa_names[cls];
    out->mask = mask ? mask : sp_profile_mask(sp_cat_profile(cat, NULL), cls);
    return true;
}

bool sqlp_catalog_phi_by_name(const sqlp_catalog *cat, const char *schema, const char *table, const char *column,
                              sqlp_phi_column *out)
{
    if (!cat || !table || !column || !out)
        return false;
    const cat_rel *r = sp_cat_find(cat, schema ? schema : "public", table);
    return r && phi_of(cat, r, column, 0, out);
}

bool sqlp_catalog_phi_by_oid(const sqlp_catalog *cat, uint32_t table_oid, int attnum, sqlp_phi_column *out)
{
    if (!cat || !out || !table_oid || attnum <= 0)
        return false;
    char key[16];
    int n = snprintf(key, sizeof key, "%u", table_oid);
    const cat_rel *r = sp_strmap_get(cat->by_oid, key, (size_t)n);
    return r && phi_of(cat, r, NULL, attnum, out);
}
