/*
 * admin_http: the approvers' web console and JSON API, served by libevent's
 * evhttp on phigate's own loop (HTTPS when admin.cert_file/key_file are set).
 *
 * Console (browser):                      API (phigatectl approvals, scripts):
 *   GET  /login, POST /login                GET  /api/requests
 *   GET  /            pending requests      GET  /api/requests/ID
 *   POST /requests/ID/approve  (form)       POST /api/requests/ID/approve {reason, ttl, row_cap}
 *   POST /requests/ID/deny     (form)       POST /api/requests/ID/deny    {reason}
 *   POST /logout
 *
 * Who may call:
 *   - the console: a session cookie from the login form (random, HttpOnly,
 *     SameSite=Strict, Secure over TLS), plus a per-session CSRF token in
 *     every POST (form field "csrf", or header X-CSRF-Token for fetch());
 *   - the API: HTTP Basic with an approver's name and password on every
 *     request (no cookie, so nothing to forge cross-site), or the console's
 *     session cookie (POSTs then need X-CSRF-Token).
 * Passwords are checked against approvers.<name>.scram off the loop
 * (approver_auth); failures are rate-limited per client address (5 per
 * 5 minutes, then 429).  A requester can never approve their own request:
 * the Redis script refuses it (403).
 * Every response carries a Content-Security-Policy with a per-response nonce
 * for the one inline script and style; the page loads nothing external.
 */
#ifndef PHIGATE_ADMIN_HTTP_H
#define PHIGATE_ADMIN_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gate/approvals.h"
#include "gate/config.h"

struct event_base;

typedef struct {
    const char *address; /* "127.0.0.1" */
    int port;            /* 0 = any free port (tests): see admin_http_port() */
    const char *cert_file, *key_file; /* both: HTTPS; neither: plain HTTP */
    const cfg_approver *approvers;    /* copied */
    size_t napprovers;
    uint32_t session_idle_s; /* 0 = 1800 */
    uint32_t session_max_s;  /* 0 = 43200 */
} admin_http_opts;

typedef struct admin_http admin_http;

/* From the admin: and approvers: sections (strings stay owned by cfg). */
void admin_http_opts_from_config(const config *cfg, admin_http_opts *o);

/* Binds and starts serving at once; NULL with err on failure.  a stays owned by
 * the caller and must outlive the listener. */
admin_http *admin_http_new(struct event_base *base, const admin_http_opts *o, approvals *a, char *err,
                           size_t errlen);
/* Answers unfinished requests with 503, then closes the listener. */
void admin_http_free(admin_http *h);
/* The port actually bound. */
int admin_http_port(const admin_http *h);

#endif
