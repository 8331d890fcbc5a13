/*
 * phigatectl audit: verify, replay, export and list the audit log; make its key.
 *
 *   phigatectl audit verify   [--pubkey FILE] [--allow-unsigned-tail] LOGDIR|FILE...
 *   phigatectl audit replay   --session ID [--html OUT.html] LOGDIR      (cmd_audit_replay.c)
 *   phigatectl audit export   [--from T] [--to T] [--identity X] [--table T] [--pubkey FILE] LOGDIR
 *   phigatectl audit sessions LOGDIR
 *   phigatectl audit keygen   --out DIR
 *
 * Exit status: 0 success, 1 verification failed / nothing found, 2 usage or I/O error.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gate/audit_crypto.h"
#include "gate/audit_read.h"
#include "gate/audit_verify.h"
#include "tools/phigatectl.h"

int cmd_audit_replay(int argc, char **argv); /* tools/cmd_audit_replay.c */

/* ---- shared helpers --------------------------------------------------- */

/* --help anywhere on the line wins, before any other check, so it works even
 * on a command line that is otherwise wrong. */
static bool wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return true;
    return false;
}

typedef bool (*record_fn)(void *arg, const audit_line *ln, const audit_parsed *p);

/* Calls fn for every parseable record; unparseable lines are reported and
 * skipped (these commands read, verify judges). */
static bool for_each_record(const char *const *paths, size_t n, record_fn fn, void *arg)
{
    char err[512];
    audit_reader *r = audit_reader_open(paths, n, err, sizeof err);
    if (!r) {
        fprintf(stderr, "phigatectl audit: %s\n", err);
        return false;
    }
    aj_arena a = {0};
    audit_line ln;
    bool ok = true;
    while (ok && audit_reader_next(r, &ln)) {
        audit_parsed p;
        aj_arena_reset(&a);
        if (ln.has_nl && audit_line_parse(&a, &ln, &p, err, sizeof err))
            ok = fn(arg, &ln, &p);
        else
            fprintf(stderr, "warning: %s:%" PRIu64 ": skipped, not a record (run audit verify)\n", ln.path,
                    ln.lineno);
    }
    if (audit_reader_error(r)) {
        fprintf(stderr, "phigatectl audit: %s\n", audit_reader_error(r));
        ok = false;
    }
    aj_arena_free(&a);
    audit_reader_close(r);
    return ok;
}

/* NULL after printing why; callers exit 2 (usage / I/O), not 1 (bad log). */
static EVP_PKEY *load_pub_or_die(const char *path)
{
    char err[512];
    EVP_PKEY *k = audit_key_load_public(path, err, sizeof err);
    if (!k)
        fprintf(stderr, "phigatectl audit: %s\n", err);
    return k;
}

/* String -> slot index, open addressing; sessions and (session, stmt) keys. */
typedef struct {
    char **keys;
    void **vals;
    size_t cap, n;
} strmap;

/* Not adversary-proof hashing, and it need not be: the tool reads one log
 * once, worst case is slower, never wrong. */
static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s)
        h = (h ^ (uint8_t)*s++) * 1099511628211ull;
    return h;
}

static size_t strmap_slot(const strmap *m, const char *k)
{
    size_t i = fnv1a(k) & (m->cap - 1);
    while (m->keys[i] && strcmp(m->keys[i], k) != 0)
        i = (i + 1) & (m->cap - 1);
    return i;
}

static bool strmap_grow(strmap *m)
{
    strmap g = {.cap = m->cap ? m->cap * 2 : 64};
    g.keys = calloc(g.cap, sizeof *g.keys);
    g.vals = calloc(g.cap, sizeof *g.vals);
    if (!g.keys || !g.vals) {
        free(g.keys);
        free(g.vals);
        return false;
    }
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i]) {
            size_t s = strmap_slot(&g, m->keys[i]);
            g.keys[s] = m->keys[i];
            g.vals[s] = m->vals[i];
        }
    g.n = m->n;
    free(m->keys);
    free(m->vals);
    *m = g;
    return true;
}

static void *strmap_get(const strmap *m, const char *k)
{
    if (!m->cap)
        return NULL;
    size_t s = strmap_slot(m, k);
    return m->keys[s] ? m->vals[s] : NULL;
}

/* Load factor at most 1/2 keeps probe runs short. */
static bool strmap_put(strmap *m, const char *k, void *v)
{
    if ((m->n + 1) * 2 > m->cap && !strmap_grow(m))
        return false;
    size_t s = strmap_slot(m, k);
    if (!m->keys[s]) {
        if (!(m->keys[s] = strdup(k)))
            return false;
        m->n++;
    }
    m->vals[s] = v;
    return true;
}

static void strmap_free(strmap *m, bool free_vals)
{
    for (size_t i = 0; i < m->cap; i++) {
        free(m->keys[i]);
        if (free_vals)
            free(m->vals[i]);
    }
    free(m->keys);
    free(m->vals);
}

static const char *str_or(const aj_value *rec, const char *key, const char *dflt)
{
    const char *s = aj_text(aj_get(rec, key), NULL);
    return s ? s : dflt;
}

/* ---- verify ----------------------------------------------------------- */

static void verify_usage(FILE *f)
{
    fprintf(f, "Usage: phigatectl audit verify [--pubkey FILE] [--allow-unsigned-tail] [--quiet] LOGDIR|FILE...\n\n"
               "Proves the hash chain and the checkpoint signatures of an audit log and names the first\n"
               "bad record (file:line and seq).  Directories are read in file-number order.\n\n"
               "  --pubkey FILE          the trusted public key (audit_ed25519.pub); without it the key the\n"
               "                         log names itself is used, which proves consistency only\n"
               "  --allow-unsigned-tail  a live log: records after the last checkpoint are a warning\n"
               "  --quiet                no progress and no warnings\n\n"
               "Exit status: 0 verified, 1 the log is not intact, 2 usage or I/O error.\n");
}

typedef struct {
    bool quiet;
    time_t last;
    struct timespec start;
} verify_ui;

static void verify_progress(void *arg, uint64_t done, uint64_t total, uint64_t records)
{
    verify_ui *ui = arg;
    time_t now = time(NULL);
    if (ui->quiet || now == ui->last)
        return; /* at most one line a second, and only for logs big enough to take that long */
    ui->last = now;
    fprintf(stderr, "verify: %5.1f%%  %" PRIu64 " records  %" PRIu64 " / %" PRIu64 " MB\n",
            total ? 100.0 * (double)done / (double)total : 100.0, records, done >> 20, total >> 20);
}

static void verify_warn(void *arg, const char *file, uint64_t line, const char *msg)
{
    verify_ui *ui = arg;
    if (!ui->quiet)
        fprintf(stderr, "warning: %s:%" PRIu64 ": %s\n", file, line, msg);
}

/* One line a script can match (OK/FAIL first) and one line for the human. */
static int verify_report(const audit_verify_result *r, bool trusted)
{
    if (!r->ok) {
        printf("FAIL %s:%" PRIu64 ": seq %" PRIu64 ": %s\n", r->bad_file, r->bad_line, r->bad_seq, r->reason);
        return 1;
    }
    printf("OK %" PRIu64 " records (seq %" PRIu64 "..%" PRIu64 ") in %" PRIu64 " files, %" PRIu64
           " signed checkpoints, signed through seq %" PRIu64 "%s\n",
           r->records, r->first_seq, r->last_seq, r->files, r->checkpoints, r->last_signed_seq,
           r->sealed_tails ? " (with sealed torn tails, see warnings)" : "");
    printf("log %s, key %s (%s)\n", r->log_id, r->key_fpr, trusted ? "trusted --pubkey" : "named by the log itself");
    return 0;
}

static int cmd_verify(int argc, char **argv)
{
    static const struct option opts[] = {{"pubkey", required_argument, 0, 'k'},
                                         {"allow-unsigned-tail", no_argument, 0, 'u'},
                                         {"quiet", no_argument, 0, 'q'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *pubpath = NULL;
    verify_ui ui = {.last = time(NULL)};
    audit_verify_opts o = {.progress = verify_progress, .warn = verify_warn, .arg = &ui};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "k:uqh", opts, NULL)) != -1) {
        if (c == 'k')
            pubpath = optarg;
        else if (c == 'u')
            o.allow_unsigned_tail = true;
        else if (c == 'q')
            ui.quiet = true;
        else {
            verify_usage(c == 'h' ? stdout : stderr);
            return c == 'h' ? 0 : 2;
        }
    }
    if (optind >= argc) {
        verify_usage(stderr);
        return 2;
    }
    if (pubpath && !(o.pubkey = load_pub_or_die(pubpath)))
        return 2;
    audit_verify_result *r = malloc(sizeof *r);
    if (!r)
        return 2;
    audit_verify((const char *const *)argv + optind, (size_t)(argc - optind), &o, r);
    int rc = verify_report(r, o.pubkey != NULL);
    free(r);
    EVP_PKEY_free(o.pubkey);
    return rc;
}

/* ---- keygen ----------------------------------------------------------- */

static int cmd_keygen(int argc, char **argv)
{
    const char *out = NULL;
    if (wants_help(argc, argv) || argc != 3 || strcmp(argv[1], "--out") != 0) {
        bool help = wants_help(argc, argv);
        fprintf(help ? stdout : stderr,
                "Usage: phigatectl audit keygen --out DIR\n\n"
                "Creates the audit signing key pair: DIR/" AUDIT_KEY_FILE " (private, mode 0600, for phigate)\n"
                "and DIR/" AUDIT_PUB_FILE " (public: give a copy to the auditors for audit verify --pubkey).\n"
                "Never overwrites an existing key.\n");
        return help ? 0 : 2;
    }
    out = argv[2];
    char err[512], path[4200], fpr[AUDIT_FPR_LEN];
    if (!audit_key_generate(out, err, sizeof err)) {
        fprintf(stderr, "phigatectl audit keygen: %s\n", err);
        return 2;
    }
    snprintf(path, sizeof path, "%s/%s", out, AUDIT_PUB_FILE);
    EVP_PKEY *k = load_pub_or_die(path);
    if (!k || !audit_key_fingerprint(k, fpr)) {
        EVP_PKEY_free(k);
        return 2;
    }
    printf("private key: %s/%s (mode 0600)\npublic key:  %s\nfingerprint: %s\n", out, AUDIT_KEY_FILE, path, fpr);
    EVP_PKEY_free(k);
    return 0;
}

/* ---- sessions --------------------------------------------------------- */

typedef struct {
    char first_ts[40], last_ts[40];
    char identity[128], client[80], protocol[16];
    uint64_t statements, denied, held, order;
    bool auth_failed, closed;
} session_row;

typedef struct {
    strmap map;
    uint64_t next_order;
} session_list;

static session_row *session_for(session_list *L, const char *sid)
{
    session_row *s = strmap_get(&L->map, sid);
    if (s)
        return s;
    s = calloc(1, sizeof *s);
    if (!s || !strmap_put(&L->map, sid, s)) {
        free(s);
        return NULL;
    }
    s->order = L->next_order++;
    return s;
}

static void session_connect(session_row *s, const aj_value *rec)
{
    snprintf(s->identity, sizeof s->identity, "%s", str_or(rec, "identity", "-"));
    snprintf(s->client, sizeof s->client, "%s", str_or(rec, "client", "-"));
    snprintf(s->protocol, sizeof s->protocol, "%s", str_or(rec, "protocol", "-"));
}

/* Sessions are keyed by id alone; ids carry the run (log_open seq), so two
 * runs of phigate never merge. */
static bool session_record(void *arg, const audit_line *ln, const audit_parsed *p)
{
    (void)ln;
    const char *sid = aj_get_str(p->root, "session");
    if (!sid)
        return true;
    session_row *s = session_for(arg, sid);
    if (!s)
        return false;
    if (!s->first_ts[0])
        snprintf(s->first_ts, sizeof s->first_ts, "%s", p->ts);
    snprintf(s->last_ts, sizeof s->last_ts, "%s", p->ts);
    const char *d = aj_get_str(p->root, "decision");
    if (!strcmp(p->type, "connect"))
        session_connect(s, p->root);
    else if (!strcmp(p->type, "auth_failure")) {
        s->auth_failed = true;
        snprintf(s->identity, sizeof s->identity, "(failed: %s)", str_or(p->root, "user", "?"));
        snprintf(s->client, sizeof s->client, "%s", str_or(p->root, "client", "-"));
    } else if (!strcmp(p->type, "statement")) {
        s->statements++;
        s->denied += d && !strcmp(d, "deny");
        s->held += d && !strcmp(d, "hold");
    } else if (!strcmp(p->type, "disconnect"))
        s->closed = true;
    return true;
}

typedef struct {
    const char *id;
    const session_row *row;
} session_ref;

static int by_order(const void *a, const void *b)
{
    const session_ref *x = a, *y = b;
    return x->row->order < y->row->order ? -1 : x->row->order > y->row->order;
}

static void print_session(const char *id, const session_row *s)
{
    printf("%-14s %-27s %-27s %-20s %-22s %-8s %5" PRIu64 " %4" PRIu64 " %4" PRIu64 " %s\n", id, s->first_ts,
           s->last_ts, s->identity[0] ? s->identity : "-", s->client[0] ? s->client : "-",
           s->protocol[0] ? s->protocol : "-", s->statements, s->denied, s->held,
           s->auth_failed ? "auth-failed" : s->closed ? "closed" : "open");
}

static void print_sessions(const session_list *L)
{
    session_ref *refs = calloc(L->map.n + 1, sizeof *refs);
    size_t n = 0;
    for (size_t i = 0; refs && i < L->map.cap; i++)
        if (L->map.keys[i])
            refs[n++] = (session_ref){L->map.keys[i], L->map.vals[i]};
    qsort(refs, n, sizeof *refs, by_order);
    printf("%-14s %-27s %-27s %-20s %-22s %-8s %5s %4s %4s %s\n", "SESSION", "FIRST", "LAST", "IDENTITY", "CLIENT",
           "PROTO", "STMTS", "DENY", "HOLD", "STATE");
    for (size_t i = 0; i < n; i++)
        print_session(refs[i].id, refs[i].row);
    free(refs);
}

static int cmd_sessions(int argc, char **argv)
{
    if (wants_help(argc, argv) || argc < 2) {
        bool help = wants_help(argc, argv);
        fprintf(help ? stdout : stderr,
                "Usage: phigatectl audit sessions LOGDIR|FILE...\n\n"
                "Lists every session in the log in order of first appearance: identity, client, protocol,\n"
                "statement count, denied and held statements, and whether it ended.  Use the SESSION\n"
                "value with audit replay --session.\n");
        return help ? 0 : 2;
    }
    session_list L = {0};
    bool ok = for_each_record((const char *const *)argv + 1, (size_t)(argc - 1), session_record, &L);
    if (ok)
        print_sessions(&L);
    int rc = ok ? (L.map.n ? 0 : 1) : 2;
    if (ok && !L.map.n)
        fprintf(stderr, "no sessions in the log\n");
    strmap_free(&L.map, true);
    return rc;
}

/* ---- export ----------------------------------------------------------- */

typedef struct {
    const char *from, *to, *identity, *table;
    strmap session_identity; /* session -> identity (strdup'ed) */
    strmap matched;          /* "session/stmt" of statements that passed the table filter */
    uint64_t count;
} export_ctx;

/* First pass of export: only connect records name the identity, so the
 * session -> identity map must exist before records are filtered. */
static bool collect_identity(void *arg, const audit_line *ln, const audit_parsed *p)
{
    (void)ln;
    export_ctx *x = arg;
    const char *sid = aj_get_str(p->root, "session"), *id = aj_get_str(p->root, "identity");
    if (strcmp(p->type, "connect") != 0 || !sid || !id)
        return true;
    char *copy = strdup(id);
    return copy && strmap_put(&x->session_identity, sid, copy);
}

/* "patients" matches "patients" and "public.patients", case-insensitively. */
static bool table_matches(const char *have, const char *want)
{
    if (!strcasecmp(have, want))
        return true;
    const char *dot = strrchr(have, '.');
    return dot && !strchr(want, '.') && !strcasecmp(dot + 1, want);
}

static bool statement_touches(const aj_value *rec, const char *table)
{
    const aj_value *t = aj_get(rec, "tables");
    for (const aj_value *e = t && t->type == AJ_ARRAY ? t->child : NULL; e; e = e->next)
        if (aj_text(e, NULL) && table_matches(aj_text(e, NULL), table))
            return true;
    return false;
}

static void stmt_key(char *out, size_t n, const char *sid, const aj_value *rec)
{
    uint64_t stmt = 0;
    if (!aj_get_u64(rec, "stmt", &stmt))
        stmt = 0;
    snprintf(out, n, "%s/%" PRIu64, sid, stmt);
}

/* The table filter keeps a statement and what belongs to it (its result,
 * approvals); records of no statement are dropped by it. */
static bool passes_table(export_ctx *x, const audit_parsed *p, const char *sid)
{
    char key[200];
    if (!x->table)
        return true;
    if (!sid || !aj_get(p->root, "stmt"))
        return false;
    stmt_key(key, sizeof key, sid, p->root);
    if (!strcmp(p->type, "statement")) {
        if (!statement_touches(p->root, x->table))
            return false;
        return strmap_put(&x->matched, key, (void *)1) || true;
    }
    return strmap_get(&x->matched, key) != NULL;
}

/* ts strings are fixed-width UTC, so string order is time order and a
 * prefix such as "2026-11-25" compares as that day's first instant. */
static bool passes(export_ctx *x, const audit_parsed *p)
{
    const char *sid = aj_get_str(p->root, "session");
    if (x->from && strcmp(p->ts, x->from) < 0)
        return false;
    if (x->to && strcmp(p->ts, x->to) >= 0)
        return false;
    if (x->identity) {
        const char *id = sid ? strmap_get(&x->session_identity, sid) : NULL;
        if (!id || strcmp(id, x->identity) != 0)
            return false;
    }
    return passes_table(x, p, sid);
}

static bool export_record(void *arg, const audit_line *ln, const audit_parsed *p)
{
    export_ctx *x = arg;
    if (!passes(x, p))
        return true;
    char hash[2 * AUDIT_SHA256_LEN + 1];
    audit_hex(p->hash, sizeof p->hash, hash);
    const char *base = strrchr(ln->path, '/');
    printf("%s\n  {\"file\":\"%s\",\"line\":%" PRIu64 ",\"sha256\":\"%s\",\"record\":", x->count ? "," : "",
           base ? base + 1 : ln->path, ln->lineno, hash);
    fwrite(ln->raw, 1, ln->len, stdout); /* verbatim: its hash is what the chain holds */
    printf("}");
    x->count++;
    return true;
}

static void json_out(const char *s)
{
    audit_buf b = {0};
    if (s)
        audit_buf_json_str(&b, s, strlen(s));
    fputs(s ? (b.p ? b.p : "\"\"") : "null", stdout);
    audit_buf_free(&b);
}

/* Evidence states whether the log it came from verified, and against which
 * key: an export of a broken log must say so in the file itself. */
static void export_header(const export_ctx *x, const char *src, const audit_verify_result *r, bool trusted)
{
    char now[40];
    time_t t = time(NULL);
    strftime(now, sizeof now, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    printf("{\"export\":{\"format\":\"phigate-audit-export-v1\",\"generated\":\"%s\",\"source\":", now);
    json_out(src);
    printf(",\n  \"filters\":{\"from\":");
    json_out(x->from);
    printf(",\"to\":");
    json_out(x->to);
    printf(",\"identity\":");
    json_out(x->identity);
    printf(",\"table\":");
    json_out(x->table);
    printf("},\n  \"verification\":{\"ok\":%s,\"trusted_key\":%s,\"records\":%" PRIu64 ",\"last_signed_seq\":%" PRIu64
           ",\"log_id\":",
           r->ok ? "true" : "false", trusted ? "true" : "false", r->records, r->last_signed_seq);
    json_out(r->log_id);
    printf(",\"key\":");
    json_out(r->key_fpr);
    printf(",\"first_bad\":");
    if (r->ok)
        printf("null");
    else {
        printf("{\"file\":");
        json_out(r->bad_file);
        printf(",\"line\":%" PRIu64 ",\"seq\":%" PRIu64 ",\"reason\":", r->bad_line, r->bad_seq);
        json_out(r->reason);
        printf("}");
    }
    printf("}},\n \"records\":[");
}

static void export_usage(FILE *f)
{
    fprintf(f, "Usage: phigatectl audit export [--from T] [--to T] [--identity X] [--table T] [--pubkey FILE] LOGDIR\n\n"
               "Writes JSON evidence to stdout: the verification result of the whole log, then every\n"
               "matching record verbatim with its file, line and SHA-256 (the next record's prev).\n\n"
               "  --from T      records with ts >= T (UTC, ISO 8601 prefix: 2026-11-25 or 2026-11-25T10:00)\n"
               "  --to T        records with ts < T\n"
               "  --identity X  records of sessions whose connect record names identity X\n"
               "  --table T     statements touching table T (\"patients\" or \"public.patients\"),\n"
               "                with their results and approvals\n"
               "  --pubkey FILE trusted public key for the verification part\n");
}

static int cmd_export(int argc, char **argv)
{
    static const struct option opts[] = {
        {"from", required_argument, 0, 'f'},     {"to", required_argument, 0, 't'},
        {"identity", required_argument, 0, 'i'}, {"table", required_argument, 0, 'T'},
        {"pubkey", required_argument, 0, 'k'},   {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    export_ctx x = {0};
    const char *pubpath = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "f:t:i:T:k:h", opts, NULL)) != -1) {
        switch (c) {
        case 'f': x.from = optarg; break;
        case 't': x.to = optarg; break;
        case 'i': x.identity = optarg; break;
        case 'T': x.table = optarg; break;
        case 'k': pubpath = optarg; break;
        default: export_usage(c == 'h' ? stdout : stderr); return c == 'h' ? 0 : 2;
        }
    }
    if (optind != argc - 1) {
        export_usage(stderr);
        return 2;
    }
    const char *const *paths = (const char *const *)argv + optind;
    audit_verify_opts vo = {.allow_unsigned_tail = true};
    if (pubpath && !(vo.pubkey = load_pub_or_die(pubpath)))
        return 2;
    audit_verify_result *r = malloc(sizeof *r);
    bool ok = r && for_each_record(paths, 1, collect_identity, &x);
    if (ok) {
        audit_verify(paths, 1, &vo, r);
        export_header(&x, paths[0], r, vo.pubkey != NULL);
        ok = for_each_record(paths, 1, export_record, &x);
        printf("\n]}\n");
        fprintf(stderr, "exported %" PRIu64 " records; log %s\n", x.count, r->ok ? "verified" : "NOT intact");
    }
    free(r);
    EVP_PKEY_free(vo.pubkey);
    strmap_free(&x.session_identity, true);
    strmap_free(&x.matched, false);
    return ok ? 0 : 2;
}

/* ---- dispatch --------------------------------------------------------- */

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *summary;
} subcommands[] = {
    {"verify", cmd_verify, "prove the hash chain and signatures; name the first bad record"},
    {"replay", cmd_audit_replay, "show one session statement by statement (text or HTML)"},
    {"export", cmd_export, "JSON evidence, filtered by time, identity or table"},
    {"sessions", cmd_sessions, "list the sessions in a log"},
    {"keygen", cmd_keygen, "create the Ed25519 signing key pair"},
};

static void audit_usage(FILE *f)
{
    fprintf(f, "Usage: phigatectl audit SUBCOMMAND [ARGS...]\n\nSubcommands:\n");
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        fprintf(f, "  %-9s %s\n", subcommands[i].name, subcommands[i].summary);
    fprintf(f, "\nphigatectl audit SUBCOMMAND --help shows its options.  The format is in gate/AUDIT_FORMAT.md.\n");
}

/* argv[0] is "audit" (phigatectl passes its argv from the command name on). */
int cmd_audit(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        audit_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        if (!strcmp(argv[1], subcommands[i].name))
            return subcommands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "phigatectl audit: unknown subcommand \"%s\"\n\n", argv[1]);
    audit_usage(stderr);
    return 2;
}
