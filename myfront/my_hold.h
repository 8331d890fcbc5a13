/*
 * Held statements in the MySQL front: a COM_QUERY or COM_STMT_PREPARE the
 * policy engine decided to HOLD waits for a human's approval (gate/hold.h and
 * gate/approvals.h, shared with pgfront).  While it waits the command stays at
 * the head of the client's input and no later command is handled, so the
 * protocol's order is kept; the client is still read (bounded) so that a
 * disconnect is seen and withdraws the request.
 *
 *   HOLD --approvals_request--> waiting --APPROVED--> the (masked) text under the approval's row cap
 *                                  |------DENIED / TIMEOUT / UNAVAILABLE--> ERR with the reason
 *                                  '------client disconnect / session end--> withdrawn
 */
#ifndef PHIGATE_MY_HOLD_H
#define PHIGATE_MY_HOLD_H

#include <stdbool.h>
#include <stddef.h>

#include "sqlpolicy/sqlpolicy.h"

typedef struct my_session my_session;

/* Start waiting for the held command (wire bytes at the head of the client's
 * input, the text sql/len); takes over the reference to d.  false: approvals
 * are not configured and the caller refuses as before.  mn: held by the
 * minimum-necessary checks (their rule and reason; NULL = by the engine). */
struct minnec_outcome;
bool my_hold_start(my_session *s, size_t wire, const char *sql, size_t len, sqlp_decision *d,
                   const struct minnec_outcome *mn);
bool my_hold_waiting(const my_session *s);
/* The session is closing: withdraw a pending request (audited), free the hold. */
void my_hold_withdraw(my_session *s, const char *why);

#endif
