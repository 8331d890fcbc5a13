/*
 * Cancel keys.  Each client gets phigate's own random (pid, key); a
 * CancelRequest that matches is forwarded, on a fresh connection, to the
 * upstream with the upstream's own keys, which never leave phigate.
 */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "gate/log.h"
#include "pgfront/pg_hold.h"
#include "pgfront/pg_session.h"

#define CANCEL_BUCKETS 4096

/* One table per process: there is one pgfront per phigate. */
static pg_session *cancel_table[CANCEL_BUCKETS];

static pg_session **bucket(uint32_t pid) { return &cancel_table[pid % CANCEL_BUCKETS]; }

static pg_session *lookup(uint32_t pid)
{
    for (pg_session *s = *bucket(pid); s; s = s->cancel_next)
        if (s->cancel_pid == pid)
            return s;
    return NULL;
}

void pg_cancel_register(pg_session *s)
{
    do {
        if (RAND_bytes((unsigned char *)&s->cancel_pid, 4) != 1 || RAND_bytes((unsigned char *)&s->cancel_key, 4) != 1)
            abort(); /* no randomness: nothing sane to do */
        s->cancel_pid &= 0x7fffffff; /* clients print it as a signed pid */
    } while (s->cancel_pid == 0 || lookup(s->cancel_pid));
    s->cancel_next = *bucket(s->cancel_pid);
    *bucket(s->cancel_pid) = s;
}

void pg_cancel_unregister(pg_session *s)
{
    if (!s->cancel_pid)
        return;
    for (pg_session **p = bucket(s->cancel_pid); *p; p = &(*p)->cancel_next) {
        if (*p == s) {
            *p = s->cancel_next;
            break;
        }
    }
    s->cancel_pid = 0;
}

static void cancel_done(struct bufferevent *bev, void *arg)
{
    (void)arg;
    bufferevent_free(bev);
}

static void cancel_event(struct bufferevent *bev, short what, void *arg)
{
    (void)arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    log_warn("forwarding a cancel request to the upstream failed");
    bufferevent_free(bev);
}

void pg_cancel_request(pg_server *srv, uint32_t pid, uint32_t key)
{
    pg_session *s = lookup(pid);
    uint32_t expected = s ? s->cancel_key : 0;
    /* Constant-time compare: the key is a secret. */
    if (!s || CRYPTO_memcmp(&expected, &key, sizeof key) != 0 || s->ustate != PGU_READY) {
        log_info("cancel request with unknown keys ignored");
        return;
    }
    if (pg_hold_waiting(s)) {
        /* The statement never reached the upstream: cancelling withdraws its approval request. */
        pg_hold_cancel(s);
        pg_session_flush(s);
        return;
    }
    struct sockaddr_storage ss;
    socklen_t len;
    /* The session's own server: after a reload it can be an older one than srv. */
    if (!pg_server_upstream_addr(s->server, s->upstream_index, &ss, &len))
        return;
    struct bufferevent *bev = bufferevent_socket_new(pg_server_base(srv), -1, BEV_OPT_CLOSE_ON_FREE);
    uint32_t msg[4] = {htonl(16), htonl(PG_CANCEL_REQUEST), htonl(s->up_pid), htonl(s->up_key)};
    bufferevent_write(bev, msg, sizeof msg);
    bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
    bufferevent_setcb(bev, NULL, cancel_done, cancel_event, NULL);
    bufferevent_enable(bev, EV_WRITE);
    if (bufferevent_socket_connect(bev, (struct sockaddr *)&ss, (int)len) != 0)
        bufferevent_free(bev);
    pg_session_log(s, LOG_LEVEL_INFO, "cancel request forwarded to the upstream");
}
