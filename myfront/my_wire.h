/*
 * MySQL client/server protocol: pure functions over byte buffers, no sockets.
 *
 * Every packet on the wire:
 *
 *   +----------------+--------+--------------------------+
 *   | length u24 LE  | seq u8 | payload (length bytes)   |
 *   +----------------+--------+--------------------------+
 *
 * A payload of 2^24-1 bytes or more is split: every full-size packet
 * (length 0xffffff) is continued by the next one, and the chain ends with a
 * shorter packet (possibly empty).  Sequence ids count up by one per packet,
 * wrapping at 256, from 0 at the start of each command.
 *
 *   logical payload of 40 MB:
 *   [ffffff|n][16 MB ...][ffffff|n+1][16 MB ...][7fffff|n+2][8 MB]
 *
 * The chain walker (my_chain_step) checks each header as it arrives: the sum
 * of the claimed lengths against the caller's maximum, and the sequence ids,
 * so an oversized or out-of-order packet is refused before its body is read.
 *
 * Integers are little-endian.  Length-encoded integers ("lenenc"):
 *   < 0xfb: the value itself;  0xfc + u16;  0xfd + u24;  0xfe + u64;
 *   0xfb is NULL in a text row, 0xff is invalid (it starts an ERR packet).
 */
#ifndef PHIGATE_MY_WIRE_H
#define PHIGATE_MY_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define MY_MUSTCHECK __attribute__((warn_unused_result))

#define MY_HEADER_LEN 4u
#define MY_MAX_PACKET 0xffffffu /* a physical packet's largest payload */
#define MY_SCRAMBLE_LEN 20u

/* Capability flags: one X-macro so the names for logs never drift. */
#define MY_CAPABILITIES(X) \
    X(LONG_PASSWORD, 0) X(FOUND_ROWS, 1) X(LONG_FLAG, 2) X(CONNECT_WITH_DB, 3) X(NO_SCHEMA, 4) \
    X(COMPRESS, 5) X(ODBC, 6) X(LOCAL_FILES, 7) X(IGNORE_SPACE, 8) X(PROTOCOL_41, 9) \
    X(INTERACTIVE, 10) X(SSL, 11) X(IGNORE_SIGPIPE, 12) X(TRANSACTIONS, 13) X(RESERVED, 14) \
    X(SECURE_CONNECTION, 15) X(MULTI_STATEMENTS, 16) X(MULTI_RESULTS, 17) X(PS_MULTI_RESULTS, 18) \
    X(PLUGIN_AUTH, 19) X(CONNECT_ATTRS, 20) X(PLUGIN_AUTH_LENENC_DATA, 21) \
    X(CAN_HANDLE_EXPIRED_PASSWORDS, 22) X(SESSION_TRACK, 23) X(DEPRECATE_EOF, 24) \
    X(OPTIONAL_RESULTSET_METADATA, 25) X(ZSTD_COMPRESSION, 26) X(QUERY_ATTRIBUTES, 27) \
    X(MULTI_FACTOR_AUTH, 28) X(PROGRESS, 29) X(SSL_VERIFY_SERVER_CERT, 30) X(REMEMBER_OPTIONS, 31)

enum {
#define MY_CAP_ENUM(name, bit) MY_CAPBIT_##name = bit,
    MY_CAPABILITIES(MY_CAP_ENUM)
#undef MY_CAP_ENUM
};
/* The flag itself: MY_CAP(SSL) == 0x800. */
#define MY_CAP(name) ((uint32_t)1u << MY_CAPBIT_##name)
/* Names of the set bits, "PROTOCOL_41|SSL|...", for logs. */
const char *my_caps_string(uint32_t caps, char *out, size_t outlen);

/* Server status flags (OK and EOF packets). */
#define MY_STATUS_IN_TRANS 0x0001u
#define MY_STATUS_AUTOCOMMIT 0x0002u
#define MY_STATUS_MORE_RESULTS 0x0008u
#define MY_STATUS_CURSOR_EXISTS 0x0040u
#define MY_STATUS_NO_BACKSLASH_ESCAPES 0x0200u
#define MY_STATUS_PS_OUT_PARAMS 0x1000u
#define MY_STATUS_SESSION_STATE_CHANGED 0x4000u

/* Commands (first payload byte of a client packet after login). */
#define MY_COMMANDS(X) \
    X(SLEEP, 0x00) X(QUIT, 0x01) X(INIT_DB, 0x02) X(QUERY, 0x03) X(FIELD_LIST, 0x04) \
    X(CREATE_DB, 0x05) X(DROP_DB, 0x06) X(REFRESH, 0x07) X(SHUTDOWN, 0x08) X(STATISTICS, 0x09) \
    X(PROCESS_INFO, 0x0a) X(CONNECT, 0x0b) X(PROCESS_KILL, 0x0c) X(DEBUG, 0x0d) X(PING, 0x0e) \
    X(TIME, 0x0f) X(DELAYED_INSERT, 0x10) X(CHANGE_USER, 0x11) X(BINLOG_DUMP, 0x12) \
    X(TABLE_DUMP, 0x13) X(CONNECT_OUT, 0x14) X(REGISTER_SLAVE, 0x15) X(STMT_PREPARE, 0x16) \
    X(STMT_EXECUTE, 0x17) X(STMT_SEND_LONG_DATA, 0x18) X(STMT_CLOSE, 0x19) X(STMT_RESET, 0x1a) \
    X(SET_OPTION, 0x1b) X(STMT_FETCH, 0x1c) X(DAEMON, 0x1d) X(BINLOG_DUMP_GTID, 0x1e) \
    X(RESET_CONNECTION, 0x1f) X(STMT_BULK_EXECUTE, 0xfa)

enum {
#define MY_COM_ENUM(name, code) MY_COM_##name = code,
    MY_COMMANDS(MY_COM_ENUM)
#undef MY_COM_ENUM
};
/* "COM_QUERY", or "COM_0x42" for an unknown byte (out must hold 12 bytes). */
const char *my_command_name(uint8_t cmd, char out[12]);

/* Column types that matter for binary rows and parameters. */
#define MY_TYPE_DECIMAL 0x00
#define MY_TYPE_TINY 0x01
#define MY_TYPE_SHORT 0x02
#define MY_TYPE_LONG 0x03
#define MY_TYPE_FLOAT 0x04
#define MY_TYPE_DOUBLE 0x05
#define MY_TYPE_NULL 0x06
#define MY_TYPE_TIMESTAMP 0x07
#define MY_TYPE_LONGLONG 0x08
#define MY_TYPE_INT24 0x09
#define MY_TYPE_DATE 0x0a
#define MY_TYPE_TIME 0x0b
#define MY_TYPE_DATETIME 0x0c
#define MY_TYPE_YEAR 0x0d
#define MY_TYPE_NEWDATE 0x0e
#define MY_TYPE_VARCHAR 0x0f
#define MY_TYPE_TIMESTAMP2 0x11
#define MY_TYPE_DATETIME2 0x12
#define MY_TYPE_TIME2 0x13

/* Error numbers and SQLSTATEs phigate sends itself. */
#define MY_ER_CON_COUNT 1040           /* 08004 too many connections */
#define MY_ER_HANDSHAKE 1043           /* 08S01 bad handshake */
#define MY_ER_DBACCESS_DENIED 1044     /* 42000 */
#define MY_ER_ACCESS_DENIED 1045       /* 28000 */
#define MY_ER_UNKNOWN_COM 1047         /* 08S01 */
#define MY_ER_BAD_DB 1049              /* 42000 */
#define MY_ER_UNKNOWN_ERROR 1105       /* HY000 */
#define MY_ER_TABLEACCESS_DENIED 1142  /* 42000: the policy refusal */
#define MY_ER_NOT_ALLOWED_COMMAND 1148 /* 42000: LOAD DATA LOCAL */
#define MY_ER_NET_PACKET_TOO_LARGE 1153 /* 08S01 */
#define MY_ER_NET_READ_ERROR 1158      /* 08S01 */
#define MY_ER_NET_PACKETS_OUT_OF_ORDER 1156 /* 08S01 */
#define MY_ER_UNKNOWN_STMT_HANDLER 1243 /* HY000 */
#define MY_ER_NOT_SUPPORTED_AUTH_MODE 1251 /* 08004 */
#define MY_ER_MALFORMED_PACKET 1835    /* HY000 */
#define MY_ER_SECURE_TRANSPORT_REQUIRED 3159 /* HY000 */

/* ---- the read cursor ---------------------------------------------------------
 * One bounds-checked cursor; every getter returns false instead of reading past
 * the end, and leaves the cursor where it was on failure. */
typedef struct my_cursor {
    const uint8_t *data;
    size_t len;
    size_t pos;
} my_cursor;

void my_cursor_init(my_cursor *c, const void *data, size_t len);
size_t my_cursor_left(const my_cursor *c);
MY_MUSTCHECK bool my_get_u8(my_cursor *c, uint8_t *out);
MY_MUSTCHECK bool my_get_u16(my_cursor *c, uint16_t *out);
MY_MUSTCHECK bool my_get_u24(my_cursor *c, uint32_t *out);
MY_MUSTCHECK bool my_get_u32(my_cursor *c, uint32_t *out);
MY_MUSTCHECK bool my_get_u64(my_cursor *c, uint64_t *out);
MY_MUSTCHECK bool my_get_bytes(my_cursor *c, size_t n, const uint8_t **out);
MY_MUSTCHECK bool my_skip(my_cursor *c, size_t n);
/* NUL-terminated string inside the buffer; *out points into it. */
MY_MUSTCHECK bool my_get_cstring(my_cursor *c, const char **out, size_t *len);
/* Length-encoded integer; false on truncation and on 0xfb/0xff (never a value). */
MY_MUSTCHECK bool my_get_lenenc(my_cursor *c, uint64_t *out);
/* Length-encoded string: *out points into the buffer (not NUL-terminated). */
MY_MUSTCHECK bool my_get_lenenc_str(my_cursor *c, const uint8_t **out, size_t *len);
/* A text-row value: lenenc string or NULL (0xfb). */
MY_MUSTCHECK bool my_get_text_value(my_cursor *c, const uint8_t **out, size_t *len, bool *is_null);
/* The rest of the buffer. */
void my_get_rest(my_cursor *c, const uint8_t **out, size_t *len);

/* Bytes a lenenc integer takes, from its first byte: 1, 3, 4, 9; 0 = not an integer. */
size_t my_lenenc_size(uint8_t first);

/* ---- framing -------------------------------------------------------------- */

/* Header fields of one physical packet (needs MY_HEADER_LEN bytes). */
void my_parse_header(const uint8_t hdr[MY_HEADER_LEN], uint32_t *len, uint8_t *seq);

typedef enum {
    MY_CHAIN_MORE = 0,    /* a continuation packet follows this one */
    MY_CHAIN_DONE,        /* this packet ends the logical payload */
    MY_CHAIN_TOO_LONG,    /* the claimed total exceeds the maximum: refuse before reading it */
    MY_CHAIN_BAD_SEQ,     /* sequence id out of order */
} my_chain_result;

/* Walks the headers of one logical packet.  Zero it, set max (largest logical
 * payload accepted) and seq (the id the first packet must carry), then feed
 * each header in turn. */
typedef struct my_chain {
    uint64_t max;
    uint64_t payload;     /* payload bytes claimed so far */
    uint8_t seq;          /* id the next header must carry */
    uint32_t npackets;
    bool check_seq;       /* false: take the first packet's id as given */
} my_chain;

void my_chain_init(my_chain *c, uint64_t max, bool check_seq, uint8_t first_seq);
MY_MUSTCHECK my_chain_result my_chain_step(my_chain *c, const uint8_t hdr[MY_HEADER_LEN]);

/* Copy the payload of a whole chain (headers stripped) out of wire bytes.
 * wire holds exactly the chain; out must have room for the payload. */
void my_chain_payload(const uint8_t *wire, size_t wire_len, uint8_t *out);

/* ---- builders: append complete packets to an evbuffer ----------------------- */

/* Payloads of 16 MB and more are split into continuation packets; returns the
 * id of the last packet written. */
uint8_t my_put_packet(struct evbuffer *out, uint8_t seq, const void *payload, size_t len);
void my_put_lenenc(struct evbuffer *out, uint64_t v);
void my_put_lenenc_str(struct evbuffer *out, const void *s, size_t len);
/* Encode a lenenc integer into buf (9 bytes); returns its size. */
size_t my_encode_lenenc(uint8_t buf[9], uint64_t v);

typedef struct my_handshake_params {
    const char *server_version;
    uint32_t connection_id;
    const uint8_t *scramble;  /* MY_SCRAMBLE_LEN bytes, none of them 0 */
    uint32_t capabilities;
    uint8_t charset;
    uint16_t status;
    const char *auth_plugin;
} my_handshake_params;

void my_put_handshake_v10(struct evbuffer *out, const my_handshake_params *p);
/* ERR: 0xff, errno, '#' SQLSTATE (with PROTOCOL_41), message. */
void my_put_err(struct evbuffer *out, uint8_t seq, uint16_t code, const char *sqlstate, const char *msg);
void my_put_ok(struct evbuffer *out, uint8_t seq, uint8_t header, uint64_t affected, uint64_t insert_id,
               uint16_t status, uint16_t warnings, const char *info, size_t info_len);
void my_put_eof(struct evbuffer *out, uint8_t seq, uint16_t warnings, uint16_t status);
/* AuthSwitchRequest: 0xfe, plugin name NUL, data. */
void my_put_auth_switch(struct evbuffer *out, uint8_t seq, const char *plugin, const void *data, size_t len);
/* AuthMoreData: 0x01 + data (caching_sha2 uses 0x04 = "perform full authentication"). */
void my_put_auth_more(struct evbuffer *out, uint8_t seq, const void *data, size_t len);

/* ---- parsers ------------------------------------------------------------------ */

/* SSLRequest: the first 32 bytes of a HandshakeResponse41, nothing else. */
#define MY_SSL_REQUEST_LEN 32u

#define MY_MAX_USER 128
#define MY_MAX_DB 128
#define MY_MAX_PLUGIN 64
#define MY_MAX_AUTH 512

typedef struct my_handshake_response {
    uint32_t capabilities;
    uint32_t max_packet;
    uint8_t charset;
    bool ssl_request;          /* it was only the 32-byte SSLRequest */
    const char *user;          /* points into the payload */
    size_t user_len;
    const uint8_t *auth;
    size_t auth_len;
    const char *database;      /* NULL when none */
    size_t database_len;
    const char *plugin;        /* NULL when none */
    size_t plugin_len;
} my_handshake_response;

typedef enum {
    MY_HR_OK = 0,
    MY_HR_MALFORMED,
    MY_HR_OLD_PROTOCOL,        /* no CLIENT_PROTOCOL_41 */
    MY_HR_TOO_LONG,            /* a field is over phigate's limit */
} my_hr_result;

/* A client's HandshakeResponse41 (or SSLRequest).  Pointers refer into payload. */
MY_MUSTCHECK my_hr_result my_parse_handshake_response(const uint8_t *payload, size_t len,
                                                      my_handshake_response *out);

/* A server's Initial Handshake v10 (phigate as a client of the upstream). */
typedef struct my_server_handshake {
    uint8_t protocol;
    const char *version;       /* points into the payload */
    uint32_t connection_id;
    uint8_t scramble[MY_SCRAMBLE_LEN];
    size_t scramble_len;
    uint32_t capabilities;
    uint8_t charset;
    uint16_t status;
    const char *plugin;        /* NULL when the server names none */
    size_t plugin_len;
} my_server_handshake;
MY_MUSTCHECK bool my_parse_server_handshake(const uint8_t *payload, size_t len, my_server_handshake *out);

/* HandshakeResponse41 phigate sends upstream. */
typedef struct my_client_login {
    uint32_t capabilities;
    uint32_t max_packet;
    uint8_t charset;
    const char *user;
    const uint8_t *auth;
    size_t auth_len;
    const char *database;      /* NULL = none */
    const char *plugin;
} my_client_login;
void my_put_handshake_response(struct evbuffer *out, uint8_t seq, const my_client_login *l);
void my_put_ssl_request(struct evbuffer *out, uint8_t seq, uint32_t caps, uint32_t max_packet, uint8_t charset);

/* OK packet (header 0x00, or 0xfe when it ends a result set under DEPRECATE_EOF). */
typedef struct my_ok {
    uint8_t header;
    uint64_t affected_rows;
    uint64_t insert_id;
    uint16_t status;
    uint16_t warnings;
    const uint8_t *info;       /* may be NULL */
    size_t info_len;
    const uint8_t *state;      /* session state changes (SESSION_TRACK), NULL when none */
    size_t state_len;
} my_ok;
MY_MUSTCHECK bool my_parse_ok(const uint8_t *payload, size_t len, uint32_t caps, my_ok *out);

/* Walk the session-state changes of an OK packet, one entry at a time. */
#define MY_TRACK_SYSTEM_VARIABLES 0
#define MY_TRACK_SCHEMA 1
typedef struct my_state_change {
    uint8_t type;
    const uint8_t *name;       /* SYSTEM_VARIABLES: variable; SCHEMA: the schema */
    size_t name_len;
    const uint8_t *value;      /* SYSTEM_VARIABLES only */
    size_t value_len;
} my_state_change;
/* true with *out filled, false at the end; *bad set when malformed. */
MY_MUSTCHECK bool my_next_state_change(my_cursor *c, my_state_change *out, bool *bad);

typedef struct my_err {
    uint16_t code;
    char sqlstate[6];          /* "HY000" when the packet has none */
    const char *message;       /* points into the payload, not NUL-terminated */
    size_t message_len;
} my_err;
MY_MUSTCHECK bool my_parse_err(const uint8_t *payload, size_t len, my_err *out);

/* EOF packet: 0xfe, warnings, status; shorter than 9 bytes. */
MY_MUSTCHECK bool my_parse_eof(const uint8_t *payload, size_t len, uint16_t *warnings, uint16_t *status);

/* Does a packet of this length starting with this byte end a result set?
 * Without DEPRECATE_EOF an EOF is 0xfe and < 9 bytes (a row that starts with
 * 0xfe holds an 8-byte length, so it is longer); with it an OK with 0xfe header
 * shorter than a full-size packet. */
bool my_is_terminator(uint8_t first, uint32_t len, bool deprecate_eof);

/* ColumnDefinition41. */
typedef struct my_column_def {
    const uint8_t *schema, *table, *org_table, *name, *org_name;
    size_t schema_len, table_len, org_table_len, name_len, org_name_len;
    uint16_t charset;
    uint32_t length;
    uint8_t type;
    uint16_t flags;
    uint8_t decimals;
} my_column_def;
MY_MUSTCHECK bool my_parse_column_def(const uint8_t *payload, size_t len, my_column_def *out);

/* COM_STMT_PREPARE_OK. */
typedef struct my_prepare_ok {
    uint32_t statement_id;
    uint16_t columns;
    uint16_t params;
    uint16_t warnings;
} my_prepare_ok;
MY_MUSTCHECK bool my_parse_prepare_ok(const uint8_t *payload, size_t len, my_prepare_ok *out);

/* Length of one binary-protocol value of a type, with the cursor at the value;
 * advances past it.  Unsigned flag (0x80 in parameter types) is ignored. */
MY_MUSTCHECK bool my_skip_binary_value(my_cursor *c, uint8_t type);

/* ---- authentication (pure crypto through OpenSSL) ------------------------------ */

/* mysql_native_password client response: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw))).
 * An empty password gives an empty response (*outlen 0). */
void my_native_response(const char *password, const uint8_t scramble[MY_SCRAMBLE_LEN], uint8_t out[20],
                        size_t *outlen);
/* Server check of a native response against the stored SHA1(SHA1(pw)); constant time. */
MY_MUSTCHECK bool my_native_verify(const uint8_t stored[20], const uint8_t scramble[MY_SCRAMBLE_LEN],
                                   const uint8_t *response, size_t len);
/* caching_sha2_password fast-auth client response:
 * SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + scramble). */
void my_sha2_response(const char *password, const uint8_t scramble[MY_SCRAMBLE_LEN], uint8_t out[32],
                      size_t *outlen);
/* caching_sha2 full authentication checked against a SCRAM-SHA-256 verifier:
 * PBKDF2-HMAC-SHA256(password, salt, iterations) -> ClientKey -> SHA-256,
 * compared with StoredKey in constant time. */
MY_MUSTCHECK bool my_scram_password_ok(const char *password, size_t len, const uint8_t *salt, size_t salt_len,
                                       int iterations, const uint8_t stored_key[32]);

#endif
