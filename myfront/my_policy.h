/*
 * myfront's use of sqlpolicy: the engine per MySQL upstream (catalog read from
 * the upstream's information_schema with libmariadb), decisions on COM_QUERY
 * and COM_STMT_PREPARE, the prepared-statement table, and the defence in
 * depth on the way back (ColumnDefinition of base PHI columns masked in the
 * rows, ERR text scrubbed for statements that touch PHI).
 */
#ifndef PHIGATE_MY_POLICY_H
#define PHIGATE_MY_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gate/config.h"
#include "myfront/my_wire.h"
#include "sqlpolicy/sqlpolicy.h"

struct evbuffer;
typedef struct my_session my_session;

/* Read the upstream's catalog and the masking rules into a new engine; version
 * gets the server's version string.  Blocking (libmariadb): runs on a worker
 * thread of gate/engines.  Also refuses an upstream whose default sql_mode
 * changes how statements parse. */
sqlp_engine *my_policy_load_engine(const config *cfg, const cfg_upstream *up, char *version, size_t vlen,
                                   char *err, size_t errlen);

/* libmariadb's one-time setup, on the loop before any worker thread uses it. */
void my_policy_library_init(void);

/* sql_mode values phigate cannot parse under (ANSI_QUOTES, NO_BACKSLASH_ESCAPES,
 * ...): the first offending flag, or NULL when the mode is fine. */
const char *my_policy_sql_mode_unsafe(const char *mode, size_t len);
/* character set names that can hide a quote from the parser (gbk, sjis, ...). */
bool my_policy_charset_unsafe(const char *name, size_t len);

/* Decide a statement text for the session's role and database. */
sqlp_decision *my_policy_decide(my_session *s, const char *sql, size_t len);

/* ---- prepared statements ---------------------------------------------------- */

#define MY_MAX_STATEMENTS 4096 /* per session; more PREPAREs are refused */

typedef struct my_stmt {
    uint32_t id;            /* the upstream's statement id (clients see the same) */
    uint16_t nparams, ncols;
    char *text;             /* as the agent sent it */
    sqlp_decision *d;       /* our reference */
    uint8_t *types;         /* 2 bytes per parameter, from the last EXECUTE that sent them */
    bool types_known;
    uint8_t *long_data;     /* bitmap: parameters sent with COM_STMT_SEND_LONG_DATA */
    char *approval_id;      /* the approval that released its held PREPARE, or NULL */
    bool budget_pass;       /* that approval covers its next EXECUTE's budget check */
} my_stmt;

/* A PREPARE was sent upstream with this decision (reference taken over);
 * approval_id: the approval that released it when it was held. */
void my_policy_prepare_sent(my_session *s, const char *text, size_t len, sqlp_decision *d, const char *approval_id);
/* Its answer: the statement is registered (false: table full, the session fails). */
bool my_policy_prepare_ok(my_session *s, const my_prepare_ok *ok);
void my_policy_prepare_failed(my_session *s);
my_stmt *my_policy_stmt(my_session *s, uint32_t id);
bool my_policy_statement_table_full(my_session *s);
void my_policy_stmt_close(my_session *s, uint32_t id);
/* COM_RESET_CONNECTION: every statement is gone upstream, so here too. */
void my_policy_reset(my_session *s);

/* ---- results ---------------------------------------------------------------- */

void my_policy_result_begin(my_session *s, uint32_t ncols);
/* One column definition of the result; a raw base PHI column is flagged for masking. */
void my_policy_column(my_session *s, uint32_t index, const my_column_def *def);
/* Some column of the current result set must be masked in its rows. */
bool my_policy_masking(const my_session *s);
/* Rewrite one row payload with the flagged columns masked (text rows: the
 * masked text; binary rows: masked text for string types, NULL otherwise).
 * false: the row is malformed. */
bool my_policy_mask_row(my_session *s, const uint8_t *payload, size_t len, bool binary, struct evbuffer *out);
void my_policy_result_end(my_session *s);

/* ERR message of a statement that touches PHI with values replaced by ***
 * (malloc'd; NULL when out of memory). */
char *my_policy_scrub(const char *msg, size_t len);

void my_policy_session_free(my_session *s);

#endif
