/*
 * Session lifecycle: the listener, accept, the state changes, and the one exit
 * path (pg_session_fail / pg_session_close).  Sessions are freed on a
 * just-freed list after the loop turn, never inside their own callbacks.
 */
#include "pgfront/pg_session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gate/conn.h"
#include "gate/limits.h"
#include "gate/listener.h"
#include "gate/log.h"
#include "gate/oidc.h"
#include "gate/tls.h"
#include "pgfront/pg_audit.h"
#include "pgfront/pg_engines.h"
#include "pgfront/pg_hold.h"
#include "pgfront/pg_minnec.h"
#include "pgfront/pg_policy.h"

struct pg_server {
    struct event_base *base;
    const config *cfg;
    SSL_CTX *tls_ctx;
    SSL_CTX **upstream_tls;              /* one per upstream, NULL when TLS is off */
    struct sockaddr_storage *upstream_addr;
    socklen_t *upstream_addrlen;
    pg_engines *engines;                 /* per upstream policy engines, loaded off the loop */
    struct evconnlistener *listener;
    struct event *reaper;
    struct audit_log *audit;
    identity_limits *limits;
    struct approvals *approvals;
    struct oidc *oidc;
    pg_session *dead;
    pg_session *all;
    size_t nsessions;
    uint64_t next_id;
    uint8_t mock_secret[32];
};

static const char *const pgc_names[] = {
#define PGC_NAME(s) #s,
    PGC_STATES(PGC_NAME)
#undef PGC_NAME
};
static const char *const pgu_names[] = {
#define PGU_NAME(s) #s,
    PGU_STATES(PGU_NAME)
#undef PGU_NAME
};

const char *pgc_state_name(pgc_state s) { return pgc_names[s]; }
const char *pgu_state_name(pgu_state s) { return pgu_names[s]; }

const config *pg_server_config(const pg_server *srv) { return srv->cfg; }
struct event_base *pg_server_base(const pg_server *srv) { return srv->base; }
const uint8_t *pg_server_mock_secret(const pg_server *srv) { return srv->mock_secret; }
size_t pg_server_session_count(const pg_server *srv) { return srv->nsessions; }

SSL_CTX *pg_server_upstream_tls(const pg_server *srv, int i) { return srv->upstream_tls[i]; }

pg_engines *pg_server_engines(const pg_server *srv) { return srv->engines; }

bool pg_server_upstream_addr(const pg_server *srv, int i, struct sockaddr_storage *ss, socklen_t *len)
{
    if (srv->upstream_addrlen[i] == 0)
        return false;
    *ss = srv->upstream_addr[i];
    *len = srv->upstream_addrlen[i];
    return true;
}

void pg_session_log(pg_session *s, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_msgv((log_level)level, s->prefix, fmt, ap);
    va_end(ap);
}

/* Impossible transitions are bugs: a DEAD session never comes back. */
void pg_session_set_state(pg_session *s, pgc_state st)
{
    if (s->state == PGC_DEAD) {
        log_error("[%s] BUG: state change %s on a dead session", s->prefix, pgc_state_name(st));
        abort();
    }
    pg_session_log(s, LOG_LEVEL_DEBUG, "client %s -> %s", pgc_state_name(s->state), pgc_state_name(st));
    s->state = st;
}

void pg_session_set_ustate(pg_session *s, pgu_state st)
{
    pg_session_log(s, LOG_LEVEL_DEBUG, "upstream %s -> %s", pgu_state_name(s->ustate), pgu_state_name(st));
    s->ustate = st;
}

bool pg_session_take_connection_slot(pg_session *s)
{
    s->limit_slot = limits_slot(s->server->limits, s->identity->name);
    if (!limits_acquire_connection(s->server->limits, s->limit_slot, s->identity->max_connections))
        return false;
    s->counted = true;
    return true;
}

bool pg_session_take_statement_token(pg_session *s)
{
    return limits_take_statement(s->server->limits, s->limit_slot, s->identity->statements_per_second,
                                 limits_now_ns());
}

static void session_free(pg_session *s)
{
    if (s->counted)
        limits_release_connection(s->server->limits, s->limit_slot);
    if (s->all_prev)
        s->all_prev->all_next = s->all_next;
    else
        s->server->all = s->all_next;
    if (s->all_next)
        s->all_next->all_prev = s->all_prev;
    pg_cancel_unregister(s);
    oidc_cancel(s->oidc_wait);
    pg_engines_forget(s->server->engines, s);
    pg_hold_free(s);
    pg_minnec_free(s);
    pg_relay_free(s);
    pg_audit_session_free(s);
    if (s->timer)
        event_free(s->timer);
    conn_free(s->client);
    conn_free(s->upstream);
    if (s->param_status)
        evbuffer_free(s->param_status);
    free(s->startup_copy);
    s->server->nsessions--;
    limits_release_client(s->server->limits);
    OPENSSL_cleanse(&s->scram, sizeof s->scram);
    free(s);
}

static void reaper_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    pg_server *srv = arg;
    while (srv->dead) {
        pg_session *s = srv->dead;
        srv->dead = s->next_dead;
        s->on_dead_list = false;
        /* Durable-callbacks still to come point at it: freed when the last one runs. */
        if (s->audit_pending == 0)
            session_free(s);
    }
}

static void queue_dead(pg_session *s)
{
    if (s->on_dead_list)
        return;
    s->on_dead_list = true;
    s->next_dead = s->server->dead;
    s->server->dead = s;
    event_active(s->server->reaper, EV_TIMEOUT, 0);
}

void pg_session_requeue_free(pg_session *s) { queue_dead(s); }

void pg_session_close(pg_session *s, const char *why)
{
    if (s->state == PGC_DEAD)
        return;
    pg_session_log(s, LOG_LEVEL_INFO, "closing: %s", why);
    pg_audit_disconnect(s, why);
    pg_session_set_state(s, PGC_DEAD);
    if (s->client)
        conn_read_disable(s->client);
    if (s->upstream)
        conn_read_disable(s->upstream);
    if (s->timer)
        event_del(s->timer);
    queue_dead(s);
}

/* Write both directions now: called once per event, after all messages of the
 * batch were moved, so one send carries them all. */
void pg_session_flush(pg_session *s)
{
    if (s->state == PGC_DEAD)
        return;
    if (s->upstream && conn_unsent(s->upstream))
        conn_flush(s->upstream);
    if (s->state != PGC_DEAD && s->client && conn_unsent(s->client))
        conn_flush(s->client);
}

static void close_when_flushed(pg_session *s)
{
    conn_flush(s->client);
    if (s->state == PGC_DEAD)
        return;
    if (conn_unsent(s->client) == 0) {
        pg_session_close(s, s->terminating ? "client sent Terminate" : "error sent");
        return;
    }
    if (++s->closing_polls > 500) { /* 5 s at 10 ms */
        pg_session_close(s, "client did not read its error");
        return;
    }
    pg_session_arm_timer(s, 10);
}

/* The one exit path that tells the client why: a FATAL ErrorResponse, flushed, then close. */
void pg_session_fail(pg_session *s, const char *sqlstate, const char *message, const char *hint)
{
    if (s->state == PGC_DEAD || s->state == PGC_CLOSING)
        return;
    pg_session_log(s, LOG_LEVEL_INFO, "refusing connection: %s (%s)", message, sqlstate);
    if (s->upstream)
        conn_read_disable(s->upstream);
    pg_session_set_state(s, PGC_CLOSING);
    pg_put_error(conn_output(s->client), "FATAL", sqlstate, message, NULL, hint);
    conn_read_disable(s->client);
    close_when_flushed(s);
}

void pg_session_finish(pg_session *s, const char *why)
{
    if (s->state == PGC_DEAD || s->state == PGC_CLOSING)
        return;
    pg_session_log(s, LOG_LEVEL_DEBUG, "finishing: %s", why);
    pg_session_set_state(s, PGC_CLOSING);
    conn_read_disable(s->client);
    if (s->upstream)
        conn_read_disable(s->upstream);
    close_when_flushed(s);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    pg_session *s = arg;
    if (s->state == PGC_CLOSING)
        close_when_flushed(s);
    else if (s->state == PGC_ACTIVE && s->terminating)
        pg_session_close(s, "the upstream did not close after Terminate");
    else if (s->state == PGC_CONNECTING)
        pg_session_fail(s, "08006", "timeout connecting to the upstream database", NULL);
    else if (s->state != PGC_ACTIVE)
        pg_session_fail(s, "08006", "authentication timeout", NULL);
}

void pg_session_arm_timer(pg_session *s, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(s->timer, &tv);
}

static void client_read_cb(conn *c, void *arg)
{
    (void)c;
    pg_session *s = arg;
    if (s->state == PGC_ACTIVE)
        pg_relay_client_data(s);
    else if (s->state < PGC_CONNECTING)
        pg_auth_on_client_data(s);
    pg_session_flush(s);
}

static void client_drain_cb(conn *c, void *arg)
{
    (void)c;
    pg_session *s = arg;
    if (s->state == PGC_ACTIVE) {
        pg_relay_client_drained(s);
        pg_session_flush(s);
    }
}

static void client_event_cb(conn *c, conn_event ev, void *arg)
{
    pg_session *s = arg;
    if (ev == CONN_CONNECTED) /* TLS handshake done: wait for the StartupMessage */
        return;
    if (s->state == PGC_CLOSING || s->state == PGC_DEAD) {
        pg_session_close(s, "client went away");
        return;
    }
    if (ev == CONN_ERROR)
        pg_session_log(s, LOG_LEVEL_INFO, "client connection error: %s", conn_error(c));
    pg_session_close(s, ev == CONN_EOF ? "client disconnected" : "client connection error");
}

void pg_session_client_callbacks(pg_session *s)
{
    conn_set_callbacks(s->client, client_read_cb, client_drain_cb, client_event_cb, s);
    conn_read_enable(s->client);
}

static void upstream_read_cb(conn *c, void *arg)
{
    (void)c;
    pg_session *s = arg;
    if (s->state == PGC_DEAD || s->state == PGC_CLOSING)
        return;
    pg_upstream_on_data(s);
    pg_session_flush(s);
}

static void upstream_drain_cb(conn *c, void *arg)
{
    (void)c;
    pg_session *s = arg;
    if (s->state == PGC_ACTIVE) {
        pg_relay_upstream_drained(s);
        pg_session_flush(s);
    }
}

static void upstream_event_cb(conn *c, conn_event ev, void *arg)
{
    (void)c;
    pg_session *s = arg;
    if (s->state == PGC_DEAD || s->state == PGC_CLOSING)
        return;
    pg_upstream_on_event(s, (int)ev);
    pg_session_flush(s);
}

void pg_session_upstream_callbacks(pg_session *s)
{
    conn_set_callbacks(s->upstream, upstream_read_cb, upstream_drain_cb, upstream_event_cb, s);
    conn_read_enable(s->upstream);
}

static void format_addr(const struct sockaddr *sa, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
    }
    snprintf(out, len, "%s:%d", host, port);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)l, (void)salen;
    pg_server *srv = arg;
    if (!limits_acquire_client(srv->limits, srv->cfg->max_clients)) {
        /* Too many clients: say so in protocol form, then close. */
        static const char msg[] = "phigate: too many client connections";
        log_warn("%s (max_clients=%d)", msg, srv->cfg->max_clients);
        struct evbuffer *b = evbuffer_new();
        pg_put_error(b, "FATAL", "53300", msg, NULL, NULL);
        evbuffer_write(b, fd);
        evbuffer_free(b);
        evutil_closesocket(fd);
        return;
    }
    pg_session *s = calloc(1, sizeof *s);
    s->server = srv;
    s->id = ++srv->next_id;
    s->txn_status = 'I';
    format_addr(sa, s->client_addr, sizeof s->client_addr);
    snprintf(s->prefix, sizeof s->prefix, "pg#%llu %s", (unsigned long long)s->id, s->client_addr);
    s->client = conn_new(srv->base, fd);
    s->timer = evtimer_new(srv->base, timer_cb, s);
    s->all_next = srv->all;
    if (srv->all)
        srv->all->all_prev = s;
    srv->all = s;
    srv->nsessions++;
    pg_session_log(s, LOG_LEVEL_DEBUG, "accepted");
    pg_session_client_callbacks(s);
    pg_session_arm_timer(s, srv->cfg->auth_timeout_ms);
}

static bool resolve_upstreams(pg_server *srv, char *err, size_t errlen)
{
    size_t n = srv->cfg->nupstreams;
    srv->upstream_addr = calloc(n ? n : 1, sizeof *srv->upstream_addr);
    srv->upstream_addrlen = calloc(n ? n : 1, sizeof *srv->upstream_addrlen);
    srv->upstream_tls = calloc(n ? n : 1, sizeof *srv->upstream_tls);
    for (size_t i = 0; i < n; i++) {
        const cfg_upstream *u = &srv->cfg->upstreams[i];
        if (strcmp(u->protocol, "postgres") != 0)
            continue;
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
        char port[16];
        snprintf(port, sizeof port, "%d", u->port);
        /* Resolved once at start: the loop never blocks on DNS per connection. */
        int rc = getaddrinfo(u->host, port, &hints, &res);
        if (rc != 0) {
            snprintf(err, errlen, "upstream %s: cannot resolve %s: %s", u->name, u->host, gai_strerror(rc));
            return false;
        }
        memcpy(&srv->upstream_addr[i], res->ai_addr, res->ai_addrlen);
        srv->upstream_addrlen[i] = res->ai_addrlen;
        freeaddrinfo(res);
        if (u->tls_mode != UPSTREAM_TLS_DISABLE) {
            int verify = u->tls_mode == UPSTREAM_TLS_VERIFY_FULL ? 2 : u->tls_mode == UPSTREAM_TLS_VERIFY_CA ? 1 : 0;
            srv->upstream_tls[i] = tls_client_ctx_new(verify, u->tls_ca_file, err, errlen);
            if (!srv->upstream_tls[i])
                return false;
        }
    }
    return true;
}

/* Everything but the listener: a reload builds the next server off to the side
 * and hands it the listener only when the whole new configuration is good. */
pg_server *pg_server_prepare(struct event_base *base, const config *cfg, struct audit_log *audit, char *err,
                             size_t errlen)
{
    pg_server *srv = calloc(1, sizeof *srv);
    srv->base = base;
    srv->audit = audit;
    srv->limits = limits_new(0); /* slots by identity name (limits_slot) */
    srv->cfg = cfg;
    if (RAND_bytes(srv->mock_secret, sizeof srv->mock_secret) != 1) {
        snprintf(err, errlen, "no randomness for the mock-authentication secret");
        pg_server_free(srv);
        return NULL;
    }
    if (!tls_front_ctx(cfg, &srv->tls_ctx, err, errlen)) {
        pg_server_free(srv);
        return NULL;
    }
    if (!resolve_upstreams(srv, err, errlen)) {
        pg_server_free(srv);
        return NULL;
    }
    srv->engines = pg_engines_new(base, cfg, pg_upstream_engine_ready);
    srv->reaper = event_new(base, -1, 0, reaper_cb, srv);
    return srv;
}

pg_server *pg_server_new(struct event_base *base, const config *cfg, struct audit_log *audit, char *err,
                         size_t errlen)
{
    char addr[128];
    pg_server *srv = pg_server_prepare(base, cfg, audit, err, errlen);
    if (!srv)
        return NULL;
    srv->listener = listener_open(base, cfg->pg_address, cfg->pg_port, "listen.postgres", accept_cb, srv, addr,
                                  sizeof addr, err, errlen);
    if (!srv->listener) {
        pg_server_free(srv);
        return NULL;
    }
    log_info("pgfront listening on %s%s", addr, srv->tls_ctx ? " (TLS available)" : "");
    return srv;
}

void pg_server_take_over(pg_server *next, pg_server *prev)
{
    /* The socket stays open: connections queued in it are accepted by next. */
    listener_hand_over(&prev->listener, &next->listener, accept_cb, next);
    /* Per-identity counts go on across the reload: they are keyed by name. */
    limits_free(next->limits);
    next->limits = limits_ref(prev->limits);
    next->approvals = prev->approvals;
    next->next_id = prev->next_id;
}

SSL_CTX *pg_server_tls_ctx(const pg_server *srv) { return srv->tls_ctx; }
struct audit_log *pg_server_audit(const pg_server *srv) { return srv->audit; }
struct approvals *pg_server_approvals(const pg_server *srv) { return srv->approvals; }
void pg_server_set_approvals(pg_server *srv, struct approvals *a) { srv->approvals = a; }
struct oidc *pg_server_oidc(const pg_server *srv) { return srv->oidc; }
void pg_server_set_oidc(pg_server *srv, struct oidc *o) { srv->oidc = o; }

void pg_server_shutdown(pg_server *srv)
{
    for (pg_session *s = srv->all; s; s = s->all_next)
        pg_session_close(s, "phigate is shutting down");
    if (srv->listener) {
        evconnlistener_free(srv->listener);
        srv->listener = NULL;
    }
}

void pg_server_free(pg_server *srv)
{
    if (!srv)
        return;
    if (srv->listener)
        evconnlistener_free(srv->listener);
    if (srv->reaper) {
        reaper_cb(-1, 0, srv);
        event_free(srv->reaper);
    }
    for (size_t i = 0; srv->upstream_tls && i < srv->cfg->nupstreams; i++)
        if (srv->upstream_tls[i])
            SSL_CTX_free(srv->upstream_tls[i]);
    free(srv->upstream_tls);
    limits_free(srv->limits);
    pg_engines_free(srv->engines);
    free(srv->upstream_addr);
    free(srv->upstream_addrlen);
    if (srv->tls_ctx)
        SSL_CTX_free(srv->tls_ctx);
    free(srv);
}
