/*
 * Internal to pgfront: the session object shared by the startup/auth,
 * upstream and relay modules.
 */
#ifndef PHIGATE_PG_SESSION_H
#define PHIGATE_PG_SESSION_H

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "gate/audit_session.h"
#include "gate/config.h"
#include "gate/front.h"
#include "gate/scram.h"
#include "pgfront/pg_front.h"
#include "pgfront/pg_wire.h"

struct event;
typedef struct conn conn;

/* Client side states; the comment says where the session is. */
#define PGC_STATES(X) \
    X(PGC_STARTUP)          /* waiting for SSLRequest / StartupMessage / CancelRequest */ \
    X(PGC_AUTH_INIT)        /* sent AuthenticationSASL, waiting for SASLInitialResponse */ \
    X(PGC_AUTH_FINAL)       /* sent SASLContinue, waiting for SASLResponse */ \
    X(PGC_AUTH_TOKEN)       /* sent AuthenticationCleartextPassword (TLS only), waiting for the JWT */ \
    X(PGC_AUTH_TOKEN_WAIT)  /* token received, waiting for the issuer's keys (oidc.c) */ \
    X(PGC_CONNECTING)       /* client authenticated, upstream being opened */ \
    X(PGC_ACTIVE)           /* relaying statements both ways */ \
    X(PGC_CLOSING)          /* flushing a last error, then closed */ \
    X(PGC_DEAD)             /* on the server's free list, freed after this loop turn */

typedef enum {
#define PGC_ENUM(s) s,
    PGC_STATES(PGC_ENUM)
#undef PGC_ENUM
} pgc_state;

/* Upstream side states. */
#define PGU_STATES(X) \
    X(PGU_NONE)             /* no upstream yet */ \
    X(PGU_CONNECTING)       /* TCP connect in progress */ \
    X(PGU_SSL_ANSWER)       /* sent SSLRequest, waiting for 'S' or 'N' */ \
    X(PGU_TLS_HANDSHAKE)    /* TLS handshake with the upstream */ \
    X(PGU_AUTH)             /* sent StartupMessage, authenticating */ \
    X(PGU_READY)            /* after the first ReadyForQuery */

typedef enum {
#define PGU_ENUM(s) s,
    PGU_STATES(PGU_ENUM)
#undef PGU_ENUM
} pgu_state;

const char *pgc_state_name(pgc_state s);
const char *pgu_state_name(pgu_state s);

/* A refusal waiting for the upstream's answer to the failing stand-in we sent
 * in place of the refused message (see pg_relay.c). */
typedef struct pg_substitution {
    struct pg_substitution *next;
    uint64_t sync_ordinal; /* the batch (Query or Sync) it belongs to */
    char expect[6];        /* SQLSTATE the server answers the stand-in with */
    char sqlstate[6];
    char message[512];
} pg_substitution;

typedef struct pg_session {
    pg_server *server;
    front_session fs;               /* listed, counted, freed by the reaper (gate/front.h) */
    struct pg_session *cancel_next; /* chain in the cancel-key table */
    uint64_t id;
    char prefix[192]; /* log prefix: "pg#<id> <addr> <identity>" */
    char client_addr[64];

    pgc_state state;
    pgu_state ustate;
    conn *client;
    conn *upstream;
    struct event *timer;
    bool client_tls;
    bool upstream_tls;

    /* startup */
    char *startup_copy;           /* owns the strings params point into */
    pg_startup startup;
    char user[64];
    char database[64];
    const cfg_identity *identity; /* NULL for an unknown user (mock path) */
    const cfg_role *role;         /* the identity's role, or the one its token named */
    struct oidc_wait *oidc_wait;  /* PGC_AUTH_TOKEN_WAIT: the pending key fetch */
    scram_server scram;
    scram_channel_binding cbind;

    /* upstream */
    const cfg_upstream *up;
    int upstream_index;
    scram_client upscram;
    uint32_t up_pid, up_key;
    uint32_t cancel_pid, cancel_key; /* what the client got from us */
    struct evbuffer *param_status;   /* ParameterStatus messages collected at startup */

    /* relay */
    uint64_t syncs_sent;   /* Query / Sync / FunctionCall sent upstream */
    uint64_t syncs_done;   /* ReadyForQuery received */
    pg_substitution *subst_head, *subst_tail;
    char txn_status;
    uint64_t scrub_through; /* scrub Error/Notice text while answering batches up to this one */
    struct sqlp_engine *engine;
    struct pg_policy_state *policy;
    struct sqlp_session *sqlsession; /* PREPARE / DECLARE names the engine saw */
    /* audit */
    struct pg_audit_state *audit;
    audit_session aud;     /* records, and those not yet durable: results wait for them */
    const char *scram_method;
    bool audit_held;       /* stopped reading upstream: results wait for the audit log */
    struct pg_held *held;  /* a statement waiting for approval (pg_hold.c) */
    struct pg_minnec *minnec; /* a PHI read waiting for its estimate / budget checks (pg_minnec.c) */
    uint64_t explain_ordinal; /* the batch of phigate's own EXPLAIN; 0 = none */
    bool ext_batch_open;   /* extended-protocol messages sent since the last Sync */
    bool execute_checks;   /* the Execute at the head of the input needs its budget checked */
    char *budget_pass;     /* prepared statement whose next Execute an approval let past the budget */
    bool terminating;      /* the client sent Terminate: relay what is left, then close */
    bool upstream_eof;     /* the upstream closed: relay what it sent, then close */
    bool upstream_paused;  /* stopped reading upstream: client output is full */
    bool client_paused;    /* stopped reading client: upstream output is full */
} pg_session;

/* pg_session.c */
void pg_session_close(pg_session *s, const char *why);
void pg_session_fail(pg_session *s, const char *sqlstate, const char *message, const char *hint);
/* Flush what the client has to read, then close (no error to add). */
void pg_session_finish(pg_session *s, const char *why);
#define pg_session_log(s, level, ...) front_session_log(&(s)->fs, (level), __VA_ARGS__)
void pg_session_set_state(pg_session *s, pgc_state st);
void pg_session_set_ustate(pg_session *s, pgu_state st);
const config *pg_server_config(const pg_server *srv);
struct event_base *pg_server_base(const pg_server *srv);
SSL_CTX *pg_server_upstream_tls(const pg_server *srv, int upstream_index);
bool pg_server_upstream_addr(const pg_server *srv, int upstream_index, struct sockaddr_storage *ss, socklen_t *len);
const uint8_t *pg_server_mock_secret(const pg_server *srv);
void pg_session_arm_timer(pg_session *s, int ms);

/* pg_auth.c: startup and client authentication */
void pg_auth_on_client_data(pg_session *s);

/* pg_upstream.c */
void pg_upstream_start(pg_session *s);
void pg_upstream_on_data(pg_session *s);
void pg_upstream_on_event(pg_session *s, int ev);

/* pg_relay.c */
void pg_relay_start(pg_session *s);
void pg_relay_client_data(pg_session *s);
void pg_relay_upstream_data(pg_session *s);
void pg_relay_client_drained(pg_session *s);
void pg_relay_upstream_drained(pg_session *s);
void pg_relay_free(pg_session *s);
void pg_relay_audit_released(pg_session *s);
void pg_relay_upstream_closed(pg_session *s);
void pg_relay_refuse(pg_session *s, char type, uint32_t total, const char *sqlstate, const char *message);

/* pg_cancel.c */
void pg_cancel_register(pg_session *s);
void pg_cancel_unregister(pg_session *s);
void pg_cancel_request(pg_server *srv, uint32_t pid, uint32_t key);



/* more of pg_session.c */
void pg_session_client_callbacks(pg_session *s);
void pg_session_upstream_callbacks(pg_session *s);
void pg_session_flush(pg_session *s);
SSL_CTX *pg_server_tls_ctx(const pg_server *srv);
struct audit_log *pg_server_audit(const pg_server *srv);
struct approvals *pg_server_approvals(const pg_server *srv);
struct oidc *pg_server_oidc(const pg_server *srv);
/* Per-identity limits (gate/limits.h): false when exceeded. */
#define pg_session_take_connection_slot(s) front_session_take_connection_slot(&(s)->fs, (s)->identity)
#define pg_session_take_statement_token(s) front_session_take_statement_token(&(s)->fs, (s)->identity)
struct engines *pg_server_engines(const pg_server *srv);
/* pg_upstream.c: the engine a session waited for is there (or err says why not). */
void pg_upstream_engine_ready(pg_session *s, struct sqlp_engine *engine, const char *err);
#endif
