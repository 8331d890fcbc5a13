/*
 * The query phase: messages relayed both ways with their boundaries checked.
 *
 * Messages that pass unchanged are moved in runs: headers are scanned in place
 * (evbuffer_ptr, no copy) and a whole run moves with one evbuffer_remove_buffer,
 * which relinks chains instead of copying bytes.
 *
 * Refusals keep the protocol's ordering: the refused message is replaced, towards
 * the upstream, by a stand-in that fails to parse ("phigate refused ...").  The
 * server answers it exactly where the real statement would have been answered
 * (and fails the transaction the same way), and that one ErrorResponse is
 * replaced by phigate's own on the way back.  Pipelining, Flush and Sync all keep
 * working with no response bookkeeping of our own beyond a FIFO.
 *
 * Backpressure: when the client's output holds more than client_buffer_bytes we
 * stop reading the upstream until it drains to half; the same the other way for
 * COPY FROM STDIN, so memory per session stays bounded.
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/conn.h"
#include "gate/log.h"
#include "pgfront/pg_audit.h"
#include "pgfront/pg_minnec.h"
#include "pgfront/pg_policy.h"
#include "pgfront/pg_session.h"

#define UPSTREAM_MAX_MESSAGE 0x40000000u /* PostgreSQL's own limit on a message (1 GB) */
#define STANDIN_SQL "phigate refused this statement"
#define STANDIN_SQLSTATE "42601"          /* the server's answer to STANDIN_SQL */
#define STANDIN_PORTAL "\x01phigate refused"  /* no client can have named a portal so */
#define STANDIN_PORTAL_SQLSTATE "34000"   /* the server's answer to Execute of it */

static size_t buffer_limit(const pg_session *s)
{
    return (size_t)pg_server_config(s->server)->client_buffer_bytes;
}

void pg_relay_start(pg_session *s)
{
    struct evbuffer *out = conn_output(s->client);
    pg_cancel_register(s);
    evbuffer_add_buffer(out, s->param_status);
    pg_put_backend_key(out, s->cancel_pid, s->cancel_key);
    pg_put_ready(out, 'I');
    event_del(s->timer);
    pg_session_set_state(s, PGC_ACTIVE);
    pg_audit_connect(s);
    conn_read_enable(s->client);
    /* Wake the paused side when its peer's output has drained to half the limit. */
    conn_set_low_watermark(s->client, buffer_limit(s) / 2);
    conn_set_low_watermark(s->upstream, buffer_limit(s) / 2);
    pg_session_log(s, LOG_LEVEL_INFO, "session open to upstream %s%s", s->up->name,
                   s->upstream_tls ? " over TLS" : "");
    pg_relay_client_data(s); /* statements pipelined behind authentication */
}

void pg_relay_free(pg_session *s)
{
    while (s->subst_head) {
        pg_substitution *n = s->subst_head->next;
        free(s->subst_head);
        s->subst_head = n;
    }
    s->subst_tail = NULL;
    pg_policy_session_free(s);
    if (s->engine)
        sqlp_engine_unref(s->engine);
    s->engine = NULL;
}

/* ---- refusals --------------------------------------------------------------- */

static void push_substitution(pg_session *s, uint64_t ordinal, const char *expect, const char *sqlstate,
                              const char *message)
{
    pg_substitution *sub = calloc(1, sizeof *sub);
    sub->sync_ordinal = ordinal;
    snprintf(sub->expect, sizeof sub->expect, "%s", expect);
    snprintf(sub->sqlstate, sizeof sub->sqlstate, "%s", sqlstate);
    snprintf(sub->message, sizeof sub->message, "%s", message);
    if (s->subst_tail)
        s->subst_tail->next = sub;
    else
        s->subst_head = sub;
    s->subst_tail = sub;
}

static void pop_substitution(pg_session *s)
{
    pg_substitution *sub = s->subst_head;
    s->subst_head = sub->next;
    if (!s->subst_head)
        s->subst_tail = NULL;
    free(sub);
}

/* Replace the client's message (type, total bytes at the head of in) with a stand-in. */
void pg_relay_refuse(pg_session *s, char type, uint32_t total, const char *sqlstate, const char *message)
{
    struct evbuffer *in = conn_input(s->client);
    struct evbuffer *up = conn_output(s->upstream);
    pg_session_log(s, LOG_LEVEL_INFO, "refused '%c' message: %s", type, message);
    if (type == 'P') {
        /* Keep the statement name so a later Bind fails like the server would. */
        uint8_t *msg = evbuffer_pullup(in, total);
        pg_cursor c;
        const char *name;
        pg_cursor_init(&c, msg + PG_HEADER_LEN, total - PG_HEADER_LEN);
        if (!pg_get_cstring(&c, &name, NULL))
            name = "";
        struct evbuffer *body = evbuffer_new();
        evbuffer_add(body, name, strlen(name) + 1);
        evbuffer_add(body, STANDIN_SQL, sizeof STANDIN_SQL);
        evbuffer_add(body, "\0\0", 2); /* no parameter types */
        size_t blen = evbuffer_get_length(body);
        pg_put_message(up, 'P', evbuffer_pullup(body, -1), blen);
        evbuffer_free(body);
        push_substitution(s, s->syncs_sent + 1, STANDIN_SQLSTATE, sqlstate, message);
    } else if (type == 'E') {
        /* Execute of a portal that cannot exist: answered with 34000 in its place. */
        struct evbuffer *body = evbuffer_new();
        evbuffer_add(body, STANDIN_PORTAL, sizeof STANDIN_PORTAL);
        evbuffer_add(body, "\0\0\0\0", 4);
        size_t blen = evbuffer_get_length(body);
        pg_put_message(up, 'E', evbuffer_pullup(body, -1), blen);
        evbuffer_free(body);
        push_substitution(s, s->syncs_sent + 1, STANDIN_PORTAL_SQLSTATE, sqlstate, message);
    } else {
        pg_put_query(up, STANDIN_SQL, strlen(STANDIN_SQL));
        push_substitution(s, ++s->syncs_sent, STANDIN_SQLSTATE, sqlstate, message);
    }
    evbuffer_drain(in, total);
}

/* ---- client -> upstream ----------------------------------------------------- */

static void pause_client_if_full(pg_session *s)
{
    if (evbuffer_get_length(conn_output(s->upstream)) > buffer_limit(s)) {
        conn_read_disable(s->client);
        s->client_paused = true;
    }
}

void pg_relay_upstream_drained(pg_session *s)
{
    if (!s->client_paused)
        return;
    s->client_paused = false;
    conn_read_enable(s->client);
    pg_relay_client_data(s);
}

/* What to do with one client message: forward it in the run, or stop the run. */
typedef enum { FWD_RUN, FWD_SPECIAL, FWD_PROTOCOL_ERROR } fwd_kind;

static fwd_kind classify_client(pg_session *s, char type, struct evbuffer *in, const struct evbuffer_ptr *at,
                                uint32_t total)
{
    /* An EXPLAIN of our own may only go between batches (pg_minnec.c). */
    if (type && strchr("BDCH", type))
        s->ext_batch_open = true;
    switch (type) {
    case 'S':
        s->syncs_sent++;
        s->ext_batch_open = false;
        return FWD_RUN;
    case 'B':
        pg_policy_note_bind(s, in, at, total);
        pg_audit_bind(s, in, at, total);
        return FWD_RUN;
    case 'E':
        s->ext_batch_open = true;
        if (!pg_session_take_statement_token(s))
            return FWD_SPECIAL;
        if (pg_minnec_execute_needs_check(s, in, at, total)) {
            s->execute_checks = true; /* a PHI read: its identity's budget first */
            return FWD_SPECIAL;
        }
        pg_audit_execute(s, in, at, total, NULL);
        return FWD_RUN;
    case 'Q': /* statements go through the policy engine */
    case 'P':
    case 'X':
    case 'F':
        return FWD_SPECIAL;
    case 'p': /* password messages are over once the session is open */
        return FWD_PROTOCOL_ERROR;
    default:
        return pg_frontend_type_known(type) ? FWD_RUN : FWD_PROTOCOL_ERROR;
    }
}

static void client_special(pg_session *s, char type, uint32_t total)
{
    if (type == 'X') {
        /* Statements sent before Terminate still run and are answered, as with the server. */
        evbuffer_remove_buffer(conn_input(s->client), conn_output(s->upstream), total);
        s->terminating = true;
        conn_read_disable(s->client);
        pg_session_arm_timer(s, 10000);
        return;
    }
    if (type == 'F') {
        /* FunctionCall bypasses SQL and so the policy engine: refuse it. */
        pg_relay_refuse(s, type, total, "0A000", "phigate refuses FunctionCall messages: call functions through SQL");
        return;
    }
    if (type == 'E' && s->execute_checks) {
        s->execute_checks = false;
        pg_minnec_start_execute(s, total);
        return;
    }
    if (type == 'E' || (type == 'Q' && !pg_session_take_statement_token(s))) {
        char msg[200];
        snprintf(msg, sizeof msg, "statement rate limit exceeded for identity \"%.64s\" (%d per second)", s->user,
                 s->identity->statements_per_second);
        pg_relay_refuse(s, type, total, "53400", msg);
        return;
    }
    pg_policy_action action = pg_policy_client_message(s, type, total);
    pg_relay_after_policy(s, type, total, action);
    if (type == 'P')
        s->ext_batch_open = true;
}

void pg_relay_after_policy(pg_session *s, char type, uint32_t total, pg_policy_action action)
{
    if (action == PG_POLICY_FORWARD)
        evbuffer_remove_buffer(conn_input(s->client), conn_output(s->upstream), total);
    /* A Query is a batch of its own, whatever became of it (refusals count their stand-in). */
    if (type == 'Q' && (action == PG_POLICY_FORWARD || action == PG_POLICY_REPLACED))
        s->syncs_sent++;
}

void pg_relay_client_data(pg_session *s)
{
    struct evbuffer *in = conn_input(s->client);
    struct evbuffer *up = conn_output(s->upstream);
    uint32_t max = (uint32_t)pg_server_config(s->server)->max_message_bytes;
    while (s->state == PGC_ACTIVE && !s->client_paused && !s->held && !s->minnec && !s->terminating) {
        size_t avail = evbuffer_get_length(in), run = 0;
        struct evbuffer_ptr pos;
        evbuffer_ptr_set(in, &pos, 0, EVBUFFER_PTR_SET);
        char type = 0;
        uint32_t total = 0;
        fwd_kind kind = FWD_RUN;
        while (avail - run >= PG_HEADER_LEN) {
            uint8_t hdr[PG_HEADER_LEN];
            evbuffer_copyout_from(in, &pos, hdr, sizeof hdr);
            pg_header_result r = pg_parse_header(hdr, sizeof hdr, max, &type, &total);
            if (r != PG_HDR_OK) {
                evbuffer_remove_buffer(in, up, run);
                char msg[160];
                snprintf(msg, sizeof msg, r == PG_HDR_TOO_LONG
                         ? "message exceeds phigate's max_message_bytes (%u)" : "invalid message length", max);
                pg_session_fail(s, "08P01", msg, NULL);
                return;
            }
            /* A message is classified once, when it is complete. */
            if (avail - run < total)
                break;
            kind = classify_client(s, type, in, &pos, total);
            if (kind != FWD_RUN)
                break;
            run += total;
            evbuffer_ptr_set(in, &pos, total, EVBUFFER_PTR_ADD);
        }
        if (run)
            evbuffer_remove_buffer(in, up, run);
        if (kind == FWD_PROTOCOL_ERROR) {
            char msg[80];
            snprintf(msg, sizeof msg, "unexpected message type 0x%02x", (unsigned char)type);
            pg_session_fail(s, "08P01", msg, NULL);
            return;
        }
        if (kind == FWD_SPECIAL)
            client_special(s, type, total);
        else if (run == 0)
            break; /* nothing complete left */
        pause_client_if_full(s);
    }
}

/* ---- upstream -> client ----------------------------------------------------- */

void pg_relay_client_drained(pg_session *s)
{
    if (!s->upstream_paused)
        return;
    s->upstream_paused = false;
    if (!s->audit_held)
        conn_read_enable(s->upstream);
    pg_relay_upstream_data(s);
}

static void pause_upstream_if_full(pg_session *s)
{
    if (evbuffer_get_length(conn_output(s->client)) > buffer_limit(s)) {
        conn_read_disable(s->upstream);
        s->upstream_paused = true;
    }
}

static void on_ready_for_query(pg_session *s, char status)
{
    s->syncs_done++;
    s->txn_status = status;
    /* Stand-ins the server skipped (the batch had already failed) expire with their batch. */
    while (s->subst_head && s->subst_head->sync_ordinal <= s->syncs_done)
        pop_substitution(s);
}

/* The ErrorResponse at the head of in answers our stand-in: send ours instead. */
static bool substitute_error(pg_session *s, struct evbuffer *in, uint32_t total)
{
    pg_substitution *sub = s->subst_head;
    if (!sub || sub->sync_ordinal != s->syncs_done + 1)
        return false;
    uint8_t *msg = evbuffer_pullup(in, total);
    pg_error_fields f;
    size_t clen;
    const char *code = NULL;
    if (pg_parse_error_fields(msg + PG_HEADER_LEN, total - PG_HEADER_LEN, &f))
        code = pg_error_field_get(&f, 'C', &clen);
    if (!code || strcmp(code, sub->expect) != 0)
        return false;
    evbuffer_drain(in, total);
    pg_put_error(conn_output(s->client), "ERROR", sub->sqlstate, sub->message, NULL, NULL);
    pg_audit_agent_sqlstate(s, sub->sqlstate);
    pop_substitution(s);
    return true;
}

static bool upstream_type_allowed(char type)
{
    /* Authentication and key messages after startup would be the server trying to
     * renegotiate through us: refuse. */
    return pg_backend_type_known(type) && type != 'R' && type != 'K';
}

/* While waiting for the audit log, stop reading once a buffer's worth is held. */
static void hold_for_audit(pg_session *s, struct evbuffer *in)
{
    if (evbuffer_get_length(in) > buffer_limit(s) && !s->audit_held) {
        conn_read_disable(s->upstream);
        s->audit_held = true;
    }
}

void pg_relay_audit_released(pg_session *s)
{
    if (s->audit_held) {
        s->audit_held = false;
        if (!s->upstream_paused)
            conn_read_enable(s->upstream);
    }
    pg_relay_upstream_data(s);
}

static void maybe_finish(pg_session *s);
static void relay_upstream(pg_session *s);

/* The answer to phigate's own EXPLAIN (pg_minnec.c): never the client's, never audited. */
static void relay_own_explain(pg_session *s, char type, struct evbuffer *in, uint32_t total)
{
    char status = 'I';
    if (type == 'Z') {
        uint8_t z[PG_HEADER_LEN + 1];
        if (evbuffer_copyout(in, z, sizeof z) == (ev_ssize_t)sizeof z)
            status = (char)z[PG_HEADER_LEN];
    }
    pg_minnec_upstream_message(s, type, in, total);
    if (type == 'Z') {
        on_ready_for_query(s, status);
        pg_minnec_explain_done(s);
    }
}

void pg_relay_upstream_closed(pg_session *s)
{
    s->upstream_eof = true;
    pg_relay_upstream_data(s);
}

void pg_relay_upstream_data(pg_session *s)
{
    relay_upstream(s);
    maybe_finish(s);
}

/* After the upstream closed, and once all it sent reached the client's output:
 * close quietly after Terminate, or say that the upstream went away. */
static void maybe_finish(pg_session *s)
{
    if (!s->upstream_eof || s->state != PGC_ACTIVE || s->aud.pending > 0 || s->upstream_paused)
        return;
    struct evbuffer *in = conn_input(s->upstream);
    if (evbuffer_get_length(in) > 0 && !s->terminating)
        pg_session_log(s, LOG_LEVEL_WARN, "upstream closed in the middle of a message");
    if (s->terminating)
        pg_session_finish(s, "client sent Terminate");
    else
        pg_session_fail(s, "08006", "phigate lost its connection to the upstream database", NULL);
}

static void relay_upstream(pg_session *s)
{
    struct evbuffer *in = conn_input(s->upstream);
    struct evbuffer *out = conn_output(s->client);
    while (s->state == PGC_ACTIVE && !s->upstream_paused) {
        if (s->aud.pending > 0) {
            /* Results wait for their statement records to be durable. */
            hold_for_audit(s, in);
            return;
        }
        size_t avail = evbuffer_get_length(in), run = 0;
        struct evbuffer_ptr pos;
        evbuffer_ptr_set(in, &pos, 0, EVBUFFER_PTR_SET);
        bool special = false;
        char type = 0;
        uint32_t total = 0;
        while (avail - run >= PG_HEADER_LEN) {
            uint8_t hdr[PG_HEADER_LEN + 1];
            evbuffer_copyout_from(in, &pos, hdr, avail - run > PG_HEADER_LEN ? sizeof hdr : PG_HEADER_LEN);
            pg_header_result r = pg_parse_header(hdr, PG_HEADER_LEN, UPSTREAM_MAX_MESSAGE, &type, &total);
            if (r != PG_HDR_OK || !upstream_type_allowed(type)) {
                evbuffer_remove_buffer(in, out, run);
                pg_session_log(s, LOG_LEVEL_WARN, "upstream protocol violation (type 0x%02x)", (unsigned char)type);
                pg_session_fail(s, "08P01", "protocol violation from the upstream database", NULL);
                return;
            }
            if (avail - run < total)
                break;
            if (pg_minnec_owns_upstream(s) || (type == 'E' && s->subst_head) || pg_policy_server_needs_look(s, type)) {
                special = true;
                break;
            }
            pg_audit_server_message(s, type, in, &pos, total);
            if (type == 'Z')
                on_ready_for_query(s, total > PG_HEADER_LEN ? (char)hdr[PG_HEADER_LEN] : 'I');
            run += total;
            evbuffer_ptr_set(in, &pos, total, EVBUFFER_PTR_ADD);
        }
        if (run)
            evbuffer_remove_buffer(in, out, run);
        if (special && pg_minnec_owns_upstream(s)) {
            relay_own_explain(s, type, in, total);
        } else if (special) {
            size_t before = evbuffer_get_length(out);
            pg_audit_db_bytes(s, type, in, total);
            if (type == 'E' && substitute_error(s, in, total))
                ;
            else if (pg_policy_server_needs_look(s, type))
                pg_policy_server_message(s, type, total, in, out);
            else
                evbuffer_remove_buffer(in, out, total);
            pg_audit_agent_bytes(s, out, before);
        } else if (run == 0) {
            break;
        }
        pause_upstream_if_full(s);
    }
}
