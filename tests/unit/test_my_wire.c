/*
 * Unit tests for myfront/my_wire.h: the bounds-checked cursor, length-encoded
 * integers, the chain walker for 16 MB continuation packets, the packet
 * builders (checked by parsing what they build), every parser against
 * truncation, and the authentication crypto against vectors computed
 * independently (Python hashlib).
 *
 * Prints one line per failed check, then "N passed, N failed" (tests, not
 * checks); exits non-zero if anything failed.
 */
#include <event2/buffer.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "myfront/my_wire.h"

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

/* A heap copy of exactly n bytes, so ASan catches any read past its end. */
static uint8_t *owned[512];
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

/* Parsers are warn_unused_result: tests that only probe for crashes count the answers. */
static volatile int sink;
#define PROBE(call) (sink += (int)(call))

static void free_owned(void)
{
    while (nowned)
        free(owned[--nowned]);
}

/* The payload of the single packet in b (header checked), as an exact copy. */
static uint8_t *one_payload(struct evbuffer *b, size_t *len, uint8_t *seq)
{
    uint8_t hdr[MY_HEADER_LEN];
    uint32_t l;
    if (evbuffer_remove(b, hdr, sizeof hdr) != (int)sizeof hdr)
        return NULL;
    my_parse_header(hdr, &l, seq);
    *len = l;
    uint8_t *p = malloc(l ? l : 1);
    evbuffer_remove(b, p, l);
    uint8_t *e = exact(p, l);
    free(p);
    return e;
}

static void hex(const char *h, uint8_t *out)
{
    for (size_t i = 0; h[2 * i]; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

/* ---- cursor ------------------------------------------------------------------- */

static void test_cursor_fixed_ints(void)
{
    static const uint8_t d[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09};
    my_cursor c;
    uint8_t u8;
    uint16_t u16;
    uint32_t u24, u32;
    uint64_t u64;
    my_cursor_init(&c, exact(d, sizeof d), sizeof d);
    CHECK(my_get_u8(&c, &u8) && u8 == 0x01);
    CHECK(my_get_u16(&c, &u16) && u16 == 0x0302);
    CHECK(my_get_u24(&c, &u24) && u24 == 0x060504);
    CHECK(my_cursor_left(&c) == 3);
    CHECK(!my_get_u32(&c, &u32)); /* 3 left: fails and stays */
    CHECK(c.pos == 6);
    CHECK(!my_get_u64(&c, &u64));
    CHECK(my_get_u24(&c, &u24) && u24 == 0x090807);
    CHECK(!my_get_u8(&c, &u8));
    my_cursor_init(&c, exact(d, 8), 8);
    CHECK(my_get_u64(&c, &u64) && u64 == 0x0807060504030201ull);
}

static void test_cursor_strings(void)
{
    static const uint8_t d[] = {'a', 'b', 0, 'c'};
    my_cursor c;
    const char *s;
    size_t n;
    my_cursor_init(&c, exact(d, sizeof d), sizeof d);
    CHECK(my_get_cstring(&c, &s, &n) && n == 2 && strcmp(s, "ab") == 0);
    CHECK(!my_get_cstring(&c, &s, &n)); /* "c" has no NUL inside the buffer */
    CHECK(c.pos == 3);
    const uint8_t *rest;
    my_get_rest(&c, &rest, &n);
    CHECK(n == 1 && rest[0] == 'c' && my_cursor_left(&c) == 0);
}

static void test_lenenc_forms(void)
{
    static const struct {
        uint8_t b[9];
        size_t n;
        uint64_t v;
    } ok[] = {
        {{0x00}, 1, 0},
        {{0xfa}, 1, 250},
        {{0xfc, 0xfb, 0x00}, 3, 251},
        {{0xfc, 0xff, 0xff}, 3, 0xffff},
        {{0xfd, 0x00, 0x00, 0x01}, 4, 0x10000},
        {{0xfe, 1, 2, 3, 4, 5, 6, 7, 8}, 9, 0x0807060504030201ull},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        my_cursor c;
        uint64_t v;
        my_cursor_init(&c, exact(ok[i].b, ok[i].n), ok[i].n);
        CHECK(my_get_lenenc(&c, &v) && v == ok[i].v && my_cursor_left(&c) == 0);
        /* Every truncation fails and leaves the cursor alone. */
        for (size_t cut = 0; cut < ok[i].n; cut++) {
            my_cursor_init(&c, exact(ok[i].b, cut), cut);
            CHECK(!my_get_lenenc(&c, &v) && c.pos == 0);
        }
    }
    /* 0xfb (NULL) and 0xff (ERR) are never integers. */
    static const uint8_t nul[] = {0xfb}, err[] = {0xff, 0, 0};
    my_cursor c;
    uint64_t v;
    my_cursor_init(&c, exact(nul, 1), 1);
    CHECK(!my_get_lenenc(&c, &v));
    my_cursor_init(&c, exact(err, 3), 3);
    CHECK(!my_get_lenenc(&c, &v));
    CHECK(my_lenenc_size(0xfa) == 1 && my_lenenc_size(0xfc) == 3 && my_lenenc_size(0xfd) == 4 &&
          my_lenenc_size(0xfe) == 9 && my_lenenc_size(0xfb) == 0 && my_lenenc_size(0xff) == 0);
}

static void test_lenenc_roundtrip(void)
{
    static const uint64_t vals[] = {0, 1, 250, 251, 0xffff, 0x10000, 0xffffff, 0x1000000, UINT64_MAX};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        uint8_t b[9];
        size_t n = my_encode_lenenc(b, vals[i]);
        my_cursor c;
        uint64_t v;
        my_cursor_init(&c, exact(b, n), n);
        CHECK(my_get_lenenc(&c, &v) && v == vals[i] && my_cursor_left(&c) == 0);
        CHECK(n == my_lenenc_size(b[0]));
    }
}

static void test_lenenc_strings(void)
{
    static const uint8_t good[] = {3, 'a', 'b', 'c', 0xfb};
    my_cursor c;
    const uint8_t *s;
    size_t n;
    bool is_null;
    my_cursor_init(&c, exact(good, sizeof good), sizeof good);
    CHECK(my_get_text_value(&c, &s, &n, &is_null) && !is_null && n == 3 && memcmp(s, "abc", 3) == 0);
    CHECK(my_get_text_value(&c, &s, &n, &is_null) && is_null && s == NULL);
    CHECK(my_cursor_left(&c) == 0);
    /* A claimed length past the end fails before any conversion, cursor untouched. */
    static const uint8_t shortstr[] = {4, 'a', 'b'};
    my_cursor_init(&c, exact(shortstr, sizeof shortstr), sizeof shortstr);
    CHECK(!my_get_lenenc_str(&c, &s, &n) && c.pos == 0);
    /* 2^64-1 claimed: no overflow, just a failure. */
    static const uint8_t huge[] = {0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 'x'};
    my_cursor_init(&c, exact(huge, sizeof huge), sizeof huge);
    CHECK(!my_get_lenenc_str(&c, &s, &n) && c.pos == 0);
}

/* ---- framing ------------------------------------------------------------------- */

static void header(uint8_t h[4], uint32_t len, uint8_t seq)
{
    h[0] = (uint8_t)len, h[1] = (uint8_t)(len >> 8), h[2] = (uint8_t)(len >> 16), h[3] = seq;
}

static void test_header_parse(void)
{
    uint8_t h[4];
    uint32_t len;
    uint8_t seq;
    header(h, 0x123456, 7);
    my_parse_header(h, &len, &seq);
    CHECK(len == 0x123456 && seq == 7);
    header(h, MY_MAX_PACKET, 255);
    my_parse_header(h, &len, &seq);
    CHECK(len == 0xffffff && seq == 255);
}

static void test_chain_single_and_continued(void)
{
    my_chain ch;
    uint8_t h[4];
    my_chain_init(&ch, 64 << 20, true, 0);
    header(h, 10, 0);
    CHECK(my_chain_step(&ch, h) == MY_CHAIN_DONE && ch.payload == 10 && ch.npackets == 1);
    my_chain_init(&ch, 64 << 20, true, 3);
    header(h, MY_MAX_PACKET, 3);
    CHECK(my_chain_step(&ch, h) == MY_CHAIN_MORE);
    header(h, MY_MAX_PACKET, 4);
    CHECK(my_chain_step(&ch, h) == MY_CHAIN_MORE);
    header(h, 0, 5); /* a payload of exactly 2 x 0xffffff ends with an empty packet */
    CHECK(my_chain_step(&ch, h) == MY_CHAIN_DONE && ch.payload == 2ull * MY_MAX_PACKET && ch.npackets == 3);
    /* Ids wrap at 256. */
    my_chain_init(&ch, 64 << 20, true, 255);
    header(h, MY_MAX_PACKET, 255);
    CHECK(my_chain_step(&ch, h) == MY_CHAIN_MORE);
    header(h, 1, 0);
    CHECK(my_chain_step(&ch, h) == MY_CHAIN_DONE);
}

static void test_chain_limits(void)
{
    my_chain ch;
    uint8_t h[4];
    /* One header claiming more than the maximum is refused on sight. */
    my_chain_init(&ch, 1024, true, 0);
    header(h, 1025, 0);
    CHECK(my_chain_step(&ch, h) == MY_CHAIN_TOO_LONG);
    my_chain_init(&ch, 1024, true, 0);
    header(h, 1024, 0);
    CHECK(my_chain_step(&ch, h) == MY_CHAIN_DONE);
    /* 16 MB claimed again and again: refused at the packet that crosses the max. */
    my_chain_init(&ch, 40u << 20, true, 0);
    header(h, MY_MAX_PACKET, 0);
    CHECK(my_chain_step(&ch, h) == MY_CHAIN_MORE);
    header(h, MY_MAX_PACKET, 1);
    CHECK(my_chain_step(&ch, h) == MY_CHAIN_MORE);
    header(h, MY_MAX_PACKET, 2);
    CHECK(my_chain_step(&ch, h) == MY_CHAIN_TOO_LONG);
    /* Out of order. */
    my_chain_init(&ch, 1 << 20, true, 0);
    header(h, 5, 1);
    CHECK(my_chain_step(&ch, h) == MY_CHAIN_BAD_SEQ);
    my_chain_init(&ch, 64 << 20, true, 0);
    header(h, MY_MAX_PACKET, 0);
    CHECK(my_chain_step(&ch, h) == MY_CHAIN_MORE);
    header(h, 5, 2);
    CHECK(my_chain_step(&ch, h) == MY_CHAIN_BAD_SEQ);
    /* Without check_seq the first id is taken as given, the rest must follow it. */
    my_chain_init(&ch, 64 << 20, false, 0);
    header(h, MY_MAX_PACKET, 9);
    CHECK(my_chain_step(&ch, h) == MY_CHAIN_MORE);
    header(h, 1, 9);
    CHECK(my_chain_step(&ch, h) == MY_CHAIN_BAD_SEQ);
}

static void test_put_packet_splits(void)
{
    size_t n = MY_MAX_PACKET + 10;
    uint8_t *payload = malloc(n);
    for (size_t i = 0; i < n; i++)
        payload[i] = (uint8_t)(i * 7);
    struct evbuffer *b = evbuffer_new();
    CHECK(my_put_packet(b, 4, payload, n) == 5);
    size_t wire = evbuffer_get_length(b);
    CHECK(wire == n + 2 * MY_HEADER_LEN);
    uint8_t *w = malloc(wire);
    evbuffer_remove(b, w, wire);
    uint32_t len;
    uint8_t seq;
    my_parse_header(w, &len, &seq);
    CHECK(len == MY_MAX_PACKET && seq == 4);
    my_parse_header(w + MY_HEADER_LEN + MY_MAX_PACKET, &len, &seq);
    CHECK(len == 10 && seq == 5);
    /* The chain walker agrees, and reassembly gives the payload back. */
    my_chain ch;
    my_chain_init(&ch, 32u << 20, true, 4);
    CHECK(my_chain_step(&ch, w) == MY_CHAIN_MORE);
    CHECK(my_chain_step(&ch, w + MY_HEADER_LEN + MY_MAX_PACKET) == MY_CHAIN_DONE && ch.payload == n);
    uint8_t *back = malloc(n);
    my_chain_payload(w, wire, back);
    CHECK(memcmp(back, payload, n) == 0);
    /* Exactly 0xffffff bytes: a full packet and an empty one. */
    my_put_packet(b, 0, payload, MY_MAX_PACKET);
    CHECK(evbuffer_get_length(b) == MY_MAX_PACKET + 2 * MY_HEADER_LEN);
    free(back), free(w), free(payload);
    evbuffer_free(b);
}

/* ---- builders and parsers ---------------------------------------------------------- */

static void test_handshake_v10_roundtrip(void)
{
    uint8_t scramble[MY_SCRAMBLE_LEN];
    for (int i = 0; i < 20; i++)
        scramble[i] = (uint8_t)(i + 33);
    my_handshake_params p = {"5.5.5-10.11.19-MariaDB-phigate", 0x01020304, scramble,
                             MY_CAP(PROTOCOL_41) | MY_CAP(SECURE_CONNECTION) | MY_CAP(PLUGIN_AUTH) | MY_CAP(SSL) |
                                 MY_CAP(DEPRECATE_EOF),
                             45, MY_STATUS_AUTOCOMMIT, "caching_sha2_password"};
    struct evbuffer *b = evbuffer_new();
    my_put_handshake_v10(b, &p);
    size_t len;
    uint8_t seq;
    uint8_t *pl = one_payload(b, &len, &seq);
    my_server_handshake h;
    CHECK(seq == 0);
    CHECK(my_parse_server_handshake(pl, len, &h));
    CHECK(h.protocol == 10 && strcmp(h.version, p.server_version) == 0 && h.connection_id == 0x01020304);
    CHECK(h.scramble_len == 20 && memcmp(h.scramble, scramble, 20) == 0);
    CHECK(h.capabilities == p.capabilities && h.charset == 45 && h.status == MY_STATUS_AUTOCOMMIT);
    CHECK(h.plugin && h.plugin_len == 21 && memcmp(h.plugin, "caching_sha2_password", 21) == 0);
    for (size_t cut = 0; cut < len; cut++) {
        my_server_handshake t;
        PROBE(my_parse_server_handshake(exact(pl, cut), cut, &t)); /* never reads past cut */
    }
    evbuffer_free(b);
}

static uint8_t *login_payload(const my_client_login *l, size_t *len)
{
    struct evbuffer *b = evbuffer_new();
    uint8_t seq;
    my_put_handshake_response(b, 1, l);
    uint8_t *p = one_payload(b, len, &seq);
    evbuffer_free(b);
    return p;
}

static void test_handshake_response_roundtrip(void)
{
    static const uint8_t auth[20] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
    uint32_t caps = MY_CAP(PROTOCOL_41) | MY_CAP(SECURE_CONNECTION) | MY_CAP(PLUGIN_AUTH) |
                    MY_CAP(PLUGIN_AUTH_LENENC_DATA) | MY_CAP(CONNECT_WITH_DB);
    my_client_login l = {caps, 1 << 24, 45, "agent1", auth, sizeof auth, "clinic", "mysql_native_password"};
    size_t len;
    uint8_t *p = login_payload(&l, &len);
    my_handshake_response r;
    CHECK(my_parse_handshake_response(p, len, &r) == MY_HR_OK);
    CHECK(!r.ssl_request && r.capabilities == caps && r.max_packet == (1u << 24) && r.charset == 45);
    CHECK(r.user_len == 6 && memcmp(r.user, "agent1", 6) == 0);
    CHECK(r.auth_len == 20 && memcmp(r.auth, auth, 20) == 0);
    CHECK(r.database && r.database_len == 6 && memcmp(r.database, "clinic", 6) == 0);
    CHECK(r.plugin && strcmp(r.plugin, "mysql_native_password") == 0);
    /* 1-byte auth length (SECURE_CONNECTION without LENENC), no database. */
    l.capabilities = caps & ~(MY_CAP(PLUGIN_AUTH_LENENC_DATA) | MY_CAP(CONNECT_WITH_DB));
    p = login_payload(&l, &len);
    CHECK(my_parse_handshake_response(p, len, &r) == MY_HR_OK && r.auth_len == 20 && !r.database);
    /* A truncation never parses into something longer than what is there. */
    for (size_t cut = 33; cut < len; cut++) {
        my_hr_result res = my_parse_handshake_response(exact(p, cut), cut, &r);
        CHECK(res != MY_HR_OK || (r.plugin == NULL || (const uint8_t *)r.plugin + r.plugin_len <= p + len));
    }
}

static void test_ssl_request_and_refusals(void)
{
    struct evbuffer *b = evbuffer_new();
    size_t len;
    uint8_t seq;
    my_put_ssl_request(b, 1, MY_CAP(PROTOCOL_41) | MY_CAP(SSL), 1 << 24, 45);
    uint8_t *p = one_payload(b, &len, &seq);
    my_handshake_response r;
    CHECK(len == MY_SSL_REQUEST_LEN && seq == 1);
    CHECK(my_parse_handshake_response(p, len, &r) == MY_HR_OK && r.ssl_request);
    /* 32 bytes without CLIENT_SSL is not a request for anything. */
    my_put_ssl_request(b, 1, MY_CAP(PROTOCOL_41), 1 << 24, 45);
    p = one_payload(b, &len, &seq);
    CHECK(my_parse_handshake_response(p, len, &r) == MY_HR_MALFORMED);
    /* The 3.20 protocol. */
    my_put_ssl_request(b, 1, MY_CAP(SSL), 1 << 24, 45);
    p = one_payload(b, &len, &seq);
    CHECK(my_parse_handshake_response(p, len, &r) == MY_HR_OLD_PROTOCOL);
    /* A user name longer than phigate keeps. */
    char user[MY_MAX_USER + 10];
    memset(user, 'u', sizeof user - 1);
    user[sizeof user - 1] = 0;
    my_client_login l = {MY_CAP(PROTOCOL_41) | MY_CAP(SECURE_CONNECTION), 0, 45, user, NULL, 0, NULL, NULL};
    p = login_payload(&l, &len);
    CHECK(my_parse_handshake_response(p, len, &r) == MY_HR_TOO_LONG);
    /* Auth length byte that claims more than follows. */
    uint8_t bad[32 + 3 + 2] = {0};
    bad[0] = 0x00, bad[1] = 0x82; /* PROTOCOL_41 | SECURE_CONNECTION */
    bad[32] = 'u', bad[33] = 0, bad[34] = 200, bad[35] = 'x', bad[36] = 'y';
    CHECK(my_parse_handshake_response(exact(bad, sizeof bad), sizeof bad, &r) == MY_HR_MALFORMED);
    evbuffer_free(b);
}

static void test_connect_attrs(void)
{
    uint8_t p[64] = {0};
    size_t n = 32;
    uint32_t caps = MY_CAP(PROTOCOL_41) | MY_CAP(SECURE_CONNECTION) | MY_CAP(PLUGIN_AUTH) | MY_CAP(CONNECT_ATTRS);
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(caps >> (8 * i));
    p[n++] = 'u', p[n++] = 0;                 /* user */
    p[n++] = 0;                               /* empty auth */
    memcpy(p + n, "x\0", 2), n += 2;          /* plugin */
    p[n++] = 6, p[n++] = 2, p[n++] = 'k', p[n++] = 'k', p[n++] = 2, p[n++] = 'v', p[n++] = 'v';
    my_handshake_response r;
    CHECK(my_parse_handshake_response(exact(p, n), n, &r) == MY_HR_OK);
    p[n - 3] = 9; /* a value length that runs past the attributes */
    CHECK(my_parse_handshake_response(exact(p, n), n, &r) == MY_HR_MALFORMED);
}

static void test_ok_err_eof(void)
{
    struct evbuffer *b = evbuffer_new();
    size_t len;
    uint8_t seq;
    my_put_ok(b, 3, 0x00, 300, 70000, MY_STATUS_AUTOCOMMIT | MY_STATUS_MORE_RESULTS, 2, "Rows matched: 1", 15);
    uint8_t *p = one_payload(b, &len, &seq);
    my_ok ok;
    CHECK(seq == 3 && my_parse_ok(p, len, 0, &ok));
    CHECK(ok.header == 0 && ok.affected_rows == 300 && ok.insert_id == 70000 && ok.warnings == 2);
    CHECK(ok.status == (MY_STATUS_AUTOCOMMIT | MY_STATUS_MORE_RESULTS));
    /* With session tracking the info is a lenenc string. */
    CHECK(my_parse_ok(p, len, MY_CAP(SESSION_TRACK), &ok) && ok.info_len == 15 &&
          memcmp(ok.info, "Rows matched: 1", 15) == 0);
    for (size_t cut = 0; cut < 7; cut++)
        CHECK(!my_parse_ok(exact(p, cut), cut, 0, &ok));
    my_put_err(b, 1, 1142, "42000", "refused");
    p = one_payload(b, &len, &seq);
    my_err e;
    CHECK(my_parse_err(p, len, &e) && e.code == 1142 && strcmp(e.sqlstate, "42000") == 0 && e.message_len == 7 &&
          memcmp(e.message, "refused", 7) == 0);
    /* Pre-4.1 shape: no '#', state defaults to HY000. */
    static const uint8_t old[] = {0xff, 0x15, 0x04, 'n', 'o'};
    CHECK(my_parse_err(exact(old, sizeof old), sizeof old, &e) && e.code == 1045 && strcmp(e.sqlstate, "HY000") == 0);
    CHECK(!my_parse_err(exact(old, 2), 2, &e));
    my_put_eof(b, 9, 1, MY_STATUS_MORE_RESULTS);
    p = one_payload(b, &len, &seq);
    uint16_t w, st;
    CHECK(len == 5 && my_parse_eof(p, len, &w, &st) && w == 1 && st == MY_STATUS_MORE_RESULTS);
    evbuffer_free(b);
}

static void test_session_state(void)
{
    /* OK with SESSION_STATE_CHANGED: schema "bench", sql_mode = ANSI_QUOTES. */
    uint8_t p[128];
    size_t n = 0;
    p[n++] = 0x00, p[n++] = 0, p[n++] = 0;
    p[n++] = 0x02, p[n++] = 0x40; /* AUTOCOMMIT | SESSION_STATE_CHANGED */
    p[n++] = 0, p[n++] = 0;
    p[n++] = 0; /* empty info */
    uint8_t st[64];
    size_t sn = 0;
    st[sn++] = MY_TRACK_SCHEMA, st[sn++] = 6, st[sn++] = 5;
    memcpy(st + sn, "bench", 5), sn += 5;
    st[sn++] = MY_TRACK_SYSTEM_VARIABLES, st[sn++] = 21, st[sn++] = 8;
    memcpy(st + sn, "sql_mode", 8), sn += 8;
    st[sn++] = 11;
    memcpy(st + sn, "ANSI_QUOTES", 11), sn += 11;
    st[sn++] = 4, st[sn++] = 1, st[sn++] = 0; /* a kind phigate skips */
    p[n++] = (uint8_t)sn;
    memcpy(p + n, st, sn), n += sn;
    my_ok ok;
    CHECK(my_parse_ok(exact(p, n), n, MY_CAP(SESSION_TRACK), &ok) && ok.state_len == sn);
    my_cursor c;
    my_state_change ch;
    bool bad;
    my_cursor_init(&c, ok.state, ok.state_len);
    CHECK(my_next_state_change(&c, &ch, &bad) && ch.type == MY_TRACK_SCHEMA && ch.name_len == 5 &&
          memcmp(ch.name, "bench", 5) == 0);
    CHECK(my_next_state_change(&c, &ch, &bad) && ch.type == MY_TRACK_SYSTEM_VARIABLES && ch.name_len == 8 &&
          ch.value_len == 11 && memcmp(ch.value, "ANSI_QUOTES", 11) == 0);
    CHECK(my_next_state_change(&c, &ch, &bad) && ch.type == 4);
    CHECK(!my_next_state_change(&c, &ch, &bad) && !bad);
    /* A variable entry whose value runs past its data. */
    st[10] = 30;
    my_cursor_init(&c, exact(st, sn), sn);
    CHECK(my_next_state_change(&c, &ch, &bad));
    CHECK(!my_next_state_change(&c, &ch, &bad) && bad);
    /* Trailing bytes after the state are malformed. */
    p[n++] = 0x99;
    CHECK(!my_parse_ok(exact(p, n), n, MY_CAP(SESSION_TRACK), &ok));
}

static void test_terminators(void)
{
    CHECK(my_is_terminator(0xfe, 5, false));
    CHECK(!my_is_terminator(0xfe, 9, false));          /* a row with an 8-byte length */
    CHECK(my_is_terminator(0xfe, 40, true));           /* an OK under DEPRECATE_EOF */
    CHECK(!my_is_terminator(0xfe, MY_MAX_PACKET, true)); /* a row over 16 MB */
    CHECK(!my_is_terminator(0x00, 5, true));
}

static size_t put_lenenc_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s);
    p[0] = (uint8_t)n;
    memcpy(p + 1, s, n);
    return n + 1;
}

static void test_column_def(void)
{
    uint8_t p[128];
    size_t n = 0;
    n += put_lenenc_str(p + n, "def");
    n += put_lenenc_str(p + n, "clinic");
    n += put_lenenc_str(p + n, "p");
    n += put_lenenc_str(p + n, "patients");
    n += put_lenenc_str(p + n, "s");
    n += put_lenenc_str(p + n, "ssn");
    p[n++] = 0x0c;
    p[n++] = 45, p[n++] = 0;                                 /* charset */
    p[n++] = 44, p[n++] = 0, p[n++] = 0, p[n++] = 0;         /* length */
    p[n++] = 0xfd;                                           /* VAR_STRING */
    p[n++] = 0x01, p[n++] = 0x10;                            /* flags */
    p[n++] = 0;                                              /* decimals */
    p[n++] = 0, p[n++] = 0;                                  /* filler */
    my_column_def d;
    CHECK(my_parse_column_def(exact(p, n), n, &d));
    CHECK(d.schema_len == 6 && memcmp(d.schema, "clinic", 6) == 0 && d.org_table_len == 8 &&
          memcmp(d.org_table, "patients", 8) == 0 && d.name_len == 1 && d.org_name_len == 3 &&
          memcmp(d.org_name, "ssn", 3) == 0);
    CHECK(d.charset == 45 && d.length == 44 && d.type == 0xfd && d.flags == 0x1001 && d.decimals == 0);
    for (size_t cut = 0; cut < n - 2; cut++)
        CHECK(!my_parse_column_def(exact(p, cut), cut, &d));
    p[n - 13] = 0x40; /* fixed part claims more than is there */
    CHECK(!my_parse_column_def(exact(p, n), n, &d));
}

static void test_prepare_ok(void)
{
    static const uint8_t p[] = {0x00, 0x07, 0, 0, 0, 0x03, 0x00, 0x02, 0x00, 0x00, 0x01, 0x00};
    my_prepare_ok ok;
    CHECK(my_parse_prepare_ok(exact(p, sizeof p), sizeof p, &ok));
    CHECK(ok.statement_id == 7 && ok.columns == 3 && ok.params == 2 && ok.warnings == 1);
    CHECK(my_parse_prepare_ok(exact(p, 9), 9, &ok) && ok.warnings == 0);
    CHECK(!my_parse_prepare_ok(exact(p, 8), 8, &ok));
    static const uint8_t err[] = {0xff, 0, 0};
    CHECK(!my_parse_prepare_ok(exact(err, 3), 3, &ok));
}

static void test_binary_values(void)
{
    static const struct {
        uint8_t type;
        uint8_t b[12];
        size_t n;
    } ok[] = {
        {MY_TYPE_TINY, {1}, 1},
        {MY_TYPE_SHORT, {1, 2}, 2},
        {MY_TYPE_YEAR, {0xe8, 0x07}, 2},
        {MY_TYPE_LONG, {1, 2, 3, 4}, 4},
        {MY_TYPE_FLOAT, {1, 2, 3, 4}, 4},
        {MY_TYPE_LONGLONG, {1, 2, 3, 4, 5, 6, 7, 8}, 8},
        {MY_TYPE_DOUBLE, {1, 2, 3, 4, 5, 6, 7, 8}, 8},
        {MY_TYPE_DATE, {4, 0xe8, 0x07, 2, 3}, 5},
        {MY_TYPE_DATETIME, {0}, 1},
        {MY_TYPE_TIME, {8, 0, 0, 0, 0, 0, 1, 2, 3}, 9},
        {0xfd, {3, 'a', 'b', 'c'}, 4},
        {0xf6, {4, '1', '.', '5', '0'}, 5},
        {MY_TYPE_NULL, {0}, 0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        my_cursor c;
        my_cursor_init(&c, exact(ok[i].b, ok[i].n), ok[i].n);
        CHECK(my_skip_binary_value(&c, ok[i].type) && my_cursor_left(&c) == 0);
        if (ok[i].n > 0) {
            my_cursor_init(&c, exact(ok[i].b, ok[i].n - 1), ok[i].n - 1);
            CHECK(!my_skip_binary_value(&c, ok[i].type) && c.pos == 0);
        }
    }
    my_cursor c;
    static const uint8_t x[] = {1, 2, 3};
    my_cursor_init(&c, exact(x, 3), 3);
    CHECK(!my_skip_binary_value(&c, 0x20)); /* a type phigate does not know */
}

static void test_auth_switch_more(void)
{
    struct evbuffer *b = evbuffer_new();
    size_t len;
    uint8_t seq;
    my_put_auth_switch(b, 2, "mysql_native_password", "01234567890123456789", 21);
    uint8_t *p = one_payload(b, &len, &seq);
    CHECK(seq == 2 && p[0] == 0xfe && len == 1 + 22 + 21 && strcmp((char *)p + 1, "mysql_native_password") == 0);
    static const uint8_t full = 4;
    my_put_auth_more(b, 3, &full, 1);
    p = one_payload(b, &len, &seq);
    CHECK(seq == 3 && len == 2 && p[0] == 0x01 && p[1] == 0x04);
    evbuffer_free(b);
}

/* ---- authentication ---------------------------------------------------------------------- */

static void test_native_password(void)
{
    uint8_t scramble[20], stored[20], want[20], resp[20];
    for (int i = 0; i < 20; i++)
        scramble[i] = (uint8_t)(i + 1);
    hex("8e6fc3b9ecc6dece1fba19b0b61b30bf4864720f", stored);
    hex("c74ed4517133a44c3dc01a386280abfe5af49171", want);
    size_t n;
    my_native_response("s3cret-Pw", scramble, resp, &n);
    CHECK(n == 20 && memcmp(resp, want, 20) == 0);
    CHECK(my_native_verify(stored, scramble, resp, 20));
    resp[0] ^= 1;
    CHECK(!my_native_verify(stored, scramble, resp, 20));
    resp[0] ^= 1;
    CHECK(!my_native_verify(stored, scramble, resp, 19));
    CHECK(!my_native_verify(stored, scramble, resp, 0));
    scramble[0]++;
    CHECK(!my_native_verify(stored, scramble, resp, 20)); /* replayed against another scramble */
    my_native_response("", scramble, resp, &n);
    CHECK(n == 0);
}

static void test_sha2_response(void)
{
    uint8_t scramble[20], want[32], resp[32];
    for (int i = 0; i < 20; i++)
        scramble[i] = (uint8_t)(i + 1);
    hex("e342e270242729b005da31d56d2f87c7d3827435e3ff6639a6e815b78064b0d4", want);
    size_t n;
    my_sha2_response("s3cret-Pw", scramble, resp, &n);
    CHECK(n == 32 && memcmp(resp, want, 32) == 0);
}

static void test_scram_password(void)
{
    uint8_t stored[32];
    hex("c944819831ea7fe4c1e2db8916b307cfd5b10b2110d4e92336dbbf1de7597fa8", stored);
    const uint8_t *salt = (const uint8_t *)"0123456789abcdef";
    CHECK(my_scram_password_ok("s3cret-Pw", 9, salt, 16, 4096, stored));
    CHECK(!my_scram_password_ok("s3cret-Pw!", 10, salt, 16, 4096, stored));
    CHECK(!my_scram_password_ok("s3cret-P", 8, salt, 16, 4096, stored));
    CHECK(!my_scram_password_ok("s3cret-Pw", 9, salt, 16, 4095, stored));
    CHECK(!my_scram_password_ok("s3cret-Pw", 9, salt, 16, 0, stored));
}

static void test_names(void)
{
    char buf[256], n[12];
    CHECK(strcmp(my_caps_string(MY_CAP(PROTOCOL_41) | MY_CAP(SSL), buf, sizeof buf), "PROTOCOL_41|SSL") == 0);
    CHECK(strcmp(my_caps_string(0, buf, sizeof buf), "") == 0);
    my_caps_string(0xffffffffu, buf, 20); /* truncates, never overflows */
    CHECK(strlen(buf) < 20);
    CHECK(strcmp(my_command_name(MY_COM_QUERY, n), "COM_QUERY") == 0);
    CHECK(strcmp(my_command_name(0x42, n), "COM_0x42") == 0);
    CHECK(MY_CAP(DEPRECATE_EOF) == 0x01000000u && MY_CAP(REMEMBER_OPTIONS) == 0x80000000u);
}

/* Random bytes into every parser: nothing may read out of bounds (ASan) or crash. */
static void test_random_input(void)
{
    uint32_t x = 12345;
    for (int iter = 0; iter < 20000; iter++) {
        uint8_t buf[96];
        size_t n = (size_t)(iter % 96);
        for (size_t i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            buf[i] = (uint8_t)(x >> 16);
        }
        if (n > 0 && iter % 3 == 0)
            buf[0] = (uint8_t)(iter % 4 == 0 ? 0x00 : 0xfe);
        uint8_t *p = exact(buf, n);
        my_handshake_response r;
        my_server_handshake h;
        my_ok ok;
        my_err e;
        my_column_def d;
        my_prepare_ok po;
        uint16_t w, st;
        PROBE(my_parse_handshake_response(p, n, &r));
        PROBE(my_parse_server_handshake(p, n, &h));
        if (my_parse_ok(p, n, MY_CAP(SESSION_TRACK), &ok) && ok.state) {
            my_cursor c;
            my_state_change ch;
            bool bad;
            my_cursor_init(&c, ok.state, ok.state_len);
            while (my_next_state_change(&c, &ch, &bad))
                ;
        }
        PROBE(my_parse_err(p, n, &e));
        PROBE(my_parse_eof(p, n, &w, &st));
        PROBE(my_parse_column_def(p, n, &d));
        PROBE(my_parse_prepare_ok(p, n, &po));
        my_cursor c;
        my_cursor_init(&c, p, n);
        /* NULL-typed values take no bytes: stop when nothing moves. */
        for (size_t before = c.pos; my_cursor_left(&c) && my_skip_binary_value(&c, p[0]) && c.pos > before;
             before = c.pos)
            ;
        if (nowned > 400)
            free_owned();
    }
    CHECK(1);
}

int main(void)
{
    RUN(test_cursor_fixed_ints);
    RUN(test_cursor_strings);
    RUN(test_lenenc_forms);
    RUN(test_lenenc_roundtrip);
    RUN(test_lenenc_strings);
    RUN(test_header_parse);
    RUN(test_chain_single_and_continued);
    RUN(test_chain_limits);
    RUN(test_put_packet_splits);
    RUN(test_handshake_v10_roundtrip);
    RUN(test_handshake_response_roundtrip);
    RUN(test_ssl_request_and_refusals);
    RUN(test_connect_attrs);
    RUN(test_ok_err_eof);
    RUN(test_session_state);
    RUN(test_terminators);
    RUN(test_column_def);
    RUN(test_prepare_ok);
    RUN(test_binary_values);
    RUN(test_auth_switch_more);
    RUN(test_native_password);
    RUN(test_sha2_response);
    RUN(test_scram_password);
    RUN(test_names);
    RUN(test_random_input);
    printf("%d passed, %d failed\n", tests_passed, tests_failed);
    return tests_failed ? 1 : 0;
}
