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

#define DEFAULT_CHECKPOINT_RECORDS 1000
#define DEFAULT_CHECKPOINT_MS 1000
#define DEFAULT_ROTATE_BYTES (64ull << 20)
#define FORMAT_NAME "phigate-audit-v1"

struct audit_log {
    /* settings, fixed at open */
    char *dir;
    uint32_t cp_records, cp_ms, rotate_seconds;
    uint64_t rotate_bytes;
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
        fprintf(stderr, "phigate audit %s: %s\n",
                lv == AUDIT_MSG_ERROR ? "ERROR" : lv == AUDIT_MSG_WARNING ? "WARNING" : "INFO", msg);
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
    l->stats.checkpoints++; /* writer-owned counter, copied out under mu */
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

static bool write_all(int fd, const char *p, size_t n, int *err)
{
    while (n) {
        ssize_t w = write(fd, p, n);
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
        n -= (size_t)w;
    }
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
    if (!write_all(l->fd, l->wbuf.p, l->wbuf.len, &err))
        return fail_io(l, "write", err);
    if (fdatasync(l->fd) != 0)
        return fail_io(l, "fdatasync", errno);
    struct timespec t1 = mono_now();
    l->file_size += l->wbuf.len;
    l->stats.bytes += l->wbuf.len;
    l->stats.sync_ns_total += (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000ll + (t1.tv_nsec - t0.tv_nsec));
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
    int fd = openat(l->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return fail_io(l, "create", errno);
    int old = l->fd;
    l->fd = fd;
    l->file_no = no;
    l->file_size = 0;
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
    if (!create_file(l, l->file_no + 1, "file_start", prev))
        return false;
    l->stats.rotations++;
    say(l, AUDIT_MSG_INFO, "rotated %s -> " AUDIT_FILE_FMT, prev, l->file_no);
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

static void write_batch(audit_log *l, audit_rec *batch)
{
    uint64_t n = 0;
    for (audit_rec *r = batch; r; r = r->next) {
        r->ok = false;
        if (atomic_load(&l->failed) || r->body.oom || r->misuse || r->depth)
            continue; /* never write a record the caller did not finish */
        char ts[40];
        fmt_ts(&r->ts, ts);
        emit(l, ts, r->body.p, r->body.len);
        r->ok = true;
        n++;
        if (l->unsigned_count >= l->cp_records)
            emit_checkpoint(l);
    }
    bool ok = flush(l);
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
    if (flush(l))
        say(l, AUDIT_MSG_INFO, "closed at seq %" PRIu64, l->next_seq - 1);
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
    if (!r)
        r = audit_rec_new("oom", NULL);
    if (!r) {
        /* Not even a node to carry the failure: dying is the fail-closed answer
         * (Redis does the same on OOM). */
        fprintf(stderr, "phigate audit: out of memory, aborting\n");
        abort();
    }
    if (!r->body.oom && !r->misuse && r->depth == 0 && strcmp(r->body.p, "\"type\":\"oom\"") == 0)
        r->body.oom = true; /* the placeholder above: complete it as failed */
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

#include "gate/audit_log_open.inc"
