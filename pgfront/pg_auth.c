/*
 * Startup and client authentication:
 *
 *   client                         phigate
 *   SSLRequest          -------->
 *                       <--------  'S' (TLS handshake follows) or 'N'
 *   StartupMessage      -------->
 *                       <--------  AuthenticationSASL (SCRAM-SHA-256[-PLUS])
 *   SASLInitialResponse -------->
 *                       <--------  AuthenticationSASLContinue
 *   SASLResponse        -------->
 *                       <--------  AuthenticationSASLFinal, AuthenticationOk
 *                                  ... upstream opened (pg_upstream.c) ...
 *                       <--------  ParameterStatus*, BackendKeyData, ReadyForQuery
 *
 * An unknown identity runs the same exchange against a mock verifier and fails
 * at the proof, so timing and messages do not tell whether a name exists.
 *
 * An identity with an oidc_issuer logs in with a token instead, over TLS only
 * (refused before the client is asked for it on a plain connection):
 *
 *                       <--------  AuthenticationCleartextPassword
 *   PasswordMessage     -------->  (the JWT; oidc.c verifies it, maybe after a key fetch)
 *                       <--------  AuthenticationOk
 *
 * An identity with auth: cert skips SASL: its TLS client certificate (checked
 * against tls.client_ca_file and the CRL, and naming the identity) is the
 * credential and AuthenticationOk follows the StartupMessage; auth: cert+scram
 * checks the certificate first, then runs SCRAM as above.
 */
#include <event2/buffer.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>

#include "gate/conn.h"
#include "gate/log.h"
#include "gate/oidc.h"
#include "gate/tls.h"
#include "pgfront/pg_audit.h"
#include "pgfront/pg_session.h"

#define AUTH_MAX_MESSAGE 4096 /* SASL messages are small; refuse anything larger before reading it */

static void answer_ssl_request(pg_session *s)
{
    if (s->client_tls) {
        pg_session_fail(s, "08P01", "SSLRequest received twice", NULL);
        return;
    }
    SSL_CTX *ctx = pg_server_tls_ctx(s->server);
    struct evbuffer *in = conn_input(s->client);
    if (ctx && evbuffer_get_length(in) > 0) {
        /* Plain bytes sent before the handshake would be taken as if protected. */
        pg_session_fail(s, "08P01", "data received after SSLRequest before the TLS handshake", NULL);
        return;
    }
    /* Written to the socket before the handshake starts, so 'S' precedes it. */
    evbuffer_add(conn_output(s->client), ctx ? "S" : "N", 1);
    conn_flush(s->client);
    if (!ctx)
        return;
    SSL *ssl = SSL_new(ctx);
    if (!ssl || conn_unsent(s->client) || !conn_start_tls(s->client, ssl, true)) {
        if (ssl && !conn_ssl(s->client))
            SSL_free(ssl);
        pg_session_close(s, "TLS setup failed");
        return;
    }
    s->client_tls = true;
}

static void copy_startup(pg_session *s, const uint8_t *body, size_t len)
{
    s->startup_copy = malloc(len + 1);
    memcpy(s->startup_copy, body, len);
    s->startup_copy[len] = '\0';
}

/* Client encodings whose multibyte characters can end in 0x5c ('\\'): the
 * server reads such a character whole where a UTF-8 lexer sees a backslash
 * escaping a quote, so phigate and the server would not agree on where a
 * literal ends.  Names are compared the way PostgreSQL does: lower case,
 * letters and digits only. */
static bool unsafe_client_encoding(const char *name)
{
    static const char *const unsafe[] = {"sjis", "shiftjis", "mskanji", "windows932", "shiftjis2004", "big5",
                                         "windows950", "gbk", "windows936", "cp936", "uhc", "windows949", "cp949",
                                         "gb18030", "johab", NULL};
    char norm[64];
    size_t n = 0;
    for (const char *p = name; *p && n < sizeof norm - 1; p++)
        if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9'))
            norm[n++] = *p;
        else if (*p >= 'A' && *p <= 'Z')
            norm[n++] = (char)(*p - 'A' + 'a');
    norm[n] = '\0';
    for (int i = 0; unsafe[i]; i++)
        if (strcmp(norm, unsafe[i]) == 0)
            return true;
    return false;
}

static bool startup_params_ok(pg_session *s)
{
    const char *user = pg_startup_get(&s->startup, "user");
    const char *db = pg_startup_get(&s->startup, "database");
    if (!user || !*user) {
        pg_session_fail(s, "28000", "no user name given in the startup packet", NULL);
        return false;
    }
    const char *enc = pg_startup_get(&s->startup, "client_encoding");
    if (enc && unsafe_client_encoding(enc)) {
        pg_session_fail(s, "22023", "phigate does not accept this client_encoding: its characters can hide a quote",
                        "use UTF8 (or another ASCII-safe encoding)");
        return false;
    }
    if (pg_startup_get(&s->startup, "replication")) {
        pg_session_fail(s, "28000", "replication connections are not allowed through phigate", NULL);
        return false;
    }
    if (strlen(user) >= sizeof s->user || (db && strlen(db) >= sizeof s->database)) {
        pg_session_fail(s, "28000", "user or database name too long", NULL);
        return false;
    }
    strcpy(s->user, user);
    strcpy(s->database, db && *db ? db : user);
    char esc[80];
    log_escape(s->user, strlen(s->user), 40, esc, sizeof esc);
    snprintf(s->prefix, sizeof s->prefix, "pg#%llu %s %s", (unsigned long long)s->id, s->client_addr, esc);
    return true;
}

static void auth_succeeded(pg_session *s);

static void fail_auth(pg_session *s, const char *method, const char *why)
{
    char msg[320];
    pg_session_log(s, LOG_LEVEL_INFO, "authentication failed (%s): %s", method, why);
    pg_audit_auth_failure(s, method, why);
    if (strcmp(method, "cert") == 0) {
        /* The certificate is public: the refusal names what is wrong with it
         * (revoked, expired, untrusted, not mapped).  A password failure never says why. */
        snprintf(msg, sizeof msg, "certificate authentication failed for user \"%.64s\": %s", s->user, why);
        pg_session_fail(s, "28000", msg,
                        "connect over TLS with sslcert/sslkey of a certificate issued for this identity");
        return;
    }
    if (strcmp(method, "oidc") == 0)
        snprintf(msg, sizeof msg, "token authentication failed for user \"%.64s\": %s", s->user, why);
    else
        snprintf(msg, sizeof msg, "password authentication failed for user \"%.64s\"", s->user);
    pg_session_fail(s, "28P01", msg, NULL);
}

/* The token is asked for only over TLS: on a plain connection it is refused
 * before the client sends it, so it never crosses the network in clear. */
static void begin_token(pg_session *s)
{
    if (!s->client_tls) {
        const char *why = "token login requires TLS";
        pg_session_log(s, LOG_LEVEL_INFO, "authentication failed (oidc): %s", why);
        pg_audit_auth_failure(s, "oidc", why);
        pg_session_fail(s, "28000",
                        "token login requires TLS: phigate does not take a token over an unencrypted connection",
                        "connect with sslmode=require (or verify-full)");
        return;
    }
    if (!pg_server_oidc(s->server)) {
        fail_auth(s, "oidc", "token login is not available");
        return;
    }
    pg_put_auth(conn_output(s->client), 3, NULL, 0);
    pg_session_set_state(s, PGC_AUTH_TOKEN);
}

static void begin_auth(pg_session *s)
{
    const config *cfg = pg_server_config(s->server);
    if (cfg->tls_required && !s->client_tls) {
        pg_session_fail(s, "28000", "phigate requires TLS for every connection",
                        "connect with sslmode=require (or verify-full)");
        return;
    }
    s->identity = config_find_identity(cfg, s->user);
    if (s->identity && s->identity->oidc) {
        begin_token(s);
        return;
    }
    if (s->identity && config_identity_needs_cert(s->identity)) {
        /* auth: cert or cert+scram: the certificate must be valid and name the identity. */
        char why[200];
        s->scram_method = "cert";
        if (!tls_client_cert_check(s->client_tls ? conn_ssl(s->client) : NULL, cfg->tls_client_cert_name,
                                   s->identity->cert_name, why, sizeof why)) {
            fail_auth(s, "cert", why);
            return;
        }
        if (!config_identity_needs_scram(s->identity)) {
            pg_session_log(s, LOG_LEVEL_INFO, "authenticated with a client certificate");
            pg_put_auth(conn_output(s->client), 0, NULL, 0);
            s->role = s->identity->role;
            auth_succeeded(s);
            return;
        }
        s->scram_method = NULL; /* SCRAM follows: a failure now is a password failure */
    }
    if (s->identity)
        s->scram.verifier = s->identity->verifier;
    else
        scram_verifier_mock(pg_server_mock_secret(s->server), 32, s->user, &s->scram.verifier);
    if (s->client_tls) {
        SSL *ssl = conn_ssl(s->client);
        if (ssl && tls_server_end_point(ssl, &s->cbind))
            s->scram.server_offered_plus = true;
    }
    s->scram.cbind = &s->cbind;
    pg_put_auth_sasl(conn_output(s->client), s->scram.server_offered_plus);
    pg_session_set_state(s, PGC_AUTH_INIT);
}

/* Protocol 3.x with a newer minor or _pq_ options: tell the client what we speak. */
static void negotiate_if_needed(pg_session *s, uint32_t protocol)
{
    const char *unknown[PG_MAX_STARTUP_PARAMS];
    size_t n = 0;
    for (size_t i = 0; i < s->startup.nparams; i++)
        if (strncmp(s->startup.params[i].name, "_pq_.", 5) == 0)
            unknown[n++] = s->startup.params[i].name;
    if ((protocol & 0xffff) != 0 || n > 0)
        pg_put_negotiate_version(conn_output(s->client), 0, unknown, n);
}

static void handle_startup_packet(pg_session *s, uint32_t code, const uint8_t *body, size_t len)
{
    switch (code) {
    case PG_SSL_REQUEST:
        answer_ssl_request(s);
        return;
    case PG_GSSENC_REQUEST:
        evbuffer_add(conn_output(s->client), "N", 1);
        return;
    case PG_CANCEL_REQUEST: {
        pg_cursor c;
        uint32_t pid, key;
        pg_cursor_init(&c, body, len);
        if (len == 8 && pg_get_u32(&c, &pid) && pg_get_u32(&c, &key))
            pg_cancel_request(s->server, pid, key);
        pg_session_close(s, "cancel request handled");
        return;
    }
    default:
        break;
    }
    if ((code >> 16) != 3) {
        pg_session_fail(s, "0A000", "unsupported frontend protocol: phigate speaks protocol 3.0 only", NULL);
        return;
    }
    copy_startup(s, body, len);
    if (!pg_parse_startup_params((const uint8_t *)s->startup_copy, len, &s->startup)) {
        pg_session_fail(s, "08P01", "malformed startup packet", NULL);
        return;
    }
    s->startup.protocol = code;
    if (!startup_params_ok(s))
        return;
    negotiate_if_needed(s, code);
    begin_auth(s);
}

static void read_startup(pg_session *s)
{
    struct evbuffer *in = conn_input(s->client);
    const config *cfg = pg_server_config(s->server);
    while (s->state == PGC_STARTUP) {
        uint8_t hdr[PG_STARTUP_MIN];
        uint32_t len, code;
        size_t avail = evbuffer_get_length(in);
        evbuffer_copyout(in, hdr, avail < sizeof hdr ? avail : sizeof hdr);
        pg_header_result r = pg_parse_startup_header(hdr, avail, (uint32_t)cfg->max_startup_bytes, &len, &code);
        if (r == PG_HDR_NEED_MORE)
            return;
        if (r != PG_HDR_OK) {
            pg_session_fail(s, "08P01", r == PG_HDR_TOO_LONG ? "startup packet too long" : "invalid startup packet length", NULL);
            return;
        }
        if (avail < len)
            return;
        uint8_t *pkt = malloc(len);
        evbuffer_remove(in, pkt, len);
        handle_startup_packet(s, code, pkt + 8, len - 8);
        free(pkt);
    }
}

static void handle_sasl_init(pg_session *s, const uint8_t *body, size_t len)
{
    pg_cursor c;
    const char *mech;
    int32_t rlen;
    const uint8_t *resp;
    pg_cursor_init(&c, body, len);
    if (!pg_get_cstring(&c, &mech, NULL) || !pg_get_i32(&c, &rlen) || rlen < 0 ||
        !pg_get_bytes(&c, (size_t)rlen, &resp) || pg_cursor_left(&c) != 0) {
        pg_session_fail(s, "08P01", "malformed SASLInitialResponse", NULL);
        return;
    }
    if (strcmp(mech, "SCRAM-SHA-256-PLUS") == 0 && s->scram.server_offered_plus)
        s->scram.use_plus = true;
    else if (strcmp(mech, "SCRAM-SHA-256") != 0) {
        fail_auth(s, "scram-sha-256", "unsupported SASL mechanism");
        return;
    }
    char out[SCRAM_MAX_MESSAGE];
    const char *err = NULL;
    if (!scram_server_first(&s->scram, (const char *)resp, (size_t)rlen, out, sizeof out, &err)) {
        fail_auth(s, "scram-sha-256", err);
        return;
    }
    pg_put_auth(conn_output(s->client), 11, out, strlen(out));
    pg_session_set_state(s, PGC_AUTH_FINAL);
}

static void auth_succeeded(pg_session *s);

static void handle_sasl_final(pg_session *s, const uint8_t *body, size_t len)
{
    char out[SCRAM_MAX_MESSAGE];
    const char *err = NULL;
    bool ok = false;
    if (!scram_server_final(&s->scram, (const char *)body, len, &ok, out, sizeof out, &err)) {
        fail_auth(s, "scram-sha-256", err);
        return;
    }
    if (!ok || !s->identity) {
        fail_auth(s, "scram-sha-256", s->identity ? "wrong password" : "unknown identity");
        return;
    }
    struct evbuffer *o = conn_output(s->client);
    pg_put_auth(o, 12, out, strlen(out));
    pg_put_auth(o, 0, NULL, 0);
    bool with_cert = config_identity_needs_cert(s->identity);
    pg_session_log(s, LOG_LEVEL_INFO, "authenticated with %sSCRAM-SHA-256%s%s",
                   with_cert ? "a client certificate and " : "", s->scram.use_plus ? "-PLUS" : "",
                   s->client_tls ? " over TLS" : "");
    if (with_cert)
        s->scram_method = s->scram.use_plus ? "cert+scram-sha-256-plus" : "cert+scram-sha-256";
    else
        s->scram_method = s->scram.use_plus ? "scram-sha-256-plus" : "scram-sha-256";
    OPENSSL_cleanse(&s->scram, sizeof s->scram);
    s->role = s->identity->role;
    auth_succeeded(s);
}

static void token_decided(pg_session *s, const oidc_login *r)
{
    if (!r->ok) {
        fail_auth(s, "oidc", r->reason);
        return;
    }
    s->role = r->role;
    s->scram_method = "oidc";
    pg_session_log(s, LOG_LEVEL_INFO, "authenticated with a token from issuer %s over TLS, role %s",
                   s->identity->oidc->name, s->role->name);
    pg_put_auth(conn_output(s->client), 0, NULL, 0);
    auth_succeeded(s);
}

static void token_checked(void *arg, const oidc_login *r)
{
    pg_session *s = arg;
    s->oidc_wait = NULL;
    if (s->state != PGC_AUTH_TOKEN_WAIT)
        return;
    token_decided(s, r);
    pg_session_flush(s);
}

static void handle_token(pg_session *s, const uint8_t *body, size_t len)
{
    pg_cursor c;
    const char *token;
    size_t toklen;
    pg_cursor_init(&c, body, len);
    if (!pg_get_cstring(&c, &token, &toklen) || pg_cursor_left(&c) != 0) {
        pg_session_fail(s, "08P01", "malformed PasswordMessage", NULL);
        return;
    }
    oidc_login r;
    oidc_wait *w;
    if (oidc_check(pg_server_oidc(s->server), s->identity, token, toklen, &r, token_checked, s, &w)) {
        token_decided(s, &r);
        return;
    }
    /* Anything the client pipelines waits in the kernel until the keys are here. */
    s->oidc_wait = w;
    conn_read_disable(s->client);
    pg_session_set_state(s, PGC_AUTH_TOKEN_WAIT);
}

/* After a SCRAM proof or a verified token: AuthenticationOk is queued; open the upstream. */
static void auth_succeeded(pg_session *s)
{
    if (!pg_session_take_connection_slot(s)) {
        char msg[160];
        snprintf(msg, sizeof msg, "too many connections for identity \"%.64s\" (max_connections %d)", s->user,
                 s->identity->max_connections);
        pg_session_fail(s, "53300", msg, NULL);
        return;
    }
    pg_session_set_state(s, PGC_CONNECTING);
    /* Statements pipelined behind authentication wait in the kernel, not in our
     * memory, until the upstream is ready. */
    conn_read_disable(s->client);
    pg_upstream_start(s);
}

/* SASL messages are small; a token may be up to its issuer's max_token_bytes. */
static uint32_t auth_message_limit(const pg_session *s)
{
    if (s->state != PGC_AUTH_TOKEN)
        return AUTH_MAX_MESSAGE;
    return (uint32_t)s->identity->oidc->max_token_bytes + PG_HEADER_LEN + 1;
}

static void read_auth_message(pg_session *s)
{
    struct evbuffer *in = conn_input(s->client);
    uint8_t hdr[PG_HEADER_LEN];
    size_t avail = evbuffer_get_length(in);
    char type;
    uint32_t total;
    evbuffer_copyout(in, hdr, avail < sizeof hdr ? avail : sizeof hdr);
    pg_header_result r = pg_parse_header(hdr, avail, auth_message_limit(s), &type, &total);
    if (r == PG_HDR_NEED_MORE)
        return;
    if (r == PG_HDR_TOO_LONG && s->state == PGC_AUTH_TOKEN && type == 'p') {
        char why[64];
        snprintf(why, sizeof why, "token larger than %lld bytes", (long long)s->identity->oidc->max_token_bytes);
        fail_auth(s, "oidc", why);
        return;
    }
    if (r != PG_HDR_OK || type != 'p') {
        pg_session_fail(s, "08P01", type == 'X' ? "client terminated during authentication"
                                                : "expected a SASL response during authentication", NULL);
        return;
    }
    if (avail < total)
        return;
    uint8_t *msg = malloc(total);
    evbuffer_remove(in, msg, total);
    if (s->state == PGC_AUTH_INIT)
        handle_sasl_init(s, msg + PG_HEADER_LEN, total - PG_HEADER_LEN);
    else if (s->state == PGC_AUTH_FINAL)
        handle_sasl_final(s, msg + PG_HEADER_LEN, total - PG_HEADER_LEN);
    else
        handle_token(s, msg + PG_HEADER_LEN, total - PG_HEADER_LEN);
    OPENSSL_cleanse(msg, total); /* the token or the SCRAM proof */
    free(msg);
}

void pg_auth_on_client_data(pg_session *s)
{
    if (s->state == PGC_STARTUP)
        read_startup(s);
    while (s->state == PGC_AUTH_INIT || s->state == PGC_AUTH_FINAL || s->state == PGC_AUTH_TOKEN) {
        size_t before = evbuffer_get_length(conn_input(s->client));
        pgc_state st = s->state;
        read_auth_message(s);
        if (s->state == st && evbuffer_get_length(conn_input(s->client)) == before)
            break; /* waiting for more bytes */
    }
    /* Bytes after the last auth message (pipelined queries) wait in the input buffer
     * until the upstream is ready: pg_relay_start processes them. */
}
