/*
 * Unit tests for the approvers' console and API (gate/admin_http) and for
 * `phigatectl approvals`, against a real Redis: the listener runs on the
 * test's event loop (main thread) while a client thread speaks raw HTTP (and
 * HTTPS) to it and runs the phigatectl binary built next to this test.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "gate/admin_http.h"
#include "gate/approvals.h"
#include "gate/approver_auth.h"
#include "gate/log.h"
#include "gate/scram.h"
#include "tests/unit/test_approvals_env.h"

static struct event_base *base;
static test_redis R;
static char prefix[96], tmpdir[] = "/tmp/phigate-test-admin-XXXXXX";
static int port, tls_port;
static char ids[8][APPROVALS_ID_LEN + 1];
static char phigatectl[1100], cacert[300];

enum { R_API_APPROVE, R_SELF, R_API_DENY, R_FORM_APPROVE, R_FORM_DENY, R_CLI_APPROVE, R_CLI_DENY, R_CLI_SELF };

/* ---- raw HTTP client (client thread) -------------------------------------------------- */

typedef struct {
    int status;
    char head[8192];
    char *body;
} hresp;

static SSL_CTX *client_ctx;

static bool io_all(int fd, SSL *ssl, const char *p, size_t n)
{
    while (n) {
        ssize_t w = ssl ? SSL_write(ssl, p, (int)n) : write(fd, p, n);
        if (w <= 0)
            return false;
        p += w, n -= (size_t)w;
    }
    return true;
}

/* One request on a fresh connection ("Connection: close"); false if no answer. */
static bool http(bool tls, const char *method, const char *path, const char *headers, const char *body, hresp *r)
{
    memset(r, 0, sizeof *r);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)(tls ? tls_port : port))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return false;
    }
    SSL *ssl = NULL;
    if (tls) {
        ssl = SSL_new(client_ctx);
        SSL_set_fd(ssl, fd);
        if (SSL_connect(ssl) != 1) {
            SSL_free(ssl);
            close(fd);
            return false;
        }
    }
    char req[4096];
    size_t blen = body ? strlen(body) : 0;
    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\nContent-Length: %zu\r\n%s\r\n",
             method, path, tls ? tls_port : port, blen, headers ? headers : "");
    bool ok = io_all(fd, ssl, req, strlen(req)) && (!body || io_all(fd, ssl, body, blen));
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap + 1);
    ssize_t n;
    while (ok && len < cap && (n = ssl ? SSL_read(ssl, buf + len, (int)(cap - len)) : read(fd, buf + len, cap - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    if (ssl) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
    }
    close(fd);
    char *sep = strstr(buf, "\r\n\r\n");
    if (!ok || !sep || sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1) {
        free(buf);
        return false;
    }
    snprintf(r->head, sizeof r->head, "%.*s", (int)(sep - buf), buf);
    r->body = strdup(sep + 4);
    free(buf);
    return true;
}

/* Header value (first one) into out; false when absent. */
static bool hget(const hresp *r, const char *name, char *out, size_t len)
{
    char needle[128];
    snprintf(needle, sizeof needle, "\r\n%s: ", name);
    const char *p = strcasestr(r->head, needle);
    if (!p)
        return false;
    p += strlen(needle);
    snprintf(out, len, "%.*s", (int)strcspn(p, "\r\n"), p);
    return true;
}

static char *basic(const char *user, const char *pw)
{
    static char out[4][600];
    static int n;
    char raw[300], b64[500];
    snprintf(raw, sizeof raw, "%s:%s", user, pw);
    b64_encode((const uint8_t *)raw, strlen(raw), b64, sizeof b64);
    char *o = out[n++ % 4];
    snprintf(o, 600, "Authorization: Basic %s\r\n", b64);
    return o;
}

static void hfree(hresp *r) { free(r->body); }

/* Value of name="..." in a page (first occurrence after marker). */
static bool page_value(const char *page, const char *marker, char *out, size_t len)
{
    const char *p = strstr(page, marker);
    if (!p)
        return false;
    p += strlen(marker);
    snprintf(out, len, "%.*s", (int)strcspn(p, "\""), p);
    return true;
}

/* Run phigatectl with args; collects stdout+stderr. */
static int ctl(char *out, size_t outlen, const char *env, const char *args)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s approvals %s 2>&1 </dev/null", env ? env : "", phigatectl, args);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- the client-side checks --------------------------------------------------------------- */

static void api_checks(void)
{
    hresp r;
    char v[512], body[512], path[128];
    CHECK(http(false, "GET", "/api/requests", NULL, NULL, &r) && r.status == 401);
    CHECK(hget(&r, "WWW-Authenticate", v, sizeof v) && strstr(v, "Basic") != NULL);
    CHECK(hget(&r, "Content-Security-Policy", v, sizeof v) && strstr(v, "default-src 'none'") != NULL);
    CHECK(hget(&r, "X-Frame-Options", v, sizeof v) && !strcmp(v, "DENY"));
    hfree(&r);
    CHECK(http(false, "GET", "/api/requests", basic("dr_house", "wrong"), NULL, &r) && r.status == 401);
    hfree(&r);
    CHECK(http(false, "GET", "/api/requests", basic("nobody", "pw-house"), NULL, &r) && r.status == 401);
    hfree(&r);
    CHECK(http(false, "GET", "/api/requests", "Authorization: Basic !!!!\r\n", NULL, &r) && r.status == 401);
    hfree(&r);

    CHECK(http(false, "GET", "/api/requests", basic("dr_house", "pw-house"), NULL, &r) && r.status == 200);
    CHECK(hget(&r, "Content-Type", v, sizeof v) && strstr(v, "application/json"));
    CHECK(r.body && strstr(r.body, ids[R_API_APPROVE]) && strstr(r.body, "\"now_ms\":"));
    CHECK(r.body && strstr(r.body, "SELECT * FROM patients WHERE note = '<script>alert(1)</script>'"));
    hfree(&r);
    snprintf(path, sizeof path, "/api/requests/%s", ids[R_API_APPROVE]);
    CHECK(http(false, "GET", path, basic("dr_house", "pw-house"), NULL, &r) && r.status == 200);
    CHECK(r.body && strstr(r.body, "\"status\":\"pending\"") && strstr(r.body, "\"identity\":\"agent1\""));
    hfree(&r);
    CHECK(http(false, "GET", "/api/requests/ffffffffffffffff", basic("dr_house", "pw-house"), NULL, &r) &&
          r.status == 404);
    hfree(&r);
    CHECK(http(false, "GET", "/api/requests/..%2f..%2fetc", basic("dr_house", "pw-house"), NULL, &r) &&
          r.status == 404);
    hfree(&r);

    /* Decisions over the API (JSON bodies). */
    snprintf(path, sizeof path, "/api/requests/%s/approve", ids[R_API_APPROVE]);
    CHECK(http(false, "POST", path, basic("dr_house", "pw-house"), "{\"reason\":\"x\",\"ttl\":\"soon\"}", &r) &&
          r.status == 400);
    hfree(&r);
    CHECK(http(false, "POST", path, basic("dr_house", "pw-house"), "not json {", &r) && r.status == 400);
    hfree(&r);
    CHECK(http(false, "POST", path, basic("dr_house", "pw-house"),
               "{\"reason\":\"quarterly audit\",\"ttl\":120,\"row_cap\":10}", &r) &&
          r.status == 200);
    CHECK(r.body && strstr(r.body, "\"status\":\"approved\""));
    hfree(&r);
    CHECK(http(false, "POST", path, basic("dr_cuddy", "pw-cuddy"), "{\"reason\":\"again\"}", &r) && r.status == 409);
    CHECK(r.body && strstr(r.body, "already approved by dr_house"));
    hfree(&r);

    snprintf(path, sizeof path, "/api/requests/%s/approve", ids[R_SELF]);
    CHECK(http(false, "POST", path, basic("mallory", "pw-mallory"), "{}", &r) && r.status == 403);
    CHECK(r.body && strstr(r.body, "self-approval refused"));
    hfree(&r);

    snprintf(path, sizeof path, "/api/requests/%s/deny", ids[R_API_DENY]);
    CHECK(http(false, "POST", path, basic("dr_cuddy", "pw-cuddy"), "{\"reason\":\"\"}", &r) && r.status == 400);
    hfree(&r);
    snprintf(body, sizeof body, "{\"reason\":\"use the de-identified view\"}");
    CHECK(http(false, "POST", path, basic("dr_cuddy", "pw-cuddy"), body, &r) && r.status == 200);
    hfree(&r);

    /* Odd requests. */
    CHECK(http(false, "GET", "/nope", NULL, NULL, &r) && r.status == 404);
    hfree(&r);
    CHECK(http(false, "PUT", "/api/requests", basic("dr_house", "pw-house"), "{}", &r) && r.status >= 400);
    hfree(&r);
    char *big = malloc(70001);
    memset(big, 'a', 70000);
    big[70000] = '\0';
    CHECK(http(false, "POST", path, basic("dr_cuddy", "pw-cuddy"), big, &r) && r.status == 413);
    hfree(&r);
    free(big);
}

static void console_checks(void)
{
    hresp r;
    char v[1024], cookie[200], csrf[100], path[128], body[512];
    CHECK(http(false, "GET", "/", NULL, NULL, &r) && r.status == 303);
    CHECK(hget(&r, "Location", v, sizeof v) && !strcmp(v, "/login"));
    hfree(&r);
    CHECK(http(false, "GET", "/login", NULL, NULL, &r) && r.status == 200);
    CHECK(r.body && strstr(r.body, "name=\"password\"") && strstr(r.body, "action=\"/login\""));
    CHECK(r.body && !strstr(r.body, "http://") && !strstr(r.body, "https://")); /* nothing external */
    hfree(&r);
    CHECK(http(false, "POST", "/login", "Content-Type: application/x-www-form-urlencoded\r\n",
               "name=dr_house&password=nope", &r) &&
          r.status == 401);
    CHECK(!hget(&r, "Set-Cookie", v, sizeof v));
    hfree(&r);
    CHECK(http(false, "POST", "/login", "Content-Type: application/x-www-form-urlencoded\r\n",
               "name=dr_house&password=pw-house", &r) &&
          r.status == 303);
    CHECK(hget(&r, "Set-Cookie", v, sizeof v));
    CHECK(strstr(v, "HttpOnly") && strstr(v, "SameSite=Strict") && !strstr(v, "Secure"));
    snprintf(cookie, sizeof cookie, "Cookie: %.*s\r\n", (int)strcspn(v, ";"), v);
    hfree(&r);

    CHECK(http(false, "GET", "/", cookie, NULL, &r) && r.status == 200);
    CHECK(r.body && strstr(r.body, "signed in as <b>dr_house</b>"));
    CHECK(r.body && strstr(r.body, ids[R_FORM_APPROVE]));
    /* The statement is on the page in full, escaped; the raw tag never is. */
    CHECK(r.body && strstr(r.body, "SELECT * FROM patients WHERE note = &#39;&lt;script&gt;alert(1)&lt;/script&gt;&#39;"));
    CHECK(r.body && !strstr(r.body, "<script>alert(1)"));
    CHECK(page_value(r.body ? r.body : "", "name=\"csrf\" value=\"", csrf, sizeof csrf) && strlen(csrf) == 64);
    /* The inline script runs only with the response's nonce. */
    char nonce[64], tag[128];
    CHECK(hget(&r, "Content-Security-Policy", v, sizeof v) && page_value(v, "script-src 'nonce-", nonce, sizeof nonce));
    nonce[strcspn(nonce, "'")] = '\0';
    snprintf(tag, sizeof tag, "<script nonce=\"%s\">", nonce);
    CHECK(r.body && strlen(nonce) == 32 && strstr(r.body, tag));
    CHECK(r.body && strstr(r.body, "setInterval(refresh,2000)"));
    if (getenv("PHIGATE_TEST_DUMP_CONSOLE") && r.body) { /* for a look at the page, or a DOM test */
        FILE *f = fopen(getenv("PHIGATE_TEST_DUMP_CONSOLE"), "w");
        if (f)
            fputs(r.body, f), fclose(f);
    }
    hfree(&r);

    /* The console's own JSON polling works with the cookie. */
    CHECK(http(false, "GET", "/api/requests", cookie, NULL, &r) && r.status == 200);
    hfree(&r);

    snprintf(path, sizeof path, "/requests/%s/approve", ids[R_FORM_APPROVE]);
    CHECK(http(false, "POST", path, cookie, "reason=ok", &r) && r.status == 403); /* no token */
    hfree(&r);
    CHECK(http(false, "POST", path, cookie,
               "csrf=0000000000000000000000000000000000000000000000000000000000000000&reason=ok", &r) &&
          r.status == 403);
    hfree(&r);
    snprintf(body, sizeof body, "csrf=%s&reason=ok", csrf);
    char evil[400];
    snprintf(evil, sizeof evil, "%sOrigin: http://evil.example\r\n", cookie);
    CHECK(http(false, "POST", path, evil, body, &r) && r.status == 403);
    hfree(&r);
    CHECK(http(false, "POST", path, NULL, body, &r) && r.status == 303); /* no session: to /login */
    CHECK(hget(&r, "Location", v, sizeof v) && !strcmp(v, "/login"));
    hfree(&r);
    snprintf(body, sizeof body, "csrf=%s&reason=ward+round&ttl=&row_cap=5", csrf);
    CHECK(http(false, "POST", path, cookie, body, &r) && r.status == 303);
    hfree(&r);
    CHECK(http(false, "GET", "/", cookie, NULL, &r) && r.status == 200);
    CHECK(r.body && strstr(r.body, "approved by dr_house")); /* the flash */
    snprintf(v, sizeof v, "data-id=\"%s\"", ids[R_FORM_APPROVE]);
    CHECK(r.body && !strstr(r.body, v)); /* gone from the list */
    hfree(&r);
    snprintf(path, sizeof path, "/requests/%s/deny", ids[R_FORM_DENY]);
    snprintf(body, sizeof body, "csrf=%s&reason=", csrf);
    CHECK(http(false, "POST", path, cookie, body, &r) && r.status == 303);
    hfree(&r);
    CHECK(http(false, "GET", "/", cookie, NULL, &r) && r.body && strstr(r.body, "needs a reason"));
    hfree(&r);
    snprintf(body, sizeof body, "csrf=%s&reason=not+%%3Cb%%3Etoday%%3C%%2Fb%%3E", csrf);
    CHECK(http(false, "POST", path, cookie, body, &r) && r.status == 303);
    hfree(&r);

    /* A cookie POST to the API needs the token in a header. */
    snprintf(path, sizeof path, "/api/requests/%s/approve", ids[R_SELF]);
    CHECK(http(false, "POST", path, cookie, "{}", &r) && r.status == 403);
    hfree(&r);

    snprintf(body, sizeof body, "csrf=%s", csrf);
    CHECK(http(false, "POST", "/logout", cookie, body, &r) && r.status == 303);
    CHECK(hget(&r, "Set-Cookie", v, sizeof v) && strstr(v, "Max-Age=0"));
    hfree(&r);
    CHECK(http(false, "GET", "/", cookie, NULL, &r) && r.status == 303);
    hfree(&r);
}

static void cli_checks(void)
{
    char out[16384], env[512], args[512];
    snprintf(env, sizeof env, "PHIGATE_ADMIN_URL=http://127.0.0.1:%d PHIGATE_APPROVER_PASSWORD=pw-house", port);
    CHECK(ctl(out, sizeof out, env, "--help") == 0 && strstr(out, "approve ID"));
    CHECK(ctl(out, sizeof out, env, "list") == 2 && strstr(out, "--approver")); /* who are you? */
    CHECK(ctl(out, sizeof out, env, "list --approver dr_house") == 0);
    CHECK(strstr(out, ids[R_CLI_APPROVE]) && strstr(out, "STATEMENT"));
    CHECK(!strchr(out, '\033')); /* the statement's escape sequence was neutralised */
    snprintf(args, sizeof args, "show %s --approver dr_house", ids[R_CLI_APPROVE]);
    CHECK(ctl(out, sizeof out, env, args) == 0 && strstr(out, "identity         agent2") &&
          strstr(out, "statement:\nSELECT name") && !strchr(out, '\033'));
    snprintf(args, sizeof args, "show %s --approver dr_house --json", ids[R_CLI_APPROVE]);
    CHECK(ctl(out, sizeof out, env, args) == 0 && strstr(out, "\"request\":{"));
    CHECK(ctl(out, sizeof out, env, "show nothex --approver dr_house") == 2);
    snprintf(args, sizeof args, "deny %s --approver dr_house", ids[R_CLI_DENY]);
    CHECK(ctl(out, sizeof out, env, args) == 2 && strstr(out, "--reason"));
    snprintf(args, sizeof args, "approve %s --approver dr_house --ttl 0", ids[R_CLI_APPROVE]);
    CHECK(ctl(out, sizeof out, env, args) == 2);
    snprintf(args, sizeof args, "approve %s --approver dr_house --reason 'month end' --ttl 300 --row-cap 7",
             ids[R_CLI_APPROVE]);
    CHECK(ctl(out, sizeof out, env, args) == 0 && strstr(out, "approved by dr_house"));
    CHECK(ctl(out, sizeof out, env, args) == 1 && strstr(out, "already approved"));
    snprintf(args, sizeof args, "deny %s --approver dr_house --reason 'not this one'", ids[R_CLI_DENY]);
    CHECK(ctl(out, sizeof out, env, args) == 0 && strstr(out, "denied by dr_house"));
    snprintf(args, sizeof args, "show %s --approver dr_house", ids[R_CLI_DENY]);
    CHECK(ctl(out, sizeof out, env, args) == 0 && strstr(out, "status           denied") &&
          strstr(out, "decision reason  not this one"));
    snprintf(args, sizeof args, "approve %s --approver agent3", ids[R_CLI_SELF]);
    snprintf(env, sizeof env, "PHIGATE_ADMIN_URL=http://127.0.0.1:%d PHIGATE_APPROVER_PASSWORD=pw-agent3", port);
    CHECK(ctl(out, sizeof out, env, args) == 1 && strstr(out, "self-approval refused"));
    /* Password from a file (must be private), wrong password, nothing listening. */
    char pwfile[400], envf[600];
    snprintf(pwfile, sizeof pwfile, "%s/pw", tmpdir);
    FILE *f = fopen(pwfile, "w");
    fputs("pw-house\n", f);
    fclose(f);
    chmod(pwfile, 0644);
    snprintf(envf, sizeof envf, "PHIGATE_ADMIN_URL=http://127.0.0.1:%d", port);
    snprintf(args, sizeof args, "list --approver dr_house --password-file %s", pwfile);
    CHECK(ctl(out, sizeof out, envf, args) == 1 && strstr(out, "chmod 600"));
    chmod(pwfile, 0600);
    CHECK(ctl(out, sizeof out, envf, args) == 0 && strstr(out, "ID"));
    snprintf(env, sizeof env, "PHIGATE_ADMIN_URL=http://127.0.0.1:%d PHIGATE_APPROVER_PASSWORD=bad", port);
    CHECK(ctl(out, sizeof out, env, "list --approver dr_house") == 1 && strstr(out, "authentication failed"));
    CHECK(ctl(out, sizeof out, "PHIGATE_APPROVER_PASSWORD=x", "list --approver a --url http://127.0.0.1:1") == 1 &&
          strstr(out, "no answer"));
    CHECK(ctl(out, sizeof out, "PHIGATE_APPROVER_PASSWORD=x", "list --approver a --url ftp://x") == 1);
    CHECK(ctl(out, sizeof out, "PHIGATE_APPROVER_PASSWORD=x", "frobnicate --approver a") == 2);
}

static void tls_checks(void)
{
    hresp r;
    char v[512], out[8192], env[600];
    CHECK(http(true, "POST", "/login", NULL, "name=dr_house&password=pw-house", &r) && r.status == 303);
    CHECK(hget(&r, "Set-Cookie", v, sizeof v) && strstr(v, "; Secure"));
    CHECK(hget(&r, "Strict-Transport-Security", v, sizeof v));
    hfree(&r);
    snprintf(env, sizeof env, "PHIGATE_APPROVER_PASSWORD=pw-house");
    char args[700];
    snprintf(args, sizeof args, "list --approver dr_house --url https://127.0.0.1:%d --cacert %s", tls_port, cacert);
    CHECK(ctl(out, sizeof out, env, args) == 0 && strstr(out, "ID"));
    /* Without the CA the certificate is not trusted. */
    snprintf(args, sizeof args, "list --approver dr_house --url https://127.0.0.1:%d", tls_port);
    CHECK(ctl(out, sizeof out, env, args) == 1 && strstr(out, "cacert"));
}

/* Last: it locks 127.0.0.1 out for five minutes. */
static void rate_limit_checks(void)
{
    hresp r;
    /* A success clears earlier failures (the CLI checks left one). */
    CHECK(http(false, "GET", "/api/requests", basic("dr_house", "pw-house"), NULL, &r) && r.status == 200);
    hfree(&r);
    for (int i = 0; i < 5; i++) {
        CHECK(http(false, "GET", "/api/requests", basic("dr_house", "guess"), NULL, &r) && r.status == 401);
        if (r.status != 401)
            fprintf(stderr, "attempt %d: HTTP %d %s\n", i + 1, r.status, r.body ? r.body : "");
        hfree(&r);
    }
    CHECK(http(false, "GET", "/api/requests", basic("dr_house", "pw-house"), NULL, &r) && r.status == 429);
    CHECK(r.body && strstr(r.body, "too many failed logins"));
    hfree(&r);
    CHECK(http(false, "POST", "/login", NULL, "name=dr_house&password=pw-house", &r) && r.status == 429);
    hfree(&r);
}

static int done_pipe[2];

static void *client_thread(void *arg)
{
    (void)arg;
    api_checks();
    console_checks();
    cli_checks();
    tls_checks();
    rate_limit_checks();
    char c = 1;
    if (write(done_pipe[1], &c, 1) != 1)
        abort();
    return NULL;
}

static void on_client_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    event_base_loopbreak(arg);
}

/* ---- loop side ----------------------------------------------------------------------------- */

typedef struct {
    volatile int calls;
    approval_outcome o;
    char approver[64], reason[256];
    uint64_t row_cap;
} outcome_rec;

static void on_outcome(void *arg, approval_outcome o, const approval_result *r)
{
    outcome_rec *rec = arg;
    rec->calls++;
    rec->o = o;
    snprintf(rec->approver, sizeof rec->approver, "%s", r->approver ? r->approver : "");
    snprintf(rec->reason, sizeof rec->reason, "%s", r->reason);
    rec->row_cap = r->row_cap;
}

static bool make_approver(cfg_approver *ap, const char *name, const char *pw)
{
    char text[300];
    ap->name = (char *)name;
    if (!scram_verifier_make(pw, 4096, text, sizeof text) || !scram_verifier_parse(text, &ap->verifier))
        return false;
    return true;
}

static void auth_unit_checks(void)
{
    char text[300];
    scram_verifier v;
    CHECK(scram_verifier_make("correct horse", 4096, text, sizeof text) && scram_verifier_parse(text, &v));
    CHECK(approver_password_matches(&v, "correct horse", 13));
    CHECK(!approver_password_matches(&v, "correct horsE", 13));
    CHECK(!approver_password_matches(&v, "", 0));
    /* The config's verifier text (from phigatectl scram-verifier) works as is. */
    CHECK(scram_verifier_parse("SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$"
                               "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                               &v));
    CHECK(!approver_password_matches(&v, "anything", 8));
}

/* ---- configuration: the redis/approvals/admin/approvers sections ------------------------------ */

static config *load_yaml(const char *yaml, char *errors, size_t len)
{
    char path[400];
    snprintf(path, sizeof path, "%s/phigate.yaml", tmpdir);
    FILE *f = fopen(path, "w");
    fputs(yaml, f);
    fclose(f);
    return config_load(path, errors, len);
}

/* The config must be refused, with `want` in its errors. */
static bool refused(const char *sections, const char *want)
{
    char yaml[4096], errors[4096];
    snprintf(yaml, sizeof yaml, "audit: {enabled: false}\nupstreams:\n  clinic: {host: 127.0.0.1, user: app}\n%s",
             sections);
    config *cfg = load_yaml(yaml, errors, sizeof errors);
    bool ok = !cfg && strstr(errors, want) != NULL;
    if (!ok)
        fprintf(stderr, "config with\n%s\nwanted an error with \"%s\", got: %s\n", sections, want,
                cfg ? "(accepted)" : errors);
    config_free(cfg);
    return ok;
}

static void config_checks(void)
{
    char verifier[300], yaml[4096], errors[4096], section[1024];
    CHECK(scram_verifier_make("pw", 4096, verifier, sizeof verifier));
    setenv("PHIGATE_TEST_REDIS_PW", "s3cret", 1);
    snprintf(yaml, sizeof yaml,
             "audit: {enabled: false}\n"
             "upstreams:\n  clinic: {host: 127.0.0.1, user: app}\n"
             "redis: {host: 127.0.0.1, port: 6380, password_env: PHIGATE_TEST_REDIS_PW, key_prefix: \"pg1:\"}\n"
             "approvals: {wait_ms: 5000, grant: ttl, grant_ttl_s: 60, request_ttl_s: 120}\n"
             "admin: {address: 127.0.0.1, port: 9443}\n"
             "approvers:\n  dr_house: {scram: \"%s\"}\n  dr.cuddy@clinic: {scram: \"%s\"}\n",
             verifier, verifier);
    config *cfg = load_yaml(yaml, errors, sizeof errors);
    if (!cfg)
        fprintf(stderr, "valid config refused: %s\n", errors);
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK(cfg->redis_enabled && cfg->admin_enabled && cfg->redis_port == 6380);
        CHECK(cfg->redis_password && !strcmp(cfg->redis_password, "s3cret"));
        CHECK(cfg->approvals_wait_ms == 5000 && cfg->approvals_grant == APPROVAL_GRANT_TTL);
        CHECK(cfg->napprovers == 2 && config_find_approver(cfg, "dr.cuddy@clinic") && !config_find_approver(cfg, "x"));
        approvals_opts ao;
        approvals_opts_from_config(cfg, &ao);
        CHECK(ao.port == 6380 && !strcmp(ao.key_prefix, "pg1:") && ao.grant_mode == APPROVAL_GRANT_MODE_TTL &&
              ao.grant_ttl_s == 60 && ao.request_ttl_s == 120 && ao.timeout_ms == 2000 && !strcmp(ao.password, "s3cret"));
        admin_http_opts ho;
        admin_http_opts_from_config(cfg, &ho);
        CHECK(ho.port == 9443 && ho.napprovers == 2 && !ho.cert_file);
        config_free(cfg);
    }
    /* Without the sections, nothing is enabled and the defaults hold. */
    cfg = load_yaml("audit: {enabled: false}\nupstreams:\n  clinic: {host: 127.0.0.1, user: app}\n", errors,
                    sizeof errors);
    CHECK(cfg && !cfg->redis_enabled && !cfg->admin_enabled && cfg->napprovers == 0 &&
          cfg->approvals_wait_ms == 120000 && cfg->approvals_grant == APPROVAL_GRANT_SINGLE_USE &&
          cfg->approvals_grant_ttl_s == 600 && cfg->approvals_request_ttl_s == 3600 &&
          !strcmp(cfg->redis_key_prefix, "phigate:"));
    config_free(cfg);

    snprintf(section, sizeof section, "approvers:\n  dr_house: {scram: \"%s\"}\n", verifier);
    CHECK(refused("redis: {host: 127.0.0.1}\nadmin: {port: 9443}\n", "no approvers configured"));
    CHECK(refused("approvals: {wait_ms: 1000}\n", "add a redis: section"));
    CHECK(refused("redis: {password_file: /x, password_env: Y}\n", "not both"));
    CHECK(refused("redis: {password_env: PHIGATE_TEST_UNSET_VAR}\n", "PHIGATE_TEST_UNSET_VAR is not set"));
    CHECK(refused("redis: {password_file: /nonexistent/secret}\n", "cannot open secret file"));
    CHECK(refused("redis: {key_prefix: \"a b\"}\n", "key_prefix"));
    CHECK(refused("redis: {port: 70000}\n", "out of range"));
    CHECK(refused("redis: {}\napprovals: {grant: forever}\n", "not one of the allowed values"));
    CHECK(refused("redis: {}\napprovals: {wait: 5}\n", "unknown setting \"wait\" in approvals"));
    CHECK(refused("approvers:\n  \"bad name!\": {scram: x}\n", "an approver name is"));
    CHECK(refused("approvers:\n  ok: {scram: \"nope\"}\n", "is not a SCRAM-SHA-256 verifier"));
    CHECK(refused("approvers:\n  ok: {}\n", "missing required setting \"scram\""));
    char both[1400];
    snprintf(both, sizeof both, "redis: {}\nadmin: {cert_file: /x.pem}\n%s", section);
    CHECK(refused(both, "cert_file and key_file go together"));
    snprintf(both, sizeof both, "admin: {port: 9443}\n%s", section);
    CHECK(refused(both, "admin: the console decides requests kept in Redis"));
}

static bool make_cert(void)
{
    char cmd[1200];
    snprintf(cacert, sizeof cacert, "%s/cert.pem", tmpdir);
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1 "
             "-addext subjectAltName=IP:127.0.0.1 -keyout %s/key.pem -out %s >/dev/null 2>&1",
             tmpdir, cacert);
    return system(cmd) == 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    log_set_level(getenv("PHIGATE_TEST_DEBUG") ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR);
    signal(SIGPIPE, SIG_IGN);
    auth_unit_checks();
    if (!test_redis_locate(&R) || !mkdtemp(tmpdir)) {
        printf("%d passed, %d failed\n", passed, failed + 1);
        return 1;
    }
    char exe[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    *strrchr(exe, '/') = '\0'; /* <build>/tests */
    snprintf(phigatectl, sizeof phigatectl, "%s/../phigatectl", exe);
    if (access(phigatectl, X_OK) != 0) {
        fprintf(stderr, "FAIL: %s not found: build it first (make)\n", phigatectl);
        printf("%d passed, %d failed\n", passed, failed + 1);
        return 1;
    }
    CHECK(make_cert());
    config_checks();
    snprintf(prefix, sizeof prefix, "phigate-test-http:%d:%lld:", (int)getpid(), now_ms());
    base = event_base_new();
    struct event *ticker = test_ticker(base);
    approvals_opts o = {.host = R.host, .port = R.port, .password = R.password[0] ? R.password : NULL,
                        .key_prefix = prefix, .request_ttl_s = 600, .grant_ttl_s = 60};
    char err[512];
    approvals *ap = approvals_new(base, &o, err, sizeof err);
    approvals *agent = approvals_new(base, &o, err, sizeof err);
    long long deadline = now_ms() + 5000;
    while (!(approvals_available(ap) && approvals_available(agent)) && now_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
    CHECK(approvals_available(ap) && approvals_available(agent));

    cfg_approver approvers[4];
    memset(approvers, 0, sizeof approvers);
    CHECK(make_approver(&approvers[0], "dr_house", "pw-house") && make_approver(&approvers[1], "dr_cuddy", "pw-cuddy") &&
          make_approver(&approvers[2], "mallory", "pw-mallory") && make_approver(&approvers[3], "agent3", "pw-agent3"));
    admin_http_opts ho = {.address = "127.0.0.1", .port = 0, .approvers = approvers, .napprovers = 4};
    admin_http *h = admin_http_new(base, &ho, ap, err, sizeof err);
    if (!h)
        fprintf(stderr, "admin_http_new: %s\n", err);
    admin_http_opts to = ho;
    to.cert_file = cacert;
    char keyfile[300];
    snprintf(keyfile, sizeof keyfile, "%s/key.pem", tmpdir);
    to.key_file = keyfile;
    admin_http *ht = admin_http_new(base, &to, ap, err, sizeof err);
    if (!ht)
        fprintf(stderr, "admin_http_new (tls): %s\n", err);
    CHECK(h && ht);
    admin_http_opts bad = ho;
    bad.napprovers = 0;
    CHECK(admin_http_new(base, &bad, ap, err, sizeof err) == NULL);
    if (!h || !ht || !approvals_available(ap)) {
        printf("%d passed, %d failed\n", passed, failed);
        return 1;
    }
    port = admin_http_port(h);
    tls_port = admin_http_port(ht);
    client_ctx = SSL_CTX_new(TLS_client_method());

    /* The held statements the client decides. */
    static outcome_rec recs[8];
    approval_wait *ws[8];
    const char *who[8] = {"agent1", "mallory", "agent1", "agent1", "agent1", "agent2", "agent2", "agent3"};
    for (int i = 0; i < 8; i++) {
        char fp[64], stmt[256];
        snprintf(fp, sizeof fp, "fp-http-%d-%d", i, getpid());
        snprintf(stmt, sizeof stmt,
                 i >= R_CLI_APPROVE ? "SELECT name, \033[31mssn\033[0m FROM patients -- %d"
                                    : "SELECT * FROM patients WHERE note = '<script>alert(1)</script>' -- %d",
                 i);
        approval_request q = {who[i], "127.0.0.1:4242", "clinic", "postgres", stmt, fp, "unscoped read", "unscoped_read",
                              60000};
        ws[i] = approvals_request(agent, &q, on_outcome, &recs[i]);
        snprintf(ids[i], sizeof ids[i], "%s", approval_wait_id(ws[i]));
    }
    run_for(base, 300);

    CHECK(pipe(done_pipe) == 0);
    struct event *done = event_new(base, done_pipe[0], EV_READ, on_client_done, base);
    event_add(done, NULL);
    pthread_t th;
    pthread_create(&th, NULL, client_thread, NULL);
    event_base_dispatch(base);
    pthread_join(th, NULL);
    run_for(base, 500);

    /* What the agents were told. */
    CHECK(recs[R_API_APPROVE].calls == 1 && recs[R_API_APPROVE].o == APPROVAL_APPROVED &&
          !strcmp(recs[R_API_APPROVE].approver, "dr_house") && recs[R_API_APPROVE].row_cap == 10);
    CHECK(recs[R_API_DENY].calls == 1 && recs[R_API_DENY].o == APPROVAL_DENIED &&
          !strcmp(recs[R_API_DENY].reason, "use the de-identified view"));
    CHECK(recs[R_FORM_APPROVE].calls == 1 && recs[R_FORM_APPROVE].o == APPROVAL_APPROVED &&
          !strcmp(recs[R_FORM_APPROVE].reason, "ward round") && recs[R_FORM_APPROVE].row_cap == 5);
    CHECK(recs[R_FORM_DENY].calls == 1 && recs[R_FORM_DENY].o == APPROVAL_DENIED &&
          !strcmp(recs[R_FORM_DENY].reason, "not <b>today</b>"));
    CHECK(recs[R_CLI_APPROVE].calls == 1 && recs[R_CLI_APPROVE].o == APPROVAL_APPROVED &&
          recs[R_CLI_APPROVE].row_cap == 7 && !strcmp(recs[R_CLI_APPROVE].reason, "month end"));
    CHECK(recs[R_CLI_DENY].calls == 1 && recs[R_CLI_DENY].o == APPROVAL_DENIED);
    CHECK(recs[R_SELF].calls == 0 && recs[R_CLI_SELF].calls == 0); /* self-approvals changed nothing */
    approval_wait_cancel(ws[R_SELF]);
    approval_wait_cancel(ws[R_CLI_SELF]);
    run_for(base, 100);

    admin_http_free(h);
    admin_http_free(ht);
    approvals_free(ap);
    approvals_free(agent);
    SSL_CTX_free(client_ctx);
    event_free(done);
    event_free(ticker);
    event_base_free(base);
    close(done_pipe[0]), close(done_pipe[1]);
    test_redis_cleanup(&R, prefix);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
