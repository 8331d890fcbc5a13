/*
 * One client session's audit records: see audit_session.h.
 */
#include "gate/audit_session.h"

#include <event2/buffer.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/limits.h"
#include "gate/min_necessary.h"

#define MAX_COLUMN_FACTS 64
#define MAX_TABLES 32
#define MAX_ERROR_TEXT 512

void audit_session_init(audit_session *as, audit_log *log, const char *protocol, audit_session_durable_fn durable,
                        void *owner)
{
    memset(as, 0, sizeof *as);
    as->log = log;
    as->protocol = protocol;
    as->durable = durable;
    as->owner = owner;
}

const char *audit_session_unavailable(const audit_session *as)
{
    return as->log ? audit_log_failed_reason(as->log) : NULL;
}

static void on_durable(void *arg, bool ok)
{
    audit_session *as = arg;
    as->pending--;
    as->durable(as->owner, ok);
}

static void append_waited(audit_session *as, audit_rec *rec)
{
    as->pending++;
    audit_log_append(as->log, rec, on_durable, as);
}

/* ---- session events --------------------------------------------------------------- */

void audit_session_connect(audit_session *as, const char *client_addr, const char *tls_version,
                           const char *identity, const char *auth_method, const char *database, const char *role)
{
    if (!as->log)
        return;
    as->opened_ns = limits_now_ns();
    audit_log_next_session(as->log, as->id);
    audit_connect_info c = {as->id, as->protocol, client_addr, tls_version, identity, auth_method, database, role};
    audit_log_append(as->log, audit_rec_connect(&c), NULL, NULL);
}

void audit_session_auth_failure(audit_session *as, const char *client_addr, const char *tls_version,
                                const char *user, const char *auth_method, const char *reason)
{
    if (!as->log)
        return;
    char session[AUDIT_SESSION_LEN];
    audit_log_next_session(as->log, session);
    audit_auth_failure_info a = {session, as->protocol, client_addr, tls_version, user, auth_method, reason};
    audit_log_append(as->log, audit_rec_auth_failure(&a), NULL, NULL);
}

void audit_session_disconnect(audit_session *as, const char *why)
{
    if (!as->log || !as->id[0])
        return;
    uint64_t dur = (limits_now_ns() - as->opened_ns) / 1000;
    audit_log_append(as->log, audit_rec_disconnect(as->id, why, as->statements, dur), NULL, NULL);
}

/* ---- statements ----------------------------------------------------------------------- */

static size_t column_facts(const sqlp_decision *d, audit_column *cols, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; d && i < d->nstatements; i++) {
        const sqlp_statement *st = &d->statements[i];
        for (size_t c = 0; c < st->ncolumns && n < max; c++)
            cols[n++] = (audit_column){st->columns[c].name, st->columns[c].mask};
    }
    return n;
}

/* Add the table of one "schema.table.column" source, once. */
static size_t add_table(const char *p, size_t len, char names[MAX_TABLES][128], size_t n)
{
    const char *dot2 = memrchr(p, '.', len);
    const char *dot1 = dot2 ? memrchr(p, '.', (size_t)(dot2 - p)) : NULL;
    if (!dot1 || n >= MAX_TABLES || (size_t)(dot2 - dot1 - 1) >= 128)
        return n;
    char t[128];
    snprintf(t, sizeof t, "%.*s", (int)(dot2 - dot1 - 1), dot1 + 1);
    for (size_t k = 0; k < n; k++)
        if (strcmp(names[k], t) == 0)
            return n;
    memcpy(names[n], t, sizeof t);
    return n + 1;
}

/* Base tables the output columns derive from (their lineage), for evidence
 * queries by table (phigatectl audit export --table). */
static size_t lineage_tables(const sqlp_decision *d, char names[MAX_TABLES][128])
{
    size_t n = 0;
    for (size_t i = 0; d && i < d->nstatements; i++) {
        for (size_t c = 0; c < d->statements[i].ncolumns; c++) {
            const char *p = d->statements[i].columns[c].sources;
            while (p && *p) {
                const char *end = strchr(p, ',');
                n = add_table(p, end ? (size_t)(end - p) : strlen(p), names, n);
                p = end ? end + 1 : NULL;
            }
        }
    }
    return n;
}

void audit_session_statement_info(audit_session *as, audit_statement_info *info)
{
    if (!as->log)
        return;
    info->session = as->id;
    info->stmt = ++as->statements;
    append_waited(as, audit_rec_statement(info));
}

void audit_session_statement(audit_session *as, const char *sql, size_t len, const sqlp_decision *d,
                             const audit_param *params, size_t nparams, const char *approval_id,
                             const minnec_outcome *mn)
{
    if (!as->log)
        return;
    audit_column cols[MAX_COLUMN_FACTS];
    size_t ncols = column_facts(d, cols, MAX_COLUMN_FACTS);
    char table_names[MAX_TABLES][128];
    const char *tables[MAX_TABLES];
    size_t ntables = lineage_tables(d, table_names);
    for (size_t i = 0; i < ntables; i++)
        tables[i] = table_names[i];
    /* A held statement that an approval released runs like an allowed one;
     * one the minimum-necessary checks held or refused did not run. */
    bool stopped = !approval_id && mn && mn->limits && (mn->refused || mn->verdict != MINNEC_RUN);
    bool sent = !stopped && (d->verdict == SQLP_ALLOW || d->verdict == SQLP_REWRITE || approval_id);
    const char *upstream = sent ? d->upstream_sql : NULL;
    bool rewritten = upstream && (strlen(upstream) != len || memcmp(upstream, sql, len) != 0);
    const char *decision = approval_id ? (rewritten ? "rewrite" : "allow") : sqlp_verdict_name(d->verdict);
    if (stopped)
        decision = mn->refused ? "deny" : "hold";
    audit_statement_info info = {
        .received = sql,
        .received_len = len,
        .upstream = upstream,
        .upstream_len = upstream ? strlen(upstream) : 0,
        .params = params,
        .nparams = nparams,
        .decision = decision,
        .statement_class = d->nstatements ? sqlp_class_name(d->statements[0].stmt_class) : NULL,
        .rule = stopped ? mn->rule : d->rule,
        .reason = stopped ? mn->reason : d->reason,
        .tables = tables,
        .ntables = ntables,
        .columns = cols,
        .ncolumns = ncols,
        .approval_id = approval_id,
        .min_necessary = mn,
    };
    audit_session_statement_info(as, &info);
}

void audit_session_approval(audit_session *as, const char *event, const char *request_id, const char *approver,
                            const char *reason, const char *fingerprint)
{
    if (!as->log)
        return;
    audit_approval_info a = {as->id, as->statements + 1, request_id, event, approver, reason, fingerprint};
    audit_log_append(as->log, audit_rec_approval(&a), NULL, NULL);
}

void audit_param_token(const sqlp_role *role, const uint8_t *v, size_t len, char out[AUDIT_PARAM_TOKEN_LEN])
{
    uint8_t mac[32];
    unsigned int maclen = sizeof mac;
    HMAC(EVP_sha256(), role->token_key, sizeof role->token_key, v, len, mac, &maclen);
    strcpy(out, "hmac:");
    for (int i = 0; i < 8; i++)
        snprintf(out + 5 + 2 * i, 3, "%02x", mac[i]);
}

/* ---- results ------------------------------------------------------------------------------ */

void audit_result_begin(audit_result *r, uint64_t stmt)
{
    if (!r->db) {
        r->db = EVP_MD_CTX_new();
        r->agent = EVP_MD_CTX_new();
    }
    r->stmt = stmt;
    r->started_ns = limits_now_ns();
    r->rows = r->bytes = 0;
    r->sqlstate[0] = '\0';
    free(r->error);
    r->error = NULL;
    EVP_DigestInit_ex(r->db, EVP_sha256(), NULL);
    EVP_DigestInit_ex(r->agent, EVP_sha256(), NULL);
}

static void hash_range(EVP_MD_CTX *ctx, struct evbuffer *b, const struct evbuffer_ptr *from, size_t len)
{
    struct evbuffer_iovec v[8];
    struct evbuffer_ptr at = *from;
    while (len > 0) {
        int n = evbuffer_peek(b, (ev_ssize_t)len, &at, v, 8);
        size_t done = 0;
        for (int i = 0; i < n && i < 8 && done < len; i++) {
            size_t take = v[i].iov_len < len - done ? v[i].iov_len : len - done;
            EVP_DigestUpdate(ctx, v[i].iov_base, take);
            done += take;
        }
        if (done == 0)
            return;
        len -= done;
        evbuffer_ptr_set(b, &at, done, EVBUFFER_PTR_ADD);
    }
}

void audit_result_db(audit_result *r, struct evbuffer *b, const struct evbuffer_ptr *from, size_t len)
{
    hash_range(r->db, b, from, len);
}

void audit_result_agent(audit_result *r, struct evbuffer *b, const struct evbuffer_ptr *from, size_t len)
{
    hash_range(r->agent, b, from, len);
    r->bytes += len;
}

void audit_result_error(audit_result *r, const char *sqlstate, const char *msg, size_t len)
{
    if (r->sqlstate[0])
        return;
    snprintf(r->sqlstate, sizeof r->sqlstate, "%s", sqlstate);
    if (msg)
        r->error = strndup(msg, len > MAX_ERROR_TEXT ? MAX_ERROR_TEXT : len);
}

void audit_result_finish(audit_session *as, audit_result *r, const char *error_override)
{
    uint8_t db[32], agent[32];
    unsigned int l;
    EVP_DigestFinal_ex(r->db, db, &l);
    EVP_DigestFinal_ex(r->agent, agent, &l);
    audit_result_info info = {
        .session = as->id,
        .stmt = r->stmt,
        .rows = r->rows,
        .bytes = r->bytes,
        .agent_sha256 = agent,
        .db_sha256 = db,
        .duration_us = (limits_now_ns() - r->started_ns) / 1000,
        .sqlstate = r->sqlstate[0] ? r->sqlstate : NULL,
        .error = error_override ? error_override : r->error,
    };
    audit_log_append(as->log, audit_rec_result(&info), NULL, NULL);
    free(r->error);
    r->error = NULL;
}

void audit_result_free(audit_result *r)
{
    EVP_MD_CTX_free(r->db);
    EVP_MD_CTX_free(r->agent);
    free(r->error);
    memset(r, 0, sizeof *r);
}
