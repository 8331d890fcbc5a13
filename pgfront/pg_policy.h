/*
 * pgfront's use of sqlpolicy: the engine per upstream (catalog read from the
 * upstream's pg_catalog with libpq), the decision on Query/Parse, and the
 * defence in depth on the way back (RowDescription of base PHI columns,
 * ErrorResponse/NoticeResponse scrubbing).
 */
#ifndef PHIGATE_PG_POLICY_H
#define PHIGATE_PG_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gate/config.h"
#include "sqlpolicy/sqlpolicy.h"

struct evbuffer;
typedef struct pg_session pg_session;

/* Read the upstream's catalog and the masking rules into a new engine.
 * Blocking (libpq): called at start and when a session finds none loaded. */
sqlp_engine *pg_policy_load_engine(const config *cfg, const cfg_upstream *up, char *err, size_t errlen);

typedef enum {
    PG_POLICY_FORWARD,  /* the message is forwarded unchanged */
    PG_POLICY_REPLACED, /* the message was consumed and a rewritten one queued upstream */
    PG_POLICY_REFUSED,  /* the message was consumed and refused */
    PG_POLICY_HELD,     /* the message waits for approval (pg_hold.c) */
    PG_POLICY_BROKEN,   /* malformed: the session was failed */
} pg_policy_action;

/* Decide a Query ('Q') or Parse ('P') message of total bytes at the head of in. */
pg_policy_action pg_policy_client_message(pg_session *s, char type, uint32_t total);

/* A Query/Parse message's fields, copied: the client's input may move while
 * the statement waits (approval, estimate). */
typedef struct pg_stmt_copy {
    char type;
    uint32_t total;
    char *name, *sql;
    size_t len;
    uint8_t *types;
    size_t types_len;
} pg_stmt_copy;
void pg_stmt_copy_init(pg_stmt_copy *m, char type, uint32_t total, const char *name, const char *sql, size_t len,
                       const uint8_t *types, size_t types_len);
void pg_stmt_copy_clear(pg_stmt_copy *m);

struct minnec_outcome;
/* What follows a decision that was not held: the audit record, the prepared
 * statement's bookkeeping, then forward / rewrite / refuse the message at the
 * head of the client's input.  Takes over d; mn = minimum-necessary checks or NULL. */
pg_policy_action pg_policy_apply(pg_session *s, char type, uint32_t total, const char *name, const char *sql,
                                 size_t len, const uint8_t *types, size_t types_len, sqlp_decision *d,
                                 const struct minnec_outcome *mn);
/* pg_relay.c: finish a message the policy acted on (move a forwarded one, count a Query's batch). */
void pg_relay_after_policy(pg_session *s, char type, uint32_t total, pg_policy_action action);

/* Scrub errors and notices up to the next batch sent (a PHI statement's, when
 * phigate sent batches of its own between its decision and its sending). */
void pg_policy_scrub_next_batch(pg_session *s);

/* Note the statement a Bind ('B') uses, for scrubbing its errors. */
struct evbuffer_ptr;
void pg_policy_note_bind(pg_session *s, struct evbuffer *in, const struct evbuffer_ptr *at, uint32_t total);

/* Upstream messages that need a look: RowDescription always, DataRow while a PHI
 * column arrived unmasked, Error/Notice while a PHI statement is answered.
 * Moves the (possibly rewritten) message from in to out. */
void pg_policy_server_message(pg_session *s, char type, uint32_t total, struct evbuffer *in, struct evbuffer *out);
bool pg_policy_server_needs_look(const pg_session *s, char type);

/* Keep a Parse's decision (takes over the reference) for the audit of its Executes. */
void pg_policy_remember(pg_session *s, const char *name, const char *sql, size_t len, sqlp_decision *d);

/* The decision and received text of a prepared statement ("" = unnamed); NULL if unknown. */
const sqlp_decision *pg_policy_prepared(pg_session *s, const char *name, const char **text);

void pg_policy_session_free(pg_session *s);

#endif
