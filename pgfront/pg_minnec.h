/*
 * Minimum necessary on the PostgreSQL wire (gate/min_necessary.h does the
 * judging): before a PHI read the policy engine allowed runs, phigate asks
 * the planner for its row estimate and Redis for the identity's PHI rows in
 * the current window, then runs the statement or holds it for approval.
 *
 * While the checks run, the statement stays at the head of the client's
 * input and nothing after it is read (as with a held statement), so the
 * protocol's order is kept.  The EXPLAIN goes to the session's own upstream
 * connection as a Query of its own, sent only at a batch boundary (never
 * inside an unsynced extended-protocol batch); its answer is consumed here
 * and never reaches the client or the audit trackers:
 *
 *   client:   ... Sync | Q "SELECT ... patients ..."  (waits at the head)
 *   upstream: ... Sync | Q "EXPLAIN (FORMAT JSON) <rewritten>"  -> T D C Z (ours)
 *   Redis:    budget script (add 0)                              -> used, ttl
 *   both in -> run it (pg_policy_apply) | hold it (pg_hold) | refuse it
 */
#ifndef PHIGATE_PG_MINNEC_H
#define PHIGATE_PG_MINNEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sqlpolicy/sqlpolicy.h"

struct evbuffer;
typedef struct pg_session pg_session;

/* The decision d (ALLOW/REWRITE) of the Query/Parse at the head of the client's
 * input: when the role's checks apply, take it over (and the message's fields,
 * copied) and return true; the statement then runs, is held or refused once
 * the checks are in.  false: nothing to check, d is still the caller's. */
bool pg_minnec_start(pg_session *s, char type, uint32_t total, const char *name, const char *sql, size_t len,
                     const uint8_t *types, size_t types_len, sqlp_decision *d);
bool pg_minnec_pending(const pg_session *s);

/* An Execute (total bytes at pos in in) of a prepared PHI read, for a role with
 * a budget: it must be checked before it runs (pg_minnec_start_execute). */
struct evbuffer_ptr;
bool pg_minnec_execute_needs_check(pg_session *s, struct evbuffer *in, const struct evbuffer_ptr *pos,
                                   uint32_t total);
/* Check the budget for the Execute at the head of the client's input; it then
 * runs, or is refused (an Execute cannot wait for approval: its Parse was
 * judged already and the rest of its batch is in flight). */
void pg_minnec_start_execute(pg_session *s, uint32_t total);
/* A Parse these checks held was approved: its next Execute runs without a budget check. */
void pg_minnec_approved_parse(pg_session *s, const char *name);

/* The upstream message at the head of in answers phigate's own EXPLAIN. */
bool pg_minnec_owns_upstream(const pg_session *s);
/* Consume it (asynchronous ParameterStatus/Notification go on to the client).
 * After its ReadyForQuery, call pg_minnec_explain_done. */
void pg_minnec_upstream_message(pg_session *s, char type, struct evbuffer *in, uint32_t total);
void pg_minnec_explain_done(pg_session *s);

/* Rows of a PHI read's result: counted against the identity's budget in Redis. */
void pg_minnec_count_rows(pg_session *s, uint64_t rows);

void pg_minnec_free(pg_session *s);

#endif
