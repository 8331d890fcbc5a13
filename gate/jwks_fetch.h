/*
 * One HTTPS GET of an issuer's JWKS on the event loop (libevent evhttp over a
 * bufferevent_openssl), the server certificate checked against the issuer's
 * CA file (or the system store) and its host name or IP address; the body is
 * bounded and parsed into a key set.  Exactly one call of done per started
 * fetch, unless it is cancelled first.
 */
#ifndef PHIGATE_JWKS_FETCH_H
#define PHIGATE_JWKS_FETCH_H

#include <openssl/ssl.h>
#include <stddef.h>

#include "gate/jwks.h"

struct event_base;
struct evdns_base;
typedef struct jwks_fetch jwks_fetch;

/* keys: the parsed set (the callee owns it) or NULL with err saying why. */
typedef void (*jwks_fetch_done)(void *arg, jwks *keys, const char *err);

/* NULL with err when the request cannot even be sent (bad URI, TLS setup). */
jwks_fetch *jwks_fetch_start(struct event_base *base, struct evdns_base *dns, SSL_CTX *ctx, const char *uri,
                             size_t max_bytes, int timeout_s, jwks_fetch_done done, void *arg, char *err,
                             size_t errlen);
/* Stops a fetch whose done has not run yet; done will not run. */
void jwks_fetch_cancel(jwks_fetch *f);

#endif
