/*
 * What pgfront and myfront share around their sessions: the listener and
 * accept (with max_clients), upstream addresses resolved and TLS contexts made
 * once at start, the per-identity limits, and the session lifecycle:
 *
 *   accept --ops->accept--> session (front_session_add: counted, listed)
 *     ... --front's close--> front_session_closed: reads stop, queued for the reaper
 *   reaper (next loop turn) --once no audit record is pending--> ops->free
 *
 * Sessions are freed on a just-freed list after the loop turn, never inside
 * their own callbacks, and not before every audit durability callback aimed at
 * them ran (their audit_session's pending count is zero).  A session that sent
 * its last error closes once the client has read it (front_close_when_flushed).
 *
 * A front embeds a `front` in its server and a `front_session` in each session;
 * the protocol (greeting, errors, states) stays in the front.
 */
#ifndef PHIGATE_FRONT_H
#define PHIGATE_FRONT_H

#include <event2/util.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "gate/audit_session.h"
#include "gate/config.h"
#include "gate/limits.h"

struct event;
struct event_base;
struct evbuffer;
struct evconnlistener;
typedef struct conn conn;
typedef struct front front;

typedef struct front_ops {
    const char *protocol; /* "postgres" | "mysql": the upstreams this front resolves */
    const char *name;     /* "pgfront", for log lines */
    /* A client connected (max_clients checked): make its session, front_session_add it. */
    void (*accept)(front *f, evutil_socket_t fd, const char *host, const char *addr);
    /* Too many clients: the error in the protocol's form, written before the close. */
    void (*refuse)(struct evbuffer *out, const char *msg);
    void (*close)(void *session, const char *why);
    void (*free)(void *session);
} front_ops;

typedef struct front_session {
    front *front;
    void *owner;                     /* the front's session */
    const audit_session *aud;        /* its audit records: freed only when none is pending */
    struct front_session *next_dead; /* the reaper's list */
    struct front_session *all_next, *all_prev; /* every live session, for shutdown */
    uint64_t id;
    size_t identity;                 /* index in cfg->identities, once counted */
    bool on_dead_list;               /* queued for the reaper: never queued twice */
    bool dead;                       /* closed: no state change, no I/O any more */
    bool counted;                    /* holds one of its identity's connection slots */
    int closing_polls;               /* front_close_when_flushed: checks so far */
} front_session;

struct front {
    const front_ops *ops;
    struct event_base *base;
    const config *cfg;
    struct audit_log *audit;
    struct approvals *approvals;     /* NULL: held statements are refused */
    SSL_CTX *tls_ctx;                /* NULL when no certificate is configured */
    SSL_CTX **upstream_tls;          /* per upstream, NULL when TLS is off */
    struct sockaddr_storage *upstream_addr;
    socklen_t *upstream_addrlen;     /* 0: not this front's protocol */
    identity_limits *limits;
    struct evconnlistener *listener;
    struct event *reaper;
    front_session *dead, *all;
    size_t nsessions;
    uint64_t next_id;
    uint8_t mock_secret[32];         /* unknown users get verifiers derived from it */
};

/* Everything but the listener: randomness, TLS contexts, upstream addresses,
 * limits, the reaper.  false: err says why (front_cleanup frees what was made). */
bool front_init(front *f, const front_ops *ops, struct event_base *base, const config *cfg,
                struct audit_log *audit, char *err, size_t errlen);
/* Listen on address:port (listen_key names the setting in errors, "listen.mysql"). */
bool front_listen(front *f, const char *address, int port, const char *listen_key, char *err, size_t errlen);
/* Close every session (ops->close) and stop listening. */
void front_shutdown(front *f);
/* Free the sessions still queued, then everything front_init made. */
void front_cleanup(front *f);
bool front_upstream_addr(const front *f, int upstream_index, struct sockaddr_storage *ss, socklen_t *len);

/* A new session: listed, counted, given the next id. */
void front_session_add(front *f, front_session *fs, void *owner, const audit_session *aud);
/* The front closed it: reads stop, its timer stops, queued for the reaper. */
void front_session_closed(front_session *fs, conn *client, conn *upstream, struct event *timer);
/* Queue for the reaper (again, after the last pending audit record). */
void front_session_queue_free(front_session *fs);
/* From ops->free: unlisted, its connection slot given back. */
void front_session_remove(front_session *fs);

/* Per-identity limits (gate/limits.h): false when the identity is over them. */
bool front_session_take_connection_slot(front_session *fs, const cfg_identity *id);
bool front_session_take_statement_token(front_session *fs, const cfg_identity *id);

/* Write both directions now (after every message of an event moved). */
void front_session_flush(front_session *fs, conn *client, conn *upstream);
/* The last error is queued: close once the client read it (polling every 10
 * ms, at most 5 s), through ops->close with why. */
void front_close_when_flushed(front_session *fs, conn *client, struct event *timer, const char *why);
void front_arm_timer(struct event *timer, int ms);

#endif
