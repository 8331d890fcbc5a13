/*
 * approver_auth: checks an approver's name + password against the SCRAM-SHA-256
 * verifier in the configuration (approvers.<name>.scram).
 *
 * A check is PBKDF2 over the verifier's iteration count (4096 by default, up to
 * ten million), far too slow for the event loop that carries every agent's
 * traffic.  So checks run on one worker thread; the result comes back through
 * a pipe the loop watches, and the callback runs on the loop thread.
 *
 * Callback contract: runs exactly once, on the loop, never inside
 * approver_auth_check(), unless approver_auth_cancel() was called first.
 * approver_auth_free() runs the callbacks of unfinished, uncancelled checks
 * (with ok = false) before returning.
 */
#ifndef PHIGATE_APPROVER_AUTH_H
#define PHIGATE_APPROVER_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "gate/config.h"
#include "gate/scram.h"

struct event_base;

/* The check itself (slow; thread-safe): PBKDF2 -> ClientKey -> SHA-256 == StoredKey,
 * compared in constant time. */
bool approver_password_matches(const scram_verifier *v, const char *password, size_t len)
    __attribute__((warn_unused_result));

typedef struct approver_auth approver_auth;
typedef struct approver_auth_job approver_auth_job;
typedef void (*approver_auth_cb)(void *arg, bool ok);

#define APPROVER_AUTH_MAX_QUEUE 32 /* checks waiting for the worker; more are refused as busy */

/* Copies the approvers (names and verifiers); starts the worker thread. */
approver_auth *approver_auth_new(struct event_base *base, const cfg_approver *approvers, size_t n, char *err,
                                 size_t errlen);
void approver_auth_free(approver_auth *aa);

bool approver_auth_known(const approver_auth *aa, const char *name);

/* NULL when the queue is full (the caller answers "busy, try again").  An
 * unknown name is checked against a made-up verifier, so it takes as long. */
approver_auth_job *approver_auth_check(approver_auth *aa, const char *name, const char *password,
                                       approver_auth_cb cb, void *arg) __attribute__((warn_unused_result));
void approver_auth_cancel(approver_auth_job *job);

#endif
