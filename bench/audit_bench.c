/*
 * audit_bench: group commit of the audit log, measured the way the fronts use
 * it.  N simulated sessions each append a statement record, wait for its
 * durability callback (as a front holds the result until then), and append
 * the next: a closed loop, so every fdatasync carries whatever the other
 * sessions queued meanwhile.
 *
 *   audit_bench [--dir DIR] [--seconds S] [--sessions N[,N...]]
 *
 * Prints records/s, records per fdatasync, append->durable latency (median,
 * p99) and the loop thread's own cost per append (build + queue) per session
 * count.  DIR should be on the disk under test
 * (default: a fresh directory under /var/tmp, which is not tmpfs).
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "gate/audit_crypto.h"
#include "gate/audit_log.h"

typedef struct bench bench;

typedef struct {
    bench *b;
    char id[AUDIT_SESSION_LEN];
    uint64_t stmt;
    struct timespec t0;
} session;

struct bench {
    struct event_base *base;
    audit_log *log;
    session *sessions;
    uint64_t *lat_ns;
    size_t nlat, cap;
    uint64_t failures;
    uint64_t append_ns, appends; /* loop-thread cost: build + append */
    struct timespec deadline;
    int running;
};

static uint64_t ns_between(const struct timespec *a, const struct timespec *b)
{
    return (uint64_t)((b->tv_sec - a->tv_sec) * 1000000000ll + (b->tv_nsec - a->tv_nsec));
}

static bool past(const struct timespec *t)
{
    struct timespec n;
    clock_gettime(CLOCK_MONOTONIC, &n);
    return n.tv_sec > t->tv_sec || (n.tv_sec == t->tv_sec && n.tv_nsec >= t->tv_nsec);
}

/* ~300 bytes on disk, like a short statement with one parameter and one masked column. */
static audit_rec *statement(session *s)
{
    static const char sql[] = "SELECT id, name, dob FROM patients WHERE id = $1 AND clinic_id = $2";
    audit_param params[] = {{"12345", 5}, {"7", 1}};
    audit_column cols[] = {{"id", NULL}, {"name", "partial(1)"}, {"dob", "year"}};
    audit_statement_info st = {.session = s->id, .stmt = ++s->stmt, .received = sql, .received_len = sizeof sql - 1,
                               .upstream = sql, .upstream_len = sizeof sql - 1, .params = params, .nparams = 2,
                               .decision = "rewrite", .statement_class = "read", .columns = cols, .ncolumns = 3};
    return audit_rec_statement(&st);
}

static void on_durable(void *arg, bool ok);

static void issue(session *s)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &s->t0);
    audit_log_append(s->b->log, statement(s), on_durable, s);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    s->b->append_ns += ns_between(&s->t0, &t1);
    s->b->appends++;
}

static void on_durable(void *arg, bool ok)
{
    session *s = arg;
    bench *b = s->b;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (!ok)
        b->failures++;
    if (b->nlat == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 1 << 16;
        b->lat_ns = realloc(b->lat_ns, b->cap * sizeof *b->lat_ns);
        if (!b->lat_ns)
            abort();
    }
    b->lat_ns[b->nlat++] = ns_between(&s->t0, &now);
    if (!past(&b->deadline))
        issue(s);
    else if (--b->running == 0)
        event_base_loopbreak(b->base);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(bench *b, int n, double secs, const audit_log_stats *st)
{
    qsort(b->lat_ns, b->nlat, sizeof *b->lat_ns, cmp_u64);
    double med = b->nlat ? (double)b->lat_ns[b->nlat / 2] / 1000.0 : 0;
    double p99 = b->nlat ? (double)b->lat_ns[b->nlat * 99 / 100] / 1000.0 : 0;
    double per_sync = st->batches ? (double)st->records / (double)st->batches : 0;
    double sync_us = st->batches ? (double)st->sync_ns_total / (double)st->batches / 1000.0 : 0;
    double append_us = b->appends ? (double)b->append_ns / (double)b->appends / 1000.0 : 0;
    printf("%8d %12.0f %10.1f %10" PRIu64 " %10.0f %10.1f %10.1f %10.2f %8" PRIu64 "\n", n,
           (double)b->nlat / secs, per_sync, st->max_batch, sync_us, med, p99, append_us, b->failures);
    fflush(stdout);
}

static int run(const char *dir, const char *key, int n, double seconds, uint64_t prealloc)
{
    bench b = {.base = event_base_new()};
    char err[512];
    audit_log_opts o = {.dir = dir, .key_path = key, .base = b.base, .preallocate_bytes = prealloc};
    b.log = audit_log_open(&o, err, sizeof err);
    if (!b.log) {
        fprintf(stderr, "audit_bench: %s\n", err);
        return 1;
    }
    b.sessions = calloc((size_t)n, sizeof *b.sessions);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    b.deadline = t0;
    b.deadline.tv_sec += (time_t)seconds;
    b.running = n;
    for (int i = 0; i < n; i++) {
        b.sessions[i].b = &b;
        audit_log_next_session(b.log, b.sessions[i].id);
        issue(&b.sessions[i]);
    }
    event_base_dispatch(b.base);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    audit_log_stats st;
    audit_log_get_stats(b.log, &st);
    audit_log_close(b.log);
    report(&b, n, (double)ns_between(&t0, &t1) / 1e9, &st);
    free(b.sessions);
    free(b.lat_ns);
    event_base_free(b.base);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"dir", required_argument, 0, 'd'},
                                         {"seconds", required_argument, 0, 's'},
                                         {"sessions", required_argument, 0, 'n'},
                                         {"preallocate", required_argument, 0, 'p'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    char dirbuf[] = "/var/tmp/phigate-audit-bench-XXXXXX";
    const char *dir = NULL, *list = "1,8,64,256";
    double seconds = 3;
    uint64_t prealloc = 1u << 20; /* phigate's default (audit.preallocate_bytes) */
    int c;
    while ((c = getopt_long(argc, argv, "d:s:n:p:h", opts, NULL)) != -1) {
        if (c == 'd')
            dir = optarg;
        else if (c == 's')
            seconds = atof(optarg);
        else if (c == 'n')
            list = optarg;
        else if (c == 'p')
            prealloc = strtoull(optarg, NULL, 10);
        else {
            fprintf(c == 'h' ? stdout : stderr,
                    "Usage: audit_bench [--dir DIR] [--seconds S] [--sessions N[,N...]] [--preallocate BYTES]\n"
                    "  --preallocate  zeroed space kept ahead of the records (default 1048576, 0 = off)\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (!dir && !(dir = mkdtemp(dirbuf))) {
        perror("mkdtemp");
        return 1;
    }
    char keydir[4200], key[4300], err[512], cmd[4400];
    mkdir(dir, 0700);
    snprintf(keydir, sizeof keydir, "%s/key", dir);
    snprintf(key, sizeof key, "%s/%s", keydir, AUDIT_KEY_FILE);
    if (access(key, R_OK) != 0 && !audit_key_generate(keydir, err, sizeof err)) {
        fprintf(stderr, "audit_bench: %s\n", err);
        return 1;
    }
    printf("audit_bench: dir %s, %.0f s per run, preallocate %" PRIu64 " bytes, closed loop (append -> wait for "
           "durable -> append)\n", dir, seconds, prealloc);
    printf("%8s %12s %10s %10s %10s %10s %10s %10s %8s\n", "sessions", "records/s", "rec/sync", "max batch",
           "sync us", "median us", "p99 us", "append us", "failed");
    char *copy = strdup(list);
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
        char logdir[4300];
        snprintf(logdir, sizeof logdir, "%s/log-%s", dir, tok);
        if (run(logdir, key, atoi(tok) > 0 ? atoi(tok) : 1, seconds, prealloc) != 0)
            return 1;
    }
    free(copy);
    if (dir == dirbuf) { /* ours: remove it */
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "audit_bench: could not remove %s\n", dir);
    }
    return 0;
}
