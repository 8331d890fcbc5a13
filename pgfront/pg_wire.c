#include "pgfront/pg_wire.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <string.h>

void pg_cursor_init(pg_cursor *c, const void *data, size_t len)
{
    c->data = data;
    c->len = len;
    c->pos = 0;
}

size_t pg_cursor_left(const pg_cursor *c) { return c->len - c->pos; }

bool pg_get_bytes(pg_cursor *c, size_t n, const uint8_t **out)
{
    if (n > pg_cursor_left(c))
        return false;
    *out = c->data + c->pos;
    c->pos += n;
    return true;
}

bool pg_get_u8(pg_cursor *c, uint8_t *out)
{
    const uint8_t *p;
    if (!pg_get_bytes(c, 1, &p))
        return false;
    *out = p[0];
    return true;
}

bool pg_get_u16(pg_cursor *c, uint16_t *out)
{
    const uint8_t *p;
    if (!pg_get_bytes(c, 2, &p))
        return false;
    *out = (uint16_t)((p[0] << 8) | p[1]);
    return true;
}

bool pg_get_u32(pg_cursor *c, uint32_t *out)
{
    const uint8_t *p;
    if (!pg_get_bytes(c, 4, &p))
        return false;
    *out = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    return true;
}

bool pg_get_i32(pg_cursor *c, int32_t *out)
{
    uint32_t u;
    if (!pg_get_u32(c, &u))
        return false;
    memcpy(out, &u, sizeof u);
    return true;
}

bool pg_get_cstring(pg_cursor *c, const char **out, size_t *len)
{
    if (pg_cursor_left(c) == 0)
        return false; /* also keeps memchr away from an empty (possibly NULL) buffer */
    const uint8_t *start = c->data + c->pos;
    const uint8_t *nul = memchr(start, '\0', pg_cursor_left(c));
    if (!nul)
        return false;
    *out = (const char *)start;
    if (len)
        *len = (size_t)(nul - start);
    c->pos += (size_t)(nul - start) + 1;
    return true;
}

static uint32_t read_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

pg_header_result pg_parse_startup_header(const uint8_t *buf, size_t avail, uint32_t max_len, uint32_t *len,
                                         uint32_t *code)
{
    if (avail < PG_STARTUP_MIN)
        return PG_HDR_NEED_MORE;
    *len = read_be32(buf);
    *code = read_be32(buf + 4);
    if (*len < PG_STARTUP_MIN)
        return PG_HDR_TOO_SHORT;
    if (*len > max_len)
        return PG_HDR_TOO_LONG;
    return PG_HDR_OK;
}

pg_header_result pg_parse_header(const uint8_t *buf, size_t avail, uint32_t max_len, char *type, uint32_t *total)
{
    if (avail < PG_HEADER_LEN)
        return PG_HDR_NEED_MORE;
    uint32_t len = read_be32(buf + 1);
    *type = (char)buf[0];
    if (len < 4)
        return PG_HDR_TOO_SHORT;
    /* len + 1 (the type byte) must not wrap, whatever max the caller passed. */
    if (len > max_len || len == UINT32_MAX)
        return PG_HDR_TOO_LONG;
    *total = len + 1;
    return PG_HDR_OK;
}

bool pg_frontend_type_known(char type)
{
    /* Query Parse Bind Describe Execute Close Sync Flush Terminate FunctionCall
     * CopyData CopyDone CopyFail and 'p' (password / SASL responses). */
    return type != '\0' && strchr("QPBDECSHXFdcfp", type) != NULL;
}

bool pg_backend_type_known(char type)
{
    return type != '\0' && strchr("RSKZTDCEINA123nstGHWdcVv", type) != NULL;
}

bool pg_parse_startup_params(const uint8_t *body, size_t len, pg_startup *out)
{
    pg_cursor c;
    pg_cursor_init(&c, body, len);
    out->nparams = 0;
    for (;;) {
        const char *name, *value;
        size_t nlen;
        if (!pg_get_cstring(&c, &name, &nlen))
            return false;
        if (nlen == 0)
            return pg_cursor_left(&c) == 0; /* the terminating empty name ends the list */
        if (!pg_get_cstring(&c, &value, NULL) || out->nparams >= PG_MAX_STARTUP_PARAMS)
            return false;
        out->params[out->nparams].name = name;
        out->params[out->nparams].value = value;
        out->nparams++;
    }
}

const char *pg_startup_get(const pg_startup *s, const char *name)
{
    for (size_t i = 0; i < s->nparams; i++)
        if (strcmp(s->params[i].name, name) == 0)
            return s->params[i].value;
    return NULL;
}

bool pg_parse_error_fields(const uint8_t *body, size_t len, pg_error_fields *out)
{
    pg_cursor c;
    pg_cursor_init(&c, body, len);
    out->n = 0;
    for (;;) {
        uint8_t code;
        if (!pg_get_u8(&c, &code))
            return false;
        if (code == 0)
            return pg_cursor_left(&c) == 0;
        const char *value;
        size_t vlen;
        if (!pg_get_cstring(&c, &value, &vlen) || out->n >= PG_MAX_ERROR_FIELDS)
            return false;
        out->f[out->n++] = (pg_error_field){(char)code, value, vlen};
    }
}

const char *pg_error_field_get(const pg_error_fields *e, char code, size_t *len)
{
    for (size_t i = 0; i < e->n; i++) {
        if (e->f[i].code == code) {
            if (len)
                *len = e->f[i].len;
            return e->f[i].value;
        }
    }
    return NULL;
}

static void put_be32(struct evbuffer *out, uint32_t v)
{
    uint32_t be = htonl(v);
    evbuffer_add(out, &be, 4);
}

void pg_put_message(struct evbuffer *out, char type, const void *body, size_t len)
{
    evbuffer_add(out, &type, 1);
    put_be32(out, (uint32_t)(len + 4));
    if (len)
        evbuffer_add(out, body, len);
}

static void put_field(struct evbuffer *out, char code, const char *value)
{
    if (!value)
        return;
    evbuffer_add(out, &code, 1);
    evbuffer_add(out, value, strlen(value) + 1);
}

void pg_put_error(struct evbuffer *out, const char *severity, const char *sqlstate, const char *message,
                  const char *detail, const char *hint)
{
    struct evbuffer *body = evbuffer_new();
    put_field(body, 'S', severity);
    put_field(body, 'V', severity);
    put_field(body, 'C', sqlstate);
    put_field(body, 'M', message);
    put_field(body, 'D', detail);
    put_field(body, 'H', hint);
    evbuffer_add(body, "", 1);
    size_t len = evbuffer_get_length(body);
    char type = 'E';
    evbuffer_add(out, &type, 1);
    put_be32(out, (uint32_t)(len + 4));
    evbuffer_add_buffer(out, body);
    evbuffer_free(body);
}

void pg_put_auth(struct evbuffer *out, uint32_t code, const void *extra, size_t extra_len)
{
    char type = 'R';
    evbuffer_add(out, &type, 1);
    put_be32(out, (uint32_t)(8 + extra_len));
    put_be32(out, code);
    if (extra_len)
        evbuffer_add(out, extra, extra_len);
}

void pg_put_auth_sasl(struct evbuffer *out, bool offer_plus)
{
    static const char plain[] = "SCRAM-SHA-256\0";
    static const char plus[] = "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";
    /* Each mechanism name is NUL-terminated and the list ends with an empty name;
     * sizeof includes the string literal's own final NUL, which is that empty name. */
    if (offer_plus)
        pg_put_auth(out, 10, plus, sizeof plus);
    else
        pg_put_auth(out, 10, plain, sizeof plain);
}

void pg_put_param_status(struct evbuffer *out, const char *name, const char *value)
{
    size_t nl = strlen(name) + 1, vl = strlen(value) + 1;
    char type = 'S';
    evbuffer_add(out, &type, 1);
    put_be32(out, (uint32_t)(4 + nl + vl));
    evbuffer_add(out, name, nl);
    evbuffer_add(out, value, vl);
}

void pg_put_backend_key(struct evbuffer *out, uint32_t pid, uint32_t key)
{
    char type = 'K';
    evbuffer_add(out, &type, 1);
    put_be32(out, 12);
    put_be32(out, pid);
    put_be32(out, key);
}

void pg_put_ready(struct evbuffer *out, char status) { pg_put_message(out, 'Z', &status, 1); }

void pg_put_query(struct evbuffer *out, const char *sql, size_t len)
{
    char type = 'Q';
    evbuffer_add(out, &type, 1);
    put_be32(out, (uint32_t)(len + 5));
    evbuffer_add(out, sql, len);
    evbuffer_add(out, "", 1);
}

void pg_put_startup(struct evbuffer *out, const pg_startup_param *params, size_t nparams)
{
    size_t len = 8 + 1;
    for (size_t i = 0; i < nparams; i++)
        len += strlen(params[i].name) + 1 + strlen(params[i].value) + 1;
    put_be32(out, (uint32_t)len);
    put_be32(out, PG_PROTOCOL_3_0);
    for (size_t i = 0; i < nparams; i++) {
        evbuffer_add(out, params[i].name, strlen(params[i].name) + 1);
        evbuffer_add(out, params[i].value, strlen(params[i].value) + 1);
    }
    evbuffer_add(out, "", 1);
}

void pg_put_negotiate_version(struct evbuffer *out, uint32_t newest_minor, const char *const *options,
                              size_t noptions)
{
    size_t len = 4 + 4 + 4;
    for (size_t i = 0; i < noptions; i++)
        len += strlen(options[i]) + 1;
    char type = 'v';
    evbuffer_add(out, &type, 1);
    put_be32(out, (uint32_t)len);
    put_be32(out, (3u << 16) | newest_minor);
    put_be32(out, (uint32_t)noptions);
    for (size_t i = 0; i < noptions; i++)
        evbuffer_add(out, options[i], strlen(options[i]) + 1);
}
