/*
 * Arena, byte buffer, hashing and a string map for sqlpolicy.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlpolicy/sp_internal.h"

/* ---- arena ------------------------------------------------------------- */

struct sp_arena_block {
    sp_arena_block *next;
    size_t size;
    max_align_t data[];
};

#define SP_ARENA_BLOCK 8192

void sp_arena_init(sp_arena *a)
{
    memset(a, 0, sizeof *a);
}

void sp_arena_free(sp_arena *a)
{
    sp_arena_block *b = a->head;
    while (b) {
        sp_arena_block *n = b->next;
        free(b);
        b = n;
    }
    a->head = NULL;
    a->cur = a->end = NULL;
    a->used = 0;
}

static void *arena_fail(sp_arena *a)
{
    if (a->oom)
        longjmp(*a->oom, 1);
    return NULL;
}

void *sp_alloc_raw(sp_arena *a, size_t n)
{
    const size_t align = _Alignof(max_align_t);
    n = (n + align - 1) & ~(align - 1);
    if (n == 0)
        n = align;
    if ((size_t)(a->end - a->cur) < n) {
        /* Big requests get a block of their own so a few large strings do not
         * waste the remainder of the current block. */
        size_t sz = n > SP_ARENA_BLOCK / 4 ? n : SP_ARENA_BLOCK;
        if (sz > SIZE_MAX - sizeof(sp_arena_block))
            return arena_fail(a);
        sp_arena_block *b = malloc(sizeof(sp_arena_block) + sz);
        if (!b)
            return arena_fail(a);
        b->size = sz;
        if (sz == n && a->head) {
            /* keep the current block open for small allocations */
            b->next = a->head->next;
            a->head->next = b;
            a->used += n;
            return b->data;
        }
        b->next = a->head;
        a->head = b;
        a->cur = (char *)b->data;
        a->end = a->cur + sz;
    }
    void *p = a->cur;
    a->cur += n;
    a->used += n;
    return p;
}

void *sp_alloc(sp_arena *a, size_t n)
{
    void *p = sp_alloc_raw(a, n);
    if (p)
        memset(p, 0, n);
    return p;
}

char *sp_strndup(sp_arena *a, const char *s, size_t n)
{
    char *p = sp_alloc_raw(a, n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *sp_strdup(sp_arena *a, const char *s)
{
    return s ? sp_strndup(a, s, strlen(s)) : NULL;
}

char *sp_printf(sp_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return sp_strdup(a, "");
    if ((size_t)n < sizeof small)
        return sp_strndup(a, small, (size_t)n);
    char *p = sp_alloc_raw(a, (size_t)n + 1);
    if (!p)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

/* ---- buffer ------------------------------------------------------------- */

void sp_buf_init(sp_buf *b, sp_arena *a, size_t cap)
{
    b->a = a;
    b->len = 0;
    b->cap = cap ? cap : 64;
    b->p = sp_alloc_raw(a, b->cap);
    if (b->p)
        b->p[0] = 0;
    else
        b->cap = 0;
}

static bool buf_reserve(sp_buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t ncap = b->cap ? b->cap * 2 : 64;
    while (ncap < b->len + extra + 1)
        ncap *= 2;
    char *np = sp_alloc_raw(b->a, ncap);
    if (!np)
        return false;
    if (b->len)
        memcpy(np, b->p, b->len);
    b->p = np;
    b->cap = ncap;
    return true;
}

void sp_buf_add(sp_buf *b, const char *s, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void sp_buf_puts(sp_buf *b, const char *s)
{
    sp_buf_add(b, s, strlen(s));
}

void sp_buf_printf(sp_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        sp_buf_add(b, small, (size_t)n);
        return;
    }
    if (!buf_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void sp_buf_ident(sp_buf *b, const char *ident, sqlp_dialect d)
{
    char q = d == SQLP_DIALECT_MYSQL ? '`' : '"';
    sp_buf_add(b, &q, 1);
    for (const char *p = ident; *p; p++) {
        if (*p == q)
            sp_buf_add(b, &q, 1);
        sp_buf_add(b, p, 1);
    }
    sp_buf_add(b, &q, 1);
}

void sp_buf_literal(sp_buf *b, const char *s, sqlp_dialect d)
{
    sp_buf_add(b, "'", 1);
    for (const char *p = s; *p; p++) {
        if (*p == '\'')
            sp_buf_add(b, "'", 1);
        /* MySQL treats backslash as an escape in strings unless NO_BACKSLASH_ESCAPES */
        if (*p == '\\' && d == SQLP_DIALECT_MYSQL)
            sp_buf_add(b, "\\", 1);
        sp_buf_add(b, p, 1);
    }
    sp_buf_add(b, "'", 1);
}

char *sp_buf_cstr(sp_buf *b)
{
    if (!b->p)
        return sp_strdup(b->a, "");
    return b->p;
}

/* ---- hashing ------------------------------------------------------------ */

static inline uint64_t rd64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    return x;
}

/* Eight bytes per step: the cache hashes every statement on the hot path, so a
 * byte-at-a-time FNV (about 1 ns per byte) would cost microseconds on 2 KB. */
uint64_t sp_hash(const void *data, size_t n, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t h = seed ^ (n * 0x9e3779b97f4a7c15ull);
    while (n >= 8) {
        h = (h ^ mix64(rd64(p))) * 0xbf58476d1ce4e5b9ull;
        h = (h << 27) | (h >> 37);
        p += 8;
        n -= 8;
    }
    uint64_t tail = 0;
    memcpy(&tail, p, n);
    h ^= mix64(tail ^ ((uint64_t)n << 56));
    return mix64(h);
}

bool sp_streq_ci(const char *a, const char *b)
{
    for (;; a++, b++) {
        unsigned char x = (unsigned char)*a, y = (unsigned char)*b;
        if (x >= 'A' && x <= 'Z')
            x += 32;
        if (y >= 'A' && y <= 'Z')
            y += 32;
        if (x != y)
            return false;
        if (!x)
            return true;
    }
}

bool sp_strneq_ci(const char *a, size_t alen, const char *b)
{
    size_t i;
    for (i = 0; i < alen; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (!y)
            return false;
        if (x >= 'A' && x <= 'Z')
            x += 32;
        if (y >= 'A' && y <= 'Z')
            y += 32;
        if (x != y)
            return false;
    }
    return b[i] == 0;
}

/* ---- string map ----------------------------------------------------------- */

typedef struct strmap_slot {
    char *key;
    size_t klen;
    uint64_t hash;
    void *val;
} strmap_slot;

struct sp_strmap {
    strmap_slot *slots;
    size_t cap, n;
};

sp_strmap *sp_strmap_new(void)
{
    sp_strmap *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->cap = 64;
    m->slots = calloc(m->cap, sizeof *m->slots);
    if (!m->slots) {
        free(m);
        return NULL;
    }
    return m;
}

void sp_strmap_free(sp_strmap *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    free(m);
}

static bool strmap_grow(sp_strmap *m)
{
    size_t ncap = m->cap * 2;
    strmap_slot *ns = calloc(ncap, sizeof *ns);
    if (!ns)
        return false;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].key)
            continue;
        size_t j = m->slots[i].hash & (ncap - 1);
        while (ns[j].key)
            j = (j + 1) & (ncap - 1);
        ns[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return true;
}

bool sp_strmap_put(sp_strmap *m, const char *key, size_t klen, void *val)
{
    if ((m->n + 1) * 4 > m->cap * 3 && !strmap_grow(m))
        return false;
    uint64_t h = sp_hash(key, klen, 0);
    size_t j = h & (m->cap - 1);
    while (m->slots[j].key) {
        if (m->slots[j].hash == h && m->slots[j].klen == klen && memcmp(m->slots[j].key, key, klen) == 0) {
            m->slots[j].val = val;
            return true;
        }
        j = (j + 1) & (m->cap - 1);
    }
    char *k = malloc(klen + 1);
    if (!k)
        return false;
    memcpy(k, key, klen);
    k[klen] = 0;
    m->slots[j] = (strmap_slot){k, klen, h, val};
    m->n++;
    return true;
}

void *sp_strmap_get(const sp_strmap *m, const char *key, size_t klen)
{
    if (!m)
        return NULL;
    uint64_t h = sp_hash(key, klen, 0);
    size_t j = h & (m->cap - 1);
    while (m->slots[j].key) {
        if (m->slots[j].hash == h && m->slots[j].klen == klen && memcmp(m->slots[j].key, key, klen) == 0)
            return m->slots[j].val;
        j = (j + 1) & (m->cap - 1);
    }
    return NULL;
}
