/*
 * approver_auth: see approver_auth.h.
 *
 *   loop thread                         worker thread
 *   approver_auth_check() -> queue ---> PBKDF2 (slow)
 *   on_done() <- pipe (job pointer) <--- write(job)
 *
 * The worker only reads a job's inputs and writes its result before handing
 * the pointer back; from then on the loop owns it.  A cancelled job is still
 * handed back, and freed then.
 */
#include "gate/approver_auth.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_PASSWORD 1024

struct approver_auth_job {
    approver_auth *aa;
    approver_auth_job *next; /* in the worker's queue */
    scram_verifier verifier;
    char password[MAX_PASSWORD + 1];
    size_t password_len;
    bool known; /* the name exists: a match means ok */
    bool ok;    /* result, written by the worker */
    bool cancelled;
    approver_auth_cb cb;
    void *arg;
};

typedef struct {
    char *name;
    scram_verifier verifier;
} approver_entry;

struct approver_auth {
    struct event_base *base;
    approver_entry *approvers;
    size_t n;
    uint8_t mock_secret[32]; /* made-up verifiers for unknown names */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    approver_auth_job *head, *tail; /* queue, under mu */
    size_t queued, outstanding;     /* outstanding: checked out, not yet handed back (loop side) */
    bool stop;                      /* under mu */
    int pipe_rd, pipe_wr;
    struct event *done_ev;
};

bool approver_password_matches(const scram_verifier *v, const char *password, size_t len)
{
    uint8_t salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];
    unsigned int mac_len = SCRAM_KEY_LEN;
    if (len > MAX_PASSWORD || v->iterations < 1 || v->salt_len == 0)
        return false;
    bool ok = PKCS5_PBKDF2_HMAC(password, (int)len, v->salt, (int)v->salt_len, v->iterations, EVP_sha256(),
                                SCRAM_KEY_LEN, salted) == 1 &&
              HMAC(EVP_sha256(), salted, SCRAM_KEY_LEN, (const unsigned char *)"Client Key", 10, client_key,
                   &mac_len) != NULL &&
              SHA256(client_key, SCRAM_KEY_LEN, stored) != NULL;
    /* Constant time: a partial match must not answer faster than none. */
    ok = ok && CRYPTO_memcmp(stored, v->stored_key, SCRAM_KEY_LEN) == 0;
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client_key, sizeof client_key);
    return ok;
}

static void *worker(void *arg)
{
    approver_auth *aa = arg;
    for (;;) {
        pthread_mutex_lock(&aa->mu);
        while (!aa->head && !aa->stop)
            pthread_cond_wait(&aa->cv, &aa->mu);
        if (aa->stop) {
            pthread_mutex_unlock(&aa->mu);
            return NULL;
        }
        approver_auth_job *job = aa->head;
        aa->head = job->next;
        if (!aa->head)
            aa->tail = NULL;
        aa->queued--;
        pthread_mutex_unlock(&aa->mu);

        bool match = approver_password_matches(&job->verifier, job->password, job->password_len);
        job->ok = job->known && match;
        OPENSSL_cleanse(job->password, sizeof job->password);
        /* A pointer is far below PIPE_BUF: the write is atomic; retry on EINTR only. */
        ssize_t w;
        do
            w = write(aa->pipe_wr, &job, sizeof job);
        while (w < 0 && errno == EINTR);
        if (w != (ssize_t)sizeof job)
            abort(); /* the loop would wait forever on this job */
    }
}

static void job_deliver(approver_auth_job *job)
{
    approver_auth *aa = job->aa;
    aa->outstanding--;
    if (!job->cancelled)
        job->cb(job->arg, job->ok);
    OPENSSL_cleanse(job, sizeof *job);
    free(job);
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    (void)what, (void)arg;
    approver_auth_job *jobs[16];
    ssize_t n = read(fd, jobs, sizeof jobs);
    if (n <= 0)
        return;
    for (size_t i = 0; i < (size_t)n / sizeof jobs[0]; i++)
        job_deliver(jobs[i]);
}

approver_auth *approver_auth_new(struct event_base *base, const cfg_approver *approvers, size_t n, char *err,
                                 size_t errlen)
{
    approver_auth *aa = calloc(1, sizeof *aa);
    int fds[2];
    if (!aa || pipe2(fds, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "approver auth: %s", strerror(errno));
        free(aa);
        return NULL;
    }
    aa->base = base;
    aa->pipe_rd = fds[0], aa->pipe_wr = fds[1];
    fcntl(aa->pipe_rd, F_SETFL, O_NONBLOCK);
    pthread_mutex_init(&aa->mu, NULL);
    pthread_cond_init(&aa->cv, NULL);
    aa->approvers = calloc(n ? n : 1, sizeof *aa->approvers);
    aa->done_ev = event_new(base, aa->pipe_rd, EV_READ | EV_PERSIST, on_done, aa);
    if (!aa->approvers || !aa->done_ev || RAND_bytes(aa->mock_secret, sizeof aa->mock_secret) != 1) {
        snprintf(err, errlen, "approver auth: out of memory");
        approver_auth_free(aa);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        aa->approvers[i].name = strdup(approvers[i].name);
        aa->approvers[i].verifier = approvers[i].verifier;
        aa->n++;
    }
    event_add(aa->done_ev, NULL);
    if (pthread_create(&aa->thread, NULL, worker, aa) != 0) {
        snprintf(err, errlen, "approver auth: cannot start the worker thread");
        approver_auth_free(aa);
        return NULL;
    }
    aa->thread_started = true;
    return aa;
}

static const approver_entry *find(const approver_auth *aa, const char *name)
{
    for (size_t i = 0; i < aa->n; i++)
        if (aa->approvers[i].name && strcmp(aa->approvers[i].name, name) == 0)
            return &aa->approvers[i];
    return NULL;
}

bool approver_auth_known(const approver_auth *aa, const char *name) { return find(aa, name) != NULL; }

approver_auth_job *approver_auth_check(approver_auth *aa, const char *name, const char *password,
                                       approver_auth_cb cb, void *arg)
{
    size_t len = strlen(password);
    pthread_mutex_lock(&aa->mu);
    bool full = aa->queued >= APPROVER_AUTH_MAX_QUEUE;
    pthread_mutex_unlock(&aa->mu);
    if (full)
        return NULL;
    approver_auth_job *job = calloc(1, sizeof *job);
    if (!job)
        return NULL;
    job->aa = aa, job->cb = cb, job->arg = arg;
    const approver_entry *e = find(aa, name);
    job->known = e != NULL && len <= MAX_PASSWORD;
    if (e)
        job->verifier = e->verifier;
    else
        scram_verifier_mock(aa->mock_secret, sizeof aa->mock_secret, name, &job->verifier);
    job->password_len = len <= MAX_PASSWORD ? len : 0;
    memcpy(job->password, password, job->password_len);
    pthread_mutex_lock(&aa->mu);
    if (aa->tail)
        aa->tail->next = job;
    else
        aa->head = job;
    aa->tail = job;
    aa->queued++;
    pthread_cond_signal(&aa->cv);
    pthread_mutex_unlock(&aa->mu);
    aa->outstanding++;
    return job;
}

void approver_auth_cancel(approver_auth_job *job)
{
    if (job)
        job->cancelled = true; /* only the loop thread reads it, at delivery */
}

void approver_auth_free(approver_auth *aa)
{
    if (!aa)
        return;
    if (aa->thread_started) {
        pthread_mutex_lock(&aa->mu);
        aa->stop = true;
        pthread_cond_signal(&aa->cv);
        pthread_mutex_unlock(&aa->mu);
        pthread_join(aa->thread, NULL);
    }
    /* Finished checks are in the pipe; unstarted ones in the queue: all fail now. */
    approver_auth_job *jobs[16];
    ssize_t n;
    while (aa->pipe_rd >= 0 && (n = read(aa->pipe_rd, jobs, sizeof jobs)) > 0)
        for (size_t i = 0; i < (size_t)n / sizeof jobs[0]; i++)
            job_deliver(jobs[i]);
    while (aa->head) {
        approver_auth_job *job = aa->head;
        aa->head = job->next;
        job->ok = false;
        job_deliver(job);
    }
    if (aa->done_ev)
        event_free(aa->done_ev);
    close(aa->pipe_rd), close(aa->pipe_wr);
    pthread_mutex_destroy(&aa->mu);
    pthread_cond_destroy(&aa->cv);
    for (size_t i = 0; i < aa->n; i++)
        free(aa->approvers[i].name);
    if (aa->approvers)
        OPENSSL_cleanse(aa->approvers, aa->n * sizeof *aa->approvers);
    free(aa->approvers);
    OPENSSL_cleanse(aa, sizeof *aa);
    free(aa);
}
