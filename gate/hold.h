/*
 * Held statements: what pgfront and myfront share when the policy engine
 * decides HOLD.  The front keeps the statement at the head of the client's
 * input and stops reading; gate/approvals asks Redis and calls back once:
 *
 *   HOLD --hold_request()--> approvals_request --APPROVED--> hold_capped_sql(): run under the row cap
 *                                               |-DENIED / TIMEOUT / UNAVAILABLE--> hold_refusal(): an error
 *                                               '-client gone / cancel--> approval_wait_cancel (withdrawn)
 *
 * Only the wire is the front's: here the request, the row cap and the words
 * the agent reads, so both protocols say the same thing.
 */
#ifndef PHIGATE_HOLD_H
#define PHIGATE_HOLD_H

#include <stddef.h>
#include <stdint.h>

#include "gate/approvals.h"
#include "gate/min_necessary.h"
#include "sqlpolicy/sqlpolicy.h"

/* Who holds the statement (strings borrowed for the request's duration). */
typedef struct {
    const char *identity, *client_addr, *database, *protocol;
    uint32_t wait_ms; /* approvals.wait_ms */
} hold_origin;

/* What an approver is asked about and an approval is bound to (borrowed):
 * the policy decision's, or the minimum-necessary checks' that held it. */
typedef struct {
    const char *fingerprint, *rule, *reason;
} hold_subject;

/* The subject of a statement the policy decision held. */
hold_subject hold_subject_of(const sqlp_decision *d);

/* What a held statement is bound to, kept by the front while it waits (not
 * moved once set: subject points into it).  Held by the minimum-necessary
 * checks (mn): their outcome, copied, with their rule and reason, and a
 * fingerprint from hold_text_fingerprint (the engine fingerprints only what it
 * holds); else the decision's. */
typedef struct hold_binding {
    bool has_mn;
    minnec_outcome mn;
    char *fingerprint;     /* malloc'd; NULL when none could be had */
    hold_subject subject;  /* fingerprint, rule, reason */
} hold_binding;

void hold_binding_init(hold_binding *b, const sqlp_decision *d, const minnec_outcome *mn, const char *sql, size_t len);
/* The checks' outcome, or NULL when the engine held it. */
const minnec_outcome *hold_binding_mn(const hold_binding *b);
void hold_binding_clear(hold_binding *b);

/* The approval request for a held statement (NUL-terminated text as the agent sent it). */
approval_request hold_request(const hold_origin *o, const hold_subject *what, const char *statement);

/* The statement's fingerprint for grants and audit records, or NULL. */
const char *hold_fingerprint(const sqlp_decision *d);

/* A fingerprint for a statement the engine allowed and a front's own check
 * holds (minimum necessary), malloc'd: pg_query's of the text, or, for text
 * PostgreSQL's parser does not take (MySQL: LIMIT 5, 10, ?), "sha256:<hex>" of
 * the exact text, which binds an approval to that text only.  NULL: out of memory. */
char *hold_text_fingerprint(const char *sql, size_t len);

/* The text to run once approved (malloc'd; NULL when out of memory): a single
 * read under a row cap becomes the approved text as a subquery under LIMIT, so
 * the server itself stops at the cap and the row count stays consistent. */
char *hold_capped_sql(const sqlp_decision *d, uint64_t row_cap);

/* Why a held statement is refused.  The kind picks the front's error code;
 * msg (with the approver's reason, the request id and what to do) is the same
 * for both protocols. */
typedef enum {
    HOLD_REFUSED_DENIED,      /* an approver said no */
    HOLD_REFUSED_TIMEOUT,     /* nobody decided in time: the request stays pending */
    HOLD_REFUSED_UNAVAILABLE, /* the approval queue (Redis) cannot be reached */
    HOLD_REFUSED_CANCELLED,   /* the client cancelled: the request was withdrawn */
} hold_refusal_kind;

hold_refusal_kind hold_refusal(approval_outcome outcome, const approval_result *r, const char *rule, char *msg,
                               size_t msglen);

/* The text of a cancelled hold's refusal. */
#define HOLD_CANCELLED_MESSAGE "canceling statement due to user request (its approval request was withdrawn)"

#endif
