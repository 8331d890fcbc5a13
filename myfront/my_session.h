/*
 * Internal to myfront: the session object shared by the handshake/auth,
 * upstream, relay, policy and audit modules.
 *
 * A session's life, with the state each step leaves it in:
 *
 *   client                 phigate                          upstream
 *   connect  ------------> HandshakeV10 (own scramble, id)   MYC_HANDSHAKE
 *   [SSLRequest, TLS] ---> (TLS handshake)                  MYC_TLS
 *   HandshakeResponse ---> AuthSwitchRequest?               MYC_AUTH_SWITCH
 *                          AuthMoreData(0x04)?              MYC_AUTH_FULL
 *                          identity proven ---------------> connect, greeting, login  MYC_CONNECTING
 *           <------------- OK (once the upstream is ready)  MYC_ACTIVE
 *   COM_* ---------------> policy, audit -----------------> COM_*
 *           <------------- (masked / scrubbed) response <-- response
 */
#ifndef PHIGATE_MY_SESSION_H
#define PHIGATE_MY_SESSION_H

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "gate/audit_session.h"
#include "gate/config.h"
#include "gate/front.h"
#include "gate/scram.h"
#include "myfront/my_front.h"
#include "myfront/my_wire.h"
#include "sqlpolicy/sqlpolicy.h"

struct event;
struct evbuffer;
struct minnec_outcome;
typedef struct conn conn;

/* Client side states; the comment says where the session is. */
#define MYC_STATES(X) \
    X(MYC_HANDSHAKE)   /* greeting sent; waiting for SSLRequest or HandshakeResponse */ \
    X(MYC_TLS)         /* TLS handshake with the client in progress */ \
    X(MYC_AUTH_SWITCH) /* AuthSwitchRequest sent; waiting for the client's auth data */ \
    X(MYC_AUTH_FULL)   /* caching_sha2 full authentication asked; waiting for the password (TLS) */ \
    X(MYC_AUTH_TOKEN_WAIT) /* token (mysql_clear_password, TLS) received; waiting for the issuer's keys */ \
    X(MYC_CONNECTING)  /* identity proven; upstream being opened, no OK sent yet */ \
    X(MYC_ACTIVE)      /* command phase: relaying */ \
    X(MYC_CLOSING)     /* flushing a last ERR, then closed */ \
    X(MYC_DEAD)        /* on the server's free list, freed after this loop turn */

typedef enum {
#define MYC_ENUM(s) s,
    MYC_STATES(MYC_ENUM)
#undef MYC_ENUM
} myc_state;

/* Upstream side states. */
#define MYU_STATES(X) \
    X(MYU_NONE)        /* no upstream yet */ \
    X(MYU_CONNECTING)  /* TCP connect in progress */ \
    X(MYU_GREETING)    /* waiting for the server's HandshakeV10 */ \
    X(MYU_TLS)         /* SSLRequest sent, TLS handshake in progress */ \
    X(MYU_AUTH)        /* HandshakeResponse sent; OK / ERR / AuthSwitch / AuthMoreData next */ \
    X(MYU_SETUP)       /* phigate's own session setup query in flight */ \
    X(MYU_READY)       /* serving the client's commands */

typedef enum {
#define MYU_ENUM(s) s,
    MYU_STATES(MYU_ENUM)
#undef MYU_ENUM
} myu_state;

/* Where the response to the command in flight is (my_relay.c). */
#define MYR_STATES(X) \
    X(MYR_IDLE)         /* no command in flight: the next client command may go */ \
    X(MYR_SIMPLE)       /* one OK / ERR (/ EOF for COM_SET_OPTION) */ \
    X(MYR_RESULT)       /* first packet of a result: OK, ERR, LOCAL INFILE or column count */ \
    X(MYR_COLUMNS)      /* column definitions of a result set */ \
    X(MYR_COLUMNS_EOF)  /* the EOF after them (no DEPRECATE_EOF) */ \
    X(MYR_ROWS)         /* rows until EOF / OK / ERR */ \
    X(MYR_PREPARE)      /* COM_STMT_PREPARE_OK or ERR */ \
    X(MYR_PARAMS)       /* parameter definitions of a prepared statement */ \
    X(MYR_PARAMS_EOF) \
    X(MYR_PCOLUMNS)     /* column definitions of a prepared statement */ \
    X(MYR_PCOLUMNS_EOF) \
    X(MYR_RESETUP)      /* after COM_RESET_CONNECTION: phigate's session setup again, the client's OK held */ \
    X(MYR_EXPLAIN)      /* phigate's own EXPLAIN before a PHI read (my_minnec.c): consumed, never relayed */

typedef enum {
#define MYR_ENUM(s) s,
    MYR_STATES(MYR_ENUM)
#undef MYR_ENUM
} myr_state;

const char *myc_state_name(myc_state s);
const char *myu_state_name(myu_state s);
const char *myr_state_name(myr_state s);

/* phigate's own setup of every upstream session (again after COM_RESET_CONNECTION,
 * which resets it): the server reports every change of database and of session
 * variables, and assigning sql_mode and character_set_client to themselves
 * makes it report their current values, which are checked like any change. */
#define MY_SETUP_SQL \
    "SET SESSION session_track_schema=ON, session_track_system_variables='*', " \
    "sql_mode=@@SESSION.sql_mode, character_set_client=@@SESSION.character_set_client"

typedef enum {
    MY_AUTH_NATIVE,  /* mysql_native_password against identities.*.mysql_native */
    MY_AUTH_SHA2,    /* caching_sha2_password full authentication (TLS) against the SCRAM verifier */
    MY_AUTH_TOKEN,   /* mysql_clear_password (TLS only) carrying a JWT for an oidc identity */
} my_auth_method;

typedef struct my_session {
    my_server *server;
    front_session fs;         /* listed, counted, freed by the reaper (gate/front.h) */
    uint64_t id;
    uint32_t connection_id;   /* what the client was told in the greeting */
    char prefix[192];         /* log prefix: "my#<id> <addr> <identity>" */
    char client_addr[64];     /* "ip:port" */
    char client_host[48];     /* "ip", for Access denied messages */

    myc_state state;
    myu_state ustate;
    conn *client;
    conn *upstream;
    struct event *timer;
    bool client_tls;
    bool upstream_tls;

    /* handshake and authentication */
    uint8_t scramble[MY_SCRAMBLE_LEN];
    uint8_t seq;                  /* id of the next packet phigate sends the client (login phase) */
    uint32_t client_caps;         /* capabilities agreed with the client */
    uint32_t client_max_packet;
    uint8_t charset;
    char user[MY_MAX_USER];
    char database[MY_MAX_DB];     /* as the client asked for it; "" = none */
    const cfg_identity *identity; /* NULL for an unknown user (mock path) */
    const cfg_role *role;         /* the identity's role, or the one its token named */
    struct oidc_wait *oidc_wait;  /* MYC_AUTH_TOKEN_WAIT: the pending key fetch */
    my_auth_method method;
    const char *auth_method_name;
    bool password_given;

    /* upstream */
    const cfg_upstream *up;
    int upstream_index;
    uint32_t up_caps;             /* capabilities agreed with the upstream */
    uint8_t up_seq;               /* next id phigate sends / expects on the upstream in login */
    uint8_t up_scramble[MY_SCRAMBLE_LEN];
    bool up_plugin_sha2;          /* the server's greeting named caching_sha2_password */
    uint16_t up_status;           /* server status of the last OK / EOF */
    bool track_state;             /* the upstream reports schema / variable changes */

    /* relay (my_relay.c) */
    myr_state rstate;
    uint8_t command;              /* the command in flight */
    uint8_t useq;                 /* id the next upstream packet must carry */
    uint8_t cseq;                 /* id of the next packet to the client */
    uint32_t pass_left;           /* bytes of the current packet still to forward unchanged */
    bool pass_continues;          /* the packet being forwarded is full-size: a continuation follows */
    bool binary_rows;             /* the result holds binary-protocol rows (COM_STMT_EXECUTE) */
    uint32_t result_columns;      /* columns of the result set being relayed */
    uint32_t columns_left;        /* definitions still to come */
    uint32_t params_left;
    bool discard_result;          /* refused LOCAL INFILE: the rest of the answer is not forwarded */
    const char *pending_error;    /* ...and this ERR goes to the client at its end */
    uint16_t pending_errno;
    const cfg_upstream *switch_to; /* COM_INIT_DB in flight: the upstream it moves to */
    struct evbuffer *held_ok;     /* MYR_RESETUP: the OK the client gets once the setup is done */

    /* policy (my_policy.c) */
    struct sqlp_engine *engine;
    struct my_policy_state *policy;
    struct sqlp_session *sqlsession;
    bool scrub_errors;            /* the statement in flight touches PHI: scrub its ERR text */
    struct my_held *held;         /* a statement waiting for approval (my_hold.c) */
    struct my_minnec *minnec;     /* a PHI read waiting for its minimum-necessary checks (my_minnec.c) */
    struct minnec_outcome *exec_checked; /* the EXECUTE at the head of the input passed its budget check */
    bool count_phi_rows;          /* the response in flight is a PHI read's: its rows count against the budget */
    uint64_t phi_rows;

    /* audit (my_audit.c) */
    struct my_audit_state *audit;
    audit_session aud;            /* records, and those not yet durable: results wait for them */
    bool audit_held;              /* stopped reading upstream: results wait for the audit log */
    bool upstream_paused;         /* stopped reading upstream: client output is full */
    bool client_paused;           /* stopped reading client: upstream output is full */
} my_session;

/* my_session.c */
void my_session_close(my_session *s, const char *why);
/* The one exit path that tells the client why: an ERR packet, flushed, then close. */
void my_session_fail(my_session *s, uint16_t code, const char *sqlstate, const char *message);
#define my_session_log(s, level, ...) front_session_log(&(s)->fs, (level), __VA_ARGS__)
void my_session_set_state(my_session *s, myc_state st);
void my_session_set_ustate(my_session *s, myu_state st);
void my_session_flush(my_session *s);
void my_session_arm_timer(my_session *s, int ms);
void my_session_upstream_callbacks(my_session *s);
/* Per-identity limits (gate/limits.h): false when the identity is over them. */
#define my_session_take_connection_slot(s) front_session_take_connection_slot(&(s)->fs, (s)->identity)
#define my_session_take_statement_token(s) front_session_take_statement_token(&(s)->fs, (s)->identity)
const config *my_server_config(const my_server *srv);
struct event_base *my_server_base(const my_server *srv);
SSL_CTX *my_server_tls_ctx(const my_server *srv);
SSL_CTX *my_server_upstream_tls(const my_server *srv, int upstream_index);
bool my_server_upstream_addr(const my_server *srv, int upstream_index, struct sockaddr_storage *ss, socklen_t *len);
const uint8_t *my_server_mock_secret(const my_server *srv);
struct oidc *my_server_oidc(const my_server *srv);
struct audit_log *my_server_audit(const my_server *srv);
/* The approval queue, or NULL when approvals are off (held statements are refused). */
struct approvals *my_server_approvals(const my_server *srv);
/* The engine of an upstream now (a new reference), or NULL and why (its catalog
 * loads on a worker thread: gate/engines.h). */
struct sqlp_engine *my_server_engine(my_server *srv, int upstream_index, char *err, size_t errlen);
struct engines *my_server_engines(const my_server *srv);
/* "<upstream's version>-phigate" once a catalog loaded, for the greeting. */
const char *my_server_version(my_server *srv);
/* Capabilities phigate offers its clients. */
uint32_t my_server_capabilities(const my_server *srv);

/* my_auth.c: handshake and client authentication */
void my_auth_greet(my_session *s);
void my_auth_on_client_data(my_session *s);
void my_auth_on_tls_done(my_session *s);
/* Read one whole logical packet at the head of in (login phase).  1: *payload
 * (malloc'd) and *len set, the packet removed; 0: need more bytes; -2: longer
 * than max (seen on a header, before its body); -3: sequence id out of order. */
int my_read_login_packet(struct evbuffer *in, uint8_t expect_seq, uint64_t max, uint8_t **payload, size_t *len,
                         uint8_t *seq);

/* my_upstream.c */
void my_upstream_start(my_session *s);
/* gate/engines: the engine the session waited for is there (or err says why not). */
void my_upstream_engine_ready(my_session *s, sqlp_engine *engine, const char *err);
void my_upstream_on_data(my_session *s);
void my_upstream_on_event(my_session *s, int ev);
/* The mysql upstream an identity reaches for a database name ("" = its default), or NULL + why. */
const cfg_upstream *my_upstream_for(my_session *s, const char *database, uint16_t *code, char *why, size_t whylen);

/* my_relay.c */
void my_relay_start(my_session *s);
void my_relay_client_data(my_session *s);
void my_relay_upstream_data(my_session *s);
void my_relay_client_drained(my_session *s);
void my_relay_upstream_drained(my_session *s);
void my_relay_audit_released(my_session *s);
void my_relay_free(my_session *s);
/* Check the session-state changes and status of an upstream OK (database,
 * sql_mode, character set, tracking itself); false: the session was failed. */
bool my_relay_check_ok_state(my_session *s, const my_ok *ok);
/* COM_QUERY of MY_SETUP_SQL to the upstream, sequence id 0. */
void my_upstream_send_setup(my_session *s);
/* A held command (wire bytes at the head of the client's input) approved:
 * text (the masked statement under the row cap; NULL when out of memory) goes
 * upstream in its place; takes over d. */
void my_relay_run_approved(my_session *s, size_t wire, const char *sql, size_t len, sqlp_decision *d,
                           const char *text, const char *approval_id, const struct minnec_outcome *mn);
/* A held command refused: its statement record, then the ERR. */
void my_relay_refuse_held(my_session *s, size_t wire, const char *sql, size_t len, const sqlp_decision *d,
                          const struct minnec_outcome *mn, uint16_t code, const char *sqlstate, const char *message);
/* A command the minimum-necessary checks (outcome mn) let run: as an allowed
 * statement, recorded with mn; takes over d. */
void my_relay_run_checked(my_session *s, size_t wire, uint32_t npackets, const char *sql, size_t len,
                          sqlp_decision *d, const struct minnec_outcome *mn);
/* After a hold ended: handle the commands that waited behind it. */
void my_relay_resume(my_session *s);
/* Answer the client's command (seq 1 onwards) with an ERR, nothing sent upstream. */
void my_relay_refuse(my_session *s, uint16_t code, const char *sqlstate, const char *message);

#endif
