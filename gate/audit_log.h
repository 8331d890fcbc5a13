/*
 * audit_log: the append-only, hash-chained, signed audit log both fronts write.
 *
 * Contract (two sentences, the way sbuf.h does it): a record handed to
 * audit_log_append() is written and fdatasync'ed by a writer thread together
 * with every other record queued meanwhile (group commit), and its callback
 * then runs exactly once, on the thread running the event_base given at open,
 * never from inside audit_log_append().  ok=true means the record is on disk;
 * ok=false means it is not and never will be: refuse the statement with
 * audit_log_failed_reason() (or "out of memory" when that is NULL).
 *
 * Once a write or sync fails (ENOSPC, EACCES, EIO, EFBIG) the log is failed
 * for good, like PostgreSQL after a failed fsync: retrying a sync after an
 * error can report success for data the kernel already dropped.
 *
 *   front (loop thread)                writer thread
 *   audit_rec_statement() ---append--> queue --> format, chain, write, fdatasync
 *   on_durable(arg, ok)  <--eventfd---- done list <--'
 *
 * A front, per statement (the result is held until on_durable says ok):
 *
 *     audit_statement_info si = {.session = s->audit_sid, .stmt = ++s->nstmt, .received = sql,
 *                                .received_len = len, .decision = "allow", ...};
 *     audit_log_append(log, audit_rec_statement(&si), on_durable, s);
 *     ...
 *     static void on_durable(void *arg, bool ok) { ok ? release_result(arg)
 *                                                     : refuse(arg, audit_log_failed_reason(log)); }
 *
 * Records hold no PHI unless the caller puts it there: pass masked parameter
 * values and scrubbed error text.  The file format is in gate/AUDIT_FORMAT.md.
 */
#ifndef PHIGATE_AUDIT_LOG_H
#define PHIGATE_AUDIT_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gate/audit_json.h" /* AUDIT_WUR */

struct event_base;

typedef struct audit_log audit_log;
typedef struct audit_rec audit_rec;

/* ok: the record is durable.  Runs on the loop thread, exactly once. */
typedef void (*audit_durable_cb)(void *arg, bool ok);

typedef enum { AUDIT_MSG_INFO, AUDIT_MSG_WARNING, AUDIT_MSG_ERROR } audit_msg_level;
/* phigate's own log: the log says why it failed or what it sealed.  May be called
 * from the writer thread. */
typedef void (*audit_msg_fn)(void *arg, audit_msg_level level, const char *msg);

typedef struct {
    const char *dir;          /* log directory; created 0700 if missing */
    const char *key_path;     /* Ed25519 private key PEM (phigatectl audit keygen) */
    struct event_base *base;  /* callbacks run on the thread running this loop */
    uint32_t checkpoint_records; /* sign after this many records; 0 = 1000 */
    uint32_t checkpoint_ms;      /* ...or when the oldest unsigned record is this old; 0 = 1000 */
    uint64_t rotate_bytes;       /* start a new file past this size; 0 = 64 MiB */
    uint32_t rotate_seconds;     /* ...or when a file is this old; 0 = never by time */
    uint64_t preallocate_bytes;  /* zeroed space written ahead of the records so each
                                    fdatasync flushes data only; 0 = none */
    audit_msg_fn msg_fn;         /* NULL = gate/log.h's log_msg */
    void *msg_arg;
} audit_log_opts;

#define AUDIT_SESSION_LEN 48

/* Opens (or creates) the log: checks and seals a torn tail, writes a log_open
 * record durably, starts the writer thread.  Ignores SIGXFSZ process-wide so a
 * file-size rlimit surfaces as EFBIG instead of killing phigate.  NULL + err on
 * failure (fail closed: phigate must not serve without its log). */
audit_log *audit_log_open(const audit_log_opts *o, char *err, size_t errlen) AUDIT_WUR;

/* Takes ownership of rec (NULL is accepted: it fails like an OOM record).
 * cb may be NULL for records nothing waits on. */
void audit_log_append(audit_log *log, audit_rec *rec, audit_durable_cb cb, void *arg);

/* NULL while healthy; afterwards a stable sentence such as
 * "audit log write failed: audit-000003.jsonl: No space left on device (ENOSPC)". */
const char *audit_log_failed_reason(const audit_log *log);

/* A session id unique across restarts ("<seq of this run's log_open>-<n>"). */
void audit_log_next_session(audit_log *log, char out[AUDIT_SESSION_LEN]);

/* Call on the loop thread after the loop has stopped dispatching: writes every
 * queued record, a log_close record and a final checkpoint, runs the remaining
 * callbacks, frees everything. */
void audit_log_close(audit_log *log);

typedef struct {
    uint64_t records, batches, bytes, checkpoints, rotations;
    uint64_t max_batch;     /* most records made durable by one fdatasync */
    uint64_t syncs;         /* fdatasync() calls (batches, checkpoints, headers) */
    uint64_t sync_ns_total; /* time spent in write()+fdatasync() */
} audit_log_stats;
void audit_log_get_stats(audit_log *log, audit_log_stats *out);

/* ---- record builder ------------------------------------------------------
 * Setters never fail: an allocation failure is remembered in the record, which
 * then completes with ok=false.  That keeps the fronts free of a check per
 * field while still failing closed.  All setters accept rec == NULL.
 * Keys are the caller's constants; values are arbitrary bytes, escaped here. */

audit_rec *audit_rec_new(const char *type, const char *session);
void audit_rec_str(audit_rec *r, const char *key, const char *s); /* s NULL -> null */
void audit_rec_bytes(audit_rec *r, const char *key, const void *p, size_t n); /* p NULL -> null */
void audit_rec_int(audit_rec *r, const char *key, int64_t v);
void audit_rec_uint(audit_rec *r, const char *key, uint64_t v);
void audit_rec_bool(audit_rec *r, const char *key, bool v);
void audit_rec_hex(audit_rec *r, const char *key, const void *p, size_t n); /* p NULL -> null */
/* Nested values: key is NULL inside arrays.  Depth is limited to 8. */
void audit_rec_begin_object(audit_rec *r, const char *key);
void audit_rec_begin_array(audit_rec *r, const char *key);
void audit_rec_end(audit_rec *r);
void audit_rec_free(audit_rec *r); /* only for a record that was never appended */

/* ---- typed records: one call per event, for the fronts ------------------ */

typedef struct {
    const char *session;
    const char *protocol;    /* "postgres" | "mysql" */
    const char *client_addr; /* "203.0.113.7:51234" */
    const char *tls_version; /* "TLSv1.3"; NULL = plaintext */
    const char *identity;    /* phigate identity the client proved */
    const char *auth_method; /* "scram-sha-256", "cert", "oidc", "caching_sha2_password", ... */
    const char *database;
    const char *role;
} audit_connect_info;

typedef struct {
    const char *session;
    const char *protocol;
    const char *client_addr;
    const char *tls_version;
    const char *user;        /* the name the client claimed, as sent */
    const char *auth_method;
    const char *reason;      /* why it failed; never the secret */
} audit_auth_failure_info;

typedef struct {
    const char *name;    /* output column as the agent sees it */
    const char *masking; /* masking applied ("partial(4)", "hmac_token", ...); NULL = none */
} audit_column;

typedef struct {
    const void *p; /* NULL = SQL NULL; bytes already masked by the caller */
    size_t len;
} audit_param;

typedef struct {
    const char *session;
    uint64_t stmt;                     /* statement number within the session, from 1 */
    const void *received;              /* text as the agent sent it */
    size_t received_len;
    const void *upstream;              /* text sent upstream after rewriting; NULL = not sent */
    size_t upstream_len;
    const audit_param *params;         /* bound parameters, masked */
    size_t nparams;
    const char *decision;              /* "allow" | "rewrite" | "hold" | "deny" */
    const char *statement_class;       /* "read", "write", ... */
    const char *rule;                  /* rule that decided; NULL = default */
    const char *reason;                /* why (for hold/deny) */
    const char *const *tables;         /* base tables touched, for evidence queries */
    size_t ntables;
    const audit_column *columns;       /* masking per output column */
    size_t ncolumns;
    const char *approval_id;           /* approval that released it; NULL = none */
    const struct minnec_outcome *min_necessary; /* estimate/budget checks (gate/min_necessary.h); NULL = none */
} audit_statement_info;

typedef struct {
    const char *session;
    uint64_t stmt;
    uint64_t rows;
    uint64_t bytes;              /* bytes of result sent to the agent */
    const uint8_t *agent_sha256; /* 32 bytes: the result as the agent received it; NULL = none */
    const uint8_t *db_sha256;    /* 32 bytes: as the database sent it; NULL = none */
    uint64_t duration_us;        /* statement received -> result complete */
    const char *sqlstate;        /* NULL on success */
    const char *error;           /* error text as the agent received it */
} audit_result_info;

typedef struct {
    const char *session;
    uint64_t stmt;
    const char *approval_id;
    const char *event;       /* "requested" | "approved" | "denied" | "expired" | "timeout" */
    const char *approver;    /* NULL for requested/expired/timeout */
    const char *reason;
    const char *fingerprint; /* statement fingerprint the approval is bound to */
} audit_approval_info;

/* A configuration reload (SIGHUP or phigatectl reload), applied or refused. */
typedef struct {
    bool ok;
    const char *path;          /* the configuration file */
    uint64_t generation;       /* the configuration now serving new sessions (1 = the one phigate started with) */
    const char *config_sha256; /* hex digest of the new file and its masking rules; NULL when refused early */
    uint64_t errors;           /* refused: how many errors */
    const char *detail;        /* refused: the first error (file:line: text; never a secret) */
} audit_reload_info;

audit_rec *audit_rec_connect(const audit_connect_info *c);
audit_rec *audit_rec_auth_failure(const audit_auth_failure_info *a);
audit_rec *audit_rec_statement(const audit_statement_info *s);
audit_rec *audit_rec_result(const audit_result_info *r);
audit_rec *audit_rec_approval(const audit_approval_info *a);
audit_rec *audit_rec_config_reload(const audit_reload_info *i);
audit_rec *audit_rec_disconnect(const char *session, const char *reason, uint64_t statements,
                                uint64_t duration_us);

#endif
