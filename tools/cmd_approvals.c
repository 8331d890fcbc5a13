/*
 * phigatectl approvals: the approvers' command line, a client of phigate's
 * admin API (gate/admin_http.c) with HTTP Basic authentication.
 *
 * One request per run over libevent's HTTP client (HTTPS for https:// URLs,
 * verified against --cacert or the system store).  Server text shown on the
 * terminal goes through term_put(), so a statement cannot carry escape
 * sequences to the approver's terminal.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <termios.h>
#include <unistd.h>

#include "gate/audit_json.h"
#include "gate/config.h"
#include "gate/scram.h"
#include "gate/tls.h"
#include "tools/phigatectl.h"

#define MAX_RESPONSE (256u * 1024 * 1024)
#define MAX_PASSWORD 1024

typedef struct {
    const char *sub; /* list | show | approve | deny */
    const char *id;
    const char *url, *approver, *password_file, *cacert, *reason;
    const char *ttl, *row_cap;
    bool json;
} cli;

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: phigatectl approvals list [OPTIONS]\n"
            "       phigatectl approvals show ID [OPTIONS]\n"
            "       phigatectl approvals approve ID [--reason R] [--ttl SECONDS] [--row-cap N] [OPTIONS]\n"
            "       phigatectl approvals deny ID --reason R [OPTIONS]\n"
            "\n"
            "Decide statements phigate holds for approval, through its admin API.\n"
            "\n"
            "  list       pending requests, oldest first\n"
            "  show ID    one request in full: identity, client, database, why it was held,\n"
            "             the exact statement, and the decision if there is one\n"
            "  approve ID run it: --reason is recorded; --ttl sets how long the approval is valid\n"
            "             (default: approvals.grant_ttl_s); --row-cap limits the rows it may return\n"
            "  deny ID    refuse it: --reason is required and shown to the agent\n"
            "\n"
            "Options (every command):\n"
            "  --url URL            phigate's admin API (default $PHIGATE_ADMIN_URL, else http://127.0.0.1:8443)\n"
            "  --approver NAME      your approver name (default $PHIGATE_APPROVER)\n"
            "  --password-file F    read your password from F (mode 0600); else $PHIGATE_APPROVER_PASSWORD;\n"
            "                       else it is asked for on the terminal\n"
            "  --cacert FILE        CA certificate for an https URL (default: the system's CAs)\n"
            "  --json               print the API's JSON response as it is\n"
            "  -h, --help           this text\n"
            "\n"
            "You cannot approve a request you made yourself.  Exit status: 0 done, 1 refused or failed,\n"
            "2 wrong usage.\n");
}

/* ---- terminal-safe output ---------------------------------------------------------------- */

/* Control characters (C0, DEL and the C1 range in UTF-8) become '?'; newlines and
 * tabs are kept only when multiline, else shown as spaces. */
static void term_put(FILE *out, const char *s, size_t n, bool multiline, size_t max)
{
    size_t shown = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (max && shown >= max) {
            fputs("...", out);
            return;
        }
        if ((c & 0xc0) != 0x80)
            shown++; /* count characters, not bytes */
        if (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 && (unsigned char)s[i + 1] <= 0x9f) {
            fputc('?', out);
            i++;
        } else if (c == '\n' || c == '\t')
            fputc(multiline ? c : ' ', out);
        else if (c < 0x20 || c == 0x7f)
            fputc('?', out);
        else
            fputc(c, out);
    }
}

static void term_text(FILE *out, const aj_value *obj, const char *key, bool multiline, size_t max)
{
    size_t n = 0;
    const char *s = aj_text(aj_get(obj, key), &n);
    term_put(out, s ? s : "", s ? n : 0, multiline, max);
}

/* ---- password ---------------------------------------------------------------------------- */

static bool ask_password(const char *approver, char *buf, size_t len)
{
    FILE *tty = fopen("/dev/tty", "r+");
    if (!tty)
        return false;
    struct termios old, quiet;
    bool is_tty = tcgetattr(fileno(tty), &old) == 0;
    if (is_tty) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(fileno(tty), TCSAFLUSH, &quiet);
    }
    fprintf(tty, "Password for approver %s: ", approver);
    fflush(tty);
    bool ok = fgets(buf, (int)len, tty) != NULL;
    if (is_tty)
        tcsetattr(fileno(tty), TCSAFLUSH, &old);
    fprintf(tty, "\n");
    fclose(tty);
    buf[strcspn(buf, "\r\n")] = '\0';
    return ok && buf[0];
}

static bool get_password(const cli *c, char *buf, size_t len)
{
    if (c->password_file) {
        char *secret = NULL, err[512];
        if (!config_read_secret_file(c->password_file, &secret, err, sizeof err)) {
            fprintf(stderr, "phigatectl approvals: %s\n", err);
            return false;
        }
        bool fits = strlen(secret) < len;
        snprintf(buf, len, "%s", fits ? secret : "");
        OPENSSL_cleanse(secret, strlen(secret));
        free(secret);
        if (!fits)
            fprintf(stderr, "phigatectl approvals: the password in %s is too long\n", c->password_file);
        return fits;
    }
    const char *env = getenv("PHIGATE_APPROVER_PASSWORD");
    if (env && *env) {
        if (strlen(env) >= len)
            return false;
        snprintf(buf, len, "%s", env);
        return true;
    }
    if (ask_password(c->approver, buf, len))
        return true;
    fprintf(stderr, "phigatectl approvals: no password: use --password-file FILE, set PHIGATE_APPROVER_PASSWORD, "
                    "or run it on a terminal\n");
    return false;
}

/* ---- one HTTP request ---------------------------------------------------------------------- */

typedef struct {
    bool done;
    int code;
    char *body;
    size_t len;
    char err[256];
} http_resp;

static void on_http_error(enum evhttp_request_error e, void *arg)
{
    http_resp *r = arg;
    const char *what = e == EVREQ_HTTP_TIMEOUT ? "timed out" : e == EVREQ_HTTP_EOF ? "connection closed"
                     : e == EVREQ_HTTP_INVALID_HEADER ? "invalid response" : e == EVREQ_HTTP_DATA_TOO_LONG
                     ? "response too large" : "connection failed";
    snprintf(r->err, sizeof r->err, "%s", what);
}

static void on_http_done(struct evhttp_request *req, void *arg)
{
    http_resp *r = arg;
    r->done = true;
    if (!req || evhttp_request_get_response_code(req) == 0) {
        if (!r->err[0])
            snprintf(r->err, sizeof r->err, "connection failed (%s)", strerror(errno ? errno : ECONNREFUSED));
        return;
    }
    r->code = evhttp_request_get_response_code(req);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    if (n > MAX_RESPONSE) {
        snprintf(r->err, sizeof r->err, "response of %zu bytes is too large", n);
        return;
    }
    r->body = malloc(n + 1);
    if (!r->body) {
        snprintf(r->err, sizeof r->err, "out of memory");
        return;
    }
    evbuffer_copyout(in, r->body, n);
    r->body[n] = '\0';
    r->len = n;
}

static bool basic_header(const char *name, const char *password, char *out, size_t outlen)
{
    char raw[MAX_PASSWORD + 80];
    int n = snprintf(raw, sizeof raw, "%s:%s", name, password);
    bool ok = n > 0 && (size_t)n < sizeof raw && outlen > 6 + ((size_t)n + 2) / 3 * 4;
    if (ok) {
        memcpy(out, "Basic ", 6);
        ok = b64_encode((const uint8_t *)raw, (size_t)n, out + 6, outlen - 6) > 0;
    }
    OPENSSL_cleanse(raw, sizeof raw);
    return ok;
}

/* Performs method on path (relative to the URL's path); false with a message when it never got an answer. */
static bool http_call(const cli *c, const char *password, enum evhttp_cmd_type method, const char *path,
                      const char *body, http_resp *resp)
{
    memset(resp, 0, sizeof *resp);
    struct evhttp_uri *uri = evhttp_uri_parse(c->url);
    const char *scheme = uri ? evhttp_uri_get_scheme(uri) : NULL, *host = uri ? evhttp_uri_get_host(uri) : NULL;
    bool https = scheme && strcmp(scheme, "https") == 0;
    if (!uri || !scheme || !host || (!https && strcmp(scheme, "http") != 0)) {
        fprintf(stderr, "phigatectl approvals: --url must look like http://HOST:PORT or https://HOST:PORT (got %s)\n",
                c->url);
        if (uri)
            evhttp_uri_free(uri);
        return false;
    }
    int port = evhttp_uri_get_port(uri) > 0 ? evhttp_uri_get_port(uri) : https ? 443 : 80;
    const char *prefix = evhttp_uri_get_path(uri) ? evhttp_uri_get_path(uri) : "";
    char full[2048], hosthdr[300], authz[2 * MAX_PASSWORD + 200], err[512];
    snprintf(full, sizeof full, "%.*s%s", (int)strcspn(prefix, "?") - (prefix[0] && prefix[strlen(prefix) - 1] == '/'),
             prefix, path);
    snprintf(hosthdr, sizeof hosthdr, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    struct event_base *base = event_base_new();
    SSL_CTX *ctx = NULL;
    struct bufferevent *bev = NULL;
    bool ok = false;
    if (https) {
        SSL *ssl;
        if (!(ctx = tls_client_ctx_verified(c->cacert, err, sizeof err)) || !(ssl = SSL_new(ctx)) ||
            !tls_client_prepare(ssl, host, 2)) {
            fprintf(stderr, "phigatectl approvals: TLS setup failed: %s\n", ctx ? "bad host name" : err);
            goto out;
        }
        bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                             BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    }
    struct evhttp_connection *con = evhttp_connection_base_bufferevent_new(base, NULL, bev, host, (ev_uint16_t)port);
    evhttp_connection_set_timeout(con, 30);
    evhttp_connection_set_retries(con, 0);
    struct evhttp_request *req = evhttp_request_new(on_http_done, resp);
    evhttp_request_set_error_cb(req, on_http_error);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    if (!basic_header(c->approver, password, authz, sizeof authz)) {
        fprintf(stderr, "phigatectl approvals: approver name or password too long\n");
        evhttp_request_free(req);
        evhttp_connection_free(con);
        goto out;
    }
    evhttp_add_header(h, "Host", hosthdr);
    evhttp_add_header(h, "Authorization", authz);
    evhttp_add_header(h, "Accept", "application/json");
    evhttp_add_header(h, "Connection", "close");
    OPENSSL_cleanse(authz, sizeof authz);
    if (body) {
        evhttp_add_header(h, "Content-Type", "application/json");
        evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
    }
    if (evhttp_make_request(con, req, method, full) != 0) {
        fprintf(stderr, "phigatectl approvals: cannot send the request to %s\n", c->url);
        evhttp_connection_free(con);
        goto out;
    }
    event_base_dispatch(base);
    evhttp_connection_free(con);
    ok = resp->done && !resp->err[0];
    if (!ok) {
        fprintf(stderr, "phigatectl approvals: no answer from phigate's admin API at %s: %s\n", c->url,
                resp->err[0] ? resp->err : "no response");
        if (https)
            fprintf(stderr, "  (over https: check --cacert and that the certificate names %s)\n", host);
        else
            fprintf(stderr, "  (is phigate running with an admin: section listening there?)\n");
    }
out:
    event_base_free(base);
    if (ctx)
        SSL_CTX_free(ctx);
    evhttp_uri_free(uri);
    return ok;
}

/* ---- printing ---------------------------------------------------------------------------- */

static void fmt_age(char *out, size_t len, uint64_t now, uint64_t then)
{
    uint64_t s = now > then ? (now - then) / 1000 : 0;
    if (s < 120)
        snprintf(out, len, "%" PRIu64 " s", s);
    else if (s < 7200)
        snprintf(out, len, "%" PRIu64 " min", s / 60);
    else
        snprintf(out, len, "%" PRIu64 " h", s / 3600);
}

static uint64_t u64_of(const aj_value *o, const char *key)
{
    uint64_t v = 0;
    return aj_get_u64(o, key, &v) ? v : 0;
}

static void print_list(const aj_value *root)
{
    const aj_value *reqs = aj_get(root, "requests");
    uint64_t now = u64_of(root, "now_ms");
    if (!reqs || reqs->type != AJ_ARRAY || !reqs->child) {
        printf("no pending requests\n");
        return;
    }
    printf("%-16s  %-7s  %-16s  %-12s  %-16s  %s\n", "ID", "AGE", "IDENTITY", "DATABASE", "RULE", "STATEMENT");
    for (const aj_value *r = reqs->child; r; r = r->next) {
        char age[32];
        fmt_age(age, sizeof age, now, u64_of(r, "created_ms"));
        term_text(stdout, r, "id", false, 16);
        printf("  %-7s  ", age);
        size_t n;
        const char *cols[] = {"identity", "database", "rule"};
        const int widths[] = {16, 12, 16};
        for (int i = 0; i < 3; i++) {
            const char *s = aj_text(aj_get(r, cols[i]), &n);
            term_put(stdout, s ? s : "", s ? n : 0, false, (size_t)widths[i]);
            printf("%*s  ", (int)(s && n < (size_t)widths[i] ? (size_t)widths[i] - n : 0), "");
        }
        term_text(stdout, r, "statement", false, 60);
        putchar('\n');
    }
}

static void print_request(const aj_value *root)
{
    const aj_value *r = aj_get(root, "request");
    uint64_t now = u64_of(root, "now_ms");
    if (!r || r->type != AJ_OBJECT) {
        printf("(no request in the response)\n");
        return;
    }
    static const char *const fields[] = {"id",     "status",      "identity", "client_addr", "database",
                                         "protocol", "rule",      "reason",   "fingerprint", "instance"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        printf("%-16s ", fields[i]);
        term_text(stdout, r, fields[i], false, 0);
        putchar('\n');
    }
    char age[32];
    fmt_age(age, sizeof age, now, u64_of(r, "created_ms"));
    printf("%-16s %s ago\n", "created", age);
    uint64_t exp = u64_of(r, "expires_ms");
    if (exp > now) {
        fmt_age(age, sizeof age, exp, now);
        printf("%-16s in %s\n", "expires", age);
    }
    printf("%-16s %s\n", "agent waiting", aj_get(r, "waiting") && aj_get(r, "waiting")->b ? "yes" : "no");
    size_t n;
    const char *by = aj_text(aj_get(r, "decided_by"), &n);
    if (by && n) {
        printf("%-16s ", "decided by");
        term_put(stdout, by, n, false, 0);
        printf("\n%-16s ", "decision reason");
        term_text(stdout, r, "decision_reason", false, 0);
        putchar('\n');
        if (u64_of(r, "row_cap"))
            printf("%-16s %" PRIu64 "\n", "row cap", u64_of(r, "row_cap"));
    }
    printf("statement:\n");
    term_text(stdout, r, "statement", true, 0);
    putchar('\n');
}

/* ---- commands ------------------------------------------------------------------------------ */

static bool valid_id(const char *id)
{
    if (!id || strlen(id) != 16)
        return false;
    for (int i = 0; i < 16; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return false;
    return true;
}

static bool digits(const char *s) { return s && *s && strspn(s, "0123456789") == strlen(s) && strlen(s) < 16; }

static int parse_args(int argc, char **argv, cli *c)
{
    memset(c, 0, sizeof *c);
    c->url = getenv("PHIGATE_ADMIN_URL") ? getenv("PHIGATE_ADMIN_URL") : "http://127.0.0.1:8443";
    c->approver = getenv("PHIGATE_APPROVER");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = !strcmp(a, "--url") ? &c->url : !strcmp(a, "--approver") ? &c->approver
                         : !strcmp(a, "--password-file") ? &c->password_file : !strcmp(a, "--cacert") ? &c->cacert
                         : !strcmp(a, "--reason") ? &c->reason : !strcmp(a, "--ttl") ? &c->ttl
                         : !strcmp(a, "--row-cap") ? &c->row_cap : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            c->json = true;
        } else if (dst) {
            if (i + 1 >= argc) {
                fprintf(stderr, "phigatectl approvals: %s needs a value\n", a);
                return 2;
            }
            *dst = argv[++i];
        } else if (a[0] == '-') {
            fprintf(stderr, "phigatectl approvals: unknown option %s (see --help)\n", a);
            return 2;
        } else if (!c->sub) {
            c->sub = a;
        } else if (!c->id) {
            c->id = a;
        } else {
            fprintf(stderr, "phigatectl approvals: unexpected argument %s\n", a);
            return 2;
        }
    }
    return -1;
}

static int check_args(const cli *c)
{
    bool list = c->sub && !strcmp(c->sub, "list"), show = c->sub && !strcmp(c->sub, "show");
    bool approve = c->sub && !strcmp(c->sub, "approve"), deny = c->sub && !strcmp(c->sub, "deny");
    const char *why = NULL;
    if (!list && !show && !approve && !deny)
        why = c->sub ? "unknown command (list, show, approve or deny)" : "which command? list, show, approve or deny";
    else if (list && c->id)
        why = "list takes no ID";
    else if (!list && !c->id)
        why = "give the request ID (see phigatectl approvals list)";
    else if (!list && !valid_id(c->id))
        why = "a request ID is 16 lowercase hex characters";
    else if (deny && (!c->reason || !*c->reason))
        why = "deny needs --reason (the agent is shown it)";
    else if ((c->ttl || c->row_cap) && !approve)
        why = "--ttl and --row-cap go with approve";
    else if (c->ttl && (!digits(c->ttl) || atoll(c->ttl) < 1 || atoll(c->ttl) > 604800))
        why = "--ttl is a number of seconds, 1..604800";
    else if (c->row_cap && (!digits(c->row_cap) || atoll(c->row_cap) < 1))
        why = "--row-cap is a positive number of rows";
    else if (c->reason && strlen(c->reason) > 1000)
        why = "--reason is at most 1000 bytes";
    else if (!c->approver || !*c->approver)
        why = "who are you? give --approver NAME (or set PHIGATE_APPROVER)";
    if (why) {
        fprintf(stderr, "phigatectl approvals: %s\n", why);
        return 2;
    }
    return -1;
}

/* The server said no: show its reason. */
static int report_error(const cli *c, const http_resp *r, const aj_value *root)
{
    size_t n = 0;
    const char *msg = root ? aj_text(aj_get(root, "error"), &n) : NULL;
    fprintf(stderr, "phigatectl approvals: ");
    if (r->code == 401)
        fprintf(stderr, "authentication failed for approver %s: ", c->approver);
    if (msg)
        term_put(stderr, msg, n, false, 0);
    else
        fprintf(stderr, "HTTP %d from %s", r->code, c->url);
    fputc('\n', stderr);
    return 1;
}

int cmd_approvals(int argc, char **argv)
{
    cli c;
    int rc = parse_args(argc, argv, &c);
    if (rc >= 0)
        return rc;
    if ((rc = check_args(&c)) >= 0)
        return rc;
    char password[MAX_PASSWORD + 2], path[128];
    if (!get_password(&c, password, sizeof password))
        return 1;
    audit_buf body = {0};
    enum evhttp_cmd_type method = EVHTTP_REQ_GET;
    if (!strcmp(c.sub, "list"))
        snprintf(path, sizeof path, "/api/requests");
    else if (!strcmp(c.sub, "show"))
        snprintf(path, sizeof path, "/api/requests/%s", c.id);
    else {
        method = EVHTTP_REQ_POST;
        snprintf(path, sizeof path, "/api/requests/%s/%s", c.id, c.sub);
        audit_buf_puts(&body, "{\"reason\":");
        audit_buf_json_str(&body, c.reason ? c.reason : "", c.reason ? strlen(c.reason) : 0);
        if (c.ttl)
            audit_buf_printf(&body, ",\"ttl\":%s", c.ttl);
        if (c.row_cap)
            audit_buf_printf(&body, ",\"row_cap\":%s", c.row_cap);
        audit_buf_puts(&body, "}");
        audit_buf_putc(&body, '\0');
    }
    http_resp r;
    bool answered = !body.oom && http_call(&c, password, method, path, body.len ? body.p : NULL, &r);
    OPENSSL_cleanse(password, sizeof password);
    audit_buf_free(&body);
    if (!answered)
        return 1;
    aj_arena arena = {0};
    aj_value *root = NULL;
    char err[128];
    bool parsed = r.body && aj_parse(&arena, r.body, r.len, &root, err, sizeof err) && root->type == AJ_OBJECT;
    if (r.code != 200)
        rc = report_error(&c, &r, parsed ? root : NULL);
    else if (c.json) {
        fwrite(r.body, 1, r.len, stdout);
        rc = 0;
    } else if (!parsed) {
        fprintf(stderr, "phigatectl approvals: the admin API answered with something that is not JSON\n");
        rc = 1;
    } else if (!strcmp(c.sub, "list")) {
        print_list(root);
        rc = 0;
    } else if (!strcmp(c.sub, "show")) {
        print_request(root);
        rc = 0;
    } else {
        size_t n = 0;
        const char *msg = aj_text(aj_get(root, "message"), &n);
        term_put(stdout, msg ? msg : "done", msg ? n : 4, false, 0);
        putchar('\n');
        rc = 0;
    }
    aj_arena_free(&arena);
    free(r.body);
    return rc;
}
