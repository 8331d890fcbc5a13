/*
 * Per issuer: its current key set, and for a jwks_uri the fetch state:
 *
 *   start ──fetch──> keys ──every jwks_refresh_s──> refetch (old keys kept on failure)
 *                       └──unknown kid / no keys yet──> refetch now, if the last one
 *                          started jwks_refetch_min_s ago; the login waits for it
 *
 * Waiting logins hold a copy of their token (wiped when freed) and are checked
 * again, once, when the fetch ends.
 */
#include "gate/oidc.h"

#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gate/jwks_fetch.h"
#include "gate/jwt.h"
#include "gate/log.h"
#include "gate/tls.h"

#define FETCH_TIMEOUT_S 10

typedef struct issuer_state issuer_state;

struct oidc_wait {
    oidc_wait *next;
    issuer_state *is;
    const cfg_identity *id;
    char *token;
    size_t len;
    oidc_done_fn done;
    void *arg;
};

struct issuer_state {
    oidc *owner;
    const cfg_oidc_issuer *cfg;
    jwks *keys;               /* NULL until the first successful load */
    double reloaded;          /* monotonic seconds of the last (re)load or fetch start; <0: never */
    SSL_CTX *tls;             /* jwks_uri only */
    jwks_fetch *fetch;        /* in flight */
    struct event *refresh;    /* periodic refetch */
    oidc_wait *waiters;
};

struct oidc {
    struct event_base *base;
    struct evdns_base *dns;
    const config *cfg;
    issuer_state *issuers;
    size_t nissuers;
};

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static bool may_reload(const issuer_state *is)
{
    return is->reloaded < 0 || mono_now() - is->reloaded >= is->cfg->jwks_refetch_min_s;
}

static bool load_file(issuer_state *is, char *err, size_t errlen)
{
    is->reloaded = mono_now();
    jwks *ks = jwks_load_file(is->cfg->jwks_file, (size_t)is->cfg->max_jwks_bytes, err, errlen);
    if (!ks)
        return false;
    jwks_free(is->keys);
    is->keys = ks;
    return true;
}

/* ---- verification and mapping ---------------------------------------------------- */

static jwt_status verify(issuer_state *is, const char *token, size_t len, jwt_result *jr)
{
    const cfg_oidc_issuer *c = is->cfg;
    jwt_policy p = {
        .issuer = c->issuer,
        .audience = c->audience,
        .algs = c->algs,
        .skew_s = c->clock_skew_s,
        .max_token_bytes = (size_t)c->max_token_bytes,
        .identity_claim = c->identity_claim,
        .role_claim = c->role_claim,
    };
    if (!is->keys) {
        memset(jr, 0, sizeof *jr);
        snprintf(jr->reason, sizeof jr->reason, "the issuer's signing keys are not available");
        return JWT_REFUSED;
    }
    return jwt_verify(token, len, &p, is->keys, (int64_t)time(NULL), jr);
}

/* Verified claims -> the connecting identity and its role. */
static void decide(const cfg_identity *id, jwt_status st, const jwt_result *jr, oidc_login *out, const config *cfg)
{
    memset(out, 0, sizeof *out);
    if (st != JWT_OK) {
        snprintf(out->reason, sizeof out->reason, "%s", jr->reason);
        return;
    }
    if (strcmp(jr->identity, id->name) != 0) {
        snprintf(out->reason, sizeof out->reason, "the token's %s claim names another identity",
                 id->oidc->identity_claim);
        return;
    }
    const cfg_role *role = id->role;
    if (jr->role[0]) {
        role = config_find_role(cfg, jr->role);
        if (!role) {
            snprintf(out->reason, sizeof out->reason, "the token names a role phigate does not define");
            return;
        }
        if (!config_issuer_allows_role(id->oidc, role->name)) {
            snprintf(out->reason, sizeof out->reason, "the token names a role this issuer may not grant");
            return;
        }
    }
    if (!role) {
        snprintf(out->reason, sizeof out->reason, "the token names no role (claim %s) and the identity has none",
                 id->oidc->role_claim ? id->oidc->role_claim : "-");
        return;
    }
    out->ok = true;
    out->role = role;
}

static void check_now(issuer_state *is, const cfg_identity *id, const char *token, size_t len, oidc_login *out)
{
    jwt_result jr;
    decide(id, verify(is, token, len, &jr), &jr, out, is->owner->cfg);
    OPENSSL_cleanse(&jr, sizeof jr);
}

/* ---- fetching keys from jwks_uri ----------------------------------------------------- */

static void free_wait(oidc_wait *w)
{
    OPENSSL_cleanse(w->token, w->len);
    free(w->token);
    free(w);
}

/* Each waiting login, checked against whatever keys there are now.  One at a
 * time off the list, so a done callback may cancel any of the others. */
static void wake_waiters(issuer_state *is)
{
    while (is->waiters) {
        oidc_wait *w = is->waiters;
        is->waiters = w->next;
        oidc_login r;
        check_now(is, w->id, w->token, w->len, &r);
        oidc_done_fn done = w->done;
        void *arg = w->arg;
        free_wait(w);
        done(arg, &r);
    }
}

static void fetched(void *arg, jwks *keys, const char *err)
{
    issuer_state *is = arg;
    is->fetch = NULL;
    if (keys) {
        jwks_free(is->keys);
        is->keys = keys;
        log_info("oidc.%s: %zu signature keys fetched from %s", is->cfg->name, keys->nkeys, is->cfg->jwks_uri);
    } else {
        log_warn("oidc.%s: fetching keys from %s failed: %s%s", is->cfg->name, is->cfg->jwks_uri, err,
                 is->keys ? " (keeping the previous keys)" : "");
    }
    wake_waiters(is);
}

static bool start_fetch(issuer_state *is)
{
    if (is->fetch)
        return true;
    char err[256];
    is->reloaded = mono_now();
    is->fetch = jwks_fetch_start(is->owner->base, is->owner->dns, is->tls, is->cfg->jwks_uri,
                                 (size_t)is->cfg->max_jwks_bytes, FETCH_TIMEOUT_S, fetched, is, err, sizeof err);
    if (!is->fetch)
        log_warn("oidc.%s: cannot fetch keys from %s: %s", is->cfg->name, is->cfg->jwks_uri, err);
    return is->fetch != NULL;
}

static void refresh_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    start_fetch(arg);
}

static bool setup_uri(oidc *o, issuer_state *is, char *err, size_t errlen)
{
    char why[256];
    if (!o->dns) {
        /* Host names resolve without blocking the loop; numeric hosts need no server. */
        o->dns = evdns_base_new(o->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
        if (!o->dns && !(o->dns = evdns_base_new(o->base, 0))) {
            snprintf(err, errlen, "cannot set up DNS resolution");
            return false;
        }
    }
    if (!(is->tls = tls_client_ctx_verified(is->cfg->ca_file, why, sizeof why))) {
        snprintf(err, errlen, "oidc.%s: %s", is->cfg->name, why);
        return false;
    }
    struct timeval every = {is->cfg->jwks_refresh_s, 0};
    is->refresh = event_new(o->base, -1, EV_PERSIST, refresh_cb, is);
    event_add(is->refresh, &every);
    start_fetch(is);
    return true;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

oidc *oidc_new(struct event_base *base, const config *cfg, char *err, size_t errlen)
{
    oidc *o = calloc(1, sizeof *o);
    o->base = base;
    o->cfg = cfg;
    o->nissuers = cfg->noidc_issuers;
    o->issuers = calloc(o->nissuers ? o->nissuers : 1, sizeof *o->issuers);
    for (size_t i = 0; i < o->nissuers; i++) {
        issuer_state *is = &o->issuers[i];
        is->owner = o;
        is->cfg = &cfg->oidc_issuers[i];
        is->reloaded = -1;
    }
    for (size_t i = 0; i < o->nissuers; i++) {
        issuer_state *is = &o->issuers[i];
        char why[512];
        bool ok = true;
        if (is->cfg->jwks_file) {
            ok = load_file(is, why, sizeof why);
            if (!ok)
                snprintf(err, errlen, "oidc.%s: %s", is->cfg->name, why);
            else
                log_info("oidc.%s: %zu signature keys loaded from %s", is->cfg->name, is->keys->nkeys,
                         is->cfg->jwks_file);
        } else {
            ok = setup_uri(o, is, err, errlen);
        }
        if (!ok) {
            oidc_free(o);
            return NULL;
        }
    }
    return o;
}

void oidc_free(oidc *o)
{
    if (!o)
        return;
    for (size_t i = 0; i < o->nissuers; i++) {
        issuer_state *is = &o->issuers[i];
        while (is->waiters) {
            oidc_wait *w = is->waiters;
            is->waiters = w->next;
            free_wait(w);
        }
        jwks_fetch_cancel(is->fetch);
        if (is->refresh)
            event_free(is->refresh);
        if (is->tls)
            SSL_CTX_free(is->tls);
        jwks_free(is->keys);
    }
    if (o->dns)
        evdns_base_free(o->dns, 0);
    free(o->issuers);
    free(o);
}

/* ---- logins ----------------------------------------------------------------------------- */

static issuer_state *state_of(oidc *o, const cfg_oidc_issuer *iss)
{
    return &o->issuers[iss - o->cfg->oidc_issuers];
}

static oidc_wait *enqueue(issuer_state *is, const cfg_identity *id, const char *token, size_t len,
                          oidc_done_fn done, void *arg)
{
    oidc_wait *w = calloc(1, sizeof *w);
    w->is = is;
    w->id = id;
    w->token = malloc(len ? len : 1);
    memcpy(w->token, token, len);
    w->len = len;
    w->done = done;
    w->arg = arg;
    w->next = is->waiters;
    is->waiters = w;
    return w;
}

bool oidc_check(oidc *o, const cfg_identity *id, const char *token, size_t len, oidc_login *result,
                oidc_done_fn done, void *arg, oidc_wait **wait)
{
    *wait = NULL;
    issuer_state *is = state_of(o, id->oidc);
    jwt_result jr;
    jwt_status st = verify(is, token, len, &jr);
    bool want_keys = st == JWT_UNKNOWN_KID || !is->keys, reloaded = false;
    if (want_keys && is->cfg->jwks_uri && (is->fetch || (may_reload(is) && start_fetch(is)))) {
        OPENSSL_cleanse(&jr, sizeof jr);
        *wait = enqueue(is, id, token, len, done, arg);
        return false;
    }
    /* Key rotation with a file: the new kid may be in it already. */
    if (want_keys && is->cfg->jwks_file && may_reload(is)) {
        char why[512];
        reloaded = load_file(is, why, sizeof why);
        if (!reloaded)
            log_warn("oidc.%s: reloading keys: %s (keeping the previous keys)", is->cfg->name, why);
    }
    if (reloaded)
        check_now(is, id, token, len, result);
    else
        decide(id, st, &jr, result, o->cfg);
    OPENSSL_cleanse(&jr, sizeof jr);
    return true;
}

void oidc_cancel(oidc_wait *w)
{
    if (!w)
        return;
    for (oidc_wait **p = &w->is->waiters; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            free_wait(w);
            return;
        }
}
