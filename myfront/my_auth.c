/*
 * Handshake and client authentication, phigate as the MySQL server:
 *
 *   client                               phigate
 *                          <-----------  HandshakeV10 (seq 0): own 20-byte scramble, id,
 *                                        caching_sha2_password (TLS on offer) or mysql_native_password
 *   SSLRequest (seq 1)     ----------->  (only with CLIENT_SSL)   -- TLS handshake --
 *   HandshakeResponse41    ----------->  user, database, plugin, scramble response
 *                          <-----------  AuthSwitchRequest        (when phigate wants the other plugin)
 *   auth data              ----------->
 *                          <-----------  AuthMoreData 0x04        (caching_sha2: full authentication, TLS only)
 *   password NUL           ----------->  checked against the SCRAM verifier
 *                                        ... upstream opened (my_upstream.c) ...
 *                          <-----------  OK  (or ERR 1045 / 28000)
 *
 * Which plugin runs depends on the identity's secrets and on TLS, never on
 * what the client would like to avoid: mysql_native_password when the identity
 * has a mysql_native verifier and the client asked for it or has no TLS;
 * caching_sha2_password full authentication otherwise, which needs TLS because
 * phigate does no RSA key exchange.  An unknown user runs the same exchange
 * against mock verifiers (it looks like an identity with both) and fails at
 * the check with the same 1045 as a wrong password.
 *
 * An identity with an oidc_issuer logs in with a token (JWT): over TLS only,
 * phigate switches to mysql_clear_password and the client sends the token as
 * its password; oidc.c verifies it, maybe after fetching the issuer's keys.
 */
#include <event2/buffer.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/conn.h"
#include "gate/log.h"
#include "gate/oidc.h"
#include "gate/tls.h"
#include "myfront/my_audit.h"
#include "myfront/my_session.h"

#define NATIVE_PLUGIN "mysql_native_password"
#define CLEAR_PLUGIN "mysql_clear_password"
#define SHA2_PLUGIN "caching_sha2_password"
#define GREETING_CHARSET 45 /* utf8mb4_general_ci */

int my_read_login_packet(struct evbuffer *in, uint8_t expect_seq, uint64_t max, uint8_t **payload, size_t *len,
                         uint8_t *seq)
{
    size_t avail = evbuffer_get_length(in), wire = 0;
    my_chain ch;
    my_chain_init(&ch, max, true, expect_seq);
    for (;;) {
        uint8_t hdr[MY_HEADER_LEN];
        if (avail - wire < MY_HEADER_LEN)
            return 0;
        struct evbuffer_ptr at;
        evbuffer_ptr_set(in, &at, wire, EVBUFFER_PTR_SET);
        evbuffer_copyout_from(in, &at, hdr, sizeof hdr);
        my_chain_result r = my_chain_step(&ch, hdr);
        if (r == MY_CHAIN_TOO_LONG)
            return -2;
        if (r == MY_CHAIN_BAD_SEQ)
            return -3;
        uint32_t plen;
        uint8_t pseq;
        my_parse_header(hdr, &plen, &pseq);
        wire += MY_HEADER_LEN + plen;
        if (avail < wire)
            return 0;
        if (r == MY_CHAIN_DONE) {
            *seq = pseq;
            break;
        }
    }
    /* The whole chain is here and within max: now it may be copied. */
    uint8_t *w = malloc(wire);
    evbuffer_remove(in, w, wire);
    *len = (size_t)ch.payload;
    *payload = malloc(*len ? *len : 1);
    my_chain_payload(w, wire, *payload);
    free(w);
    return 1;
}

/* ---- greeting ------------------------------------------------------------------ */

void my_auth_greet(my_session *s)
{
    /* Scramble bytes are 1..127 and never '$', as MySQL makes them: some clients
     * read the scramble as a C string. */
    if (RAND_bytes(s->scramble, sizeof s->scramble) != 1) {
        my_session_close(s, "no randomness for the scramble");
        return;
    }
    for (size_t i = 0; i < sizeof s->scramble; i++) {
        s->scramble[i] &= 0x7f;
        if (s->scramble[i] == 0 || s->scramble[i] == '$')
            s->scramble[i]++;
    }
    bool tls = my_server_tls_ctx(s->server) != NULL;
    my_handshake_params p = {
        .server_version = my_server_version(s->server),
        .connection_id = s->connection_id,
        .scramble = s->scramble,
        .capabilities = my_server_capabilities(s->server),
        .charset = GREETING_CHARSET,
        .status = MY_STATUS_AUTOCOMMIT,
        /* With TLS on offer caching_sha2 can run in one trip; without it only native can. */
        .auth_plugin = tls ? SHA2_PLUGIN : NATIVE_PLUGIN,
    };
    my_put_handshake_v10(conn_output(s->client), &p);
    s->seq = 1;
    my_session_set_state(s, MYC_HANDSHAKE);
}

/* ---- failures ---------------------------------------------------------------------- */

static void fail_auth(my_session *s, const char *why)
{
    char msg[400];
    my_session_log(s, LOG_LEVEL_INFO, "authentication failed: %s", why);
    my_audit_auth_failure(s, why);
    /* A refused certificate says why (it is public); a password failure never does. */
    if (s->auth_method_name && strcmp(s->auth_method_name, "cert") == 0)
        snprintf(msg, sizeof msg, "Access denied for user '%.64s'@'%s': certificate authentication failed: %s",
                 s->user, s->client_host, why);
    else
        snprintf(msg, sizeof msg, "Access denied for user '%.64s'@'%s' (using password: %s)", s->user,
                 s->client_host, s->password_given ? "YES" : "NO");
    my_session_fail(s, MY_ER_ACCESS_DENIED, "28000", msg);
}

/* Multi-byte character sets whose second byte can be 0x5c ('\'): a string that
 * the server reads as closed could look open to phigate's parser, and the
 * other way round. */
static bool charset_unsafe(uint8_t id)
{
    static const uint8_t unsafe[] = {1, 84, 13, 88, 95, 96, 28, 87, 248, 249, 250}; /* big5 sjis cp932 gbk gb18030 */
    for (size_t i = 0; i < sizeof unsafe; i++)
        if (unsafe[i] == id)
            return true;
    return false;
}

/* ---- TLS --------------------------------------------------------------------------- */

static void start_tls(my_session *s)
{
    SSL_CTX *ctx = my_server_tls_ctx(s->server);
    if (!ctx) {
        /* CLIENT_SSL was never offered: the client is not speaking our protocol. */
        my_session_fail(s, MY_ER_HANDSHAKE, "08S01", "Bad handshake: phigate offered no TLS");
        return;
    }
    /* Unlike PostgreSQL's 'S', nothing answers an SSLRequest: the client sends
     * its ClientHello right behind it, and bytes already read are its start.
     * They go to TLS, never to the plain-text parser. */
    SSL *ssl = SSL_new(ctx);
    my_session_set_state(s, MYC_TLS);
    if (!ssl || conn_unsent(s->client) || !conn_start_tls_preread(s->client, ssl)) {
        if (ssl && !conn_ssl(s->client))
            SSL_free(ssl);
        my_session_close(s, "TLS setup failed");
        return;
    }
    s->client_tls = true;
}

void my_auth_on_tls_done(my_session *s)
{
    my_session_set_state(s, MYC_HANDSHAKE);
    if (evbuffer_get_length(conn_input(s->client)) > 0)
        my_auth_on_client_data(s);
}

/* ---- authentication --------------------------------------------------------------- */

static void mock_native(my_session *s, uint8_t out[20])
{
    uint8_t mac[32];
    unsigned int l = sizeof mac;
    char label[MY_MAX_USER + 8];
    int n = snprintf(label, sizeof label, "native:%s", s->user);
    HMAC(EVP_sha256(), my_server_mock_secret(s->server), 32, (const uint8_t *)label, (size_t)n, mac, &l);
    memcpy(out, mac, 20);
}

static void authenticated(my_session *s)
{
    if (config_identity_needs_cert(s->identity) && config_identity_needs_scram(s->identity))
        s->auth_method_name = s->method == MY_AUTH_NATIVE ? "cert+" NATIVE_PLUGIN : "cert+" SHA2_PLUGIN;
    my_session_log(s, LOG_LEVEL_INFO, "authenticated with %s%s, role %s", s->auth_method_name,
                   s->client_tls ? " over TLS" : "", s->role->name);
    OPENSSL_cleanse(s->scramble, sizeof s->scramble);
    if (!my_session_take_connection_slot(s)) {
        char msg[200];
        snprintf(msg, sizeof msg, "User '%.64s' has more than 'max_connections' (%d) active connections through "
                 "phigate", s->user, s->identity->max_connections);
        my_session_fail(s, 1203, "42000", msg);
        return;
    }
    my_session_set_state(s, MYC_CONNECTING);
    /* Commands pipelined behind authentication wait in the kernel, not in our
     * memory, until the upstream is ready. */
    conn_read_disable(s->client);
    my_upstream_start(s);
}

static void check_native(my_session *s, const uint8_t *data, size_t len)
{
    uint8_t stored[20];
    s->password_given = len > 0;
    if (s->identity && s->identity->has_mysql_native)
        memcpy(stored, s->identity->mysql_native_hash, 20);
    else
        mock_native(s, stored);
    bool ok = my_native_verify(stored, s->scramble, data, len);
    OPENSSL_cleanse(stored, sizeof stored);
    if (!ok || !s->identity || !s->identity->has_mysql_native) {
        fail_auth(s, !s->identity ? "unknown identity" : len == 0 ? "no password given" : "wrong password");
        return;
    }
    s->role = s->identity->role;
    authenticated(s);
}

/* caching_sha2 after the scramble response: phigate keeps no SHA-256 cache of
 * passwords, so it always asks for the password itself, which only TLS may carry. */
static void sha2_ask_full(my_session *s, size_t scramble_len)
{
    s->password_given = scramble_len > 0;
    if (scramble_len == 0) {
        fail_auth(s, "no password given");
        return;
    }
    if (!s->client_tls) {
        my_session_log(s, LOG_LEVEL_INFO, "caching_sha2_password full authentication refused: no TLS");
        my_audit_auth_failure(s, "caching_sha2_password full authentication needs TLS");
        my_session_fail(s, MY_ER_ACCESS_DENIED, "28000",
                        "phigate: caching_sha2_password sends the password in full and phigate does not use RSA "
                        "key exchange: connect with TLS (ssl-mode=REQUIRED / --ssl), or use mysql_native_password "
                        "if your identity has a mysql_native verifier");
        return;
    }
    static const uint8_t full = 0x04; /* perform_full_authentication */
    my_put_auth_more(conn_output(s->client), s->seq++, &full, 1);
    my_session_set_state(s, MYC_AUTH_FULL);
}

static void check_full_password(my_session *s, const uint8_t *data, size_t len)
{
    if (!s->client_tls || (len == 1 && data[0] == 0x02)) {
        /* 0x02 asks for the server's RSA key: phigate has none to give. */
        fail_auth(s, "caching_sha2_password without TLS (RSA key exchange is not supported)");
        return;
    }
    if (len > 0 && data[len - 1] == '\0')
        len--;
    s->password_given = len > 0;
    scram_verifier mock;
    const scram_verifier *v;
    if (s->identity) {
        v = &s->identity->verifier;
    } else {
        scram_verifier_mock(my_server_mock_secret(s->server), 32, s->user, &mock);
        v = &mock;
    }
    char *pw = malloc(len + 1);
    memcpy(pw, data, len);
    pw[len] = '\0';
    /* The PBKDF2 runs for unknown users too, so the answer takes as long. */
    bool ok = len > 0 && memchr(pw, '\0', len) == NULL &&
              my_scram_password_ok(pw, len, v->salt, v->salt_len, v->iterations, v->stored_key);
    OPENSSL_cleanse(pw, len);
    free(pw);
    if (!ok || !s->identity) {
        fail_auth(s, !s->identity ? "unknown identity" : len == 0 ? "no password given" : "wrong password");
        return;
    }
    s->role = s->identity->role;
    authenticated(s);
}

/* ---- token login (oidc) ------------------------------------------------------------- */

static void token_decided(my_session *s, const oidc_login *r)
{
    if (!r->ok) {
        char msg[420];
        my_session_log(s, LOG_LEVEL_INFO, "authentication failed (oidc): %s", r->reason);
        my_audit_auth_failure(s, r->reason);
        snprintf(msg, sizeof msg, "Access denied for user '%.64s'@'%s': token authentication failed: %s", s->user,
                 s->client_host, r->reason);
        my_session_fail(s, MY_ER_ACCESS_DENIED, "28000", msg);
        return;
    }
    s->role = r->role;
    authenticated(s);
}

static void token_checked(void *arg, const oidc_login *r)
{
    my_session *s = arg;
    s->oidc_wait = NULL;
    if (s->state != MYC_AUTH_TOKEN_WAIT)
        return;
    token_decided(s, r);
    my_session_flush(s);
}

/* The clear password packet: the token, NUL-terminated by most clients. */
static void check_token(my_session *s, const uint8_t *data, size_t len)
{
    if (len > 0 && data[len - 1] == '\0')
        len--;
    s->password_given = len > 0;
    oidc_login r;
    oidc_wait *w;
    if (oidc_check(my_server_oidc(s->server), s->identity, (const char *)data, len, &r, token_checked, s, &w)) {
        token_decided(s, &r);
        return;
    }
    s->oidc_wait = w;
    conn_read_disable(s->client);
    my_session_set_state(s, MYC_AUTH_TOKEN_WAIT);
}

/* The token is asked for only over TLS: on a plain connection the client is
 * refused before it sends it. */
static bool token_login_possible(my_session *s)
{
    const char *why = !s->client_tls ? "token login requires TLS"
                    : !my_server_oidc(s->server) ? "token login is not available" : NULL;
    if (!why)
        return true;
    char msg[300];
    my_session_log(s, LOG_LEVEL_INFO, "authentication failed (oidc): %s", why);
    my_audit_auth_failure(s, why);
    snprintf(msg, sizeof msg, "Access denied for user '%.64s'@'%s': %s%s", s->user, s->client_host, why,
             s->client_tls ? "" : ": phigate does not take a token over an unencrypted connection; "
                                  "connect with ssl-mode=REQUIRED (--ssl)");
    my_session_fail(s, MY_ER_ACCESS_DENIED, "28000", msg);
    return false;
}

/* Auth data in answer to the plugin phigate chose (first response or after a switch). */
static void auth_data(my_session *s, const uint8_t *data, size_t len)
{
    if (s->method == MY_AUTH_NATIVE)
        check_native(s, data, len);
    else if (s->method == MY_AUTH_TOKEN)
        check_token(s, data, len);
    else
        sha2_ask_full(s, len);
}

static bool names_ok(my_session *s, const my_handshake_response *r)
{
    if (r->user_len == 0) {
        fail_auth(s, "no user name");
        return false;
    }
    memcpy(s->user, r->user, r->user_len);
    s->user[r->user_len] = '\0';
    if (r->database) {
        memcpy(s->database, r->database, r->database_len);
        s->database[r->database_len] = '\0';
    }
    char esc[80];
    log_escape(s->user, strlen(s->user), 40, esc, sizeof esc);
    snprintf(s->prefix, sizeof s->prefix, "my#%llu %s %s", (unsigned long long)s->id, s->client_addr, esc);
    return true;
}

static void begin_auth(my_session *s, const my_handshake_response *r)
{
    const config *cfg = my_server_config(s->server);
    if (cfg->tls_required && !s->client_tls) {
        my_session_fail(s, MY_ER_SECURE_TRANSPORT_REQUIRED, "HY000",
                        "phigate requires TLS for every connection: connect with ssl-mode=REQUIRED (--ssl)");
        return;
    }
    if (charset_unsafe(r->charset)) {
        char msg[200];
        snprintf(msg, sizeof msg, "phigate does not accept client character set %u (big5, sjis, cp932, gbk and "
                 "gb18030 can hide a quote from its parser): use utf8mb4", (unsigned)r->charset);
        my_session_fail(s, 1115, "42000", msg);
        return;
    }
    if (!names_ok(s, r))
        return;
    s->client_caps = r->capabilities & my_server_capabilities(s->server);
    s->client_max_packet = r->max_packet;
    s->charset = r->charset;
    s->identity = config_find_identity(cfg, s->user);
    bool token = s->identity && s->identity->oidc;
    if (token) {
        s->auth_method_name = "oidc";
        if (!token_login_possible(s))
            return;
    } else if (s->identity && config_identity_needs_cert(s->identity)) {
        char why[200];
        s->auth_method_name = "cert";
        if (!tls_client_cert_check(s->client_tls ? conn_ssl(s->client) : NULL, cfg->tls_client_cert_name,
                                   s->identity->cert_name, why, sizeof why)) {
            fail_auth(s, why);
            return;
        }
        if (!config_identity_needs_scram(s->identity)) {
            s->role = s->identity->role;
            authenticated(s); /* the certificate is the credential: what the client sent as password is ignored */
            return;
        }
    }
    bool has_native = s->identity ? s->identity->has_mysql_native : true;
    const char *client_plugin = r->plugin ? r->plugin : (r->capabilities & MY_CAP(PLUGIN_AUTH)) ? "" : NATIVE_PLUGIN;
    bool wants_native = strcmp(client_plugin, NATIVE_PLUGIN) == 0;
    s->method = token ? MY_AUTH_TOKEN : has_native && (wants_native || !s->client_tls) ? MY_AUTH_NATIVE : MY_AUTH_SHA2;
    const char *plugin = token ? CLEAR_PLUGIN : s->method == MY_AUTH_NATIVE ? NATIVE_PLUGIN : SHA2_PLUGIN;
    if (!token)
        s->auth_method_name = plugin;
    if (strcmp(client_plugin, plugin) == 0) {
        auth_data(s, r->auth, r->auth_len);
        return;
    }
    /* The switch carries the same scramble, NUL-terminated as servers send it. */
    uint8_t data[MY_SCRAMBLE_LEN + 1];
    memcpy(data, s->scramble, MY_SCRAMBLE_LEN);
    data[MY_SCRAMBLE_LEN] = 0;
    my_put_auth_switch(conn_output(s->client), s->seq++, plugin, data, sizeof data);
    my_session_set_state(s, MYC_AUTH_SWITCH);
}

static void handle_response(my_session *s, const uint8_t *payload, size_t len)
{
    my_handshake_response r;
    my_hr_result res = my_parse_handshake_response(payload, len, &r);
    if (res == MY_HR_OLD_PROTOCOL) {
        my_session_fail(s, MY_ER_HANDSHAKE, "08S01", "phigate speaks the 4.1 client protocol only");
        return;
    }
    if (res == MY_HR_TOO_LONG) {
        my_session_fail(s, MY_ER_HANDSHAKE, "08S01", "Bad handshake: user, database or plugin name too long");
        return;
    }
    if (res != MY_HR_OK) {
        my_session_fail(s, MY_ER_HANDSHAKE, "08S01", "Bad handshake");
        return;
    }
    if (r.ssl_request) {
        if (s->client_tls) {
            my_session_fail(s, MY_ER_HANDSHAKE, "08S01", "Bad handshake: SSL request received twice");
            return;
        }
        start_tls(s);
        return;
    }
    begin_auth(s, &r);
}

void my_auth_on_client_data(my_session *s)
{
    struct evbuffer *in = conn_input(s->client);
    const config *cfg = my_server_config(s->server);
    while (s->state == MYC_HANDSHAKE || s->state == MYC_AUTH_SWITCH || s->state == MYC_AUTH_FULL) {
        uint8_t *payload, seq;
        size_t len;
        /* Before login only small packets (a token up to its issuer's bound): checked on the header. */
        uint64_t max = (uint64_t)cfg->max_startup_bytes;
        if (s->state == MYC_AUTH_SWITCH && s->method == MY_AUTH_TOKEN &&
            (uint64_t)s->identity->oidc->max_token_bytes + 1 > max)
            max = (uint64_t)s->identity->oidc->max_token_bytes + 1;
        int r = my_read_login_packet(in, s->seq, max, &payload, &len, &seq);
        if (r == 0)
            return;
        if (r < 0) {
            my_session_fail(s, r == -2 ? MY_ER_NET_PACKET_TOO_LARGE : MY_ER_NET_PACKETS_OUT_OF_ORDER, "08S01",
                            r == -2 ? "Bad handshake: packet larger than phigate accepts before login"
                                    : "Got packets out of order");
            return;
        }
        s->seq = (uint8_t)(seq + 1);
        myc_state st = s->state;
        if (st == MYC_HANDSHAKE)
            handle_response(s, payload, len);
        else if (st == MYC_AUTH_SWITCH)
            auth_data(s, payload, len);
        else
            check_full_password(s, payload, len);
        OPENSSL_cleanse(payload, len);
        free(payload);
        if (s->state == MYC_TLS)
            return; /* the handshake reads the socket now */
    }
    /* Bytes after the last auth packet (a pipelined first command) wait in the
     * input buffer until the upstream is ready: my_relay_start takes them. */
}
