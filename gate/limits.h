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
/* Another owner (a front after a configuration reload shares its predecessor's
 * counts); limits_free drops one reference. */
identity_limits *limits_ref(identity_limits *l);
void limits_free(identity_limits *l);
/* The slot of an identity by name, added on first use: counts keyed by name
 * survive a reload that reorders or adds identities. */
size_t limits_slot(identity_limits *l, const char *identity);

/* Client sockets of a front, whatever their identity (limits.max_clients):
 * counted here so that sessions of a configuration that is draining after a
 * reload still count.  false when max are open. */
bool limits_acquire_client(identity_limits *l, int max);
void limits_release_client(identity_limits *l);

/* max 0 = unlimited.  false when the identity already has max connections. */
bool limits_acquire_connection(identity_limits *l, size_t identity, int max);
void limits_release_connection(identity_limits *l, size_t identity);
/* The monotonic clock the statement bucket runs on. */
uint64_t limits_now_ns(void);
/* rate 0 = unlimited.  false when the identity ran out of statements for now. */
bool limits_take_statement(identity_limits *l, size_t identity, int per_second, uint64_t now_ns);

#endif
