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
 *
 * Configuration reload: each configuration is a generation of fronts.  The
 * next one is made with front_init (no listener), and front_take_over hands it
 * the listening socket (never closed, so queued connections are accepted by the
 * new generation), the approvals client and the limits.  The limits are one
 * refcounted object shared by every generation: connection slots are keyed by
 * identity name, and max_clients counts the client sockets of all
 * generations.  An older generation keeps its configuration, TLS contexts and
 * engines for its own sessions until they end (nsessions 0), then is freed.
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

/* Where a session is, as far as the shared part cares; each front maps its own
 * client states onto these (front_session_transition). */
typedef enum {
    FRONT_LOGIN,      /* handshake and authentication */
    FRONT_CONNECTING, /* client authenticated, upstream being opened */
    FRONT_ACTIVE,     /* relaying statements */
    FRONT_CLOSING,    /* flushing a last error, then closed */
    FRONT_DEAD,       /* closed: queued for the reaper, no I/O any more */
} front_phase;

/* A front's side of the shared lifecycle; every callback gets the front's session. */
typedef struct front_ops {
    const char *protocol; /* "postgres" | "mysql": the upstreams this front resolves */
    const char *name;     /* "pgfront", for log lines */
    /* A client connected (max_clients checked): make its session, front_session_add it. */
    void (*accept)(front *f, evutil_socket_t fd, const char *host, const char *addr);
    /* Too many clients: the error in the protocol's form, written before the close. */
    void (*refuse)(struct evbuffer *out, const char *msg);
    void (*close)(void *session, const char *why);
    void (*free)(void *session);
    /* Connection events, dispatched by phase (after each, both directions are flushed). */
    void (*login_data)(void *session);      /* client bytes in FRONT_LOGIN */
    void (*client_data)(void *session);     /* client bytes in FRONT_ACTIVE */
    void (*client_drained)(void *session);  /* FRONT_ACTIVE: the client's output drained */
    void (*client_tls_done)(void *session); /* the client's TLS handshake finished; may be NULL */
    void (*upstream_data)(void *session);   /* not closing */
    void (*upstream_drained)(void *session); /* FRONT_ACTIVE */
    void (*upstream_event)(void *session, int ev); /* conn_event, not closing */
    /* The audit log: a record could not be written (fail the session), or none is pending any more. */
    void (*audit_failed)(void *session);
    void (*audit_released)(void *session);  /* FRONT_ACTIVE */
} front_ops;

typedef struct front_session {
    front *front;
    void *owner;                     /* the front's session */
    conn **client, **upstream;       /* where the front keeps its connections */
    const char *prefix;              /* the front's log prefix ("pg#<id> <addr> <identity>") */
    audit_session *aud;              /* its audit records: freed only when none is pending */
    front_phase phase;
    struct front_session *next_dead; /* the reaper's list */
    struct front_session *all_next, *all_prev; /* every live session, for shutdown */
    uint64_t id;
    size_t limit_slot;               /* its identity's slot in the limits (by name), once counted */
    bool on_dead_list;               /* queued for the reaper: never queued twice */
    bool counted;                    /* holds one of its identity's connection slots */
    int closing_polls;               /* front_close_when_flushed: checks so far */
} front_session;

struct front {
    const front_ops *ops;
    struct event_base *base;
    const config *cfg;
    struct audit_log *audit;
    struct approvals *approvals;     /* NULL: held statements are refused */
    struct oidc *oidc;               /* token issuers of this generation's configuration (NULL: none) */
    SSL_CTX *tls_ctx;                /* NULL when no certificate is configured (tls_front_ctx) */
    SSL_CTX **upstream_tls;          /* per upstream, NULL when TLS is off */
    struct sockaddr_storage *upstream_addr;
    socklen_t *upstream_addrlen;     /* 0: not this front's protocol */
    identity_limits *limits;         /* shared by all generations (limits_ref) */
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
/* Reload: next (front_init'ed, not listening) takes prev's listener, limits,
 * approvals client and session ids; prev goes on serving its sessions. */
void front_take_over(front *next, front *prev);
/* Close every session (ops->close) and stop listening. */
void front_shutdown(front *f);
/* Free the sessions still queued, then everything front_init made. */
void front_cleanup(front *f);
bool front_upstream_addr(const front *f, int upstream_index, struct sockaddr_storage *ss, socklen_t *len);

/* A new session: listed, counted, given the next id; client, upstream and
 * prefix are the front's fields, read when needed. */
void front_session_add(front *f, front_session *fs, void *owner, conn **client, conn **upstream,
                       const char *prefix);
/* Its audit records (owner's audit_session; durability comes back through ops). */
void front_session_audit(front_session *fs, audit_session *aud, const char *protocol);
/* The front closed it (phase FRONT_DEAD): reads stop, its timer stops, queued for the reaper. */
void front_session_closed(front_session *fs, struct event *timer);
/* The phase of a front's client state st, when its states end with
 * CONNECTING, ACTIVE, CLOSING, DEAD (each front _Static_asserts it) and the
 * ones before connecting are the login. */
front_phase front_phase_of(int st, int connecting);
/* The front's client state changed (side "client"): the phase follows; a dead
 * session never comes back (abort: a bug). */
void front_session_transition(front_session *fs, front_phase phase, const char *side, const char *from,
                              const char *to);
void front_session_log(const front_session *fs, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Read both connections through the dispatch above (after a conn was made). */
void front_session_client_callbacks(front_session *fs);
void front_session_upstream_callbacks(front_session *fs);
/* Queue for the reaper (again, after the last pending audit record). */
void front_session_queue_free(front_session *fs);
/* From ops->free: unlisted, its connection slot given back. */
void front_session_remove(front_session *fs);

/* Per-identity limits (gate/limits.h): false when the identity is over them. */
bool front_session_take_connection_slot(front_session *fs, const cfg_identity *id);
bool front_session_take_statement_token(front_session *fs, const cfg_identity *id);

/* Write both directions now (after every message of an event moved). */
void front_session_flush(front_session *fs);
/* The last error is queued: close once the client read it (polling every 10
 * ms, at most 5 s), through ops->close with why. */
void front_close_when_flushed(front_session *fs, struct event *timer, const char *why);
void front_arm_timer(struct event *timer, int ms);

#endif
