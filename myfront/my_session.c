/*
 * Session lifecycle of the MySQL front: accept, the state changes, and the one
 * exit path (my_session_fail / my_session_close).  The listener, the session
 * list and the reaper (sessions freed after the loop turn, not before every
 * audit callback aimed at them ran) are gate/front's, shared with pgfront.
 */
#include "myfront/my_session.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/conn.h"
#include "gate/engines.h"
#include "gate/log.h"
#include "gate/oidc.h"
#include "myfront/my_audit.h"
#include "myfront/my_hold.h"
#include "myfront/my_minnec.h"
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
    front f;                         /* first: listener, sessions, limits, upstream addresses */
    engines *engines;                /* per upstream policy engines, loaded off the loop */
    uint32_t next_connection_id;
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

const config *my_server_config(const my_server *srv) { return srv->f.cfg; }
struct event_base *my_server_base(const my_server *srv) { return srv->f.base; }
SSL_CTX *my_server_tls_ctx(const my_server *srv) { return srv->f.tls_ctx; }
SSL_CTX *my_server_upstream_tls(const my_server *srv, int i) { return srv->f.upstream_tls[i]; }
const uint8_t *my_server_mock_secret(const my_server *srv) { return srv->f.mock_secret; }
struct audit_log *my_server_audit(const my_server *srv) { return srv->f.audit; }
struct approvals *my_server_approvals(const my_server *srv) { return srv->f.approvals; }
void my_server_set_approvals(my_server *srv, struct approvals *a) { srv->f.approvals = a; }
struct oidc *my_server_oidc(const my_server *srv) { return srv->f.oidc; }
void my_server_set_oidc(my_server *srv, struct oidc *o) { srv->f.oidc = o; }
size_t my_server_session_count(const my_server *srv) { return srv->f.nsessions; }

uint32_t my_server_capabilities(const my_server *srv)
{
    return MY_SERVER_CAPS | (srv->f.tls_ctx ? MY_CAP(SSL) : 0);
}

bool my_server_upstream_addr(const my_server *srv, int i, struct sockaddr_storage *ss, socklen_t *len)
{
    return front_upstream_addr(&srv->f, i, ss, len);
}

sqlp_engine *my_server_engine(my_server *srv, int i, char *err, size_t errlen)
{
    return engines_get(srv->engines, i, err, errlen);
}

engines *my_server_engines(const my_server *srv) { return srv->engines; }

/* MariaDB announces itself as "5.5.5-10.x-MariaDB" so that clients comparing
 * versions do not take it for a MySQL 10; libmariadb strips that prefix.  Until
 * a catalog loaded the greeting says DEFAULT_SERVER_VERSION. */
const char *my_server_version(my_server *srv)
{
    if (srv->version[0])
        return srv->version;
    for (size_t i = 0; i < srv->f.cfg->nupstreams; i++) {
        const char *v = strcmp(srv->f.cfg->upstreams[i].protocol, "mysql") == 0 ? engines_info(srv->engines, (int)i)
                                                                                 : "";
        if (v[0]) {
            snprintf(srv->version, sizeof srv->version, "%s%s-phigate",
                     strstr(v, "MariaDB") && strncmp(v, "5.5.5-", 6) != 0 ? "5.5.5-" : "", v);
            return srv->version;
        }
    }
    return DEFAULT_SERVER_VERSION "-phigate";
}

static uint32_t my_server_next_connection_id(my_server *srv)
{
    /* Never 0: clients treat 0 as "no id". */
    if (++srv->next_connection_id == 0)
        srv->next_connection_id = 1;
    return srv->next_connection_id;
}

/* gate/front follows the client state through the phase of it. */
_Static_assert(MYC_ACTIVE == MYC_CONNECTING + 1 && MYC_CLOSING == MYC_CONNECTING + 2 && MYC_DEAD == MYC_CONNECTING + 3,
               "myc_state ends with CONNECTING, ACTIVE, CLOSING, DEAD (front_phase_of)");

/* Impossible transitions are bugs: a DEAD session never comes back (front_session_transition). */
void my_session_set_state(my_session *s, myc_state st)
{
    front_session_transition(&s->fs, front_phase_of((int)st, MYC_CONNECTING), "client", myc_state_name(s->state),
                             myc_state_name(st));
    s->state = st;
}

void my_session_set_ustate(my_session *s, myu_state st)
{
    my_session_log(s, LOG_LEVEL_DEBUG, "upstream %s -> %s", myu_state_name(s->ustate), myu_state_name(st));
    s->ustate = st;
}

static void session_free(void *arg)
{
    my_session *s = arg;
    front_session_remove(&s->fs);
    engines_forget(s->server->engines, s);
    oidc_cancel(s->oidc_wait);
    my_hold_withdraw(s, "session freed");
    my_minnec_free(s);
    my_relay_free(s);
    my_policy_session_free(s);
    my_audit_session_free(s);
    if (s->engine)
        sqlp_engine_unref(s->engine);
    if (s->timer)
        event_free(s->timer);
    conn_free(s->client);
    conn_free(s->upstream);
    OPENSSL_cleanse(s->scramble, sizeof s->scramble);
    free(s);
}

void my_session_close(my_session *s, const char *why)
{
    if (s->state == MYC_DEAD)
        return;
    my_session_log(s, LOG_LEVEL_INFO, "closing: %s", why);
    my_hold_withdraw(s, why);
    my_minnec_free(s); /* checks in flight end with the session */
    my_audit_disconnect(s, why);
    my_session_set_state(s, MYC_DEAD);
    front_session_closed(&s->fs, s->timer);
}

static void close_session(void *s, const char *why) { my_session_close(s, why); }

/* Write both directions now: once per event, after every packet of the batch moved. */
void my_session_flush(my_session *s) { front_session_flush(&s->fs); }

static void close_when_flushed(my_session *s) { front_close_when_flushed(&s->fs, s->timer, "error sent"); }

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

void my_session_arm_timer(my_session *s, int ms) { front_arm_timer(s->timer, ms); }

void my_session_upstream_callbacks(my_session *s) { front_session_upstream_callbacks(&s->fs); }

/* ---- gate/front's calls: myfront's answers -------------------------------------------- */

static void on_login_data(void *s) { my_auth_on_client_data(s); }
static void on_client_data(void *s) { my_relay_client_data(s); }
static void on_client_drained(void *s) { my_relay_client_drained(s); }
static void on_upstream_data(void *s) { my_upstream_on_data(s); }
static void on_upstream_drained(void *s) { my_relay_upstream_drained(s); }
static void on_upstream_event(void *s, int ev) { my_upstream_on_event(s, ev); }
static void on_audit_released(void *s) { my_relay_audit_released(s); }

static void on_audit_failed(void *s)
{
    my_session_fail(s, MY_ER_UNKNOWN_ERROR, "HY000",
                    "phigate could not write its audit log; the result is withheld (see phigate's log)");
}

static void on_client_tls_done(void *arg)
{
    my_session *s = arg;
    if (s->state == MYC_TLS)
        my_auth_on_tls_done(s);
}

/* Too many clients: MySQL clients read an ERR in place of the greeting (seq 0). */
static void refuse_client(struct evbuffer *out, const char *msg) { my_put_err(out, 0, MY_ER_CON_COUNT, "08004", msg); }

static void accept_session(front *f, evutil_socket_t fd, const char *host, const char *addr)
{
    my_server *srv = (my_server *)f; /* f is its first member */
    my_session *s = calloc(1, sizeof *s);
    s->server = srv;
    front_session_add(f, &s->fs, s, &s->client, &s->upstream, s->prefix);
    s->id = s->fs.id;
    s->connection_id = my_server_next_connection_id(srv);
    snprintf(s->client_host, sizeof s->client_host, "%s", host);
    snprintf(s->client_addr, sizeof s->client_addr, "%s", addr);
    snprintf(s->prefix, sizeof s->prefix, "my#%llu %s", (unsigned long long)s->id, s->client_addr);
    s->client = conn_new(f->base, fd);
    s->timer = evtimer_new(f->base, timer_cb, s);
    my_audit_init(s);
    my_session_log(s, LOG_LEVEL_DEBUG, "accepted");
    front_session_client_callbacks(&s->fs);
    my_session_arm_timer(s, f->cfg->auth_timeout_ms);
    /* The server speaks first in MySQL. */
    my_auth_greet(s);
    my_session_flush(s);
}

static const front_ops my_front_ops = {
    .protocol = "mysql",
    .name = "myfront",
    .accept = accept_session,
    .refuse = refuse_client,
    .close = close_session,
    .free = session_free,
    .login_data = on_login_data,
    .client_data = on_client_data,
    .client_drained = on_client_drained,
    .client_tls_done = on_client_tls_done,
    .upstream_data = on_upstream_data,
    .upstream_drained = on_upstream_drained,
    .upstream_event = on_upstream_event,
    .audit_failed = on_audit_failed,
    .audit_released = on_audit_released,
};

static void engine_ready(void *waiter, sqlp_engine *engine, const char *err)
{
    my_upstream_engine_ready(waiter, engine, err);
}

/* Everything but the listener (see pg_server_prepare). */
my_server *my_server_prepare(struct event_base *base, const config *cfg, struct audit_log *audit, char *err,
                             size_t errlen)
{
    my_server *srv = calloc(1, sizeof *srv);
    if (!front_init(&srv->f, &my_front_ops, base, cfg, audit, err, errlen)) {
        my_server_free(srv);
        return NULL;
    }
    if (RAND_bytes((uint8_t *)&srv->next_connection_id, sizeof srv->next_connection_id) != 1) {
        snprintf(err, errlen, "no randomness for the connection ids");
        my_server_free(srv);
        return NULL;
    }
    /* Connection ids start at a random point so they say nothing about load. */
    srv->next_connection_id &= 0x3fffffff;
    my_policy_library_init();
    srv->engines = engines_new(base, cfg, "mysql", my_policy_load_engine, engine_ready);
    return srv;
}

my_server *my_server_new(struct event_base *base, const config *cfg, struct audit_log *audit, char *err,
                         size_t errlen)
{
    my_server *srv = my_server_prepare(base, cfg, audit, err, errlen);
    if (srv && !front_listen(&srv->f, cfg->my_address, cfg->my_port, "listen.mysql", err, errlen)) {
        my_server_free(srv);
        return NULL;
    }
    return srv;
}

void my_server_take_over(my_server *next, my_server *prev)
{
    front_take_over(&next->f, &prev->f);
    next->next_connection_id = prev->next_connection_id;
}

void my_server_shutdown(my_server *srv) { front_shutdown(&srv->f); }

void my_server_free(my_server *srv)
{
    if (!srv)
        return;
    front_cleanup(&srv->f); /* frees the sessions still queued, which forget their engine waits */
    engines_free(srv->engines);
    free(srv);
}
