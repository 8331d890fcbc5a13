#include "gate/engines.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gate/log.h"

typedef enum { ENGINE_NONE, ENGINE_LOADING, ENGINE_READY, ENGINE_FAILED } engine_state;

typedef struct waiter {
    struct waiter *next;
    void *s;
} waiter;

typedef struct slot {
    engine_state state;
    sqlp_engine *engine;
    char error[512];
    char info[128];
    waiter *waiters;
} slot;

/* One load, handed to a thread and back through the pipe. */
typedef struct job {
    engines *owner;
    int index;
    sqlp_engine *engine;
    char error[512];
    char info[128];
} job;

struct engines {
    struct event_base *base;
    const config *cfg;
    const char *protocol;
    engine_load_fn load;
    engine_ready_fn cb;
    slot *slots;
    int pipe_fd[2];
    struct event *done_ev;
    struct event *wake_ev; /* runs the callbacks of a request that found the engine ready */
    int running;           /* loads in flight */
};

static void *load_thread(void *arg)
{
    job *j = arg;
    const cfg_upstream *up = &j->owner->cfg->upstreams[j->index];
    j->engine = j->owner->load(j->owner->cfg, up, j->info, sizeof j->info, j->error, sizeof j->error);
    /* A pointer is written whole: pipe writes under PIPE_BUF are atomic. */
    while (write(j->owner->pipe_fd[1], &j, sizeof j) < 0 && errno == EINTR)
        ;
    return NULL;
}

static void start_load(engines *e, int i)
{
    job *j = calloc(1, sizeof *j);
    j->owner = e;
    j->index = i;
    e->slots[i].state = ENGINE_LOADING;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, load_thread, j) != 0) {
        snprintf(j->error, sizeof j->error, "cannot start a thread to read the catalog");
        while (write(e->pipe_fd[1], &j, sizeof j) < 0 && errno == EINTR)
            ;
    } else {
        e->running++;
    }
    pthread_attr_destroy(&attr);
}

/* Hand every waiter of slot i its engine (or the error). */
static void wake_waiters(engines *e, int i)
{
    slot *sl = &e->slots[i];
    waiter *w = sl->waiters;
    sl->waiters = NULL;
    while (w) {
        waiter *next = w->next;
        if (sl->state == ENGINE_READY) {
            sqlp_engine_ref(sl->engine);
            e->cb(w->s, sl->engine, NULL);
        } else {
            e->cb(w->s, NULL, sl->error);
        }
        free(w);
        w = next;
    }
}

static void on_load_done(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    engines *e = arg;
    job *j;
    while (read(fd, &j, sizeof j) == (ssize_t)sizeof j) {
        slot *sl = &e->slots[j->index];
        e->running--;
        if (j->engine) {
            sl->state = ENGINE_READY;
            sl->engine = j->engine;
            snprintf(sl->info, sizeof sl->info, "%s", j->info);
            log_info("policy catalog of upstream %s loaded%s%s%s", e->cfg->upstreams[j->index].name,
                     j->info[0] ? " (" : "", j->info, j->info[0] ? ")" : "");
        } else {
            sl->state = ENGINE_FAILED;
            snprintf(sl->error, sizeof sl->error, "%s", j->error);
            log_error("%s; sessions for it are refused until it loads", j->error);
        }
        free(j);
        wake_waiters(e, (int)(sl - e->slots));
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    engines *e = arg;
    for (size_t i = 0; i < e->cfg->nupstreams; i++)
        if (e->slots[i].state == ENGINE_READY && e->slots[i].waiters)
            wake_waiters(e, (int)i);
}

engines *engines_new(struct event_base *base, const config *cfg, const char *protocol, engine_load_fn load,
                     engine_ready_fn ready)
{
    engines *e = calloc(1, sizeof *e);
    e->base = base;
    e->cfg = cfg;
    e->protocol = protocol;
    e->load = load;
    e->cb = ready;
    e->slots = calloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof *e->slots);
    if (pipe2(e->pipe_fd, O_CLOEXEC | O_NONBLOCK) != 0) {
        free(e->slots);
        free(e);
        return NULL;
    }
    e->done_ev = event_new(base, e->pipe_fd[0], EV_READ | EV_PERSIST, on_load_done, e);
    e->wake_ev = event_new(base, -1, 0, on_wake, e);
    event_add(e->done_ev, NULL);
    for (size_t i = 0; i < cfg->nupstreams; i++)
        if (strcmp(cfg->upstreams[i].protocol, protocol) == 0)
            start_load(e, (int)i);
    return e;
}

void engines_request(engines *e, int i, void *s)
{
    slot *sl = &e->slots[i];
    waiter *w = calloc(1, sizeof *w);
    w->s = s;
    w->next = sl->waiters;
    sl->waiters = w;
    if (sl->state == ENGINE_READY)
        event_active(e->wake_ev, EV_TIMEOUT, 0); /* never call back inline */
    else if (sl->state != ENGINE_LOADING)
        start_load(e, i); /* not loaded or failed before: try again */
}

sqlp_engine *engines_get(engines *e, int i, char *err, size_t errlen)
{
    slot *sl = &e->slots[i];
    if (sl->state == ENGINE_READY) {
        sqlp_engine_ref(sl->engine);
        return sl->engine;
    }
    if (sl->state == ENGINE_LOADING) {
        snprintf(err, errlen, "the catalog of upstream %s is still loading", e->cfg->upstreams[i].name);
        return NULL;
    }
    snprintf(err, errlen, "%s", sl->state == ENGINE_FAILED ? sl->error : "the catalog is not loaded");
    start_load(e, i); /* for the next one */
    return NULL;
}

const char *engines_info(const engines *e, int i) { return e->slots[i].info; }

void engines_forget(engines *e, void *s)
{
    for (size_t i = 0; i < e->cfg->nupstreams; i++) {
        for (waiter **p = &e->slots[i].waiters; *p;) {
            if ((*p)->s == s) {
                waiter *w = *p;
                *p = w->next;
                free(w);
            } else {
                p = &(*p)->next;
            }
        }
    }
}

void engines_free(engines *e)
{
    if (!e)
        return;
    /* Threads still loading write to the pipe: wait for them (bounded by connect_timeout). */
    while (e->running > 0) {
        job *j;
        ssize_t n = read(e->pipe_fd[0], &j, sizeof j);
        if (n == (ssize_t)sizeof j) {
            e->running--;
            if (j->engine)
                sqlp_engine_unref(j->engine);
            free(j);
        } else {
            usleep(10000);
        }
    }
    for (size_t i = 0; i < e->cfg->nupstreams; i++) {
        while (e->slots[i].waiters) {
            waiter *w = e->slots[i].waiters;
            e->slots[i].waiters = w->next;
            free(w);
        }
        if (e->slots[i].engine)
            sqlp_engine_unref(e->slots[i].engine);
    }
    event_free(e->done_ev);
    event_free(e->wake_ev);
    close(e->pipe_fd[0]);
    close(e->pipe_fd[1]);
    free(e->slots);
    free(e);
}
