/*
 * Token login for agent identities: each configured OIDC issuer's keys
 * (JWKS from a file, or fetched from its jwks_uri over HTTPS and refreshed
 * on a timer), a JWT verified against them (jwt.c), and the verified claims
 * mapped to the connecting identity and its role.  Shared by both fronts;
 * runs on the event loop and never blocks it: a token signed with a key not
 * yet known waits for one (rate-limited) refetch of the issuer's keys.
 */
#ifndef PHIGATE_OIDC_H
#define PHIGATE_OIDC_H

#include <stdbool.h>
#include <stddef.h>

#include "gate/config.h"

struct event_base;
typedef struct oidc oidc;
typedef struct oidc_wait oidc_wait;

/* Loads every issuer's keys (files now; URIs are fetched in the background).
 * NULL with err when a key file cannot be used. */
oidc *oidc_new(struct event_base *base, const config *cfg, char *err, size_t errlen);
void oidc_free(oidc *o);

typedef struct oidc_login {
    bool ok;
    char reason[160];    /* why refused: safe for the client and the logs (never the token) */
    const cfg_role *role; /* the role bound to the session when ok */
} oidc_login;

typedef void (*oidc_done_fn)(void *arg, const oidc_login *result);

/* Checks the token an identity (id->oidc set) presented.  Returns true when
 * decided now (result filled, done not called); false when it waits for the
 * issuer's keys: done(arg, result) runs later from the loop, unless
 * oidc_cancel(*wait) is called first. */
bool oidc_check(oidc *o, const cfg_identity *id, const char *token, size_t len, oidc_login *result,
                oidc_done_fn done, void *arg, oidc_wait **wait) __attribute__((warn_unused_result));
void oidc_cancel(oidc_wait *w);

#endif
