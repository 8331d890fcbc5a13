/*
 * Shared by the approvals unit tests: where the real Redis is, a blocking
 * hiredis client to look at and clean up keys, and a loop runner.
 *
 * Redis comes from (first found):
 *   PHIGATE_TEST_REDIS_URL   redis://[:PASSWORD@]HOST:PORT
 *   STACK_REDIS_HOST, STACK_REDIS_PORT, STACK_REDIS_PASSWORD  (scripts/stack.sh env)
 *   PHIGATE_STACK_ENV        path of a stack.env file written by scripts/stack.sh
 * Tests never mock Redis and never skip: without one they fail and say how to start it.
 */
#ifndef PHIGATE_TEST_APPROVALS_ENV_H
#define PHIGATE_TEST_APPROVALS_ENV_H

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static int passed, failed;

#define CHECK(cond)                                                                                                \
    do {                                                                                                           \
        if (cond)                                                                                                  \
            passed++;                                                                                              \
        else {                                                                                                     \
            failed++;                                                                                              \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                                       \
        }                                                                                                          \
    } while (0)

typedef struct {
    char host[256];
    int port;
    char password[256];
    char stack_dir[1024]; /* "" when unknown */
} test_redis;

static bool env_copy(const char *name, char *out, size_t len)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return false;
    snprintf(out, len, "%s", v);
    return true;
}

/* "export NAME=VALUE" lines (values printed by %q: plain hex/paths here). */
static void stack_env_file(const char *path, test_redis *r)
{
    FILE *f = fopen(path, "r");
    char line[2048];
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *eq = strchr(line, '=');
        if (strncmp(line, "export ", 7) != 0 || !eq)
            continue;
        *eq = '\0';
        const char *k = line + 7, *v = eq + 1;
        if (!strcmp(k, "STACK_REDIS_HOST"))
            snprintf(r->host, sizeof r->host, "%s", v);
        else if (!strcmp(k, "STACK_REDIS_PORT"))
            r->port = atoi(v);
        else if (!strcmp(k, "STACK_REDIS_PASSWORD"))
            snprintf(r->password, sizeof r->password, "%s", v);
        else if (!strcmp(k, "STACK_DIR"))
            snprintf(r->stack_dir, sizeof r->stack_dir, "%s", v);
    }
    fclose(f);
}

static bool parse_redis_url(const char *url, test_redis *r)
{
    if (strncmp(url, "redis://", 8) != 0)
        return false;
    const char *p = url + 8, *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        snprintf(r->password, sizeof r->password, "%.*s", (int)(at - pw), pw);
        p = at + 1;
    }
    const char *colon = strrchr(p, ':');
    if (!colon)
        return false;
    snprintf(r->host, sizeof r->host, "%.*s", (int)(colon - p), p);
    r->port = atoi(colon + 1);
    return r->host[0] && r->port > 0;
}

static bool test_redis_locate(test_redis *r)
{
    memset(r, 0, sizeof *r);
    const char *url = getenv("PHIGATE_TEST_REDIS_URL");
    char port[32];
    if (url && *url) {
        if (!parse_redis_url(url, r))
            fprintf(stderr, "PHIGATE_TEST_REDIS_URL must look like redis://:PASSWORD@HOST:PORT\n");
    } else if (env_copy("STACK_REDIS_HOST", r->host, sizeof r->host) &&
               env_copy("STACK_REDIS_PORT", port, sizeof port)) {
        r->port = atoi(port);
        env_copy("STACK_REDIS_PASSWORD", r->password, sizeof r->password);
    } else if (getenv("PHIGATE_STACK_ENV")) {
        stack_env_file(getenv("PHIGATE_STACK_ENV"), r);
    }
    env_copy("STACK_DIR", r->stack_dir, sizeof r->stack_dir);
    if (!r->stack_dir[0] && getenv("PHIGATE_STACK_ENV")) {
        test_redis tmp;
        memset(&tmp, 0, sizeof tmp);
        stack_env_file(getenv("PHIGATE_STACK_ENV"), &tmp);
        memcpy(r->stack_dir, tmp.stack_dir, sizeof r->stack_dir);
    }
    if (r->host[0] && r->port > 0)
        return true;
    fprintf(stderr,
            "FAIL: these tests need a real Redis and none was given.\n"
            "  Start one and export its address, e.g.:\n"
            "    PHIGATE_PORT_BASE=58600 scripts/stack.sh start\n"
            "    eval \"$(PHIGATE_PORT_BASE=58600 scripts/stack.sh env)\"\n"
            "  or set PHIGATE_TEST_REDIS_URL=redis://:PASSWORD@127.0.0.1:PORT\n"
            "  or PHIGATE_STACK_ENV=<stack>/stack.env\n");
    return false;
}

/* A blocking connection for looking at keys from the test (never used by the code under test). */
static redisContext *test_redis_sync(const test_redis *r)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout(r->host, r->port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (r->password[0]) {
        redisReply *rep = redisCommand(c, "AUTH %s", r->password);
        bool ok = rep && rep->type != REDIS_REPLY_ERROR;
        if (rep)
            freeReplyObject(rep);
        if (!ok) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

/* HGET as a malloc'd string ("" when absent, NULL when Redis is unreachable). */
__attribute__((unused)) static char *test_redis_hget(const test_redis *r, const char *key, const char *field)
{
    redisContext *c = test_redis_sync(r);
    if (!c)
        return NULL;
    redisReply *rep = redisCommand(c, "HGET %s %s", key, field);
    char *out = rep && rep->type == REDIS_REPLY_STRING ? strndup(rep->str, rep->len) : strdup("");
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    return out;
}

/* Delete every key under prefix (SCAN, so a big shared Redis is not blocked). */
static void test_redis_cleanup(const test_redis *r, const char *prefix)
{
    redisContext *c = test_redis_sync(r);
    if (!c)
        return;
    char cursor[32] = "0", pattern[300];
    snprintf(pattern, sizeof pattern, "%s*", prefix);
    do {
        redisReply *rep = redisCommand(c, "SCAN %s MATCH %s COUNT 500", cursor, pattern);
        if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
            if (rep)
                freeReplyObject(rep);
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
        for (size_t i = 0; i < rep->element[1]->elements; i++) {
            redisReply *d = redisCommand(c, "DEL %s", rep->element[1]->element[i]->str);
            if (d)
                freeReplyObject(d);
        }
        freeReplyObject(rep);
    } while (strcmp(cursor, "0") != 0);
    redisFree(c);
}

static long long now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* A 10 ms heartbeat so EVLOOP_ONCE never sleeps long, whatever else is armed. */
static void tick(evutil_socket_t fd, short what, void *arg) { (void)fd, (void)what, (void)arg; }

static struct event *test_ticker(struct event_base *base)
{
    struct event *ev = event_new(base, -1, EV_PERSIST, tick, NULL);
    struct timeval tv = {0, 10000};
    event_add(ev, &tv);
    return ev;
}

/* Run the loop until *flag is non-zero or ms have passed; true when the flag was seen. */
static bool run_until(struct event_base *base, const volatile int *flag, long long ms)
{
    long long deadline = now_ms() + ms;
    while (!*flag && now_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
    return *flag != 0;
}

__attribute__((unused)) static void run_for(struct event_base *base, long long ms)
{
    static const int never = 0;
    run_until(base, &never, ms);
}

#endif
