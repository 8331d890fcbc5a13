/*
 * Session lifecycle: accept, the state changes, and the one exit path
 * (pg_session_fail / pg_session_close).  The listener, the session list and the
 * reaper that frees sessions after the loop turn are gate/front's, shared with
 * myfront.
 */
#include "pgfront/pg_session.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/conn.h"
#include "gate/engines.h"
#include "gate/log.h"
#include "gate/oidc.h"
#include "pgfront/pg_audit.h"
#include "pgfront/pg_hold.h"
#include "pgfront/pg_minnec.h"
#include "pgfront/pg_policy.h"

struct pg_server {
    front f;                             /* first: listener, sessions, limits, upstream addresses */
    engines *engines;                    /* per upstream policy engines, loaded off the loop */
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

const config *pg_server_config(const pg_server *srv) { return srv->f.cfg; }
struct event_base *pg_server_base(const pg_server *srv) { return srv->f.base; }
const uint8_t *pg_server_mock_secret(const pg_server *srv) { return srv->f.mock_secret; }
size_t pg_server_session_count(const pg_server *srv) { return srv->f.nsessions; }
SSL_CTX *pg_server_upstream_tls(const pg_server *srv, int i) { return srv->f.upstream_tls[i]; }
engines *pg_server_engines(const pg_server *srv) { return srv->engines; }

bool pg_server_upstream_addr(const pg_server *srv, int i, struct sockaddr_storage *ss, socklen_t *len)
{
    return front_upstream_addr(&srv->f, i, ss, len);
}

/* gate/front follows the client state through the phase of it. */
_Static_assert(PGC_ACTIVE == PGC_CONNECTING + 1 && PGC_CLOSING == PGC_CONNECTING + 2 && PGC_DEAD == PGC_CONNECTING + 3,
               "pgc_state ends with CONNECTING, ACTIVE, CLOSING, DEAD (front_phase_of)");

/* Impossible transitions are bugs: a DEAD session never comes back (front_session_transition). */
void pg_session_set_state(pg_session *s, pgc_state st)
{
    front_session_transition(&s->fs, front_phase_of((int)st, PGC_CONNECTING), "client", pgc_state_name(s->state),
                             pgc_state_name(st));
    s->state = st;
}

void pg_session_set_ustate(pg_session *s, pgu_state st)
{
    pg_session_log(s, LOG_LEVEL_DEBUG, "upstream %s -> %s", pgu_state_name(s->ustate), pgu_state_name(st));
    s->ustate = st;
}

static void session_free(void *arg)
{
    pg_session *s = arg;
    front_session_remove(&s->fs);
    pg_cancel_unregister(s);
    oidc_cancel(s->oidc_wait);
    engines_forget(s->server->engines, s);
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
    OPENSSL_cleanse(&s->scram, sizeof s->scram);
    free(s);
}

void pg_session_close(pg_session *s, const char *why)
{
    if (s->state == PGC_DEAD)
        return;
    pg_session_log(s, LOG_LEVEL_INFO, "closing: %s", why);
    pg_audit_disconnect(s, why);
    pg_session_set_state(s, PGC_DEAD);
    front_session_closed(&s->fs, s->timer);
}

static void close_session(void *s, const char *why) { pg_session_close(s, why); }

/* Write both directions now: called once per event, after all messages of the
 * batch were moved, so one send carries them all. */
void pg_session_flush(pg_session *s) { front_session_flush(&s->fs); }

static void close_when_flushed(pg_session *s)
{
    front_close_when_flushed(&s->fs, s->timer, s->terminating ? "client sent Terminate" : "error sent");
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

void pg_session_arm_timer(pg_session *s, int ms) { front_arm_timer(s->timer, ms); }

void pg_session_client_callbacks(pg_session *s) { front_session_client_callbacks(&s->fs); }
void pg_session_upstream_callbacks(pg_session *s) { front_session_upstream_callbacks(&s->fs); }

/* ---- gate/front's calls: pgfront's answers ------------------------------------------- */

static void on_login_data(void *s) { pg_auth_on_client_data(s); }
static void on_client_data(void *s) { pg_relay_client_data(s); }
static void on_client_drained(void *s) { pg_relay_client_drained(s); }
static void on_upstream_data(void *s) { pg_upstream_on_data(s); }
static void on_upstream_drained(void *s) { pg_relay_upstream_drained(s); }
static void on_upstream_event(void *s, int ev) { pg_upstream_on_event(s, ev); }
static void on_audit_released(void *s) { pg_relay_audit_released(s); }

static void on_audit_failed(void *s)
{
    pg_session_fail(s, "58030", "phigate could not write its audit log; the result is withheld",
                    "the administrator must fix the audit log (see phigate's log)");
}

/* Too many clients: a FATAL ErrorResponse before the close. */
static void refuse_client(struct evbuffer *out, const char *msg)
{
    pg_put_error(out, "FATAL", "53300", msg, NULL, NULL);
}

static void accept_session(front *f, evutil_socket_t fd, const char *host, const char *addr)
{
    (void)host;
    pg_server *srv = (pg_server *)f; /* f is its first member */
    pg_session *s = calloc(1, sizeof *s);
    s->server = srv;
    front_session_add(f, &s->fs, s, &s->client, &s->upstream, s->prefix);
    s->id = s->fs.id;
    s->txn_status = 'I';
    snprintf(s->client_addr, sizeof s->client_addr, "%s", addr);
    snprintf(s->prefix, sizeof s->prefix, "pg#%llu %s", (unsigned long long)s->id, s->client_addr);
    s->client = conn_new(f->base, fd);
    s->timer = evtimer_new(f->base, timer_cb, s);
    pg_audit_init(s);
    pg_session_log(s, LOG_LEVEL_DEBUG, "accepted");
    pg_session_client_callbacks(s);
    pg_session_arm_timer(s, f->cfg->auth_timeout_ms);
}

static const front_ops pg_front_ops = {
    .protocol = "postgres",
    .name = "pgfront",
    .accept = accept_session,
    .refuse = refuse_client,
    .close = close_session,
    .free = session_free,
    .login_data = on_login_data,
    .client_data = on_client_data,
    .client_drained = on_client_drained,
    .upstream_data = on_upstream_data,
    .upstream_drained = on_upstream_drained,
    .upstream_event = on_upstream_event,
    .audit_failed = on_audit_failed,
    .audit_released = on_audit_released,
};

/* gate/engines callbacks: the catalog read with libpq (on a worker thread), and its session. */
static sqlp_engine *load_engine(const config *cfg, const cfg_upstream *up, char *info, size_t infolen, char *err,
                                size_t errlen)
{
    (void)info, (void)infolen;
    return pg_policy_load_engine(cfg, up, err, errlen);
}

static void engine_ready(void *waiter, sqlp_engine *engine, const char *err)
{
    pg_upstream_engine_ready(waiter, engine, err);
}

/* Everything but the listener: a reload builds the next server off to the side
 * and hands it the listener only when the whole new configuration is good. */
pg_server *pg_server_prepare(struct event_base *base, const config *cfg, struct audit_log *audit, char *err,
                             size_t errlen)
{
    pg_server *srv = calloc(1, sizeof *srv);
    if (!front_init(&srv->f, &pg_front_ops, base, cfg, audit, err, errlen)) {
        pg_server_free(srv);
        return NULL;
    }
    srv->engines = engines_new(base, cfg, "postgres", load_engine, engine_ready);
    return srv;
}

pg_server *pg_server_new(struct event_base *base, const config *cfg, struct audit_log *audit, char *err,
                         size_t errlen)
{
    pg_server *srv = pg_server_prepare(base, cfg, audit, err, errlen);
    if (srv && !front_listen(&srv->f, cfg->pg_address, cfg->pg_port, "listen.postgres", err, errlen)) {
        pg_server_free(srv);
        return NULL;
    }
    return srv;
}

void pg_server_take_over(pg_server *next, pg_server *prev) { front_take_over(&next->f, &prev->f); }

SSL_CTX *pg_server_tls_ctx(const pg_server *srv) { return srv->f.tls_ctx; }
struct audit_log *pg_server_audit(const pg_server *srv) { return srv->f.audit; }
struct approvals *pg_server_approvals(const pg_server *srv) { return srv->f.approvals; }
void pg_server_set_approvals(pg_server *srv, struct approvals *a) { srv->f.approvals = a; }
struct oidc *pg_server_oidc(const pg_server *srv) { return srv->f.oidc; }
void pg_server_set_oidc(pg_server *srv, struct oidc *o) { srv->f.oidc = o; }

void pg_server_shutdown(pg_server *srv) { front_shutdown(&srv->f); }

void pg_server_free(pg_server *srv)
{
    if (!srv)
        return;
    front_cleanup(&srv->f); /* frees the sessions still queued, which forget their engine waits */
    engines_free(srv->engines);
    free(srv);
}
