/*
 * PostgreSQL v3 wire format: pure functions over byte buffers, no sockets.
 *
 * Regular message:            Startup-phase packet (no type byte):
 *   +------+---------+------+   +---------+---------+--------------+
 *   | type | len u32 | body |   | len u32 | code u32| body         |
 *   +------+---------+------+   +---------+---------+--------------+
 *          '- len counts itself and the body, never the type byte.
 *
 * Every length is checked against a minimum before it is used and against a
 * caller-supplied maximum before anything is allocated for it.
 */
#ifndef PHIGATE_PG_WIRE_H
#define PHIGATE_PG_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define PG_PROTOCOL_3_0 196608u      /* 3 << 16 */
#define PG_SSL_REQUEST 80877103u     /* 1234 << 16 | 5679 */
#define PG_GSSENC_REQUEST 80877104u  /* 1234 << 16 | 5680 */
#define PG_CANCEL_REQUEST 80877102u  /* 1234 << 16 | 5678 */
#define PG_STARTUP_MIN 8u
#define PG_CANCEL_LEN 16u
#define PG_HEADER_LEN 5u

#define MUSTCHECK __attribute__((warn_unused_result))

/* One bounds-checked read cursor; every getter fails instead of reading past the end. */
typedef struct pg_cursor {
    const uint8_t *data;
    size_t len;
    size_t pos;
} pg_cursor;

void pg_cursor_init(pg_cursor *c, const void *data, size_t len);
MUSTCHECK bool pg_get_u8(pg_cursor *c, uint8_t *out);
MUSTCHECK bool pg_get_u16(pg_cursor *c, uint16_t *out);
MUSTCHECK bool pg_get_u32(pg_cursor *c, uint32_t *out);
MUSTCHECK bool pg_get_i32(pg_cursor *c, int32_t *out);
/* A NUL-terminated string inside the buffer; *out points into the buffer. */
MUSTCHECK bool pg_get_cstring(pg_cursor *c, const char **out, size_t *len);
MUSTCHECK bool pg_get_bytes(pg_cursor *c, size_t n, const uint8_t **out);
size_t pg_cursor_left(const pg_cursor *c);

typedef enum {
    PG_HDR_OK = 0,
    PG_HDR_NEED_MORE,  /* fewer than the header's bytes available */
    PG_HDR_TOO_SHORT,  /* length below the minimum: malformed */
    PG_HDR_TOO_LONG,   /* length above the caller's maximum: refuse before allocating */
} pg_header_result;

/* Startup-phase header: 4-byte length (including itself) then a 4-byte code. */
MUSTCHECK pg_header_result pg_parse_startup_header(const uint8_t *buf, size_t avail, uint32_t max_len,
                                                   uint32_t *len, uint32_t *code);
/* Regular header: type byte + 4-byte length.  *total is the whole message size (len + 1). */
MUSTCHECK pg_header_result pg_parse_header(const uint8_t *buf, size_t avail, uint32_t max_len, char *type,
                                           uint32_t *total);

/* Messages a client may send after startup, and those a server may send.
 * Anything else is a protocol violation. */
bool pg_frontend_type_known(char type);
bool pg_backend_type_known(char type);

#define PG_MAX_STARTUP_PARAMS 64
typedef struct pg_startup_param {
    const char *name;
    const char *value;
} pg_startup_param;

typedef struct pg_startup {
    uint32_t protocol;
    size_t nparams;
    pg_startup_param params[PG_MAX_STARTUP_PARAMS];
} pg_startup;

/* Parse the body of a StartupMessage (after len and code); pointers refer into body. */
MUSTCHECK bool pg_parse_startup_params(const uint8_t *body, size_t len, pg_startup *out);
const char *pg_startup_get(const pg_startup *s, const char *name);

/* ErrorResponse / NoticeResponse fields. */
typedef struct pg_error_field {
    char code;
    const char *value;
    size_t len;
} pg_error_field;
#define PG_MAX_ERROR_FIELDS 24
typedef struct pg_error_fields {
    size_t n;
    pg_error_field f[PG_MAX_ERROR_FIELDS];
} pg_error_fields;
MUSTCHECK bool pg_parse_error_fields(const uint8_t *body, size_t len, pg_error_fields *out);
const char *pg_error_field_get(const pg_error_fields *e, char code, size_t *len);

/* Builders: append a complete message to an evbuffer. */
void pg_put_error(struct evbuffer *out, const char *severity, const char *sqlstate, const char *message,
                  const char *detail, const char *hint);
void pg_put_auth(struct evbuffer *out, uint32_t code, const void *extra, size_t extra_len);
void pg_put_auth_sasl(struct evbuffer *out, bool offer_plus);
void pg_put_param_status(struct evbuffer *out, const char *name, const char *value);
void pg_put_backend_key(struct evbuffer *out, uint32_t pid, uint32_t key);
void pg_put_ready(struct evbuffer *out, char status);
void pg_put_query(struct evbuffer *out, const char *sql, size_t len);
void pg_put_message(struct evbuffer *out, char type, const void *body, size_t len);
void pg_put_startup(struct evbuffer *out, const pg_startup_param *params, size_t nparams);
void pg_put_negotiate_version(struct evbuffer *out, uint32_t newest_minor, const char *const *options,
                              size_t noptions);

#endif
