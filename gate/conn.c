#include "gate/conn.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONN_READ_CHUNK 65536
#define CONN_TLS_READS_PER_EVENT 16 /* bound the work one readable event may do */

typedef enum {
    CONN_PLAIN,      /* plain socket (or TLS after its handshake) */
    CONN_CONNECTING, /* TCP connect in progress */
    CONN_HANDSHAKE,  /* TLS handshake in progress */
    CONN_CLOSED,     /* EOF or error reported; no more I/O */
} conn_state;

struct conn {
    evutil_socket_t fd;
    conn_state state;
    SSL *ssl;
    struct event *rev, *wev;
    struct evbuffer *in, *out;
    conn_data_cb on_read, on_drain;
    conn_event_cb on_event;
    void *arg;
    size_t low_watermark;
    bool reading;        /* the owner wants input */
    bool wev_added;      /* waiting for writability */
    bool was_above_low;  /* output went above the low watermark since the last drain */
    bool tls_read_wants_write; /* SSL_read asked for writability (key update) */
    bool connect_failed;       /* immediate connect failure, reported from the loop */
    char error[160];
};

static void conn_io_cb(evutil_socket_t fd, short what, void *arg);

static conn *conn_alloc(struct event_base *base, evutil_socket_t fd)
{
    conn *c = calloc(1, sizeof *c);
    c->fd = fd;
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    c->rev = event_new(base, fd, EV_READ | EV_PERSIST, conn_io_cb, c);
    c->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, conn_io_cb, c);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return c;
}

conn *conn_new(struct event_base *base, evutil_socket_t fd)
{
    evutil_make_socket_nonblocking(fd);
    return conn_alloc(base, fd);
}

conn *conn_connect(struct event_base *base, const struct sockaddr *sa, socklen_t len)
{
    evutil_socket_t fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    conn *c = conn_alloc(base, fd);
    if (connect(fd, sa, len) != 0 && errno != EINPROGRESS) {
        snprintf(c->error, sizeof c->error, "connect: %s", strerror(errno));
        c->state = CONN_CLOSED;
        c->connect_failed = true;
        /* Reported from the loop so the caller has set its callbacks. */
        event_active(c->wev, EV_WRITE, 0);
        return c;
    }
    c->state = CONN_CONNECTING;
    event_add(c->wev, NULL);
    c->wev_added = true;
    return c;
}

void conn_free(conn *c)
{
    if (!c)
        return;
    event_free(c->rev);
    event_free(c->wev);
    if (c->ssl) {
        if (c->state == CONN_PLAIN)
            SSL_shutdown(c->ssl); /* best effort close_notify, never waits */
        SSL_free(c->ssl);
    }
    evbuffer_free(c->in);
    evbuffer_free(c->out);
    if (c->fd >= 0)
        evutil_closesocket(c->fd);
    free(c);
}

void conn_set_callbacks(conn *c, conn_data_cb on_read, conn_data_cb on_drain, conn_event_cb on_event, void *arg)
{
    c->on_read = on_read;
    c->on_drain = on_drain;
    c->on_event = on_event;
    c->arg = arg;
}

void conn_set_low_watermark(conn *c, size_t bytes) { c->low_watermark = bytes; }
struct evbuffer *conn_input(conn *c) { return c->in; }
struct evbuffer *conn_output(conn *c) { return c->out; }
SSL *conn_ssl(const conn *c) { return c->ssl; }
const char *conn_error(const conn *c) { return c->error[0] ? c->error : "connection closed"; }
evutil_socket_t conn_fd(const conn *c) { return c->fd; }
size_t conn_unsent(const conn *c) { return evbuffer_get_length(c->out); }

static void set_wev(conn *c, bool on)
{
    if (on == c->wev_added)
        return;
    if (on)
        event_add(c->wev, NULL);
    else
        event_del(c->wev);
    c->wev_added = on;
}

static void update_rev(conn *c)
{
    bool want = c->reading && (c->state == CONN_PLAIN || c->state == CONN_HANDSHAKE);
    if (want && !event_pending(c->rev, EV_READ, NULL))
        event_add(c->rev, NULL);
    else if (!want && event_pending(c->rev, EV_READ, NULL))
        event_del(c->rev);
}

static void report(conn *c, conn_event ev)
{
    if (ev != CONN_CONNECTED) {
        c->state = CONN_CLOSED;
        update_rev(c);
        set_wev(c, false);
    }
    if (c->on_event)
        c->on_event(c, ev, c->arg);
}

static void tls_error(conn *c, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[120] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    snprintf(c->error, sizeof c->error, "%s: %s", what, e ? buf : strerror(errno));
    ERR_clear_error();
}

void conn_read_enable(conn *c)
{
    c->reading = true;
    update_rev(c);
    /* Bytes TLS already decrypted raise no readiness on the socket: run a read now. */
    if (c->ssl && c->state == CONN_PLAIN && SSL_pending(c->ssl) > 0)
        event_active(c->rev, EV_READ, 0);
}

void conn_read_disable(conn *c)
{
    c->reading = false;
    update_rev(c);
}

/* ---- reading ---------------------------------------------------------------- */

/* One recv into the input buffer: >0 bytes read, 0 EOF, -1 error, -2 would block. */
static int read_plain(conn *c)
{
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(c->in, CONN_READ_CHUNK, &v, 1) < 1)
        return -1;
    ssize_t n = recv(c->fd, v.iov_base, v.iov_len < CONN_READ_CHUNK ? v.iov_len : CONN_READ_CHUNK, 0);
    if (n <= 0) {
        v.iov_len = 0;
        evbuffer_commit_space(c->in, &v, 1);
        if (n == 0)
            return 0;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return -2;
        snprintf(c->error, sizeof c->error, "recv: %s", strerror(errno));
        return -1;
    }
    v.iov_len = (size_t)n;
    evbuffer_commit_space(c->in, &v, 1);
    return 1;
}

static int read_tls(conn *c)
{
    int got = -2;
    for (int i = 0; i < CONN_TLS_READS_PER_EVENT; i++) {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(c->in, 16384, &v, 1) < 1)
            return -1;
        int n = SSL_read(c->ssl, v.iov_base, (int)(v.iov_len < 16384 ? v.iov_len : 16384));
        if (n > 0) {
            v.iov_len = (size_t)n;
            evbuffer_commit_space(c->in, &v, 1);
            got = 1;
            continue;
        }
        v.iov_len = 0;
        evbuffer_commit_space(c->in, &v, 1);
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_READ)
            return got;
        if (err == SSL_ERROR_WANT_WRITE) {
            c->tls_read_wants_write = true;
            set_wev(c, true);
            return got;
        }
        if (err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0))
            return got == 1 ? 1 : 0; /* close_notify or a bare TCP close */
        tls_error(c, "TLS read");
        return -1;
    }
    /* More may be decrypted and waiting: come back on the next loop turn. */
    if (SSL_pending(c->ssl) > 0)
        event_active(c->rev, EV_READ, 0);
    return got;
}

static void do_read(conn *c)
{
    int r = c->ssl ? read_tls(c) : read_plain(c);
    if (r == 1) {
        if (c->on_read)
            c->on_read(c, c->arg);
    } else if (r == 0) {
        report(c, CONN_EOF);
    } else if (r == -1) {
        report(c, CONN_ERROR);
    }
}

/* ---- writing ---------------------------------------------------------------- */

static int write_tls(conn *c)
{
    while (evbuffer_get_length(c->out) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(c->out, -1, NULL, &v, 1) < 1)
            return 0;
        int n = SSL_write(c->ssl, v.iov_base, (int)(v.iov_len > 65536 ? 65536 : v.iov_len));
        if (n > 0) {
            evbuffer_drain(c->out, (size_t)n);
            continue;
        }
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ)
            return 0;
        tls_error(c, "TLS write");
        return -1;
    }
    return 0;
}

static int write_plain(conn *c)
{
    while (evbuffer_get_length(c->out) > 0) {
        int n = evbuffer_write(c->out, c->fd);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return 0;
        snprintf(c->error, sizeof c->error, "send: %s", n == 0 ? "connection closed" : strerror(errno));
        return -1;
    }
    return 0;
}

void conn_flush(conn *c)
{
    if (c->state != CONN_PLAIN) {
        /* Written once connected / after the handshake. */
        return;
    }
    size_t before = evbuffer_get_length(c->out);
    if (before > c->low_watermark)
        c->was_above_low = true;
    if (before > 0 && (c->ssl ? write_tls(c) : write_plain(c)) < 0) {
        report(c, CONN_ERROR);
        return;
    }
    size_t left = evbuffer_get_length(c->out);
    set_wev(c, left > 0 || c->tls_read_wants_write);
    if (left <= c->low_watermark && c->was_above_low) {
        c->was_above_low = false;
        if (c->on_drain)
            c->on_drain(c, c->arg);
    }
}

/* ---- connect and handshake ---------------------------------------------------- */

static void finish_connect(conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        snprintf(c->error, sizeof c->error, "connect: %s", strerror(err ? err : errno));
        report(c, CONN_ERROR);
        return;
    }
    c->state = CONN_PLAIN;
    set_wev(c, false);
    update_rev(c);
    report(c, CONN_CONNECTED);
    if (c->state == CONN_PLAIN)
        conn_flush(c);
}

static void do_handshake(conn *c)
{
    int n = SSL_do_handshake(c->ssl);
    if (n == 1) {
        c->state = CONN_PLAIN;
        set_wev(c, false);
        update_rev(c);
        report(c, CONN_CONNECTED);
        if (c->state == CONN_PLAIN) {
            conn_flush(c);
            if (SSL_pending(c->ssl) > 0 && c->reading)
                event_active(c->rev, EV_READ, 0);
        }
        return;
    }
    int err = SSL_get_error(c->ssl, n);
    if (err == SSL_ERROR_WANT_READ) {
        set_wev(c, false);
        update_rev(c);
    } else if (err == SSL_ERROR_WANT_WRITE) {
        set_wev(c, true);
    } else {
        tls_error(c, "TLS handshake");
        report(c, CONN_ERROR);
    }
}

bool conn_start_tls(conn *c, SSL *ssl, bool server)
{
    if (c->state != CONN_PLAIN || evbuffer_get_length(c->out) > 0)
        return false;
    if (SSL_set_fd(ssl, c->fd) != 1)
        return false;
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (server)
        SSL_set_accept_state(ssl);
    else
        SSL_set_connect_state(ssl);
    c->ssl = ssl;
    /* Bytes read ahead in plain would be part of the handshake: there must be none. */
    if (evbuffer_get_length(c->in) > 0) {
        snprintf(c->error, sizeof c->error, "data received before the TLS handshake");
        return false;
    }
    c->state = CONN_HANDSHAKE;
    c->reading = true;
    do_handshake(c);
    return true;
}

/* ---- TLS over bytes already read -------------------------------------------------
 * A BIO that returns the bytes read before the handshake began, then reads the
 * socket itself; writes go to the socket.  Nothing else is buffered, so
 * SSL_pending and socket readiness keep meaning what conn relies on. */

typedef struct preread_bio {
    int fd;
    unsigned char *data;
    size_t len, pos;
} preread_bio;

static int preread_read(BIO *b, char *out, int outl)
{
    preread_bio *p = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (outl <= 0)
        return 0;
    if (p->pos < p->len) {
        size_t n = p->len - p->pos < (size_t)outl ? p->len - p->pos : (size_t)outl;
        memcpy(out, p->data + p->pos, n);
        p->pos += n;
        return (int)n;
    }
    ssize_t n = recv(p->fd, out, (size_t)outl, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_read(b);
    return (int)n;
}

static int preread_write(BIO *b, const char *in, int inl)
{
    preread_bio *p = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = send(p->fd, in, (size_t)inl, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_write(b);
    return (int)n;
}

static long preread_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num, (void)ptr;
    preread_bio *p = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING:
        return (long)(p->len - p->pos);
    default:
        return 0;
    }
}

static int preread_destroy(BIO *b)
{
    preread_bio *p = BIO_get_data(b);
    if (p) {
        free(p->data);
        free(p);
    }
    BIO_set_data(b, NULL);
    return 1;
}

static BIO_METHOD *preread_method(void)
{
    static BIO_METHOD *m;
    if (!m) {
        m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "phigate preread socket");
        BIO_meth_set_read(m, preread_read);
        BIO_meth_set_write(m, preread_write);
        BIO_meth_set_ctrl(m, preread_ctrl);
        BIO_meth_set_destroy(m, preread_destroy);
    }
    return m;
}

bool conn_start_tls_preread(conn *c, SSL *ssl)
{
    if (c->state != CONN_PLAIN || evbuffer_get_length(c->out) > 0)
        return false;
    BIO *b = BIO_new(preread_method());
    preread_bio *p = calloc(1, sizeof *p);
    if (!b || !p) {
        BIO_free(b);
        free(p);
        return false;
    }
    p->fd = c->fd;
    p->len = evbuffer_get_length(c->in);
    p->data = malloc(p->len ? p->len : 1);
    evbuffer_remove(c->in, p->data, p->len);
    BIO_set_data(b, p);
    BIO_set_init(b, 1);
    SSL_set_bio(ssl, b, b);
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_set_accept_state(ssl);
    c->ssl = ssl;
    c->state = CONN_HANDSHAKE;
    c->reading = true;
    do_handshake(c);
    return true;
}

static void conn_io_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    conn *c = arg;
    switch (c->state) {
    case CONN_CLOSED:
        if (c->connect_failed && c->on_event) {
            c->connect_failed = false;
            c->on_event(c, CONN_ERROR, c->arg);
        }
        return;
    case CONN_CONNECTING:
        finish_connect(c);
        return;
    case CONN_HANDSHAKE:
        do_handshake(c);
        return;
    case CONN_PLAIN:
        break;
    }
    if (what & EV_WRITE) {
        if (c->tls_read_wants_write) {
            c->tls_read_wants_write = false;
            do_read(c);
            if (c->state != CONN_PLAIN)
                return;
        }
        conn_flush(c);
    }
    if ((what & EV_READ) && c->state == CONN_PLAIN && c->reading)
        do_read(c);
}
