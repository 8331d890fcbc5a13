/*
 * myfront: the MySQL front of phigate.  One listener (listen.mysql), one
 * upstream MySQL/MariaDB connection per client session, all on the same
 * libevent loop as pgfront.
 */
#ifndef PHIGATE_MY_FRONT_H
#define PHIGATE_MY_FRONT_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct config;
struct audit_log;
struct approvals;
struct oidc;

typedef struct my_server my_server;

/* audit may be NULL (audit.enabled: false).  NULL + err when it cannot listen. */
my_server *my_server_new(struct event_base *base, const struct config *cfg, struct audit_log *audit, char *err,
                         size_t errlen);
/* Close every session (their disconnect records are appended); then close the
 * audit log, then my_server_free, which frees them. */
void my_server_shutdown(my_server *srv);
/* Held statements wait for approvals through a (NULL: refused). */
void my_server_set_approvals(my_server *srv, struct approvals *a);
/* Reload (as pg_server_prepare / pg_server_take_over): build without listening,
 * then move the listener and the per-identity counts from prev to next. */
my_server *my_server_prepare(struct event_base *base, const struct config *cfg, struct audit_log *audit, char *err,
                             size_t errlen);
void my_server_take_over(my_server *next, my_server *prev);
void my_server_free(my_server *srv);
/* Token (JWT) login for identities with an oidc_issuer (NULL: such logins are refused). */
void my_server_set_oidc(my_server *srv, struct oidc *o);
size_t my_server_session_count(const my_server *srv);

#endif
