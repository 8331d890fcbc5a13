/*
 * approvals: see approvals.h for the contract and APPROVALS.md for the data
 * model.  Layout of this file:
 *
 *   rconn    one hiredis async connection (connect, AUTH, handshake, backoff);
 *            two of them: "command" for scripts, "events" for SUBSCRIBE
 *            (a subscribed RESP2 connection cannot run other commands)
 *   redis_cmd     one command with its own timer; its completion function runs
 *            exactly once, with a reply or with NULL and a reason
 *   waiter   a held statement (approval_wait): BEGIN -> WAITING -> DONE
 *   op       an admin operation (list, get, decide)
 *
 * Nothing user-visible runs inside hiredis: completions only record a result
 * and activate the owner's "fire" event; the user's callback runs from there.
 */
#include "gate/approvals.h"

#include <errno.h>
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gate/approvals_lua.h"
#include "gate/config.h"
#include "gate/log.h"
#include "gate/min_necessary.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define HEALTH_MS 5000 /* PING on an idle command connection */
#define MAX_FIELD (APPROVALS_MAX_STATEMENT + 1024)
#define MAX_TEXT 4096      /* reasons, names, addresses from Redis */
#define MAX_LIST 1000      /* items in one list reply */
#define MAX_GRANT_TTL_S 604800
#define LOG_PREFIX "approvals"
#define LIST_BUDGET "16777216" /* statement bytes in one list reply */

/* The scripts, loaded (SCRIPT LOAD) in every connection's handshake and run by
 * EVALSHA, so a poll sends a digest, not a kilobyte of Lua. */
typedef enum { S_BEGIN, S_CLAIM, S_DECIDE, S_WITHDRAW, S_STOPPED_WAITING, S_LIST, S_GET, S_BUDGET, S_COUNT } script_id;
static const char *const script_text[S_COUNT] = {
    APPROVALS_LUA_BEGIN,    APPROVALS_LUA_CLAIM, APPROVALS_LUA_DECIDE, APPROVALS_LUA_WITHDRAW,
    APPROVALS_LUA_STOPPED_WAITING, APPROVALS_LUA_LIST, APPROVALS_LUA_GET, MINNEC_LUA_BUDGET,
};

_Static_assert((int)APPROVAL_GRANT_MODE_SINGLE_USE == (int)APPROVAL_GRANT_SINGLE_USE, "grant mode values");
_Static_assert((int)APPROVAL_GRANT_MODE_TTL == (int)APPROVAL_GRANT_TTL, "grant mode values");

/* ---- types ------------------------------------------------------------------ */

typedef enum {
    RC_DOWN,       /* no socket; retry_ev pending (or shutting down) */
    RC_CONNECTING, /* socket + handshake in flight; deadline_ev pending */
    RC_READY,      /* handshake done: commands may be sent */
    RC_FAILING,    /* broken, reset_ev will free the socket from a clean stack */
} rconn_state;

typedef struct rconn {
    approvals *a;
    const char *name; /* "command" or "events", for logs */
    bool subscriber;
    rconn_state state;
    redisAsyncContext *ac;
    uint64_t gen;     /* bumped per socket, so a stale timeout cannot reset a new one */
    int scripts_loaded; /* handshake progress (command connection) */
    uint32_t backoff_ms;
    bool logged_down; /* one warning per outage, not one per retry */
    struct event *retry_ev, *deadline_ev, *reset_ev;
} rconn;

typedef void (*rcmd_fn)(approvals *a, void *priv, const redisReply *r, const char *err);

typedef struct redis_cmd {
    approvals *a;
    struct redis_cmd *prev, *next; /* in a->rcmds, so approvals_free can finish every one */
    rconn *c;
    uint64_t gen;
    rcmd_fn fn;
    void *priv;
    struct event *timer;
    bool done;       /* fn has run */
    bool in_hiredis; /* hiredis still holds our callback: it frees us */
    char err[400];
} redis_cmd;

typedef enum {
    W_BEGIN,     /* BEGIN script in flight */
    W_WAITING,   /* request pending in Redis: deadline + poll timers armed */
    W_DONE,      /* outcome known; fire_ev delivers it */
    W_CANCELLED, /* the user withdrew; freed when no command refers to it */
} wait_state;

struct approval_wait {
    approvals *a;
    approval_wait *prev, *next;
    wait_state state;
    bool delivered;    /* callback has run */
    bool claim_busy;   /* a CLAIM is in flight: don't stack them */
    bool created;      /* the request exists in Redis */
    int inflight;      /* rcmds holding a pointer to us */
    char id[APPROVALS_ID_LEN + 1];
    uint32_t wait_ms;
    approval_cb cb;
    void *arg;
    struct event *deadline_ev, *poll_ev, *fire_ev, *expiry_ev;
    uint64_t ttl_ms; /* request lifetime in Redis (expires - created) */
    approval_outcome outcome;
    char *approver, *reason, *granted_id;
    uint64_t row_cap;
};

typedef enum { OP_LIST, OP_GET, OP_DECIDE, OP_BUDGET } op_kind;

struct approvals_op {
    approvals *a;
    approvals_op *prev, *next;
    op_kind kind;
    bool cancelled, completed;
    approvals_info_cb info_cb;
    approvals_decide_cb decide_cb;
    approvals_budget_cb budget_cb;
    void *arg;
    struct event *fire_ev;
    char id[APPROVALS_ID_LEN + 1];
    char approver[72];
    bool approve;
    uint32_t grant_ttl_s;
    /* result */
    bool failed;
    char err[512];
    approval_info *items;
    char **strings; /* every string items point into */
    size_t nitems, nstrings, maxstrings;
    uint64_t now_ms;
    approval_decision_status status;
    char *msg;
    uint64_t budget_used;
    int64_t budget_ttl_ms;
};

struct approvals {
    struct event_base *base;
    char *host, *password, *prefix, *instance;
    int port;
    uint32_t request_ttl_s, grant_ttl_s, timeout_ms, poll_ms;
    approvals_grant_mode grant_mode;
    rconn cmd, sub;
    char sha[S_COUNT][2 * SHA_DIGEST_LENGTH + 1];
    struct event *health_ev;
    approval_wait *waiters;
    approvals_op *ops;
    redis_cmd *rcmds;
    bool closing;
    bool aof_checked;
    char last_error[256];
};

static void rconn_connect(rconn *c);
static void rconn_fail(rconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void waiters_conn_lost(approvals *a);
static void waiters_poll_all(approvals *a);
static void waiter_wake(approvals *a, const char *id, size_t len);

/* ---- small helpers ------------------------------------------------------------ */

static char *xstrndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static struct timeval ms_tv(uint32_t ms) { return (struct timeval){(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000}; }

/* Element i of an array reply as a string of at most max bytes. */
static bool rstr(const redisReply *r, size_t i, size_t max, const char **s, size_t *len)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || i >= r->elements)
        return false;
    const redisReply *e = r->element[i];
    if (!e || (e->type != REDIS_REPLY_STRING && e->type != REDIS_REPLY_STATUS) || (size_t)e->len > max)
        return false;
    *s = e->str;
    *len = (size_t)e->len;
    return true;
}

static bool rstr_is(const redisReply *r, size_t i, const char *want)
{
    const char *s;
    size_t n;
    return rstr(r, i, 64, &s, &n) && n == strlen(want) && memcmp(s, want, n) == 0;
}

/* Decimal digits only, no sign, no overflow. */
static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 20)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

static bool id_valid(const char *id)
{
    if (!id || strlen(id) != APPROVALS_ID_LEN)
        return false;
    for (size_t i = 0; i < APPROVALS_ID_LEN; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return false;
    return true;
}

static bool new_id(char out[APPROVALS_ID_LEN + 1])
{
    uint8_t raw[APPROVALS_ID_LEN / 2];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return false;
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return true;
}

const char *approval_outcome_name(approval_outcome o)
{
    switch (o) {
    case APPROVAL_APPROVED: return "approved";
    case APPROVAL_DENIED: return "denied";
    case APPROVAL_TIMEOUT: return "timeout";
    case APPROVAL_UNAVAILABLE: return "unavailable";
    }
    return "?";
}

const char *approval_decision_status_name(approval_decision_status s)
{
    switch (s) {
    case DECISION_OK: return "ok";
    case DECISION_NOT_FOUND: return "not_found";
    case DECISION_NOT_PENDING: return "not_pending";
    case DECISION_EXPIRED: return "expired";
    case DECISION_SELF: return "self_approval";
    case DECISION_INVALID: return "invalid";
    case DECISION_UNAVAILABLE: return "unavailable";
    }
    return "?";
}

/* ---- rconn: one connection ------------------------------------------------------ */

static const char *rconn_state_name(rconn_state s)
{
    static const char *const names[] = {"down", "connecting", "ready", "failing"};
    return (unsigned)s < 4 ? names[s] : "?";
}

/* The one place a connection changes state; impossible moves are bugs. */
static void rconn_set_state(rconn *c, rconn_state to)
{
    static const bool allowed[4][4] = {
        /* from DOWN */ {false, true, false, false},
        /* CONNECTING */ {true, false, true, true},
        /* READY */ {true, false, false, true},
        /* FAILING */ {true, false, false, false},
    };
    if (!allowed[c->state][to]) {
        log_msg(LOG_LEVEL_ERROR, LOG_PREFIX, "%s connection: impossible move %s -> %s", c->name,
                rconn_state_name(c->state), rconn_state_name(to));
        abort();
    }
    log_msg(LOG_LEVEL_DEBUG, LOG_PREFIX, "%s connection: %s -> %s", c->name, rconn_state_name(c->state),
            rconn_state_name(to));
    c->state = to;
}

static void rconn_schedule_retry(rconn *c)
{
    if (c->a->closing)
        return;
    struct timeval tv = ms_tv(c->backoff_ms);
    evtimer_add(c->retry_ev, &tv);
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

/* The socket is gone (hiredis freed it, or we did): back off and retry. */
static void rconn_went_down(rconn *c)
{
    evtimer_del(c->deadline_ev);
    if (c->state != RC_DOWN)
        rconn_set_state(c, RC_DOWN);
    if (!c->logged_down && !c->a->closing) {
        log_msg(LOG_LEVEL_WARN, LOG_PREFIX, "%s connection to Redis %s:%d down: %s", c->name, c->a->host,
                c->a->port, c->a->last_error);
        c->logged_down = true;
    }
    if (!c->subscriber)
        waiters_conn_lost(c->a);
    rconn_schedule_retry(c);
}

static void record_error(approvals *a, const char *fmt, va_list ap)
{
    vsnprintf(a->last_error, sizeof a->last_error, fmt, ap);
}

/* Mark broken now (no new commands), free the socket from a clean stack:
 * hiredis must not be freed from inside its own connect callback. */
static void rconn_fail(rconn *c, const char *fmt, ...)
{
    if (c->state != RC_CONNECTING && c->state != RC_READY)
        return;
    va_list ap;
    va_start(ap, fmt);
    record_error(c->a, fmt, ap);
    va_end(ap);
    rconn_set_state(c, RC_FAILING);
    event_active(c->reset_ev, 0, 0);
}

static void on_reset(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    rconn *c = arg;
    if (c->state != RC_FAILING)
        return;
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    if (ac) {
        ac->data = NULL; /* our disconnect callback ignores it */
        redisAsyncFree(ac); /* pending commands complete with NULL now */
    }
    rconn_went_down(c);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    rconn *c = arg;
    rconn_fail(c, "no answer from Redis within %u ms while connecting", (unsigned)c->a->timeout_ms);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    rconn_connect(arg);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    rconn *c = ac->data;
    if (!c || status == REDIS_OK)
        return;
    /* hiredis frees ac right after we return: forget it, never free it here. */
    snprintf(c->a->last_error, sizeof c->a->last_error, "cannot connect: %s", ac->errstr);
    c->ac = NULL;
    if (c->state == RC_FAILING || c->state == RC_CONNECTING || c->state == RC_READY)
        rconn_went_down(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rconn *c = ac->data;
    if (!c)
        return;
    if (status != REDIS_OK || ac->err)
        snprintf(c->a->last_error, sizeof c->a->last_error, "connection lost: %s",
                 ac->errstr[0] ? ac->errstr : "closed by Redis");
    else
        snprintf(c->a->last_error, sizeof c->a->last_error, "connection closed");
    c->ac = NULL;
    rconn_went_down(c);
}

static void rconn_ready(rconn *c)
{
    evtimer_del(c->deadline_ev);
    rconn_set_state(c, RC_READY);
    c->backoff_ms = BACKOFF_MIN_MS;
    if (c->logged_down)
        log_msg(LOG_LEVEL_INFO, LOG_PREFIX, "%s connection to Redis %s:%d is back", c->name, c->a->host,
                c->a->port);
    else
        log_msg(LOG_LEVEL_DEBUG, LOG_PREFIX, "%s connection to Redis %s:%d ready", c->name, c->a->host,
                c->a->port);
    c->logged_down = false;
    /* A decision may have been published while we were away: look now. */
    waiters_poll_all(c->a);
}

/* Handshake replies carry the connection; a NULL reply means hiredis is
 * freeing the socket, which the disconnect path handles. */
static bool handshake_reply_ok(rconn *c, redisAsyncContext *ac, const redisReply *r, const char *step)
{
    if (!r || c->ac != ac || c->state != RC_CONNECTING)
        return false;
    if (r->type == REDIS_REPLY_ERROR) {
        rconn_fail(c, "Redis refused %s: %.*s", step, r->len > 160 ? 160 : (int)r->len, r->str);
        return false;
    }
    return true;
}

static void on_auth(redisAsyncContext *ac, void *reply, void *priv)
{
    handshake_reply_ok(priv, ac, reply, "AUTH (check redis.password_file)");
}

static void on_ping(redisAsyncContext *ac, void *reply, void *priv)
{
    handshake_reply_ok(priv, ac, reply, "PING (is it still loading its data?)");
}

/* The last script loaded completes the handshake. */
static void on_script_loaded(redisAsyncContext *ac, void *reply, void *priv)
{
    rconn *c = priv;
    const redisReply *r = reply;
    if (!handshake_reply_ok(c, ac, r, "SCRIPT LOAD"))
        return;
    int i = c->scripts_loaded;
    if (i >= S_COUNT || r->type != REDIS_REPLY_STRING || r->len != 2 * SHA_DIGEST_LENGTH ||
        memcmp(r->str, c->a->sha[i], r->len) != 0) {
        rconn_fail(c, "Redis returned an unexpected digest for a loaded script");
        return;
    }
    if (++c->scripts_loaded == S_COUNT)
        rconn_ready(c);
}

/* Subscriber callback: the subscribe confirmation, then every message. */
static void on_event(redisAsyncContext *ac, void *reply, void *priv)
{
    rconn *c = priv;
    const redisReply *r = reply;
    const char *kind, *msg;
    size_t klen, mlen;
    if (!r || c->ac != ac)
        return;
    if (r->type == REDIS_REPLY_ERROR) {
        handshake_reply_ok(c, ac, r, "SUBSCRIBE");
        rconn_fail(c, "Redis refused SUBSCRIBE");
        return;
    }
    if (!rstr(r, 0, 32, &kind, &klen))
        return;
    if (klen == 9 && memcmp(kind, "subscribe", 9) == 0) {
        if (c->state == RC_CONNECTING)
            rconn_ready(c);
        return;
    }
    if (klen != 7 || memcmp(kind, "message", 7) != 0 || !rstr(r, 2, 128, &msg, &mlen))
        return;
    /* "<verb> <id>": wake whoever waits on that id; they read Redis themselves. */
    const char *sp = memchr(msg, ' ', mlen);
    if (sp)
        waiter_wake(c->a, sp + 1, mlen - (size_t)(sp + 1 - msg));
}

static void rconn_connect(rconn *c)
{
    approvals *a = c->a;
    if (a->closing || c->state != RC_DOWN)
        return;
    redisAsyncContext *ac = redisAsyncConnect(a->host, a->port);
    if (!ac || ac->err) {
        snprintf(a->last_error, sizeof a->last_error, "cannot connect: %s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        rconn_went_down(c);
        return;
    }
    ac->data = c;
    if (redisLibeventAttach(ac, a->base) != REDIS_OK) {
        redisAsyncFree(ac);
        snprintf(a->last_error, sizeof a->last_error, "cannot attach to the event loop");
        rconn_went_down(c);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    c->gen++;
    rconn_set_state(c, RC_CONNECTING);
    struct timeval tv = ms_tv(a->timeout_ms);
    evtimer_add(c->deadline_ev, &tv);
    /* Commands queue until the socket connects; replies come back in order. */
    if (a->password)
        redisAsyncCommand(ac, on_auth, c, "AUTH %s", a->password);
    if (c->subscriber) {
        char channel[128];
        snprintf(channel, sizeof channel, "%sevents", a->prefix);
        redisAsyncCommand(ac, on_event, c, "SUBSCRIBE %s", channel);
    } else {
        /* PING fails while Redis loads its AOF: not ready until it answers. */
        redisAsyncCommand(ac, on_ping, c, "PING");
        c->scripts_loaded = 0;
        for (int i = 0; i < S_COUNT; i++)
            redisAsyncCommand(ac, on_script_loaded, c, "SCRIPT LOAD %s", script_text[i]);
    }
}

static bool rconn_init(approvals *a, rconn *c, const char *name, bool subscriber)
{
    c->a = a;
    c->name = name;
    c->subscriber = subscriber;
    c->state = RC_DOWN;
    c->backoff_ms = BACKOFF_MIN_MS;
    c->retry_ev = evtimer_new(a->base, on_retry, c);
    c->deadline_ev = evtimer_new(a->base, on_deadline, c);
    c->reset_ev = event_new(a->base, -1, 0, on_reset, c);
    return c->retry_ev && c->deadline_ev && c->reset_ev;
}

/* Shutdown: free the socket now, inside approvals_free (never from a callback). */
static void rconn_close(rconn *c)
{
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    c->state = RC_DOWN; /* directly: completions below must not schedule a reset */
    if (ac) {
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    if (c->retry_ev)
        event_free(c->retry_ev);
    if (c->deadline_ev)
        event_free(c->deadline_ev);
    if (c->reset_ev)
        event_free(c->reset_ev);
    c->retry_ev = c->deadline_ev = c->reset_ev = NULL;
}

/* ---- redis_cmd: one command, one timer ------------------------------------------------- */

static void rcmd_free(redis_cmd *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        q->a->rcmds = q->next;
    if (q->next)
        q->next->prev = q->prev;
    event_free(q->timer);
    free(q);
}

static void rcmd_finish(redis_cmd *q, const redisReply *r, const char *err)
{
    if (q->done)
        return;
    q->done = true;
    evtimer_del(q->timer);
    q->fn(q->a, q->priv, r, err);
}

static void on_rcmd_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    redis_cmd *q = priv;
    const redisReply *r = reply;
    q->in_hiredis = false;
    if (!r) {
        /* The socket is going away: no new commands on it. */
        if (q->c->gen == q->gen && q->c->state == RC_READY)
            rconn_fail(q->c, "connection lost");
        rcmd_finish(q, NULL, q->a->last_error[0] ? q->a->last_error : "connection to Redis lost");
    } else if (r->type == REDIS_REPLY_ERROR) {
        snprintf(q->err, sizeof q->err, "Redis error: %.*s", r->len > 120 ? 120 : (int)r->len, r->str);
        /* Our scripts were flushed: reconnecting loads them again. */
        if (r->len >= 8 && memcmp(r->str, "NOSCRIPT", 8) == 0 && q->c->gen == q->gen)
            rconn_fail(q->c, "Redis forgot phigate's scripts (SCRIPT FLUSH?)");
        rcmd_finish(q, NULL, q->err);
    } else {
        rcmd_finish(q, r, NULL);
    }
    rcmd_free(q);
}

static void on_rcmd_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    redis_cmd *q = arg;
    if (q->in_hiredis) {
        /* Slow Redis: fail this command now, and rebuild both connections
         * (a server that does not answer one command answers none). */
        snprintf(q->err, sizeof q->err, "Redis did not answer within %u ms", (unsigned)q->a->timeout_ms);
        rcmd_finish(q, NULL, q->err);
        if (q->c->gen == q->gen)
            rconn_fail(q->c, "Redis did not answer within %u ms", (unsigned)q->a->timeout_ms);
        rconn_fail(&q->a->sub, "Redis did not answer within %u ms", (unsigned)q->a->timeout_ms);
        return; /* hiredis still holds q: on_rcmd_reply(NULL) frees it */
    }
    /* Never sent (not connected): fail from the loop, never inline. */
    rcmd_finish(q, NULL, q->err);
    rcmd_free(q);
}

/* Send argv on the command connection; fn runs exactly once, never inside this call. */
static void rcmd_send(approvals *a, rcmd_fn fn, void *priv, int argc, const char **argv, const size_t *lens)
{
    rconn *c = &a->cmd;
    if (a->closing) {
        fn(a, priv, NULL, "approval service shutting down"); /* approvals_free runs callbacks inline */
        return;
    }
    redis_cmd *q = calloc(1, sizeof *q);
    if (!q) {
        log_msg(LOG_LEVEL_ERROR, LOG_PREFIX, "out of memory sending a Redis command");
        abort(); /* a lost completion would hang a statement: fail loudly instead */
    }
    q->a = a, q->c = c, q->gen = c->gen, q->fn = fn, q->priv = priv;
    q->timer = evtimer_new(a->base, on_rcmd_timer, q);
    if (!q->timer)
        abort();
    q->next = a->rcmds;
    if (a->rcmds)
        a->rcmds->prev = q;
    a->rcmds = q;
    struct timeval tv = {0, 0};
    if (c->state != RC_READY) {
        snprintf(q->err, sizeof q->err, "Redis at %s:%d is not connected (%s)", a->host, a->port,
                 a->last_error[0] ? a->last_error : "connecting");
    } else if (redisAsyncCommandArgv(c->ac, on_rcmd_reply, q, argc, argv, lens) != REDIS_OK) {
        snprintf(q->err, sizeof q->err, "cannot send to Redis: %s", c->ac->errstr[0] ? c->ac->errstr : "closing");
    } else {
        q->in_hiredis = true;
        tv = ms_tv(a->timeout_ms);
    }
    evtimer_add(q->timer, &tv);
}

/* EVALSHA <script> 0 prefix args... */
static void rcmd_eval(approvals *a, rcmd_fn fn, void *priv, script_id script, int nargs, const char **args,
                      const size_t *lens)
{
    const char *argv[24];
    size_t argl[24];
    if (nargs + 4 > 24)
        abort();
    argv[0] = "EVALSHA", argl[0] = 7;
    argv[1] = a->sha[script], argl[1] = strlen(a->sha[script]);
    argv[2] = "0", argl[2] = 1;
    argv[3] = a->prefix, argl[3] = strlen(a->prefix);
    for (int i = 0; i < nargs; i++) {
        argv[4 + i] = args[i];
        argl[4 + i] = lens ? lens[i] : strlen(args[i]);
    }
    rcmd_send(a, fn, priv, nargs + 4, argv, argl);
}

/* ---- health and persistence check --------------------------------------------------- */

static void on_health_reply(approvals *a, void *priv, const redisReply *r, const char *err)
{
    (void)a, (void)priv, (void)r, (void)err; /* a timeout already reset the connection */
}

static void on_info_reply(approvals *a, void *priv, const redisReply *r, const char *err)
{
    (void)priv, (void)err;
    if (r && r->type == REDIS_REPLY_STRING && r->str && strstr(r->str, "aof_enabled:0"))
        log_msg(LOG_LEVEL_WARN, LOG_PREFIX,
                "Redis %s:%d runs without appendonly: pending requests would be lost if it crashed "
                "(set appendonly yes)",
                a->host, a->port);
}

static void on_health(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    approvals *a = arg;
    if (a->cmd.state == RC_READY) {
        const char *argv[] = {"PING"};
        rcmd_send(a, on_health_reply, NULL, 1, argv, NULL);
        if (!a->aof_checked) {
            const char *info[] = {"INFO", "persistence"};
            rcmd_send(a, on_info_reply, NULL, 2, info, NULL);
            a->aof_checked = true;
        }
    }
    struct timeval tv = ms_tv(HEALTH_MS);
    evtimer_add(a->health_ev, &tv);
}

/* ---- waiters ------------------------------------------------------------------------ */

static const char *wait_state_name(wait_state s)
{
    static const char *const names[] = {"begin", "waiting", "done", "cancelled"};
    return (unsigned)s < 4 ? names[s] : "?";
}

static void waiter_set_state(approval_wait *w, wait_state to)
{
    static const bool allowed[4][4] = {
        /* BEGIN */ {false, true, true, true},
        /* WAITING */ {false, false, true, true},
        /* DONE */ {false, false, false, true},
        /* CANCELLED */ {false, false, false, false},
    };
    if (!allowed[w->state][to]) {
        log_msg(LOG_LEVEL_ERROR, LOG_PREFIX, "request %s: impossible move %s -> %s", w->id,
                wait_state_name(w->state), wait_state_name(to));
        abort();
    }
    w->state = to;
    if (to == W_DONE || to == W_CANCELLED) {
        evtimer_del(w->deadline_ev);
        evtimer_del(w->poll_ev);
        evtimer_del(w->expiry_ev);
    }
}

static void waiter_free(approval_wait *w)
{
    approvals *a = w->a;
    if (w->prev)
        w->prev->next = w->next;
    else
        a->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    event_free(w->deadline_ev), event_free(w->poll_ev), event_free(w->fire_ev), event_free(w->expiry_ev);
    free(w->approver), free(w->reason), free(w->granted_id);
    free(w);
}

/* Free once nobody can reach it: delivered or cancelled, and no command pending. */
static void waiter_maybe_free(approval_wait *w)
{
    if (w->inflight == 0 && ((w->state == W_DONE && w->delivered) || w->state == W_CANCELLED))
        waiter_free(w);
}

/* First outcome wins; the callback runs from the loop (fire_ev). */
__attribute__((format(printf, 5, 6))) static void waiter_finish(approval_wait *w, approval_outcome o,
                                                                 const char *approver, uint64_t row_cap,
                                                                 const char *fmt, ...)
{
    if (w->state == W_DONE || w->state == W_CANCELLED)
        return;
    char reason[MAX_TEXT + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    waiter_set_state(w, W_DONE);
    w->outcome = o;
    w->approver = approver ? strdup(approver) : NULL;
    w->reason = strdup(reason);
    w->row_cap = row_cap;
    log_msg(o == APPROVAL_APPROVED ? LOG_LEVEL_INFO : LOG_LEVEL_WARN, LOG_PREFIX, "request %s: %s (%s)", w->id,
            approval_outcome_name(o), reason);
    event_active(w->fire_ev, 0, 0);
}

static void waiter_deliver(approval_wait *w)
{
    approval_result res = {
        .request_id = w->granted_id ? w->granted_id : (w->created ? w->id : NULL),
        .approver = w->approver,
        .reason = w->reason ? w->reason : "out of memory",
        .row_cap = w->row_cap,
    };
    w->delivered = true;
    w->cb(w->arg, w->outcome, &res);
}

static void on_waiter_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    approval_wait *w = arg;
    if (w->state != W_DONE || w->delivered)
        return;
    waiter_deliver(w);
    waiter_maybe_free(w);
}

static void waiter_cmd_done(approval_wait *w)
{
    w->inflight--;
    waiter_maybe_free(w);
}

/* Copy element i (bounded) into a fresh string, "" when absent. */
static char *rdup(const redisReply *r, size_t i, size_t max)
{
    const char *s;
    size_t n;
    return rstr(r, i, max, &s, &n) ? xstrndup(s, n) : strdup("");
}

static uint64_t ru64(const redisReply *r, size_t i)
{
    const char *s;
    size_t n;
    uint64_t v = 0;
    if (rstr(r, i, 24, &s, &n) && parse_u64(s, n, &v))
        return v;
    return 0;
}

static void on_claim(approvals *a, void *priv, const redisReply *r, const char *err)
{
    (void)a;
    approval_wait *w = priv;
    w->claim_busy = false;
    if (w->state == W_WAITING) {
        char *who = NULL, *why = NULL;
        if (!r)
            waiter_finish(w, APPROVAL_UNAVAILABLE, NULL, 0,
                          "approval service unavailable while waiting for request %s (%s); the request stays "
                          "in the queue: retry the statement once it is approved",
                          w->id, err);
        else if (rstr_is(r, 0, "pending"))
            ; /* keep waiting */
        else if (rstr_is(r, 0, "approved") && (who = rdup(r, 1, MAX_TEXT)) && (why = rdup(r, 2, MAX_TEXT)))
            waiter_finish(w, APPROVAL_APPROVED, who, ru64(r, 3), "%s", why);
        else if (rstr_is(r, 0, "denied") && (who = rdup(r, 1, MAX_TEXT)) && (why = rdup(r, 2, MAX_TEXT)))
            waiter_finish(w, APPROVAL_DENIED, who, 0, "%s", why[0] ? why : "denied without a reason");
        else if (rstr_is(r, 0, "used") && (who = rdup(r, 1, MAX_TEXT)))
            waiter_finish(w, APPROVAL_DENIED, who, 0,
                          "request %s was approved by %s, but its single-use approval was already used by "
                          "another statement; run the statement again to ask anew",
                          w->id, who);
        else if (rstr_is(r, 0, "expired"))
            waiter_finish(w, APPROVAL_DENIED, NULL, 0, "request %s expired without a decision", w->id);
        else if (rstr_is(r, 0, "withdrawn"))
            waiter_finish(w, APPROVAL_DENIED, NULL, 0, "request %s was withdrawn", w->id);
        else if (rstr_is(r, 0, "gone"))
            waiter_finish(w, APPROVAL_DENIED, NULL, 0, "request %s is no longer in Redis", w->id);
        else
            waiter_finish(w, APPROVAL_UNAVAILABLE, NULL, 0, "unexpected reply from Redis for request %s", w->id);
        free(who), free(why);
    }
    waiter_cmd_done(w);
}

static void waiter_claim(approval_wait *w)
{
    if (w->state != W_WAITING || w->claim_busy)
        return;
    const char *args[] = {w->id};
    w->claim_busy = true;
    w->inflight++;
    rcmd_eval(w->a, on_claim, w, S_CLAIM, 1, args, NULL);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    waiter_claim(arg);
}

static void on_stopped_waiting(approvals *a, void *priv, const redisReply *r, const char *err)
{
    (void)a, (void)priv, (void)r, (void)err; /* best effort: only the console's "waiting" flag */
}

static void on_wait_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    approval_wait *w = arg;
    if (w->state != W_WAITING)
        return;
    waiter_finish(w, APPROVAL_TIMEOUT, NULL, 0,
                  "no decision on request %s within %u s; it stays pending for approvers: run the statement "
                  "again after it is approved",
                  w->id, (unsigned)((w->wait_ms + 999) / 1000));
    const char *args[] = {w->id};
    rcmd_eval(w->a, on_stopped_waiting, NULL, S_STOPPED_WAITING, 1, args, NULL);
}

static void waiter_start_waiting(approval_wait *w)
{
    waiter_set_state(w, W_WAITING);
    if (w->wait_ms == 0) {
        on_wait_deadline(-1, 0, w);
        return;
    }
    struct timeval dl = ms_tv(w->wait_ms), poll = ms_tv(w->a->poll_ms);
    evtimer_add(w->deadline_ev, &dl);
    evtimer_add(w->poll_ev, &poll);
    /* Expiry is noticed by whoever reads the request next: be that reader. */
    if (w->ttl_ms && w->ttl_ms < w->wait_ms) {
        struct timeval ex = ms_tv((uint32_t)w->ttl_ms + 50);
        evtimer_add(w->expiry_ev, &ex);
    }
}

static void on_begin(approvals *a, void *priv, const redisReply *r, const char *err)
{
    approval_wait *w = priv;
    if (w->state == W_BEGIN) {
        if (!r) {
            waiter_finish(w, APPROVAL_UNAVAILABLE, NULL, 0,
                          "approval service unavailable: %s; statements that need approval are refused", err);
        } else if (rstr_is(r, 0, "granted")) {
            char *id = rdup(r, 1, 64), *who = rdup(r, 2, MAX_TEXT), *why = rdup(r, 3, MAX_TEXT);
            free(w->granted_id);
            w->granted_id = id;
            waiter_finish(w, APPROVAL_APPROVED, who, ru64(r, 4), "%s", why ? why : "");
            free(who), free(why);
        } else if (rstr_is(r, 0, "pending")) {
            uint64_t created = ru64(r, 1), expires = ru64(r, 2);
            w->created = true;
            w->ttl_ms = expires > created && expires - created < UINT32_MAX ? expires - created : 0;
            log_msg(LOG_LEVEL_INFO, LOG_PREFIX, "request %s: pending, waiting up to %u ms", w->id,
                    (unsigned)w->wait_ms);
            waiter_start_waiting(w);
        } else {
            waiter_finish(w, APPROVAL_UNAVAILABLE, NULL, 0, "approval service: could not create request %s (%s)",
                          w->id, rstr_is(r, 0, "collision") ? "id collision" : "unexpected reply");
        }
    } else if (w->state == W_CANCELLED && r && rstr_is(r, 0, "pending")) {
        w->created = true; /* the WITHDRAW queued behind BEGIN removes it */
    }
    (void)a;
    waiter_cmd_done(w);
}

/* A message on the events channel named this id: read it now. */
static void waiter_wake(approvals *a, const char *id, size_t len)
{
    if (len != APPROVALS_ID_LEN)
        return;
    for (approval_wait *w = a->waiters; w; w = w->next)
        if (w->state == W_WAITING && memcmp(w->id, id, len) == 0)
            waiter_claim(w);
}

static void waiters_poll_all(approvals *a)
{
    for (approval_wait *w = a->waiters; w; w = w->next)
        waiter_claim(w);
}

/* The command connection dropped: nobody can be told of a decision now. */
static void waiters_conn_lost(approvals *a)
{
    for (approval_wait *w = a->waiters; w; w = w->next)
        if (w->state == W_WAITING)
            waiter_finish(w, APPROVAL_UNAVAILABLE, NULL, 0,
                          "lost the connection to the approval service (Redis %s:%d: %s) while waiting for "
                          "request %s; it stays in the queue: retry the statement once it is approved",
                          a->host, a->port, a->last_error, w->id);
}

static approval_wait *waiter_new(approvals *a, approval_cb cb, void *arg, uint32_t wait_ms)
{
    approval_wait *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->a = a, w->cb = cb, w->arg = arg, w->wait_ms = wait_ms, w->state = W_BEGIN;
    w->deadline_ev = evtimer_new(a->base, on_wait_deadline, w);
    w->poll_ev = event_new(a->base, -1, EV_PERSIST, on_poll, w);
    w->fire_ev = event_new(a->base, -1, 0, on_waiter_fire, w);
    w->expiry_ev = evtimer_new(a->base, on_poll, w);
    if (!w->deadline_ev || !w->poll_ev || !w->fire_ev || !w->expiry_ev || !new_id(w->id)) {
        struct event *evs[] = {w->deadline_ev, w->poll_ev, w->fire_ev, w->expiry_ev};
        for (size_t i = 0; i < 4; i++)
            if (evs[i])
                event_free(evs[i]);
        free(w);
        return NULL;
    }
    w->next = a->waiters;
    if (a->waiters)
        a->waiters->prev = w;
    a->waiters = w;
    return w;
}

static const char *nz(const char *s) { return s ? s : ""; }

approval_wait *approvals_request(approvals *a, const approval_request *req, approval_cb cb, void *arg)
{
    approval_wait *w = waiter_new(a, cb, arg, req->wait_ms);
    if (!w)
        return NULL;
    size_t stlen = strlen(nz(req->statement));
    if (!req->identity || !*req->identity || !req->fingerprint || !*req->fingerprint) {
        waiter_finish(w, APPROVAL_DENIED, NULL, 0, "approval request without identity or fingerprint");
        return w;
    }
    if (stlen > APPROVALS_MAX_STATEMENT) {
        waiter_finish(w, APPROVAL_DENIED, NULL, 0,
                      "statement of %zu bytes is too long to put to an approver (at most %d bytes)", stlen,
                      APPROVALS_MAX_STATEMENT);
        return w;
    }
    if (a->cmd.state != RC_READY) {
        waiter_finish(w, APPROVAL_UNAVAILABLE, NULL, 0,
                      "approval service unavailable (Redis %s:%d: %s); statements that need approval are refused",
                      a->host, a->port, a->last_error[0] ? a->last_error : "connecting");
        return w;
    }
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)a->request_ttl_s * 1000ULL);
    const char *args[] = {w->id,           req->identity,     req->fingerprint, nz(req->client_addr),
                          nz(req->database), nz(req->protocol), nz(req->statement), nz(req->reason),
                          nz(req->rule),   ttl,               a->instance};
    w->inflight++;
    rcmd_eval(a, on_begin, w, S_BEGIN, (int)(sizeof args / sizeof args[0]), args, NULL);
    return w;
}

static void on_withdrawn(approvals *a, void *priv, const redisReply *r, const char *err)
{
    (void)a, (void)priv, (void)r;
    if (err)
        log_msg(LOG_LEVEL_WARN, LOG_PREFIX, "could not withdraw a request: %s (it expires on its own)", err);
}

void approval_wait_cancel(approval_wait *w)
{
    if (!w || w->state == W_CANCELLED || w->delivered)
        return;
    bool live = w->state == W_BEGIN || w->state == W_WAITING;
    waiter_set_state(w, W_CANCELLED);
    event_del(w->fire_ev);
    if (live) {
        /* Same connection as BEGIN, so Redis runs it after the request exists. */
        const char *args[] = {w->id};
        rcmd_eval(w->a, on_withdrawn, NULL, S_WITHDRAW, 1, args, NULL);
        log_msg(LOG_LEVEL_INFO, LOG_PREFIX, "request %s: withdrawn by the agent", w->id);
    }
    waiter_maybe_free(w);
}

const char *approval_wait_id(const approval_wait *w) { return w->id; }

/* ---- admin operations ----------------------------------------------------------------- */

static void op_free(approvals_op *op)
{
    approvals *a = op->a;
    if (op->prev)
        op->prev->next = op->next;
    else
        a->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    for (size_t i = 0; i < op->nstrings; i++)
        free(op->strings[i]);
    free(op->strings), free(op->items), free(op->msg);
    event_free(op->fire_ev);
    free(op);
}

static void op_deliver(approvals_op *op)
{
    if (op->cancelled)
        return;
    if (op->kind == OP_DECIDE)
        op->decide_cb(op->arg, op->status, op->msg ? op->msg : "out of memory");
    else if (op->kind == OP_BUDGET) {
        if (op->budget_cb)
            op->budget_cb(op->arg, op->failed ? op->err : NULL, op->budget_used, op->budget_ttl_ms);
    } else
        op->info_cb(op->arg, op->failed ? op->err : NULL, op->failed ? NULL : op->items,
                    op->failed ? 0 : op->nitems, op->now_ms);
}

static void on_op_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    approvals_op *op = arg;
    op_deliver(op);
    op_free(op);
}

static void op_complete(approvals_op *op)
{
    op->completed = true;
    event_active(op->fire_ev, 0, 0);
}

static approvals_op *op_new(approvals *a, op_kind kind, void *arg)
{
    approvals_op *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->a = a, op->kind = kind, op->arg = arg;
    op->fire_ev = event_new(a->base, -1, 0, on_op_fire, op);
    if (!op->fire_ev) {
        free(op);
        return NULL;
    }
    op->next = a->ops;
    if (a->ops)
        a->ops->prev = op;
    a->ops = op;
    return op;
}

void approvals_op_cancel(approvals_op *op)
{
    if (op)
        op->cancelled = true; /* freed by on_op_fire, which always comes */
}

static char *op_keep(approvals_op *op, const char *s, size_t n)
{
    if (op->nstrings >= op->maxstrings)
        return NULL;
    char *copy = xstrndup(s, n);
    if (!copy)
        return NULL;
    op->strings[op->nstrings++] = copy;
    return copy;
}

/* Fill one item from a flat HGETALL array; unknown fields are ignored. */
static bool info_from_flat(approvals_op *op, const redisReply *flat, approval_info *it, uint64_t now)
{
    struct {
        const char *name;
        const char **dst;
        size_t max;
    } text[] = {
        {"id", &it->id, 64},
        {"status", &it->status, 32},
        {"identity", &it->identity, MAX_TEXT},
        {"client_addr", &it->client_addr, MAX_TEXT},
        {"database", &it->database, MAX_TEXT},
        {"protocol", &it->protocol, 32},
        {"statement", &it->statement, MAX_FIELD},
        {"fingerprint", &it->fingerprint, MAX_TEXT},
        {"reason", &it->reason, MAX_TEXT},
        {"rule", &it->rule, MAX_TEXT},
        {"instance", &it->instance, MAX_TEXT},
        {"decided_by", &it->decided_by, MAX_TEXT},
        {"decision_reason", &it->decision_reason, MAX_TEXT},
    };
    enum { NTEXT = sizeof text / sizeof text[0] };
    if (flat->type != REDIS_REPLY_ARRAY || flat->elements % 2 || flat->elements > 128)
        return false;
    for (size_t t = 0; t < NTEXT; t++)
        *text[t].dst = "";
    for (size_t i = 0; i + 1 < flat->elements; i += 2) {
        const char *k, *v;
        size_t kl, vl;
        if (!rstr(flat, i, 64, &k, &kl) || !rstr(flat, i + 1, MAX_FIELD, &v, &vl))
            return false;
        uint64_t num = 0;
        bool isnum = parse_u64(v, vl, &num);
#define KEYIS(s) (kl == strlen(s) && memcmp(k, s, kl) == 0)
        if (KEYIS("created"))
            it->created_ms = isnum ? num : 0;
        else if (KEYIS("expires"))
            it->expires_ms = isnum ? num : 0;
        else if (KEYIS("decided_at"))
            it->decided_ms = isnum ? num : 0;
        else if (KEYIS("row_cap"))
            it->row_cap = isnum ? num : 0;
        else if (KEYIS("waiting"))
            it->waiting = vl == 1 && v[0] == '1';
        else
            for (size_t t = 0; t < NTEXT; t++)
                if (KEYIS(text[t].name)) {
                    if (vl > text[t].max || !(*text[t].dst = op_keep(op, v, vl)))
                        return false;
                    break;
                }
#undef KEYIS
    }
    /* Shown as it stands: a pending request past its expiry is expired. */
    if (strcmp(it->status, "pending") == 0 && it->expires_ms && it->expires_ms <= now)
        it->status = "expired";
    return it->id[0] != '\0';
}

static void op_fail(approvals_op *op, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void op_fail(approvals_op *op, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(op->err, sizeof op->err, fmt, ap);
    va_end(ap);
    op->failed = true;
}

/* {now_ms, flat, flat, ...} (list) or {now_ms, flat} (get). */
static void on_info_reply_op(approvals *a, void *priv, const redisReply *r, const char *err)
{
    (void)a;
    approvals_op *op = priv;
    const char *s;
    size_t n;
    if (!r) {
        op_fail(op, "approval service unavailable: %s", err);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || r->elements > MAX_LIST + 1 ||
               !rstr(r, 0, 24, &s, &n) || !parse_u64(s, n, &op->now_ms)) {
        op_fail(op, "unexpected reply from Redis");
    } else {
        size_t want = r->elements - 1;
        op->items = calloc(want ? want : 1, sizeof *op->items);
        op->maxstrings = want * 16 + 1; /* 13 text fields per item, with room */
        op->strings = calloc(op->maxstrings, sizeof *op->strings);
        if (!op->items || !op->strings)
            op_fail(op, "out of memory");
        for (size_t i = 0; !op->failed && i < want; i++) {
            const redisReply *flat = r->element[i + 1];
            if (op->kind == OP_GET && flat->type == REDIS_REPLY_ARRAY && flat->elements == 0)
                break; /* no such request */
            if (!info_from_flat(op, flat, &op->items[op->nitems], op->now_ms))
                op_fail(op, "malformed request record in Redis");
            else
                op->nitems++;
        }
    }
    op_complete(op);
}

approvals_op *approvals_list_pending(approvals *a, size_t limit, approvals_info_cb cb, void *arg)
{
    approvals_op *op = op_new(a, OP_LIST, arg);
    if (!op)
        return NULL;
    op->info_cb = cb;
    char lim[24];
    snprintf(lim, sizeof lim, "%zu", limit < 1 ? 1 : limit > MAX_LIST ? MAX_LIST : limit);
    const char *args[] = {lim, LIST_BUDGET};
    rcmd_eval(a, on_info_reply_op, op, S_LIST, 2, args, NULL);
    return op;
}

approvals_op *approvals_get(approvals *a, const char *id, approvals_info_cb cb, void *arg)
{
    approvals_op *op = op_new(a, OP_GET, arg);
    if (!op)
        return NULL;
    op->info_cb = cb;
    if (!id_valid(id)) {
        op->now_ms = 0;
        op_complete(op); /* no such request: n == 0 */
        return op;
    }
    const char *args[] = {id};
    rcmd_eval(a, on_info_reply_op, op, S_GET, 1, args, NULL);
    return op;
}

/* ---- PHI row budgets (gate/min_necessary.h) ------------------------------------------ */

/* {used, pttl} */
static void on_budget_reply(approvals *a, void *priv, const redisReply *r, const char *err)
{
    (void)a;
    approvals_op *op = priv;
    if (!r)
        op_fail(op, "PHI row budget unavailable: %s", err);
    else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_INTEGER ||
             r->element[1]->type != REDIS_REPLY_INTEGER || r->element[0]->integer < 0)
        op_fail(op, "unexpected reply from Redis to the PHI row budget script");
    else {
        op->budget_used = (uint64_t)r->element[0]->integer;
        op->budget_ttl_ms = r->element[1]->integer < 0 ? -1 : (int64_t)r->element[1]->integer;
    }
    op_complete(op);
}

approvals_op *approvals_budget(approvals *a, const char *identity, uint64_t add, uint32_t window_ms,
                               approvals_budget_cb cb, void *arg)
{
    approvals_op *op = op_new(a, OP_BUDGET, arg);
    if (!op)
        return NULL;
    op->budget_cb = cb;
    char addbuf[24], winbuf[16];
    snprintf(addbuf, sizeof addbuf, "%llu", (unsigned long long)add);
    snprintf(winbuf, sizeof winbuf, "%u", window_ms ? window_ms : 1000u);
    const char *args[] = {identity, addbuf, winbuf};
    rcmd_eval(a, on_budget_reply, op, S_BUDGET, 3, args, NULL);
    return op;
}

typedef struct count_note {
    char front[16];
    char identity[64];
    uint64_t rows;
} count_note;

static void on_counted(void *arg, const char *err, uint64_t used, int64_t ttl_ms)
{
    count_note *n = arg;
    (void)ttl_ms;
    if (err)
        log_msg(LOG_LEVEL_WARN, n->front, "PHI row budget: %llu rows of identity \"%s\" not counted: %s",
                (unsigned long long)n->rows, n->identity, err);
    else
        log_msg(LOG_LEVEL_DEBUG, n->front, "PHI row budget: identity \"%s\" has used %llu rows", n->identity,
                (unsigned long long)used);
    free(n);
}

void approvals_budget_count(approvals *a, const char *front, const char *identity, uint64_t rows,
                            uint32_t window_ms)
{
    count_note *n = calloc(1, sizeof *n);
    if (!n)
        return;
    snprintf(n->front, sizeof n->front, "%s", front);
    snprintf(n->identity, sizeof n->identity, "%s", identity);
    n->rows = rows;
    if (!approvals_budget(a, identity, rows, window_ms, on_counted, n))
        free(n);
}

static void op_decided(approvals_op *op, approval_decision_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void op_decided(approvals_op *op, approval_decision_status st, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    op->status = st;
    free(op->msg);
    op->msg = strdup(buf);
    op_complete(op);
}

static void on_decide(approvals *a, void *priv, const redisReply *r, const char *err)
{
    approvals_op *op = priv;
    char *st = NULL, *by = NULL;
    if (!r)
        op_decided(op, DECISION_UNAVAILABLE, "approval service unavailable, nothing was decided: %s", err);
    else if (rstr_is(r, 0, "ok")) {
        if (op->approve)
            op_decided(op, DECISION_OK, "request %s approved by %s (%s approval, valid %u s)", op->id, op->approver,
                       a->grant_mode == APPROVAL_GRANT_MODE_TTL ? "reusable" : "single-use",
                       (unsigned)op->grant_ttl_s);
        else
            op_decided(op, DECISION_OK, "request %s denied by %s", op->id, op->approver);
        log_msg(LOG_LEVEL_INFO, LOG_PREFIX, "%s", op->msg ? op->msg : "decision recorded");
    } else if (rstr_is(r, 0, "not_found"))
        op_decided(op, DECISION_NOT_FOUND, "no request %s (unknown, or aged out of Redis)", op->id);
    else if (rstr_is(r, 0, "not_pending") && (st = rdup(r, 1, 32)) && (by = rdup(r, 2, MAX_TEXT)))
        op_decided(op, DECISION_NOT_PENDING, "request %s is already %s%s%s", op->id, st, by[0] ? " by " : "", by);
    else if (rstr_is(r, 0, "expired"))
        op_decided(op, DECISION_EXPIRED,
                   "request %s has expired and can no longer be approved; the agent must run the statement again",
                   op->id);
    else if (rstr_is(r, 0, "self"))
        op_decided(op, DECISION_SELF, "self-approval refused: %s is the requester of request %s", op->approver,
                   op->id);
    else
        op_decided(op, DECISION_UNAVAILABLE, "unexpected reply from Redis deciding request %s", op->id);
    free(st), free(by);
}

static bool text_ok(const char *s, size_t max) { return !s || strlen(s) <= max; }

approvals_op *approvals_decide(approvals *a, const approval_decision *d, approvals_decide_cb cb, void *arg)
{
    approvals_op *op = op_new(a, OP_DECIDE, arg);
    if (!op)
        return NULL;
    op->decide_cb = cb;
    op->approve = d->approve;
    op->grant_ttl_s = d->grant_ttl_s ? d->grant_ttl_s : a->grant_ttl_s;
    snprintf(op->id, sizeof op->id, "%s", id_valid(d->request_id) ? d->request_id : "?");
    snprintf(op->approver, sizeof op->approver, "%s", nz(d->approver));
    if (!id_valid(d->request_id))
        op_decided(op, DECISION_INVALID, "a request id is %d lowercase hex characters", APPROVALS_ID_LEN);
    else if (!d->approver || !*d->approver || strlen(d->approver) > 64)
        op_decided(op, DECISION_INVALID, "an approver name is required");
    else if (!d->approve && (!d->reason || !*d->reason))
        op_decided(op, DECISION_INVALID, "a denial needs a reason (the agent sees it)");
    else if (!text_ok(d->reason, 1000))
        op_decided(op, DECISION_INVALID, "the reason is longer than 1000 bytes");
    else if (op->grant_ttl_s > MAX_GRANT_TTL_S)
        op_decided(op, DECISION_INVALID, "ttl is at most %d s (7 days)", MAX_GRANT_TTL_S);
    if (op->completed)
        return op;
    char ttl[24], cap[24];
    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)op->grant_ttl_s * 1000ULL);
    snprintf(cap, sizeof cap, "%llu", (unsigned long long)d->row_cap);
    const char *args[] = {d->request_id, d->approver, d->approve ? "approve" : "deny", nz(d->reason),
                          a->grant_mode == APPROVAL_GRANT_MODE_TTL ? "ttl" : "single_use", ttl, cap};
    rcmd_eval(a, on_decide, op, S_DECIDE, (int)(sizeof args / sizeof args[0]), args, NULL);
    return op;
}

/* ---- lifecycle -------------------------------------------------------------------------- */

void approvals_opts_from_config(const config *cfg, approvals_opts *o)
{
    memset(o, 0, sizeof *o);
    o->host = cfg->redis_host;
    o->port = cfg->redis_port;
    o->password = cfg->redis_password;
    o->key_prefix = cfg->redis_key_prefix;
    o->request_ttl_s = (uint32_t)cfg->approvals_request_ttl_s;
    o->grant_mode = (approvals_grant_mode)cfg->approvals_grant;
    o->grant_ttl_s = (uint32_t)cfg->approvals_grant_ttl_s;
    o->timeout_ms = (uint32_t)cfg->redis_timeout_ms;
}

approvals *approvals_new(struct event_base *base, const approvals_opts *o, char *err, size_t errlen)
{
    if (!base || !o->host || !*o->host || o->port < 1 || o->port > 65535) {
        snprintf(err, errlen, "approvals: a Redis host and port are required");
        return NULL;
    }
    const char *prefix = o->key_prefix ? o->key_prefix : "phigate:";
    if (!*prefix || strlen(prefix) > 64) {
        snprintf(err, errlen, "approvals: key_prefix must be 1..64 characters");
        return NULL;
    }
    approvals *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    char inst[128], host[64] = "";
    gethostname(host, sizeof host - 1);
    snprintf(inst, sizeof inst, "%s:%ld", host, (long)getpid());
    a->base = base;
    a->host = strdup(o->host);
    a->port = o->port;
    a->password = o->password ? strdup(o->password) : NULL;
    a->prefix = strdup(prefix);
    a->instance = strdup(o->instance ? o->instance : inst);
    a->request_ttl_s = o->request_ttl_s ? o->request_ttl_s : 3600;
    a->grant_ttl_s = o->grant_ttl_s ? o->grant_ttl_s : 600;
    a->grant_mode = o->grant_mode;
    a->timeout_ms = o->timeout_ms ? o->timeout_ms : 2000;
    a->poll_ms = o->poll_ms ? o->poll_ms : 1000;
    snprintf(a->last_error, sizeof a->last_error, "connecting");
    for (int i = 0; i < S_COUNT; i++) {
        uint8_t md[SHA_DIGEST_LENGTH];
        SHA1((const uint8_t *)script_text[i], strlen(script_text[i]), md);
        for (int j = 0; j < SHA_DIGEST_LENGTH; j++)
            snprintf(a->sha[i] + 2 * j, 3, "%02x", md[j]);
    }
    a->health_ev = evtimer_new(base, on_health, a);
    if (!a->host || !a->prefix || !a->instance || (o->password && !a->password) || !a->health_ev ||
        !rconn_init(a, &a->cmd, "command", false) || !rconn_init(a, &a->sub, "events", true)) {
        snprintf(err, errlen, "out of memory");
        approvals_free(a);
        return NULL;
    }
    rconn_connect(&a->cmd);
    rconn_connect(&a->sub);
    struct timeval tv = ms_tv(HEALTH_MS);
    evtimer_add(a->health_ev, &tv);
    return a;
}

void approvals_free(approvals *a)
{
    if (!a)
        return;
    a->closing = true;
    snprintf(a->last_error, sizeof a->last_error, "phigate is shutting down");
    /* Outstanding commands complete (with NULL) inside these frees. */
    rconn_close(&a->cmd);
    rconn_close(&a->sub);
    while (a->rcmds) { /* never sent: still on their zero timers */
        redis_cmd *q = a->rcmds;
        rcmd_finish(q, NULL, "approval service shutting down");
        rcmd_free(q);
    }
    for (approval_wait *w = a->waiters; w; w = w->next)
        waiter_finish(w, APPROVAL_UNAVAILABLE, NULL, 0, "approval service shutting down");
    while (a->waiters) {
        approval_wait *w = a->waiters;
        if (w->state == W_DONE && !w->delivered)
            waiter_deliver(w);
        waiter_free(w);
    }
    while (a->ops) {
        approvals_op *op = a->ops;
        if (!op->completed) {
            op_fail(op, "approval service shutting down");
            op->status = DECISION_UNAVAILABLE;
            free(op->msg);
            op->msg = strdup("approval service shutting down");
        }
        op_deliver(op);
        op_free(op);
    }
    if (a->health_ev)
        event_free(a->health_ev);
    if (a->password) {
        explicit_bzero(a->password, strlen(a->password));
        free(a->password);
    }
    free(a->host), free(a->prefix), free(a->instance);
    free(a);
}

bool approvals_available(const approvals *a) { return a && a->cmd.state == RC_READY; }

const char *approvals_last_error(const approvals *a) { return a->last_error; }
