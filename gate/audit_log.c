/*
 * The audit log writer; see audit_log.h for the contract and
 * gate/AUDIT_FORMAT.md for the bytes on disk.
 *
 * Threads: the loop thread appends (builds the body, takes the mutex, links
 * the record).  The writer thread owns the file, the chain head and the
 * write buffer: it takes every queued record at once, wraps and chains them,
 * does one write() and one fdatasync() (group commit: whatever queued during
 * the previous sync rides the next one), then hands the batch back through an
 * eventfd so callbacks run on the loop thread.
 */
#include "gate/audit_log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/rand.h>

#include "gate/audit_crypto.h"
#include "gate/audit_internal.h"
#include "gate/audit_read.h"
#include "gate/log.h"

#define DEFAULT_CHECKPOINT_RECORDS 1000
#define DEFAULT_CHECKPOINT_MS 1000
#define DEFAULT_ROTATE_BYTES (64ull << 20)
#define FORMAT_NAME "phigate-audit-v1"
#define MAX_SYNC_BYTES (1u << 20)

struct audit_log {
    /* settings, fixed at open */
    char *dir;
    uint32_t cp_records, cp_ms, rotate_seconds;
    uint64_t rotate_bytes;
    uint64_t prealloc_bytes; /* zeroed space kept ahead of the data; 0 = none */
    audit_msg_fn msg_fn;
    void *msg_arg;
    EVP_PKEY *key;
    char key_fpr[AUDIT_FPR_LEN];
    char pub_hex[2 * AUDIT_PUBKEY_LEN + 1];
    char log_id[64];
    uint64_t run_seq; /* seq of this run's log_open record */
    _Atomic uint64_t sessions;
    int dirfd, lockfd;

    /* writer thread only (and open/close while it is not running) */
    int fd;
    uint32_t file_no;
    uint64_t file_size;   /* bytes durable in the current file */
    uint64_t file_space;  /* the file's length on disk: file_size plus zero padding */
    char *zeros;          /* prealloc_bytes of zeros, allocated on first use */
    uint64_t file_records;
    struct timespec file_opened, last_cp; /* CLOCK_MONOTONIC */
    uint64_t next_seq;
    uint8_t head[AUDIT_SHA256_LEN]; /* SHA-256 of the last line emitted */
    uint64_t unsigned_count;        /* records emitted since the last checkpoint */
    uint64_t run_records;
    audit_buf wbuf;
    pthread_t thread;
    bool thread_started;

    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    audit_rec *pending, **pending_tail;
    audit_rec *done, **done_tail;
    bool stop;
    audit_log_stats stats;
    char reason[512];
    atomic_bool failed;

    /* loop side */
    int efd;
    struct event *ev;
};

/* ---- small helpers ---------------------------------------------------- */

static void say(audit_log *l, audit_msg_level lv, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(audit_log *l, audit_msg_level lv, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (l->msg_fn)
        l->msg_fn(l->msg_arg, lv, msg);
    else
        log_msg(lv == AUDIT_MSG_ERROR ? LOG_LEVEL_ERROR : lv == AUDIT_MSG_WARNING ? LOG_LEVEL_WARN : LOG_LEVEL_INFO,
                "audit", "%s", msg);
}

static void fmt_ts(const struct timespec *ts, char out[40])
{
    struct tm tm;
    gmtime_r(&ts->tv_sec, &tm);
    size_t n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 40 - n, ".%06ldZ", ts->tv_nsec / 1000);
}

static void now_ts(char out[40])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    fmt_ts(&ts, out);
}

static struct timespec mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts;
}

static int64_t ms_since(const struct timespec *t)
{
    struct timespec n = mono_now();
    return (int64_t)(n.tv_sec - t->tv_sec) * 1000 + (n.tv_nsec - t->tv_nsec) / 1000000;
}

static void file_name(char out[32], uint32_t no)
{
    snprintf(out, 32, AUDIT_FILE_FMT, no);
}

static void stat_bump(audit_log *l, uint64_t *counter)
{
    pthread_mutex_lock(&l->mu);
    (*counter)++;
    pthread_mutex_unlock(&l->mu);
}

/* ---- failure ---------------------------------------------------------- */

/* Enter the permanent failed state.  The reason is written before the flag
 * is published, so a reader that sees failed also sees the whole sentence. */
static bool fail_log(audit_log *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail_log(audit_log *l, const char *fmt, ...)
{
    if (atomic_load(&l->failed))
        return false;
    pthread_mutex_lock(&l->mu);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->reason, sizeof l->reason, fmt, ap);
    va_end(ap);
    atomic_store(&l->failed, true);
    pthread_mutex_unlock(&l->mu);
    say(l, AUDIT_MSG_ERROR, "%s; refusing every statement from now on", l->reason);
    return false;
}

static bool fail_io(audit_log *l, const char *op, int err)
{
    char name[32];
    file_name(name, l->file_no);
    /* Cut a half-written batch so the file ends on a record boundary; its
     * records were never acknowledged.  Best effort: the disk is misbehaving. */
    if (l->fd >= 0 && ftruncate(l->fd, (off_t)l->file_size) != 0)
        say(l, AUDIT_MSG_WARNING, "%s: cannot cut the partial batch: %s", name, strerror(errno));
    l->file_space = l->file_size;
    l->wbuf.len = 0;
    const char *ename = strerrorname_np(err);
    return fail_log(l, "audit log %s failed: %s/%s: %s (%s)", op, l->dir, name, strerror(err),
                    ename ? ename : "?");
}

/* ---- emitting lines into the write buffer ----------------------------- */

/* Wraps a body as the next line of the chain:
 *   {"seq":N,"ts":"...","prev":"<hex of the previous line's SHA-256>",<body>}\n */
static void emit(audit_log *l, const char *ts, const char *body, size_t n)
{
    char prev[2 * AUDIT_SHA256_LEN + 1];
    audit_hex(l->head, sizeof l->head, prev);
    size_t start = l->wbuf.len;
    audit_buf_printf(&l->wbuf, "{\"seq\":%" PRIu64 ",\"ts\":\"%s\",\"prev\":\"%s\",", l->next_seq, ts, prev);
    audit_buf_put(&l->wbuf, body, n);
    audit_buf_putc(&l->wbuf, '}');
    if (l->wbuf.oom || !audit_sha256(l->wbuf.p + start, l->wbuf.len - start, l->head)) {
        l->wbuf.oom = true; /* flush turns this into the failed state */
        return;
    }
    audit_buf_putc(&l->wbuf, '\n');
    l->next_seq++;
    l->unsigned_count++;
    l->file_records++;
}

static void emit_buf(audit_log *l, audit_buf *body)
{
    char ts[40];
    now_ts(ts);
    if (body->oom)
        l->wbuf.oom = true;
    else
        emit(l, ts, body->p, body->len);
    audit_buf_free(body);
}

/* The signature covers log_id, seq, ts and prev: prev commits to every byte
 * before the checkpoint, so one signature seals the whole prefix. */
static void emit_checkpoint(audit_log *l)
{
    char ts[40], prev[2 * AUDIT_SHA256_LEN + 1], msg[256], sighex[2 * AUDIT_SIG_LEN + 1];
    uint8_t sig[AUDIT_SIG_LEN];
    now_ts(ts);
    audit_hex(l->head, sizeof l->head, prev);
    size_t n = audit_checkpoint_message(msg, sizeof msg, l->log_id, l->next_seq, ts, prev);
    if (n == 0 || !audit_sign(l->key, msg, n, sig)) {
        l->wbuf.oom = true;
        return;
    }
    audit_hex(sig, sizeof sig, sighex);
    audit_buf b = {0};
    audit_buf_printf(&b, "\"type\":\"checkpoint\",\"log_id\":\"%s\",\"key\":\"%s\",\"sig\":\"%s\"", l->log_id,
                     l->key_fpr, sighex);
    if (!b.oom)
        emit(l, ts, b.p, b.len);
    else
        l->wbuf.oom = true;
    audit_buf_free(&b);
    l->unsigned_count = 0;
    l->last_cp = mono_now();
    stat_bump(l, &l->stats.checkpoints);
}

/* Genesis and file_start both name the log and its key, so any single file
 * says which key verifies it. */
static void emit_file_header(audit_log *l, const char *type, const char *prev_file)
{
    char name[32];
    file_name(name, l->file_no);
    audit_buf b = {0};
    audit_buf_printf(&b, "\"type\":\"%s\",\"format\":\"" FORMAT_NAME "\",\"log_id\":\"%s\",\"alg\":\"ed25519\","
                     "\"key\":\"%s\",\"pubkey\":\"%s\",\"file\":\"%s\"",
                     type, l->log_id, l->key_fpr, l->pub_hex, name);
    if (prev_file)
        audit_buf_printf(&b, ",\"prev_file\":\"%s\"", prev_file);
    emit_buf(l, &b);
}

/* ---- writing ---------------------------------------------------------- */

static bool write_all_at(int fd, const char *p, size_t n, uint64_t off, int *err)
{
    while (n) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            *err = errno;
            return false;
        }
        if (w == 0) { /* should not happen on a regular file; don't spin */
            *err = EIO;
            return false;
        }
        p += w;
        off += (uint64_t)w;
        n -= (size_t)w;
    }
    return true;
}

/*
 * Preallocation, as PostgreSQL does for WAL segments: records overwrite zeros
 * that are already on disk, so fdatasync() flushes data only.  Appending would
 * also change the file's size, and on ext4 every such fdatasync() commits the
 * journal too (~100 us against ~160 us per sync on this project's test disk).
 * fallocate() is not enough: it leaves unwritten extents, whose conversion is
 * again a metadata change.  Readers treat trailing zeros as the end of a file;
 * rotation and close cut them off.
 */
static bool ensure_space(audit_log *l, uint64_t need)
{
    if (need <= l->file_space || l->prealloc_bytes == 0) {
        if (need > l->file_space)
            l->file_space = need; /* no preallocation: the write itself extends the file */
        return true;
    }
    if (!l->zeros && !(l->zeros = calloc(1, l->prealloc_bytes)))
        return fail_log(l, "audit log failed: out of memory for preallocation");
    uint64_t end = need + l->prealloc_bytes;
    while (l->file_space < end) {
        size_t n = (size_t)(end - l->file_space < l->prealloc_bytes ? end - l->file_space : l->prealloc_bytes);
        int err = 0;
        if (!write_all_at(l->fd, l->zeros, n, l->file_space, &err)) {
            if (err != ENOSPC && err != EFBIG && err != EDQUOT)
                return fail_io(l, "preallocate", err);
            /* Short of space: records still fit where padding does not.  The
             * record's own write says when they stop fitting. */
            l->file_space = need;
            return true;
        }
        l->file_space += n;
    }
    return true;
}

/* A file that is finished (rotated or closed) ends at its last record. */
static bool cut_padding(audit_log *l)
{
    if (l->fd < 0 || l->file_space <= l->file_size)
        return true;
    if (ftruncate(l->fd, (off_t)l->file_size) != 0 || fdatasync(l->fd) != 0)
        return fail_io(l, "cut preallocated space", errno);
    l->file_space = l->file_size;
    return true;
}

/* write() + fdatasync() of the buffer: the only place bytes reach the file. */
static bool flush(audit_log *l)
{
    if (atomic_load(&l->failed))
        return false;
    if (l->wbuf.oom)
        return fail_log(l, "audit log failed: out of memory while formatting or signing records");
    if (l->wbuf.len == 0)
        return true;
    struct timespec t0 = mono_now();
    int err = 0;
    if (!ensure_space(l, l->file_size + l->wbuf.len))
        return false;
    if (!write_all_at(l->fd, l->wbuf.p, l->wbuf.len, l->file_size, &err))
        return fail_io(l, "write", err);
    if (fdatasync(l->fd) != 0)
        return fail_io(l, "fdatasync", errno);
    struct timespec t1 = mono_now();
    l->file_size += l->wbuf.len;
    pthread_mutex_lock(&l->mu);
    l->stats.bytes += l->wbuf.len;
    l->stats.syncs++;
    l->stats.sync_ns_total += (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000ll + (t1.tv_nsec - t0.tv_nsec));
    pthread_mutex_unlock(&l->mu);
    l->wbuf.len = 0;
    return true;
}

/* Creates a file durably under its final name: header into NAME.tmp, sync,
 * rename, sync the directory.  A crash leaves either no file or a complete
 * header, never an empty log file. */
static bool create_file(audit_log *l, uint32_t no, const char *type, const char *prev_file)
{
    char name[32], tmp[40];
    file_name(name, no);
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    int fd = openat(l->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return fail_io(l, "create", errno);
    int old = l->fd;
    l->fd = fd;
    l->file_no = no;
    l->file_size = l->file_space = 0;
    l->file_records = 0;
    emit_file_header(l, type, prev_file);
    if (!flush(l) || renameat(l->dirfd, tmp, l->dirfd, name) != 0 || fsync(l->dirfd) != 0) {
        int e = errno;
        unlinkat(l->dirfd, tmp, 0);
        return atomic_load(&l->failed) ? false : fail_io(l, "rename", e);
    }
    if (old >= 0)
        close(old);
    l->file_opened = mono_now();
    return true;
}

/* The old file ends with a checkpoint, so each file is signed to its end. */
static bool rotate(audit_log *l)
{
    char prev[32];
    file_name(prev, l->file_no);
    if (l->unsigned_count) {
        emit_checkpoint(l);
        if (!flush(l))
            return false;
    }
    if (!cut_padding(l) || !create_file(l, l->file_no + 1, "file_start", prev))
        return false;
    stat_bump(l, &l->stats.rotations);
    char head[2 * AUDIT_SHA256_LEN + 1];
    audit_hex(l->head, sizeof l->head, head);
    say(l, AUDIT_MSG_INFO, "rotated %s -> " AUDIT_FILE_FMT " at seq %" PRIu64 ", head %s", prev, l->file_no,
        l->next_seq - 1, head);
    return true;
}

/* ---- completion back to the loop thread ------------------------------- */

static void hand_back(audit_log *l, audit_rec *list, audit_rec **tail)
{
    if (!list)
        return;
    pthread_mutex_lock(&l->mu);
    *l->done_tail = list;
    l->done_tail = tail;
    pthread_mutex_unlock(&l->mu);
    uint64_t one = 1;
    /* EAGAIN only if the counter is about to overflow: the loop is awake anyway. */
    if (write(l->efd, &one, sizeof one) < 0 && errno != EAGAIN)
        say(l, AUDIT_MSG_ERROR, "eventfd write: %s", strerror(errno));
}

static void run_done(audit_log *l)
{
    pthread_mutex_lock(&l->mu);
    audit_rec *r = l->done;
    l->done = NULL;
    l->done_tail = &l->done;
    pthread_mutex_unlock(&l->mu);
    while (r) {
        audit_rec *next = r->next;
        if (r->cb)
            r->cb(r->arg, r->ok);
        audit_rec_free(r);
        r = next;
    }
}

static void on_eventfd(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    uint64_t n;
    if (read(fd, &n, sizeof n) < 0 && errno != EAGAIN)
        say(arg, AUDIT_MSG_ERROR, "eventfd read: %s", strerror(errno));
    run_done(arg);
}

/* ---- the writer thread ------------------------------------------------ */

/* A huge batch is cut at file-size limits (files stay near rotate_bytes) and
 * every MAX_SYNC_BYTES (the write buffer stays bounded). */
static bool mid_batch_flush(audit_log *l)
{
    if (l->file_size + l->wbuf.len >= l->rotate_bytes)
        return flush(l) && rotate(l);
    if (l->wbuf.len >= MAX_SYNC_BYTES)
        return flush(l);
    return true;
}

static void write_batch(audit_log *l, audit_rec *batch)
{
    uint64_t n = 0;
    bool ok = true;
    for (audit_rec *r = batch; r; r = r->next) {
        r->ok = false;
        if (!ok || atomic_load(&l->failed) || r->body.oom || r->misuse || r->depth)
            continue; /* never write a record the caller did not finish */
        char ts[40];
        fmt_ts(&r->ts, ts);
        emit(l, ts, r->body.p, r->body.len);
        r->ok = true;
        n++;
        if (l->unsigned_count >= l->cp_records)
            emit_checkpoint(l);
        ok = mid_batch_flush(l);
    }
    /* Records flushed before a later failure are on disk but reported failed:
     * the safe direction (the statement is refused, the record stays). */
    ok = flush(l) && ok;
    for (audit_rec *r = batch; r; r = r->next)
        r->ok = r->ok && ok;
    l->run_records += n;
    pthread_mutex_lock(&l->mu);
    l->stats.records += ok ? n : 0;
    l->stats.batches++;
    if (ok && n > l->stats.max_batch)
        l->stats.max_batch = n;
    pthread_mutex_unlock(&l->mu);
}

static bool rotate_due(audit_log *l)
{
    if (l->file_records <= 1) /* only the header: nothing to close off */
        return false;
    return l->file_size >= l->rotate_bytes ||
           (l->rotate_seconds && ms_since(&l->file_opened) >= (int64_t)l->rotate_seconds * 1000);
}

/* Time-driven work: a signature over records that would otherwise wait for
 * N more, and rotation.  Runs after each batch and on timer wakeups. */
static void housekeeping(audit_log *l)
{
    if (atomic_load(&l->failed))
        return;
    if (rotate_due(l)) {
        if (!rotate(l))
            return;
    }
    if (l->unsigned_count && ms_since(&l->last_cp) >= (int64_t)l->cp_ms) {
        emit_checkpoint(l);
        if (!flush(l))
            return;
    }
}

/* Absolute CLOCK_MONOTONIC deadline of the next timed duty; false if none. */
static bool next_deadline(audit_log *l, struct timespec *out)
{
    int64_t ms = INT64_MAX;
    if (atomic_load(&l->failed))
        return false;
    if (l->unsigned_count)
        ms = (int64_t)l->cp_ms - ms_since(&l->last_cp);
    if (l->rotate_seconds && l->file_records > 1) {
        int64_t r = (int64_t)l->rotate_seconds * 1000 - ms_since(&l->file_opened);
        ms = r < ms ? r : ms;
    }
    if (ms == INT64_MAX)
        return false;
    *out = mono_now();
    ms = ms < 1 ? 1 : ms;
    out->tv_sec += ms / 1000;
    out->tv_nsec += (ms % 1000) * 1000000;
    if (out->tv_nsec >= 1000000000) {
        out->tv_sec++;
        out->tv_nsec -= 1000000000;
    }
    return true;
}

/* Waits for work; returns the whole queue (group commit) and whether to stop. */
static audit_rec *take_batch(audit_log *l, audit_rec ***tail, bool *stopping)
{
    pthread_mutex_lock(&l->mu);
    struct timespec dl;
    while (!l->pending && !l->stop) {
        if (!next_deadline(l, &dl))
            pthread_cond_wait(&l->cv, &l->mu);
        else if (pthread_cond_timedwait(&l->cv, &l->mu, &dl) == ETIMEDOUT)
            break;
    }
    audit_rec *batch = l->pending;
    *tail = l->pending_tail;
    l->pending = NULL;
    l->pending_tail = &l->pending;
    *stopping = l->stop;
    pthread_mutex_unlock(&l->mu);
    return batch;
}

static void write_close_records(audit_log *l)
{
    if (atomic_load(&l->failed))
        return;
    audit_buf b = {0};
    audit_buf_printf(&b, "\"type\":\"log_close\",\"records\":%" PRIu64, l->run_records);
    emit_buf(l, &b);
    emit_checkpoint(l);
    char head[2 * AUDIT_SHA256_LEN + 1];
    audit_hex(l->head, sizeof l->head, head);
    /* The head in phigate's own log is an anchor outside the audit files:
     * it exposes whole files cut off the end, which the chain alone cannot. */
    if (!flush(l) || !cut_padding(l))
        return;
    say(l, AUDIT_MSG_INFO, "closed at seq %" PRIu64 ", head %s", l->next_seq - 1, head);
    pthread_mutex_lock(&l->mu);
    audit_log_stats st = l->stats;
    pthread_mutex_unlock(&l->mu);
    /* What group commit achieved in this run: records per fdatasync and its cost. */
    say(l, AUDIT_MSG_INFO,
        "this run: %" PRIu64 " records in %" PRIu64 " syncs (%.1f per sync, at most %" PRIu64 " in one), "
        "%.0f us per write+fdatasync",
        st.records, st.syncs, st.syncs ? (double)st.records / (double)st.syncs : 0.0, st.max_batch,
        st.syncs ? (double)st.sync_ns_total / (double)st.syncs / 1000.0 : 0.0);
}

static void *writer_main(void *arg)
{
    audit_log *l = arg;
    for (;;) {
        audit_rec **tail;
        bool stopping;
        audit_rec *batch = take_batch(l, &tail, &stopping);
        if (batch) {
            write_batch(l, batch);
            hand_back(l, batch, tail);
        }
        housekeeping(l);
        if (stopping)
            break;
    }
    write_close_records(l);
    return NULL;
}

/* ---- the loop-thread API ---------------------------------------------- */

void audit_log_append(audit_log *l, audit_rec *r, audit_durable_cb cb, void *arg)
{
    if (!r) { /* the builder ran out of memory: carry the failure in a bare node */
        r = calloc(1, sizeof *r);
        if (!r) {
            /* Not even that: dying is the fail-closed answer (Redis does the same). */
            fprintf(stderr, "phigate audit: out of memory, aborting\n");
            abort();
        }
        r->body.oom = true;
    }
    r->cb = cb;
    r->arg = arg;
    r->next = NULL;
    clock_gettime(CLOCK_REALTIME, &r->ts);
    if (atomic_load(&l->failed)) {
        r->ok = false; /* fail fast: no disk wait for a log that is down */
        hand_back(l, r, &r->next);
        return;
    }
    pthread_mutex_lock(&l->mu);
    *l->pending_tail = r;
    l->pending_tail = &r->next;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

const char *audit_log_failed_reason(const audit_log *l)
{
    return atomic_load(&l->failed) ? l->reason : NULL;
}

void audit_log_next_session(audit_log *l, char out[AUDIT_SESSION_LEN])
{
    uint64_t n = atomic_fetch_add(&l->sessions, 1) + 1;
    snprintf(out, AUDIT_SESSION_LEN, "%" PRIu64 "-%" PRIu64, l->run_seq, n);
}

void audit_log_get_stats(audit_log *l, audit_log_stats *out)
{
    pthread_mutex_lock(&l->mu);
    *out = l->stats;
    pthread_mutex_unlock(&l->mu);
}

static void free_log(audit_log *l)
{
    if (l->ev)
        event_free(l->ev);
    if (l->efd >= 0)
        close(l->efd);
    if (l->fd >= 0)
        close(l->fd);
    if (l->lockfd >= 0)
        close(l->lockfd); /* releases the flock */
    if (l->dirfd >= 0)
        close(l->dirfd);
    EVP_PKEY_free(l->key);
    audit_buf_free(&l->wbuf);
    free(l->zeros);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l->dir);
    free(l);
}

void audit_log_close(audit_log *l)
{
    if (!l)
        return;
    if (l->thread_started) {
        pthread_mutex_lock(&l->mu);
        l->stop = true;
        pthread_cond_signal(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
    }
    run_done(l);
    free_log(l);
}

/* ---- open ------------------------------------------------------------- */

/*
 * At open the last file is read back from its header: every line must be a
 * record chained to the one before.  The first line that is not (no final
 * newline, bad JSON, wrong seq or prev) starts the torn tail a crash left.
 * It is moved aside and recorded, never trusted and never silently dropped.
 */
typedef struct {
    uint64_t good_off, lines, next_seq, unsigned_count;
    uint8_t head[AUDIT_SHA256_LEN];
    bool torn;
    uint64_t torn_line;
    char why[256];
} tail_scan;

static bool open_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool open_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return false;
}

static bool checkpoint_sig_ok(audit_log *l, const audit_parsed *p)
{
    char msg[256];
    uint8_t sig[AUDIT_SIG_LEN];
    const char *prev = aj_get_str(p->root, "prev");
    size_t n = audit_checkpoint_message(msg, sizeof msg, l->log_id, p->seq, p->ts, prev);
    return n && audit_unhex(aj_get_str(p->root, "sig"), sig, sizeof sig) &&
           audit_sig_valid(l->key, msg, n, sig);
}

/* The first line names the log and its key; a different key cannot continue it. */
static bool scan_header(audit_log *l, const audit_parsed *p, const char *path, char *err, size_t errlen)
{
    const char *id = aj_get_str(p->root, "log_id"), *key = aj_get_str(p->root, "key");
    if ((strcmp(p->type, "genesis") != 0 && strcmp(p->type, "file_start") != 0) || !id || !key ||
        strlen(id) >= sizeof l->log_id)
        return open_err(err, errlen, "%s: first record is not a genesis/file_start header", path);
    if (strcmp(key, l->key_fpr) != 0)
        return open_err(err, errlen, "%s: log is signed by key %s but the configured key is %s", path, key,
                        l->key_fpr);
    snprintf(l->log_id, sizeof l->log_id, "%s", id);
    return true;
}

static void mark_torn(tail_scan *s, const audit_line *ln, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void mark_torn(tail_scan *s, const audit_line *ln, const char *fmt, ...)
{
    s->torn = true;
    s->torn_line = ln->lineno;
    int n = snprintf(s->why, sizeof s->why, "line %" PRIu64 ": ", ln->lineno);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->why + n, sizeof s->why - (size_t)n, fmt, ap);
    va_end(ap);
}

/* false: damage a crash cannot explain (refuse to open).  Sets s->torn at the tail. */
static bool scan_line(audit_log *l, const audit_line *ln, aj_arena *a, tail_scan *s, char *err, size_t errlen)
{
    audit_parsed p;
    char perr[160];
    if (!ln->has_nl) {
        mark_torn(s, ln, "no final newline");
        return true;
    }
    if (!audit_line_parse(a, ln, &p, perr, sizeof perr)) {
        mark_torn(s, ln, "not a record (%s)", perr);
        return true;
    }
    if (ln->first_in_file) {
        if (!scan_header(l, &p, ln->path, err, errlen))
            return false;
        s->next_seq = p.seq; /* the previous file's link is checked by verify */
    } else if (p.seq != s->next_seq) {
        mark_torn(s, ln, "seq %" PRIu64 " where %" PRIu64 " was expected", p.seq, s->next_seq);
        return true;
    } else if (memcmp(p.prev, s->head, sizeof s->head) != 0) {
        mark_torn(s, ln, "prev does not match the previous line");
        return true;
    }
    if (strcmp(p.type, "checkpoint") == 0 && !checkpoint_sig_ok(l, &p))
        return open_err(err, errlen, "%s:%" PRIu64 ": checkpoint signature is invalid; run phigatectl audit verify",
                        ln->path, ln->lineno);
    s->unsigned_count = strcmp(p.type, "checkpoint") == 0 ? 0 : s->unsigned_count + 1;
    memcpy(s->head, p.hash, sizeof s->head);
    s->next_seq = p.seq + 1;
    s->good_off = ln->offset + ln->len + 1;
    s->lines++;
    return true;
}

/* A valid signature past the damage means signed records would be cut away:
 * that is tampering or corruption, not a crash, so open refuses. */
static bool torn_region_unsigned(audit_log *l, audit_reader *r, aj_arena *a, char *err, size_t errlen)
{
    audit_line ln;
    while (audit_reader_next(r, &ln)) {
        audit_parsed p;
        char perr[160];
        aj_arena_reset(a);
        if (audit_line_parse(a, &ln, &p, perr, sizeof perr) && strcmp(p.type, "checkpoint") == 0 &&
            checkpoint_sig_ok(l, &p))
            return open_err(err, errlen,
                            "%s:%" PRIu64 ": a valid checkpoint follows damaged records; not a torn tail: "
                            "run phigatectl audit verify",
                            ln.path, ln.lineno);
    }
    return true;
}

static bool scan_last_file(audit_log *l, const char *path, tail_scan *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    audit_reader *r = audit_reader_open(&path, 1, err, errlen);
    if (!r)
        return false;
    aj_arena a = {0};
    audit_line ln;
    bool ok = true;
    while (ok && !s->torn && audit_reader_next(r, &ln)) {
        aj_arena_reset(&a);
        ok = scan_line(l, &ln, &a, s, err, errlen);
    }
    if (ok && audit_reader_error(r))
        ok = open_err(err, errlen, "%s", audit_reader_error(r));
    if (ok && s->lines == 0)
        ok = open_err(err, errlen, "%s: no valid header record; run phigatectl audit verify", path);
    if (ok && s->torn)
        ok = torn_region_unsigned(l, r, &a, err, errlen);
    aj_arena_free(&a);
    audit_reader_close(r);
    return ok;
}

static bool read_range(int fd, uint64_t off, size_t n, char **out)
{
    char *b = malloc(n ? n : 1);
    size_t got = 0;
    while (b && got < n) {
        ssize_t k = pread(fd, b + got, n - got, (off_t)(off + got));
        if (k <= 0 && !(k < 0 && errno == EINTR)) {
            free(b);
            return false;
        }
        got += k > 0 ? (size_t)k : 0;
    }
    *out = b;
    return b != NULL;
}

/* Torn bytes go to NAME.<offset>.torn before the file is cut, so a crash
 * here leaves them in one place or both, never in neither. */
static bool save_torn(audit_log *l, const char *torn_name, const char *bytes, size_t n)
{
    int fd = openat(l->dirfd, torn_name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int e = 0;
    bool ok = fd >= 0 && write_all_at(fd, bytes, n, 0, &e) && fsync(fd) == 0;
    if (!ok && !e)
        e = errno;
    if (fd >= 0)
        close(fd);
    return ok || fail_io(l, "save torn tail", e);
}

static bool seal_tail(audit_log *l, const tail_scan *s, uint64_t size)
{
    char name[32], torn_name[80], hex[2 * AUDIT_SHA256_LEN + 1];
    uint8_t h[AUDIT_SHA256_LEN];
    file_name(name, l->file_no);
    snprintf(torn_name, sizeof torn_name, "%s.%" PRIu64 ".torn", name, s->good_off);
    size_t n = (size_t)(size - s->good_off);
    char *bytes;
    if (!read_range(l->fd, s->good_off, n, &bytes))
        return fail_io(l, "read torn tail", errno ? errno : EIO);
    bool ok = audit_sha256(bytes, n, h) && save_torn(l, torn_name, bytes, n);
    free(bytes);
    if (!ok)
        return atomic_load(&l->failed) ? false : fail_log(l, "audit log failed: cannot hash torn tail");
    if (ftruncate(l->fd, (off_t)s->good_off) != 0 || fdatasync(l->fd) != 0 || fsync(l->dirfd) != 0)
        return fail_io(l, "truncate torn tail", errno);
    l->file_space = s->good_off;
    audit_hex(h, sizeof h, hex);
    audit_buf b = {0};
    audit_buf_printf(&b, "\"type\":\"tail_sealed\",\"file\":\"%s\",\"offset\":%" PRIu64 ",\"bytes\":%zu,"
                     "\"sha256\":\"%s\",\"torn_file\":\"%s\",\"reason\":",
                     name, s->good_off, n, hex, torn_name);
    audit_buf_json_str(&b, s->why, strlen(s->why));
    emit_buf(l, &b);
    say(l, AUDIT_MSG_WARNING, "%s/%s: torn tail at %s: %zu bytes moved to %s and sealed", l->dir, name, s->why, n,
        torn_name);
    return flush(l);
}

static bool continue_file(audit_log *l, const char *path, char *err, size_t errlen)
{
    tail_scan s;
    if (!scan_last_file(l, path, &s, err, errlen))
        return false;
    l->file_no = audit_file_number(strrchr(path, '/') + 1);
    l->fd = open(path, O_RDWR | O_CLOEXEC); /* read: to save a torn tail */
    struct stat st;
    if (l->fd < 0 || fstat(l->fd, &st) != 0)
        return open_err(err, errlen, "%s: %s", path, strerror(errno));
    /* Zeros after the data are preallocated space a crash left: reused, not torn. */
    uint64_t data_end = s.torn ? audit_fd_data_end(l->fd, (uint64_t)st.st_size) : s.good_off;
    l->file_space = (uint64_t)st.st_size;
    l->next_seq = s.next_seq;
    memcpy(l->head, s.head, sizeof l->head);
    l->unsigned_count = s.unsigned_count;
    l->file_records = s.lines;
    l->file_size = s.good_off;
    l->file_opened = l->last_cp = mono_now();
    if (s.torn && !seal_tail(l, &s, data_end))
        return open_err(err, errlen, "%s", l->reason);
    return true;
}

static bool new_log(audit_log *l, char *err, size_t errlen)
{
    uint8_t id[16];
    if (RAND_bytes(id, sizeof id) != 1)
        return open_err(err, errlen, "RAND_bytes failed");
    audit_hex(id, sizeof id, l->log_id);
    memset(l->head, 0, sizeof l->head); /* genesis: prev is 64 zeros */
    l->next_seq = 0;
    l->last_cp = mono_now();
    if (!create_file(l, 1, "genesis", NULL))
        return open_err(err, errlen, "%s", l->reason);
    say(l, AUDIT_MSG_INFO, "created audit log %s in %s", l->log_id, l->dir);
    return true;
}

/* Leftover NAME.tmp: a rotation that crashed before its rename.  Its header
 * was never part of the chain. */
static void remove_stale_tmp(audit_log *l)
{
    char name[32], tmp[40];
    for (uint32_t no = 1;; no++) {
        file_name(name, no);
        snprintf(tmp, sizeof tmp, "%s.tmp", name);
        bool have_file = faccessat(l->dirfd, name, F_OK, 0) == 0;
        if (unlinkat(l->dirfd, tmp, 0) == 0)
            say(l, AUDIT_MSG_WARNING, "removed %s left by an interrupted rotation", tmp);
        if (!have_file)
            break;
    }
}

static bool open_dir(audit_log *l, const char *dir, char *err, size_t errlen)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return open_err(err, errlen, "cannot create %s: %s", dir, strerror(errno));
    l->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (l->dirfd < 0)
        return open_err(err, errlen, "cannot open %s: %s", dir, strerror(errno));
    /* Two writers would fork the chain. */
    l->lockfd = openat(l->dirfd, "audit.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (l->lockfd < 0 || flock(l->lockfd, LOCK_EX | LOCK_NB) != 0)
        return open_err(err, errlen, "%s/audit.lock: %s", dir,
                        errno == EWOULDBLOCK ? "another process is writing this log" : strerror(errno));
    return true;
}

static bool load_key(audit_log *l, const char *path, char *err, size_t errlen)
{
    uint8_t raw[AUDIT_PUBKEY_LEN];
    l->key = audit_key_load_private(path, err, errlen);
    if (!l->key)
        return false;
    if (!audit_key_raw(l->key, raw) || !audit_key_fingerprint(l->key, l->key_fpr))
        return open_err(err, errlen, "%s: cannot derive the public key", path);
    audit_hex(raw, sizeof raw, l->pub_hex);
    return true;
}

static bool open_files(audit_log *l, char *err, size_t errlen)
{
    char **paths;
    size_t n;
    remove_stale_tmp(l);
    if (!audit_dir_list(l->dir, &paths, &n, err, errlen))
        return false;
    bool ok = n ? continue_file(l, paths[n - 1], err, errlen) : new_log(l, err, errlen);
    audit_paths_free(paths, n);
    return ok;
}

/* This run's first record: restarts are visible, and its seq names the run. */
static bool write_log_open(audit_log *l, char *err, size_t errlen)
{
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    l->run_seq = l->next_seq;
    audit_buf b = {0};
    audit_buf_printf(&b, "\"type\":\"log_open\",\"format\":\"" FORMAT_NAME "\",\"pid\":%ld,\"host\":", (long)getpid());
    audit_buf_json_str(&b, host, strlen(host));
    emit_buf(l, &b);
    return flush(l) || open_err(err, errlen, "%s", l->reason);
}

static bool start_loop_side(audit_log *l, struct event_base *base, char *err, size_t errlen)
{
    l->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (l->efd < 0)
        return open_err(err, errlen, "eventfd: %s", strerror(errno));
    l->ev = event_new(base, l->efd, EV_READ | EV_PERSIST, on_eventfd, l);
    if (!l->ev || event_add(l->ev, NULL) != 0)
        return open_err(err, errlen, "cannot add the audit completion event");
    return true;
}

static bool start_writer(audit_log *l, char *err, size_t errlen)
{
    /* The writer takes no signals: they belong to the loop thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&l->thread, NULL, writer_main, l);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return open_err(err, errlen, "pthread_create: %s", strerror(rc));
    l->thread_started = true;
    return true;
}

static audit_log *alloc_log(const audit_log_opts *o)
{
    audit_log *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->fd = l->dirfd = l->lockfd = l->efd = -1;
    l->dir = strdup(o->dir);
    l->cp_records = o->checkpoint_records ? o->checkpoint_records : DEFAULT_CHECKPOINT_RECORDS;
    l->cp_ms = o->checkpoint_ms ? o->checkpoint_ms : DEFAULT_CHECKPOINT_MS;
    l->rotate_bytes = o->rotate_bytes ? o->rotate_bytes : DEFAULT_ROTATE_BYTES;
    /* More padding than a file will hold is wasted writing. */
    l->prealloc_bytes = o->preallocate_bytes < l->rotate_bytes ? o->preallocate_bytes : l->rotate_bytes;
    l->rotate_seconds = o->rotate_seconds;
    l->msg_fn = o->msg_fn;
    l->msg_arg = o->msg_arg;
    l->pending_tail = &l->pending;
    l->done_tail = &l->done;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* wall-clock jumps must not stall checkpoints */
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&l->mu, NULL);
    if (!l->dir) {
        free_log(l);
        return NULL;
    }
    return l;
}

audit_log *audit_log_open(const audit_log_opts *o, char *err, size_t errlen)
{
    /* A file-size rlimit must surface as EFBIG (failed state), not kill phigate. */
    signal(SIGXFSZ, SIG_IGN);
    if (!o->dir || !o->key_path || !o->base) {
        open_err(err, errlen, "audit log needs dir, key_path and base");
        return NULL;
    }
    audit_log *l = alloc_log(o);
    if (!l) {
        open_err(err, errlen, "out of memory");
        return NULL;
    }
    if (!open_dir(l, o->dir, err, errlen) || !load_key(l, o->key_path, err, errlen) ||
        !open_files(l, err, errlen) || !write_log_open(l, err, errlen) ||
        !start_loop_side(l, o->base, err, errlen) || !start_writer(l, err, errlen)) {
        free_log(l);
        return NULL;
    }
    return l;
}
