/*
 * Per-identity limits shared by both fronts: concurrent connections and a
 * statement rate (token bucket, burst = one second's worth).  Single-threaded:
 * called from the event loop only.
 */
#ifndef PHIGATE_LIMITS_H
#define PHIGATE_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct identity_limits identity_limits;

/* One slot per configured identity (config->identities order). */
identity_limits *limits_new(size_t nidentities);
void limits_free(identity_limits *l);

/* max 0 = unlimited.  false when the identity already has max connections. */
bool limits_acquire_connection(identity_limits *l, size_t identity, int max);
void limits_release_connection(identity_limits *l, size_t identity);
/* The monotonic clock the statement bucket runs on. */
uint64_t limits_now_ns(void);
/* rate 0 = unlimited.  false when the identity ran out of statements for now. */
bool limits_take_statement(identity_limits *l, size_t identity, int per_second, uint64_t now_ns);

#endif
