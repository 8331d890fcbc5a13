/*
 * Record builder and the typed records the fronts write; see audit_log.h.
 */
#include <stdlib.h>
#include <string.h>

#include "gate/audit_internal.h"
#include "gate/min_necessary.h"

/* type first, session second: every reader finds them without a full parse
 * and lines stay greppable ("type":"statement","session":"17-3"). */
audit_rec *audit_rec_new(const char *type, const char *session)
{
    audit_rec *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    audit_buf_puts(&r->body, "\"type\":");
    audit_buf_json_str(&r->body, type, strlen(type));
    r->need_comma[0] = true;
    if (session)
        audit_rec_str(r, "session", session);
    return r;
}

void audit_rec_free(audit_rec *r)
{
    if (!r)
        return;
    audit_buf_free(&r->body);
    free(r);
}

/* Comma and key for the next member or element; false if the record is unusable. */
/* Misuse (a key inside an array, none inside an object) marks the record
 * rather than writing invalid JSON: the log would be unverifiable after it. */
static bool member(audit_rec *r, const char *key)
{
    if (!r || r->misuse || r->body.oom)
        return false;
    bool in_array = r->depth > 0 && r->closer[r->depth] == ']';
    if ((key == NULL) != in_array) { /* a key inside an array, or none in an object */
        r->misuse = true;
        return false;
    }
    if (r->need_comma[r->depth])
        audit_buf_putc(&r->body, ',');
    r->need_comma[r->depth] = true;
    if (key) {
        audit_buf_json_str(&r->body, key, strlen(key));
        audit_buf_putc(&r->body, ':');
    }
    return true;
}

void audit_rec_bytes(audit_rec *r, const char *key, const void *p, size_t n)
{
    if (!member(r, key))
        return;
    if (p)
        audit_buf_json_str(&r->body, p, n);
    else
        audit_buf_puts(&r->body, "null");
}

void audit_rec_str(audit_rec *r, const char *key, const char *s)
{
    audit_rec_bytes(r, key, s, s ? strlen(s) : 0);
}

/* Integers are written exactly; JSON readers that use doubles lose precision
 * past 2^53, so counters that big should be strings (none are today). */
void audit_rec_int(audit_rec *r, const char *key, int64_t v)
{
    if (member(r, key))
        audit_buf_printf(&r->body, "%lld", (long long)v);
}

void audit_rec_uint(audit_rec *r, const char *key, uint64_t v)
{
    if (member(r, key))
        audit_buf_printf(&r->body, "%llu", (unsigned long long)v);
}

void audit_rec_bool(audit_rec *r, const char *key, bool v)
{
    if (member(r, key))
        audit_buf_puts(&r->body, v ? "true" : "false");
}

/* Digests in lowercase hex: the same spelling as prev, one way to compare. */
void audit_rec_hex(audit_rec *r, const char *key, const void *p, size_t n)
{
    if (!member(r, key))
        return;
    if (!p) {
        audit_buf_puts(&r->body, "null");
        return;
    }
    audit_buf_putc(&r->body, '"');
    audit_buf_hex(&r->body, p, n);
    audit_buf_putc(&r->body, '"');
}

static void begin(audit_rec *r, const char *key, char open, char close)
{
    if (!member(r, key))
        return;
    if (r->depth == AUDIT_REC_MAX_DEPTH) {
        r->misuse = true;
        return;
    }
    audit_buf_putc(&r->body, open);
    r->depth++;
    r->closer[r->depth] = close;
    r->need_comma[r->depth] = false;
}

void audit_rec_begin_object(audit_rec *r, const char *key)
{
    begin(r, key, '{', '}');
}

void audit_rec_begin_array(audit_rec *r, const char *key)
{
    begin(r, key, '[', ']');
}

void audit_rec_end(audit_rec *r)
{
    if (!r || r->misuse)
        return;
    if (r->depth == 0) {
        r->misuse = true;
        return;
    }
    audit_buf_putc(&r->body, r->closer[r->depth]);
    r->depth--;
}

/* ---- typed records ---------------------------------------------------- */

/* Fields that are NULL are left out rather than written as null: a reader
 * asks "was TLS used" with one lookup either way, and records stay short. */
static void opt_str(audit_rec *r, const char *key, const char *s)
{
    if (s)
        audit_rec_str(r, key, s);
}

audit_rec *audit_rec_connect(const audit_connect_info *c)
{
    audit_rec *r = audit_rec_new("connect", c->session);
    audit_rec_str(r, "protocol", c->protocol);
    audit_rec_str(r, "client", c->client_addr);
    audit_rec_str(r, "tls", c->tls_version); /* null, not absent: plaintext is a finding */
    audit_rec_str(r, "identity", c->identity);
    audit_rec_str(r, "auth", c->auth_method);
    opt_str(r, "database", c->database);
    opt_str(r, "role", c->role);
    return r;
}

audit_rec *audit_rec_auth_failure(const audit_auth_failure_info *a)
{
    audit_rec *r = audit_rec_new("auth_failure", a->session);
    audit_rec_str(r, "protocol", a->protocol);
    audit_rec_str(r, "client", a->client_addr);
    audit_rec_str(r, "tls", a->tls_version);
    audit_rec_str(r, "user", a->user);
    audit_rec_str(r, "auth", a->auth_method);
    audit_rec_str(r, "reason", a->reason);
    return r;
}

/* Positional, like $1..$n / ?: a NULL pointer is SQL NULL, distinct from an
 * empty string.  Values arrive masked: this layer cannot know what is PHI. */
static void statement_params(audit_rec *r, const audit_param *p, size_t n)
{
    if (!p)
        return;
    audit_rec_begin_array(r, "params");
    for (size_t i = 0; i < n; i++)
        audit_rec_bytes(r, NULL, p[i].p, p[i].len);
    audit_rec_end(r);
}

static void statement_columns(audit_rec *r, const audit_column *c, size_t n)
{
    if (!c)
        return;
    audit_rec_begin_array(r, "columns");
    for (size_t i = 0; i < n; i++) {
        audit_rec_begin_object(r, NULL);
        audit_rec_str(r, "name", c[i].name);
        audit_rec_str(r, "masking", c[i].masking);
        audit_rec_end(r);
    }
    audit_rec_end(r);
}

static void string_array(audit_rec *r, const char *key, const char *const *v, size_t n)
{
    if (!v)
        return;
    audit_rec_begin_array(r, key);
    for (size_t i = 0; i < n; i++)
        audit_rec_str(r, NULL, v[i]);
    audit_rec_end(r);
}

/* The minimum-necessary checks: what was estimated and counted, against which limits. */
static void statement_min_necessary(audit_rec *r, const minnec_outcome *o)
{
    if (!o || !o->limits)
        return;
    const minnec_limits *l = o->limits;
    const minnec_facts *f = &o->facts;
    audit_rec_begin_object(r, "min_necessary");
    if (f->estimated)
        audit_rec_uint(r, "estimate", f->estimate);
    else
        audit_rec_str(r, "no_estimate", f->no_estimate[0] ? f->no_estimate : "not estimated");
    if (l->estimate_row_limit >= 0)
        audit_rec_int(r, "estimate_limit", l->estimate_row_limit);
    if (l->budget_rows > 0) {
        audit_rec_uint(r, "budget", l->budget_rows);
        audit_rec_uint(r, "budget_window_s", (l->budget_window_ms + 999) / 1000);
        if (f->budget_known) {
            audit_rec_uint(r, "budget_used", f->used);
            audit_rec_uint(r, "budget_left", minnec_budget_remaining(l->budget_rows, f->used));
        }
    }
    audit_rec_str(r, "verdict", o->refused ? "refused" : o->verdict == MINNEC_RUN ? "run" : "hold");
    opt_str(r, "rule", o->rule);
    if (o->reason[0])
        audit_rec_str(r, "reason", o->reason);
    audit_rec_end(r);
}

audit_rec *audit_rec_statement(const audit_statement_info *s)
{
    audit_rec *r = audit_rec_new("statement", s->session);
    audit_rec_uint(r, "stmt", s->stmt); /* joins the result and approval records */
    audit_rec_bytes(r, "text", s->received ? s->received : "", s->received_len);
    audit_rec_bytes(r, "upstream", s->upstream, s->upstream_len); /* null: never reached the database */
    statement_params(r, s->params, s->nparams);
    audit_rec_str(r, "decision", s->decision);
    opt_str(r, "class", s->statement_class);
    opt_str(r, "rule", s->rule);
    opt_str(r, "reason", s->reason);
    string_array(r, "tables", s->tables, s->ntables);
    statement_columns(r, s->columns, s->ncolumns);
    opt_str(r, "approval", s->approval_id);
    statement_min_necessary(r, s->min_necessary);
    return r;
}

/* Both digests: agent_sha256 proves what the agent saw, db_sha256 what the
 * database returned, so an auditor can tell masking from tampering. */
audit_rec *audit_rec_result(const audit_result_info *x)
{
    audit_rec *r = audit_rec_new("result", x->session);
    audit_rec_uint(r, "stmt", x->stmt);
    audit_rec_uint(r, "rows", x->rows);
    audit_rec_uint(r, "bytes", x->bytes);
    audit_rec_hex(r, "agent_sha256", x->agent_sha256, 32);
    audit_rec_hex(r, "db_sha256", x->db_sha256, 32);
    audit_rec_uint(r, "duration_us", x->duration_us);
    opt_str(r, "sqlstate", x->sqlstate);
    opt_str(r, "error", x->error);
    return r;
}

audit_rec *audit_rec_approval(const audit_approval_info *a)
{
    audit_rec *r = audit_rec_new("approval", a->session);
    if (a->stmt) /* 0: an approval event not tied to a statement (e.g. expiry) */
        audit_rec_uint(r, "stmt", a->stmt);
    audit_rec_str(r, "approval", a->approval_id);
    audit_rec_str(r, "event", a->event);
    opt_str(r, "approver", a->approver);
    opt_str(r, "reason", a->reason);
    opt_str(r, "fingerprint", a->fingerprint);
    return r;
}

audit_rec *audit_rec_config_reload(const audit_reload_info *i)
{
    /* No session: a reload changes the rules for every new session at once. */
    audit_rec *r = audit_rec_new("config_reload", NULL);
    audit_rec_bool(r, "ok", i->ok);
    opt_str(r, "path", i->path);
    audit_rec_uint(r, "generation", i->generation);
    opt_str(r, "config_sha256", i->config_sha256);
    if (!i->ok)
        audit_rec_uint(r, "errors", i->errors);
    opt_str(r, "detail", i->detail);
    return r;
}

audit_rec *audit_rec_disconnect(const char *session, const char *reason, uint64_t statements,
                                uint64_t duration_us)
{
    audit_rec *r = audit_rec_new("disconnect", session);
    audit_rec_str(r, "reason", reason);
    audit_rec_uint(r, "statements", statements);
    audit_rec_uint(r, "duration_us", duration_us);
    return r;
}
