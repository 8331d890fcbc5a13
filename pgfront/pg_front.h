/*
 * pgfront: the PostgreSQL v3 front of phigate.  One listener, one upstream
 * connection per client session, all on one libevent loop.
 */
#ifndef PHIGATE_PG_FRONT_H
#define PHIGATE_PG_FRONT_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct config;
struct audit_log;
struct approvals;
struct oidc;

typedef struct pg_server pg_server;

/* audit may be NULL (audit.enabled: false). */
pg_server *pg_server_new(struct event_base *base, const struct config *cfg, struct audit_log *audit, char *err,
                         size_t errlen);
/* A server that does not listen yet: a reload builds the next one with this
 * and, when the whole new configuration is good, pg_server_take_over moves the
 * listener (and the per-identity counts, and the approvals client) from prev
 * to next.  prev keeps serving its sessions with its own configuration until
 * they end; free it when pg_server_session_count says 0. */
pg_server *pg_server_prepare(struct event_base *base, const struct config *cfg, struct audit_log *audit, char *err,
                             size_t errlen);
void pg_server_take_over(pg_server *next, pg_server *prev);
/* Close every session (their disconnect records are appended); then close the
 * audit log, then pg_server_free, which frees them. */
void pg_server_shutdown(pg_server *srv);
/* Held statements wait for approvals through a (NULL: they are refused). */
void pg_server_set_approvals(pg_server *srv, struct approvals *a);
/* Token (JWT) login for identities with an oidc_issuer (NULL: such logins are refused). */
void pg_server_set_oidc(pg_server *srv, struct oidc *o);
void pg_server_free(pg_server *srv);
size_t pg_server_session_count(const pg_server *srv);

#endif
