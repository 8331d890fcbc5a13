/*
 * Unit tests for pgfront/pg_wire.h: the pure framing functions (headers, startup
 * parameters, error fields, the bounds-checked cursor) and the message builders,
 * checked by parsing what they build.
 *
 * Prints one line per failed check, then "N passed, N failed" (tests, not checks);
 * exits non-zero if anything failed.
 */
#include <event2/buffer.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgfront/pg_wire.h"

static int tests_passed, tests_failed;
static int current_failures;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            current_failures++;                                                      \
            printf("  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                 \
        }                                                                            \
    } while (0)

#define RUN(test)                                                                    \
    do {                                                                             \
        current_failures = 0;                                                        \
        test();                                                                      \
        free_owned();                                                                \
        if (current_failures) {                                                      \
            tests_failed++;                                                          \
            printf("FAIL %s\n", #test);                                              \
        } else {                                                                     \
            tests_passed++;                                                          \
            printf("ok   %s\n", #test);                                              \
        }                                                                            \
    } while (0)

/* A copy on the heap of exactly n bytes, so ASan catches any read past its end.
 * Freed after the test that made it (parsed pointers stay valid until then). */
static uint8_t *owned[256];
static size_t nowned;

static uint8_t *exact(const void *data, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    if (n)
        memcpy(p, data, n);
    if (nowned < sizeof owned / sizeof owned[0])
        owned[nowned++] = p;
    return p;
}

static void free_owned(void)
{
    while (nowned)
        free(owned[--nowned]);
}

static void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* ---- cursor ------------------------------------------------------------------ */

static void cursor_integers_read_big_endian(void)
{
    static const uint8_t data[] = {0x7f, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0xfe};
    uint8_t *buf = exact(data, sizeof data);
    pg_cursor c;
    pg_cursor_init(&c, buf, sizeof data);
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    int32_t i32;
    CHECK(pg_get_u8(&c, &u8) && u8 == 0x7f);
    CHECK(pg_get_u16(&c, &u16) && u16 == 0x1234);
    CHECK(pg_get_u32(&c, &u32) && u32 == 0xdeadbeefu);
    CHECK(pg_get_i32(&c, &i32) && i32 == -2);
    CHECK(pg_cursor_left(&c) == 0);
}

static void cursor_getters_fail_at_the_end_without_moving(void)
{
    static const uint8_t data[] = {1, 2, 3};
    uint8_t *buf = exact(data, sizeof data);
    pg_cursor c;
    pg_cursor_init(&c, buf, sizeof data);
    uint32_t u32 = 0xaaaaaaaa;
    int32_t i32;
    uint16_t u16;
    uint8_t u8;
    CHECK(!pg_get_u32(&c, &u32));
    CHECK(u32 == 0xaaaaaaaa); /* output untouched on failure */
    CHECK(!pg_get_i32(&c, &i32));
    CHECK(c.pos == 0 && pg_cursor_left(&c) == 3);
    CHECK(pg_get_u16(&c, &u16) && u16 == 0x0102);
    CHECK(!pg_get_u16(&c, &u16));
    CHECK(c.pos == 2);
    CHECK(pg_get_u8(&c, &u8) && u8 == 3);
    CHECK(!pg_get_u8(&c, &u8));
    CHECK(pg_cursor_left(&c) == 0);
}

/* A cursor over no buffer at all (NULL, 0), as a caller with an empty message may build. */
static void cursor_on_an_empty_buffer(void)
{
    pg_cursor c;
    pg_cursor_init(&c, NULL, 0);
    uint8_t u8;
    const char *s;
    size_t len;
    const uint8_t *bytes;
    CHECK(pg_cursor_left(&c) == 0);
    CHECK(!pg_get_u8(&c, &u8));
    CHECK(!pg_get_cstring(&c, &s, &len));
    CHECK(pg_get_bytes(&c, 0, &bytes)); /* zero bytes are always there */
    CHECK(!pg_get_bytes(&c, 1, &bytes));
}

static void cursor_bytes_exact_and_one_too_many(void)
{
    static const uint8_t data[] = {9, 8, 7, 6};
    uint8_t *buf = exact(data, sizeof data);
    pg_cursor c;
    const uint8_t *out;
    pg_cursor_init(&c, buf, sizeof data);
    CHECK(!pg_get_bytes(&c, 5, &out));
    CHECK(!pg_get_bytes(&c, SIZE_MAX, &out)); /* no overflow in the bounds check */
    CHECK(c.pos == 0);
    CHECK(pg_get_bytes(&c, 1, &out) && out == buf && out[0] == 9);
    CHECK(!pg_get_bytes(&c, SIZE_MAX, &out));
    CHECK(!pg_get_bytes(&c, 4, &out));
    CHECK(pg_get_bytes(&c, 3, &out) && out == buf + 1);
    CHECK(pg_cursor_left(&c) == 0);
}

static void cursor_cstrings(void)
{
    static const char data[] = "abc\0\0xyz"; /* "abc", "", then "xyz" without its NUL */
    uint8_t *buf = exact(data, 8);
    pg_cursor c;
    const char *s;
    size_t len = 99;
    pg_cursor_init(&c, buf, 8);
    CHECK(pg_get_cstring(&c, &s, &len) && len == 3 && strcmp(s, "abc") == 0);
    CHECK(pg_get_cstring(&c, &s, &len) && len == 0 && s[0] == '\0');
    CHECK(c.pos == 5);
    CHECK(!pg_get_cstring(&c, &s, &len)); /* unterminated: fails, cursor stays */
    CHECK(c.pos == 5);
    CHECK(pg_get_cstring(&c, &s, NULL) == false);

    /* Terminator on the very last byte. */
    buf = exact("hi", 3);
    pg_cursor_init(&c, buf, 3);
    CHECK(pg_get_cstring(&c, &s, NULL) && strcmp(s, "hi") == 0);
    CHECK(pg_cursor_left(&c) == 0);
}

/* ---- headers ------------------------------------------------------------------- */

static void startup_header_needs_eight_bytes(void)
{
    uint8_t raw[8];
    be32(raw, 16), be32(raw + 4, PG_PROTOCOL_3_0);
    uint32_t len = 0, code = 0;
    for (size_t avail = 0; avail < 8; avail++) {
        uint8_t *buf = exact(raw, avail);
        CHECK(pg_parse_startup_header(buf, avail, 10000, &len, &code) == PG_HDR_NEED_MORE);
    }
    uint8_t *buf = exact(raw, 8);
    CHECK(pg_parse_startup_header(buf, 8, 10000, &len, &code) == PG_HDR_OK);
    CHECK(len == 16 && code == PG_PROTOCOL_3_0);
}

static void startup_header_lengths(void)
{
    uint8_t raw[8];
    uint32_t len, code;
    be32(raw + 4, PG_PROTOCOL_3_0);
    for (uint32_t l = 0; l < 8; l++) {
        be32(raw, l);
        CHECK(pg_parse_startup_header(raw, 8, 10000, &len, &code) == PG_HDR_TOO_SHORT);
    }
    be32(raw, 8); /* header only, empty body: well formed */
    CHECK(pg_parse_startup_header(raw, 8, 10000, &len, &code) == PG_HDR_OK && len == 8);
    be32(raw, 10000); /* exactly the maximum */
    CHECK(pg_parse_startup_header(raw, 8, 10000, &len, &code) == PG_HDR_OK && len == 10000);
    be32(raw, 10001);
    CHECK(pg_parse_startup_header(raw, 8, 10000, &len, &code) == PG_HDR_TOO_LONG);
    be32(raw, 0x80000000u); /* "2 GB" */
    CHECK(pg_parse_startup_header(raw, 8, 10000, &len, &code) == PG_HDR_TOO_LONG);
    be32(raw, 0xffffffffu);
    CHECK(pg_parse_startup_header(raw, 8, 10000, &len, &code) == PG_HDR_TOO_LONG);
}

static void startup_header_special_codes(void)
{
    uint8_t raw[8];
    uint32_t len, code;
    be32(raw, 8), be32(raw + 4, PG_SSL_REQUEST);
    CHECK(pg_parse_startup_header(raw, 8, 10000, &len, &code) == PG_HDR_OK && code == 80877103u);
    be32(raw, 16), be32(raw + 4, PG_CANCEL_REQUEST);
    CHECK(pg_parse_startup_header(raw, 8, 10000, &len, &code) == PG_HDR_OK && code == 80877102u && len == 16);
    CHECK(PG_GSSENC_REQUEST == 80877104u && PG_PROTOCOL_3_0 == 196608u);
}

static void header_needs_five_bytes(void)
{
    static const uint8_t raw[5] = {'Q', 0, 0, 0, 9};
    char type = 0;
    uint32_t total = 0;
    for (size_t avail = 0; avail < 5; avail++) {
        uint8_t *buf = exact(raw, avail);
        CHECK(pg_parse_header(buf, avail, 1 << 20, &type, &total) == PG_HDR_NEED_MORE);
    }
    uint8_t *buf = exact(raw, 5);
    CHECK(pg_parse_header(buf, 5, 1 << 20, &type, &total) == PG_HDR_OK);
    CHECK(type == 'Q' && total == 10);
}

static void header_lengths(void)
{
    uint8_t raw[5] = {'D'};
    char type;
    uint32_t total;
    for (uint32_t l = 0; l < 4; l++) {
        be32(raw + 1, l);
        CHECK(pg_parse_header(raw, 5, 1 << 20, &type, &total) == PG_HDR_TOO_SHORT);
    }
    be32(raw + 1, 4); /* empty body */
    CHECK(pg_parse_header(raw, 5, 1 << 20, &type, &total) == PG_HDR_OK && total == 5 && type == 'D');
    be32(raw + 1, 1u << 20); /* exactly the maximum */
    CHECK(pg_parse_header(raw, 5, 1 << 20, &type, &total) == PG_HDR_OK && total == (1u << 20) + 1);
    be32(raw + 1, (1u << 20) + 1);
    CHECK(pg_parse_header(raw, 5, 1 << 20, &type, &total) == PG_HDR_TOO_LONG);
    be32(raw + 1, 100u * 1024 * 1024); /* "100 MB" with a 1 MB limit */
    CHECK(pg_parse_header(raw, 5, 1 << 20, &type, &total) == PG_HDR_TOO_LONG);
    be32(raw + 1, 0xffffffffu);
    CHECK(pg_parse_header(raw, 5, 0x40000000u, &type, &total) == PG_HDR_TOO_LONG);
}

static void header_total_never_wraps(void)
{
    /* With the largest possible maximum, a length of 0xffffffff must not come back as
     * OK with total = len + 1 wrapped to 0 (a caller would then consume nothing). */
    uint8_t raw[5] = {'d', 0xff, 0xff, 0xff, 0xff};
    char type;
    uint32_t total = 12345;
    pg_header_result r = pg_parse_header(raw, 5, UINT32_MAX, &type, &total);
    CHECK(r != PG_HDR_OK || total > 0xfffffffeu);
}

static void header_reports_extra_bytes_as_available(void)
{
    /* avail larger than the header: only the first five bytes matter. */
    static const uint8_t raw[] = {'Z', 0, 0, 0, 5, 'I', 'Q', 0, 0};
    char type;
    uint32_t total;
    CHECK(pg_parse_header(raw, sizeof raw, 1 << 20, &type, &total) == PG_HDR_OK && type == 'Z' && total == 6);
}

static void message_type_tables(void)
{
    const char *client = "QPBDECSHXFdcfp";
    for (const char *p = client; *p; p++)
        CHECK(pg_frontend_type_known(*p));
    CHECK(!pg_frontend_type_known('\0'));
    CHECK(!pg_frontend_type_known('Z'));
    CHECK(!pg_frontend_type_known('R'));
    CHECK(!pg_frontend_type_known('\x7f'));
    const char *server = "RSKZTDCEINA123nstGHWdcVv";
    for (const char *p = server; *p; p++)
        CHECK(pg_backend_type_known(*p));
    CHECK(!pg_backend_type_known('\0'));
    CHECK(!pg_backend_type_known('Q'));
    CHECK(!pg_backend_type_known('p'));
}

/* ---- startup parameters -------------------------------------------------------- */

static bool parse_params(const void *body, size_t len, pg_startup *out)
{
    return pg_parse_startup_params(exact(body, len), len, out);
}

static void startup_params_valid(void)
{
    static const char body[] = "user\0agent1\0database\0clinic\0application_name\0\0";
    pg_startup s;
    CHECK(parse_params(body, sizeof body, &s)); /* sizeof includes the final NUL: the terminator */
    CHECK(s.nparams == 3);
    CHECK(strcmp(pg_startup_get(&s, "user"), "agent1") == 0);
    CHECK(strcmp(pg_startup_get(&s, "database"), "clinic") == 0);
    CHECK(strcmp(pg_startup_get(&s, "application_name"), "") == 0);
    CHECK(pg_startup_get(&s, "options") == NULL);
    CHECK(pg_startup_get(&s, "USER") == NULL); /* names are case sensitive */
}

static void startup_params_empty_list(void)
{
    pg_startup s;
    CHECK(parse_params("", 1, &s) && s.nparams == 0);
    CHECK(!parse_params("", 0, &s)); /* not even the terminator */
}

static void startup_params_missing_terminator(void)
{
    static const char body[] = "user\0agent1\0"; /* no empty name at the end */
    pg_startup s;
    CHECK(!parse_params(body, sizeof body - 1, &s));
}

static void startup_params_unterminated_string(void)
{
    pg_startup s;
    CHECK(!parse_params("user\0agen", 9, &s)); /* value without NUL */
    CHECK(!parse_params("use", 3, &s));        /* name without NUL */
    CHECK(!parse_params("user", 5, &s));       /* name, then nothing for the value */
}

static void startup_params_bytes_after_terminator(void)
{
    static const char body[] = "user\0a\0\0junk";
    pg_startup s;
    CHECK(!parse_params(body, sizeof body - 1, &s));
}

static void startup_params_limit(void)
{
    char body[PG_MAX_STARTUP_PARAMS * 16 + 32];
    size_t n = 0;
    for (int i = 0; i < PG_MAX_STARTUP_PARAMS; i++)
        n += (size_t)sprintf(body + n, "p%d", i) + 1, n += (size_t)sprintf(body + n, "v%d", i) + 1;
    body[n] = '\0';
    pg_startup s;
    CHECK(parse_params(body, n + 1, &s) && s.nparams == PG_MAX_STARTUP_PARAMS);
    CHECK(strcmp(pg_startup_get(&s, "p63"), "v63") == 0);
    /* One more is too many. */
    size_t m = n;
    m += (size_t)sprintf(body + m, "px") + 1;
    m += (size_t)sprintf(body + m, "vx") + 1;
    body[m] = '\0';
    CHECK(!parse_params(body, m + 1, &s));
}

static void startup_get_returns_the_first_duplicate(void)
{
    static const char body[] = "user\0first\0user\0second\0\0";
    pg_startup s;
    CHECK(parse_params(body, sizeof body - 1, &s) && s.nparams == 2);
    CHECK(strcmp(pg_startup_get(&s, "user"), "first") == 0);
}

/* ---- error fields ---------------------------------------------------------------- */

static void error_fields_valid(void)
{
    static const char body[] = "SERROR\0C22012\0Mdivision by zero\0\0";
    uint8_t *buf = exact(body, sizeof body - 1);
    pg_error_fields e;
    size_t len = 0;
    CHECK(pg_parse_error_fields(buf, sizeof body - 1, &e));
    CHECK(e.n == 3);
    CHECK(strcmp(pg_error_field_get(&e, 'C', &len), "22012") == 0 && len == 5);
    CHECK(strcmp(pg_error_field_get(&e, 'M', NULL), "division by zero") == 0);
    CHECK(pg_error_field_get(&e, 'D', &len) == NULL);
}

static void error_fields_empty_and_truncated(void)
{
    pg_error_fields e;
    uint8_t zero = 0;
    CHECK(pg_parse_error_fields(&zero, 1, &e) && e.n == 0); /* just the terminator */
    CHECK(!pg_parse_error_fields(&zero, 0, &e));            /* nothing at all */
    static const char no_end[] = "SERROR\0C22012\0";        /* missing the final NUL */
    uint8_t *buf = exact(no_end, sizeof no_end - 1);
    CHECK(!pg_parse_error_fields(buf, sizeof no_end - 1, &e));
    static const char open_value[] = "SERROR\0Cdivis"; /* value without NUL */
    buf = exact(open_value, sizeof open_value - 1);
    CHECK(!pg_parse_error_fields(buf, sizeof open_value - 1, &e));
    static const char code_only[] = "S"; /* a code, then the end */
    buf = exact(code_only, 1);
    CHECK(!pg_parse_error_fields(buf, 1, &e));
}

static void error_fields_bytes_after_terminator(void)
{
    static const char body[] = "C0A000\0\0trailing";
    uint8_t *buf = exact(body, sizeof body - 1);
    pg_error_fields e;
    CHECK(!pg_parse_error_fields(buf, sizeof body - 1, &e));
}

static void error_fields_limit(void)
{
    char body[PG_MAX_ERROR_FIELDS * 4 + 8];
    size_t n = 0;
    for (int i = 0; i < PG_MAX_ERROR_FIELDS; i++)
        body[n++] = (char)('a' + i), body[n++] = 'v', body[n++] = '\0';
    body[n] = '\0';
    pg_error_fields e;
    CHECK(pg_parse_error_fields((uint8_t *)body, n + 1, &e) && e.n == PG_MAX_ERROR_FIELDS);
    body[n++] = 'Z', body[n++] = 'v', body[n++] = '\0', body[n] = '\0';
    CHECK(!pg_parse_error_fields((uint8_t *)body, n + 1, &e));
}

/* ---- builders, checked by the parsers -------------------------------------------------- */

static void built_error_parses_back(void)
{
    struct evbuffer *b = evbuffer_new();
    pg_put_error(b, "FATAL", "28P01", "password authentication failed for user \"x\"", NULL, "a hint");
    size_t n = evbuffer_get_length(b);
    uint8_t *msg = evbuffer_pullup(b, -1);
    char type;
    uint32_t total;
    CHECK(pg_parse_header(msg, n, 1 << 20, &type, &total) == PG_HDR_OK);
    CHECK(type == 'E' && total == n);
    pg_error_fields e;
    CHECK(pg_parse_error_fields(msg + PG_HEADER_LEN, n - PG_HEADER_LEN, &e));
    CHECK(strcmp(pg_error_field_get(&e, 'S', NULL), "FATAL") == 0);
    CHECK(strcmp(pg_error_field_get(&e, 'V', NULL), "FATAL") == 0);
    CHECK(strcmp(pg_error_field_get(&e, 'C', NULL), "28P01") == 0);
    CHECK(strcmp(pg_error_field_get(&e, 'H', NULL), "a hint") == 0);
    CHECK(pg_error_field_get(&e, 'D', NULL) == NULL); /* NULL detail: no field */
    evbuffer_free(b);
}

static void built_startup_parses_back(void)
{
    const pg_startup_param params[] = {{"user", "phigate_app"}, {"database", "clinic"}, {"TimeZone", "UTC"}};
    struct evbuffer *b = evbuffer_new();
    pg_put_startup(b, params, 3);
    size_t n = evbuffer_get_length(b);
    uint8_t *pkt = evbuffer_pullup(b, -1);
    uint32_t len, code;
    CHECK(pg_parse_startup_header(pkt, n, 10000, &len, &code) == PG_HDR_OK);
    CHECK(len == n && code == PG_PROTOCOL_3_0);
    pg_startup s;
    CHECK(pg_parse_startup_params(pkt + 8, n - 8, &s) && s.nparams == 3);
    CHECK(strcmp(pg_startup_get(&s, "TimeZone"), "UTC") == 0);
    evbuffer_free(b);
}

static void built_simple_messages(void)
{
    struct evbuffer *b = evbuffer_new();
    pg_put_ready(b, 'T');
    pg_put_query(b, "select 1", 8);
    pg_put_backend_key(b, 0x01020304u, 0xa0b0c0d0u);
    pg_put_param_status(b, "server_version", "15.0");
    pg_put_message(b, 'X', NULL, 0);
    size_t n = evbuffer_get_length(b);
    uint8_t *p = evbuffer_pullup(b, -1);
    static const uint8_t want[] = {
        'Z', 0, 0, 0, 5, 'T',
        'Q', 0, 0, 0, 13, 's', 'e', 'l', 'e', 'c', 't', ' ', '1', 0,
        'K', 0, 0, 0, 12, 1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0,
        'S', 0, 0, 0, 24, 's', 'e', 'r', 'v', 'e', 'r', '_', 'v', 'e', 'r', 's', 'i', 'o', 'n', 0, '1', '5', '.', '0', 0,
        'X', 0, 0, 0, 4,
    };
    CHECK(n == sizeof want && memcmp(p, want, n) == 0);
    /* Every message walks with pg_parse_header to the exact end. */
    size_t off = 0;
    int count = 0;
    while (off < n) {
        char type;
        uint32_t total;
        if (pg_parse_header(p + off, n - off, 1 << 20, &type, &total) != PG_HDR_OK || total > n - off)
            break;
        CHECK(pg_backend_type_known(type) || pg_frontend_type_known(type));
        off += total, count++;
    }
    CHECK(off == n && count == 5);
    evbuffer_free(b);
}

static void built_auth_messages(void)
{
    struct evbuffer *b = evbuffer_new();
    pg_put_auth_sasl(b, true);
    size_t n = evbuffer_get_length(b);
    uint8_t *p = evbuffer_pullup(b, -1);
    static const char plus[] = "R\0\0\0\x2aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";
    /* type, len = 4 + 4 + 19 + 14 + 1 = 42, code 10, two names, empty name */
    CHECK(n == 43);
    CHECK(p[0] == 'R' && p[4] == 42 && p[8] == 10);
    CHECK(memcmp(p + 9, plus + 5, 34) == 0 && p[42] == 0);
    evbuffer_drain(b, n);
    pg_put_auth_sasl(b, false);
    n = evbuffer_get_length(b);
    p = evbuffer_pullup(b, -1);
    CHECK(n == 1 + 4 + 4 + 14 + 1 && memcmp(p + 9, "SCRAM-SHA-256\0\0", 15) == 0);
    evbuffer_drain(b, n);
    pg_put_auth(b, 0, NULL, 0);
    static const uint8_t ok[] = {'R', 0, 0, 0, 8, 0, 0, 0, 0};
    CHECK(evbuffer_get_length(b) == sizeof ok && memcmp(evbuffer_pullup(b, -1), ok, sizeof ok) == 0);
    evbuffer_free(b);
}

static void built_negotiate_version(void)
{
    const char *const opts[] = {"_pq_.foo", "_pq_.bar"};
    struct evbuffer *b = evbuffer_new();
    pg_put_negotiate_version(b, 0, opts, 2);
    size_t n = evbuffer_get_length(b);
    uint8_t *p = evbuffer_pullup(b, -1);
    char type;
    uint32_t total;
    CHECK(pg_parse_header(p, n, 1 << 20, &type, &total) == PG_HDR_OK && type == 'v' && total == n);
    pg_cursor c;
    uint32_t version, count;
    const char *name;
    pg_cursor_init(&c, p + PG_HEADER_LEN, n - PG_HEADER_LEN);
    CHECK(pg_get_u32(&c, &version) && version == PG_PROTOCOL_3_0);
    CHECK(pg_get_u32(&c, &count) && count == 2);
    CHECK(pg_get_cstring(&c, &name, NULL) && strcmp(name, "_pq_.foo") == 0);
    CHECK(pg_get_cstring(&c, &name, NULL) && strcmp(name, "_pq_.bar") == 0);
    CHECK(pg_cursor_left(&c) == 0);
    evbuffer_free(b);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines survive a sanitizer abort */
    RUN(cursor_integers_read_big_endian);
    RUN(cursor_getters_fail_at_the_end_without_moving);
    RUN(cursor_bytes_exact_and_one_too_many);
    RUN(cursor_cstrings);
    RUN(startup_header_needs_eight_bytes);
    RUN(startup_header_lengths);
    RUN(startup_header_special_codes);
    RUN(header_needs_five_bytes);
    RUN(header_lengths);
    RUN(header_total_never_wraps);
    RUN(header_reports_extra_bytes_as_available);
    RUN(message_type_tables);
    RUN(startup_params_valid);
    RUN(startup_params_empty_list);
    RUN(startup_params_missing_terminator);
    RUN(startup_params_unterminated_string);
    RUN(startup_params_bytes_after_terminator);
    RUN(startup_params_limit);
    RUN(startup_get_returns_the_first_duplicate);
    RUN(error_fields_valid);
    RUN(error_fields_empty_and_truncated);
    RUN(error_fields_bytes_after_terminator);
    RUN(error_fields_limit);
    RUN(built_error_parses_back);
    RUN(built_startup_parses_back);
    RUN(built_simple_messages);
    RUN(built_auth_messages);
    RUN(built_negotiate_version);
    /* Last: under UBSan a failure here aborts the binary, so it must not hide the others. */
    RUN(cursor_on_an_empty_buffer);
    printf("%d passed, %d failed\n", tests_passed, tests_failed);
    return tests_failed ? 1 : 0;
}
