/*
 * approvals: the approval queue in Redis, driven from phigate's own libevent
 * loop with hiredis's async API.  Nothing here blocks the loop.
 *
 * Two kinds of user:
 *   - a front (pgfront, myfront) holding a statement: approvals_request() asks
 *     for an approval and calls back once with the outcome;
 *   - the admin console / API: approvals_list_pending(), approvals_get() and
 *     approvals_decide().
 *
 * Callback contract (every callback in this header):
 *   - it runs exactly once, unless the handle was cancelled first (then never);
 *   - it never runs inside the call that started the operation: it comes from
 *     the loop (or from approvals_free(), see there);
 *   - a failure to talk to Redis (down, slow, garbage reply) is a failure,
 *     never a success: APPROVAL_UNAVAILABLE / DECISION_UNAVAILABLE / err set;
 *   - pointers passed to a callback are valid only during the callback;
 *   - a handle is invalid once its callback has started: cancel it before,
 *     never after.
 * Every Redis command has its own timer (opts.timeout_ms); a command that
 * times out fails its operation and the connection is rebuilt, with backoff
 * (100 ms doubling to 5 s), so one stuck server cannot hang a statement.
 *
 * The Redis data model (all keys start with opts.key_prefix, P below) is
 * described in gate/APPROVALS.md; in short:
 *   P req:<id>      hash: the request and, once decided, the decision
 *   P pending       sorted set: ids of pending requests, scored by creation ms
 *   P grant:<h>     hash: an approval usable by identity + fingerprint,
 *                   h = sha1(identity NUL fingerprint); expires by PEXPIREAT
 *   P events        pub/sub channel: "new <id>", "decided <id>", "withdrawn <id>",
 *                   "expired <id>"
 * Every state change is one Lua script (EVALSHA), so two approvers racing cannot
 * both win, an expired or withdrawn request cannot be approved, a requester
 * cannot approve their own request, and a single-use grant is used once.
 */
#ifndef PHIGATE_APPROVALS_H
#define PHIGATE_APPROVALS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct config;

#define APPROVALS_WUR __attribute__((warn_unused_result))

/* Longest statement put to an approver; longer ones are refused outright. */
#define APPROVALS_MAX_STATEMENT (1024 * 1024)
#define APPROVALS_ID_LEN 16 /* hex characters of a request id */

typedef enum {
    APPROVAL_GRANT_MODE_SINGLE_USE = 0, /* same values as config's approval_grant_mode */
    APPROVAL_GRANT_MODE_TTL = 1,
} approvals_grant_mode;

typedef struct {
    const char *host;
    int port;
    const char *password;   /* NULL = no AUTH */
    const char *key_prefix; /* "phigate:" when NULL */
    uint32_t request_ttl_s; /* how long a request stays pending in Redis (approvable) */
    approvals_grant_mode grant_mode;
    uint32_t grant_ttl_s;   /* lifetime of an approval given without an explicit ttl */
    uint32_t timeout_ms;    /* per Redis command and per connect attempt; 0 = 2000 */
    uint32_t poll_ms;       /* a waiter re-reads its request this often, in case a
                               pub/sub message was missed; 0 = 1000 */
    const char *instance;   /* recorded in requests (which phigate holds it); may be NULL */
} approvals_opts;

typedef struct approvals approvals;

/* Fill opts from the redis: and approvals: sections (strings stay owned by cfg). */
void approvals_opts_from_config(const struct config *cfg, approvals_opts *o);

/* Starts connecting at once (asynchronously); returns NULL only on bad options. */
approvals *approvals_new(struct event_base *base, const approvals_opts *o, char *err, size_t errlen);
/* Fails every operation still running: their callbacks run inside this call
 * (waiters with APPROVAL_UNAVAILABLE), then everything is freed. */
void approvals_free(approvals *a);
/* Connected, authenticated and answering: requests can be made. */
bool approvals_available(const approvals *a);
/* Why not available (last connection error), for error messages; never NULL. */
const char *approvals_last_error(const approvals *a);

/* ---- holding a statement ------------------------------------------------- */

typedef enum {
    APPROVAL_APPROVED,    /* run it (respecting row_cap) */
    APPROVAL_DENIED,      /* an approver said no (reason), or the request cannot stand */
    APPROVAL_TIMEOUT,     /* nobody decided within wait_ms; the request stays pending */
    APPROVAL_UNAVAILABLE, /* Redis down/slow/broken: refuse (fail closed) */
} approval_outcome;

const char *approval_outcome_name(approval_outcome o);

typedef struct {
    const char *request_id; /* NULL only when no request was created */
    const char *approver;   /* who decided; NULL when nobody did */
    const char *reason;     /* the approver's reason, or why it failed/timed out; never NULL */
    uint64_t row_cap;       /* 0 = none */
} approval_result;

typedef void (*approval_cb)(void *arg, approval_outcome outcome, const approval_result *r);

typedef struct {
    const char *identity, *client_addr, *database, *protocol;
    const char *statement; /* exactly as the agent sent it */
    const char *fingerprint, *reason, *rule;
    uint32_t wait_ms; /* 0 = don't wait: a grant or APPROVAL_TIMEOUT at once (request created) */
} approval_request;

typedef struct approval_wait approval_wait;

/*
 * First consumes a grant for identity + fingerprint (single-use grants are
 * deleted, TTL grants kept) -> APPROVAL_APPROVED.  Otherwise creates request
 * <id>, adds it to the pending set, publishes "new <id>" and waits up to
 * wait_ms for a decision: a pub/sub message wakes the waiter early; a poll
 * every opts.poll_ms covers lost messages.  On approval the waiter claims the
 * grant the decision created (so a single-use approval runs one statement).
 * On timeout the request stays pending for request_ttl_s: an approval given
 * later becomes a grant the agent's retry consumes.  Redis down or slow, or
 * the connection lost while waiting -> APPROVAL_UNAVAILABLE (the request, if
 * created, stays in Redis).  NULL only when out of memory.
 */
approval_wait *approvals_request(approvals *a, const approval_request *req, approval_cb cb, void *arg) APPROVALS_WUR;
/* The agent gave up (cancel, disconnect): no callback; the pending request is withdrawn in Redis. */
void approval_wait_cancel(approval_wait *w);
/* The request id (16 hex characters), known from the start, for logs and audit. */
const char *approval_wait_id(const approval_wait *w);

/* ---- deciding (admin console, API) ---------------------------------------- */

typedef struct {
    const char *id, *status; /* pending | approved | denied | withdrawn | expired */
    const char *identity, *client_addr, *database, *protocol, *statement, *fingerprint, *reason, *rule;
    const char *instance, *decided_by, *decision_reason; /* "" when absent */
    uint64_t created_ms, expires_ms, decided_ms; /* Redis server clock, ms since the epoch; 0 = absent */
    uint64_t row_cap;
    bool waiting; /* an agent is still waiting on it (otherwise the approval serves a retry) */
} approval_info;

typedef struct approvals_op approvals_op;

/* err == NULL on success; items valid during the call only.  now_ms: Redis's clock. */
typedef void (*approvals_info_cb)(void *arg, const char *err, const approval_info *items, size_t n,
                                  uint64_t now_ms);

/* Up to limit (1..1000) pending requests, oldest first; expired ones are marked and dropped. */
approvals_op *approvals_list_pending(approvals *a, size_t limit, approvals_info_cb cb, void *arg) APPROVALS_WUR;
/* One request in any state; n == 0 with err == NULL when there is no such request. */
approvals_op *approvals_get(approvals *a, const char *id, approvals_info_cb cb, void *arg) APPROVALS_WUR;

typedef enum {
    DECISION_OK,
    DECISION_NOT_FOUND,   /* no such request (or it aged out of Redis) */
    DECISION_NOT_PENDING, /* already approved/denied/withdrawn: the other approver won */
    DECISION_EXPIRED,     /* past request_ttl_s */
    DECISION_SELF,        /* the approver is the requester */
    DECISION_INVALID,     /* bad arguments (id, reason, ttl) */
    DECISION_UNAVAILABLE, /* Redis down/slow: nothing was decided */
} approval_decision_status;

const char *approval_decision_status_name(approval_decision_status s);

typedef struct {
    const char *request_id;
    const char *approver;
    bool approve;         /* false = deny */
    const char *reason;   /* required for a denial, optional for an approval */
    uint32_t grant_ttl_s; /* 0 = opts.grant_ttl_s; at most 7 days */
    uint64_t row_cap;     /* 0 = none */
} approval_decision;

/* msg: a sentence for the approver (why it failed, or what was done). */
typedef void (*approvals_decide_cb)(void *arg, approval_decision_status st, const char *msg);

approvals_op *approvals_decide(approvals *a, const approval_decision *d, approvals_decide_cb cb,
                               void *arg) APPROVALS_WUR;
/* The caller is gone: its callback will not run (a decision already sent still happens). */
void approvals_op_cancel(approvals_op *op);

/* ---- PHI row budgets (gate/min_necessary.h) ------------------------------- */

/* err == NULL on success: used = PHI rows counted for the identity in the
 * current window (after adding), ttl_ms = what is left of the window (-1: none open). */
typedef void (*approvals_budget_cb)(void *arg, const char *err, uint64_t used, int64_t ttl_ms);

/* Add rows (0 = just read) to identity's count in key P budget:<identity>; a
 * window opens with the first row counted and lasts window_ms.  cb may be NULL. */
approvals_op *approvals_budget(approvals *a, const char *identity, uint64_t add, uint32_t window_ms,
                               approvals_budget_cb cb, void *arg) APPROVALS_WUR;
/* Count rows of a finished PHI read against identity's budget, not tied to
 * any session (the count is kept if it closes meanwhile); a failure is logged
 * under front's name. */
void approvals_budget_count(approvals *a, const char *front, const char *identity, uint64_t rows,
                            uint32_t window_ms);

#endif
