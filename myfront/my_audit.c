/*
 * Audit records of the MySQL front: see my_audit.h.
 *
 * MySQL answers one command at a time, so one tracker follows the result of
 * the statement in flight: it opens with the statement record and closes when
 * the relay reaches the end of the response (after the last result set of a
 * multi-statement string).
 */
#include "myfront/my_audit.h"

#include <event2/buffer.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gate/conn.h"
#include "gate/log.h"
#include "myfront/my_session.h"

#define MAX_COLUMN_FACTS 64

typedef struct my_audit_state {
    bool open;               /* a statement's result is being tracked */
    uint64_t stmt;
    uint64_t started_ns;
    uint64_t rows, bytes;
    EVP_MD_CTX *db, *agent;
    char sqlstate[6];
    char *error;             /* error text as the agent got it */
} my_audit_state;

static audit_log *log_of(my_session *s) { return my_server_audit(s->server); }

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static const char *tls_version(my_session *s)
{
    SSL *ssl = s->client ? conn_ssl(s->client) : NULL;
    return ssl ? SSL_get_version(ssl) : NULL;
}

static my_audit_state *state_of(my_session *s)
{
    if (!s->audit) {
        s->audit = calloc(1, sizeof(my_audit_state));
        s->audit->db = EVP_MD_CTX_new();
        s->audit->agent = EVP_MD_CTX_new();
    }
    return s->audit;
}

/* ---- durability ------------------------------------------------------------------ */

static void on_durable(void *arg, bool ok)
{
    my_session *s = arg;
    s->audit_pending--;
    if (s->state == MYC_DEAD) {
        if (s->audit_pending == 0)
            my_session_requeue_free(s);
        return;
    }
    if (!ok) {
        const char *why = audit_log_failed_reason(log_of(s));
        my_session_log(s, LOG_LEVEL_ERROR, "audit record not written: %s", why ? why : "out of memory");
        /* The result is withheld: without its record it must not reach the agent. */
        my_session_fail(s, MY_ER_UNKNOWN_ERROR, "HY000",
                        "phigate could not write its audit log; the result is withheld (see phigate's log)");
        return;
    }
    if (s->audit_pending == 0 && s->state == MYC_ACTIVE) {
        my_relay_audit_released(s);
        my_session_flush(s);
    }
}

const char *my_audit_unavailable(my_session *s)
{
    return log_of(s) ? audit_log_failed_reason(log_of(s)) : NULL;
}

/* ---- session events ---------------------------------------------------------------- */

void my_audit_connect(my_session *s)
{
    if (!log_of(s))
        return;
    s->opened_ns = now_ns();
    audit_log_next_session(log_of(s), s->audit_session);
    audit_connect_info c = {s->audit_session, "mysql", s->client_addr, tls_version(s), s->user,
                            s->auth_method_name, s->up->name, s->role->name};
    audit_log_append(log_of(s), audit_rec_connect(&c), NULL, NULL);
}

void my_audit_auth_failure(my_session *s, const char *reason)
{
    if (!log_of(s))
        return;
    char session[AUDIT_SESSION_LEN];
    audit_log_next_session(log_of(s), session);
    audit_auth_failure_info a = {session, "mysql", s->client_addr, tls_version(s), s->user,
                                 s->auth_method_name ? s->auth_method_name : "mysql", reason};
    audit_log_append(log_of(s), audit_rec_auth_failure(&a), NULL, NULL);
}

void my_audit_disconnect(my_session *s, const char *why)
{
    if (!log_of(s) || !s->audit_session[0])
        return;
    if (s->audit && s->audit->open) {
        /* A response cut short by the close still gets its result record. */
        my_audit_error(s, "08S01", why, strlen(why));
        my_audit_end(s);
    }
    uint64_t dur = (now_ns() - s->opened_ns) / 1000;
    audit_log_append(log_of(s), audit_rec_disconnect(s->audit_session, why, s->statements, dur), NULL, NULL);
}

/* ---- statements ---------------------------------------------------------------------- */

void my_audit_param_token(my_session *s, const uint8_t *v, size_t len, char out[32])
{
    /* Keyed with the role's token key: equal values compare equal in the
     * evidence, no value is ever written. */
    uint8_t mac[32];
    unsigned int maclen = sizeof mac;
    const sqlp_role *role = &s->role->policy;
    HMAC(EVP_sha256(), role->token_key, sizeof role->token_key, v, len, mac, &maclen);
    strcpy(out, "hmac:");
    for (int i = 0; i < 8; i++)
        snprintf(out + 5 + 2 * i, 3, "%02x", mac[i]);
}

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

static void start_result(my_session *s)
{
    my_audit_state *st = state_of(s);
    st->open = true;
    st->stmt = s->statements;
    st->started_ns = now_ns();
    st->rows = st->bytes = 0;
    st->sqlstate[0] = '\0';
    free(st->error);
    st->error = NULL;
    EVP_DigestInit_ex(st->db, EVP_sha256(), NULL);
    EVP_DigestInit_ex(st->agent, EVP_sha256(), NULL);
}

void my_audit_statement(my_session *s, const char *sql, size_t len, const sqlp_decision *d, const char *reason,
                        const audit_param *params, size_t nparams)
{
    if (!log_of(s))
        return;
    audit_column cols[MAX_COLUMN_FACTS];
    size_t ncols = column_facts(d, cols, MAX_COLUMN_FACTS);
    s->statements++;
    const char *decision, *cls, *rule;
    const char *upstream = NULL;
    if (d) {
        bool sent = d->verdict == SQLP_ALLOW || d->verdict == SQLP_REWRITE;
        upstream = sent ? d->upstream_sql : NULL;
        decision = sqlp_verdict_name(d->verdict);
        cls = d->nstatements ? sqlp_class_name(d->statements[0].stmt_class) : NULL;
        rule = d->rule;
        reason = d->reason;
    } else {
        /* phigate's own decision on a command that is not SQL text (COM_INIT_DB). */
        decision = reason ? "deny" : "allow";
        cls = "session";
        rule = reason ? "myfront.database" : NULL;
        upstream = reason ? NULL : sql;
    }
    audit_statement_info info = {
        .session = s->audit_session,
        .stmt = s->statements,
        .received = sql,
        .received_len = len,
        .upstream = upstream,
        .upstream_len = upstream ? strlen(upstream) : 0,
        .params = params,
        .nparams = nparams,
        .decision = decision,
        .statement_class = cls,
        .rule = rule,
        .reason = reason,
        .columns = cols,
        .ncolumns = ncols,
    };
    s->audit_pending++;
    audit_log_append(log_of(s), audit_rec_statement(&info), on_durable, s);
    start_result(s);
}

/* ---- results -------------------------------------------------------------------------- */

bool my_audit_tracking(const my_session *s) { return s->audit && s->audit->open; }

static void hash_range(EVP_MD_CTX *ctx, struct evbuffer *b, size_t from, size_t len)
{
    struct evbuffer_iovec v[8];
    struct evbuffer_ptr at;
    evbuffer_ptr_set(b, &at, from, EVBUFFER_PTR_SET);
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

void my_audit_db_bytes(my_session *s, struct evbuffer *b, size_t from, size_t len)
{
    if (my_audit_tracking(s))
        hash_range(s->audit->db, b, from, len);
}

void my_audit_agent_bytes(my_session *s, struct evbuffer *b, size_t from, size_t len)
{
    if (!my_audit_tracking(s))
        return;
    hash_range(s->audit->agent, b, from, len);
    s->audit->bytes += len;
}

void my_audit_row(my_session *s)
{
    if (my_audit_tracking(s))
        s->audit->rows++;
}

void my_audit_error(my_session *s, const char *sqlstate, const char *msg, size_t len)
{
    if (!my_audit_tracking(s) || s->audit->sqlstate[0])
        return;
    snprintf(s->audit->sqlstate, sizeof s->audit->sqlstate, "%s", sqlstate);
    free(s->audit->error);
    s->audit->error = strndup(msg, len > 512 ? 512 : len);
}

void my_audit_end(my_session *s)
{
    if (!my_audit_tracking(s))
        return;
    my_audit_state *st = s->audit;
    uint8_t db[32], agent[32];
    unsigned int l;
    EVP_DigestFinal_ex(st->db, db, &l);
    EVP_DigestFinal_ex(st->agent, agent, &l);
    audit_result_info r = {
        .session = s->audit_session,
        .stmt = st->stmt,
        .rows = st->rows,
        .bytes = st->bytes,
        .agent_sha256 = agent,
        .db_sha256 = db,
        .duration_us = (now_ns() - st->started_ns) / 1000,
        .sqlstate = st->sqlstate[0] ? st->sqlstate : NULL,
        .error = st->error,
    };
    audit_log_append(log_of(s), audit_rec_result(&r), NULL, NULL);
    st->open = false;
    free(st->error);
    st->error = NULL;
}

void my_audit_session_free(my_session *s)
{
    my_audit_state *st = s->audit;
    if (!st)
        return;
    EVP_MD_CTX_free(st->db);
    EVP_MD_CTX_free(st->agent);
    free(st->error);
    free(st);
    s->audit = NULL;
}
