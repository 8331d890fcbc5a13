/*
 * Held statements: a Query or Parse the policy engine decided to HOLD waits
 * for a human's approval through gate/approvals (Redis).  While it waits the
 * message stays at the head of the client's input and nothing after it is
 * read, so the protocol's order is kept; the upstream side keeps flowing.
 *
 *   HOLD --approvals_request--> waiting --APPROVED--> forward the (rewritten) text
 *                                  |------DENIED / TIMEOUT / UNAVAILABLE--> refuse
 *                                  '------CancelRequest / disconnect--> withdraw
 */
#ifndef PHIGATE_PG_HOLD_H
#define PHIGATE_PG_HOLD_H

#include <stdbool.h>
#include <stdint.h>

#include "sqlpolicy/sqlpolicy.h"

typedef struct pg_session pg_session;

struct minnec_outcome;
/* Start waiting for the held message (type, total bytes at the head of the
 * client's input); takes over the reference to d.  mn: held by the
 * minimum-necessary checks (its rule and reason go to the approver; copied),
 * NULL: held by the decision.  false: approvals are not configured and the
 * caller refuses as before (d is still the caller's). */
bool pg_hold_start(pg_session *s, char type, uint32_t total, const char *name, const char *sql, size_t len,
                   const uint8_t *types, size_t types_len, sqlp_decision *d, const struct minnec_outcome *mn);
bool pg_hold_waiting(const pg_session *s);
/* CancelRequest from the client: withdraw the request and refuse with 57014. */
void pg_hold_cancel(pg_session *s);
/* The session ends: withdraw the request. */
void pg_hold_free(pg_session *s);

#endif
