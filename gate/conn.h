/*
 * A non-blocking connection for the fronts: a socket, optional TLS, an input
 * and an output evbuffer, on the libevent loop.
 *
 * Why not bufferevents: a bufferevent writes only when its write event fires
 * (an epoll_ctl to add it, an epoll_wait, another epoll_ctl to remove it) and
 * asks FIONREAD before each read.  A proxy forwarding one small message per
 * statement pays that on every message.  conn writes as soon as the caller
 * flushes and registers for writability only when the kernel says EAGAIN, and
 * reads with one recv, so a relayed message costs one read and one write.
 *
 * Callback contract: on_read runs after new bytes were appended to the input
 * (or at EOF/error, see on_event); on_drain runs when the output has drained to
 * the low watermark after having been above it; on_event reports CONN_CONNECTED
 * (TCP connect or TLS handshake done), CONN_EOF or CONN_ERROR exactly once each
 * kind.  Callbacks may call any conn function except conn_free on the same conn.
 */
#ifndef PHIGATE_CONN_H
#define PHIGATE_CONN_H

#include <event2/util.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct event_base;
struct evbuffer;

typedef enum {
    CONN_CONNECTED = 1,
    CONN_EOF = 2,
    CONN_ERROR = 3,
} conn_event;

typedef struct conn conn;
typedef void (*conn_data_cb)(conn *c, void *arg);
typedef void (*conn_event_cb)(conn *c, conn_event ev, void *arg);

/* Wrap an accepted socket (made non-blocking here). */
conn *conn_new(struct event_base *base, evutil_socket_t fd);
/* Start a non-blocking connect; CONN_CONNECTED or CONN_ERROR follows. */
conn *conn_connect(struct event_base *base, const struct sockaddr *sa, socklen_t len);
void conn_free(conn *c);

void conn_set_callbacks(conn *c, conn_data_cb on_read, conn_data_cb on_drain, conn_event_cb on_event, void *arg);
void conn_set_low_watermark(conn *c, size_t bytes);

struct evbuffer *conn_input(conn *c);
struct evbuffer *conn_output(conn *c);
size_t conn_unsent(const conn *c);

void conn_read_enable(conn *c);
void conn_read_disable(conn *c);
/* Write what is in the output now; the rest goes when the socket is writable. */
void conn_flush(conn *c);

/* Start TLS on the connection: the output must be flushed first (e.g. the 'S'
 * answer to SSLRequest is written in plain before the handshake begins).
 * CONN_CONNECTED reports the end of the handshake. */
bool conn_start_tls(conn *c, SSL *ssl, bool server);
/* Server side, for protocols whose client sends its TLS handshake right after
 * the request for it with no answer to wait for (MySQL's SSLRequest): bytes
 * already read are the start of the handshake and go to TLS first. */
bool conn_start_tls_preread(conn *c, SSL *ssl);
SSL *conn_ssl(const conn *c);
/* The last TLS or socket error, for logs. */
const char *conn_error(const conn *c);
evutil_socket_t conn_fd(const conn *c);

#endif
