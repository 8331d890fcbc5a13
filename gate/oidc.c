#include "gate/oidc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gate/jwt.h"
#include "gate/log.h"

typedef struct issuer_state {
    const cfg_oidc_issuer *cfg;
    jwks *keys;              /* NULL until the first successful load */
    struct timespec reloaded; /* monotonic time of the last (re)load attempt */
} issuer_state;

struct oidc {
    struct event_base *base;
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

static double since(const struct timespec *t)
{
    return mono_now() - ((double)t->tv_sec + t->tv_nsec / 1e9);
}

static bool load_file(issuer_state *is, char *err, size_t errlen)
{
    clock_gettime(CLOCK_MONOTONIC, &is->reloaded);
    jwks *ks = jwks_load_file(is->cfg->jwks_file, (size_t)is->cfg->max_jwks_bytes, err, errlen);
    if (!ks)
        return false;
    jwks_free(is->keys);
    is->keys = ks;
    return true;
}

oidc *oidc_new(struct event_base *base, const config *cfg, char *err, size_t errlen)
{
    oidc *o = calloc(1, sizeof *o);
    o->base = base;
    o->cfg = cfg;
    o->nissuers = cfg->noidc_issuers;
    o->issuers = calloc(o->nissuers ? o->nissuers : 1, sizeof *o->issuers);
    for (size_t i = 0; i < o->nissuers; i++) {
        issuer_state *is = &o->issuers[i];
        is->cfg = &cfg->oidc_issuers[i];
        char why[512];
        if (is->cfg->jwks_file && !load_file(is, why, sizeof why)) {
            snprintf(err, errlen, "oidc.%s: %s", is->cfg->name, why);
            oidc_free(o);
            return NULL;
        }
        if (is->keys)
            log_info("oidc.%s: %zu signature keys loaded from %s", is->cfg->name, is->keys->nkeys,
                     is->cfg->jwks_file);
    }
    return o;
}

void oidc_free(oidc *o)
{
    if (!o)
        return;
    for (size_t i = 0; i < o->nissuers; i++)
        jwks_free(o->issuers[i].keys);
    free(o->issuers);
    free(o);
}

static issuer_state *state_of(oidc *o, const cfg_oidc_issuer *iss)
{
    return &o->issuers[iss - o->cfg->oidc_issuers];
}

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

bool oidc_check(oidc *o, const cfg_identity *id, const char *token, size_t len, oidc_login *result,
                oidc_done_fn done, void *arg, oidc_wait **wait)
{
    (void)done, (void)arg;
    *wait = NULL;
    issuer_state *is = state_of(o, id->oidc);
    jwt_result jr;
    jwt_status st = verify(is, token, len, &jr);
    /* Key rotation: a new kid may be in the file already; reread it, at most once per interval. */
    if (st == JWT_UNKNOWN_KID && is->cfg->jwks_file && since(&is->reloaded) >= is->cfg->jwks_refetch_min_s) {
        char why[512];
        if (load_file(is, why, sizeof why))
            st = verify(is, token, len, &jr);
        else
            log_warn("oidc.%s: reloading keys: %s (keeping the previous keys)", is->cfg->name, why);
    }
    decide(id, st, &jr, result, o->cfg);
    explicit_bzero(&jr, sizeof jr);
    return true;
}

void oidc_cancel(oidc_wait *w)
{
    (void)w;
}
