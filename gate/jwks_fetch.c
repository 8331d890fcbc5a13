#include "gate/jwks_fetch.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/tls.h"

struct jwks_fetch {
    struct evhttp_connection *conn;
    struct evhttp_request *req;
    SSL *ssl; /* owned by the bufferevent; kept to read the verify result */
    struct event *finish; /* done runs from here, after evhttp has let go of the request */
    size_t max_bytes;
    jwks *keys;
    char err[256];
    jwks_fetch_done done;
    void *arg;
};

static void free_fetch(jwks_fetch *f)
{
    if (f->conn)
        evhttp_connection_free(f->conn); /* frees a request still pending on it */
    if (f->finish)
        event_free(f->finish);
    jwks_free(f->keys);
    free(f);
}

static void finish_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    jwks_fetch *f = arg;
    jwks *keys = f->keys;
    f->keys = NULL;
    f->done(f->arg, keys, f->err);
    free_fetch(f);
}

static void on_error(enum evhttp_request_error e, void *arg)
{
    jwks_fetch *f = arg;
    long vr = f->ssl ? SSL_get_verify_result(f->ssl) : X509_V_OK;
    if (vr != X509_V_OK)
        snprintf(f->err, sizeof f->err, "server certificate not accepted: %s", X509_verify_cert_error_string(vr));
    else if (e == EVREQ_HTTP_DATA_TOO_LONG)
        snprintf(f->err, sizeof f->err, "key set larger than %zu bytes", f->max_bytes);
    else
        snprintf(f->err, sizeof f->err, "%s",
                 e == EVREQ_HTTP_TIMEOUT ? "timed out" : "connection or TLS handshake failed");
    event_active(f->finish, EV_TIMEOUT, 0); /* on_response normally follows in the same turn */
}

static void on_response(struct evhttp_request *req, void *arg)
{
    jwks_fetch *f = arg;
    f->req = NULL; /* evhttp frees it after this callback */
    int code = req ? evhttp_request_get_response_code(req) : 0;
    if (code == 0 && !f->err[0])
        on_error(EVREQ_HTTP_EOF, f);
    else if (code != 0 && code != 200)
        snprintf(f->err, sizeof f->err, "HTTP status %d", code);
    else if (code == 200) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t n = evbuffer_get_length(in);
        char why[200];
        if (n > f->max_bytes)
            snprintf(f->err, sizeof f->err, "key set larger than %zu bytes", f->max_bytes);
        else if (!(f->keys = jwks_parse((const char *)evbuffer_pullup(in, -1), n, why, sizeof why)))
            snprintf(f->err, sizeof f->err, "%s", why);
    }
    event_active(f->finish, EV_TIMEOUT, 0);
}

typedef struct uri_parts {
    struct evhttp_uri *uri;
    const char *host;
    int port;
    char path[1024];
    char hosthdr[300];
} uri_parts;

static bool split_uri(const char *text, uri_parts *u)
{
    u->uri = evhttp_uri_parse(text);
    const char *scheme = u->uri ? evhttp_uri_get_scheme(u->uri) : NULL;
    u->host = u->uri ? evhttp_uri_get_host(u->uri) : NULL;
    if (!scheme || strcmp(scheme, "https") != 0 || !u->host || !*u->host)
        return false;
    u->port = evhttp_uri_get_port(u->uri) > 0 ? evhttp_uri_get_port(u->uri) : 443;
    const char *path = evhttp_uri_get_path(u->uri), *query = evhttp_uri_get_query(u->uri);
    snprintf(u->path, sizeof u->path, "%s%s%s", path && *path ? path : "/", query ? "?" : "", query ? query : "");
    snprintf(u->hosthdr, sizeof u->hosthdr, strchr(u->host, ':') ? "[%s]:%d" : "%s:%d", u->host, u->port);
    return true;
}

jwks_fetch *jwks_fetch_start(struct event_base *base, struct evdns_base *dns, SSL_CTX *ctx, const char *uri,
                             size_t max_bytes, int timeout_s, jwks_fetch_done done, void *arg, char *err,
                             size_t errlen)
{
    uri_parts u = {0};
    SSL *ssl = NULL;
    if (!split_uri(uri, &u) || !(ssl = SSL_new(ctx)) || !tls_client_prepare(ssl, u.host, 2)) {
        snprintf(err, errlen, "%s", ssl ? "bad host name in jwks_uri" : u.host ? "TLS setup failed" : "bad jwks_uri");
        SSL_free(ssl);
        if (u.uri)
            evhttp_uri_free(u.uri);
        return NULL;
    }
    jwks_fetch *f = calloc(1, sizeof *f);
    f->max_bytes = max_bytes;
    f->done = done;
    f->arg = arg;
    f->ssl = ssl;
    f->finish = event_new(base, -1, 0, finish_cb, f);
    struct bufferevent *bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                             BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    f->conn = evhttp_connection_base_bufferevent_new(base, dns, bev, u.host, (ev_uint16_t)u.port);
    evhttp_connection_set_timeout(f->conn, timeout_s);
    evhttp_connection_set_retries(f->conn, 0);
    /* Headers and body both bounded: the issuer is a network peer like any other. */
    evhttp_connection_set_max_headers_size(f->conn, 16384);
    evhttp_connection_set_max_body_size(f->conn, (ev_ssize_t)max_bytes);
    f->req = evhttp_request_new(on_response, f);
    evhttp_request_set_error_cb(f->req, on_error);
    struct evkeyvalq *h = evhttp_request_get_output_headers(f->req);
    evhttp_add_header(h, "Host", u.hosthdr);
    evhttp_add_header(h, "Accept", "application/json, application/jwk-set+json");
    evhttp_add_header(h, "Connection", "close");
    bool sent = evhttp_make_request(f->conn, f->req, EVHTTP_REQ_GET, u.path) == 0;
    evhttp_uri_free(u.uri);
    if (!sent) {
        f->req = NULL; /* evhttp_make_request frees it on failure */
        snprintf(err, errlen, "cannot send the request");
        free_fetch(f);
        return NULL;
    }
    return f;
}

void jwks_fetch_cancel(jwks_fetch *f)
{
    if (f)
        free_fetch(f);
}
