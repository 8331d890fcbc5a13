/*
 * The command phase: one client command at a time, its response relayed with
 * every packet boundary and sequence id checked.
 *
 * MySQL is strictly request / response, so the relay keeps one response state
 * (myr_state) for the command in flight; commands a client sends early wait in
 * its input buffer (bounded: reading stops past client_buffer_bytes).
 *
 *   COM_QUERY / COM_STMT_EXECUTE response:
 *
 *     +--------+   +----------+   +----------------+   +-----+   +------+   +-----------+
 *     | OK/ERR |   | col count|-->| N column defs  |-->[ EOF ]-->| rows |-->| EOF or OK |--+
 *     +--------+   +----------+   +----------------+   +-----+   +------+   +-----------+  |
 *        |  MYR_RESULT              MYR_COLUMNS    MYR_COLUMNS_EOF  MYR_ROWS              |
 *        '-- SERVER_MORE_RESULTS_EXISTS in the status: back to MYR_RESULT <----------------'
 *     ([EOF] only without CLIENT_DEPRECATE_EOF, which client and upstream agree on.)
 *
 * Rows that need no masking move in runs: headers are read in place and a run
 * of whole (or partial) packets moves with one evbuffer_remove_buffer, so a
 * row is never copied and a 16 MB row never has to be in memory at once.
 * Everything else (OK, ERR, EOF, column definitions, prepare answers, rows of
 * a result with an unmasked PHI column) is looked at whole, bounded by
 * limits.max_message_bytes.
 *
 * Backpressure: past client_buffer_bytes of unsent output to the client we
 * stop reading the upstream until it drains to half; the same the other way.
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gate/conn.h"
#include "gate/log.h"
#include "gate/min_necessary.h"
#include "myfront/my_audit.h"
#include "myfront/my_hold.h"
#include "myfront/my_minnec.h"
#include "myfront/my_policy.h"
#include "myfront/my_session.h"

#define MAX_RESULT_COLUMNS 4096 /* MySQL's own limit on a table's columns */
#define CURSOR_TYPE_MASK 0x07   /* READ_ONLY | FOR_UPDATE | SCROLLABLE in COM_STMT_EXECUTE flags */
#define REFUSED_SQLSTATE "42000"
#define ER_NOT_SUPPORTED_YET 1235
#define ER_MAX_PREPARED_STMT_COUNT 1461
#define ER_WRONG_DB_NAME 1102

static size_t buffer_limit(const my_session *s)
{
    return (size_t)my_server_config(s->server)->client_buffer_bytes;
}

static uint64_t packet_max(const my_session *s)
{
    return (uint64_t)my_server_config(s->server)->max_message_bytes;
}

static bool deprecate_eof(const my_session *s) { return (s->up_caps & MY_CAP(DEPRECATE_EOF)) != 0; }

static void set_rstate(my_session *s, myr_state st)
{
    if (st != s->rstate)
        my_session_log(s, LOG_LEVEL_DEBUG, "response %s -> %s", myr_state_name(s->rstate), myr_state_name(st));
    s->rstate = st;
}

void my_relay_start(my_session *s)
{
    /* The login's OK, with the upstream's status (autocommit, transaction). */
    uint16_t status = s->up_status & (uint16_t)~MY_STATUS_SESSION_STATE_CHANGED;
    my_put_ok(conn_output(s->client), s->seq, 0x00, 0, 0, status, 0, NULL, 0);
    event_del(s->timer);
    my_session_set_state(s, MYC_ACTIVE);
    set_rstate(s, MYR_IDLE);
    my_audit_connect(s);
    conn_read_enable(s->client);
    /* Wake the paused side when its peer's output has drained to half the limit. */
    conn_set_low_watermark(s->client, buffer_limit(s) / 2);
    conn_set_low_watermark(s->upstream, buffer_limit(s) / 2);
    my_session_log(s, LOG_LEVEL_INFO, "session open to upstream %s%s", s->up->name,
                   s->upstream_tls ? " over TLS" : "");
    my_relay_client_data(s); /* a command pipelined behind authentication */
}

void my_relay_free(my_session *s)
{
    if (s->held_ok)
        evbuffer_free(s->held_ok);
    s->held_ok = NULL;
}

/* ---- whole logical packets at the head of a buffer ------------------------------ */

typedef struct chain_info {
    size_t wire;        /* bytes on the wire, headers included */
    uint64_t payload;   /* payload bytes */
    uint32_t npackets;
    uint8_t last_seq;
} chain_info;

/* 1: complete; 0: need more; -2: claims more than max; -3: sequence id out of order. */
static int peek_chain(struct evbuffer *in, uint64_t max, uint8_t seq, chain_info *ci)
{
    size_t avail = evbuffer_get_length(in);
    my_chain ch;
    my_chain_init(&ch, max, true, seq);
    memset(ci, 0, sizeof *ci);
    for (;;) {
        uint8_t hdr[MY_HEADER_LEN];
        if (avail - ci->wire < MY_HEADER_LEN)
            return 0;
        struct evbuffer_ptr at;
        evbuffer_ptr_set(in, &at, ci->wire, EVBUFFER_PTR_SET);
        evbuffer_copyout_from(in, &at, hdr, sizeof hdr);
        my_chain_result r = my_chain_step(&ch, hdr);
        if (r == MY_CHAIN_TOO_LONG)
            return -2;
        if (r == MY_CHAIN_BAD_SEQ)
            return -3;
        uint32_t len;
        my_parse_header(hdr, &len, &ci->last_seq);
        ci->wire += MY_HEADER_LEN + len;
        if (avail < ci->wire)
            return 0;
        if (r == MY_CHAIN_DONE)
            break;
    }
    ci->payload = ch.payload;
    ci->npackets = ch.npackets;
    return 1;
}

/* The payload of a complete chain at the head of in: in place for one packet,
 * a copy (*owned, to free) for a continued one. */
static const uint8_t *chain_payload(struct evbuffer *in, const chain_info *ci, uint8_t **owned)
{
    *owned = NULL;
    if (ci->npackets == 1)
        return evbuffer_pullup(in, (ev_ssize_t)ci->wire) + MY_HEADER_LEN;
    uint8_t *w = malloc(ci->wire);
    evbuffer_copyout(in, w, ci->wire);
    *owned = malloc(ci->payload ? ci->payload : 1);
    my_chain_payload(w, ci->wire, *owned);
    free(w);
    return *owned;
}

/* ---- refusals ---------------------------------------------------------------------- */

void my_relay_refuse(my_session *s, uint16_t code, const char *sqlstate, const char *message)
{
    struct evbuffer *out = conn_output(s->client);
    size_t before = evbuffer_get_length(out);
    char name[12];
    my_session_log(s, LOG_LEVEL_INFO, "refused %s: %s", my_command_name(s->command, name), message);
    my_put_err(out, s->cseq, code, sqlstate, message);
    if (my_audit_tracking(s)) {
        my_audit_agent_bytes(s, out, before, evbuffer_get_length(out) - before);
        my_audit_error(s, sqlstate, message, strlen(message));
        my_audit_end(s);
    }
}

static void refuse_fmt(my_session *s, uint16_t code, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void refuse_fmt(my_session *s, uint16_t code, const char *sqlstate, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    my_relay_refuse(s, code, sqlstate, msg);
}

/* ---- client -> upstream ------------------------------------------------------------ */

static void pause_client(my_session *s)
{
    if (!s->client_paused) {
        conn_read_disable(s->client);
        s->client_paused = true;
    }
}

/* Reading the client resumes once the upstream took its output and no
 * command's response is pending with a full input queue behind it. */
static void resume_client(my_session *s)
{
    if (!s->client_paused || s->state != MYC_ACTIVE || my_hold_waiting(s) || my_minnec_pending(s))
        return;
    if (evbuffer_get_length(conn_output(s->upstream)) > buffer_limit(s))
        return;
    if (s->rstate != MYR_IDLE && evbuffer_get_length(conn_input(s->client)) > buffer_limit(s))
        return;
    s->client_paused = false;
    conn_read_enable(s->client);
}

void my_relay_upstream_drained(my_session *s)
{
    if (!s->client_paused)
        return;
    resume_client(s);
    my_relay_client_data(s);
}

static void forward(my_session *s, const chain_info *ci, myr_state next)
{
    evbuffer_remove_buffer(conn_input(s->client), conn_output(s->upstream), ci->wire);
    set_rstate(s, next);
}

static void drop(my_session *s, const chain_info *ci)
{
    evbuffer_drain(conn_input(s->client), ci->wire);
}

static void refuse_decision(my_session *s, const sqlp_decision *d)
{
    if (d->verdict == SQLP_HOLD)
        refuse_fmt(s, MY_ER_TABLEACCESS_DENIED, REFUSED_SQLSTATE,
                   "statement held for approval (rule %s): %s; approvals are not enabled for this phigate "
                   "session, so it is refused: narrow it with a selective WHERE or a small LIMIT",
                   d->rule ? d->rule : "?", d->reason ? d->reason : "");
    else
        refuse_fmt(s, MY_ER_TABLEACCESS_DENIED, REFUSED_SQLSTATE, "statement refused by phigate (rule %s): %s",
                   d->rule ? d->rule : "?", d->reason ? d->reason : "");
}

static void decided(my_session *s, const chain_info *ci, const char *sql, size_t len, sqlp_decision *d,
                    const minnec_outcome *mn);

/* COM_QUERY and COM_STMT_PREPARE: every text goes through the engine. */
static void statement(my_session *s, const chain_info *ci, const uint8_t *text, size_t len)
{
    uint8_t cmd = s->command;
    const char *sql = (const char *)text;
    const char *down = my_audit_unavailable(s);
    if (down) {
        /* Fail closed: nothing runs that the audit log cannot record. */
        drop(s, ci);
        refuse_fmt(s, MY_ER_UNKNOWN_ERROR, "HY000", "phigate refuses statements: %s", down);
        return;
    }
    if (cmd == MY_COM_STMT_PREPARE && my_policy_statement_table_full(s)) {
        drop(s, ci);
        refuse_fmt(s, ER_MAX_PREPARED_STMT_COUNT, REFUSED_SQLSTATE,
                   "phigate keeps at most %d prepared statements per session: close some (COM_STMT_CLOSE)",
                   MY_MAX_STATEMENTS);
        return;
    }
    sqlp_decision *d = my_policy_decide(s, sql, len);
    /* A one-packet command waits for an approval (recorded when the outcome is known). */
    if (d->verdict == SQLP_HOLD && ci->npackets == 1 && my_hold_start(s, ci->wire, sql, len, d, NULL))
        return;
    bool refused = d->verdict != SQLP_ALLOW && d->verdict != SQLP_REWRITE;
    /* A PHI read waits for its estimate / budget checks first (my_minnec.c). */
    if (!refused && my_minnec_start(s, ci->wire, ci->npackets, sql, len, d))
        return;
    decided(s, ci, sql, len, d, NULL);
}

/* An allowed or refused decision d (taken over) of the command at the head of
 * the client's input; mn: its minimum-necessary checks, when they ran. */
static void decided(my_session *s, const chain_info *ci, const char *sql, size_t len, sqlp_decision *d,
                    const minnec_outcome *mn)
{
    uint8_t cmd = s->command;
    bool refused = d->verdict != SQLP_ALLOW && d->verdict != SQLP_REWRITE;
    /* Queries are recorded now; a PREPARE at each EXECUTE, or now if it is refused. */
    if (cmd == MY_COM_QUERY || refused)
        my_audit_statement(s, sql, len, d, NULL, NULL, 0, NULL, mn);
    if (refused) {
        drop(s, ci);
        refuse_decision(s, d);
        sqlp_decision_free(d);
        return;
    }
    s->scrub_errors = d->touches_phi;
    s->count_phi_rows = cmd == MY_COM_QUERY && minnec_phi_read(d);
    myr_state next = cmd == MY_COM_QUERY ? MYR_RESULT : MYR_PREPARE;
    /* The rewrite must keep the one-packet shape, so the response ids line up. */
    if (d->verdict == SQLP_REWRITE && (ci->npackets != 1 || d->upstream_len + 1 >= MY_MAX_PACKET)) {
        drop(s, ci);
        my_relay_refuse(s, MY_ER_TABLEACCESS_DENIED, REFUSED_SQLSTATE,
                        "statement refused by phigate: its masked form is too long");
        sqlp_decision_free(d);
        return;
    }
    /* Kept before the packet that sql points into moves on. */
    bool rewrite = d->verdict == SQLP_REWRITE;
    if (cmd == MY_COM_STMT_PREPARE)
        my_policy_prepare_sent(s, sql, len, d, NULL); /* keeps the reference */
    if (rewrite) {
        uint8_t *p = malloc(d->upstream_len + 1);
        p[0] = cmd;
        memcpy(p + 1, d->upstream_sql, d->upstream_len);
        drop(s, ci);
        my_put_packet(conn_output(s->upstream), 0, p, d->upstream_len + 1);
        free(p);
        set_rstate(s, next);
        my_session_log(s, LOG_LEVEL_DEBUG, "statement rewritten to mask PHI");
    } else {
        forward(s, ci, next);
    }
    s->binary_rows = false;
    if (cmd != MY_COM_STMT_PREPARE)
        sqlp_decision_free(d);
}

/* ---- checked and held statements (my_minnec.c, my_hold.c) ---------------------------- */

void my_relay_run_checked(my_session *s, size_t wire, uint32_t npackets, const char *sql, size_t len,
                          sqlp_decision *d, const minnec_outcome *mn)
{
    chain_info ci = {.wire = wire, .npackets = npackets};
    decided(s, &ci, sql, len, d, mn);
}

void my_relay_run_approved(my_session *s, size_t wire, const char *sql, size_t len, sqlp_decision *d,
                           const char *text, const char *approval_id, const minnec_outcome *mn)
{
    uint8_t cmd = s->command;
    size_t tlen = text ? strlen(text) : 0;
    if (!text || tlen + 1 >= MY_MAX_PACKET) {
        my_relay_refuse_held(s, wire, sql, len, d, mn, MY_ER_UNKNOWN_ERROR, "HY000",
                             text ? "statement approved, but with the approval's row cap it is too long"
                                  : "out of memory applying the approval's row cap");
        sqlp_decision_free(d);
        return;
    }
    /* Queries are recorded now; a PREPARE at each EXECUTE, with the approval's id. */
    if (cmd == MY_COM_QUERY)
        my_audit_statement(s, sql, len, d, NULL, NULL, 0, approval_id, mn);
    s->scrub_errors = d->touches_phi;
    s->count_phi_rows = cmd == MY_COM_QUERY && minnec_phi_read(d);
    s->binary_rows = false;
    evbuffer_drain(conn_input(s->client), wire);
    uint8_t *p = malloc(tlen + 1);
    p[0] = cmd;
    memcpy(p + 1, text, tlen);
    my_put_packet(conn_output(s->upstream), 0, p, tlen + 1);
    free(p);
    if (cmd == MY_COM_STMT_PREPARE)
        my_policy_prepare_sent(s, sql, len, d, approval_id); /* keeps the reference */
    else
        sqlp_decision_free(d);
    set_rstate(s, cmd == MY_COM_QUERY ? MYR_RESULT : MYR_PREPARE);
}

void my_relay_refuse_held(my_session *s, size_t wire, const char *sql, size_t len, const sqlp_decision *d,
                          const minnec_outcome *mn, uint16_t code, const char *sqlstate, const char *message)
{
    my_audit_statement(s, sql, len, d, NULL, NULL, 0, NULL, mn);
    evbuffer_drain(conn_input(s->client), wire);
    my_relay_refuse(s, code, sqlstate, message);
}

void my_relay_resume(my_session *s)
{
    if (s->state != MYC_ACTIVE)
        return;
    resume_client(s);
    my_relay_client_data(s);
    my_session_flush(s);
}

static bool same_server(const cfg_upstream *a, const cfg_upstream *b)
{
    return strcmp(a->host, b->host) == 0 && a->port == b->port && strcmp(a->user, b->user) == 0 &&
           a->tls_mode == b->tls_mode;
}

/* COM_INIT_DB: only to databases the role may use, each an upstream by name. */
static void init_db(my_session *s, const chain_info *ci, const uint8_t *name, size_t len)
{
    char db[MY_MAX_DB];
    if (len == 0 || len >= sizeof db || memchr(name, 0, len)) {
        drop(s, ci);
        my_relay_refuse(s, ER_WRONG_DB_NAME, REFUSED_SQLSTATE, "Incorrect database name");
        return;
    }
    memcpy(db, name, len);
    db[len] = '\0';
    char why[300];
    uint16_t code;
    const cfg_upstream *to = my_upstream_for(s, db, &code, why, sizeof why);
    char text[MY_MAX_DB + 32];
    int tlen = snprintf(text, sizeof text, "/* COM_INIT_DB */ USE `%s`", db);
    drop(s, ci);
    if (!to) {
        my_audit_statement(s, text, (size_t)tlen, NULL, why, NULL, 0, NULL, NULL);
        my_relay_refuse(s, code, REFUSED_SQLSTATE, why);
        return;
    }
    if (to != s->up && !same_server(to, s->up)) {
        snprintf(why, sizeof why, "phigate cannot switch to database '%.64s': it is served by another server; "
                 "reconnect with it as the database", db);
        my_audit_statement(s, text, (size_t)tlen, NULL, why, NULL, 0, NULL, NULL);
        my_relay_refuse(s, MY_ER_DBACCESS_DENIED, REFUSED_SQLSTATE, why);
        return;
    }
    char err[512];
    sqlp_engine *e = my_server_engine(s->server, (int)(to - my_server_config(s->server)->upstreams), err, sizeof err);
    if (!e) {
        my_session_log(s, LOG_LEVEL_ERROR, "%s", err);
        snprintf(why, sizeof why, "phigate cannot analyse statements for database '%.64s': its catalog is not loaded",
                 db);
        my_audit_statement(s, text, (size_t)tlen, NULL, why, NULL, 0, NULL, NULL);
        my_relay_refuse(s, MY_ER_UNKNOWN_ERROR, "HY000", why);
        return;
    }
    sqlp_engine_unref(e);
    my_audit_statement(s, text, (size_t)tlen, NULL, NULL, NULL, 0, NULL, NULL);
    /* The upstream's own name for the database, which may differ from phigate's. */
    size_t dl = strlen(to->database);
    uint8_t *p = malloc(dl + 1);
    p[0] = MY_COM_INIT_DB;
    memcpy(p + 1, to->database, dl);
    my_put_packet(conn_output(s->upstream), 0, p, dl + 1);
    free(p);
    s->switch_to = to;
    set_rstate(s, MYR_SIMPLE);
}

/* COM_STMT_EXECUTE: stmt id, flags, iteration count, then the parameters:
 *   null bitmap ((n+7)/8) | new-params-bound u8 | [types n x 2] | values */
static size_t execute_params(my_session *s, my_stmt *st, my_cursor *c, audit_param *params, char (*tokens)[32],
                             size_t max)
{
    size_t n = st->nparams < max ? st->nparams : max;
    const uint8_t *nulls, *types;
    uint8_t bound;
    if (st->nparams == 0)
        return 0;
    if (!my_get_bytes(c, ((size_t)st->nparams + 7) / 8, &nulls) || !my_get_u8(c, &bound))
        return 0;
    if (bound == 1) {
        if (!my_get_bytes(c, (size_t)st->nparams * 2, &types))
            return 0;
        memcpy(st->types, types, (size_t)st->nparams * 2);
        st->types_known = true;
    }
    for (size_t i = 0; i < n; i++) {
        bool is_null = nulls[i / 8] & (1u << (i % 8));
        bool long_data = st->long_data[i / 8] & (1u << (i % 8));
        if (is_null) {
            params[i] = (audit_param){NULL, 0};
            continue;
        }
        if (long_data) {
            params[i] = (audit_param){"(long data)", 11};
            continue;
        }
        size_t start = c->pos;
        if (!st->types_known || !my_skip_binary_value(c, st->types[2 * i])) {
            params[i] = (audit_param){"(unparsed)", 10};
            for (size_t j = i + 1; j < n; j++)
                params[j] = (audit_param){"(unparsed)", 10};
            return n;
        }
        my_audit_param_token(s, c->data + start, c->pos - start, tokens[i]);
        params[i] = (audit_param){tokens[i], strlen(tokens[i])};
    }
    return n;
}

static void execute(my_session *s, const chain_info *ci, const uint8_t *p, size_t len)
{
    my_cursor c;
    uint32_t id, iterations;
    uint8_t flags;
    my_cursor_init(&c, p + 1, len - 1);
    if (!my_get_u32(&c, &id) || !my_get_u8(&c, &flags) || !my_get_u32(&c, &iterations)) {
        drop(s, ci);
        my_relay_refuse(s, MY_ER_MALFORMED_PACKET, "HY000", "Malformed communication packet");
        return;
    }
    my_stmt *st = my_policy_stmt(s, id);
    if (!st) {
        drop(s, ci);
        refuse_fmt(s, MY_ER_UNKNOWN_STMT_HANDLER, "HY000",
                   "Unknown prepared statement handler (%u) given to mysqld_stmt_execute", id);
        return;
    }
    if (flags & CURSOR_TYPE_MASK) {
        drop(s, ci);
        my_relay_refuse(s, ER_NOT_SUPPORTED_YET, REFUSED_SQLSTATE,
                        "phigate does not support server-side cursors: execute without a cursor type");
        return;
    }
    const char *down = my_audit_unavailable(s);
    if (down) {
        drop(s, ci);
        refuse_fmt(s, MY_ER_UNKNOWN_ERROR, "HY000", "phigate refuses statements: %s", down);
        return;
    }
    /* A PHI read counts against the identity's budget: checked first (my_minnec.c). */
    minnec_outcome *mn = s->exec_checked;
    s->exec_checked = NULL;
    if (!mn && my_minnec_execute_start(s, ci->wire, st))
        return;
    audit_param params[256];
    char tokens[256][32];
    size_t np = execute_params(s, st, &c, params, tokens, 256);
    my_audit_statement(s, st->text, strlen(st->text), st->d, NULL, params, np, st->approval_id, mn);
    free(mn);
    /* Long data is consumed by the execution it was sent for. */
    memset(st->long_data, 0, ((size_t)st->nparams + 7) / 8 + 1);
    s->scrub_errors = st->d->touches_phi;
    s->count_phi_rows = minnec_phi_read(st->d);
    s->binary_rows = true;
    forward(s, ci, MYR_RESULT);
}

static void stmt_command(my_session *s, const chain_info *ci, const uint8_t *p, size_t len)
{
    my_cursor c;
    uint32_t id;
    my_cursor_init(&c, p + 1, len - 1);
    bool have_id = my_get_u32(&c, &id);
    my_stmt *st = have_id ? my_policy_stmt(s, id) : NULL;
    switch (s->command) {
    case MY_COM_STMT_CLOSE:
        /* No response either way; the upstream forgets it too. */
        if (st)
            my_policy_stmt_close(s, id);
        forward(s, ci, MYR_IDLE);
        return;
    case MY_COM_STMT_SEND_LONG_DATA: {
        uint16_t param;
        /* No response: an unknown statement or parameter is dropped, and the
         * EXECUTE that would use it fails as the server would fail it. */
        if (!st || !my_get_u16(&c, &param) || param >= st->nparams) {
            drop(s, ci);
            return;
        }
        st->long_data[param / 8] |= (uint8_t)(1u << (param % 8));
        forward(s, ci, MYR_IDLE);
        return;
    }
    default: /* COM_STMT_RESET */
        if (!st) {
            drop(s, ci);
            refuse_fmt(s, MY_ER_UNKNOWN_STMT_HANDLER, "HY000",
                       "Unknown prepared statement handler (%u) given to mysqld_stmt_reset", have_id ? id : 0);
            return;
        }
        memset(st->long_data, 0, ((size_t)st->nparams + 7) / 8 + 1);
        forward(s, ci, MYR_SIMPLE);
        return;
    }
}

static bool command_refused(uint8_t cmd, const char **why)
{
    switch (cmd) {
    case MY_COM_CHANGE_USER:
        *why = "phigate refuses COM_CHANGE_USER: open a new connection as the other identity";
        return true;
    case MY_COM_FIELD_LIST:
        *why = "phigate refuses COM_FIELD_LIST: query information_schema.columns instead";
        return true;
    case MY_COM_STMT_FETCH:
        *why = "phigate does not support server-side cursors (COM_STMT_FETCH)";
        return true;
    case MY_COM_SLEEP: case MY_COM_CREATE_DB: case MY_COM_DROP_DB: case MY_COM_REFRESH: case MY_COM_SHUTDOWN:
    case MY_COM_STATISTICS: case MY_COM_PROCESS_INFO: case MY_COM_CONNECT: case MY_COM_PROCESS_KILL:
    case MY_COM_DEBUG: case MY_COM_TIME: case MY_COM_DELAYED_INSERT: case MY_COM_BINLOG_DUMP:
    case MY_COM_TABLE_DUMP: case MY_COM_CONNECT_OUT: case MY_COM_REGISTER_SLAVE: case MY_COM_DAEMON:
    case MY_COM_BINLOG_DUMP_GTID: case MY_COM_STMT_BULK_EXECUTE:
        /* Administrative and replication commands bypass SQL, so the policy engine. */
        *why = "phigate refuses this command: it bypasses SQL and so phigate's policy; use SQL statements";
        return true;
    default:
        return false;
    }
}

/* statements_per_second: refused in order, the session goes on. */
static bool rate_limited(my_session *s, const chain_info *ci)
{
    if (my_session_take_statement_token(s))
        return false;
    drop(s, ci);
    refuse_fmt(s, 1226, REFUSED_SQLSTATE, "statement rate limit exceeded for identity '%.64s' (%d per second)",
               s->user, s->identity->statements_per_second);
    return true;
}

static void handle_command(my_session *s, const chain_info *ci)
{
    struct evbuffer *in = conn_input(s->client);
    uint8_t *owned;
    const uint8_t *p = chain_payload(in, ci, &owned);
    size_t len = (size_t)ci->payload;
    char name[12];
    if (len == 0) {
        free(owned);
        my_session_fail(s, MY_ER_UNKNOWN_COM, "08S01", "empty command packet");
        return;
    }
    const char *why;
    s->command = p[0];
    switch (p[0]) {
    case MY_COM_QUIT:
        drop(s, ci);
        my_session_close(s, "client sent COM_QUIT");
        break;
    case MY_COM_QUERY:
    case MY_COM_STMT_PREPARE:
        if (rate_limited(s, ci))
            break;
        statement(s, ci, p + 1, len - 1);
        break;
    case MY_COM_INIT_DB:
        init_db(s, ci, p + 1, len - 1);
        break;
    case MY_COM_PING:
    case MY_COM_SET_OPTION:
    case MY_COM_RESET_CONNECTION:
        forward(s, ci, MYR_SIMPLE);
        break;
    case MY_COM_STMT_EXECUTE:
        /* Once its budget check passed it comes by again: the token was taken then. */
        if (!s->exec_checked && rate_limited(s, ci))
            break;
        execute(s, ci, p, len);
        break;
    case MY_COM_STMT_CLOSE:
    case MY_COM_STMT_RESET:
    case MY_COM_STMT_SEND_LONG_DATA:
        stmt_command(s, ci, p, len);
        break;
    default:
        if (command_refused(p[0], &why)) {
            drop(s, ci);
            my_relay_refuse(s, ER_NOT_SUPPORTED_YET, REFUSED_SQLSTATE, why);
            break;
        }
        /* Unknown means refuse, and a client speaking a protocol we do not know goes. */
        my_session_log(s, LOG_LEVEL_WARN, "unknown command %s", my_command_name(p[0], name));
        drop(s, ci);
        my_session_fail(s, MY_ER_UNKNOWN_COM, "08S01", "Unknown command");
        break;
    }
    free(owned);
}

void my_relay_client_data(my_session *s)
{
    struct evbuffer *in = conn_input(s->client);
    while (s->state == MYC_ACTIVE && s->rstate == MYR_IDLE && !s->client_paused && !my_hold_waiting(s) &&
           !my_minnec_pending(s)) {
        if (evbuffer_get_length(in) == 0)
            break;
        chain_info ci;
        int r = peek_chain(in, packet_max(s), 0, &ci);
        if (r == 0)
            break;
        if (r < 0) {
            char msg[200];
            if (r == -2)
                snprintf(msg, sizeof msg, "Got a packet bigger than phigate's limits.max_message_bytes (%llu bytes)",
                         (unsigned long long)packet_max(s));
            s->cseq = 1;
            my_session_fail(s, r == -2 ? MY_ER_NET_PACKET_TOO_LARGE : MY_ER_NET_PACKETS_OUT_OF_ORDER, "08S01",
                            r == -2 ? msg : "Got packets out of order");
            return;
        }
        /* Responses continue the command's ids; phigate's own answers too. */
        s->cseq = s->useq = (uint8_t)(ci.last_seq + 1);
        handle_command(s, &ci);
        if (s->state == MYC_ACTIVE && evbuffer_get_length(conn_output(s->upstream)) > buffer_limit(s))
            pause_client(s);
    }
    /* A command in flight or held: bytes queued behind it are bounded too. */
    if (s->state == MYC_ACTIVE && (s->rstate != MYR_IDLE || my_hold_waiting(s) || my_minnec_pending(s)) &&
        evbuffer_get_length(in) > buffer_limit(s))
        pause_client(s);
}

/* ---- upstream -> client ------------------------------------------------------------ */

static void upstream_violation(my_session *s, const char *what, const uint8_t *p, size_t len)
{
    char hex[64] = "";
    for (size_t i = 0; p && i < len && i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", p[i]);
    my_session_log(s, LOG_LEVEL_WARN, "upstream protocol violation in %s: %s (payload starts %s)",
                   myr_state_name(s->rstate), what, hex);
    my_session_fail(s, MY_ER_UNKNOWN_ERROR, "HY000", "phigate: protocol violation from the upstream database");
}

static void pause_upstream_if_full(my_session *s)
{
    if (s->state == MYC_ACTIVE && evbuffer_get_length(conn_output(s->client)) > buffer_limit(s)) {
        conn_read_disable(s->upstream);
        s->upstream_paused = true;
    }
}

void my_relay_client_drained(my_session *s)
{
    if (!s->upstream_paused)
        return;
    s->upstream_paused = false;
    if (!s->audit_held)
        conn_read_enable(s->upstream);
    my_relay_upstream_data(s);
}

/* While waiting for the audit log, stop reading once a buffer's worth is held. */
static void hold_for_audit(my_session *s, struct evbuffer *in)
{
    if (evbuffer_get_length(in) > buffer_limit(s) && !s->audit_held) {
        conn_read_disable(s->upstream);
        s->audit_held = true;
    }
}

void my_relay_audit_released(my_session *s)
{
    if (s->audit_held) {
        s->audit_held = false;
        if (!s->upstream_paused)
            conn_read_enable(s->upstream);
    }
    my_relay_upstream_data(s);
}

/* Bytes at the head of the upstream input go to the client as they are. */
static void emit_unchanged(my_session *s, size_t wire, uint8_t last_seq)
{
    struct evbuffer *in = conn_input(s->upstream);
    my_audit_db_bytes(s, in, 0, wire);
    if (s->discard_result) {
        evbuffer_drain(in, wire);
        return;
    }
    my_audit_agent_bytes(s, in, 0, wire);
    evbuffer_remove_buffer(in, conn_output(s->client), wire);
    s->cseq = (uint8_t)(last_seq + 1);
}

/* The packet at the head of the upstream input is replaced by framed (same ids). */
static void emit_replaced(my_session *s, const chain_info *ci, struct evbuffer *framed)
{
    struct evbuffer *in = conn_input(s->upstream);
    my_audit_db_bytes(s, in, 0, ci->wire);
    evbuffer_drain(in, ci->wire);
    if (!s->discard_result) {
        my_audit_agent_bytes(s, framed, 0, evbuffer_get_length(framed));
        evbuffer_add_buffer(conn_output(s->client), framed);
        s->cseq = (uint8_t)(ci->last_seq + 1);
    }
    evbuffer_free(framed);
}

/* A row of the result: audited, and counted for a PHI read's budget. */
static void count_row(my_session *s)
{
    my_audit_row(s);
    s->phi_rows += s->count_phi_rows;
}

static void end_response(my_session *s)
{
    if (s->count_phi_rows && s->phi_rows)
        my_minnec_count_rows(s, s->phi_rows);
    s->count_phi_rows = false;
    s->phi_rows = 0;
    if (s->discard_result) {
        /* The refused LOCAL INFILE: the client hears why, in place of the answer. */
        s->discard_result = false;
        struct evbuffer *out = conn_output(s->client);
        size_t before = evbuffer_get_length(out);
        my_put_err(out, s->cseq, s->pending_errno, REFUSED_SQLSTATE, s->pending_error);
        my_audit_agent_bytes(s, out, before, evbuffer_get_length(out) - before);
        my_audit_error(s, REFUSED_SQLSTATE, s->pending_error, strlen(s->pending_error));
    }
    my_audit_end(s);
    my_policy_result_end(s);
    s->switch_to = NULL;
    s->scrub_errors = false;
    s->binary_rows = false;
    set_rstate(s, MYR_IDLE);
    resume_client(s);
    my_relay_client_data(s); /* the next command, if one is waiting */
}

/* The database the upstream session moved to (USE, COM_INIT_DB, DROP): only
 * one the role may use, mapped to an upstream on the same server. */
static bool switch_upstream(my_session *s, const cfg_upstream *to)
{
    char err[512];
    const config *cfg = my_server_config(s->server);
    sqlp_engine *e = my_server_engine(s->server, (int)(to - cfg->upstreams), err, sizeof err);
    if (!e) {
        my_session_log(s, LOG_LEVEL_ERROR, "%s", err);
        return false;
    }
    sqlp_engine_unref(s->engine);
    s->engine = e;
    s->up = to;
    s->upstream_index = (int)(to - cfg->upstreams);
    my_session_log(s, LOG_LEVEL_INFO, "database is now %s (upstream %s)", to->database, to->name);
    return true;
}

static bool schema_changed(my_session *s, const uint8_t *name, size_t len)
{
    if (len == strlen(s->up->database) && memcmp(name, s->up->database, len) == 0)
        return true;
    if (len == 0) {
        /* The database was dropped: unqualified names now fail on the server. */
        my_session_log(s, LOG_LEVEL_INFO, "the upstream session has no database now");
        return true;
    }
    const config *cfg = my_server_config(s->server);
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        const cfg_upstream *u = &cfg->upstreams[i];
        if (strcmp(u->protocol, "mysql") == 0 && same_server(u, s->up) && strlen(u->database) == len &&
            memcmp(u->database, name, len) == 0 && s->role &&
            config_role_allows_upstream(s->role, u->name))
            return switch_upstream(s, u);
    }
    char esc[80], msg[300];
    log_escape(name, len, 60, esc, sizeof esc);
    snprintf(msg, sizeof msg, "phigate closes this session: it moved to database %s, which your role may not use "
             "through phigate", esc);
    my_session_fail(s, MY_ER_DBACCESS_DENIED, REFUSED_SQLSTATE, msg);
    return false;
}

static bool value_is(const my_state_change *ch, const char *want)
{
    return ch->value_len == strlen(want) && strncasecmp((const char *)ch->value, want, ch->value_len) == 0;
}

static bool name_is(const my_state_change *ch, const char *want)
{
    return ch->name_len == strlen(want) && strncasecmp((const char *)ch->name, want, ch->name_len) == 0;
}

/* Session variables that change how phigate must parse, or what it can see. */
static bool variable_changed(my_session *s, const my_state_change *ch)
{
    const char *why = NULL;
    char msg[300];
    if (name_is(ch, "sql_mode")) {
        why = my_policy_sql_mode_unsafe((const char *)ch->value, ch->value_len);
        if (why) {
            snprintf(msg, sizeof msg, "phigate closes this session: sql_mode %s changes how statements parse, "
                     "which phigate does not follow", why);
            why = msg;
        }
    } else if (name_is(ch, "character_set_client")) {
        if (my_policy_charset_unsafe((const char *)ch->value, ch->value_len))
            why = "phigate closes this session: that client character set can hide a quote from its parser; "
                  "use utf8mb4";
    } else if (name_is(ch, "session_track_system_variables")) {
        if (!value_is(ch, "*"))
            why = "phigate closes this session: it relies on session_track_system_variables='*'";
    } else if (name_is(ch, "session_track_schema")) {
        if (!value_is(ch, "ON") && !value_is(ch, "1"))
            why = "phigate closes this session: it relies on session_track_schema=ON";
    }
    if (why) {
        my_session_fail(s, MY_ER_UNKNOWN_ERROR, "HY000", why);
        return false;
    }
    return true;
}

/* MariaDB also flags ANSI_QUOTES in the status word (MySQL leaves the bit unused). */
#define MARIADB_STATUS_ANSI_QUOTES 0x8000u

static bool status_ok(my_session *s, uint16_t status)
{
    s->up_status = status;
    if (status & (MY_STATUS_NO_BACKSLASH_ESCAPES | MARIADB_STATUS_ANSI_QUOTES)) {
        my_session_fail(s, MY_ER_UNKNOWN_ERROR, "HY000",
                        status & MY_STATUS_NO_BACKSLASH_ESCAPES
                            ? "phigate closes this session: sql_mode NO_BACKSLASH_ESCAPES changes how strings "
                              "parse, which phigate does not follow"
                            : "phigate closes this session: sql_mode ANSI_QUOTES changes how statements parse, "
                              "which phigate does not follow");
        return false;
    }
    return true;
}

static bool track_changes(my_session *s, const my_ok *ok)
{
    my_cursor c;
    my_state_change ch;
    bool bad;
    my_cursor_init(&c, ok->state, ok->state_len);
    while (my_next_state_change(&c, &ch, &bad)) {
        bool fine = ch.type == MY_TRACK_SCHEMA ? schema_changed(s, ch.name, ch.name_len)
                  : ch.type == MY_TRACK_SYSTEM_VARIABLES ? variable_changed(s, &ch) : true;
        if (!fine) {
            if (s->state != MYC_CLOSING && s->state != MYC_DEAD)
                my_session_fail(s, MY_ER_UNKNOWN_ERROR, "HY000", "phigate cannot follow the session's new database");
            return false;
        }
    }
    if (bad) {
        upstream_violation(s, "malformed session state in an OK packet", ok->state, ok->state_len);
        return false;
    }
    return true;
}

bool my_relay_check_ok_state(my_session *s, const my_ok *ok)
{
    return status_ok(s, ok->status) && (!ok->state || track_changes(s, ok));
}

/* The answer to phigate's setup after COM_RESET_CONNECTION: checked, then the
 * client gets the reset's OK. */
static void on_resetup(my_session *s, const chain_info *ci, const uint8_t *p, size_t len)
{
    my_ok ok;
    if (p[0] != 0x00 || !my_parse_ok(p, len, s->up_caps, &ok)) {
        my_session_fail(s, MY_ER_UNKNOWN_ERROR, "HY000",
                        "phigate could not restore its session tracking after COM_RESET_CONNECTION");
        return;
    }
    if (!my_relay_check_ok_state(s, &ok))
        return;
    evbuffer_drain(conn_input(s->upstream), ci->wire);
    my_audit_agent_bytes(s, s->held_ok, 0, evbuffer_get_length(s->held_ok));
    evbuffer_add_buffer(conn_output(s->client), s->held_ok);
    evbuffer_free(s->held_ok);
    s->held_ok = NULL;
    s->cseq = 2; /* the reset's answer was id 1 */
    end_response(s);
}

/* An OK (a statement's answer, or a result set's end under DEPRECATE_EOF).
 * *more: another result follows.  False: the session was failed. */
static bool on_ok(my_session *s, const chain_info *ci, uint8_t seq, const uint8_t *p, size_t len, bool *more)
{
    my_ok ok;
    if (!my_parse_ok(p, len, s->up_caps, &ok)) {
        upstream_violation(s, "malformed OK packet", p, len);
        return false;
    }
    if (!status_ok(s, ok.status))
        return false;
    if (s->switch_to && !switch_upstream(s, s->switch_to)) {
        my_session_fail(s, MY_ER_UNKNOWN_ERROR, "HY000", "phigate cannot follow the session's new database");
        return false;
    }
    s->switch_to = NULL;
    if (ok.state && !track_changes(s, &ok))
        return false;
    *more = (ok.status & MY_STATUS_MORE_RESULTS) != 0;
    if (s->command == MY_COM_RESET_CONNECTION && s->rstate == MYR_SIMPLE) {
        /* The reset put every session variable back, phigate's tracking too:
         * set it up again before the client hears the reset is done. */
        my_policy_reset(s);
        s->held_ok = evbuffer_new();
        my_put_ok(s->held_ok, seq, ok.header, ok.affected_rows, ok.insert_id,
                  ok.status & (uint16_t)~MY_STATUS_SESSION_STATE_CHANGED, ok.warnings, NULL, 0);
        my_audit_db_bytes(s, conn_input(s->upstream), 0, ci->wire);
        evbuffer_drain(conn_input(s->upstream), ci->wire);
        if (s->track_state) {
            my_upstream_send_setup(s);
            s->useq = 1;
            set_rstate(s, MYR_RESETUP);
            *more = true; /* not the end of the response yet */
            return true;
        }
        my_audit_agent_bytes(s, s->held_ok, 0, evbuffer_get_length(s->held_ok));
        evbuffer_add_buffer(conn_output(s->client), s->held_ok);
        evbuffer_free(s->held_ok);
        s->held_ok = NULL;
        s->cseq = (uint8_t)(seq + 1);
        return true;
    }
    if (!(s->up_caps & MY_CAP(SESSION_TRACK))) {
        emit_unchanged(s, ci->wire, ci->last_seq);
        return true;
    }
    /* The client did not ask for session tracking: the OK it expects has none. */
    struct evbuffer *framed = evbuffer_new();
    my_put_ok(framed, seq, ok.header, ok.affected_rows, ok.insert_id,
              ok.status & (uint16_t)~MY_STATUS_SESSION_STATE_CHANGED, ok.warnings, (const char *)ok.info,
              ok.info_len);
    emit_replaced(s, ci, framed);
    return true;
}

static bool on_eof(my_session *s, const chain_info *ci, const uint8_t *p, size_t len, bool *more)
{
    uint16_t warnings, status;
    if (!my_parse_eof(p, len, &warnings, &status)) {
        upstream_violation(s, "malformed EOF packet", p, len);
        return false;
    }
    if (!status_ok(s, status))
        return false;
    *more = (status & MY_STATUS_MORE_RESULTS) != 0;
    emit_unchanged(s, ci->wire, ci->last_seq);
    return true;
}

/* A result set's end: EOF, or OK with 0xfe under DEPRECATE_EOF. */
static bool on_terminator(my_session *s, const chain_info *ci, uint8_t seq, const uint8_t *p, size_t len,
                          bool *more)
{
    return deprecate_eof(s) ? on_ok(s, ci, seq, p, len, more) : on_eof(s, ci, p, len, more);
}

static void on_err(my_session *s, const chain_info *ci, uint8_t seq, const uint8_t *p, size_t len)
{
    my_err e;
    if (!my_parse_err(p, len, &e)) {
        upstream_violation(s, "malformed ERR packet", p, len);
        return;
    }
    if (s->command == MY_COM_STMT_PREPARE)
        my_policy_prepare_failed(s);
    if (!s->scrub_errors) {
        my_audit_error(s, e.sqlstate, e.message, e.message_len);
        emit_unchanged(s, ci->wire, ci->last_seq);
    } else {
        /* A failed cast or a duplicate key quotes the value: not for a PHI statement. */
        char *clean = my_policy_scrub(e.message, e.message_len);
        const char *msg = clean ? clean : "[error text withheld by phigate]";
        my_audit_error(s, e.sqlstate, msg, strlen(msg));
        struct evbuffer *framed = evbuffer_new();
        my_put_err(framed, seq, e.code, e.sqlstate, msg);
        free(clean);
        emit_replaced(s, ci, framed);
    }
    end_response(s);
}

/* COM_QUERY / COM_STMT_EXECUTE: the first packet of a result. */
static void on_result_head(my_session *s, const chain_info *ci, uint8_t seq, const uint8_t *p, size_t len)
{
    bool more = false;
    my_cursor c;
    uint64_t n;
    switch (p[0]) {
    case 0x00:
        if (on_ok(s, ci, seq, p, len, &more) && !more)
            end_response(s);
        return;
    case 0xff:
        on_err(s, ci, seq, p, len);
        return;
    case 0xfb:
        /* LOCAL INFILE request: phigate never offers CLIENT_LOCAL_FILES, so a
         * server asking for a client file is refused.  An empty packet tells
         * the server there is no file; its answer is replaced by our ERR. */
        my_session_log(s, LOG_LEVEL_WARN, "upstream asked for a LOCAL INFILE: refused");
        my_audit_db_bytes(s, conn_input(s->upstream), 0, ci->wire);
        evbuffer_drain(conn_input(s->upstream), ci->wire);
        my_put_packet(conn_output(s->upstream), s->useq, "", 0);
        s->useq++;
        s->discard_result = true;
        s->pending_errno = MY_ER_NOT_ALLOWED_COMMAND;
        s->pending_error = "phigate refuses LOAD DATA LOCAL INFILE: files are not read through phigate";
        return;
    default:
        my_cursor_init(&c, p, len);
        if (!my_get_lenenc(&c, &n) || my_cursor_left(&c) != 0 || n == 0 || n > MAX_RESULT_COLUMNS) {
            upstream_violation(s, "bad column count", p, len);
            return;
        }
        s->columns_left = s->result_columns = (uint32_t)n;
        my_policy_result_begin(s, (uint32_t)n);
        emit_unchanged(s, ci->wire, ci->last_seq);
        set_rstate(s, MYR_COLUMNS);
        return;
    }
}

static void on_column(my_session *s, const chain_info *ci, const uint8_t *p, size_t len)
{
    my_column_def def;
    if (!my_parse_column_def(p, len, &def)) {
        upstream_violation(s, "malformed column definition", p, len);
        return;
    }
    my_policy_column(s, s->result_columns - s->columns_left, &def);
    emit_unchanged(s, ci->wire, ci->last_seq);
    if (--s->columns_left == 0)
        set_rstate(s, deprecate_eof(s) ? MYR_ROWS : MYR_COLUMNS_EOF);
}

static void on_row(my_session *s, const chain_info *ci, uint8_t seq, const uint8_t *p, size_t len)
{
    bool more = false;
    if (p[0] == 0xff) {
        on_err(s, ci, seq, p, len);
        return;
    }
    if (my_is_terminator(p[0], (uint32_t)(ci->npackets > 1 ? MY_MAX_PACKET : len), deprecate_eof(s))) {
        if (!on_terminator(s, ci, seq, p, len, &more))
            return;
        my_policy_result_end(s);
        if (more)
            set_rstate(s, MYR_RESULT);
        else
            end_response(s);
        return;
    }
    /* A row with a PHI column that arrived unmasked. */
    count_row(s);
    struct evbuffer *body = evbuffer_new();
    if (!my_policy_mask_row(s, p, len, s->binary_rows, body)) {
        evbuffer_free(body);
        upstream_violation(s, "malformed row", p, len);
        return;
    }
    size_t blen = evbuffer_get_length(body);
    if (ci->npackets > 1 || blen >= MY_MAX_PACKET) {
        /* Masking changed how many packets the row takes, and with it the ids. */
        evbuffer_free(body);
        my_session_fail(s, MY_ER_UNKNOWN_ERROR, "HY000",
                        "phigate withholds a row over 16 MB with a PHI column it had to mask in the stream");
        return;
    }
    struct evbuffer *framed = evbuffer_new();
    my_put_packet(framed, seq, evbuffer_pullup(body, -1), blen);
    evbuffer_free(body);
    emit_replaced(s, ci, framed);
}

static void on_prepare(my_session *s, const chain_info *ci, uint8_t seq, const uint8_t *p, size_t len)
{
    my_prepare_ok ok;
    if (p[0] == 0xff) {
        on_err(s, ci, seq, p, len);
        return;
    }
    if (!my_parse_prepare_ok(p, len, &ok)) {
        upstream_violation(s, "malformed COM_STMT_PREPARE answer", p, len);
        return;
    }
    if (!my_policy_prepare_ok(s, &ok)) {
        my_session_fail(s, MY_ER_UNKNOWN_ERROR, "HY000", "phigate lost track of a prepared statement");
        return;
    }
    emit_unchanged(s, ci->wire, ci->last_seq);
    s->params_left = ok.params;
    s->columns_left = ok.columns;
    if (ok.params)
        set_rstate(s, MYR_PARAMS);
    else if (ok.columns)
        set_rstate(s, MYR_PCOLUMNS);
    else
        end_response(s);
}

/* Definitions and EOFs of a prepare answer pass unchanged; only the count matters. */
static void on_prepare_part(my_session *s, const chain_info *ci, const uint8_t *p, size_t len)
{
    uint16_t w, st;
    bool is_eof = s->rstate == MYR_PARAMS_EOF || s->rstate == MYR_PCOLUMNS_EOF;
    if (is_eof ? !my_parse_eof(p, len, &w, &st) : (p[0] == 0xfe && len < 9)) {
        upstream_violation(s, "unexpected packet in a COM_STMT_PREPARE answer", p, len);
        return;
    }
    emit_unchanged(s, ci->wire, ci->last_seq);
    bool classic = !deprecate_eof(s);
    switch (s->rstate) {
    case MYR_PARAMS:
        if (--s->params_left > 0)
            return;
        if (classic)
            set_rstate(s, MYR_PARAMS_EOF);
        else if (s->columns_left)
            set_rstate(s, MYR_PCOLUMNS);
        else
            end_response(s);
        return;
    case MYR_PARAMS_EOF:
        if (s->columns_left)
            set_rstate(s, MYR_PCOLUMNS);
        else
            end_response(s);
        return;
    case MYR_PCOLUMNS:
        if (--s->columns_left > 0)
            return;
        if (classic)
            set_rstate(s, MYR_PCOLUMNS_EOF);
        else
            end_response(s);
        return;
    default:
        end_response(s);
        return;
    }
}

static void on_simple(my_session *s, const chain_info *ci, uint8_t seq, const uint8_t *p, size_t len)
{
    bool more = false;
    bool done;
    switch (p[0]) {
    case 0x00:
        done = on_ok(s, ci, seq, p, len, &more);
        break;
    case 0xff:
        on_err(s, ci, seq, p, len);
        return;
    case 0xfe: /* COM_SET_OPTION answers with an EOF (an OK with 0xfe under DEPRECATE_EOF) */
        done = deprecate_eof(s) ? on_ok(s, ci, seq, p, len, &more) : on_eof(s, ci, p, len, &more);
        break;
    default:
        upstream_violation(s, "unexpected answer", p, len);
        return;
    }
    if (done && s->rstate == MYR_SIMPLE)
        end_response(s);
}

/* One whole packet at the head of the upstream input, by response state.
 * False when it is not all there yet, or the session ended. */
static bool inspect(my_session *s)
{
    struct evbuffer *in = conn_input(s->upstream);
    chain_info ci;
    int r = peek_chain(in, packet_max(s), s->useq, &ci);
    if (r == 0)
        return false;
    if (r < 0) {
        upstream_violation(s, r == -2 ? "a packet phigate must inspect is over limits.max_message_bytes"
                                      : "packets out of order", NULL, 0);
        return false;
    }
    uint8_t *owned;
    const uint8_t *p = chain_payload(in, &ci, &owned);
    size_t len = (size_t)ci.payload;
    uint8_t seq = s->useq;
    s->useq = (uint8_t)(ci.last_seq + 1);
    if (len == 0) {
        free(owned);
        upstream_violation(s, "empty packet", NULL, 0);
        return false;
    }
    switch (s->rstate) {
    case MYR_SIMPLE:
        on_simple(s, &ci, seq, p, len);
        break;
    case MYR_RESULT:
        on_result_head(s, &ci, seq, p, len);
        break;
    case MYR_COLUMNS:
        on_column(s, &ci, p, len);
        break;
    case MYR_COLUMNS_EOF: {
        bool more;
        if (on_eof(s, &ci, p, len, &more)) {
            if (s->up_status & MY_STATUS_CURSOR_EXISTS)
                end_response(s); /* a cursor: rows come with COM_STMT_FETCH, which phigate refuses */
            else
                set_rstate(s, MYR_ROWS);
        }
        break;
    }
    case MYR_ROWS:
        on_row(s, &ci, seq, p, len);
        break;
    case MYR_PREPARE:
        on_prepare(s, &ci, seq, p, len);
        break;
    case MYR_PARAMS:
    case MYR_PARAMS_EOF:
    case MYR_PCOLUMNS:
    case MYR_PCOLUMNS_EOF:
        on_prepare_part(s, &ci, p, len);
        break;
    case MYR_RESETUP:
        on_resetup(s, &ci, p, len);
        break;
    case MYR_EXPLAIN:
        /* phigate's own EXPLAIN: never the client's, never audited (p lives until the drain). */
        my_minnec_explain_packet(s, p, len, deprecate_eof(s));
        evbuffer_drain(in, ci.wire);
        break;
    case MYR_IDLE:
        break;
    }
    free(owned);
    return s->state == MYC_ACTIVE;
}

/* The upstream spoke with no command in flight: only an ERR before it closes
 * (server shutdown, KILL, wait_timeout) is expected. */
static void out_of_turn(my_session *s)
{
    struct evbuffer *in = conn_input(s->upstream);
    uint8_t head[MY_HEADER_LEN + 1];
    if (evbuffer_copyout(in, head, sizeof head) == (ev_ssize_t)sizeof head && head[MY_HEADER_LEN] == 0xff) {
        my_session_log(s, LOG_LEVEL_WARN, "the upstream sent an error with no command in flight");
        my_session_fail(s, MY_ER_UNKNOWN_ERROR, "HY000", "the upstream database ended the session");
        return;
    }
    upstream_violation(s, "data with no command in flight", NULL, 0);
}

/* A row that passes as it is: not a terminator, not an ERR, nothing to mask. */
static bool plain_row(const my_session *s, uint8_t first, uint32_t len)
{
    return len > 0 && first != 0xff && !my_is_terminator(first, len, deprecate_eof(s)) && !my_policy_masking(s);
}

void my_relay_upstream_data(my_session *s)
{
    struct evbuffer *in = conn_input(s->upstream);
    while (s->state == MYC_ACTIVE && !s->upstream_paused) {
        if (s->aud.pending > 0) {
            /* Results wait for their statement records to be durable. */
            hold_for_audit(s, in);
            return;
        }
        size_t avail = evbuffer_get_length(in), run = 0;
        if (avail == 0)
            break;
        if (s->rstate == MYR_IDLE) {
            out_of_turn(s);
            return;
        }
        bool special = false;
        while (run < avail) {
            if (s->pass_left > 0) {
                size_t take = avail - run < s->pass_left ? avail - run : s->pass_left;
                run += take;
                s->pass_left -= (uint32_t)take;
                continue;
            }
            uint8_t h[MY_HEADER_LEN + 1];
            size_t have = avail - run >= sizeof h ? sizeof h : avail - run;
            if (have < MY_HEADER_LEN)
                break;
            struct evbuffer_ptr at;
            evbuffer_ptr_set(in, &at, run, EVBUFFER_PTR_SET);
            evbuffer_copyout_from(in, &at, h, have);
            uint32_t len;
            uint8_t seq;
            my_parse_header(h, &len, &seq);
            if (seq != s->useq) {
                if (run)
                    emit_unchanged(s, run, (uint8_t)(s->useq - 1));
                upstream_violation(s, "packets out of order", NULL, 0);
                return;
            }
            if (s->pass_continues) {
                /* The next piece of a row over 16 MB: it goes on as it is. */
                s->pass_continues = len == MY_MAX_PACKET;
            } else {
                if (len > 0 && have < sizeof h)
                    break;
                if (s->rstate != MYR_ROWS || !plain_row(s, h[MY_HEADER_LEN], len)) {
                    special = true;
                    break;
                }
                count_row(s);
                s->pass_continues = len == MY_MAX_PACKET;
            }
            s->useq++;
            run += MY_HEADER_LEN;
            s->pass_left = len;
        }
        if (run)
            emit_unchanged(s, run, (uint8_t)(s->useq - 1));
        if (special) {
            if (!inspect(s))
                break;
        } else if (run == 0) {
            break;
        }
        pause_upstream_if_full(s);
    }
}
