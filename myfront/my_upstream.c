/*
 * The upstream side of a session, phigate as a MySQL client:
 *
 *   phigate                                  MySQL / MariaDB
 *   connect          ------------------->
 *                    <-------------------   HandshakeV10 (seq 0)
 *   [SSLRequest 1]   ------------------->   (TLS when the upstream's tls: asks for it)
 *   HandshakeResponse41 (credentials phigate holds, the client's charset and
 *   its FOUND_ROWS / MULTI_* / DEPRECATE_EOF choices, SESSION_TRACK for us)
 *                    <-------------------   OK | ERR | AuthSwitchRequest | AuthMoreData
 *   SET SESSION session_track_schema=ON, session_track_system_variables='*'
 *                    <-------------------   OK            (then the client gets its OK)
 *
 * Capabilities that change framing are the client's, mirrored: the client and
 * the upstream agree on DEPRECATE_EOF, so result sets pass through unchanged;
 * an upstream that cannot follow the client is refused with the reason.
 * Session tracking is phigate's own: the upstream reports every change of
 * database and of session variables in its OK packets, which the relay reads
 * (and strips, since the client did not ask for it).
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/conn.h"
#include "gate/engines.h"
#include "gate/log.h"
#include "gate/tls.h"
#include "myfront/my_session.h"

#define UPSTREAM_LOGIN_MAX 65536 /* login-phase packets from the server */
#define UPSTREAM_MAX_PACKET 0x40000000u /* what phigate tells the server it accepts (1 GB) */

/* Client choices passed on as they are (they change what the server sends). */
#define MIRRORED_CAPS \
    (MY_CAP(LONG_PASSWORD) | MY_CAP(FOUND_ROWS) | MY_CAP(LONG_FLAG) | MY_CAP(INTERACTIVE) | \
     MY_CAP(TRANSACTIONS) | MY_CAP(MULTI_STATEMENTS) | MY_CAP(MULTI_RESULTS) | MY_CAP(PS_MULTI_RESULTS) | \
     MY_CAP(DEPRECATE_EOF))
/* What phigate itself needs from the upstream. */
#define OWN_CAPS \
    (MY_CAP(PROTOCOL_41) | MY_CAP(SECURE_CONNECTION) | MY_CAP(PLUGIN_AUTH) | MY_CAP(PLUGIN_AUTH_LENENC_DATA) | \
     MY_CAP(CONNECT_WITH_DB) | MY_CAP(SESSION_TRACK))

static void upstream_fail(my_session *s, const char *why)
{
    my_session_log(s, LOG_LEVEL_WARN, "upstream %s: %s", s->up ? s->up->name : "?", why);
    char msg[400];
    snprintf(msg, sizeof msg, "phigate could not open the upstream database \"%s\": %s", s->up ? s->up->name : "?",
             why);
    my_session_fail(s, MY_ER_UNKNOWN_ERROR, "HY000", msg);
}

const cfg_upstream *my_upstream_for(my_session *s, const char *database, uint16_t *code, char *why, size_t whylen)
{
    const config *cfg = my_server_config(s->server);
    const cfg_role *role = s->role;
    if (!role) {
        *code = MY_ER_DBACCESS_DENIED;
        snprintf(why, whylen, "Access denied for user '%.64s'@'%s': no role", s->user, s->client_host);
        return NULL;
    }
    if (!database || !*database) {
        /* No database named: the first MySQL upstream the role lists. */
        for (char **u = role->upstreams; u && *u; u++) {
            const cfg_upstream *up = config_find_upstream(cfg, *u);
            if (up && strcmp(up->protocol, "mysql") == 0)
                return up;
        }
        *code = MY_ER_DBACCESS_DENIED;
        snprintf(why, whylen, "Access denied for user '%.64s'@'%s': the role may use no MySQL database", s->user,
                 s->client_host);
        return NULL;
    }
    const cfg_upstream *up = config_find_upstream_for(cfg, "mysql", database);
    if (!up || strcmp(up->protocol, "mysql") != 0) {
        *code = MY_ER_BAD_DB;
        snprintf(why, whylen, "Unknown database '%.64s' (phigate serves the MySQL databases named under upstreams:)",
                 database);
        return NULL;
    }
    if (!config_role_allows_upstream(role, up->name)) {
        *code = MY_ER_DBACCESS_DENIED;
        snprintf(why, whylen, "Access denied for user '%.64s'@'%s' to database '%.64s'", s->user, s->client_host,
                 database);
        return NULL;
    }
    return up;
}

/* ---- login -------------------------------------------------------------------- */

static void send_login(my_session *s, const char *plugin)
{
    const char *pw = s->up->password;
    uint8_t auth[32];
    size_t alen = 0;
    bool sha2 = plugin && strcmp(plugin, "caching_sha2_password") == 0;
    if (sha2)
        my_sha2_response(pw, s->up_scramble, auth, &alen);
    else
        my_native_response(pw, s->up_scramble, auth, &alen);
    my_client_login l = {
        .capabilities = s->up_caps,
        .max_packet = UPSTREAM_MAX_PACKET,
        .charset = s->charset,
        .user = s->up->user,
        .auth = auth,
        .auth_len = alen,
        .database = s->up->database,
        .plugin = sha2 ? "caching_sha2_password" : "mysql_native_password",
    };
    my_put_handshake_response(conn_output(s->upstream), s->up_seq++, &l);
    OPENSSL_cleanse(auth, sizeof auth);
    my_session_set_ustate(s, MYU_AUTH);
}

static void handle_greeting(my_session *s, const uint8_t *p, size_t len)
{
    my_server_handshake h;
    if (len > 0 && p[0] == 0xff) {
        my_err e;
        char why[300];
        if (my_parse_err(p, len, &e))
            snprintf(why, sizeof why, "the server refused the connection: %.*s (%u)", (int)(e.message_len > 200 ? 200 : e.message_len),
                     e.message, (unsigned)e.code);
        else
            snprintf(why, sizeof why, "the server refused the connection");
        upstream_fail(s, why);
        return;
    }
    if (!my_parse_server_handshake(p, len, &h) || h.scramble_len != MY_SCRAMBLE_LEN) {
        upstream_fail(s, "malformed handshake from the server");
        return;
    }
    if (!(h.capabilities & MY_CAP(PROTOCOL_41)) || !(h.capabilities & MY_CAP(SECURE_CONNECTION))) {
        upstream_fail(s, "the server does not speak the 4.1 protocol");
        return;
    }
    if ((s->client_caps & MY_CAP(DEPRECATE_EOF)) && !(h.capabilities & MY_CAP(DEPRECATE_EOF))) {
        /* Result sets would need EOF packets rewritten on the way: phigate
         * passes them through instead, so both sides must agree. */
        upstream_fail(s, "the server does not support CLIENT_DEPRECATE_EOF, which this client negotiated; "
                         "phigate relays result sets unchanged and needs both sides to agree");
        return;
    }
    memcpy(s->up_scramble, h.scramble, MY_SCRAMBLE_LEN);
    s->up_caps = ((s->client_caps & MIRRORED_CAPS) | OWN_CAPS) & h.capabilities;
    s->track_state = (s->up_caps & MY_CAP(SESSION_TRACK)) != 0;
    s->up_status = h.status;
    s->up_seq = 1;
    bool sha2 = h.plugin && h.plugin_len == strlen("caching_sha2_password") &&
                memcmp(h.plugin, "caching_sha2_password", h.plugin_len) == 0;
    s->up_plugin_sha2 = sha2;
    SSL_CTX *ctx = my_server_upstream_tls(s->server, s->upstream_index);
    if (ctx && (h.capabilities & MY_CAP(SSL))) {
        s->up_caps |= MY_CAP(SSL);
        my_put_ssl_request(conn_output(s->upstream), s->up_seq++, s->up_caps, UPSTREAM_MAX_PACKET, s->charset);
        conn_flush(s->upstream);
        SSL *ssl = SSL_new(ctx);
        int verify = s->up->tls_mode == UPSTREAM_TLS_VERIFY_FULL ? 2 : s->up->tls_mode == UPSTREAM_TLS_VERIFY_CA ? 1 : 0;
        if (!ssl || !tls_client_prepare(ssl, s->up->host, verify)) {
            SSL_free(ssl);
            upstream_fail(s, "TLS setup failed");
            return;
        }
        my_session_set_ustate(s, MYU_TLS);
        if (conn_unsent(s->upstream) || !conn_start_tls(s->upstream, ssl, false)) {
            if (!conn_ssl(s->upstream))
                SSL_free(ssl);
            upstream_fail(s, "TLS setup failed");
            return;
        }
        s->upstream_tls = true;
        return;
    }
    if (ctx && s->up->tls_mode >= UPSTREAM_TLS_REQUIRE) {
        upstream_fail(s, "the server does not support TLS but the configuration requires it");
        return;
    }
    send_login(s, s->up_plugin_sha2 ? "caching_sha2_password" : "mysql_native_password");
}

void my_upstream_send_setup(my_session *s)
{
    static const char sql[] = MY_SETUP_SQL;
    uint8_t payload[sizeof sql];
    payload[0] = MY_COM_QUERY;
    memcpy(payload + 1, sql, sizeof sql - 1);
    my_put_packet(conn_output(s->upstream), 0, payload, sizeof payload);
}

static void send_setup(my_session *s)
{
    my_upstream_send_setup(s);
    s->up_seq = 1;
    my_session_set_ustate(s, MYU_SETUP);
}

static void upstream_ready(my_session *s)
{
    my_session_set_ustate(s, MYU_READY);
    my_relay_start(s);
}

static void send_password(my_session *s)
{
    /* Only ever over TLS: the password in the clear. */
    const char *pw = s->up->password ? s->up->password : "";
    my_put_packet(conn_output(s->upstream), s->up_seq++, pw, strlen(pw) + 1);
}

static void handle_auth_switch(my_session *s, const uint8_t *p, size_t len)
{
    my_cursor c;
    const char *plugin;
    const uint8_t *data;
    size_t dlen;
    my_cursor_init(&c, p + 1, len - 1);
    if (!my_get_cstring(&c, &plugin, NULL)) {
        upstream_fail(s, "the server asks for the pre-4.1 password scheme, which phigate does not use");
        return;
    }
    my_get_rest(&c, &data, &dlen);
    if (dlen > 0 && data[dlen - 1] == 0)
        dlen--;
    if (strcmp(plugin, "mysql_clear_password") == 0) {
        if (!s->upstream_tls) {
            upstream_fail(s, "the server asks for the password in clear text without TLS");
            return;
        }
        send_password(s);
        return;
    }
    if (strcmp(plugin, "mysql_native_password") != 0 && strcmp(plugin, "caching_sha2_password") != 0) {
        char why[160];
        snprintf(why, sizeof why, "the server asks for authentication plugin %.40s, which phigate does not support",
                 plugin);
        upstream_fail(s, why);
        return;
    }
    if (dlen < MY_SCRAMBLE_LEN) {
        upstream_fail(s, "malformed authentication switch from the server");
        return;
    }
    memcpy(s->up_scramble, data, MY_SCRAMBLE_LEN);
    uint8_t auth[32];
    size_t alen;
    if (strcmp(plugin, "caching_sha2_password") == 0)
        my_sha2_response(s->up->password, s->up_scramble, auth, &alen);
    else
        my_native_response(s->up->password, s->up_scramble, auth, &alen);
    my_put_packet(conn_output(s->upstream), s->up_seq++, auth, alen);
    OPENSSL_cleanse(auth, sizeof auth);
}

static void handle_auth_reply(my_session *s, const uint8_t *p, size_t len)
{
    if (len == 0) {
        upstream_fail(s, "empty packet from the server during login");
        return;
    }
    switch (p[0]) {
    case 0x00: {
        my_ok ok;
        if (!my_parse_ok(p, len, s->up_caps, &ok)) {
            upstream_fail(s, "malformed OK from the server");
            return;
        }
        s->up_status = ok.status;
        my_session_log(s, LOG_LEVEL_DEBUG, "logged in to upstream %s%s", s->up->name,
                       s->upstream_tls ? " over TLS" : "");
        if (s->track_state)
            send_setup(s);
        else {
            my_session_log(s, LOG_LEVEL_WARN, "upstream %s has no session tracking: changes of database and "
                           "session variables made by statements are not seen", s->up->name);
            upstream_ready(s);
        }
        return;
    }
    case 0xff: {
        my_err e;
        char why[400];
        if (my_parse_err(p, len, &e))
            snprintf(why, sizeof why, "the server refused phigate's login: %.*s (%u/%s)",
                     (int)(e.message_len > 250 ? 250 : e.message_len), e.message, (unsigned)e.code, e.sqlstate);
        else
            snprintf(why, sizeof why, "the server refused phigate's login");
        upstream_fail(s, why);
        return;
    }
    case 0xfe:
        handle_auth_switch(s, p, len);
        return;
    case 0x01:
        /* caching_sha2: 0x03 fast authentication done (OK follows), 0x04 send the password. */
        if (len == 2 && p[1] == 0x03)
            return;
        if (len == 2 && p[1] == 0x04) {
            if (!s->upstream_tls) {
                upstream_fail(s, "the server wants caching_sha2_password full authentication, which phigate "
                                 "does only over TLS: set tls: require (or verify-full) for this upstream");
                return;
            }
            send_password(s);
            return;
        }
        upstream_fail(s, "unexpected authentication data from the server");
        return;
    default:
        upstream_fail(s, "unexpected packet from the server during login");
        return;
    }
}

static void handle_setup_reply(my_session *s, const uint8_t *p, size_t len)
{
    my_ok ok;
    if (len > 0 && p[0] == 0x00 && my_parse_ok(p, len, s->up_caps, &ok)) {
        /* The session's own sql_mode and character set, reported by the setup. */
        if (my_relay_check_ok_state(s, &ok))
            upstream_ready(s);
        return;
    }
    my_err e;
    char why[400];
    if (len > 0 && p[0] == 0xff && my_parse_err(p, len, &e))
        snprintf(why, sizeof why, "phigate's session setup failed: %.*s (%u)",
                 (int)(e.message_len > 250 ? 250 : e.message_len), e.message, (unsigned)e.code);
    else
        snprintf(why, sizeof why, "unexpected answer to phigate's session setup");
    upstream_fail(s, why);
}

static void read_login_replies(my_session *s)
{
    struct evbuffer *in = conn_input(s->upstream);
    while (s->state == MYC_CONNECTING &&
           (s->ustate == MYU_GREETING || s->ustate == MYU_AUTH || s->ustate == MYU_SETUP)) {
        uint8_t *p, seq;
        size_t len;
        uint8_t expect = s->ustate == MYU_GREETING ? 0 : s->up_seq;
        int r = my_read_login_packet(in, expect, UPSTREAM_LOGIN_MAX, &p, &len, &seq);
        if (r == 0)
            return;
        if (r < 0) {
            upstream_fail(s, r == -2 ? "oversized packet from the server during login"
                                     : "packets out of order from the server during login");
            return;
        }
        s->up_seq = (uint8_t)(seq + 1);
        myu_state st = s->ustate;
        if (st == MYU_GREETING)
            handle_greeting(s, p, len);
        else if (st == MYU_AUTH)
            handle_auth_reply(s, p, len);
        else
            handle_setup_reply(s, p, len);
        free(p);
        if (s->ustate == MYU_TLS || s->ustate == MYU_READY)
            return; /* the relay takes over any bytes left */
    }
}

void my_upstream_on_data(my_session *s)
{
    if (s->ustate == MYU_READY)
        my_relay_upstream_data(s);
    else if (s->ustate != MYU_TLS && s->ustate != MYU_CONNECTING)
        read_login_replies(s);
}

void my_upstream_on_event(my_session *s, int ev)
{
    if (ev == CONN_CONNECTED) {
        if (s->ustate == MYU_TLS)
            send_login(s, s->up_plugin_sha2 ? "caching_sha2_password" : "mysql_native_password");
        else
            my_session_set_ustate(s, MYU_GREETING);
        return;
    }
    if (s->state == MYC_ACTIVE) {
        my_session_log(s, LOG_LEVEL_WARN, "upstream connection lost: %s", conn_error(s->upstream));
        my_session_fail(s, MY_ER_UNKNOWN_ERROR, "HY000", "phigate lost its connection to the upstream database");
        return;
    }
    char why[300];
    if (s->ustate == MYU_CONNECTING)
        snprintf(why, sizeof why, "cannot connect to %s:%d (%s)", s->up->host, s->up->port, conn_error(s->upstream));
    else
        snprintf(why, sizeof why, "%s", ev == CONN_EOF ? "the server closed the connection" : conn_error(s->upstream));
    upstream_fail(s, why);
}

void my_upstream_start(my_session *s)
{
    const config *cfg = my_server_config(s->server);
    uint16_t code;
    char why[300];
    s->up = my_upstream_for(s, s->database, &code, why, sizeof why);
    if (!s->up) {
        my_session_fail(s, code, "42000", why);
        return;
    }
    s->upstream_index = (int)(s->up - cfg->upstreams);
    my_session_arm_timer(s, s->up->connect_timeout_ms);
    /* The catalog loads on a worker thread; the session goes on in my_upstream_engine_ready. */
    engines_request(my_server_engines(s->server), s->upstream_index, s);
}

void my_upstream_engine_ready(my_session *s, sqlp_engine *engine, const char *err)
{
    if (s->state != MYC_CONNECTING) {
        if (engine)
            sqlp_engine_unref(engine);
        return;
    }
    if (!engine) {
        /* Fail closed: without the catalog no statement can be analysed. */
        my_session_log(s, LOG_LEVEL_ERROR, "%s", err);
        my_session_fail(s, MY_ER_UNKNOWN_ERROR, "HY000",
                        "phigate cannot analyse statements for this database: its catalog is not loaded "
                        "(see phigate's log)");
        return;
    }
    s->engine = engine;
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (!my_server_upstream_addr(s->server, s->upstream_index, &ss, &sslen)) {
        upstream_fail(s, "no address");
        return;
    }
    my_session_set_ustate(s, MYU_CONNECTING);
    s->upstream = conn_connect(my_server_base(s->server), (struct sockaddr *)&ss, sslen);
    if (!s->upstream) {
        upstream_fail(s, "cannot create a socket");
        return;
    }
    my_session_upstream_callbacks(s);
}
