#include "gate/config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "gate/jwks.h"

/* ---- error collection ---------------------------------------------------- */

typedef struct cfg_errors {
    const char *path;
    char *buf;
    size_t len, used;
    int count;
} cfg_errors;

__attribute__((format(printf, 3, 4))) static void cfg_error(cfg_errors *e, const yaml_node_t *at, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    e->count++;
    if (e->used >= e->len)
        return;
    int n;
    if (at)
        n = snprintf(e->buf + e->used, e->len - e->used, "%s:%zu: %s\n", e->path, at->start_mark.line + 1, msg);
    else
        n = snprintf(e->buf + e->used, e->len - e->used, "%s: %s\n", e->path, msg);
    if (n > 0)
        e->used += (size_t)n < e->len - e->used ? (size_t)n : e->len - e->used - 1;
}

/* ---- the settings tables -------------------------------------------------- */

/* F_LIST: a YAML sequence (or one scalar) into a NULL-terminated char **. */
typedef enum { F_STRING, F_INT, F_BOOL, F_BYTES, F_ENUM, F_LOGLEVEL, F_LIST } field_type;

typedef struct field_spec {
    const char *key;
    field_type type;
    size_t offset;
    const char *default_value; /* NULL = no default */
    bool required;
    int64_t min, max;              /* for F_INT / F_BYTES */
    const char *const *enum_names; /* for F_ENUM, NULL-terminated */
} field_spec;

#define FIELD(st, key, type, member, def, req, min, max, en) \
    {key, type, offsetof(st, member), def, req, min, max, en}

static const char *const tls_mode_names[] = {"disable", "prefer", "require", "verify-ca", "verify-full", NULL};
static const char *const protocol_names[] = {"postgres", "mysql", NULL};
static const char *const identity_auth_names[] = {"scram", "cert", "cert+scram", NULL};
static const char *const cert_name_names[] = {"cn", "dns", "uri", "email", NULL};

static const field_spec daemon_fields[] = {
    FIELD(config, "log_level", F_LOGLEVEL, log_level, "info", false, 0, 0, NULL),
    FIELD(config, "log_file", F_STRING, log_file, NULL, false, 0, 0, NULL),
    FIELD(config, "pid_file", F_STRING, pid_file, NULL, false, 0, 0, NULL),
    FIELD(config, "masking_rules", F_STRING, masking_rules_dir, NULL, false, 0, 0, NULL),
};

static const field_spec pg_listener_fields[] = {
    FIELD(config, "address", F_STRING, pg_address, "127.0.0.1", false, 0, 0, NULL),
    FIELD(config, "port", F_INT, pg_port, "6432", false, 1, 65535, NULL),
};

/* Only applied when listen.mysql is present: myfront is opt-in. */
static const field_spec my_listener_fields[] = {
    FIELD(config, "address", F_STRING, my_address, "127.0.0.1", false, 0, 0, NULL),
    FIELD(config, "port", F_INT, my_port, "3307", false, 1, 65535, NULL),
};

static const field_spec tls_fields[] = {
    FIELD(config, "cert_file", F_STRING, tls_cert_file, NULL, false, 0, 0, NULL),
    FIELD(config, "key_file", F_STRING, tls_key_file, NULL, false, 0, 0, NULL),
    FIELD(config, "require", F_BOOL, tls_required, "false", false, 0, 0, NULL),
    FIELD(config, "client_ca_file", F_STRING, tls_client_ca_file, NULL, false, 0, 0, NULL),
    FIELD(config, "client_crl_file", F_STRING, tls_client_crl_file, NULL, false, 0, 0, NULL),
    FIELD(config, "client_cert_name", F_ENUM, tls_client_cert_name, "cn", false, 0, 0, cert_name_names),
};

static const field_spec limit_fields[] = {
    FIELD(config, "max_message_bytes", F_BYTES, max_message_bytes, "16MB", false, 1024, 1073741824, NULL),
    FIELD(config, "max_startup_bytes", F_BYTES, max_startup_bytes, "10000", false, 64, 1048576, NULL),
    FIELD(config, "max_clients", F_INT, max_clients, "1000", false, 1, 1000000, NULL),
    FIELD(config, "client_buffer_bytes", F_BYTES, client_buffer_bytes, "1MB", false, 16384, 268435456, NULL),
    FIELD(config, "auth_timeout_ms", F_INT, auth_timeout_ms, "15000", false, 100, 600000, NULL),
};

static const field_spec audit_fields[] = {
    FIELD(config, "enabled", F_BOOL, audit_enabled, "true", false, 0, 0, NULL),
    FIELD(config, "dir", F_STRING, audit_dir, NULL, false, 0, 0, NULL),
    FIELD(config, "key_file", F_STRING, audit_key_file, NULL, false, 0, 0, NULL),
    FIELD(config, "checkpoint_records", F_INT, audit_checkpoint_records, "1000", false, 1, 10000000, NULL),
    FIELD(config, "checkpoint_ms", F_INT, audit_checkpoint_ms, "1000", false, 1, 3600000, NULL),
    FIELD(config, "rotate_bytes", F_BYTES, audit_rotate_bytes, "64MB", false, 65536, 1099511627776LL, NULL),
    FIELD(config, "preallocate_bytes", F_BYTES, audit_preallocate_bytes, "1MB", false, 0, 1073741824LL, NULL),
};

static const char *const grant_mode_names[] = {"single_use", "ttl", NULL};

static const field_spec redis_fields[] = {
    FIELD(config, "host", F_STRING, redis_host, "127.0.0.1", false, 0, 0, NULL),
    FIELD(config, "port", F_INT, redis_port, "6379", false, 1, 65535, NULL),
    FIELD(config, "password_file", F_STRING, redis_password_file, NULL, false, 0, 0, NULL),
    FIELD(config, "password_env", F_STRING, redis_password_env, NULL, false, 0, 0, NULL),
    FIELD(config, "key_prefix", F_STRING, redis_key_prefix, "phigate:", false, 0, 0, NULL),
    FIELD(config, "timeout_ms", F_INT, redis_timeout_ms, "2000", false, 50, 60000, NULL),
};

static const field_spec approvals_fields[] = {
    FIELD(config, "wait_ms", F_INT, approvals_wait_ms, "120000", false, 0, 3600000, NULL),
    FIELD(config, "grant", F_ENUM, approvals_grant, "single_use", false, 0, 0, grant_mode_names),
    FIELD(config, "grant_ttl_s", F_INT, approvals_grant_ttl_s, "600", false, 1, 604800, NULL),
    FIELD(config, "request_ttl_s", F_INT, approvals_request_ttl_s, "3600", false, 1, 604800, NULL),
};

static const field_spec admin_fields[] = {
    FIELD(config, "address", F_STRING, admin_address, "127.0.0.1", false, 0, 0, NULL),
    FIELD(config, "port", F_INT, admin_port, "8443", false, 1, 65535, NULL),
    FIELD(config, "cert_file", F_STRING, admin_cert_file, NULL, false, 0, 0, NULL),
    FIELD(config, "key_file", F_STRING, admin_key_file, NULL, false, 0, 0, NULL),
};

static const field_spec approver_fields[] = {
    FIELD(cfg_approver, "scram", F_STRING, secret, NULL, true, 0, 0, NULL),
};

static const field_spec upstream_fields[] = {
    FIELD(cfg_upstream, "protocol", F_STRING, protocol, "postgres", false, 0, 0, NULL),
    FIELD(cfg_upstream, "host", F_STRING, host, NULL, true, 0, 0, NULL),
    FIELD(cfg_upstream, "port", F_INT, port, "5432", false, 1, 65535, NULL),
    FIELD(cfg_upstream, "database", F_STRING, database, NULL, false, 0, 0, NULL),
    FIELD(cfg_upstream, "client_database", F_STRING, client_database, NULL, false, 0, 0, NULL),
    FIELD(cfg_upstream, "user", F_STRING, user, NULL, true, 0, 0, NULL),
    FIELD(cfg_upstream, "password_file", F_STRING, password_file, NULL, false, 0, 0, NULL),
    FIELD(cfg_upstream, "password_env", F_STRING, password_env, NULL, false, 0, 0, NULL),
    FIELD(cfg_upstream, "tls", F_ENUM, tls_mode, "disable", false, 0, 0, tls_mode_names),
    FIELD(cfg_upstream, "tls_ca_file", F_STRING, tls_ca_file, NULL, false, 0, 0, NULL),
    FIELD(cfg_upstream, "connect_timeout_ms", F_INT, connect_timeout_ms, "5000", false, 100, 600000, NULL),
};

static const field_spec identity_fields[] = {
    FIELD(cfg_identity, "auth", F_ENUM, auth, "scram", false, 0, 0, identity_auth_names),
    FIELD(cfg_identity, "cert_name", F_STRING, cert_name, NULL, false, 0, 0, NULL),
    FIELD(cfg_identity, "scram", F_STRING, secret, NULL, false, 0, 0, NULL),
    FIELD(cfg_identity, "oidc_issuer", F_STRING, oidc_issuer_name, NULL, false, 0, 0, NULL),
    FIELD(cfg_identity, "role", F_STRING, role_name, NULL, false, 0, 0, NULL),
    FIELD(cfg_identity, "max_connections", F_INT, max_connections, "0", false, 0, 1000000, NULL),
    FIELD(cfg_identity, "statements_per_second", F_INT, statements_per_second, "0", false, 0, 10000000, NULL),
    FIELD(cfg_identity, "mysql_native", F_STRING, mysql_native, NULL, false, 0, 0, NULL),
};

static const field_spec oidc_fields[] = {
    FIELD(cfg_oidc_issuer, "issuer", F_STRING, issuer, NULL, true, 0, 0, NULL),
    FIELD(cfg_oidc_issuer, "audience", F_STRING, audience, NULL, true, 0, 0, NULL),
    FIELD(cfg_oidc_issuer, "jwks_file", F_STRING, jwks_file, NULL, false, 0, 0, NULL),
    FIELD(cfg_oidc_issuer, "jwks_uri", F_STRING, jwks_uri, NULL, false, 0, 0, NULL),
    FIELD(cfg_oidc_issuer, "ca_file", F_STRING, ca_file, NULL, false, 0, 0, NULL),
    FIELD(cfg_oidc_issuer, "algorithms", F_LIST, algorithms, "RS256,ES256,EdDSA", false, 0, 0, NULL),
    FIELD(cfg_oidc_issuer, "identity_claim", F_STRING, identity_claim, "sub", false, 0, 0, NULL),
    FIELD(cfg_oidc_issuer, "role_claim", F_STRING, role_claim, NULL, false, 0, 0, NULL),
    FIELD(cfg_oidc_issuer, "allowed_roles", F_LIST, allowed_roles, NULL, false, 0, 0, NULL),
    FIELD(cfg_oidc_issuer, "clock_skew_s", F_INT, clock_skew_s, "60", false, 0, 600, NULL),
    FIELD(cfg_oidc_issuer, "jwks_refresh_s", F_INT, jwks_refresh_s, "300", false, 10, 86400, NULL),
    FIELD(cfg_oidc_issuer, "jwks_refetch_min_s", F_INT, jwks_refetch_min_s, "30", false, 1, 3600, NULL),
    FIELD(cfg_oidc_issuer, "max_token_bytes", F_BYTES, max_token_bytes, "8kB", false, 256, 65536, NULL),
    FIELD(cfg_oidc_issuer, "max_jwks_bytes", F_BYTES, max_jwks_bytes, "256kB", false, 1024, 4194304, NULL),
};

#define NFIELDS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- YAML helpers --------------------------------------------------------- */

typedef struct cfg_ctx {
    yaml_document_t *doc;
    cfg_errors *err;
} cfg_ctx;

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static yaml_node_t *node_at(cfg_ctx *c, int index) { return yaml_document_get_node(c->doc, index); }

static bool parse_int64(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return false;
    *out = v;
    return true;
}

/* "16MB", "64kB", "1GB" or a plain number of bytes. */
static bool parse_bytes(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || v < 0)
        return false;
    int64_t mult = 1;
    if (strcasecmp(end, "kb") == 0 || strcasecmp(end, "k") == 0)
        mult = 1024;
    else if (strcasecmp(end, "mb") == 0 || strcasecmp(end, "m") == 0)
        mult = 1024 * 1024;
    else if (strcasecmp(end, "gb") == 0 || strcasecmp(end, "g") == 0)
        mult = 1024 * 1024 * 1024;
    else if (*end)
        return false;
    if (v > INT64_MAX / mult)
        return false;
    *out = v * mult;
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
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

static void free_list(char **list);

/* "a,b, c" -> {"a","b","c",NULL}: list defaults and single scalars. */
static char **split_list(const char *value)
{
    size_t n = 1;
    for (const char *p = value; *p; p++)
        n += *p == ',';
    char **list = calloc(n + 1, sizeof(char *)), *copy = strdup(value), *save = NULL;
    size_t i = 0;
    for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save))
        list[i++] = strdup(t);
    free(copy);
    return list;
}

static bool set_field(cfg_ctx *c, const field_spec *f, void *base, const char *value, const yaml_node_t *at)
{
    char *dst = (char *)base + f->offset;
    int64_t v;
    switch (f->type) {
    case F_STRING:
        free(*(char **)dst);
        *(char **)dst = strdup(value);
        return true;
    case F_LIST:
        free_list(*(char ***)dst);
        *(char ***)dst = split_list(value);
        return true;
    case F_INT:
    case F_BYTES:
        if (!(f->type == F_INT ? parse_int64(value, &v) : parse_bytes(value, &v))) {
            cfg_error(c->err, at, "%s: \"%s\" is not a %s", f->key, value,
                      f->type == F_INT ? "whole number" : "size (e.g. 16MB)");
            return false;
        }
        if (v < f->min || v > f->max) {
            cfg_error(c->err, at, "%s: %lld is out of range %lld..%lld", f->key, (long long)v, (long long)f->min,
                      (long long)f->max);
            return false;
        }
        if (f->type == F_INT)
            *(int *)dst = (int)v;
        else
            *(int64_t *)dst = v;
        return true;
    case F_BOOL:
        if (!parse_bool(value, (bool *)dst)) {
            cfg_error(c->err, at, "%s: \"%s\" is not true or false", f->key, value);
            return false;
        }
        return true;
    case F_ENUM:
        for (int i = 0; f->enum_names[i]; i++) {
            if (strcmp(value, f->enum_names[i]) == 0) {
                *(int *)dst = i;
                return true;
            }
        }
        cfg_error(c->err, at, "%s: \"%s\" is not one of the allowed values", f->key, value);
        return false;
    case F_LOGLEVEL: {
        log_level lvl;
        if (!log_level_from_name(value, &lvl)) {
            cfg_error(c->err, at, "%s: \"%s\" is not debug, info, warn or error", f->key, value);
            return false;
        }
        *(int *)dst = (int)lvl;
        return true;
    }
    }
    return false;
}

static void apply_defaults(cfg_ctx *c, const field_spec *fields, size_t n, void *base)
{
    for (size_t i = 0; i < n; i++)
        if (fields[i].default_value)
            set_field(c, &fields[i], base, fields[i].default_value, NULL);
}

static char **string_list(cfg_ctx *c, const yaml_node_t *seq, const char *what);

/* Fill base from a mapping node through a field table; unknown keys are errors. */
static void apply_mapping(cfg_ctx *c, const yaml_node_t *map, const field_spec *fields, size_t n, void *base,
                          const char *section)
{
    bool seen[32] = {false};
    if (!map || map->type != YAML_MAPPING_NODE) {
        cfg_error(c->err, map, "%s must be a mapping of settings", section);
        return;
    }
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node_at(c, p->key), *v = node_at(c, p->value);
        const char *key = scalar(k), *value = scalar(v);
        size_t i;
        for (i = 0; i < n; i++)
            if (key && strcmp(key, fields[i].key) == 0)
                break;
        if (i == n) {
            cfg_error(c->err, k, "unknown setting \"%s\" in %s", key ? key : "?", section);
            continue;
        }
        if (fields[i].type == F_LIST && v && v->type == YAML_SEQUENCE_NODE) {
            char ***dst = (char ***)((char *)base + fields[i].offset);
            free_list(*dst);
            *dst = string_list(c, v, key);
            if (i < 32)
                seen[i] = true;
            continue;
        }
        if (!value) {
            cfg_error(c->err, v, "%s.%s must be a single value", section, key);
            continue;
        }
        if (set_field(c, &fields[i], base, value, v) && i < 32)
            seen[i] = true;
    }
    for (size_t i = 0; i < n && i < 32; i++)
        if (fields[i].required && !seen[i])
            cfg_error(c->err, map, "%s: missing required setting \"%s\"", section, fields[i].key);
}

static yaml_node_t *map_get(cfg_ctx *c, const yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        const char *k = scalar(node_at(c, p->key));
        if (k && strcmp(k, key) == 0)
            return node_at(c, p->value);
    }
    return NULL;
}

/* ---- secrets --------------------------------------------------------------- */

bool config_read_secret_file(const char *path, char **out, char *err, size_t errlen)
{
    struct stat st;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open secret file %s: %s", path, strerror(errno));
        return false;
    }
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "secret file %s is not a regular file", path);
        fclose(f);
        return false;
    }
    /* A secret others can read is already disclosed: refuse it rather than use it. */
    if ((st.st_mode & 077) != 0 || st.st_uid != geteuid()) {
        snprintf(err, errlen, "secret file %s must be owned by uid %u and not group/world accessible (chmod 600)",
                 path, (unsigned)geteuid());
        fclose(f);
        return false;
    }
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    if (n == 0) {
        snprintf(err, errlen, "secret file %s is empty", path);
        return false;
    }
    *out = strdup(buf);
    return true;
}

/* ---- sections ------------------------------------------------------------- */

static char **string_list(cfg_ctx *c, const yaml_node_t *seq, const char *what)
{
    if (!seq)
        return calloc(1, sizeof(char *));
    if (seq->type != YAML_SEQUENCE_NODE) {
        cfg_error(c->err, seq, "%s must be a list", what);
        return calloc(1, sizeof(char *));
    }
    size_t n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    char **list = calloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        const char *s = scalar(node_at(c, seq->data.sequence.items.start[i]));
        if (!s)
            cfg_error(c->err, seq, "%s: item %zu must be a single value", what, i + 1);
        list[i] = strdup(s ? s : "");
    }
    return list;
}

static void load_upstream(cfg_ctx *c, cfg_upstream *u, const char *name, const yaml_node_t *map)
{
    u->name = strdup(name);
    apply_defaults(c, upstream_fields, NFIELDS(upstream_fields), u);
    char section[160];
    snprintf(section, sizeof section, "upstreams.%s", name);
    apply_mapping(c, map, upstream_fields, NFIELDS(upstream_fields), u, section);
    if (!u->database)
        u->database = strdup(name);
    if (!u->client_database)
        u->client_database = strdup(name);
    if (u->protocol && strcmp(u->protocol, protocol_names[0]) && strcmp(u->protocol, protocol_names[1]))
        cfg_error(c->err, map, "%s.protocol must be postgres or mysql", section);
    if (u->password_file && u->password_env)
        cfg_error(c->err, map, "%s: give password_file or password_env, not both", section);
    char err[512];
    if (u->password_file && !config_read_secret_file(u->password_file, &u->password, err, sizeof err))
        cfg_error(c->err, map, "%s: %s", section, err);
    if (u->password_env) {
        const char *v = getenv(u->password_env);
        if (!v || !*v)
            cfg_error(c->err, map, "%s: environment variable %s is not set", section, u->password_env);
        else
            u->password = strdup(v);
    }
    if (u->tls_mode >= UPSTREAM_TLS_VERIFY_CA && !u->tls_ca_file)
        cfg_error(c->err, map, "%s: tls %s needs tls_ca_file", section, tls_mode_names[u->tls_mode]);
}

static void load_role_classes(cfg_ctx *c, cfg_role *r, const yaml_node_t *map)
{
    static const char *const rules[] = {"deny", "hold", "allow", NULL};
    /* An agent role reads and sets session state; everything else must be granted. */
    for (int i = 0; i < SQLP_CLASS_COUNT; i++)
        r->policy.classes[i] = SQLP_CLASS_DENY;
    r->policy.classes[SQLP_CLASS_READ] = SQLP_CLASS_ALLOW;
    r->policy.classes[SQLP_CLASS_SESSION] = SQLP_CLASS_ALLOW;
    if (!map)
        return;
    if (map->type != YAML_MAPPING_NODE) {
        cfg_error(c->err, map, "roles.%s.classes must be a mapping of class: allow|hold|deny", r->name);
        return;
    }
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node_at(c, p->key);
        const char *cls = scalar(k), *rule = scalar(node_at(c, p->value));
        sqlp_class sc;
        if (!cls || !sqlp_class_from_name(cls, &sc)) {
            cfg_error(c->err, k, "roles.%s.classes: unknown statement class \"%s\"", r->name, cls ? cls : "?");
            continue;
        }
        int i;
        for (i = 0; rules[i]; i++)
            if (rule && strcmp(rule, rules[i]) == 0)
                break;
        if (!rules[i])
            cfg_error(c->err, k, "roles.%s.classes.%s must be allow, hold or deny", r->name, cls);
        else
            r->policy.classes[sc] = (sqlp_class_rule)i;
    }
}

/* "500ms", "2s", "30m", "1h", "1d" or plain seconds. */
static bool parse_duration_ms(const char *s, int64_t *ms)
{
    static const struct { const char *unit; int64_t ms; } units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}, {"", 1000},
    };
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno || v < 0)
        return false;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(end, units[i].unit) == 0) {
            if (v > INT64_MAX / units[i].ms)
                return false;
            *ms = v * units[i].ms;
            return true;
        }
    return false;
}

/* estimate_row_limit: N and phi_row_budget: {rows: N, window: 1h} (gate/min_necessary.h). */
static void load_role_minnec(cfg_ctx *c, cfg_role *r, const yaml_node_t *map)
{
    minnec_limits *l = &r->minnec;
    l->estimate_row_limit = -1;
    const yaml_node_t *lim = map_get(c, map, "estimate_row_limit");
    int64_t v;
    if (lim && (!scalar(lim) || !parse_int64(scalar(lim), &v) || v < 0))
        cfg_error(c->err, lim, "roles.%s.estimate_row_limit must be a number of rows >= 0", r->name);
    else if (lim)
        l->estimate_row_limit = v;
    const yaml_node_t *b = map_get(c, map, "phi_row_budget");
    if (!b)
        return;
    if (b->type != YAML_MAPPING_NODE) {
        cfg_error(c->err, b, "roles.%s.phi_row_budget must be a mapping {rows: N, window: 1h}", r->name);
        return;
    }
    for (yaml_node_pair_t *p = b->data.mapping.pairs.start; p < b->data.mapping.pairs.top; p++) {
        const char *key = scalar(node_at(c, p->key));
        if (!key || (strcmp(key, "rows") != 0 && strcmp(key, "window") != 0))
            cfg_error(c->err, node_at(c, p->key), "unknown setting \"%s\" in roles.%s.phi_row_budget",
                      key ? key : "?", r->name);
    }
    const yaml_node_t *rows = map_get(c, b, "rows"), *win = map_get(c, b, "window");
    if (!rows || !scalar(rows) || !parse_int64(scalar(rows), &v) || v < 1)
        cfg_error(c->err, rows ? rows : b, "roles.%s.phi_row_budget.rows must be a number of rows >= 1", r->name);
    else
        l->budget_rows = (uint64_t)v;
    if (!win || !scalar(win) || !parse_duration_ms(scalar(win), &v) || v < 1000 || v > MINNEC_MAX_WINDOW_MS)
        cfg_error(c->err, win ? win : b,
                  "roles.%s.phi_row_budget.window must be a duration from 1s to 7d (e.g. 30s, 15m, 1h)", r->name);
    else
        l->budget_window_ms = (uint32_t)v;
}

static void load_role(cfg_ctx *c, cfg_role *r, const char *name, const yaml_node_t *map)
{
    r->name = strdup(name);
    r->policy.name = r->name;
    r->policy.unscoped_row_limit = 100;
    r->minnec.estimate_row_limit = -1;
    if (!map || map->type != YAML_MAPPING_NODE) {
        cfg_error(c->err, map, "roles.%s must be a mapping", name);
        r->upstreams = calloc(1, sizeof(char *));
        return;
    }
    static const char *const known[] = {"upstreams", "classes", "unscoped_row_limit", "masking_profile",
                                        "functions_allow", "functions_deny", "unmasked",
                                        "estimate_row_limit", "phi_row_budget", NULL};
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node_at(c, p->key);
        const char *key = scalar(k);
        int i;
        for (i = 0; known[i]; i++)
            if (key && strcmp(key, known[i]) == 0)
                break;
        if (!known[i])
            cfg_error(c->err, k, "unknown setting \"%s\" in roles.%s", key ? key : "?", name);
    }
    r->upstreams = string_list(c, map_get(c, map, "upstreams"), "upstreams");
    load_role_classes(c, r, map_get(c, map, "classes"));
    const char *limit = scalar(map_get(c, map, "unscoped_row_limit"));
    int64_t v;
    if (limit && (!parse_int64(limit, &v) || v < 0))
        cfg_error(c->err, map_get(c, map, "unscoped_row_limit"), "roles.%s.unscoped_row_limit must be >= 0", name);
    else if (limit)
        r->policy.unscoped_row_limit = (uint64_t)v;
    const char *profile = scalar(map_get(c, map, "masking_profile"));
    r->policy.masking_profile = strdup(profile ? profile : "safe_harbor");
    yaml_node_t *allow = map_get(c, map, "functions_allow"), *deny = map_get(c, map, "functions_deny");
    r->policy.function_allow = allow ? string_list(c, allow, "functions_allow") : NULL;
    r->policy.function_deny = deny ? string_list(c, deny, "functions_deny") : NULL;
    const char *unmasked = scalar(map_get(c, map, "unmasked"));
    if (unmasked && !parse_bool(unmasked, &r->policy.unmasked))
        cfg_error(c->err, map_get(c, map, "unmasked"), "roles.%s.unmasked must be true or false", name);
    load_role_minnec(c, r, map);
}

/* "*<40 hex>" or "<40 hex>": MySQL's authentication_string of mysql_native_password. */
static bool parse_native_hash(const char *text, uint8_t out[20])
{
    if (*text == '*')
        text++;
    if (strlen(text) != 40)
        return false;
    for (int i = 0; i < 40; i++) {
        char ch = text[i];
        int v = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
              : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
        if (v < 0)
            return false;
        out[i / 2] = (uint8_t)(i % 2 ? out[i / 2] | v : v << 4);
    }
    return true;
}

static void load_identity(cfg_ctx *c, cfg_identity *id, const char *name, const yaml_node_t *map)
{
    id->name = strdup(name);
    char section[160];
    snprintf(section, sizeof section, "identities.%s", name);
    apply_defaults(c, identity_fields, NFIELDS(identity_fields), id);
    apply_mapping(c, map, identity_fields, NFIELDS(identity_fields), id, section);
    if (id->oidc_issuer_name) {
        if (id->secret)
            cfg_error(c->err, map, "%s: give exactly one of scram (a SCRAM verifier) or oidc_issuer (token login)",
                      section);
        if (config_identity_needs_cert(id))
            cfg_error(c->err, map, "%s: oidc_issuer (token login) and auth: cert are exclusive", section);
        if (id->mysql_native)
            cfg_error(c->err, map, "%s: mysql_native is a password verifier; a token identity has none", section);
    } else if (config_identity_needs_scram(id) && !id->secret) {
        cfg_error(c->err, map,
                  "%s: missing required setting \"scram\" (or log in with a certificate: auth: cert, or a token: "
                  "oidc_issuer)", section);
    } else if (!config_identity_needs_scram(id) && id->secret) {
        cfg_error(c->err, map, "%s: auth: cert takes no scram verifier (use auth: cert+scram for both)", section);
    }
    if (!id->cert_name)
        id->cert_name = strdup(name);
    if (id->secret && !scram_verifier_parse(id->secret, &id->verifier))
        cfg_error(c->err, map,
                  "%s.scram is not a SCRAM-SHA-256 verifier (make one with `phigatectl scram-verifier`)", section);
    if (id->mysql_native) {
        id->has_mysql_native = parse_native_hash(id->mysql_native, id->mysql_native_hash);
        if (!id->has_mysql_native)
            cfg_error(c->err, map,
                      "%s.mysql_native must be 40 hex digits, SHA1(SHA1(password)) "
                      "(MariaDB: SELECT PASSWORD('...') without the leading '*')", section);
    }
}

/* Approver names travel in HTTP Basic credentials and HTML: keep them plain. */
static bool approver_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
              (name[i] >= '0' && name[i] <= '9') || strchr("._@-", name[i])))
            return false;
    return true;
}

static void load_approver(cfg_ctx *c, cfg_approver *ap, const char *name, const yaml_node_t *map)
{
    ap->name = strdup(name);
    char section[160];
    snprintf(section, sizeof section, "approvers.%s", name);
    if (!approver_name_ok(name))
        cfg_error(c->err, map, "%s: an approver name is 1..64 letters, digits, '.', '_', '@' or '-'", section);
    apply_mapping(c, map, approver_fields, NFIELDS(approver_fields), ap, section);
    if (ap->secret && !scram_verifier_parse(ap->secret, &ap->verifier))
        cfg_error(c->err, map,
                  "%s.scram is not a SCRAM-SHA-256 verifier (make one with `phigatectl scram-verifier`)", section);
}

/* Algorithm names into flags; "none" and the HMAC family are named in the error
 * because choosing them would let anyone (or anyone with the public key) sign. */
static unsigned oidc_algorithms(cfg_ctx *c, char **names, const yaml_node_t *at, const char *section)
{
    unsigned algs = 0;
    for (char **a = names; a && *a; a++) {
        jwt_alg alg;
        if (jwt_alg_from_name(*a, &alg))
            algs |= alg;
        else
            cfg_error(c->err, at, "%s.algorithms: \"%s\" is not supported (RS256, ES256 or EdDSA only)", section, *a);
    }
    if (!algs)
        cfg_error(c->err, at, "%s.algorithms: at least one of RS256, ES256, EdDSA is needed", section);
    return algs;
}

static void load_oidc_issuer(cfg_ctx *c, cfg_oidc_issuer *o, const char *name, const yaml_node_t *map)
{
    o->name = strdup(name);
    char section[160], err[512];
    snprintf(section, sizeof section, "oidc.%s", name);
    apply_defaults(c, oidc_fields, NFIELDS(oidc_fields), o);
    apply_mapping(c, map, oidc_fields, NFIELDS(oidc_fields), o, section);
    o->algs = oidc_algorithms(c, o->algorithms, map, section);
    if ((o->jwks_file != NULL) == (o->jwks_uri != NULL))
        cfg_error(c->err, map, "%s: give exactly one of jwks_file or jwks_uri", section);
    if (o->jwks_uri && strncmp(o->jwks_uri, "https://", 8) != 0)
        cfg_error(c->err, map, "%s.jwks_uri must be an https:// URL", section);
    if (o->ca_file && access(o->ca_file, R_OK) != 0)
        cfg_error(c->err, map, "%s.ca_file %s is not readable: %s", section, o->ca_file, strerror(errno));
    /* Keys from a file are checked now, so --check-config catches a bad file. */
    jwks *ks = o->jwks_file ? jwks_load_file(o->jwks_file, (size_t)o->max_jwks_bytes, err, sizeof err) : NULL;
    if (o->jwks_file && !ks)
        cfg_error(c->err, map, "%s.jwks_file: %s", section, err);
    jwks_free(ks);
}

/* A mapping of name -> entry, loaded by fn into an array of elem_size entries. */
static void *load_named(cfg_ctx *c, const yaml_node_t *map, const char *section, size_t elem_size, size_t *count,
                        void (*fn)(cfg_ctx *, void *, const char *, const yaml_node_t *))
{
    *count = 0;
    if (!map)
        return NULL;
    if (map->type != YAML_MAPPING_NODE) {
        cfg_error(c->err, map, "%s must be a mapping of name: settings", section);
        return NULL;
    }
    size_t n = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
    char *arr = calloc(n ? n : 1, elem_size);
    for (size_t i = 0; i < n; i++) {
        yaml_node_pair_t *p = map->data.mapping.pairs.start + i;
        const char *name = scalar(node_at(c, p->key));
        if (!name || !*name) {
            cfg_error(c->err, node_at(c, p->key), "%s: entry names must be plain text", section);
            name = "?";
        }
        fn(c, arr + i * elem_size, name, node_at(c, p->value));
    }
    *count = n;
    return arr;
}

static void upstream_cb(cfg_ctx *c, void *e, const char *n, const yaml_node_t *m) { load_upstream(c, e, n, m); }
static void approver_cb(cfg_ctx *c, void *e, const char *n, const yaml_node_t *m) { load_approver(c, e, n, m); }
static void role_cb(cfg_ctx *c, void *e, const char *n, const yaml_node_t *m) { load_role(c, e, n, m); }
static void identity_cb(cfg_ctx *c, void *e, const char *n, const yaml_node_t *m) { load_identity(c, e, n, m); }
static void oidc_cb(cfg_ctx *c, void *e, const char *n, const yaml_node_t *m) { load_oidc_issuer(c, e, n, m); }

/* The Redis password: from a 0600 file or the environment, never the YAML itself. */
static void load_redis_secret(cfg_ctx *c, config *cfg, const yaml_node_t *at)
{
    char err[512];
    if (cfg->redis_password_file && cfg->redis_password_env)
        cfg_error(c->err, at, "redis: give password_file or password_env, not both");
    else if (cfg->redis_password_file &&
             !config_read_secret_file(cfg->redis_password_file, &cfg->redis_password, err, sizeof err))
        cfg_error(c->err, at, "redis: %s", err);
    else if (cfg->redis_password_env) {
        const char *v = getenv(cfg->redis_password_env);
        if (!v || !*v)
            cfg_error(c->err, at, "redis: environment variable %s is not set", cfg->redis_password_env);
        else
            cfg->redis_password = strdup(v);
    }
    const char *p = cfg->redis_key_prefix;
    if (!p || !*p || strlen(p) > 64 || strpbrk(p, " \t\r\n*?[]"))
        cfg_error(c->err, at, "redis.key_prefix must be 1..64 characters without spaces or glob characters");
}

/* The approval sections: optional, but consistent with each other when present. */
static void load_approval_sections(cfg_ctx *c, config *cfg, yaml_node_t *root)
{
    yaml_node_t *redis = map_get(c, root, "redis"), *appr = map_get(c, root, "approvals");
    yaml_node_t *admin = map_get(c, root, "admin");
    if (redis) {
        cfg->redis_enabled = true;
        apply_mapping(c, redis, redis_fields, NFIELDS(redis_fields), cfg, "redis");
        load_redis_secret(c, cfg, redis);
    }
    if (appr) {
        apply_mapping(c, appr, approvals_fields, NFIELDS(approvals_fields), cfg, "approvals");
        if (!redis)
            cfg_error(c->err, appr, "approvals: the approval queue lives in Redis; add a redis: section");
    }
    if (admin) {
        cfg->admin_enabled = true;
        apply_mapping(c, admin, admin_fields, NFIELDS(admin_fields), cfg, "admin");
        if ((cfg->admin_cert_file == NULL) != (cfg->admin_key_file == NULL))
            cfg_error(c->err, admin, "admin: cert_file and key_file go together");
        if (!redis)
            cfg_error(c->err, admin, "admin: the console decides requests kept in Redis; add a redis: section");
    }
    cfg->approvers = load_named(c, map_get(c, root, "approvers"), "approvers", sizeof(cfg_approver),
                                &cfg->napprovers, approver_cb);
    if (admin && cfg->napprovers == 0)
        cfg_error(c->err, admin, "admin: no approvers configured (add an approvers: section)");
}

/* Token identities: a known issuer, a role from config or from the token, and TLS to send the token over. */
static void check_oidc_references(cfg_ctx *c, config *cfg, const yaml_node_t *root)
{
    const yaml_node_t *ids = map_get(c, root, "identities"), *oidc = map_get(c, root, "oidc");
    for (size_t i = 0; i < cfg->noidc_issuers; i++)
        for (char **r = cfg->oidc_issuers[i].allowed_roles; r && *r; r++)
            if (!config_find_role(cfg, *r))
                cfg_error(c->err, oidc, "oidc.%s.allowed_roles names unknown role \"%s\"",
                          cfg->oidc_issuers[i].name, *r);
    for (size_t i = 0; i < cfg->nidentities; i++) {
        cfg_identity *id = &cfg->identities[i];
        if (!id->oidc_issuer_name) {
            if (!id->role_name)
                cfg_error(c->err, ids, "identities.%s: missing required setting \"role\"", id->name);
            continue;
        }
        for (size_t k = 0; k < cfg->noidc_issuers; k++)
            if (strcmp(cfg->oidc_issuers[k].name, id->oidc_issuer_name) == 0)
                id->oidc = &cfg->oidc_issuers[k];
        if (!id->oidc)
            cfg_error(c->err, ids, "identities.%s names unknown oidc issuer \"%s\"", id->name, id->oidc_issuer_name);
        else if (!id->role_name && !id->oidc->role_claim)
            cfg_error(c->err, ids, "identities.%s: give a role, or a role_claim on oidc.%s", id->name, id->oidc->name);
        if (!cfg->tls_cert_file)
            cfg_error(c->err, ids, "identities.%s logs in with a token, which is only accepted over TLS: "
                      "configure tls.cert_file and tls.key_file", id->name);
    }
}

/* Certificate logins need a CA to check against, and TLS to carry the certificate. */
static void check_client_cert_settings(cfg_ctx *c, config *cfg, const yaml_node_t *root)
{
    const yaml_node_t *tls = map_get(c, root, "tls");
    if (cfg->tls_client_ca_file && !cfg->tls_cert_file)
        cfg_error(c->err, tls, "tls.client_ca_file needs cert_file/key_file (certificates travel over TLS)");
    if (cfg->tls_client_crl_file && !cfg->tls_client_ca_file)
        cfg_error(c->err, tls, "tls.client_crl_file needs tls.client_ca_file");
    for (size_t i = 0; i < cfg->nidentities; i++)
        if (config_identity_needs_cert(&cfg->identities[i]) && !cfg->tls_client_ca_file)
            cfg_error(c->err, map_get(c, root, "identities"),
                      "identities.%s logs in with a certificate but tls.client_ca_file is not set",
                      cfg->identities[i].name);
}

static void check_references(cfg_ctx *c, config *cfg, const yaml_node_t *root)
{
    check_oidc_references(c, cfg, root);
    for (size_t i = 0; i < cfg->nroles; i++)
        if (cfg->roles[i].minnec.budget_rows > 0 && !cfg->redis_enabled)
            cfg_error(c->err, map_get(c, root, "roles"),
                      "roles.%s.phi_row_budget: budgets are counted in Redis; add a redis: section",
                      cfg->roles[i].name);
        else if (cfg->roles[i].minnec.budget_rows > 0 && !cfg->audit_enabled)
            cfg_error(c->err, map_get(c, root, "roles"),
                      "roles.%s.phi_row_budget: rows are counted by the audit log's result tracking; "
                      "a budget needs audit enabled", cfg->roles[i].name);
    for (size_t i = 0; i < cfg->nroles; i++)
        for (char **u = cfg->roles[i].upstreams; u && *u; u++)
            if (!config_find_upstream(cfg, *u))
                cfg_error(c->err, map_get(c, root, "roles"), "roles.%s names unknown upstream \"%s\"",
                          cfg->roles[i].name, *u);
    for (size_t i = 0; i < cfg->nidentities; i++) {
        cfg_identity *id = &cfg->identities[i];
        for (size_t r = 0; r < cfg->nroles && id->role_name; r++)
            if (strcmp(cfg->roles[r].name, id->role_name) == 0)
                id->role = &cfg->roles[r];
        if (id->role_name && !id->role)
            cfg_error(c->err, map_get(c, root, "identities"), "identities.%s names unknown role \"%s\"", id->name,
                      id->role_name);
    }
    if ((cfg->tls_cert_file == NULL) != (cfg->tls_key_file == NULL))
        cfg_error(c->err, map_get(c, root, "tls"), "tls: cert_file and key_file go together");
    if (cfg->tls_required && !cfg->tls_cert_file)
        cfg_error(c->err, map_get(c, root, "tls"), "tls.require is true but no cert_file/key_file is given");
    check_client_cert_settings(c, cfg, root);
    if (cfg->nupstreams == 0)
        cfg_error(c->err, root, "no upstreams configured");
    for (size_t i = 0; i < cfg->nupstreams; i++)
        for (size_t j = i + 1; j < cfg->nupstreams; j++)
            if (!strcmp(cfg->upstreams[i].protocol, cfg->upstreams[j].protocol) &&
                !strcmp(cfg->upstreams[i].client_database, cfg->upstreams[j].client_database))
                cfg_error(c->err, map_get(c, root, "upstreams"),
                          "upstreams %s and %s both serve %s database \"%s\" (client_database)",
                          cfg->upstreams[i].name, cfg->upstreams[j].name, cfg->upstreams[i].protocol,
                          cfg->upstreams[i].client_database);
}

static void load_root(cfg_ctx *c, config *cfg, yaml_node_t *root)
{
    static const char *const sections[] = {"phigate", "listen", "tls", "limits", "audit", "upstreams", "roles",
                                           "identities", "redis", "approvals", "admin", "approvers", "oidc", NULL};
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node_at(c, p->key);
        const char *key = scalar(k);
        int i;
        for (i = 0; sections[i]; i++)
            if (key && strcmp(key, sections[i]) == 0)
                break;
        if (!sections[i])
            cfg_error(c->err, k, "unknown section \"%s\"", key ? key : "?");
    }
    yaml_node_t *n;
    if ((n = map_get(c, root, "phigate")))
        apply_mapping(c, n, daemon_fields, NFIELDS(daemon_fields), cfg, "phigate");
    yaml_node_t *listen = map_get(c, root, "listen");
    if ((n = map_get(c, listen, "postgres")))
        apply_mapping(c, n, pg_listener_fields, NFIELDS(pg_listener_fields), cfg, "listen.postgres");
    if ((n = map_get(c, listen, "mysql"))) {
        cfg->my_enabled = true;
        apply_defaults(c, my_listener_fields, NFIELDS(my_listener_fields), cfg);
        apply_mapping(c, n, my_listener_fields, NFIELDS(my_listener_fields), cfg, "listen.mysql");
    }
    if ((n = map_get(c, root, "tls")))
        apply_mapping(c, n, tls_fields, NFIELDS(tls_fields), cfg, "tls");
    if ((n = map_get(c, root, "limits")))
        apply_mapping(c, n, limit_fields, NFIELDS(limit_fields), cfg, "limits");
    if ((n = map_get(c, root, "audit")))
        apply_mapping(c, n, audit_fields, NFIELDS(audit_fields), cfg, "audit");
    /* The audit log is on unless switched off by name: no silent "no evidence". */
    if (cfg->audit_enabled && (!cfg->audit_dir || !cfg->audit_key_file))
        cfg_error(c->err, n ? n : root,
                  "audit: dir and key_file are required (phigatectl audit keygen makes a key), "
                  "or set audit.enabled: false");
    cfg->upstreams = load_named(c, map_get(c, root, "upstreams"), "upstreams", sizeof(cfg_upstream),
                                &cfg->nupstreams, upstream_cb);
    cfg->roles = load_named(c, map_get(c, root, "roles"), "roles", sizeof(cfg_role), &cfg->nroles, role_cb);
    cfg->identities = load_named(c, map_get(c, root, "identities"), "identities", sizeof(cfg_identity),
                                 &cfg->nidentities, identity_cb);
    cfg->oidc_issuers = load_named(c, map_get(c, root, "oidc"), "oidc", sizeof(cfg_oidc_issuer),
                                   &cfg->noidc_issuers, oidc_cb);
    load_approval_sections(c, cfg, root);
    check_references(c, cfg, root);
}

config *config_load(const char *path, char *errors, size_t errlen)
{
    cfg_errors err = {path, errors, errlen, 0, 0};
    errors[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) {
        cfg_error(&err, NULL, "cannot open: %s", strerror(errno));
        return NULL;
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(errors, errlen, "%s:%zu:%zu: YAML error: %s %s\n", path, parser.problem_mark.line + 1,
                 parser.problem_mark.column + 1, parser.problem ? parser.problem : "",
                 parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        fclose(f);
        return NULL;
    }
    config *cfg = calloc(1, sizeof *cfg);
    cfg->path = strdup(path);
    cfg_ctx c = {&doc, &err};
    apply_defaults(&c, daemon_fields, NFIELDS(daemon_fields), cfg);
    apply_defaults(&c, pg_listener_fields, NFIELDS(pg_listener_fields), cfg);
    apply_defaults(&c, tls_fields, NFIELDS(tls_fields), cfg);
    apply_defaults(&c, limit_fields, NFIELDS(limit_fields), cfg);
    apply_defaults(&c, audit_fields, NFIELDS(audit_fields), cfg);
    apply_defaults(&c, redis_fields, NFIELDS(redis_fields), cfg);
    apply_defaults(&c, approvals_fields, NFIELDS(approvals_fields), cfg);
    apply_defaults(&c, admin_fields, NFIELDS(admin_fields), cfg);
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || root->type != YAML_MAPPING_NODE)
        cfg_error(&err, root, "the configuration must be a mapping of sections");
    else
        load_root(&c, cfg, root);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    if (err.count > 0) {
        config_free(cfg);
        return NULL;
    }
    return cfg;
}

static void free_list(char **list)
{
    for (char **p = list; p && *p; p++)
        free(*p);
    free(list);
}

static void free_secret(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

void config_free(config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        cfg_upstream *u = &cfg->upstreams[i];
        free(u->name), free(u->protocol), free(u->host), free(u->database), free(u->user), free(u->client_database);
        free(u->password_file), free(u->password_env), free(u->tls_ca_file);
        free_secret(u->password);
    }
    for (size_t i = 0; i < cfg->nroles; i++) {
        cfg_role *r = &cfg->roles[i];
        free(r->name);
        free(r->policy.masking_profile);
        free_list(r->upstreams);
        free_list(r->policy.function_allow);
        free_list(r->policy.function_deny);
    }
    for (size_t i = 0; i < cfg->nidentities; i++) {
        free(cfg->identities[i].name), free(cfg->identities[i].role_name), free(cfg->identities[i].cert_name);
        free(cfg->identities[i].secret), free(cfg->identities[i].oidc_issuer_name);
        free(cfg->identities[i].mysql_native);
        explicit_bzero(cfg->identities[i].mysql_native_hash, sizeof cfg->identities[i].mysql_native_hash);
    }
    for (size_t i = 0; i < cfg->napprovers; i++)
        free(cfg->approvers[i].name), free(cfg->approvers[i].secret);
    free(cfg->approvers);
    for (size_t i = 0; i < cfg->noidc_issuers; i++) {
        cfg_oidc_issuer *o = &cfg->oidc_issuers[i];
        free(o->name), free(o->issuer), free(o->audience), free(o->jwks_file), free(o->jwks_uri), free(o->ca_file);
        free(o->identity_claim), free(o->role_claim);
        free_list(o->algorithms), free_list(o->allowed_roles);
    }
    free(cfg->oidc_issuers);
    free(cfg->redis_host), free(cfg->redis_password_file), free(cfg->redis_password_env);
    free_secret(cfg->redis_password);
    free(cfg->redis_key_prefix), free(cfg->admin_address), free(cfg->admin_cert_file), free(cfg->admin_key_file);
    free(cfg->upstreams), free(cfg->roles), free(cfg->identities);
    free(cfg->path), free(cfg->log_file), free(cfg->pid_file), free(cfg->masking_rules_dir);
    free(cfg->pg_address), free(cfg->my_address), free(cfg->tls_cert_file), free(cfg->tls_key_file);
    free(cfg->tls_client_ca_file), free(cfg->tls_client_crl_file);
    free(cfg->audit_dir), free(cfg->audit_key_file);
    free(cfg);
}

const cfg_upstream *config_find_upstream_for(const config *cfg, const char *protocol, const char *db)
{
    for (size_t i = 0; i < cfg->nupstreams; i++)
        if (strcmp(cfg->upstreams[i].protocol, protocol) == 0 && strcmp(cfg->upstreams[i].client_database, db) == 0)
            return &cfg->upstreams[i];
    return NULL;
}

const cfg_upstream *config_find_upstream(const config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nupstreams; i++)
        if (strcmp(cfg->upstreams[i].name, name) == 0)
            return &cfg->upstreams[i];
    return NULL;
}

const cfg_identity *config_find_identity(const config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nidentities; i++)
        if (strcmp(cfg->identities[i].name, name) == 0)
            return &cfg->identities[i];
    return NULL;
}

const cfg_approver *config_find_approver(const config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->napprovers; i++)
        if (strcmp(cfg->approvers[i].name, name) == 0)
            return &cfg->approvers[i];
    return NULL;
}

const cfg_role *config_find_role(const config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nroles; i++)
        if (strcmp(cfg->roles[i].name, name) == 0)
            return &cfg->roles[i];
    return NULL;
}

bool config_issuer_allows_role(const cfg_oidc_issuer *iss, const char *role)
{
    if (!iss->allowed_roles)
        return true;
    for (char **r = iss->allowed_roles; *r; r++)
        if (strcmp(*r, role) == 0)
            return true;
    return false;
}

bool config_role_allows_upstream(const cfg_role *role, const char *upstream)
{
    for (char **u = role->upstreams; u && *u; u++)
        if (strcmp(*u, upstream) == 0)
            return true;
    return false;
}

bool config_identity_needs_cert(const cfg_identity *id)
{
    return id->auth == IDENTITY_AUTH_CERT || id->auth == IDENTITY_AUTH_CERT_SCRAM;
}

bool config_identity_needs_scram(const cfg_identity *id)
{
    return id->auth == IDENTITY_AUTH_SCRAM || id->auth == IDENTITY_AUTH_CERT_SCRAM;
}
