/*
 * Configuration reload support shared by the daemon (gate/main.c) and
 * `phigatectl reload`: which changes need a restart, the digest recorded in
 * the audit log, and the status file through which the CLI learns the result.
 *
 * The daemon builds the whole new runtime (config, secrets, TLS contexts,
 * policy engines) off to the side and swaps it in only when all of it is good;
 * sessions keep the configuration they started with.
 */
#ifndef PHIGATE_RELOAD_H
#define PHIGATE_RELOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gate/config.h"

/* Settings a running phigate cannot change (listeners, audit log, Redis,
 * approvals client, admin console, log and pid files): one line per change
 * appended to out ("path: listen.postgres.port changed: ...").  Returns how
 * many.  Secret values are compared but never printed. */
size_t reload_restart_changes(const config *old, const config *next, char *out, size_t len);

/* Parse the masking rules the configuration names, as the policy engines
 * will (sqlp_catalog_load_rules); false with err when they do not load.  The
 * engines themselves load from the upstream catalogs on worker threads. */
bool reload_check_rules(const config *cfg, char *err, size_t errlen);

/* Hex SHA-256 over the configuration file and the masking rules it names
 * (never over credential files: a hash of a password can be guessed against). */
bool reload_config_digest(const config *cfg, char hex[65]);

/* "<pid_file>.reload": where the daemon writes each reload's outcome. */
void reload_status_path(const char *pid_file, char *out, size_t len);

/* Atomically replace the status file: "attempt N", "result ok|failed",
 * "generation G", "config_sha256 H", then one "error ..." line per error. */
bool reload_write_status(const char *pid_file, uint64_t attempt, bool ok, uint64_t generation, const char *sha256,
                         const char *errors);

/* The attempt number in a status file, 0 when there is none yet. */
uint64_t reload_status_attempt(const char *status_path);

#endif
