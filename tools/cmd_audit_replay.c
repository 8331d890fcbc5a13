/*
 * phigatectl audit replay: one session as the agent saw it, statement by
 * statement, as text or as a self-contained HTML page for an auditor.
 *
 * The page has inline CSS only, a Content-Security-Policy that forbids
 * loading anything, and every logged byte HTML-escaped: the log holds SQL an
 * agent wrote, which must never become markup.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gate/audit_json.h"
#include "gate/audit_read.h"

int cmd_audit_replay(int argc, char **argv);

/* ---- collecting the session's records --------------------------------- */

typedef struct {
    char *raw;
    size_t len;
    char *where; /* "audit-000001.jsonl:12" */
    aj_value *rec;
} kept;

typedef struct {
    const char *session;
    kept *v;
    size_t n, cap;
} kept_list;

/* Copies the line: the reader's mapping goes away when it moves to the next file. */
static bool keep(kept_list *k, const audit_line *ln)
{
    if (k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 64;
        kept *nv = realloc(k->v, cap * sizeof *nv);
        if (!nv)
            return false;
        k->v = nv;
        k->cap = cap;
    }
    const char *base = strrchr(ln->path, '/');
    kept *e = &k->v[k->n];
    memset(e, 0, sizeof *e);
    e->raw = malloc(ln->len + 1);
    if (!e->raw || asprintf(&e->where, "%s:%" PRIu64, base ? base + 1 : ln->path, ln->lineno) < 0) {
        free(e->raw);
        return false;
    }
    memcpy(e->raw, ln->raw, ln->len);
    e->len = ln->len;
    k->n++;
    return true;
}

/* Only the session's records are kept, so a replay of one session from a
 * large log needs memory for that session alone. */
static bool collect(const char *dir, kept_list *k)
{
    char err[512];
    audit_reader *r = audit_reader_open(&dir, 1, err, sizeof err);
    if (!r) {
        fprintf(stderr, "phigatectl audit replay: %s\n", err);
        return false;
    }
    aj_arena a = {0};
    audit_line ln;
    bool ok = true;
    while (ok && audit_reader_next(r, &ln)) {
        audit_parsed p;
        aj_arena_reset(&a);
        if (!ln.has_nl || !audit_line_parse(&a, &ln, &p, err, sizeof err))
            continue;
        const char *sid = aj_get_str(p.root, "session");
        if (sid && !strcmp(sid, k->session))
            ok = keep(k, &ln);
    }
    aj_arena_free(&a);
    audit_reader_close(r);
    return ok;
}

/* Parsed once into one arena that lives until rendering ends, so statements
 * can look ahead for their result records. */
static bool parse_kept(kept_list *k, aj_arena *a)
{
    char err[160];
    for (size_t i = 0; i < k->n; i++)
        if (!aj_parse(a, k->v[i].raw, k->v[i].len, &k->v[i].rec, err, sizeof err))
            return false;
    return true;
}

/* ---- output in two forms ---------------------------------------------- */

typedef struct {
    FILE *out;
    bool html;
    audit_buf b; /* scratch for escaping */
} view;

/* Agent-written text must not drive the auditor's terminal: control bytes
 * (ESC sequences and the like) are shown as \xNN. */
static void put_terminal_safe(audit_buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f)
            audit_buf_printf(b, "\\x%02x", c);
        else
            audit_buf_putc(b, (char)c);
    }
}

static void put_text(view *v, const char *s, size_t n)
{
    v->b.len = 0;
    if (v->html)
        audit_buf_html(&v->b, s, n);
    else
        put_terminal_safe(&v->b, s, n);
    if (v->b.len)
        fwrite(v->b.p, 1, v->b.len, v->out);
}

/* A label and a value; in text, continuation lines of the value are indented. */
static void row(view *v, const char *label, const char *val, size_t n, const char *cls)
{
    if (v->html) {
        fprintf(v->out, "<tr><th>%s</th><td%s%s%s>", label, cls ? " class=\"" : "", cls ? cls : "", cls ? "\"" : "");
        put_text(v, val, n);
        fputs("</td></tr>\n", v->out);
        return;
    }
    fprintf(v->out, "    %-15s ", label);
    for (size_t i = 0, start = 0; i <= n; i++)
        if (i == n || val[i] == '\n') {
            put_text(v, val + start, i - start);
            fputs(i == n ? "\n" : "\n                    ", v->out);
            start = i + 1;
        }
}

static void row_s(view *v, const char *label, const char *val, const char *cls)
{
    if (val)
        row(v, label, val, strlen(val), cls);
}

static void rowf(view *v, const char *label, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void rowf(view *v, const char *label, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    row(v, label, buf, strlen(buf), NULL);
}

/* Class names go into markup unescaped, so a value read from the log (the
 * decision) never becomes one directly: only these constants can. */
static const char *css_class(const char *decision)
{
    static const char *const known[] = {"allow", "rewrite", "hold", "deny"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (decision && !strcmp(decision, known[i]))
            return known[i];
    return "other";
}

static void section(view *v, const char *title, const char *cls)
{
    if (v->html) {
        fprintf(v->out, "<h2 class=\"%s\">", cls);
        put_text(v, title, strlen(title));
        fputs("</h2>\n<table>\n", v->out);
    } else
        fprintf(v->out, "\n%s\n", title);
}

static void section_end(view *v)
{
    if (v->html)
        fputs("</table>\n", v->out);
}

/* ---- rendering -------------------------------------------------------- */

static const char *txt(const aj_value *rec, const char *key)
{
    return aj_text(aj_get(rec, key), NULL);
}

static uint64_t u64(const aj_value *rec, const char *key)
{
    uint64_t x = 0;
    return aj_get_u64(rec, key, &x) ? x : 0;
}

/* Microseconds since the epoch of a record's ts, 0 if unreadable. */
static int64_t ts_us(const aj_value *rec)
{
    const char *ts = txt(rec, "ts");
    struct tm tm = {0};
    long us = 0;
    if (!ts || sscanf(ts, "%4d-%2d-%2dT%2d:%2d:%2d.%6ldZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                      &tm.tm_min, &tm.tm_sec, &us) != 7)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000000 + us;
}

/* Results follow their statement; searching forward from it is enough. */
static const aj_value *find_for_stmt(const kept_list *k, size_t from, const char *type, uint64_t stmt)
{
    for (size_t i = from; i < k->n; i++) {
        const aj_value *r = k->v[i].rec;
        if (!strcmp(txt(r, "type"), type) && u64(r, "stmt") == stmt)
            return r;
    }
    return NULL;
}

/* Parameters as logged: already masked by the front. */
static void render_params(view *v, const aj_value *rec)
{
    const aj_value *ps = aj_get(rec, "params");
    if (!ps || ps->type != AJ_ARRAY)
        return;
    audit_buf b = {0};
    int i = 1;
    for (const aj_value *p = ps->child; p; p = p->next, i++) {
        size_t n;
        const char *s = aj_text(p, &n);
        audit_buf_printf(&b, "%s$%d = ", i > 1 ? "\n" : "", i);
        if (!s)
            audit_buf_puts(&b, "NULL");
        else {
            audit_buf_putc(&b, '\'');
            audit_buf_put(&b, s, n);
            audit_buf_puts(&b, p->type == AJ_OBJECT ? "' (not UTF-8; exact bytes in the log)" : "'");
        }
    }
    row(v, "parameters", b.p ? b.p : "(none)", b.p ? b.len : 6, NULL);
    audit_buf_free(&b);
}

static void render_masking(view *v, const aj_value *rec)
{
    const aj_value *cs = aj_get(rec, "columns");
    if (!cs || cs->type != AJ_ARRAY)
        return;
    audit_buf b = {0};
    for (const aj_value *c = cs->child; c; c = c->next) {
        const char *m = txt(c, "masking");
        audit_buf_printf(&b, "%s%s: %s", b.len ? "\n" : "", txt(c, "name") ? txt(c, "name") : "?",
                         m ? m : "not masked");
    }
    row(v, "masking", b.p ? b.p : "(no columns)", b.p ? b.len : 12, NULL);
    audit_buf_free(&b);
}

static void render_result(view *v, const aj_value *res)
{
    if (!res) {
        row_s(v, "result", "(no result record)", NULL);
        return;
    }
    uint64_t d = u64(res, "duration_us");
    const char *sqlstate = txt(res, "sqlstate");
    if (sqlstate)
        rowf(v, "result", "ERROR %s: %s (%" PRIu64 ".%03" PRIu64 " ms)", sqlstate,
             txt(res, "error") ? txt(res, "error") : "", d / 1000, d % 1000);
    else
        rowf(v, "result", "%" PRIu64 " rows, %" PRIu64 " bytes, %" PRIu64 ".%03" PRIu64 " ms", u64(res, "rows"),
             u64(res, "bytes"), d / 1000, d % 1000);
    row_s(v, "agent sha256", txt(res, "agent_sha256"), "mono");
    row_s(v, "database sha256", txt(res, "db_sha256"), "mono");
}

/* One table per statement: what the agent sent, what the database got, and
 * what came back, with the log position to check it against. */
static void render_statement(view *v, const kept_list *k, size_t i, int64_t t0)
{
    const aj_value *s = k->v[i].rec;
    uint64_t stmt = u64(s, "stmt");
    const char *d = txt(s, "decision") ? txt(s, "decision") : "?";
    char title[160];
    snprintf(title, sizeof title, "Statement %" PRIu64 ": %s", stmt, d);
    section(v, title, css_class(d));
    int64_t off = ts_us(s) - t0;
    rowf(v, "time", "%s (+%" PRId64 ".%03" PRId64 " s)", txt(s, "ts"), off / 1000000, (off / 1000) % 1000);
    row_s(v, "decision", d, css_class(d));
    row_s(v, "class", txt(s, "class"), NULL);
    row_s(v, "rule", txt(s, "rule"), NULL);
    row_s(v, "reason", txt(s, "reason"), NULL);
    row_s(v, "agent sent", txt(s, "text"), "sql");
    row_s(v, "sent upstream", txt(s, "upstream") ? txt(s, "upstream") : "(not sent)", "sql");
    render_params(v, s);
    render_masking(v, s);
    row_s(v, "approval", txt(s, "approval"), NULL);
    render_result(v, find_for_stmt(k, i + 1, "result", stmt));
    row_s(v, "log record", k->v[i].where, "mono");
    section_end(v);
}

static void render_event(view *v, const aj_value *r, const char *where)
{
    const char *type = txt(r, "type");
    char title[200];
    if (!strcmp(type, "approval")) {
        snprintf(title, sizeof title, "Approval %s", txt(r, "event") ? txt(r, "event") : "?");
        section(v, title, "approval");
        row_s(v, "time", txt(r, "ts"), NULL);
        row_s(v, "request", txt(r, "approval"), "mono");
        row_s(v, "approver", txt(r, "approver"), NULL);
        row_s(v, "reason", txt(r, "reason"), NULL);
    } else if (!strcmp(type, "disconnect")) {
        section(v, "Disconnected", "end");
        row_s(v, "time", txt(r, "ts"), NULL);
        row_s(v, "reason", txt(r, "reason"), NULL);
        rowf(v, "statements", "%" PRIu64, u64(r, "statements"));
    } else
        return;
    row_s(v, "log record", where, "mono");
    section_end(v);
}

static void render_connect(view *v, const aj_value *c, const char *where)
{
    bool failed = !strcmp(txt(c, "type"), "auth_failure");
    section(v, failed ? "Authentication failed" : "Connected", failed ? "deny" : "start");
    row_s(v, "time", txt(c, "ts"), NULL);
    row_s(v, failed ? "claimed user" : "identity", txt(c, failed ? "user" : "identity"), NULL);
    row_s(v, "authentication", txt(c, "auth"), NULL);
    row_s(v, "client", txt(c, "client"), NULL);
    row_s(v, "protocol", txt(c, "protocol"), NULL);
    row_s(v, "TLS", txt(c, "tls") ? txt(c, "tls") : "none", NULL);
    row_s(v, "database", txt(c, "database"), NULL);
    row_s(v, "role", txt(c, "role"), NULL);
    row_s(v, "reason", txt(c, "reason"), NULL);
    row_s(v, "log record", where, "mono");
    section_end(v);
}

static void render_records(view *v, const kept_list *k)
{
    int64_t t0 = ts_us(k->v[0].rec);
    for (size_t i = 0; i < k->n; i++) {
        const aj_value *r = k->v[i].rec;
        const char *type = txt(r, "type");
        if (!strcmp(type, "connect") || !strcmp(type, "auth_failure"))
            render_connect(v, r, k->v[i].where);
        else if (!strcmp(type, "statement"))
            render_statement(v, k, i, t0);
        else
            render_event(v, r, k->v[i].where);
    }
}

/* Inline and small: the page must open offline, in a browser that loads
 * nothing else (the CSP below forbids it). */
static const char CSS[] =
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em;color:#222;max-width:70em}"
    "h1{font-size:1.4em}h2{font-size:1.1em;margin:1.6em 0 .3em;padding:.2em .5em;border-left:6px solid #888}"
    "h2.allow{border-color:#2e7d32}h2.rewrite{border-color:#1565c0}h2.hold{border-color:#ef6c00}"
    "h2.deny{border-color:#c62828}td.allow{color:#2e7d32}td.rewrite{color:#1565c0}td.hold{color:#ef6c00}"
    "td.deny{color:#c62828;font-weight:bold}table{border-collapse:collapse;width:100%}"
    "th{text-align:left;vertical-align:top;width:11em;padding:.25em .6em;background:#f3f3f3;font-weight:600}"
    "td{padding:.25em .6em;border-bottom:1px solid #eee;white-space:pre-wrap;word-break:break-word}"
    "td.sql,td.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em}"
    "p.note{color:#555;font-size:.9em}";

static void page_start(view *v, const char *session, const char *dir)
{
    if (!v->html) {
        fprintf(v->out, "Session %s (log %s)\n", session, dir);
        return;
    }
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
          "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
          "<title>phigate audit replay: session ",
          v->out);
    put_text(v, session, strlen(session));
    fprintf(v->out, "</title>\n<style>%s</style></head><body>\n<h1>Session ", CSS);
    put_text(v, session, strlen(session));
    fputs("</h1>\n<p class=\"note\">Replayed from the audit log ", v->out);
    put_text(v, dir, strlen(dir));
    fputs(". Prove the log intact with <code>phigatectl audit verify --pubkey KEY</code>.</p>\n", v->out);
}

static void page_end(view *v)
{
    if (v->html)
        fputs("</body></html>\n", v->out);
}

static void replay_usage(FILE *f)
{
    fprintf(f, "Usage: phigatectl audit replay --session ID [--html OUT.html] LOGDIR|FILE...\n\n"
               "Shows one session as the agent saw it: connection, then each statement with its time,\n"
               "decision, text as received and as sent upstream, parameters (masked), masking per\n"
               "column, rows, result digests and duration.  Text on stdout, or with --html a\n"
               "self-contained page (no external resources).  Session ids: phigatectl audit sessions.\n"
               "This reads the log; it does not verify it (use audit verify).\n");
}

static int render(const char *session, const char *dir, const char *html, kept_list *k)
{
    aj_arena a = {0};
    view v = {.out = stdout, .html = html != NULL};
    int rc = 0;
    if (!parse_kept(k, &a)) {
        fprintf(stderr, "phigatectl audit replay: cannot parse a kept record\n");
        rc = 2;
    } else if (html && !(v.out = fopen(html, "w"))) {
        perror(html);
        rc = 2;
    } else {
        page_start(&v, session, dir);
        render_records(&v, k);
        page_end(&v);
        if (html && fclose(v.out) != 0) {
            perror(html);
            rc = 2;
        }
    }
    audit_buf_free(&v.b);
    aj_arena_free(&a);
    return rc;
}

int cmd_audit_replay(int argc, char **argv)
{
    static const struct option opts[] = {{"session", required_argument, 0, 's'},
                                         {"html", required_argument, 0, 'H'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *session = NULL, *html = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "s:H:h", opts, NULL)) != -1) {
        if (c == 's')
            session = optarg;
        else if (c == 'H')
            html = optarg;
        else {
            replay_usage(c == 'h' ? stdout : stderr);
            return c == 'h' ? 0 : 2;
        }
    }
    if (!session || optind != argc - 1) {
        replay_usage(stderr);
        return 2;
    }
    kept_list k = {.session = session};
    int rc = collect(argv[optind], &k) ? 0 : 2;
    if (rc == 0 && k.n == 0) {
        fprintf(stderr, "phigatectl audit replay: no records for session %s\n", session);
        rc = 1;
    }
    if (rc == 0)
        rc = render(session, argv[optind], html, &k);
    for (size_t i = 0; i < k.n; i++) {
        free(k.v[i].raw);
        free(k.v[i].where);
    }
    free(k.v);
    return rc;
}
