#include "gate/limits.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct slot {
    char *name; /* NULL for slots addressed by index (limits_new) */
    int connections;
    double tokens;
    uint64_t refilled_ns;
} slot;

struct identity_limits {
    int refs;
    size_t clients; /* client sockets open, authenticated or not */
    size_t n;
    slot *slots;
};

uint64_t limits_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

identity_limits *limits_new(size_t n)
{
    identity_limits *l = calloc(1, sizeof *l);
    l->refs = 1;
    l->n = n;
    l->slots = calloc(n ? n : 1, sizeof *l->slots);
    for (size_t i = 0; i < n; i++)
        l->slots[i].tokens = -1; /* filled on first use, when the rate is known */
    return l;
}

identity_limits *limits_ref(identity_limits *l)
{
    l->refs++;
    return l;
}

void limits_free(identity_limits *l)
{
    if (!l || --l->refs > 0)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->slots[i].name);
    free(l->slots);
    free(l);
}

size_t limits_slot(identity_limits *l, const char *identity)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->slots[i].name && strcmp(l->slots[i].name, identity) == 0)
            return i;
    slot *grown = realloc(l->slots, (l->n + 1) * sizeof *grown);
    if (!grown)
        abort();
    l->slots = grown;
    l->slots[l->n] = (slot){.name = strdup(identity), .tokens = -1};
    return l->n++;
}

bool limits_acquire_client(identity_limits *l, int max)
{
    if (max > 0 && l->clients >= (size_t)max)
        return false;
    l->clients++;
    return true;
}

void limits_release_client(identity_limits *l)
{
    if (l->clients > 0)
        l->clients--;
}

bool limits_acquire_connection(identity_limits *l, size_t i, int max)
{
    if (i >= l->n)
        return false;
    if (max > 0 && l->slots[i].connections >= max)
        return false;
    l->slots[i].connections++;
    return true;
}

void limits_release_connection(identity_limits *l, size_t i)
{
    if (i < l->n && l->slots[i].connections > 0)
        l->slots[i].connections--;
}

bool limits_take_statement(identity_limits *l, size_t i, int per_second, uint64_t now_ns)
{
    if (i >= l->n)
        return false;
    if (per_second <= 0)
        return true;
    slot *s = &l->slots[i];
    if (s->tokens < 0) {
        s->tokens = per_second;
        s->refilled_ns = now_ns;
    }
    double elapsed = (double)(now_ns - s->refilled_ns) / 1e9;
    s->refilled_ns = now_ns;
    s->tokens += elapsed * per_second;
    if (s->tokens > per_second)
        s->tokens = per_second; /* burst: one second's worth */
    if (s->tokens < 1)
        return false;
    s->tokens -= 1;
    return true;
}
