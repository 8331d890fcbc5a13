/*
 * MySQL wire format: see my_wire.h.  Nothing here touches a socket; the
 * builders append to an evbuffer only because that is what the fronts write.
 */
#include "myfront/my_wire.h"

#include <event2/buffer.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

/* ---- names ------------------------------------------------------------------ */

const char *my_caps_string(uint32_t caps, char *out, size_t outlen)
{
    static const struct {
        const char *name;
        int bit;
    } names[] = {
#define MY_CAP_NAME(name, bit) {#name, bit},
        MY_CAPABILITIES(MY_CAP_NAME)
#undef MY_CAP_NAME
    };
    size_t used = 0;
    if (outlen)
        out[0] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!(caps & ((uint32_t)1u << names[i].bit)))
            continue;
        int n = snprintf(out + used, outlen - used, "%s%s", used ? "|" : "", names[i].name);
        if (n < 0 || (size_t)n >= outlen - used)
            break;
        used += (size_t)n;
    }
    return out;
}

const char *my_command_name(uint8_t cmd, char out[12])
{
    switch (cmd) {
#define MY_COM_CASE(name, code) case code: return "COM_" #name;
        MY_COMMANDS(MY_COM_CASE)
#undef MY_COM_CASE
    default:
        snprintf(out, 12, "COM_0x%02x", cmd);
        return out;
    }
}

/* ---- cursor ------------------------------------------------------------------- */

void my_cursor_init(my_cursor *c, const void *data, size_t len)
{
    c->data = data;
    c->len = len;
    c->pos = 0;
}

size_t my_cursor_left(const my_cursor *c) { return c->len - c->pos; }

bool my_get_bytes(my_cursor *c, size_t n, const uint8_t **out)
{
    if (n > my_cursor_left(c))
        return false;
    *out = c->data + c->pos;
    c->pos += n;
    return true;
}

bool my_skip(my_cursor *c, size_t n)
{
    const uint8_t *p;
    return my_get_bytes(c, n, &p);
}

static uint64_t le(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;)
        v = (v << 8) | p[i];
    return v;
}

static bool get_le(my_cursor *c, size_t n, uint64_t *out)
{
    const uint8_t *p;
    if (!my_get_bytes(c, n, &p))
        return false;
    *out = le(p, n);
    return true;
}

bool my_get_u8(my_cursor *c, uint8_t *out)
{
    uint64_t v;
    if (!get_le(c, 1, &v))
        return false;
    *out = (uint8_t)v;
    return true;
}

bool my_get_u16(my_cursor *c, uint16_t *out)
{
    uint64_t v;
    if (!get_le(c, 2, &v))
        return false;
    *out = (uint16_t)v;
    return true;
}

bool my_get_u24(my_cursor *c, uint32_t *out)
{
    uint64_t v;
    if (!get_le(c, 3, &v))
        return false;
    *out = (uint32_t)v;
    return true;
}

bool my_get_u32(my_cursor *c, uint32_t *out)
{
    uint64_t v;
    if (!get_le(c, 4, &v))
        return false;
    *out = (uint32_t)v;
    return true;
}

bool my_get_u64(my_cursor *c, uint64_t *out) { return get_le(c, 8, out); }

bool my_get_cstring(my_cursor *c, const char **out, size_t *len)
{
    const uint8_t *start = c->data + c->pos;
    const uint8_t *nul = memchr(start, '\0', my_cursor_left(c));
    if (!nul)
        return false;
    *out = (const char *)start;
    if (len)
        *len = (size_t)(nul - start);
    c->pos += (size_t)(nul - start) + 1;
    return true;
}

size_t my_lenenc_size(uint8_t first)
{
    if (first < 0xfb)
        return 1;
    switch (first) {
    case 0xfc:
        return 3;
    case 0xfd:
        return 4;
    case 0xfe:
        return 9;
    default: /* 0xfb is NULL, 0xff starts an ERR: neither is an integer */
        return 0;
    }
}

bool my_get_lenenc(my_cursor *c, uint64_t *out)
{
    if (my_cursor_left(c) < 1)
        return false;
    size_t n = my_lenenc_size(c->data[c->pos]);
    if (n == 0 || n > my_cursor_left(c))
        return false;
    *out = n == 1 ? c->data[c->pos] : le(c->data + c->pos + 1, n - 1);
    c->pos += n;
    return true;
}

bool my_get_lenenc_str(my_cursor *c, const uint8_t **out, size_t *len)
{
    size_t start = c->pos;
    uint64_t n;
    if (!my_get_lenenc(c, &n))
        return false;
    /* Check the claimed length against what is there before converting it. */
    if (n > my_cursor_left(c)) {
        c->pos = start;
        return false;
    }
    *len = (size_t)n;
    return my_get_bytes(c, (size_t)n, out);
}

bool my_get_text_value(my_cursor *c, const uint8_t **out, size_t *len, bool *is_null)
{
    if (my_cursor_left(c) >= 1 && c->data[c->pos] == 0xfb) {
        c->pos++;
        *is_null = true;
        *out = NULL;
        *len = 0;
        return true;
    }
    *is_null = false;
    return my_get_lenenc_str(c, out, len);
}

void my_get_rest(my_cursor *c, const uint8_t **out, size_t *len)
{
    *out = c->data + c->pos;
    *len = my_cursor_left(c);
    c->pos = c->len;
}

/* ---- framing -------------------------------------------------------------------- */

void my_parse_header(const uint8_t hdr[MY_HEADER_LEN], uint32_t *len, uint8_t *seq)
{
    *len = (uint32_t)hdr[0] | ((uint32_t)hdr[1] << 8) | ((uint32_t)hdr[2] << 16);
    *seq = hdr[3];
}

void my_chain_init(my_chain *c, uint64_t max, bool check_seq, uint8_t first_seq)
{
    memset(c, 0, sizeof *c);
    c->max = max;
    c->check_seq = check_seq;
    c->seq = first_seq;
}

my_chain_result my_chain_step(my_chain *c, const uint8_t hdr[MY_HEADER_LEN])
{
    uint32_t len;
    uint8_t seq;
    my_parse_header(hdr, &len, &seq);
    if ((c->check_seq || c->npackets > 0) && seq != c->seq)
        return MY_CHAIN_BAD_SEQ;
    /* The sum is checked before any of this packet's body is read or kept. */
    if (c->payload > c->max || len > c->max - c->payload)
        return MY_CHAIN_TOO_LONG;
    c->payload += len;
    c->npackets++;
    c->seq = (uint8_t)(seq + 1);
    return len == MY_MAX_PACKET ? MY_CHAIN_MORE : MY_CHAIN_DONE;
}

void my_chain_payload(const uint8_t *wire, size_t wire_len, uint8_t *out)
{
    size_t pos = 0;
    while (wire_len - pos >= MY_HEADER_LEN) {
        uint32_t len;
        uint8_t seq;
        my_parse_header(wire + pos, &len, &seq);
        pos += MY_HEADER_LEN;
        if (len > wire_len - pos)
            len = (uint32_t)(wire_len - pos); /* the caller measured the chain: never happens */
        memcpy(out, wire + pos, len);
        out += len;
        pos += len;
        if (len != MY_MAX_PACKET)
            break;
    }
}

/* ---- builders ------------------------------------------------------------------- */

static void put_le(struct evbuffer *out, uint64_t v, size_t n)
{
    uint8_t b[8];
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    evbuffer_add(out, b, n);
}

static void put_header(struct evbuffer *out, uint32_t len, uint8_t seq)
{
    uint8_t h[MY_HEADER_LEN] = {(uint8_t)len, (uint8_t)(len >> 8), (uint8_t)(len >> 16), seq};
    evbuffer_add(out, h, sizeof h);
}

uint8_t my_put_packet(struct evbuffer *out, uint8_t seq, const void *payload, size_t len)
{
    const uint8_t *p = payload;
    for (;;) {
        uint32_t chunk = len >= MY_MAX_PACKET ? MY_MAX_PACKET : (uint32_t)len;
        put_header(out, chunk, seq);
        if (chunk)
            evbuffer_add(out, p, chunk);
        p += chunk;
        len -= chunk;
        /* A full-size packet is always followed by another, even an empty one. */
        if (chunk < MY_MAX_PACKET)
            return seq;
        seq++;
    }
}

size_t my_encode_lenenc(uint8_t buf[9], uint64_t v)
{
    size_t n;
    if (v < 0xfb) {
        buf[0] = (uint8_t)v;
        return 1;
    }
    if (v <= 0xffff) {
        buf[0] = 0xfc;
        n = 2;
    } else if (v <= 0xffffff) {
        buf[0] = 0xfd;
        n = 3;
    } else {
        buf[0] = 0xfe;
        n = 8;
    }
    for (size_t i = 0; i < n; i++)
        buf[1 + i] = (uint8_t)(v >> (8 * i));
    return n + 1;
}

void my_put_lenenc(struct evbuffer *out, uint64_t v)
{
    uint8_t b[9];
    evbuffer_add(out, b, my_encode_lenenc(b, v));
}

void my_put_lenenc_str(struct evbuffer *out, const void *s, size_t len)
{
    my_put_lenenc(out, len);
    if (len)
        evbuffer_add(out, s, len);
}

/* Build a payload in a scratch buffer, then frame it. */
static void finish_packet(struct evbuffer *out, uint8_t seq, struct evbuffer *body)
{
    size_t len = evbuffer_get_length(body);
    my_put_packet(out, seq, len ? evbuffer_pullup(body, -1) : (const uint8_t *)"", len);
    evbuffer_free(body);
}

void my_put_handshake_v10(struct evbuffer *out, const my_handshake_params *p)
{
    /*
     *  10 | version NUL | conn id u32 | scramble[0..8] | 0 | caps lo u16 | charset |
     *  status u16 | caps hi u16 | 21 | 10 x 0 | scramble[8..20] NUL | plugin NUL
     */
    static const uint8_t zeros[10] = {0};
    struct evbuffer *b = evbuffer_new();
    uint8_t ten = 10;
    evbuffer_add(b, &ten, 1);
    evbuffer_add(b, p->server_version, strlen(p->server_version) + 1);
    put_le(b, p->connection_id, 4);
    evbuffer_add(b, p->scramble, 8);
    evbuffer_add(b, zeros, 1);
    put_le(b, p->capabilities & 0xffff, 2);
    evbuffer_add(b, &p->charset, 1);
    put_le(b, p->status, 2);
    put_le(b, p->capabilities >> 16, 2);
    uint8_t auth_len = MY_SCRAMBLE_LEN + 1;
    evbuffer_add(b, &auth_len, 1);
    evbuffer_add(b, zeros, 10);
    evbuffer_add(b, p->scramble + 8, MY_SCRAMBLE_LEN - 8);
    evbuffer_add(b, zeros, 1);
    evbuffer_add(b, p->auth_plugin, strlen(p->auth_plugin) + 1);
    finish_packet(out, 0, b);
}

void my_put_err(struct evbuffer *out, uint8_t seq, uint16_t code, const char *sqlstate, const char *msg)
{
    struct evbuffer *b = evbuffer_new();
    uint8_t h = 0xff;
    evbuffer_add(b, &h, 1);
    put_le(b, code, 2);
    evbuffer_add(b, "#", 1);
    evbuffer_add(b, sqlstate && strlen(sqlstate) == 5 ? sqlstate : "HY000", 5);
    /* Messages longer than MySQL's own limit (512) only burden clients. */
    size_t len = strlen(msg);
    evbuffer_add(b, msg, len < 1024 ? len : 1024);
    finish_packet(out, seq, b);
}

void my_put_ok(struct evbuffer *out, uint8_t seq, uint8_t header, uint64_t affected, uint64_t insert_id,
               uint16_t status, uint16_t warnings, const char *info, size_t info_len)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, &header, 1);
    my_put_lenenc(b, affected);
    my_put_lenenc(b, insert_id);
    put_le(b, status, 2);
    put_le(b, warnings, 2);
    /* The info text is length-encoded, as MySQL and MariaDB servers send it. */
    if (info && info_len)
        my_put_lenenc_str(b, info, info_len);
    finish_packet(out, seq, b);
}

void my_put_eof(struct evbuffer *out, uint8_t seq, uint16_t warnings, uint16_t status)
{
    uint8_t p[5] = {0xfe, (uint8_t)warnings, (uint8_t)(warnings >> 8), (uint8_t)status, (uint8_t)(status >> 8)};
    my_put_packet(out, seq, p, sizeof p);
}

void my_put_auth_switch(struct evbuffer *out, uint8_t seq, const char *plugin, const void *data, size_t len)
{
    struct evbuffer *b = evbuffer_new();
    uint8_t h = 0xfe;
    evbuffer_add(b, &h, 1);
    evbuffer_add(b, plugin, strlen(plugin) + 1);
    evbuffer_add(b, data, len);
    finish_packet(out, seq, b);
}

void my_put_auth_more(struct evbuffer *out, uint8_t seq, const void *data, size_t len)
{
    struct evbuffer *b = evbuffer_new();
    uint8_t h = 0x01;
    evbuffer_add(b, &h, 1);
    evbuffer_add(b, data, len);
    finish_packet(out, seq, b);
}

void my_put_ssl_request(struct evbuffer *out, uint8_t seq, uint32_t caps, uint32_t max_packet, uint8_t charset)
{
    uint8_t p[MY_SSL_REQUEST_LEN] = {0};
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(caps >> (8 * i));
        p[4 + i] = (uint8_t)(max_packet >> (8 * i));
    }
    p[8] = charset;
    my_put_packet(out, seq, p, sizeof p);
}

void my_put_handshake_response(struct evbuffer *out, uint8_t seq, const my_client_login *l)
{
    static const uint8_t zeros[23] = {0};
    struct evbuffer *b = evbuffer_new();
    put_le(b, l->capabilities, 4);
    put_le(b, l->max_packet, 4);
    evbuffer_add(b, &l->charset, 1);
    evbuffer_add(b, zeros, 23);
    evbuffer_add(b, l->user, strlen(l->user) + 1);
    if (l->capabilities & MY_CAP(PLUGIN_AUTH_LENENC_DATA)) {
        my_put_lenenc_str(b, l->auth, l->auth_len);
    } else {
        uint8_t n = (uint8_t)l->auth_len;
        evbuffer_add(b, &n, 1);
        evbuffer_add(b, l->auth, l->auth_len);
    }
    if (l->capabilities & MY_CAP(CONNECT_WITH_DB))
        evbuffer_add(b, l->database ? l->database : "", strlen(l->database ? l->database : "") + 1);
    if (l->capabilities & MY_CAP(PLUGIN_AUTH))
        evbuffer_add(b, l->plugin, strlen(l->plugin) + 1);
    finish_packet(out, seq, b);
}

/* ---- parsers ---------------------------------------------------------------------- */

/* A NUL-terminated string that may also simply end the packet (some clients
 * leave off the last NUL).  Absent entirely: *out NULL. */
static bool get_trailing_string(my_cursor *c, const char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (my_cursor_left(c) == 0)
        return true;
    if (my_get_cstring(c, out, len))
        return true;
    return false;
}

my_hr_result my_parse_handshake_response(const uint8_t *payload, size_t len, my_handshake_response *out)
{
    my_cursor c;
    memset(out, 0, sizeof *out);
    my_cursor_init(&c, payload, len);
    if (!my_get_u32(&c, &out->capabilities) || !my_get_u32(&c, &out->max_packet) ||
        !my_get_u8(&c, &out->charset) || !my_skip(&c, 23))
        return len >= 2 && len < MY_SSL_REQUEST_LEN ? MY_HR_OLD_PROTOCOL : MY_HR_MALFORMED;
    if (!(out->capabilities & MY_CAP(PROTOCOL_41)))
        return MY_HR_OLD_PROTOCOL;
    if (my_cursor_left(&c) == 0) {
        /* Exactly the fixed part: an SSLRequest, valid only with CLIENT_SSL. */
        out->ssl_request = true;
        return out->capabilities & MY_CAP(SSL) ? MY_HR_OK : MY_HR_MALFORMED;
    }
    if (!my_get_cstring(&c, &out->user, &out->user_len))
        return MY_HR_MALFORMED;
    if (out->user_len >= MY_MAX_USER)
        return MY_HR_TOO_LONG;
    if (out->capabilities & MY_CAP(PLUGIN_AUTH_LENENC_DATA)) {
        if (!my_get_lenenc_str(&c, &out->auth, &out->auth_len))
            return MY_HR_MALFORMED;
    } else if (out->capabilities & MY_CAP(SECURE_CONNECTION)) {
        uint8_t n;
        if (!my_get_u8(&c, &n) || !my_get_bytes(&c, n, &out->auth))
            return MY_HR_MALFORMED;
        out->auth_len = n;
    } else {
        const char *a;
        if (!my_get_cstring(&c, &a, &out->auth_len))
            return MY_HR_MALFORMED;
        out->auth = (const uint8_t *)a;
    }
    if (out->auth_len > MY_MAX_AUTH)
        return MY_HR_TOO_LONG;
    if ((out->capabilities & MY_CAP(CONNECT_WITH_DB)) &&
        !get_trailing_string(&c, &out->database, &out->database_len))
        return MY_HR_MALFORMED;
    if (out->database && out->database_len == 0)
        out->database = NULL;
    if (out->database_len >= MY_MAX_DB)
        return MY_HR_TOO_LONG;
    if ((out->capabilities & MY_CAP(PLUGIN_AUTH)) && !get_trailing_string(&c, &out->plugin, &out->plugin_len))
        return MY_HR_MALFORMED;
    if (out->plugin_len >= MY_MAX_PLUGIN)
        return MY_HR_TOO_LONG;
    if ((out->capabilities & MY_CAP(CONNECT_ATTRS)) && my_cursor_left(&c) > 0) {
        /* Connection attributes are checked for shape and dropped. */
        uint64_t total;
        const uint8_t *attrs;
        if (!my_get_lenenc(&c, &total) || total > my_cursor_left(&c) || !my_get_bytes(&c, (size_t)total, &attrs))
            return MY_HR_MALFORMED;
        my_cursor a;
        my_cursor_init(&a, attrs, (size_t)total);
        while (my_cursor_left(&a) > 0) {
            const uint8_t *k, *v;
            size_t kl, vl;
            if (!my_get_lenenc_str(&a, &k, &kl) || !my_get_lenenc_str(&a, &v, &vl))
                return MY_HR_MALFORMED;
        }
    }
    return MY_HR_OK;
}

bool my_parse_server_handshake(const uint8_t *payload, size_t len, my_server_handshake *out)
{
    my_cursor c;
    const uint8_t *part1, *part2;
    uint16_t lo, hi;
    uint8_t auth_len;
    memset(out, 0, sizeof *out);
    my_cursor_init(&c, payload, len);
    if (!my_get_u8(&c, &out->protocol) || out->protocol != 10 || !my_get_cstring(&c, &out->version, NULL) ||
        !my_get_u32(&c, &out->connection_id) || !my_get_bytes(&c, 8, &part1) || !my_skip(&c, 1) ||
        !my_get_u16(&c, &lo))
        return false;
    memcpy(out->scramble, part1, 8);
    out->scramble_len = 8;
    out->capabilities = lo;
    if (my_cursor_left(&c) == 0)
        return true;
    if (!my_get_u8(&c, &out->charset) || !my_get_u16(&c, &out->status) || !my_get_u16(&c, &hi) ||
        !my_get_u8(&c, &auth_len) || !my_skip(&c, 10))
        return false;
    out->capabilities |= (uint32_t)hi << 16;
    if (out->capabilities & MY_CAP(SECURE_CONNECTION)) {
        size_t n = auth_len > 8 ? (size_t)auth_len - 8 : 13;
        if (n < 13)
            n = 13;
        if (!my_get_bytes(&c, n, &part2))
            return false;
        /* Twelve bytes of scramble, then a NUL. */
        memcpy(out->scramble + 8, part2, 12);
        out->scramble_len = MY_SCRAMBLE_LEN;
    }
    if (out->capabilities & MY_CAP(PLUGIN_AUTH)) {
        if (my_get_cstring(&c, &out->plugin, &out->plugin_len))
            return true;
        /* Some servers leave the last NUL off: the name is the rest. */
        const uint8_t *rest;
        size_t rl;
        my_get_rest(&c, &rest, &rl);
        out->plugin = rl ? (const char *)rest : NULL;
        out->plugin_len = rl;
    }
    return true;
}

bool my_parse_ok(const uint8_t *payload, size_t len, uint32_t caps, my_ok *out)
{
    my_cursor c;
    memset(out, 0, sizeof *out);
    my_cursor_init(&c, payload, len);
    if (!my_get_u8(&c, &out->header) || (out->header != 0x00 && out->header != 0xfe) ||
        !my_get_lenenc(&c, &out->affected_rows) || !my_get_lenenc(&c, &out->insert_id) ||
        !my_get_u16(&c, &out->status) || !my_get_u16(&c, &out->warnings))
        return false;
    if (!(caps & MY_CAP(SESSION_TRACK))) {
        my_get_rest(&c, &out->info, &out->info_len);
        return true;
    }
    if (my_cursor_left(&c) > 0 && !my_get_lenenc_str(&c, &out->info, &out->info_len))
        return false;
    if ((out->status & MY_STATUS_SESSION_STATE_CHANGED) && my_cursor_left(&c) > 0) {
        if (!my_get_lenenc_str(&c, &out->state, &out->state_len))
            return false;
    }
    return my_cursor_left(&c) == 0;
}

bool my_next_state_change(my_cursor *c, my_state_change *out, bool *bad)
{
    *bad = false;
    memset(out, 0, sizeof *out);
    if (my_cursor_left(c) == 0)
        return false;
    const uint8_t *data;
    size_t dlen;
    if (!my_get_u8(c, &out->type) || !my_get_lenenc_str(c, &data, &dlen)) {
        *bad = true;
        return false;
    }
    my_cursor d;
    my_cursor_init(&d, data, dlen);
    if (out->type == MY_TRACK_SYSTEM_VARIABLES) {
        if (!my_get_lenenc_str(&d, &out->name, &out->name_len) ||
            !my_get_lenenc_str(&d, &out->value, &out->value_len)) {
            *bad = true;
            return false;
        }
    } else if (out->type == MY_TRACK_SCHEMA) {
        if (!my_get_lenenc_str(&d, &out->name, &out->name_len)) {
            *bad = true;
            return false;
        }
    }
    return true;
}

bool my_parse_err(const uint8_t *payload, size_t len, my_err *out)
{
    my_cursor c;
    uint8_t h;
    memset(out, 0, sizeof *out);
    my_cursor_init(&c, payload, len);
    if (!my_get_u8(&c, &h) || h != 0xff || !my_get_u16(&c, &out->code))
        return false;
    memcpy(out->sqlstate, "HY000", 6);
    const uint8_t *st;
    if (my_cursor_left(&c) >= 6 && c.data[c.pos] == '#') {
        if (!my_skip(&c, 1) || !my_get_bytes(&c, 5, &st))
            return false;
        memcpy(out->sqlstate, st, 5);
    }
    const uint8_t *m;
    my_get_rest(&c, &m, &out->message_len);
    out->message = (const char *)m;
    return true;
}

bool my_parse_eof(const uint8_t *payload, size_t len, uint16_t *warnings, uint16_t *status)
{
    my_cursor c;
    uint8_t h;
    my_cursor_init(&c, payload, len);
    if (len >= 9 || !my_get_u8(&c, &h) || h != 0xfe)
        return false;
    *warnings = 0;
    *status = 0;
    /* Pre-4.1 servers sent a bare 0xfe: accept it as status 0. */
    if (my_cursor_left(&c) >= 4 && (!my_get_u16(&c, warnings) || !my_get_u16(&c, status)))
        return false;
    return true;
}

bool my_is_terminator(uint8_t first, uint32_t len, bool deprecate_eof)
{
    if (first != 0xfe)
        return false;
    return deprecate_eof ? len < MY_MAX_PACKET : len < 9;
}

bool my_parse_column_def(const uint8_t *payload, size_t len, my_column_def *out)
{
    my_cursor c;
    const uint8_t *catalog;
    size_t catalog_len;
    uint64_t fixed;
    memset(out, 0, sizeof *out);
    my_cursor_init(&c, payload, len);
    if (!my_get_lenenc_str(&c, &catalog, &catalog_len) || !my_get_lenenc_str(&c, &out->schema, &out->schema_len) ||
        !my_get_lenenc_str(&c, &out->table, &out->table_len) ||
        !my_get_lenenc_str(&c, &out->org_table, &out->org_table_len) ||
        !my_get_lenenc_str(&c, &out->name, &out->name_len) ||
        !my_get_lenenc_str(&c, &out->org_name, &out->org_name_len) || !my_get_lenenc(&c, &fixed))
        return false;
    /* The fixed part is 12 bytes (0x0c); the last two are filler. */
    if (fixed < 10 || fixed > my_cursor_left(&c))
        return false;
    size_t start = c.pos;
    if (!my_get_u16(&c, &out->charset) || !my_get_u32(&c, &out->length) || !my_get_u8(&c, &out->type) ||
        !my_get_u16(&c, &out->flags) || !my_get_u8(&c, &out->decimals))
        return false;
    c.pos = start + (size_t)fixed;
    return true;
}

bool my_parse_prepare_ok(const uint8_t *payload, size_t len, my_prepare_ok *out)
{
    my_cursor c;
    uint8_t h;
    memset(out, 0, sizeof *out);
    my_cursor_init(&c, payload, len);
    if (!my_get_u8(&c, &h) || h != 0x00 || !my_get_u32(&c, &out->statement_id) ||
        !my_get_u16(&c, &out->columns) || !my_get_u16(&c, &out->params))
        return false;
    if (my_cursor_left(&c) >= 3 && (!my_skip(&c, 1) || !my_get_u16(&c, &out->warnings)))
        return false;
    return true;
}

bool my_skip_binary_value(my_cursor *c, uint8_t type)
{
    const uint8_t *p;
    size_t n;
    uint8_t l;
    switch (type) {
    case MY_TYPE_NULL:
        return true;
    case MY_TYPE_TINY:
        return my_skip(c, 1);
    case MY_TYPE_SHORT:
    case MY_TYPE_YEAR:
        return my_skip(c, 2);
    case MY_TYPE_LONG:
    case MY_TYPE_INT24:
    case MY_TYPE_FLOAT:
        return my_skip(c, 4);
    case MY_TYPE_LONGLONG:
    case MY_TYPE_DOUBLE:
        return my_skip(c, 8);
    case MY_TYPE_DATE:
    case MY_TYPE_NEWDATE:
    case MY_TYPE_DATETIME:
    case MY_TYPE_TIMESTAMP:
    case MY_TYPE_DATETIME2:
    case MY_TYPE_TIMESTAMP2:
    case MY_TYPE_TIME:
    case MY_TYPE_TIME2: {
        /* One length byte (0, 4, 7, 8, 11 or 12), then that many bytes. */
        size_t save = c->pos;
        if (!my_get_u8(c, &l) || !my_skip(c, l)) {
            c->pos = save;
            return false;
        }
        return true;
    }
    case MY_TYPE_DECIMAL:
    case MY_TYPE_VARCHAR:
    case 0x10: /* BIT */
    case 0xf5: /* JSON */
    case 0xf6: /* NEWDECIMAL */
    case 0xf7: /* ENUM */
    case 0xf8: /* SET */
    case 0xf9: /* TINY_BLOB */
    case 0xfa: /* MEDIUM_BLOB */
    case 0xfb: /* LONG_BLOB */
    case 0xfc: /* BLOB */
    case 0xfd: /* VAR_STRING */
    case 0xfe: /* STRING */
    case 0xff: /* GEOMETRY */
        return my_get_lenenc_str(c, &p, &n);
    default:
        /* A type we do not know has a length we do not know: refuse to guess. */
        return false;
    }
}

/* ---- authentication --------------------------------------------------------------- */

static void digest(const EVP_MD *md, const void *a, size_t alen, const void *b, size_t blen, uint8_t *out)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int l;
    EVP_DigestInit_ex(ctx, md, NULL);
    EVP_DigestUpdate(ctx, a, alen);
    if (b)
        EVP_DigestUpdate(ctx, b, blen);
    EVP_DigestFinal_ex(ctx, out, &l);
    EVP_MD_CTX_free(ctx);
}

void my_native_response(const char *password, const uint8_t scramble[MY_SCRAMBLE_LEN], uint8_t out[20],
                        size_t *outlen)
{
    uint8_t stage1[20], stage2[20], mix[20];
    *outlen = 0;
    if (!password || !*password)
        return;
    digest(EVP_sha1(), password, strlen(password), NULL, 0, stage1);
    digest(EVP_sha1(), stage1, 20, NULL, 0, stage2);
    digest(EVP_sha1(), scramble, MY_SCRAMBLE_LEN, stage2, 20, mix);
    for (int i = 0; i < 20; i++)
        out[i] = stage1[i] ^ mix[i];
    *outlen = 20;
    OPENSSL_cleanse(stage1, sizeof stage1);
}

bool my_native_verify(const uint8_t stored[20], const uint8_t scramble[MY_SCRAMBLE_LEN], const uint8_t *response,
                      size_t len)
{
    uint8_t mix[20], candidate[20], check[20];
    /* An empty response means "no password"; phigate identities always have one. */
    if (len != 20)
        return false;
    digest(EVP_sha1(), scramble, MY_SCRAMBLE_LEN, stored, 20, mix);
    for (int i = 0; i < 20; i++)
        candidate[i] = response[i] ^ mix[i];
    digest(EVP_sha1(), candidate, 20, NULL, 0, check);
    bool ok = CRYPTO_memcmp(check, stored, 20) == 0;
    OPENSSL_cleanse(candidate, sizeof candidate);
    return ok;
}

void my_sha2_response(const char *password, const uint8_t scramble[MY_SCRAMBLE_LEN], uint8_t out[32],
                      size_t *outlen)
{
    uint8_t s1[32], s2[32], mix[32];
    *outlen = 0;
    if (!password || !*password)
        return;
    digest(EVP_sha256(), password, strlen(password), NULL, 0, s1);
    digest(EVP_sha256(), s1, 32, NULL, 0, s2);
    digest(EVP_sha256(), s2, 32, scramble, MY_SCRAMBLE_LEN, mix);
    for (int i = 0; i < 32; i++)
        out[i] = s1[i] ^ mix[i];
    *outlen = 32;
    OPENSSL_cleanse(s1, sizeof s1);
}

bool my_scram_password_ok(const char *password, size_t len, const uint8_t *salt, size_t salt_len, int iterations,
                          const uint8_t stored_key[32])
{
    uint8_t salted[32], client_key[32], check[32];
    unsigned int l = sizeof client_key;
    if (iterations < 1 || len > 1024 ||
        PKCS5_PBKDF2_HMAC(password, (int)len, salt, (int)salt_len, iterations, EVP_sha256(), sizeof salted,
                          salted) != 1)
        return false;
    HMAC(EVP_sha256(), salted, sizeof salted, (const uint8_t *)"Client Key", 10, client_key, &l);
    digest(EVP_sha256(), client_key, sizeof client_key, NULL, 0, check);
    bool ok = CRYPTO_memcmp(check, stored_key, 32) == 0;
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client_key, sizeof client_key);
    return ok;
}
