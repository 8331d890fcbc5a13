/*
 * The policy engine of each upstream of one protocol, loaded off the event
 * loop (both fronts).
 *
 * Reading an upstream's catalog (libpq, libmariadb) blocks for as long as the
 * upstream takes, so it runs on a worker thread; the loop gets the result
 * through a pipe.  Sessions that need an engine not loaded yet wait for it; a
 * failed load fails its waiters and the next request tries again.
 *
 *   engines_request(i, s) --ready--> cb(s, engine) on the next loop turn
 *                         --loading--> (thread: load()) --pipe--> cb(s, engine | NULL, err) for every waiter
 */
#ifndef PHIGATE_ENGINES_H
#define PHIGATE_ENGINES_H

#include <stdbool.h>
#include <stddef.h>

#include "gate/config.h"
#include "sqlpolicy/sqlpolicy.h"

struct event_base;
typedef struct engines engines;

/* Runs on a worker thread: upstream up's engine, or NULL and err.  info (may
 * stay "") gets a line about the server, e.g. its version. */
typedef sqlp_engine *(*engine_load_fn)(const config *cfg, const cfg_upstream *up, char *info, size_t infolen,
                                       char *err, size_t errlen);
/* Called on the loop when the engine a waiter waited for is there (a new
 * reference), or with NULL and the reason it could not be loaded. */
typedef void (*engine_ready_fn)(void *waiter, sqlp_engine *engine, const char *err);

/* Starts loading every upstream whose protocol is protocol. */
engines *engines_new(struct event_base *base, const config *cfg, const char *protocol, engine_load_fn load,
                     engine_ready_fn ready);
/* Wait for (or take at once) upstream i's engine; ready runs later, never inline. */
void engines_request(engines *e, int upstream_index, void *waiter);
/* Upstream i's engine now (a new reference), or NULL when it is not loaded:
 * then a load starts if none is running, and err says why there is none. */
sqlp_engine *engines_get(engines *e, int upstream_index, char *err, size_t errlen);
/* The info line of upstream i's last successful load ("" before). */
const char *engines_info(const engines *e, int upstream_index);
/* The waiter goes away: it no longer waits. */
void engines_forget(engines *e, void *waiter);
/* Waits for loads still running, then frees every engine. */
void engines_free(engines *e);

#endif
