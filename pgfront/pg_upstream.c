/*
 * The upstream side of a session: connect, optional TLS, StartupMessage with
 * the credentials phigate holds, authentication (SCRAM-SHA-256, md5, cleartext
 * or trust), then ParameterStatus/BackendKeyData until the first ReadyForQuery.
 * The client never sees any of the upstream's credentials or keys.
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/md5.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/conn.h"
#include "gate/engines.h"
#include "gate/log.h"
#include "gate/tls.h"
#include "pgfront/pg_session.h"

#define UPSTREAM_AUTH_MAX 65536 /* authentication-phase messages from the server */

/* Startup parameters a client may pass through; anything else is dropped so a
 * client cannot change how phigate parses (e.g. "options=-c standard_conforming_strings=off"). */
static const char *const passthrough_params[] = {
    "client_encoding", "DateStyle", "TimeZone", "extra_float_digits", "IntervalStyle",
    "search_path", NULL,
};

static void upstream_fail(pg_session *s, const char *why)
{
    pg_session_log(s, LOG_LEVEL_WARN, "upstream %s: %s", s->up->name, why);
    char msg[300];
    snprintf(msg, sizeof msg, "phigate could not open the upstream database \"%s\": %s", s->up->name, why);
    pg_session_fail(s, "08006", msg, NULL);
}

static void send_startup(pg_session *s)
{
    pg_startup_param params[PG_MAX_STARTUP_PARAMS + 4];
    size_t n = 0;
    params[n++] = (pg_startup_param){"user", s->up->user};
    params[n++] = (pg_startup_param){"database", s->up->database};
    /* libpg_query parses like a server with standard_conforming_strings on: pin it. */
    params[n++] = (pg_startup_param){"standard_conforming_strings", "on"};
    /* The database's own logs (log_line_prefix %a, pg_stat_activity, pgaudit)
     * attribute the session to the agent, not to phigate's shared login. */
    char app[200]; /* the server keeps the first 63 bytes */
    const char *client_app = pg_startup_get(&s->startup, "application_name");
    snprintf(app, sizeof app, "phigate/%s/%llu%s%s", s->user, (unsigned long long)s->id,
             client_app && *client_app ? "/" : "", client_app ? client_app : "");
    params[n++] = (pg_startup_param){"application_name", app};
    for (size_t i = 0; i < s->startup.nparams; i++)
        for (const char *const *p = passthrough_params; *p; p++)
            if (strcmp(s->startup.params[i].name, *p) == 0 && n < sizeof params / sizeof params[0])
                params[n++] = s->startup.params[i];
    pg_put_startup(conn_output(s->upstream), params, n);
    pg_session_set_ustate(s, PGU_AUTH);
}

static void md5_hex(const char *a, size_t alen, const char *b, size_t blen, char out[33])
{
    uint8_t digest[16];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int dl;
    EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
    EVP_DigestUpdate(ctx, a, alen);
    EVP_DigestUpdate(ctx, b, blen);
    EVP_DigestFinal_ex(ctx, digest, &dl);
    EVP_MD_CTX_free(ctx);
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

static void send_password_message(pg_session *s, const char *text)
{
    pg_put_message(conn_output(s->upstream), 'p', text, strlen(text) + 1);
}

static bool need_password(pg_session *s)
{
    if (s->up->password)
        return true;
    upstream_fail(s, "the server asks for a password but none is configured");
    return false;
}

/* SASL mechanisms list: NUL-terminated names. */
static void start_upstream_sasl(pg_session *s, pg_cursor *c)
{
    bool scram = false;
    const char *mech;
    while (pg_get_cstring(c, &mech, NULL) && *mech)
        if (strcmp(mech, "SCRAM-SHA-256") == 0)
            scram = true;
    if (!scram) {
        upstream_fail(s, "the server offers no SASL mechanism phigate supports");
        return;
    }
    if (!need_password(s))
        return;
    char first[SCRAM_MAX_MESSAGE];
    if (!scram_client_first(&s->upscram, s->up->password, first, sizeof first)) {
        upstream_fail(s, "SCRAM setup failed");
        return;
    }
    struct evbuffer *b = evbuffer_new();
    uint32_t len = htonl((uint32_t)strlen(first));
    evbuffer_add(b, "SCRAM-SHA-256", 14);
    evbuffer_add(b, &len, 4);
    evbuffer_add(b, first, strlen(first));
    size_t blen = evbuffer_get_length(b);
    pg_put_message(conn_output(s->upstream), 'p', evbuffer_pullup(b, -1), blen);
    evbuffer_free(b);
}

static void handle_auth_request(pg_session *s, pg_cursor *c)
{
    uint32_t code;
    const char *err = NULL;
    char out[SCRAM_MAX_MESSAGE];
    if (!pg_get_u32(c, &code)) {
        upstream_fail(s, "malformed authentication request");
        return;
    }
    switch (code) {
    case 0: /* AuthenticationOk */
        return;
    case 3: /* cleartext: only the upstream's own password, never an agent's */
        if (need_password(s))
            send_password_message(s, s->up->password);
        return;
    case 5: { /* md5("md5" + md5(password + user) + salt) */
        const uint8_t *salt;
        char inner[33], outer[36] = "md5";
        if (!pg_get_bytes(c, 4, &salt)) {
            upstream_fail(s, "malformed md5 request");
            return;
        }
        if (!need_password(s))
            return;
        md5_hex(s->up->password, strlen(s->up->password), s->up->user, strlen(s->up->user), inner);
        md5_hex(inner, 32, (const char *)salt, 4, outer + 3);
        send_password_message(s, outer);
        return;
    }
    case 10:
        start_upstream_sasl(s, c);
        return;
    case 11:
        if (!scram_client_final(&s->upscram, (const char *)c->data + c->pos, pg_cursor_left(c), out, sizeof out,
                                &err)) {
            upstream_fail(s, err);
            return;
        }
        pg_put_message(conn_output(s->upstream), 'p', out, strlen(out));
        return;
    case 12:
        if (!scram_client_verify_server(&s->upscram, (const char *)c->data + c->pos, pg_cursor_left(c), &err))
            upstream_fail(s, err);
        return;
    default:
        upstream_fail(s, "the server asks for an authentication method phigate does not support");
        return;
    }
}

static void report_upstream_error(pg_session *s, const uint8_t *body, size_t len)
{
    pg_error_fields f;
    const char *msg = NULL, *code = NULL;
    if (pg_parse_error_fields(body, len, &f)) {
        msg = pg_error_field_get(&f, 'M', NULL);
        code = pg_error_field_get(&f, 'C', NULL);
    }
    char why[400];
    snprintf(why, sizeof why, "the server refused phigate's login: %s (SQLSTATE %s)", msg ? msg : "?",
             code ? code : "?");
    upstream_fail(s, why);
}

static void handle_startup_reply(pg_session *s, char type, const uint8_t *body, size_t len)
{
    pg_cursor c;
    pg_cursor_init(&c, body, len);
    switch (type) {
    case 'R':
        handle_auth_request(s, &c);
        return;
    case 'E':
        report_upstream_error(s, body, len);
        return;
    case 'S':
        pg_put_message(s->param_status, 'S', body, len);
        return;
    case 'K':
        if (!pg_get_u32(&c, &s->up_pid) || !pg_get_u32(&c, &s->up_key))
            upstream_fail(s, "malformed BackendKeyData");
        return;
    case 'N': /* notices during startup are not the agent's business */
    case 'v':
        return;
    case 'Z':
        pg_session_set_ustate(s, PGU_READY);
        pg_relay_start(s);
        return;
    default:
        upstream_fail(s, "unexpected message during startup");
        return;
    }
}

static void read_startup_replies(pg_session *s)
{
    struct evbuffer *in = conn_input(s->upstream);
    while (s->ustate == PGU_AUTH && s->state == PGC_CONNECTING) {
        uint8_t hdr[PG_HEADER_LEN];
        size_t avail = evbuffer_get_length(in);
        char type;
        uint32_t total;
        evbuffer_copyout(in, hdr, avail < sizeof hdr ? avail : sizeof hdr);
        pg_header_result r = pg_parse_header(hdr, avail, UPSTREAM_AUTH_MAX, &type, &total);
        if (r == PG_HDR_NEED_MORE)
            return;
        if (r != PG_HDR_OK) {
            upstream_fail(s, "malformed message from the server");
            return;
        }
        if (avail < total)
            return;
        /* Taken out of the buffer before handling: ReadyForQuery hands the rest of
         * the input to the relay, which must not see this message again. */
        uint8_t *msg = malloc(total);
        evbuffer_remove(in, msg, total);
        handle_startup_reply(s, type, msg + PG_HEADER_LEN, total - PG_HEADER_LEN);
        free(msg);
    }
}

static void read_ssl_answer(pg_session *s)
{
    struct evbuffer *in = conn_input(s->upstream);
    char answer;
    if (evbuffer_remove(in, &answer, 1) != 1)
        return;
    if (evbuffer_get_length(in) != 0) {
        /* Bytes after the answer and before the handshake would be unencrypted injection. */
        upstream_fail(s, "unexpected data after the SSL answer");
        return;
    }
    if (answer == 'N') {
        if (s->up->tls_mode >= UPSTREAM_TLS_REQUIRE) {
            upstream_fail(s, "the server does not support TLS but the configuration requires it");
            return;
        }
        send_startup(s);
        return;
    }
    if (answer != 'S') {
        upstream_fail(s, "invalid answer to SSLRequest");
        return;
    }
    SSL *ssl = SSL_new(pg_server_upstream_tls(s->server, s->upstream_index));
    int verify = s->up->tls_mode == UPSTREAM_TLS_VERIFY_FULL ? 2 : s->up->tls_mode == UPSTREAM_TLS_VERIFY_CA ? 1 : 0;
    if (!ssl || !tls_client_prepare(ssl, s->up->host, verify)) {
        SSL_free(ssl);
        upstream_fail(s, "TLS setup failed");
        return;
    }
    pg_session_set_ustate(s, PGU_TLS_HANDSHAKE);
    if (!conn_start_tls(s->upstream, ssl, false)) {
        if (!conn_ssl(s->upstream))
            SSL_free(ssl);
        upstream_fail(s, "TLS setup failed");
        return;
    }
    s->upstream_tls = true;
}

void pg_upstream_on_data(pg_session *s)
{
    if (s->ustate == PGU_SSL_ANSWER)
        read_ssl_answer(s);
    else if (s->ustate == PGU_AUTH)
        read_startup_replies(s);
    else if (s->ustate == PGU_READY)
        pg_relay_upstream_data(s);
}

static void on_connected(pg_session *s)
{
    if (s->ustate == PGU_TLS_HANDSHAKE) {
        send_startup(s);
    } else if (pg_server_upstream_tls(s->server, s->upstream_index)) {
        static const uint8_t sslreq[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
        evbuffer_add(conn_output(s->upstream), sslreq, sizeof sslreq);
        pg_session_set_ustate(s, PGU_SSL_ANSWER);
    } else {
        send_startup(s);
    }
}

void pg_upstream_on_event(pg_session *s, int ev)
{
    if (ev == CONN_CONNECTED) {
        on_connected(s);
        return;
    }
    if (s->state == PGC_ACTIVE) {
        if (!s->terminating)
            pg_session_log(s, LOG_LEVEL_WARN, "upstream connection lost: %s", conn_error(s->upstream));
        pg_relay_upstream_closed(s);
        return;
    }
    char why[300];
    if (s->ustate == PGU_CONNECTING)
        snprintf(why, sizeof why, "cannot connect to %s:%d (%s)", s->up->host, s->up->port, conn_error(s->upstream));
    else
        snprintf(why, sizeof why, "%s", ev == CONN_EOF ? "the server closed the connection" : conn_error(s->upstream));
    upstream_fail(s, why);
}

static int find_upstream_index(const config *cfg, const cfg_upstream *up)
{
    return (int)(up - cfg->upstreams);
}

void pg_upstream_start(pg_session *s)
{
    const config *cfg = pg_server_config(s->server);
    s->up = config_find_upstream_for(cfg, "postgres", s->database);
    if (!s->up || strcmp(s->up->protocol, "postgres") != 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "database \"%.64s\" does not exist", s->database);
        pg_session_fail(s, "3D000", msg, "phigate serves the databases named under upstreams: in its configuration");
        return;
    }
    if (!s->role || !config_role_allows_upstream(s->role, s->up->name)) {
        char msg[200];
        snprintf(msg, sizeof msg, "identity \"%.64s\" is not allowed to use database \"%.64s\"", s->user,
                 s->database);
        pg_session_fail(s, "42501", msg, NULL);
        return;
    }
    s->upstream_index = find_upstream_index(cfg, s->up);
    pg_session_arm_timer(s, s->up->connect_timeout_ms);
    engines_request(pg_server_engines(s->server), s->upstream_index, s);
}

void pg_upstream_engine_ready(pg_session *s, sqlp_engine *engine, const char *err)
{
    if (s->state != PGC_CONNECTING) {
        if (engine)
            sqlp_engine_unref(engine);
        return;
    }
    if (!engine) {
        /* Fail closed: without the catalog no statement can be analysed. */
        char msg[700];
        snprintf(msg, sizeof msg, "phigate cannot analyse statements for database \"%s\": %s", s->up->name, err);
        pg_session_fail(s, "08006", msg, NULL);
        return;
    }
    s->engine = engine;
    s->param_status = evbuffer_new();
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (!pg_server_upstream_addr(s->server, s->upstream_index, &ss, &sslen)) {
        upstream_fail(s, "no address");
        return;
    }
    pg_session_set_ustate(s, PGU_CONNECTING);
    pg_session_arm_timer(s, s->up->connect_timeout_ms);
    s->upstream = conn_connect(pg_server_base(s->server), (struct sockaddr *)&ss, sslen);
    if (!s->upstream) {
        upstream_fail(s, "cannot create a socket");
        return;
    }
    pg_session_upstream_callbacks(s);
}
