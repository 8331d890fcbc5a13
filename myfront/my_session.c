/*
 * Session lifecycle of the MySQL front: the listener, accept, the state
 * changes, and the one exit path (my_session_fail / my_session_close).
 * Sessions are freed on a just-freed list after the loop turn, never inside
 * their own callbacks, and not before every audit callback aimed at them ran.
 */
#include "myfront/my_session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netdb.h>
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
#include "myfront/my_audit.h"
#include "myfront/my_policy.h"

/* Never advertised: compression (declined), LOCAL INFILE (refused), query
 * attributes and optional metadata (change packet layouts phigate parses),
 * IGNORE_SPACE (changes how the server parses), session tracking (phigate
 * keeps that to itself on the upstream side). */
#define MY_SERVER_CAPS \
    (MY_CAP(LONG_PASSWORD) | MY_CAP(FOUND_ROWS) | MY_CAP(LONG_FLAG) | MY_CAP(CONNECT_WITH_DB) | \
     MY_CAP(PROTOCOL_41) | MY_CAP(INTERACTIVE) | MY_CAP(TRANSACTIONS) | MY_CAP(SECURE_CONNECTION) | \
     MY_CAP(MULTI_STATEMENTS) | MY_CAP(MULTI_RESULTS) | MY_CAP(PS_MULTI_RESULTS) | MY_CAP(PLUGIN_AUTH) | \
     MY_CAP(CONNECT_ATTRS) | MY_CAP(PLUGIN_AUTH_LENENC_DATA) | MY_CAP(DEPRECATE_EOF))

#define DEFAULT_SERVER_VERSION "8.0.0"

struct my_server {
    struct event_base *base;
    const config *cfg;
    SSL_CTX *tls_ctx;
    SSL_CTX **upstream_tls;          /* per upstream, NULL when TLS is off */
    struct sockaddr_storage *upstream_addr;
    socklen_t *upstream_addrlen;
    sqlp_engine **engines;           /* per upstream; NULL until its catalog loads */
    struct evconnlistener *listener;
    struct event *reaper;
    struct audit_log *audit;
    struct oidc *oidc;
    identity_limits *limits;         /* per identity: connections and statement rate */
    my_session *dead;
    my_session *all;
    size_t nsessions;
    uint64_t next_id;
    uint32_t next_connection_id;
    uint8_t mock_secret[32];
    char version[128];               /* what the greeting says: the upstream's, marked as phigate */
};

static const char *const myc_names[] = {
#define MYC_NAME(s) #s,
    MYC_STATES(MYC_NAME)
#undef MYC_NAME
};
static const char *const myu_names[] = {
#define MYU_NAME(s) #s,
    MYU_STATES(MYU_NAME)
#undef MYU_NAME
};
static const char *const myr_names[] = {
#define MYR_NAME(s) #s,
    MYR_STATES(MYR_NAME)
#undef MYR_NAME
};

const char *myc_state_name(myc_state s) { return myc_names[s]; }
const char *myu_state_name(myu_state s) { return myu_names[s]; }
const char *myr_state_name(myr_state s) { return myr_names[s]; }

const config *my_server_config(const my_server *srv) { return srv->cfg; }
struct event_base *my_server_base(const my_server *srv) { return srv->base; }
SSL_CTX *my_server_tls_ctx(const my_server *srv) { return srv->tls_ctx; }
SSL_CTX *my_server_upstream_tls(const my_server *srv, int i) { return srv->upstream_tls[i]; }
const uint8_t *my_server_mock_secret(const my_server *srv) { return srv->mock_secret; }
struct oidc *my_server_oidc(const my_server *srv) { return srv->oidc; }
void my_server_set_oidc(my_server *srv, struct oidc *o) { srv->oidc = o; }
struct audit_log *my_server_audit(const my_server *srv) { return srv->audit; }
size_t my_server_session_count(const my_server *srv) { return srv->nsessions; }

uint32_t my_server_capabilities(const my_server *srv)
{
    return MY_SERVER_CAPS | (srv->tls_ctx ? MY_CAP(SSL) : 0);
}

bool my_server_upstream_addr(const my_server *srv, int i, struct sockaddr_storage *ss, socklen_t *len)
{
    if (srv->upstream_addrlen[i] == 0)
        return false;
    *ss = srv->upstream_addr[i];
    *len = srv->upstream_addrlen[i];
    return true;
}

/* Blocking, but only until one load succeeds (at start, or the first session
 * after an upstream that was down at start came back). */
sqlp_engine *my_server_engine(my_server *srv, int i, char *err, size_t errlen)
{
    if (!srv->engines[i]) {
        char version[96] = "";
        srv->engines[i] = my_policy_load_engine(srv->cfg, &srv->cfg->upstreams[i], version, sizeof version, err,
                                                errlen);
        if (!srv->engines[i])
            return NULL;
        log_info("policy catalog of MySQL upstream %s loaded (server %s)", srv->cfg->upstreams[i].name, version);
        /* MariaDB announces itself as "5.5.5-10.x-MariaDB" so clients that compare
         * versions do not take it for a MySQL 10; libmariadb strips that prefix. */
        if (!srv->version[0] && version[0])
            snprintf(srv->version, sizeof srv->version, "%s%s-phigate",
                     strstr(version, "MariaDB") && strncmp(version, "5.5.5-", 6) != 0 ? "5.5.5-" : "", version);
    }
    sqlp_engine_ref(srv->engines[i]);
    return srv->engines[i];
}

static void load_engines(my_server *srv)
{
    srv->engines = calloc(srv->cfg->nupstreams ? srv->cfg->nupstreams : 1, sizeof *srv->engines);
    for (size_t i = 0; i < srv->cfg->nupstreams; i++) {
        if (strcmp(srv->cfg->upstreams[i].protocol, "mysql") != 0)
            continue;
        char err[512];
        sqlp_engine *e = my_server_engine(srv, (int)i, err, sizeof err);
        if (e)
            sqlp_engine_unref(e);
        else
            log_error("%s; MySQL sessions for it are refused until it loads", err);
    }
    if (!srv->version[0])
        snprintf(srv->version, sizeof srv->version, "%s-phigate", DEFAULT_SERVER_VERSION);
}

const char *my_server_version(const my_server *srv) { return srv->version; }

static uint32_t my_server_next_connection_id(my_server *srv)
{
    /* Never 0: clients treat 0 as "no id". */
    if (++srv->next_connection_id == 0)
        srv->next_connection_id = 1;
    return srv->next_connection_id;
}

void my_session_log(my_session *s, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_msgv((log_level)level, s->prefix, fmt, ap);
    va_end(ap);
}

/* Impossible transitions are bugs: a DEAD session never comes back. */
void my_session_set_state(my_session *s, myc_state st)
{
    if (s->state == MYC_DEAD) {
        log_error("[%s] BUG: state change %s on a dead session", s->prefix, myc_state_name(st));
        abort();
    }
    my_session_log(s, LOG_LEVEL_DEBUG, "client %s -> %s", myc_state_name(s->state), myc_state_name(st));
    s->state = st;
}

void my_session_set_ustate(my_session *s, myu_state st)
{
    my_session_log(s, LOG_LEVEL_DEBUG, "upstream %s -> %s", myu_state_name(s->ustate), myu_state_name(st));
    s->ustate = st;
}

bool my_session_take_connection_slot(my_session *s)
{
    s->limit_slot = limits_slot(s->server->limits, s->identity->name);
    if (!limits_acquire_connection(s->server->limits, s->limit_slot, s->identity->max_connections))
        return false;
    s->counted = true;
    return true;
}

bool my_session_take_statement_token(my_session *s)
{
    return limits_take_statement(s->server->limits, s->limit_slot, s->identity->statements_per_second,
                                 limits_now_ns());
}

static void session_free(my_session *s)
{
    if (s->counted)
        limits_release_connection(s->server->limits, s->limit_slot);
    if (s->all_prev)
        s->all_prev->all_next = s->all_next;
    else
        s->server->all = s->all_next;
    if (s->all_next)
        s->all_next->all_prev = s->all_prev;
    oidc_cancel(s->oidc_wait);
    my_relay_free(s);
    my_policy_session_free(s);
    my_audit_session_free(s);
    if (s->engine)
        sqlp_engine_unref(s->engine);
    if (s->timer)
        event_free(s->timer);
    conn_free(s->client);
    conn_free(s->upstream);
    s->server->nsessions--;
    limits_release_client(s->server->limits);
    OPENSSL_cleanse(s->scramble, sizeof s->scramble);
    free(s);
}

static void reaper_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    my_server *srv = arg;
    while (srv->dead) {
        my_session *s = srv->dead;
        srv->dead = s->next_dead;
        s->on_dead_list = false;
        /* Durable-callbacks still to come point at it: freed when the last one runs. */
        if (s->audit_pending == 0)
            session_free(s);
    }
}

/* Queued once only: the close and the last durable-callback may both ask
 * before the reaper runs. */
void my_session_requeue_free(my_session *s)
{
    if (s->on_dead_list)
        return;
    s->on_dead_list = true;
    s->next_dead = s->server->dead;
    s->server->dead = s;
    event_active(s->server->reaper, EV_TIMEOUT, 0);
}

void my_session_close(my_session *s, const char *why)
{
    if (s->state == MYC_DEAD)
        return;
    my_session_log(s, LOG_LEVEL_INFO, "closing: %s", why);
    my_audit_disconnect(s, why);
    my_session_set_state(s, MYC_DEAD);
    if (s->client)
        conn_read_disable(s->client);
    if (s->upstream)
        conn_read_disable(s->upstream);
    if (s->timer)
        event_del(s->timer);
    my_session_requeue_free(s);
}

/* Write both directions now: once per event, after every packet of the batch moved. */
void my_session_flush(my_session *s)
{
    if (s->state == MYC_DEAD)
        return;
    if (s->upstream && conn_unsent(s->upstream))
        conn_flush(s->upstream);
    if (s->state != MYC_DEAD && s->client && conn_unsent(s->client))
        conn_flush(s->client);
}

static void close_when_flushed(my_session *s)
{
    conn_flush(s->client);
    if (s->state == MYC_DEAD)
        return;
    if (conn_unsent(s->client) == 0) {
        my_session_close(s, "error sent");
        return;
    }
    if (++s->closing_polls > 500) { /* 5 s at 10 ms */
        my_session_close(s, "client did not read its error");
        return;
    }
    my_session_arm_timer(s, 10);
}

/* The ERR carries the id the client expects next: in the login phase the
 * handshake counter, in the command phase the response counter. */
void my_session_fail(my_session *s, uint16_t code, const char *sqlstate, const char *message)
{
    if (s->state == MYC_DEAD || s->state == MYC_CLOSING)
        return;
    my_session_log(s, LOG_LEVEL_INFO, "refusing connection: %s (%u/%s)", message, (unsigned)code, sqlstate);
    if (s->state == MYC_TLS) {
        /* No channel to say it on: plain bytes would break the handshake. */
        my_session_close(s, message);
        return;
    }
    if (s->upstream)
        conn_read_disable(s->upstream);
    /* Login: the handshake counter.  A response in flight: its next id (mid-way
     * the client may take the ERR for a row, it is still the clearest thing to
     * send before the close).  Between commands: the answer to the next one. */
    uint8_t seq = s->state != MYC_ACTIVE ? s->seq : s->rstate == MYR_IDLE ? 1 : s->cseq;
    my_put_err(conn_output(s->client), seq, code, sqlstate, message);
    my_session_set_state(s, MYC_CLOSING);
    conn_read_disable(s->client);
    close_when_flushed(s);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    my_session *s = arg;
    if (s->state == MYC_CLOSING)
        close_when_flushed(s);
    else if (s->state == MYC_CONNECTING)
        my_session_fail(s, MY_ER_UNKNOWN_ERROR, "HY000", "phigate: timeout connecting to the upstream database");
    else if (s->state != MYC_ACTIVE)
        my_session_fail(s, MY_ER_HANDSHAKE, "08S01", "phigate: authentication timeout");
}

void my_session_arm_timer(my_session *s, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(s->timer, &tv);
}

static void client_read_cb(conn *c, void *arg)
{
    (void)c;
    my_session *s = arg;
    if (s->state == MYC_ACTIVE)
        my_relay_client_data(s);
    else if (s->state < MYC_CONNECTING)
        my_auth_on_client_data(s);
    my_session_flush(s);
}

static void client_drain_cb(conn *c, void *arg)
{
    (void)c;
    my_session *s = arg;
    if (s->state == MYC_ACTIVE) {
        my_relay_client_drained(s);
        my_session_flush(s);
    }
}

static void client_event_cb(conn *c, conn_event ev, void *arg)
{
    my_session *s = arg;
    if (ev == CONN_CONNECTED) { /* TLS handshake done */
        if (s->state == MYC_TLS)
            my_auth_on_tls_done(s);
        my_session_flush(s);
        return;
    }
    if (s->state == MYC_CLOSING || s->state == MYC_DEAD) {
        my_session_close(s, "client went away");
        return;
    }
    if (ev == CONN_ERROR)
        my_session_log(s, LOG_LEVEL_INFO, "client connection error: %s", conn_error(c));
    my_session_close(s, ev == CONN_EOF ? "client disconnected" : "client connection error");
}

static void upstream_read_cb(conn *c, void *arg)
{
    (void)c;
    my_session *s = arg;
    if (s->state == MYC_DEAD || s->state == MYC_CLOSING)
        return;
    my_upstream_on_data(s);
    my_session_flush(s);
}

static void upstream_drain_cb(conn *c, void *arg)
{
    (void)c;
    my_session *s = arg;
    if (s->state == MYC_ACTIVE) {
        my_relay_upstream_drained(s);
        my_session_flush(s);
    }
}

static void upstream_event_cb(conn *c, conn_event ev, void *arg)
{
    (void)c;
    my_session *s = arg;
    if (s->state == MYC_DEAD || s->state == MYC_CLOSING)
        return;
    my_upstream_on_event(s, (int)ev);
    my_session_flush(s);
}

void my_session_upstream_callbacks(my_session *s)
{
    conn_set_callbacks(s->upstream, upstream_read_cb, upstream_drain_cb, upstream_event_cb, s);
    conn_read_enable(s->upstream);
}

static void format_addr(const struct sockaddr *sa, char *host, size_t hostlen, char *out, size_t len)
{
    char h[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, h, sizeof h);
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, h, sizeof h);
        port = ntohs(in6->sin6_port);
    }
    snprintf(host, hostlen, "%s", h);
    snprintf(out, len, "%s:%d", h, port);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)l, (void)salen;
    my_server *srv = arg;
    if (!limits_acquire_client(srv->limits, srv->cfg->max_clients)) {
        /* MySQL clients read an ERR in place of the greeting (seq 0). */
        static const char msg[] = "phigate: too many client connections";
        log_warn("%s (max_clients=%d)", msg, srv->cfg->max_clients);
        struct evbuffer *b = evbuffer_new();
        my_put_err(b, 0, MY_ER_CON_COUNT, "08004", msg);
        evbuffer_write(b, fd);
        evbuffer_free(b);
        evutil_closesocket(fd);
        return;
    }
    my_session *s = calloc(1, sizeof *s);
    s->server = srv;
    s->id = ++srv->next_id;
    s->connection_id = my_server_next_connection_id(srv);
    format_addr(sa, s->client_host, sizeof s->client_host, s->client_addr, sizeof s->client_addr);
    snprintf(s->prefix, sizeof s->prefix, "my#%llu %s", (unsigned long long)s->id, s->client_addr);
    s->client = conn_new(srv->base, fd);
    s->timer = evtimer_new(srv->base, timer_cb, s);
    s->all_next = srv->all;
    if (srv->all)
        srv->all->all_prev = s;
    srv->all = s;
    srv->nsessions++;
    my_session_log(s, LOG_LEVEL_DEBUG, "accepted");
    conn_set_callbacks(s->client, client_read_cb, client_drain_cb, client_event_cb, s);
    conn_read_enable(s->client);
    my_session_arm_timer(s, srv->cfg->auth_timeout_ms);
    /* The server speaks first in MySQL. */
    my_auth_greet(s);
    my_session_flush(s);
}

static bool resolve_upstreams(my_server *srv, char *err, size_t errlen)
{
    size_t n = srv->cfg->nupstreams;
    srv->upstream_addr = calloc(n ? n : 1, sizeof *srv->upstream_addr);
    srv->upstream_addrlen = calloc(n ? n : 1, sizeof *srv->upstream_addrlen);
    srv->upstream_tls = calloc(n ? n : 1, sizeof *srv->upstream_tls);
    for (size_t i = 0; i < n; i++) {
        const cfg_upstream *u = &srv->cfg->upstreams[i];
        if (strcmp(u->protocol, "mysql") != 0)
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

/* Everything but the listener (see pg_server_prepare). */
my_server *my_server_prepare(struct event_base *base, const config *cfg, struct audit_log *audit, char *err,
                             size_t errlen)
{
    my_server *srv = calloc(1, sizeof *srv);
    srv->base = base;
    srv->audit = audit;
    srv->cfg = cfg;
    srv->limits = limits_new(0); /* slots by identity name (limits_slot) */
    if (RAND_bytes(srv->mock_secret, sizeof srv->mock_secret) != 1 ||
        RAND_bytes((uint8_t *)&srv->next_connection_id, sizeof srv->next_connection_id) != 1) {
        snprintf(err, errlen, "no randomness for the mock-authentication secret");
        my_server_free(srv);
        return NULL;
    }
    /* Connection ids start at a random point so they say nothing about load. */
    srv->next_connection_id &= 0x3fffffff;
    if (!tls_front_ctx(cfg, &srv->tls_ctx, err, errlen)) {
        my_server_free(srv);
        return NULL;
    }
    if (!resolve_upstreams(srv, err, errlen)) {
        my_server_free(srv);
        return NULL;
    }
    load_engines(srv);
    srv->reaper = event_new(base, -1, 0, reaper_cb, srv);
    return srv;
}

my_server *my_server_new(struct event_base *base, const config *cfg, struct audit_log *audit, char *err,
                         size_t errlen)
{
    char addr[128];
    my_server *srv = my_server_prepare(base, cfg, audit, err, errlen);
    if (!srv)
        return NULL;
    srv->listener = listener_open(base, cfg->my_address, cfg->my_port, "listen.mysql", accept_cb, srv, addr, sizeof addr,
                                  err, errlen);
    if (!srv->listener) {
        my_server_free(srv);
        return NULL;
    }
    log_info("myfront listening on %s%s (server version %s)", addr, srv->tls_ctx ? " (TLS available)" : "",
             srv->version);
    return srv;
}

void my_server_take_over(my_server *next, my_server *prev)
{
    listener_hand_over(&prev->listener, &next->listener, accept_cb, next);
    limits_free(next->limits);
    next->limits = limits_ref(prev->limits);
    next->next_id = prev->next_id;
    next->next_connection_id = prev->next_connection_id;
}

void my_server_shutdown(my_server *srv)
{
    for (my_session *s = srv->all; s; s = s->all_next)
        my_session_close(s, "phigate is shutting down");
    if (srv->listener) {
        evconnlistener_free(srv->listener);
        srv->listener = NULL;
    }
}

void my_server_free(my_server *srv)
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
    for (size_t i = 0; srv->engines && i < srv->cfg->nupstreams; i++)
        if (srv->engines[i])
            sqlp_engine_unref(srv->engines[i]);
    free(srv->engines);
    free(srv->upstream_addr);
    free(srv->upstream_addrlen);
    if (srv->tls_ctx)
        SSL_CTX_free(srv->tls_ctx);
    limits_free(srv->limits);
    free(srv);
}
