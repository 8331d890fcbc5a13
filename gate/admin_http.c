/*
 * admin_http: see admin_http.h for the routes and who may call them.
 *
 * Every request that needs Redis or a password check becomes an admin_req,
 * kept on h->pending until it is answered, so admin_http_free() can answer
 * (and evhttp can free) each one exactly once.  evhttp keeps a request whose
 * client went away until we answer it (then frees it), so late answers are safe.
 */
#include "gate/admin_http.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>

#include "gate/approver_auth.h"
#include "gate/audit_json.h"
#include "gate/log.h"
#include "gate/scram.h"
#include "gate/tls.h"

#define LOG_PREFIX "admin"
#define MAX_SESSIONS 256
#define MAX_RATE 1024
#define FAIL_LIMIT 5        /* failed logins per address ... */
#define FAIL_WINDOW_S 300   /* ... per this many seconds */
#define MAX_BODY 65536
#define MAX_HEADERS 16384
#define TOKEN_BYTES 32
#define TOKEN_HEX (2 * TOKEN_BYTES)
#define COOKIE_NAME "phigate_admin"
#define MAX_NAME 64
#define MAX_PASSWORD 1024
#define MAX_REASON 1000
#define LIST_LIMIT 500

typedef struct session {
    bool used;
    char id[TOKEN_HEX + 1];
    char csrf[TOKEN_HEX + 1];
    char approver[MAX_NAME + 1];
    char flash[600]; /* shown once on the next page */
    time_t created, seen;
} session;

typedef struct {
    char addr[64];
    int failures;
    time_t window_start;
} rate_entry;

typedef enum {
    R_NONE,
    R_LOGIN_PAGE,
    R_LOGIN_POST,
    R_LOGOUT,
    R_CONSOLE,
    R_FORM_DECIDE,
    R_API_LIST,
    R_API_GET,
    R_API_DECIDE,
} route_kind;

typedef struct admin_req admin_req;

struct admin_http {
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    SSL_CTX *ssl;
    approvals *ap;
    approver_auth *auth;
    int port;
    uint32_t idle_s, max_s;
    session sessions[MAX_SESSIONS];
    rate_entry rates[MAX_RATE];
    admin_req *pending;
};

struct admin_req {
    admin_http *h;
    admin_req *prev, *next;
    struct evhttp_request *req;
    route_kind kind;
    bool api;      /* answers in JSON */
    bool approve;  /* for decisions */
    char id[APPROVALS_ID_LEN + 1];
    char addr[64];
    char approver[MAX_NAME + 1];
    char session_id[TOKEN_HEX + 1]; /* "" for Basic auth */
    char *body;                     /* NUL-terminated copy of the request body */
    approver_auth_job *job;
    approvals_op *op;
};

/* ---- small helpers ----------------------------------------------------------------- */

static time_t mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

static bool random_hex(char *out, size_t bytes)
{
    uint8_t raw[64];
    if (bytes > sizeof raw || RAND_bytes(raw, (int)bytes) != 1)
        return false;
    for (size_t i = 0; i < bytes; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    OPENSSL_cleanse(raw, sizeof raw);
    return true;
}

static bool hex_token_ok(const char *s, size_t want)
{
    if (!s || strlen(s) != want)
        return false;
    for (size_t i = 0; i < want; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static bool tokens_equal(const char *a, const char *b)
{
    return hex_token_ok(a, TOKEN_HEX) && hex_token_ok(b, TOKEN_HEX) && CRYPTO_memcmp(a, b, TOKEN_HEX) == 0;
}

static void peer_addr(struct evhttp_request *req, char *out, size_t len)
{
    struct evhttp_connection *con = evhttp_request_get_connection(req);
    char *host = NULL;
    ev_uint16_t port = 0;
    if (con)
        evhttp_connection_get_peer(con, &host, &port);
    snprintf(out, len, "%s", host ? host : "?");
}

static const char *header(struct evhttp_request *req, const char *name)
{
    return evhttp_find_header(evhttp_request_get_input_headers(req), name);
}

/* ---- responses --------------------------------------------------------------------- */

static void security_headers(admin_http *h, struct evhttp_request *req, const char *nonce)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    char csp[512];
    snprintf(csp, sizeof csp,
             "default-src 'none'; script-src 'nonce-%s'; style-src 'nonce-%s'; connect-src 'self'; "
             "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; img-src 'none'",
             nonce, nonce);
    evhttp_add_header(out, "Content-Security-Policy", csp);
    evhttp_add_header(out, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(out, "X-Frame-Options", "DENY");
    evhttp_add_header(out, "Referrer-Policy", "no-referrer");
    evhttp_add_header(out, "Cache-Control", "no-store");
    if (h->ssl)
        evhttp_add_header(out, "Strict-Transport-Security", "max-age=31536000");
}

static void send_buf(admin_http *h, struct evhttp_request *req, int code, const char *type, audit_buf *b,
                     const char *nonce)
{
    security_headers(h, req, nonce ? nonce : "none");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
    struct evbuffer *body = evbuffer_new();
    if (b->oom) {
        code = 500;
        evbuffer_add_printf(body, "out of memory\n");
    } else if (b->len)
        evbuffer_add(body, b->p, b->len);
    const char *reason = code == 200 ? "OK" : code == 303 ? "See Other" : code == 400 ? "Bad Request"
                       : code == 401 ? "Unauthorized" : code == 403 ? "Forbidden" : code == 404 ? "Not Found"
                       : code == 409 ? "Conflict" : code == 429 ? "Too Many Requests"
                       : code == 503 ? "Service Unavailable" : "Error";
    evhttp_send_reply(req, code, reason, body);
    evbuffer_free(body);
    audit_buf_free(b);
}

static void send_json(admin_http *h, struct evhttp_request *req, int code, audit_buf *b)
{
    send_buf(h, req, code, "application/json; charset=utf-8", b, NULL);
}

static void send_json_error(admin_http *h, struct evhttp_request *req, int code, const char *status,
                            const char *msg)
{
    audit_buf b = {0};
    audit_buf_puts(&b, "{\"error\":");
    audit_buf_json_str(&b, msg, strlen(msg));
    audit_buf_puts(&b, ",\"status\":");
    audit_buf_json_str(&b, status, strlen(status));
    audit_buf_puts(&b, "}\n");
    send_json(h, req, code, &b);
}

static void send_redirect(admin_http *h, struct evhttp_request *req, const char *location, const char *cookie)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_add_header(out, "Location", location);
    if (cookie)
        evhttp_add_header(out, "Set-Cookie", cookie);
    audit_buf b = {0};
    send_buf(h, req, 303, "text/plain; charset=utf-8", &b, NULL);
}

static void unauthorized_json(admin_http *h, struct evhttp_request *req, const char *msg)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                      "Basic realm=\"phigate approvals\", charset=\"UTF-8\"");
    send_json_error(h, req, 401, "unauthorized", msg);
}

/* ---- sessions ---------------------------------------------------------------------- */

static session *session_find(admin_http *h, const char *id)
{
    time_t now = mono_s();
    for (size_t i = 0; i < MAX_SESSIONS; i++) {
        session *s = &h->sessions[i];
        if (!s->used || !tokens_equal(s->id, id))
            continue;
        if (now - s->seen > (time_t)h->idle_s || now - s->created > (time_t)h->max_s) {
            OPENSSL_cleanse(s, sizeof *s);
            return NULL;
        }
        s->seen = now;
        return s;
    }
    return NULL;
}

/* A fresh session, evicting the least recently seen when full. */
static session *session_new(admin_http *h, const char *approver)
{
    session *s = NULL;
    for (size_t i = 0; i < MAX_SESSIONS && !s; i++)
        if (!h->sessions[i].used)
            s = &h->sessions[i];
    if (!s) {
        s = &h->sessions[0];
        for (size_t i = 1; i < MAX_SESSIONS; i++)
            if (h->sessions[i].seen < s->seen)
                s = &h->sessions[i];
    }
    memset(s, 0, sizeof *s);
    if (!random_hex(s->id, TOKEN_BYTES) || !random_hex(s->csrf, TOKEN_BYTES))
        return NULL;
    s->used = true;
    snprintf(s->approver, sizeof s->approver, "%s", approver);
    s->created = s->seen = mono_s();
    return s;
}

/* The session named by our cookie, if any and still valid. */
static session *session_of(admin_http *h, struct evhttp_request *req)
{
    const char *cookie = header(req, "Cookie");
    const char *name = COOKIE_NAME "=";
    for (const char *p = cookie; p && *p;) {
        while (*p == ' ' || *p == ';')
            p++;
        size_t n = strcspn(p, ";");
        if (n == strlen(name) + TOKEN_HEX && strncmp(p, name, strlen(name)) == 0) {
            char id[TOKEN_HEX + 1];
            memcpy(id, p + strlen(name), TOKEN_HEX);
            id[TOKEN_HEX] = '\0';
            return session_find(h, id);
        }
        p += n;
    }
    return NULL;
}

/* ---- failed-login rate limit ---------------------------------------------------------- */

static rate_entry *rate_slot(admin_http *h, const char *addr, bool create)
{
    rate_entry *oldest = &h->rates[0];
    for (size_t i = 0; i < MAX_RATE; i++) {
        if (h->rates[i].addr[0] && strcmp(h->rates[i].addr, addr) == 0)
            return &h->rates[i];
        if (h->rates[i].window_start < oldest->window_start)
            oldest = &h->rates[i];
    }
    if (!create)
        return NULL;
    memset(oldest, 0, sizeof *oldest);
    snprintf(oldest->addr, sizeof oldest->addr, "%s", addr);
    oldest->window_start = mono_s();
    return oldest;
}

/* Seconds until this address may try again; 0 = go ahead. */
static int rate_blocked(admin_http *h, const char *addr)
{
    rate_entry *r = rate_slot(h, addr, false);
    time_t now = mono_s();
    if (!r || now - r->window_start >= FAIL_WINDOW_S)
        return 0;
    return r->failures >= FAIL_LIMIT ? (int)(FAIL_WINDOW_S - (now - r->window_start)) : 0;
}

static void rate_record(admin_http *h, const char *addr, bool ok)
{
    rate_entry *r = rate_slot(h, addr, !ok);
    if (!r)
        return;
    if (ok) {
        memset(r, 0, sizeof *r);
        return;
    }
    if (mono_s() - r->window_start >= FAIL_WINDOW_S)
        r->failures = 0, r->window_start = mono_s();
    r->failures++;
}

/* ---- pending requests ------------------------------------------------------------------ */

static admin_req *areq_new(admin_http *h, struct evhttp_request *req, route_kind kind)
{
    admin_req *ar = calloc(1, sizeof *ar);
    if (!ar)
        return NULL;
    ar->h = h, ar->req = req, ar->kind = kind;
    ar->api = kind == R_API_LIST || kind == R_API_GET || kind == R_API_DECIDE;
    peer_addr(req, ar->addr, sizeof ar->addr);
    ar->next = h->pending;
    if (h->pending)
        h->pending->prev = ar;
    h->pending = ar;
    return ar;
}

/* Answered: forget it (evhttp owns req and frees it once sent). */
static void areq_free(admin_req *ar)
{
    admin_http *h = ar->h;
    if (ar->prev)
        ar->prev->next = ar->next;
    else
        h->pending = ar->next;
    if (ar->next)
        ar->next->prev = ar->prev;
    if (ar->body) {
        OPENSSL_cleanse(ar->body, strlen(ar->body));
        free(ar->body);
    }
    free(ar);
}

static void areq_error(admin_req *ar, int code, const char *status, const char *msg)
{
    if (ar->api)
        send_json_error(ar->h, ar->req, code, status, msg);
    else {
        audit_buf b = {0};
        audit_buf_puts(&b, msg);
        audit_buf_putc(&b, '\n');
        send_buf(ar->h, ar->req, code, "text/plain; charset=utf-8", &b, NULL);
    }
    areq_free(ar);
}

/* Copy the body (bounded by evhttp's max body size) as a C string. */
static bool areq_body(admin_req *ar)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(ar->req);
    size_t n = evbuffer_get_length(in);
    if (n > MAX_BODY)
        return false;
    ar->body = malloc(n + 1);
    if (!ar->body)
        return false;
    if (n && evbuffer_copyout(in, ar->body, n) != (ev_ssize_t)n)
        return false;
    ar->body[n] = '\0';
    return strlen(ar->body) == n; /* no NUL bytes inside */
}

/* ---- pages ------------------------------------------------------------------------------ */

static const char page_style[] =
    "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}"
    "header{display:flex;gap:1em;align-items:center}h1{font-size:1.3em;margin:0}"
    "table{border-collapse:collapse;width:100%;margin-top:1em}td,th{border:1px solid #ccc;padding:.4em;"
    "vertical-align:top;text-align:left}pre{white-space:pre-wrap;word-break:break-all;margin:0;max-height:30em;"
    "overflow:auto;background:#f6f6f6;padding:.4em}.flash{background:#eef;padding:.5em}.err{background:#fee;"
    "padding:.5em}form.d{margin:.2em 0}input{margin:.1em}button.approve{background:#cfc}button.deny{background:#fcc}"
    ".muted{color:#777}";

static void page_head(audit_buf *b, const char *title, const char *nonce)
{
    audit_buf_printf(b,
                     "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                     "<meta name=\"viewport\" content=\"width=device-width\"><title>%s</title>"
                     "<style nonce=\"%s\">%s</style></head>",
                     title, nonce, page_style);
}

static void html(audit_buf *b, const char *s) { audit_buf_html(b, s, strlen(s)); }

static void send_login_page(admin_http *h, struct evhttp_request *req, int code, const char *error)
{
    char nonce[33];
    audit_buf b = {0};
    if (!random_hex(nonce, 16))
        snprintf(nonce, sizeof nonce, "none");
    page_head(&b, "phigate approvals: sign in", nonce);
    audit_buf_puts(&b, "<body><h1>phigate approvals</h1>");
    if (error) {
        audit_buf_puts(&b, "<p class=\"err\">");
        html(&b, error);
        audit_buf_puts(&b, "</p>");
    }
    audit_buf_puts(&b, "<form method=\"post\" action=\"/login\">"
                       "<p><label>Approver <input name=\"name\" autocomplete=\"username\" required "
                       "maxlength=\"64\" autofocus></label></p>"
                       "<p><label>Password <input name=\"password\" type=\"password\" "
                       "autocomplete=\"current-password\" required maxlength=\"1024\"></label></p>"
                       "<p><button type=\"submit\">Sign in</button></p></form></body></html>\n");
    send_buf(h, req, code, "text/html; charset=utf-8", &b, nonce);
}

static void fmt_age(char *out, size_t len, uint64_t now, uint64_t then)
{
    uint64_t s = now > then ? (now - then) / 1000 : 0;
    if (s < 120)
        snprintf(out, len, "%llu s", (unsigned long long)s);
    else if (s < 7200)
        snprintf(out, len, "%llu min", (unsigned long long)(s / 60));
    else
        snprintf(out, len, "%llu h", (unsigned long long)(s / 3600));
}

static void render_row(audit_buf *b, const approval_info *it, uint64_t now, const char *csrf)
{
    char age[32];
    if (!hex_token_ok(it->id, APPROVALS_ID_LEN))
        return; /* never put an id we did not make into a URL */
    fmt_age(age, sizeof age, now, it->created_ms);
    audit_buf_printf(b, "<tr data-id=\"%s\" data-created=\"%llu\"><td><code>%s</code></td><td class=\"age\">%s</td><td>",
                     it->id, (unsigned long long)it->created_ms, it->id, age);
    html(b, it->identity);
    audit_buf_puts(b, "<br><span class=\"muted\">");
    html(b, it->client_addr);
    audit_buf_puts(b, "</span></td><td>");
    html(b, it->database);
    audit_buf_puts(b, " <span class=\"muted\">");
    html(b, it->protocol);
    audit_buf_puts(b, "</span></td><td><b>");
    html(b, it->rule);
    audit_buf_puts(b, "</b><br>");
    html(b, it->reason);
    audit_buf_printf(b, "<br><span class=\"muted\">%s</span></td><td><pre>",
                     it->waiting ? "agent waiting" : "agent not waiting: an approval serves its retry");
    html(b, it->statement);
    audit_buf_printf(b,
                     "</pre></td><td><form class=\"d\" method=\"post\" action=\"/requests/%s/approve\">"
                     "<input type=\"hidden\" name=\"csrf\" value=\"%s\">"
                     "<input name=\"reason\" placeholder=\"reason\" maxlength=\"1000\">"
                     "<input name=\"ttl\" type=\"number\" min=\"1\" max=\"604800\" placeholder=\"valid s\">"
                     "<input name=\"row_cap\" type=\"number\" min=\"1\" placeholder=\"row cap\">"
                     "<button class=\"approve\" type=\"submit\">Approve</button></form>"
                     "<form class=\"d\" method=\"post\" action=\"/requests/%s/deny\">"
                     "<input type=\"hidden\" name=\"csrf\" value=\"%s\">"
                     "<input name=\"reason\" placeholder=\"reason (required)\" required maxlength=\"1000\">"
                     "<button class=\"deny\" type=\"submit\">Deny</button></form></td></tr>",
                     it->id, csrf, it->id, csrf);
}

/* The refresh: poll the JSON list every 2 s; add rows for new requests (built
 * with textContent, never innerHTML), drop rows that were decided, update ages. */
static const char console_script[] =
    "(function(){'use strict';"
    "var csrf=document.body.dataset.csrf,tb=document.querySelector('#reqs tbody'),st=document.getElementById('st');"
    "function t(v){return v===null||v===undefined?'':(typeof v==='object'?String(v.lossy||''):String(v));}"
    "function el(n,c,x){var e=document.createElement(n);if(c)e.className=c;if(x!==undefined)e.textContent=x;return e;}"
    "function age(ms){var s=Math.max(0,Math.floor(ms/1000));return s<120?s+' s':s<7200?Math.floor(s/60)+' min':"
    "Math.floor(s/3600)+' h';}"
    "function inp(n,p,ty,req,max){var i=el('input');i.name=n;if(p)i.placeholder=p;if(ty)i.type=ty;if(req)i.required=true;"
    "if(ty==='number')i.min='1';if(max)i.setAttribute(ty==='number'?'max':'maxlength',max);return i;}"
    "function form(id,verb,fs,label){var f=el('form','d');f.method='post';f.action='/requests/'+id+'/'+verb;"
    "var c=inp('csrf','','hidden');c.value=csrf;f.appendChild(c);fs.forEach(function(x){f.appendChild(x);});"
    "var b=el('button',verb,label);b.type='submit';f.appendChild(b);return f;}"
    "function row(r,now){var id=t(r.id);if(!/^[0-9a-f]{16}$/.test(id))return null;var tr=el('tr');"
    "tr.dataset.id=id;tr.dataset.created=String(r.created_ms);var c=el('td');c.appendChild(el('code','',id));"
    "tr.appendChild(c);tr.appendChild(el('td','age',age(now-r.created_ms)));"
    "c=el('td','',t(r.identity));c.appendChild(el('br'));c.appendChild(el('span','muted',t(r.client_addr)));"
    "tr.appendChild(c);c=el('td','',t(r.database)+' ');c.appendChild(el('span','muted',t(r.protocol)));"
    "tr.appendChild(c);c=el('td');c.appendChild(el('b','',t(r.rule)));c.appendChild(el('br'));"
    "c.appendChild(document.createTextNode(t(r.reason)));c.appendChild(el('br'));"
    "c.appendChild(el('span','muted',r.waiting?'agent waiting':'agent not waiting: an approval serves its retry'));"
    "tr.appendChild(c);c=el('td');c.appendChild(el('pre','',t(r.statement)));tr.appendChild(c);c=el('td');"
    "c.appendChild(form(id,'approve',[inp('reason','reason','',false,'1000'),inp('ttl','valid s','number',false,"
    "'604800'),inp('row_cap','row cap','number')],'Approve'));"
    "c.appendChild(form(id,'deny',[inp('reason','reason (required)','',true,'1000')],'Deny'));"
    "tr.appendChild(c);return tr;}"
    "function refresh(){fetch('/api/requests',{credentials:'same-origin',headers:{'Accept':'application/json'}})"
    ".then(function(res){if(res.status===401){location.href='/login';return null;}return res.json();})"
    ".then(function(j){if(!j||!j.requests)return;var seen={},have={};"
    "Array.prototype.forEach.call(tb.rows,function(tr){have[tr.dataset.id]=tr;});"
    "j.requests.forEach(function(r){var id=t(r.id);seen[id]=1;if(!have[id]){var tr=row(r,j.now_ms);"
    "if(tr)tb.appendChild(tr);}});"
    "Array.prototype.slice.call(tb.rows).forEach(function(tr){if(!seen[tr.dataset.id])tr.remove();"
    "else tr.querySelector('.age').textContent=age(j.now_ms-Number(tr.dataset.created));});"
    "st.textContent=tb.rows.length+' pending \\u00b7 updated '+new Date().toLocaleTimeString();})"
    ".catch(function(){st.textContent='cannot reach phigate; retrying';});}"
    "setInterval(refresh,2000);})();";

static void send_console(admin_req *ar, session *s, const approval_info *items, size_t n, uint64_t now,
                         const char *err)
{
    char nonce[33];
    audit_buf b = {0};
    if (!random_hex(nonce, 16))
        snprintf(nonce, sizeof nonce, "none");
    page_head(&b, "phigate approvals", nonce);
    audit_buf_printf(&b, "<body data-csrf=\"%s\"><header><h1>phigate approvals</h1><span>signed in as <b>",
                     s->csrf);
    html(&b, s->approver);
    audit_buf_printf(&b,
                     "</b></span><form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" "
                     "value=\"%s\"><button type=\"submit\">Sign out</button></form></header>",
                     s->csrf);
    if (s->flash[0]) {
        audit_buf_puts(&b, "<p class=\"flash\">");
        html(&b, s->flash);
        audit_buf_puts(&b, "</p>");
        s->flash[0] = '\0';
    }
    if (err) {
        audit_buf_puts(&b, "<p class=\"err\">");
        html(&b, err);
        audit_buf_puts(&b, "</p>");
    }
    audit_buf_printf(&b, "<p id=\"st\">%zu pending</p><table id=\"reqs\"><thead><tr><th>request</th><th>age</th>"
                         "<th>identity / client</th><th>database</th><th>why held</th><th>statement</th>"
                         "<th>decision</th></tr></thead><tbody>",
                     n);
    for (size_t i = 0; i < n; i++)
        render_row(&b, &items[i], now, s->csrf);
    audit_buf_printf(&b, "</tbody></table><script nonce=\"%s\">%s</script></body></html>\n", nonce,
                     console_script);
    send_buf(ar->h, ar->req, 200, "text/html; charset=utf-8", &b, nonce);
}

/* ---- JSON ----------------------------------------------------------------------------- */

static void json_str_field(audit_buf *b, const char *key, const char *v, bool comma)
{
    audit_buf_printf(b, "%s\"%s\":", comma ? "," : "", key);
    audit_buf_json_str(b, v, strlen(v));
}

static void json_info(audit_buf *b, const approval_info *it)
{
    json_str_field(b, "id", it->id, false);
    json_str_field(b, "status", it->status, true);
    json_str_field(b, "identity", it->identity, true);
    json_str_field(b, "client_addr", it->client_addr, true);
    json_str_field(b, "database", it->database, true);
    json_str_field(b, "protocol", it->protocol, true);
    json_str_field(b, "statement", it->statement, true);
    json_str_field(b, "fingerprint", it->fingerprint, true);
    json_str_field(b, "reason", it->reason, true);
    json_str_field(b, "rule", it->rule, true);
    json_str_field(b, "instance", it->instance, true);
    json_str_field(b, "decided_by", it->decided_by, true);
    json_str_field(b, "decision_reason", it->decision_reason, true);
    audit_buf_printf(b, ",\"created_ms\":%llu,\"expires_ms\":%llu,\"decided_ms\":%llu,\"row_cap\":%llu,\"waiting\":%s",
                     (unsigned long long)it->created_ms, (unsigned long long)it->expires_ms,
                     (unsigned long long)it->decided_ms, (unsigned long long)it->row_cap,
                     it->waiting ? "true" : "false");
}

/* ---- completions from approvals ----------------------------------------------------------- */

static void on_list_done(void *arg, const char *err, const approval_info *items, size_t n, uint64_t now)
{
    admin_req *ar = arg;
    ar->op = NULL;
    if (ar->kind == R_CONSOLE) {
        session *s = session_find(ar->h, ar->session_id);
        if (!s) {
            send_redirect(ar->h, ar->req, "/login", NULL);
            areq_free(ar);
            return;
        }
        send_console(ar, s, items, n, now, err);
        areq_free(ar);
        return;
    }
    if (err) {
        areq_error(ar, 503, "unavailable", err);
        return;
    }
    audit_buf b = {0};
    audit_buf_printf(&b, "{\"now_ms\":%llu,\"requests\":[", (unsigned long long)now);
    for (size_t i = 0; i < n; i++) {
        audit_buf_puts(&b, i ? ",{" : "{");
        json_info(&b, &items[i]);
        audit_buf_putc(&b, '}');
    }
    audit_buf_puts(&b, "]}\n");
    send_json(ar->h, ar->req, 200, &b);
    areq_free(ar);
}

static void on_get_done(void *arg, const char *err, const approval_info *items, size_t n, uint64_t now)
{
    admin_req *ar = arg;
    ar->op = NULL;
    if (err) {
        areq_error(ar, 503, "unavailable", err);
        return;
    }
    if (n == 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "no request %s", ar->id);
        areq_error(ar, 404, "not_found", msg);
        return;
    }
    audit_buf b = {0};
    audit_buf_printf(&b, "{\"now_ms\":%llu,\"request\":{", (unsigned long long)now);
    json_info(&b, &items[0]);
    audit_buf_puts(&b, "}}\n");
    send_json(ar->h, ar->req, 200, &b);
    areq_free(ar);
}

static int decision_http_code(approval_decision_status st)
{
    switch (st) {
    case DECISION_OK: return 200;
    case DECISION_NOT_FOUND: return 404;
    case DECISION_NOT_PENDING:
    case DECISION_EXPIRED: return 409;
    case DECISION_SELF: return 403;
    case DECISION_INVALID: return 400;
    case DECISION_UNAVAILABLE: return 503;
    }
    return 500;
}

static void on_decide_done(void *arg, approval_decision_status st, const char *msg)
{
    admin_req *ar = arg;
    ar->op = NULL;
    log_msg(st == DECISION_OK ? LOG_LEVEL_INFO : LOG_LEVEL_WARN, LOG_PREFIX, "%s from %s: %s %s: %s",
            ar->approver, ar->addr, ar->approve ? "approve" : "deny", ar->id, msg);
    if (ar->kind == R_FORM_DECIDE) {
        session *s = session_find(ar->h, ar->session_id);
        if (s)
            snprintf(s->flash, sizeof s->flash, "%s", msg);
        send_redirect(ar->h, ar->req, s ? "/" : "/login", NULL);
        areq_free(ar);
        return;
    }
    if (st != DECISION_OK) {
        areq_error(ar, decision_http_code(st), approval_decision_status_name(st), msg);
        return;
    }
    audit_buf b = {0};
    audit_buf_puts(&b, "{\"ok\":true,\"id\":");
    audit_buf_json_str(&b, ar->id, strlen(ar->id));
    audit_buf_printf(&b, ",\"status\":\"%s\",\"message\":", ar->approve ? "approved" : "denied");
    audit_buf_json_str(&b, msg, strlen(msg));
    audit_buf_puts(&b, "}\n");
    send_json(ar->h, ar->req, 200, &b);
    areq_free(ar);
}

/* ---- decision arguments ------------------------------------------------------------------- */

typedef struct {
    char reason[MAX_REASON + 1];
    uint64_t ttl, row_cap;
} decide_args;

static bool parse_u64_text(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    if (!s || !*s)
        return true; /* absent */
    if (*s < '0' || *s > '9')
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return false;
    *out = v;
    return true;
}

/* JSON {"reason": "...", "ttl": N, "row_cap": N} or a form body. */
static const char *parse_decide_args(admin_req *ar, decide_args *d)
{
    memset(d, 0, sizeof *d);
    const char *type = header(ar->req, "Content-Type");
    const char *p = ar->body;
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
        p++;
    if ((type && strncasecmp(type, "application/json", 16) == 0) || *p == '{') {
        aj_arena arena = {0};
        aj_value *v = NULL;
        char err[128];
        const char *bad = NULL;
        if (!aj_parse(&arena, ar->body, strlen(ar->body), &v, err, sizeof err) || v->type != AJ_OBJECT)
            bad = "the body must be a JSON object: {\"reason\": \"...\", \"ttl\": seconds, \"row_cap\": rows}";
        else {
            const aj_value *r = aj_get(v, "reason");
            if (r && r->type != AJ_STRING && r->type != AJ_NULL)
                bad = "reason must be a string";
            else if (r && r->type == AJ_STRING && r->len > MAX_REASON)
                bad = "reason is longer than 1000 bytes";
            else if (r && r->type == AJ_STRING)
                snprintf(d->reason, sizeof d->reason, "%s", r->str);
            if (!bad && aj_get(v, "ttl") && aj_get(v, "ttl")->type != AJ_NULL &&
                (!aj_get_u64(v, "ttl", &d->ttl) || d->ttl < 1 || d->ttl > 604800))
                bad = "ttl must be a whole number of seconds, 1..604800";
            if (!bad && aj_get(v, "row_cap") && aj_get(v, "row_cap")->type != AJ_NULL &&
                (!aj_get_u64(v, "row_cap", &d->row_cap) || d->row_cap > 1000000000000ULL))
                bad = "row_cap must be a whole number of rows";
        }
        aj_arena_free(&arena);
        return bad;
    }
    struct evkeyvalq kv;
    TAILQ_INIT(&kv);
    if (evhttp_parse_query_str(ar->body, &kv) != 0) {
        evhttp_clear_headers(&kv);
        return "malformed form body";
    }
    const char *bad = NULL, *reason = evhttp_find_header(&kv, "reason");
    if (reason && strlen(reason) > MAX_REASON)
        bad = "reason is longer than 1000 bytes";
    else if (reason)
        snprintf(d->reason, sizeof d->reason, "%s", reason);
    if (!bad && (!parse_u64_text(evhttp_find_header(&kv, "ttl"), 604800, &d->ttl) ||
                 (evhttp_find_header(&kv, "ttl") && *evhttp_find_header(&kv, "ttl") && d->ttl < 1)))
        bad = "ttl must be a whole number of seconds, 1..604800";
    if (!bad && !parse_u64_text(evhttp_find_header(&kv, "row_cap"), 1000000000000ULL, &d->row_cap))
        bad = "row_cap must be a whole number of rows";
    evhttp_clear_headers(&kv);
    return bad;
}

/* ---- the authenticated part ------------------------------------------------------------------ */

static void proceed(admin_req *ar)
{
    admin_http *h = ar->h;
    switch (ar->kind) {
    case R_CONSOLE:
    case R_API_LIST:
        ar->op = approvals_list_pending(h->ap, LIST_LIMIT, on_list_done, ar);
        break;
    case R_API_GET:
        ar->op = approvals_get(h->ap, ar->id, on_get_done, ar);
        break;
    case R_API_DECIDE:
    case R_FORM_DECIDE: {
        decide_args d;
        const char *bad = parse_decide_args(ar, &d);
        if (bad) {
            if (ar->kind == R_FORM_DECIDE) {
                session *s = session_find(h, ar->session_id);
                if (s)
                    snprintf(s->flash, sizeof s->flash, "%s", bad);
                send_redirect(h, ar->req, "/", NULL);
                areq_free(ar);
            } else
                areq_error(ar, 400, "invalid", bad);
            return;
        }
        approval_decision dec = {ar->id, ar->approver, ar->approve, d.reason, (uint32_t)d.ttl, d.row_cap};
        ar->op = approvals_decide(h->ap, &dec, on_decide_done, ar);
        break;
    }
    case R_LOGOUT: {
        session *s = session_find(h, ar->session_id);
        if (s)
            OPENSSL_cleanse(s, sizeof *s);
        send_redirect(h, ar->req, "/login",
                      COOKIE_NAME "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
        areq_free(ar);
        return;
    }
    default:
        areq_error(ar, 500, "internal", "unexpected route");
        return;
    }
    if (!ar->op)
        areq_error(ar, 503, "unavailable", "out of memory");
}

static void on_basic_checked(void *arg, bool ok)
{
    admin_req *ar = arg;
    ar->job = NULL;
    rate_record(ar->h, ar->addr, ok);
    if (!ok) {
        char name[80];
        log_msg(LOG_LEVEL_WARN, LOG_PREFIX, "API authentication failed for %s from %s",
                log_escape(ar->approver, strlen(ar->approver), 64, name, sizeof name), ar->addr);
        if (ar->api)
            unauthorized_json(ar->h, ar->req, "wrong approver name or password");
        else
            send_json_error(ar->h, ar->req, 401, "unauthorized", "wrong approver name or password");
        areq_free(ar);
        return;
    }
    proceed(ar);
}

/* "Basic base64(name:password)" -> name, password. */
static bool parse_basic(const char *value, char *name, size_t namelen, char *password, size_t pwlen)
{
    if (!value || strncasecmp(value, "Basic ", 6) != 0)
        return false;
    const char *b64 = value + 6;
    while (*b64 == ' ')
        b64++;
    size_t n = strlen(b64), used;
    uint8_t raw[1200];
    if (n == 0 || n > 1600 || !b64_decode(b64, n, raw, sizeof raw - 1, &used))
        return false;
    raw[used] = '\0';
    char *colon = memchr(raw, ':', used);
    if (!colon || memchr(raw, '\0', used) || (size_t)(colon - (char *)raw) > MAX_NAME ||
        strlen(colon + 1) > MAX_PASSWORD || (size_t)(colon - (char *)raw) >= namelen || strlen(colon + 1) >= pwlen) {
        OPENSSL_cleanse(raw, sizeof raw);
        return false;
    }
    size_t nl = (size_t)(colon - (char *)raw), pl = used - nl - 1;
    memcpy(name, raw, nl), name[nl] = '\0';
    memcpy(password, colon + 1, pl), password[pl] = '\0';
    OPENSSL_cleanse(raw, sizeof raw);
    return true;
}

/* A cookie POST must come from our own pages: same Origin (when sent) and the CSRF token. */
static bool csrf_ok(admin_req *ar, const session *s)
{
    const char *origin = header(ar->req, "Origin"), *host = header(ar->req, "Host");
    if (origin && strcmp(origin, "null") != 0) {
        char want[300];
        snprintf(want, sizeof want, "%s://%s", ar->h->ssl ? "https" : "http", host ? host : "");
        if (strcmp(origin, want) != 0)
            return false;
    }
    const char *token = header(ar->req, "X-CSRF-Token");
    if (token)
        return tokens_equal(token, s->csrf);
    struct evkeyvalq kv;
    TAILQ_INIT(&kv);
    bool ok = evhttp_parse_query_str(ar->body ? ar->body : "", &kv) == 0 &&
              tokens_equal(evhttp_find_header(&kv, "csrf"), s->csrf);
    evhttp_clear_headers(&kv);
    return ok;
}

static void authenticate(admin_req *ar)
{
    admin_http *h = ar->h;
    bool post = evhttp_request_get_command(ar->req) == EVHTTP_REQ_POST;
    const char *authz = header(ar->req, "Authorization");
    if (ar->api && authz) {
        char password[MAX_PASSWORD + 1];
        if (!parse_basic(authz, ar->approver, sizeof ar->approver, password, sizeof password)) {
            unauthorized_json(h, ar->req, "use HTTP Basic authentication with an approver name and password");
            areq_free(ar);
            return;
        }
        int wait = rate_blocked(h, ar->addr);
        if (wait > 0) {
            char msg[128];
            snprintf(msg, sizeof msg, "too many failed logins from %s; try again in %d s", ar->addr, wait);
            OPENSSL_cleanse(password, sizeof password);
            areq_error(ar, 429, "rate_limited", msg);
            return;
        }
        ar->job = approver_auth_check(h->auth, ar->approver, password, on_basic_checked, ar);
        OPENSSL_cleanse(password, sizeof password);
        if (!ar->job)
            areq_error(ar, 503, "busy", "too many logins in progress; try again shortly");
        return;
    }
    session *s = session_of(h, ar->req);
    if (!s) {
        if (ar->api)
            unauthorized_json(h, ar->req, "sign in: HTTP Basic with an approver name and password");
        else
            send_redirect(h, ar->req, "/login", NULL);
        areq_free(ar);
        return;
    }
    snprintf(ar->session_id, sizeof ar->session_id, "%s", s->id);
    snprintf(ar->approver, sizeof ar->approver, "%s", s->approver);
    if (post && !csrf_ok(ar, s)) {
        areq_error(ar, 403, "csrf", "missing or wrong CSRF token; reload the page");
        return;
    }
    proceed(ar);
}

/* ---- login -------------------------------------------------------------------------------- */

static void on_login_checked(void *arg, bool ok)
{
    admin_req *ar = arg;
    admin_http *h = ar->h;
    ar->job = NULL;
    rate_record(h, ar->addr, ok);
    char name[80];
    log_escape(ar->approver, strlen(ar->approver), 64, name, sizeof name);
    if (!ok) {
        log_msg(LOG_LEVEL_WARN, LOG_PREFIX, "console login failed for %s from %s", name, ar->addr);
        send_login_page(h, ar->req, 401, "Wrong approver name or password.");
        areq_free(ar);
        return;
    }
    session *s = session_new(h, ar->approver);
    if (!s) {
        areq_error(ar, 503, "unavailable", "cannot create a session");
        return;
    }
    log_msg(LOG_LEVEL_INFO, LOG_PREFIX, "console login: %s from %s", name, ar->addr);
    char cookie[256];
    snprintf(cookie, sizeof cookie, COOKIE_NAME "=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%u%s", s->id,
             (unsigned)h->max_s, h->ssl ? "; Secure" : "");
    send_redirect(h, ar->req, "/", cookie);
    areq_free(ar);
}

static void login_post(admin_req *ar)
{
    admin_http *h = ar->h;
    struct evkeyvalq kv;
    TAILQ_INIT(&kv);
    int wait = rate_blocked(h, ar->addr);
    if (wait > 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "Too many failed logins from %s; try again in %d s.", ar->addr, wait);
        send_login_page(h, ar->req, 429, msg);
        areq_free(ar);
        return;
    }
    const char *name = NULL, *password = NULL;
    if (evhttp_parse_query_str(ar->body, &kv) == 0) {
        name = evhttp_find_header(&kv, "name");
        password = evhttp_find_header(&kv, "password");
    }
    if (!name || !password || !*name || strlen(name) > MAX_NAME || strlen(password) > MAX_PASSWORD) {
        evhttp_clear_headers(&kv);
        send_login_page(h, ar->req, 400, "Give an approver name and a password.");
        areq_free(ar);
        return;
    }
    snprintf(ar->approver, sizeof ar->approver, "%s", name);
    ar->job = approver_auth_check(h->auth, name, password, on_login_checked, ar);
    /* evhttp_clear_headers frees the decoded password; wipe it first. */
    OPENSSL_cleanse((char *)password, strlen(password));
    evhttp_clear_headers(&kv);
    if (!ar->job) {
        send_login_page(h, ar->req, 503, "Too many logins in progress; try again shortly.");
        areq_free(ar);
    }
}

/* ---- routing ------------------------------------------------------------------------------ */

/* "/requests/<id>/approve" style paths: id must be a request id. */
static route_kind route_decide(const char *p, const char *prefix, route_kind kind, admin_req *scratch)
{
    size_t pl = strlen(prefix);
    if (strncmp(p, prefix, pl) != 0)
        return R_NONE;
    p += pl;
    const char *slash = strchr(p, '/');
    size_t idlen = slash ? (size_t)(slash - p) : strlen(p);
    if (idlen != APPROVALS_ID_LEN)
        return R_NONE;
    memcpy(scratch->id, p, idlen);
    scratch->id[idlen] = '\0';
    if (!hex_token_ok(scratch->id, APPROVALS_ID_LEN))
        return R_NONE;
    if (!slash)
        return kind == R_API_DECIDE ? R_API_GET : R_NONE;
    if (strcmp(slash, "/approve") == 0)
        scratch->approve = true;
    else if (strcmp(slash, "/deny") != 0)
        return R_NONE;
    return kind;
}

static route_kind route(const char *path, enum evhttp_cmd_type m, admin_req *scratch)
{
    bool get = m == EVHTTP_REQ_GET, post = m == EVHTTP_REQ_POST;
    if (!strcmp(path, "/login"))
        return get ? R_LOGIN_PAGE : post ? R_LOGIN_POST : R_NONE;
    if (!strcmp(path, "/") && get)
        return R_CONSOLE;
    if (!strcmp(path, "/logout") && post)
        return R_LOGOUT;
    if (!strcmp(path, "/api/requests") && get)
        return R_API_LIST;
    route_kind k = route_decide(path, "/api/requests/", R_API_DECIDE, scratch);
    if ((k == R_API_GET && get) || (k == R_API_DECIDE && post))
        return k;
    k = route_decide(path, "/requests/", R_FORM_DECIDE, scratch);
    return k == R_FORM_DECIDE && post ? k : R_NONE;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    admin_http *h = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    admin_req scratch = {0};
    route_kind kind = route(path ? path : "", evhttp_request_get_command(req), &scratch);
    if (kind == R_NONE) {
        audit_buf b = {0};
        bool api = path && strncmp(path, "/api/", 5) == 0;
        if (api)
            send_json_error(h, req, 404, "not_found", "no such endpoint");
        else {
            audit_buf_puts(&b, "not found\n");
            send_buf(h, req, 404, "text/plain; charset=utf-8", &b, NULL);
        }
        return;
    }
    if (kind == R_LOGIN_PAGE) {
        send_login_page(h, req, 200, NULL);
        return;
    }
    admin_req *ar = areq_new(h, req, kind);
    if (!ar) {
        evhttp_send_error(req, 503, "out of memory");
        return;
    }
    memcpy(ar->id, scratch.id, sizeof ar->id);
    ar->approve = scratch.approve;
    if (!areq_body(ar)) {
        areq_error(ar, 400, "invalid", "unreadable request body");
        return;
    }
    if (kind == R_LOGIN_POST)
        login_post(ar);
    else
        authenticate(ar);
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static struct bufferevent *tls_bev(struct event_base *base, void *arg)
{
    admin_http *h = arg;
    SSL *ssl = SSL_new(h->ssl);
    if (!ssl)
        return NULL;
    return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
}

void admin_http_opts_from_config(const config *cfg, admin_http_opts *o)
{
    memset(o, 0, sizeof *o);
    o->address = cfg->admin_address;
    o->port = cfg->admin_port;
    o->cert_file = cfg->admin_cert_file;
    o->key_file = cfg->admin_key_file;
    o->approvers = cfg->approvers;
    o->napprovers = cfg->napprovers;
}

static int bound_port(struct evhttp_bound_socket *sock)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

admin_http *admin_http_new(struct event_base *base, const admin_http_opts *o, approvals *a, char *err,
                           size_t errlen)
{
    if (!o->address || o->port < 0 || o->port > 65535 || !a || o->napprovers == 0) {
        snprintf(err, errlen, "admin: an address, a port, the approvals client and at least one approver are needed");
        return NULL;
    }
    if ((o->cert_file == NULL) != (o->key_file == NULL)) {
        snprintf(err, errlen, "admin: cert_file and key_file go together");
        return NULL;
    }
    admin_http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "admin: out of memory");
        return NULL;
    }
    h->base = base;
    h->ap = a;
    h->idle_s = o->session_idle_s ? o->session_idle_s : 1800;
    h->max_s = o->session_max_s ? o->session_max_s : 43200;
    if (o->cert_file && !(h->ssl = tls_server_ctx_new(o->cert_file, o->key_file, err, errlen))) {
        admin_http_free(h);
        return NULL;
    }
    h->auth = approver_auth_new(base, o->approvers, o->napprovers, err, errlen);
    h->http = evhttp_new(base);
    if (!h->auth || !h->http) {
        if (h->auth)
            snprintf(err, errlen, "admin: out of memory");
        admin_http_free(h);
        return NULL;
    }
    evhttp_set_max_body_size(h->http, MAX_BODY);
    evhttp_set_max_headers_size(h->http, MAX_HEADERS);
    evhttp_set_timeout(h->http, 30);
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
    if (h->ssl)
        evhttp_set_bevcb(h->http, tls_bev, h);
    evhttp_set_gencb(h->http, on_request, h);
    h->sock = evhttp_bind_socket_with_handle(h->http, o->address, (ev_uint16_t)o->port);
    if (!h->sock) {
        snprintf(err, errlen, "admin: cannot listen on %s:%d: %s", o->address, o->port, strerror(errno));
        admin_http_free(h);
        return NULL;
    }
    h->port = bound_port(h->sock);
    log_msg(LOG_LEVEL_INFO, LOG_PREFIX, "approvals console on %s://%s:%d/ (%zu approvers)", h->ssl ? "https" : "http",
            o->address, h->port, o->napprovers);
    return h;
}

int admin_http_port(const admin_http *h) { return h->port; }

void admin_http_free(admin_http *h)
{
    if (!h)
        return;
    /* Answer what is still open first: evhttp_free would free those requests under us. */
    while (h->pending) {
        admin_req *ar = h->pending;
        approver_auth_cancel(ar->job);
        approvals_op_cancel(ar->op);
        areq_error(ar, 503, "shutting_down", "phigate is shutting down");
    }
    if (h->http)
        evhttp_free(h->http);
    approver_auth_free(h->auth);
    if (h->ssl)
        SSL_CTX_free(h->ssl);
    OPENSSL_cleanse(h->sessions, sizeof h->sessions);
    free(h);
}
