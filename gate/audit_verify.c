/*
 * Audit log verification; see audit_verify.h and AUDIT_FORMAT.md.
 *
 * One pass over the lines in chain order.  Each line must be a record whose
 * seq is one more than the last and whose prev is the SHA-256 of the last
 * line's bytes; checkpoints must carry a valid Ed25519 signature.  When a
 * check fails, one line of look-behind and one of look-ahead tell which
 * record is to blame:
 *
 *   line:     j-2        j-1        j          j+1
 *   altered j-1:  ok  --X-- prev ok  ---- prev ok      blame j-1
 *   inserted j:   ok  ----- ok --X-- j.prev  --X--     j+1.prev == H(j-1): blame j
 *   removed:      seq jumps at j                        blame the missing seq at j
 *   swapped:      seq j+1 at j, seq j at j+1            blame j
 */
#include "gate/audit_verify.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gate/audit_read.h"

#define PROGRESS_EVERY 65536

typedef struct {
    const audit_verify_opts *o;
    audit_verify_result *res;
    audit_reader *rd;
    aj_arena arena, peek_arena;
    EVP_PKEY *key;
    bool own_key, started;
    bool require_genesis; /* a directory is a whole log; explicit files may be a later part */
    uint64_t expect; /* seq the next line must have */
    uint8_t head[AUDIT_SHA256_LEN], head_before[AUDIT_SHA256_LEN];
    char prev_path[PATH_MAX]; /* where the last accepted line is */
    uint64_t prev_line;
    uint64_t unsigned_count, first_unsigned_seq, first_unsigned_line;
    char first_unsigned_path[PATH_MAX];
} vstate;

static void warn(vstate *v, const char *file, uint64_t line, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void warn(vstate *v, const char *file, uint64_t line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (v->o->warn)
        v->o->warn(v->o->arg, file, line, msg);
}

/* Records the first bad record and stops the pass. */
static bool bad(vstate *v, const char *file, uint64_t line, uint64_t seq, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static bool bad(vstate *v, const char *file, uint64_t line, uint64_t seq, const char *fmt, ...)
{
    audit_verify_result *r = v->res;
    r->ok = false;
    snprintf(r->bad_file, sizeof r->bad_file, "%s", file);
    r->bad_line = line;
    r->bad_seq = seq;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->reason, sizeof r->reason, fmt, ap);
    va_end(ap);
    return false;
}

/* ---- keys and headers ------------------------------------------------- */

static bool adopt_key(vstate *v, const audit_line *ln, const audit_parsed *p)
{
    const char *fpr = aj_get_str(p->root, "key"), *pub = aj_get_str(p->root, "pubkey");
    const char *id = aj_get_str(p->root, "log_id");
    uint8_t raw[AUDIT_PUBKEY_LEN];
    char have[AUDIT_FPR_LEN];
    if (!fpr || !id || strlen(id) >= sizeof v->res->log_id || strlen(fpr) >= sizeof v->res->key_fpr)
        return bad(v, ln->path, ln->lineno, p->seq, "header record lacks log_id or key");
    snprintf(v->res->log_id, sizeof v->res->log_id, "%s", id);
    snprintf(v->res->key_fpr, sizeof v->res->key_fpr, "%s", fpr);
    if (v->o->pubkey) {
        v->key = v->o->pubkey;
        if (!audit_key_fingerprint(v->key, have) || strcmp(have, fpr) != 0)
            return bad(v, ln->path, ln->lineno, p->seq, "log is signed by key %s, not by the trusted key %s", fpr,
                       have);
        return true;
    }
    if (!audit_unhex(pub, raw, sizeof raw) || !(v->key = audit_key_from_raw(raw)))
        return bad(v, ln->path, ln->lineno, p->seq, "header record has no valid pubkey");
    v->own_key = true;
    if (!audit_key_fingerprint(v->key, have) || strcmp(have, fpr) != 0)
        return bad(v, ln->path, ln->lineno, p->seq, "pubkey does not match the key fingerprint %s", fpr);
    warn(v, ln->path, ln->lineno,
         "no trusted public key given (--pubkey): signatures are checked against the key the log names "
         "itself, which proves consistency, not authorship");
    return true;
}

static bool first_record(vstate *v, const audit_line *ln, const audit_parsed *p)
{
    bool genesis = strcmp(p->type, "genesis") == 0;
    if (!ln->first_in_file || (!genesis && strcmp(p->type, "file_start") != 0))
        return bad(v, ln->path, ln->lineno, p->seq, "the log does not begin with a genesis or file_start record");
    if (genesis && (p->seq != 0 || memcmp(p->prev, (uint8_t[AUDIT_SHA256_LEN]){0}, AUDIT_SHA256_LEN) != 0))
        return bad(v, ln->path, ln->lineno, p->seq, "genesis record must have seq 0 and a zero prev");
    if (!genesis && v->require_genesis)
        return bad(v, ln->path, ln->lineno, 0,
                   "the log directory does not begin with its genesis record: files before %s were removed "
                   "(give the remaining files explicitly to verify a pruned log)", ln->path);
    if (!genesis)
        warn(v, ln->path, ln->lineno,
             "chain starts at seq %" PRIu64 " (a later file): records before it were not given and are not checked",
             p->seq);
    memcpy(v->head, p->prev, sizeof v->head); /* the anchor we cannot check further back */
    v->expect = p->seq;
    v->started = true;
    v->res->first_seq = p->seq;
    return adopt_key(v, ln, p);
}

/* ---- diagnosis -------------------------------------------------------- */

static bool peek_parsed(vstate *v, audit_parsed *next)
{
    audit_line ln;
    char err[64];
    aj_arena_reset(&v->peek_arena);
    return audit_reader_peek(v->rd, &ln) && ln.has_nl &&
           audit_line_parse(&v->peek_arena, &ln, next, err, sizeof err);
}

static bool diagnose_seq(vstate *v, const audit_line *ln, const audit_parsed *p)
{
    audit_parsed next;
    if (p->seq + 1 == v->expect && memcmp(p->prev, v->head_before, sizeof v->head_before) == 0)
        return bad(v, v->prev_path, v->prev_line, p->seq,
                   "record was inserted: the next record (seq %" PRIu64 ") chains to the one before it", p->seq);
    if (p->seq < v->expect)
        return bad(v, ln->path, ln->lineno, v->expect,
                   "seq %" PRIu64 " where %" PRIu64 " was expected: record inserted, duplicated or moved", p->seq,
                   v->expect);
    if (peek_parsed(v, &next) && next.seq == v->expect)
        return bad(v, ln->path, ln->lineno, p->seq,
                   "records out of order: seq %" PRIu64 " comes before seq %" PRIu64, p->seq, v->expect);
    if (p->seq == v->expect + 1)
        return bad(v, ln->path, ln->lineno, v->expect,
                   "record seq %" PRIu64 " is missing before this line (removed)", v->expect);
    return bad(v, ln->path, ln->lineno, v->expect,
               "records seq %" PRIu64 "..%" PRIu64 " are missing before this line (removed)", v->expect,
               p->seq - 1);
}

static bool diagnose_prev(vstate *v, const audit_line *ln, const audit_parsed *p)
{
    audit_parsed next;
    bool have_next = peek_parsed(v, &next);
    if (have_next && next.seq == p->seq && memcmp(next.prev, v->head, sizeof v->head) == 0)
        return bad(v, ln->path, ln->lineno, p->seq,
                   "record was inserted: the next line continues the chain from the line before it");
    if (!have_next || memcmp(next.prev, p->hash, sizeof p->hash) == 0)
        return bad(v, v->prev_path, v->prev_line, p->seq - 1,
                   "record was altered: its bytes no longer hash to the prev stored in the next record%s",
                   have_next ? "" : " (or the next record's prev was altered)");
    return bad(v, ln->path, ln->lineno, p->seq, "record was altered: its prev does not match the previous record");
}

/* ---- per-record checks ------------------------------------------------ */

static bool check_checkpoint(vstate *v, const audit_line *ln, const audit_parsed *p)
{
    char msg[256];
    uint8_t sig[AUDIT_SIG_LEN];
    const char *id = aj_get_str(p->root, "log_id"), *key = aj_get_str(p->root, "key");
    if (!id || strcmp(id, v->res->log_id) != 0 || !key || strcmp(key, v->res->key_fpr) != 0)
        return bad(v, ln->path, ln->lineno, p->seq, "checkpoint names another log or key");
    size_t n = audit_checkpoint_message(msg, sizeof msg, id, p->seq, p->ts, aj_get_str(p->root, "prev"));
    if (!n || !audit_unhex(aj_get_str(p->root, "sig"), sig, sizeof sig) || !audit_sig_valid(v->key, msg, n, sig))
        return bad(v, ln->path, ln->lineno, p->seq, "checkpoint signature is invalid");
    v->res->checkpoints++;
    v->res->last_signed_seq = p->seq;
    v->unsigned_count = 0;
    return true;
}

/* File boundaries: each later file opens with file_start for the same log. */
static bool check_structure(vstate *v, const audit_line *ln, const audit_parsed *p)
{
    bool fs = strcmp(p->type, "file_start") == 0;
    if (strcmp(p->type, "genesis") == 0)
        return bad(v, ln->path, ln->lineno, p->seq, "a second genesis record");
    if (ln->first_in_file != fs)
        return bad(v, ln->path, ln->lineno, p->seq,
                   fs ? "file_start record in the middle of a file" : "file does not begin with a file_start record");
    const char *id = aj_get_str(p->root, "log_id");
    if (fs && (!id || strcmp(id, v->res->log_id) != 0))
        return bad(v, ln->path, ln->lineno, p->seq, "file belongs to another log");
    return true;
}

static void note_unsigned(vstate *v, const audit_line *ln, const audit_parsed *p)
{
    if (v->unsigned_count++ == 0) {
        v->first_unsigned_seq = p->seq;
        v->first_unsigned_line = ln->lineno;
        snprintf(v->first_unsigned_path, sizeof v->first_unsigned_path, "%s", ln->path);
    }
}

static bool check_type(vstate *v, const audit_line *ln, const audit_parsed *p)
{
    if (strcmp(p->type, "checkpoint") == 0)
        return check_checkpoint(v, ln, p);
    if (strcmp(p->type, "tail_sealed") == 0) {
        const char *why = aj_get_str(p->root, "reason"), *tf = aj_get_str(p->root, "torn_file");
        uint64_t bytes = 0;
        if (!aj_get_u64(p->root, "bytes", &bytes))
            bytes = 0;
        v->res->sealed_tails++;
        warn(v, ln->path, ln->lineno, "seq %" PRIu64 ": phigate sealed a torn tail at restart: %" PRIu64
             " bytes moved to %s (%s)", p->seq, bytes, tf ? tf : "?", why ? why : "?");
    }
    note_unsigned(v, ln, p);
    return true;
}

static bool check_line(vstate *v, const audit_line *ln)
{
    audit_parsed p;
    char err[160];
    if (!ln->has_nl)
        return bad(v, ln->path, ln->lineno, v->expect,
                   "record is cut short (no final newline): the log was truncated or torn here");
    aj_arena_reset(&v->arena);
    if (!audit_line_parse(&v->arena, ln, &p, err, sizeof err))
        return bad(v, ln->path, ln->lineno, v->expect, "not a valid record (%s): altered or corrupted", err);
    if (!v->started) {
        if (!first_record(v, ln, &p))
            return false;
    } else if (p.seq != v->expect) {
        return diagnose_seq(v, ln, &p);
    } else if (memcmp(p.prev, v->head, sizeof v->head) != 0) {
        return diagnose_prev(v, ln, &p);
    } else if (!check_structure(v, ln, &p)) {
        return false;
    }
    if (!check_type(v, ln, &p))
        return false;
    memcpy(v->head_before, v->head, sizeof v->head);
    memcpy(v->head, p.hash, sizeof v->head);
    v->expect = p.seq + 1;
    v->res->last_seq = p.seq;
    v->res->records++;
    snprintf(v->prev_path, sizeof v->prev_path, "%s", ln->path);
    v->prev_line = ln->lineno;
    return true;
}

/* ---- the pass --------------------------------------------------------- */

static bool finish(vstate *v)
{
    if (!v->started)
        return bad(v, "", 0, 0, "no records");
    if (!v->unsigned_count)
        return true;
    if (v->o->allow_unsigned_tail) {
        warn(v, v->first_unsigned_path, v->first_unsigned_line,
             "the last %" PRIu64 " records (seq %" PRIu64 "..%" PRIu64 ") are not yet covered by a checkpoint",
             v->unsigned_count, v->first_unsigned_seq, v->res->last_seq);
        return true;
    }
    return bad(v, v->first_unsigned_path, v->first_unsigned_line, v->first_unsigned_seq,
               "the last %" PRIu64 " records (seq %" PRIu64 "..%" PRIu64 ") are not covered by a signed checkpoint: "
               "the log was cut after its last checkpoint, or is still being written",
               v->unsigned_count, v->first_unsigned_seq, v->res->last_seq);
}

static void progress(vstate *v)
{
    if (v->o->progress && v->res->records % PROGRESS_EVERY == 0)
        v->o->progress(v->o->arg, audit_reader_done_bytes(v->rd), audit_reader_total_bytes(v->rd), v->res->records);
}

bool audit_verify(const char *const *paths, size_t n, const audit_verify_opts *o, audit_verify_result *res)
{
    struct stat st;
    vstate v = {.o = o, .res = res, .require_genesis = n && stat(paths[0], &st) == 0 && S_ISDIR(st.st_mode)};
    memset(res, 0, sizeof *res);
    res->ok = true;
    char err[512];
    v.rd = audit_reader_open(paths, n, err, sizeof err);
    if (!v.rd)
        return bad(&v, n ? paths[0] : "", 0, 0, "%s", err);
    res->files = audit_reader_file_count(v.rd);
    audit_line ln;
    bool ok = true;
    while (ok && audit_reader_next(v.rd, &ln)) {
        ok = check_line(&v, &ln);
        progress(&v);
    }
    if (ok && audit_reader_error(v.rd))
        ok = bad(&v, "", 0, v.expect, "%s", audit_reader_error(v.rd));
    if (ok)
        ok = finish(&v);
    audit_reader_close(v.rd);
    aj_arena_free(&v.arena);
    aj_arena_free(&v.peek_arena);
    if (v.own_key)
        EVP_PKEY_free(v.key);
    return ok;
}
