/*
 * The decision cache: exact statement text + role + dialect + search path ->
 * a reference to the decision.  Bounded by entries and bytes, least recently
 * used out first.
 *
 * Two kinds of key share the map and the LRU order:
 *   text   the exact statement text: a hit is the decision itself;
 *   shape  the statement's tokens with the contents of literals left out
 *          (engine.c): "... WHERE aid = 48213" and "... WHERE aid = 7" share
 *          one analysis, and a hit is rebuilt around the new literals by
 *          replaying the rewrite's token-anchored edits - what pgbench -M
 *          simple and ORMs that inline values cost.
 *
 *   buckets[h & mask] -> entry -> entry          (chains)
 *   lru: head (newest) <-> ... <-> tail (oldest)  (eviction order)
 */
#include <stdlib.h>
#include <string.h>

#include "sqlpolicy/sp_internal.h"

typedef struct cache_entry {
    struct cache_entry *chain;
    struct cache_entry *prev, *next; /* LRU */
    uint64_t hash;
    const sqlp_role *role;
    int dialect;
    bool shape;
    char *path;
    char *sql;
    size_t len;
    size_t bytes;
    sqlp_decision *d;
} cache_entry;

struct sp_cache {
    cache_entry **buckets;
    size_t nbuckets;
    cache_entry *head, *tail;
    size_t max_entries, max_bytes;
    sqlp_cache_stats st;
};

sp_cache *sp_cache_new(size_t max_entries, size_t max_bytes)
{
    sp_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->max_entries = max_entries;
    c->max_bytes = max_bytes;
    /* power of two at least the entry bound, so chains stay about one long */
    size_t nb = 64;
    while (nb < max_entries && nb < (1u << 24))
        nb <<= 1;
    c->nbuckets = nb;
    c->buckets = calloc(nb, sizeof *c->buckets);
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    return c;
}

static void lru_unlink(sp_cache *c, cache_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(sp_cache *c, cache_entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

static void entry_drop(sp_cache *c, cache_entry *e)
{
    cache_entry **pp = &c->buckets[e->hash & (c->nbuckets - 1)];
    while (*pp && *pp != e)
        pp = &(*pp)->chain;
    if (*pp)
        *pp = e->chain;
    lru_unlink(c, e);
    c->st.entries--;
    c->st.bytes -= e->bytes;
    sqlp_decision_free(e->d);
    free(e->path);
    free(e->sql);
    free(e);
}

void sp_cache_free(sp_cache *c)
{
    if (!c)
        return;
    while (c->head)
        entry_drop(c, c->head);
    free(c->buckets);
    free(c);
}

static uint64_t key_hash(const sqlp_role *role, int dialect, const char *path, const char *sql, size_t len,
                         bool shape)
{
    uint64_t h = sp_hash(sql, len, (uint64_t)(uintptr_t)role);
    h = sp_hash_mix(h, (uint64_t)dialect * 2 + shape);
    return sp_hash_mix(h, sp_hash(path, strlen(path), 7));
}

sqlp_decision *sp_cache_get(sp_cache *c, const sqlp_role *role, int dialect, const char *path, const char *sql,
                            size_t len, bool shape)
{
    if (!c || !c->max_entries)
        return NULL;
    uint64_t h = key_hash(role, dialect, path, sql, len, shape);
    for (cache_entry *e = c->buckets[h & (c->nbuckets - 1)]; e; e = e->chain) {
        if (e->hash == h && e->role == role && e->dialect == dialect && e->shape == shape && e->len == len &&
            memcmp(e->sql, sql, len) == 0 && strcmp(e->path, path) == 0) {
            if (c->head != e) {
                lru_unlink(c, e);
                lru_push(c, e);
            }
            c->st.hits++;
            sp_decision_ref(e->d);
            return e->d;
        }
    }
    c->st.misses++;
    return NULL;
}

void sp_cache_put(sp_cache *c, const sqlp_role *role, int dialect, const char *path, const char *sql, size_t len,
                  bool shape, sqlp_decision *d)
{
    if (!c || !c->max_entries || len > SP_CACHE_MAX_TEXT)
        return;
    size_t bytes = sizeof(cache_entry) + len + strlen(path) + 2 + sp_decision_bytes(d);
    if (bytes > c->max_bytes)
        return;
    cache_entry *e = calloc(1, sizeof *e);
    if (!e)
        return; /* a cache that cannot grow just misses */
    e->sql = malloc(len + 1);
    e->path = strdup(path);
    if (!e->sql || !e->path) {
        free(e->sql);
        free(e->path);
        free(e);
        return;
    }
    memcpy(e->sql, sql, len);
    e->sql[len] = 0;
    e->hash = key_hash(role, dialect, path, sql, len, shape);
    /* one entry per key: a newer decision for a shape replaces the older */
    for (cache_entry *o = c->buckets[e->hash & (c->nbuckets - 1)]; o; o = o->chain)
        if (o->hash == e->hash && o->role == role && o->dialect == dialect && o->shape == shape && o->len == len &&
            memcmp(o->sql, sql, len) == 0 && strcmp(o->path, path) == 0) {
            entry_drop(c, o);
            break;
        }
    e->role = role;
    e->dialect = dialect;
    e->shape = shape;
    e->len = len;
    e->bytes = bytes;
    sp_decision_ref(d);
    e->d = d;
    while (c->tail && (c->st.entries + 1 > c->max_entries || c->st.bytes + bytes > c->max_bytes)) {
        entry_drop(c, c->tail);
        c->st.evictions++;
    }
    cache_entry **b = &c->buckets[e->hash & (c->nbuckets - 1)];
    e->chain = *b;
    *b = e;
    lru_push(c, e);
    c->st.entries++;
    c->st.bytes += bytes;
}

void sp_cache_stats(const sp_cache *c, sqlp_cache_stats *out)
{
    *out = c->st;
}
