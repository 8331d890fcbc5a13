/*
 * audit_json: the two JSON halves the audit log needs.
 *
 *   writing: a growable buffer with a sticky out-of-memory flag, and string
 *            escaping that takes arbitrary bytes (the agent's SQL is not
 *            guaranteed to be UTF-8);
 *   reading: a strict RFC 8259 parser into an arena-allocated tree, used by
 *            the verifier and the tools.  Pure functions over a byte range.
 *
 * Lossless strings: valid UTF-8 is written as a JSON string; anything else
 * becomes {"lossy":"<U+FFFD for each bad byte>","base64":"<exact bytes>"},
 * so the log keeps the exact bytes and a reader still has something to show.
 */
#ifndef PHIGATE_AUDIT_JSON_H
#define PHIGATE_AUDIT_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUDIT_WUR __attribute__((warn_unused_result))

/* ---- writing ---------------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
    bool oom; /* sticky: set by the first failed allocation, then puts are no-ops */
} audit_buf;

void audit_buf_put(audit_buf *b, const void *p, size_t n);
void audit_buf_putc(audit_buf *b, char c);
void audit_buf_puts(audit_buf *b, const char *s);
void audit_buf_printf(audit_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void audit_buf_free(audit_buf *b);

/* "..." for valid UTF-8, the lossy/base64 object otherwise.  p may be NULL only with n == 0. */
void audit_buf_json_str(audit_buf *b, const void *p, size_t n);
/* HTML-escapes arbitrary bytes (invalid UTF-8 shown as U+FFFD). */
void audit_buf_html(audit_buf *b, const void *p, size_t n);
void audit_buf_hex(audit_buf *b, const void *p, size_t n);

bool audit_utf8_valid(const void *p, size_t n) AUDIT_WUR;

/* ---- reading ---------------------------------------------------------- */

typedef enum { AJ_NULL, AJ_BOOL, AJ_NUMBER, AJ_STRING, AJ_ARRAY, AJ_OBJECT } aj_type;

typedef struct aj_value aj_value;
struct aj_value {
    aj_type type;
    const char *key; /* member name when inside an object (decoded, NUL-terminated) */
    size_t key_len;
    const char *str; /* decoded string, or the number's text; NUL-terminated */
    size_t len;
    bool b;
    aj_value *child; /* first element/member */
    aj_value *next;  /* next sibling */
};

/* Chunked bump allocator: one per reader, reset between lines, so parsing a
 * multi-gigabyte log does not churn malloc. */
typedef struct aj_chunk aj_chunk;
typedef struct {
    aj_chunk *head;
} aj_arena;

void aj_arena_reset(aj_arena *a);
void aj_arena_free(aj_arena *a);

/* Parses exactly one JSON value filling [p, p+n) (surrounding whitespace allowed). */
bool aj_parse(aj_arena *a, const char *p, size_t n, aj_value **out, char *err, size_t errlen) AUDIT_WUR;

const aj_value *aj_get(const aj_value *obj, const char *key);
/* NULL when absent or not a string. */
const char *aj_get_str(const aj_value *obj, const char *key);
bool aj_get_u64(const aj_value *obj, const char *key, uint64_t *out) AUDIT_WUR;
/* Text of a string value, or the "lossy" member of a lossless-string object; NULL otherwise. */
const char *aj_text(const aj_value *v, size_t *len);

#endif
