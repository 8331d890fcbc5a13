/*
 * The policy engine of each PostgreSQL upstream, loaded off the event loop.
 *
 * Reading an upstream's catalog (libpq) blocks for as long as the upstream
 * takes, so it runs on a worker thread; the loop gets the result through a
 * pipe.  Sessions that need an engine not loaded yet wait for it; a failed
 * load fails its waiters and the next session tries again.
 */
#ifndef PHIGATE_PG_ENGINES_H
#define PHIGATE_PG_ENGINES_H

#include <stdbool.h>
#include <stddef.h>

#include "gate/config.h"
#include "sqlpolicy/sqlpolicy.h"

struct event_base;
typedef struct pg_session pg_session;
typedef struct pg_engines pg_engines;

/* Called on the loop when the engine a session waited for is there (a new
 * reference), or with NULL and the reason it could not be loaded. */
typedef void (*pg_engine_ready_cb)(pg_session *s, sqlp_engine *engine, const char *err);

pg_engines *pg_engines_new(struct event_base *base, const config *cfg, pg_engine_ready_cb cb);
/* Wait for (or take at once) upstream i's engine; cb runs later, never inline. */
void pg_engines_request(pg_engines *e, int upstream_index, pg_session *s);
/* The session goes away: it no longer waits. */
void pg_engines_forget(pg_engines *e, pg_session *s);
/* Waits for loads still running, then frees every engine. */
void pg_engines_free(pg_engines *e);

#endif
