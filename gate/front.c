/*
 * The session lifecycle both fronts share: see front.h.
 */
#include "gate/front.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netdb.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/conn.h"
#include "gate/listener.h"
#include "gate/log.h"
#include "gate/tls.h"

#define CLOSE_POLL_MS 10
#define CLOSE_POLLS_MAX 500 /* 5 s for the client to read its last error */

/* ---- the reaper ------------------------------------------------------------------ */

static void reaper_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    front *f = arg;
    while (f->dead) {
        front_session *fs = f->dead;
        f->dead = fs->next_dead;
        fs->on_dead_list = false;
        /* Durable-callbacks still to come point at it: freed when the last one runs. */
        if (fs->aud->pending == 0)
            f->ops->free(fs->owner);
    }
}

/* Queued once only: the close and the last durable-callback may both ask
 * before the reaper runs. */
void front_session_queue_free(front_session *fs)
{
    if (fs->on_dead_list)
        return;
    fs->on_dead_list = true;
    fs->next_dead = fs->front->dead;
    fs->front->dead = fs;
    event_active(fs->front->reaper, EV_TIMEOUT, 0);
}

void front_session_closed(front_session *fs, struct event *timer)
{
    fs->phase = FRONT_DEAD;
    if (*fs->client)
        conn_read_disable(*fs->client);
    if (*fs->upstream)
        conn_read_disable(*fs->upstream);
    if (timer)
        event_del(timer);
    front_session_queue_free(fs);
}

/* ---- sessions --------------------------------------------------------------------- */

void front_session_add(front *f, front_session *fs, void *owner, conn **client, conn **upstream,
                       const char *prefix)
{
    fs->front = f;
    fs->owner = owner;
    fs->client = client;
    fs->upstream = upstream;
    fs->prefix = prefix;
    fs->phase = FRONT_LOGIN;
    fs->id = ++f->next_id;
    fs->all_next = f->all;
    if (f->all)
        f->all->all_prev = fs;
    f->all = fs;
    f->nsessions++;
}

void front_session_remove(front_session *fs)
{
    front *f = fs->front;
    if (fs->counted)
        limits_release_connection(f->limits, fs->limit_slot);
    limits_release_client(f->limits);
    if (fs->all_prev)
        fs->all_prev->all_next = fs->all_next;
    else
        f->all = fs->all_next;
    if (fs->all_next)
        fs->all_next->all_prev = fs->all_prev;
    f->nsessions--;
}

/* Slots are keyed by identity name: a reload that reorders or adds identities
 * keeps every identity's counts. */
bool front_session_take_connection_slot(front_session *fs, const cfg_identity *id)
{
    size_t slot = limits_slot(fs->front->limits, id->name);
    if (!limits_acquire_connection(fs->front->limits, slot, id->max_connections))
        return false;
    fs->limit_slot = slot;
    fs->counted = true;
    return true;
}

bool front_session_take_statement_token(front_session *fs, const cfg_identity *id)
{
    size_t slot = fs->counted ? fs->limit_slot : limits_slot(fs->front->limits, id->name);
    return limits_take_statement(fs->front->limits, slot, id->statements_per_second, limits_now_ns());
}

void front_session_log(const front_session *fs, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_msgv((log_level)level, fs->prefix, fmt, ap);
    va_end(ap);
}

front_phase front_phase_of(int st, int connecting)
{
    return st < connecting ? FRONT_LOGIN : (front_phase)(FRONT_CONNECTING + (st - connecting));
}

void front_session_transition(front_session *fs, front_phase phase, const char *side, const char *from,
                              const char *to)
{
    if (fs->phase == FRONT_DEAD) {
        log_error("[%s] BUG: %s state change %s on a dead session", fs->prefix, side, to);
        abort();
    }
    front_session_log(fs, LOG_LEVEL_DEBUG, "%s %s -> %s", side, from, to);
    fs->phase = phase;
}

/* Called once per event, after all messages of the batch moved, so one send carries them all. */
void front_session_flush(front_session *fs)
{
    if (fs->phase == FRONT_DEAD)
        return;
    if (*fs->upstream && conn_unsent(*fs->upstream))
        conn_flush(*fs->upstream);
    if (fs->phase != FRONT_DEAD && *fs->client && conn_unsent(*fs->client))
        conn_flush(*fs->client);
}

/* ---- connection events ------------------------------------------------------------------ */

static bool closing(const front_session *fs) { return fs->phase == FRONT_CLOSING || fs->phase == FRONT_DEAD; }

static void client_read_cb(conn *c, void *arg)
{
    (void)c;
    front_session *fs = arg;
    if (fs->phase == FRONT_ACTIVE)
        fs->front->ops->client_data(fs->owner);
    else if (fs->phase == FRONT_LOGIN)
        fs->front->ops->login_data(fs->owner);
    front_session_flush(fs);
}

static void client_drain_cb(conn *c, void *arg)
{
    (void)c;
    front_session *fs = arg;
    if (fs->phase == FRONT_ACTIVE) {
        fs->front->ops->client_drained(fs->owner);
        front_session_flush(fs);
    }
}

static void client_event_cb(conn *c, conn_event ev, void *arg)
{
    front_session *fs = arg;
    const front_ops *ops = fs->front->ops;
    if (ev == CONN_CONNECTED) { /* the client's TLS handshake is done */
        if (ops->client_tls_done && !closing(fs))
            ops->client_tls_done(fs->owner);
        front_session_flush(fs);
        return;
    }
    if (closing(fs)) {
        ops->close(fs->owner, "client went away");
        return;
    }
    if (ev == CONN_ERROR)
        front_session_log(fs, LOG_LEVEL_INFO, "client connection error: %s", conn_error(c));
    ops->close(fs->owner, ev == CONN_EOF ? "client disconnected" : "client connection error");
}

void front_session_client_callbacks(front_session *fs)
{
    conn_set_callbacks(*fs->client, client_read_cb, client_drain_cb, client_event_cb, fs);
    conn_read_enable(*fs->client);
}

static void upstream_read_cb(conn *c, void *arg)
{
    (void)c;
    front_session *fs = arg;
    if (closing(fs))
        return;
    fs->front->ops->upstream_data(fs->owner);
    front_session_flush(fs);
}

static void upstream_drain_cb(conn *c, void *arg)
{
    (void)c;
    front_session *fs = arg;
    if (fs->phase == FRONT_ACTIVE) {
        fs->front->ops->upstream_drained(fs->owner);
        front_session_flush(fs);
    }
}

static void upstream_event_cb(conn *c, conn_event ev, void *arg)
{
    (void)c;
    front_session *fs = arg;
    if (closing(fs))
        return;
    fs->front->ops->upstream_event(fs->owner, (int)ev);
    front_session_flush(fs);
}

void front_session_upstream_callbacks(front_session *fs)
{
    conn_set_callbacks(*fs->upstream, upstream_read_cb, upstream_drain_cb, upstream_event_cb, fs);
    conn_read_enable(*fs->upstream);
}

/* ---- the audit log's answers ---------------------------------------------------------------- */

/* A statement record is on disk (or failed): audit_session counted it down. */
static void on_durable(void *arg, bool ok)
{
    front_session *fs = arg;
    if (fs->phase == FRONT_DEAD) {
        /* The close left it to the last durability callback to queue it for freeing. */
        if (fs->aud->pending == 0)
            front_session_queue_free(fs);
        return;
    }
    if (!ok) {
        const char *why = audit_log_failed_reason(fs->front->audit);
        front_session_log(fs, LOG_LEVEL_ERROR, "audit record not written: %s", why ? why : "out of memory");
        /* The result is withheld: without its record it must not reach the agent. */
        fs->front->ops->audit_failed(fs->owner);
        return;
    }
    if (fs->aud->pending == 0 && fs->phase == FRONT_ACTIVE) {
        fs->front->ops->audit_released(fs->owner);
        front_session_flush(fs);
    }
}

void front_session_audit(front_session *fs, audit_session *aud, const char *protocol)
{
    fs->aud = aud;
    audit_session_init(aud, fs->front->audit, protocol, on_durable, fs);
}

void front_arm_timer(struct event *timer, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(timer, &tv);
}

void front_close_when_flushed(front_session *fs, struct event *timer, const char *why)
{
    conn_flush(*fs->client);
    if (fs->phase == FRONT_DEAD)
        return;
    if (conn_unsent(*fs->client) == 0) {
        fs->front->ops->close(fs->owner, why);
        return;
    }
    if (++fs->closing_polls > CLOSE_POLLS_MAX) {
        fs->front->ops->close(fs->owner, "client did not read its error");
        return;
    }
    front_arm_timer(timer, CLOSE_POLL_MS);
}

/* ---- the server --------------------------------------------------------------------- */

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
    front *f = arg;
    /* Counted in the limits every generation shares: a reload opens no room. */
    if (!limits_acquire_client(f->limits, f->cfg->max_clients)) {
        /* Too many clients: say so in protocol form, then close. */
        static const char msg[] = "phigate: too many client connections";
        log_warn("%s: %s (max_clients=%d)", f->ops->name, msg, f->cfg->max_clients);
        struct evbuffer *b = evbuffer_new();
        f->ops->refuse(b, msg);
        evbuffer_write(b, fd);
        evbuffer_free(b);
        evutil_closesocket(fd);
        return;
    }
    char host[INET6_ADDRSTRLEN], addr[64];
    format_addr(sa, host, sizeof host, addr, sizeof addr);
    f->ops->accept(f, fd, host, addr);
}

/* Resolved once at start: the loop never blocks on DNS per connection. */
static bool resolve_upstreams(front *f, char *err, size_t errlen)
{
    size_t n = f->cfg->nupstreams;
    f->upstream_addr = calloc(n ? n : 1, sizeof *f->upstream_addr);
    f->upstream_addrlen = calloc(n ? n : 1, sizeof *f->upstream_addrlen);
    f->upstream_tls = calloc(n ? n : 1, sizeof *f->upstream_tls);
    for (size_t i = 0; i < n; i++) {
        const cfg_upstream *u = &f->cfg->upstreams[i];
        if (strcmp(u->protocol, f->ops->protocol) != 0)
            continue;
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
        char port[16];
        snprintf(port, sizeof port, "%d", u->port);
        int rc = getaddrinfo(u->host, port, &hints, &res);
        if (rc != 0) {
            snprintf(err, errlen, "upstream %s: cannot resolve %s: %s", u->name, u->host, gai_strerror(rc));
            return false;
        }
        memcpy(&f->upstream_addr[i], res->ai_addr, res->ai_addrlen);
        f->upstream_addrlen[i] = res->ai_addrlen;
        freeaddrinfo(res);
        if (u->tls_mode != UPSTREAM_TLS_DISABLE) {
            int verify = u->tls_mode == UPSTREAM_TLS_VERIFY_FULL ? 2 : u->tls_mode == UPSTREAM_TLS_VERIFY_CA ? 1 : 0;
            f->upstream_tls[i] = tls_client_ctx_new(verify, u->tls_ca_file, err, errlen);
            if (!f->upstream_tls[i])
                return false;
        }
    }
    return true;
}

bool front_upstream_addr(const front *f, int i, struct sockaddr_storage *ss, socklen_t *len)
{
    if (f->upstream_addrlen[i] == 0)
        return false;
    *ss = f->upstream_addr[i];
    *len = f->upstream_addrlen[i];
    return true;
}

bool front_init(front *f, const front_ops *ops, struct event_base *base, const config *cfg,
                struct audit_log *audit, char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    f->ops = ops;
    f->base = base;
    f->cfg = cfg;
    f->audit = audit;
    f->limits = limits_new(0); /* slots by identity name (limits_slot) */
    f->reaper = event_new(base, -1, 0, reaper_cb, f);
    if (RAND_bytes(f->mock_secret, sizeof f->mock_secret) != 1) {
        snprintf(err, errlen, "no randomness for the mock-authentication secret");
        return false;
    }
    if (!tls_front_ctx(cfg, &f->tls_ctx, err, errlen))
        return false;
    return resolve_upstreams(f, err, errlen);
}

bool front_listen(front *f, const char *address, int port, const char *listen_key, char *err, size_t errlen)
{
    char addr[128];
    f->listener = listener_open(f->base, address, port, listen_key, accept_cb, f, addr, sizeof addr, err, errlen);
    if (!f->listener)
        return false;
    log_info("%s listening on %s%s", f->ops->name, addr, f->tls_ctx ? " (TLS available)" : "");
    return true;
}

void front_take_over(front *next, front *prev)
{
    /* The socket stays open: connections queued in it are accepted by next. */
    listener_hand_over(&prev->listener, &next->listener, accept_cb, next);
    /* Per-identity and client counts go on across the reload: one object, keyed by name. */
    limits_free(next->limits);
    next->limits = limits_ref(prev->limits);
    next->approvals = prev->approvals;
    next->next_id = prev->next_id;
}

void front_shutdown(front *f)
{
    for (front_session *fs = f->all; fs; fs = fs->all_next)
        f->ops->close(fs->owner, "phigate is shutting down");
    if (f->listener) {
        evconnlistener_free(f->listener);
        f->listener = NULL;
    }
}

void front_cleanup(front *f)
{
    if (f->listener)
        evconnlistener_free(f->listener);
    if (f->reaper) {
        reaper_cb(-1, 0, f);
        event_free(f->reaper);
    }
    for (size_t i = 0; f->upstream_tls && i < f->cfg->nupstreams; i++)
        if (f->upstream_tls[i])
            SSL_CTX_free(f->upstream_tls[i]);
    free(f->upstream_tls);
    free(f->upstream_addr);
    free(f->upstream_addrlen);
    limits_free(f->limits);
    if (f->tls_ctx)
        SSL_CTX_free(f->tls_ctx);
    memset(f, 0, sizeof *f);
}
