/*
 * JSON writing and reading for the audit log; see audit_json.h.
 */
#include "gate/audit_json.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffer ----------------------------------------------------------- */

/* Room for extra bytes plus the terminating NUL; doubling keeps appends
 * amortised O(1) for multi-megabyte statements. */
static bool buf_reserve(audit_buf *b, size_t extra)
{
    if (b->oom)
        return false;
    if (b->cap - b->len > extra)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= extra) {
        if (cap > SIZE_MAX / 2) { /* the doubling itself would overflow */
            b->oom = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void audit_buf_put(audit_buf *b, const void *p, size_t n)
{
    if (n == 0 || !buf_reserve(b, n))
        return;
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0'; /* always terminated, so callers may treat it as a C string */
}

void audit_buf_putc(audit_buf *b, char c)
{
    audit_buf_put(b, &c, 1);
}

void audit_buf_puts(audit_buf *b, const char *s)
{
    audit_buf_put(b, s, strlen(s));
}

void audit_buf_printf(audit_buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    /* Most formatted pieces are short: one vsnprintf, no second pass. */
    if ((size_t)n < sizeof small) {
        audit_buf_put(b, small, (size_t)n);
        return;
    }
    if (!buf_reserve(b, (size_t)n + 1))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void audit_buf_free(audit_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- UTF-8 ------------------------------------------------------------ */

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF), or 0 when the byte starts none. */
static size_t utf8_len(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

bool audit_utf8_valid(const void *p, size_t n)
{
    const uint8_t *s = p;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_len(s + i, n - i);
        if (l == 0)
            return false;
        i += l;
    }
    return true;
}

/* ---- JSON strings ----------------------------------------------------- */

static const char HEX[] = "0123456789abcdef";

/* Escaped string body; invalid UTF-8 bytes become U+FFFD (the caller decides
 * whether that loss needs the base64 twin). */
static void put_escaped(audit_buf *b, const uint8_t *s, size_t n)
{
    size_t run = 0; /* start of the pending run of bytes that need no escape */
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t l = utf8_len(s + i, n - i);
        if (l > 1 || (l == 1 && c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)) {
            i += l;
            continue;
        }
        audit_buf_put(b, s + run, i - run);
        if (l == 0)
            audit_buf_puts(b, "\\ufffd");
        else if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            audit_buf_put(b, e, 2);
        } else if (c == '\n')
            audit_buf_puts(b, "\\n");
        else if (c == '\t')
            audit_buf_puts(b, "\\t");
        else if (c == '\r')
            audit_buf_puts(b, "\\r");
        else {
            char e[6] = {'\\', 'u', '0', '0', HEX[c >> 4], HEX[c & 15]};
            audit_buf_put(b, e, 6);
        }
        i++;
        run = i;
    }
    audit_buf_put(b, s + run, n - run);
}

/* Standard alphabet with padding (RFC 4648 section 4), what every tool decodes. */
static void put_base64(audit_buf *b, const uint8_t *s, size_t n)
{
    static const char T[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        char o[4] = {T[v >> 18], T[(v >> 12) & 63], i + 1 < n ? T[(v >> 6) & 63] : '=',
                     i + 2 < n ? T[v & 63] : '='};
        audit_buf_put(b, o, 4);
    }
}

/* One validation pass decides the shape; escaping is a second pass because
 * the shape (string or object) must be known before the first byte goes out. */
void audit_buf_json_str(audit_buf *b, const void *p, size_t n)
{
    const uint8_t *s = p;
    bool valid = audit_utf8_valid(s, n);
    if (!valid)
        audit_buf_puts(b, "{\"lossy\":");
    audit_buf_putc(b, '"');
    put_escaped(b, s, n);
    audit_buf_putc(b, '"');
    if (!valid) {
        audit_buf_puts(b, ",\"base64\":\"");
        put_base64(b, s, n);
        audit_buf_puts(b, "\"}");
    }
}

void audit_buf_hex(audit_buf *b, const void *p, size_t n)
{
    const uint8_t *s = p;
    for (size_t i = 0; i < n; i++) {
        char o[2] = {HEX[s[i] >> 4], HEX[s[i] & 15]};
        audit_buf_put(b, o, 2);
    }
}

static const char *html_entity(uint8_t c)
{
    switch (c) {
    case '&': return "&amp;";
    case '<': return "&lt;";
    case '>': return "&gt;";
    case '"': return "&quot;";
    case '\'': return "&#39;";
    default: return NULL;
    }
}

void audit_buf_html(audit_buf *b, const void *p, size_t n)
{
    const uint8_t *s = p;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_len(s + i, n - i);
        const char *ent = l == 1 ? html_entity(s[i]) : NULL;
        if (l == 0 || (l == 1 && s[i] < 0x20 && s[i] != '\n' && s[i] != '\t') || s[i] == 0x7f)
            audit_buf_puts(b, "&#xfffd;"); /* never let raw control bytes into the page */
        else if (ent)
            audit_buf_puts(b, ent);
        else
            audit_buf_put(b, s + i, l);
        i += l ? l : 1;
    }
}

/* ---- arena ------------------------------------------------------------ */

struct aj_chunk {
    aj_chunk *next;
    size_t used, cap;
    max_align_t data[];
};

/* Bump allocation, max_align_t aligned; an oversized request gets a chunk of
 * its own so one huge string does not waste a standard chunk. */
static void *arena_alloc(aj_arena *a, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    aj_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        c = malloc(sizeof *c + cap);
        if (!c)
            return NULL;
        c->used = 0;
        c->cap = cap;
        c->next = a->head;
        a->head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

void aj_arena_reset(aj_arena *a)
{
    /* Keep the newest chunk: the next line is usually the same size. */
    aj_chunk *keep = a->head;
    if (!keep)
        return;
    aj_chunk *c = keep->next;
    while (c) {
        aj_chunk *n = c->next;
        free(c);
        c = n;
    }
    keep->next = NULL;
    keep->used = 0;
}

void aj_arena_free(aj_arena *a)
{
    aj_arena_reset(a);
    free(a->head);
    a->head = NULL;
}

/* ---- parser ----------------------------------------------------------- */

#define AJ_MAX_DEPTH 64

typedef struct {
    aj_arena *a;
    const char *p, *end, *start;
    char *err;
    size_t errlen;
} aj_parser;

static bool fail(aj_parser *ps, const char *what)
{
    if (ps->errlen)
        snprintf(ps->err, ps->errlen, "%s at byte %zu", what, (size_t)(ps->p - ps->start));
    return false;
}

static void skip_ws(aj_parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

/* Recursive descent; depth is bounded (AJ_MAX_DEPTH) because the tools may be
 * pointed at files nobody vouches for. */
static bool parse_value(aj_parser *ps, aj_value *v, int depth);

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool read_u4(aj_parser *ps, uint32_t *out)
{
    if (ps->end - ps->p < 4)
        return fail(ps, "short \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(ps->p[i]);
        if (h < 0)
            return fail(ps, "bad \\u escape");
        v = v << 4 | (uint32_t)h;
    }
    ps->p += 4;
    *out = v;
    return true;
}

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 63));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 63));
        o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63));
    o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

/* \uXXXX, pairing surrogates; a lone surrogate is refused (not valid Unicode). */
static bool read_unicode_escape(aj_parser *ps, uint32_t *cp)
{
    if (!read_u4(ps, cp))
        return false;
    if (*cp >= 0xDC00 && *cp <= 0xDFFF)
        return fail(ps, "lone low surrogate");
    if (*cp < 0xD800 || *cp > 0xDBFF)
        return true;
    uint32_t lo;
    if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u')
        return fail(ps, "lone high surrogate");
    ps->p += 2;
    if (!read_u4(ps, &lo))
        return false;
    if (lo < 0xDC00 || lo > 0xDFFF)
        return fail(ps, "bad surrogate pair");
    *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
    return true;
}

static bool read_escape(aj_parser *ps, char *o, size_t *olen)
{
    char c = *ps->p++;
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *m = c ? strchr(from, c) : NULL;
    if (m) {
        o[0] = to[m - from];
        *olen = 1;
        return true;
    }
    if (c != 'u')
        return fail(ps, "bad escape");
    uint32_t cp;
    if (!read_unicode_escape(ps, &cp))
        return false;
    *olen = put_utf8(o, cp);
    return true;
}

/* Decoded output is never longer than the input, so one allocation of the
 * raw span suffices. */
static bool parse_string(aj_parser *ps, const char **out, size_t *outlen)
{
    ps->p++; /* opening quote */
    const char *q = ps->p;
    while (q < ps->end && *q != '"')
        q += (*q == '\\' && q + 1 < ps->end) ? 2 : 1;
    if (q >= ps->end)
        return fail(ps, "unterminated string");
    char *o = arena_alloc(ps->a, (size_t)(q - ps->p) + 1);
    if (!o)
        return fail(ps, "out of memory");
    size_t n = 0;
    while (*ps->p != '"') {
        uint8_t c = (uint8_t)*ps->p;
        if (c < 0x20)
            return fail(ps, "control character in string");
        if (c == '\\') {
            ps->p++;
            size_t l = 0;
            if (!read_escape(ps, o + n, &l))
                return false;
            n += l;
            continue;
        }
        size_t l = utf8_len((const uint8_t *)ps->p, (size_t)(ps->end - ps->p));
        if (l == 0)
            return fail(ps, "invalid UTF-8 in string");
        memcpy(o + n, ps->p, l);
        n += l;
        ps->p += l;
    }
    ps->p++;
    o[n] = '\0';
    *out = o;
    *outlen = n;
    return true;
}

static bool is_digit(const aj_parser *ps)
{
    return ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9';
}

/* RFC 8259 number grammar only (no leading zeros, no "+1", no ".5"): the
 * text is kept, and aj_get_u64 converts exactly, never through a double. */
static bool parse_number(aj_parser *ps, aj_value *v)
{
    const char *s = ps->p;
    if (ps->p < ps->end && *ps->p == '-')
        ps->p++;
    if (!is_digit(ps))
        return fail(ps, "bad number");
    if (*ps->p == '0')
        ps->p++;
    else
        while (is_digit(ps))
            ps->p++;
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        if (!is_digit(ps))
            return fail(ps, "bad fraction");
        while (is_digit(ps))
            ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
            ps->p++;
        if (!is_digit(ps))
            return fail(ps, "bad exponent");
        while (is_digit(ps))
            ps->p++;
    }
    char *o = arena_alloc(ps->a, (size_t)(ps->p - s) + 1);
    if (!o)
        return fail(ps, "out of memory");
    memcpy(o, s, (size_t)(ps->p - s));
    o[ps->p - s] = '\0';
    v->type = AJ_NUMBER;
    v->str = o;
    v->len = (size_t)(ps->p - s);
    return true;
}

static bool parse_literal(aj_parser *ps, aj_value *v)
{
    static const struct { const char *word; aj_type t; bool b; } L[] = {
        {"true", AJ_BOOL, true}, {"false", AJ_BOOL, false}, {"null", AJ_NULL, false}};
    for (size_t i = 0; i < sizeof L / sizeof L[0]; i++) {
        size_t n = strlen(L[i].word);
        if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, L[i].word, n) == 0) {
            ps->p += n;
            v->type = L[i].t;
            v->b = L[i].b;
            return true;
        }
    }
    return fail(ps, "unexpected character");
}

static aj_value *new_value(aj_parser *ps)
{
    aj_value *v = arena_alloc(ps->a, sizeof *v);
    if (v)
        memset(v, 0, sizeof *v);
    return v;
}

/* Arrays and objects share the element loop; objects read "key": first. */
static bool parse_container(aj_parser *ps, aj_value *v, int depth)
{
    bool obj = *ps->p == '{';
    char close = obj ? '}' : ']';
    v->type = obj ? AJ_OBJECT : AJ_ARRAY;
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return true;
    }
    aj_value **link = &v->child;
    for (;;) {
        aj_value *e = new_value(ps);
        if (!e)
            return fail(ps, "out of memory");
        skip_ws(ps);
        if (obj) {
            if (ps->p >= ps->end || *ps->p != '"')
                return fail(ps, "expected member name");
            if (!parse_string(ps, &e->key, &e->key_len))
                return false;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':')
                return fail(ps, "expected ':'");
            ps->p++;
        }
        if (!parse_value(ps, e, depth + 1))
            return false;
        *link = e;
        link = &e->next;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            return true;
        }
        return fail(ps, obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static bool parse_value(aj_parser *ps, aj_value *v, int depth)
{
    if (depth > AJ_MAX_DEPTH)
        return fail(ps, "nested too deeply");
    skip_ws(ps);
    if (ps->p >= ps->end)
        return fail(ps, "unexpected end");
    char c = *ps->p;
    if (c == '{' || c == '[')
        return parse_container(ps, v, depth);
    if (c == '"') {
        v->type = AJ_STRING;
        return parse_string(ps, &v->str, &v->len);
    }
    if (c == '-' || (c >= '0' && c <= '9'))
        return parse_number(ps, v);
    return parse_literal(ps, v);
}

bool aj_parse(aj_arena *a, const char *p, size_t n, aj_value **out, char *err, size_t errlen)
{
    aj_parser ps = {.a = a, .p = p, .end = p + n, .start = p, .err = err, .errlen = errlen};
    aj_value *v = new_value(&ps);
    if (!v)
        return fail(&ps, "out of memory");
    if (!parse_value(&ps, v, 0))
        return false;
    skip_ws(&ps);
    if (ps.p != ps.end)
        return fail(&ps, "trailing bytes after value");
    *out = v;
    return true;
}

/* ---- access ----------------------------------------------------------- */

/* Linear: records have a dozen members.  The first match wins on a
 * duplicate key, which our writer never produces. */
const aj_value *aj_get(const aj_value *obj, const char *key)
{
    if (!obj || obj->type != AJ_OBJECT)
        return NULL;
    for (const aj_value *m = obj->child; m; m = m->next)
        if (strcmp(m->key, key) == 0)
            return m;
    return NULL;
}

const char *aj_get_str(const aj_value *obj, const char *key)
{
    const aj_value *v = aj_get(obj, key);
    return v && v->type == AJ_STRING ? v->str : NULL;
}

bool aj_get_u64(const aj_value *obj, const char *key, uint64_t *out)
{
    const aj_value *v = aj_get(obj, key);
    if (!v || v->type != AJ_NUMBER || v->str[0] == '-')
        return false;
    for (size_t i = 0; i < v->len; i++)
        if (v->str[i] < '0' || v->str[i] > '9')
            return false; /* fractions and exponents are not counters */
    errno = 0;
    char *end;
    unsigned long long x = strtoull(v->str, &end, 10);
    if (errno || *end)
        return false;
    *out = x;
    return true;
}

const char *aj_text(const aj_value *v, size_t *len)
{
    if (v && v->type == AJ_OBJECT)
        v = aj_get(v, "lossy");
    if (!v || v->type != AJ_STRING)
        return NULL;
    if (len)
        *len = v->len;
    return v->str;
}
