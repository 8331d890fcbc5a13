/*
 * Minimum necessary on the MySQL wire (gate/min_necessary.h does the
 * judging, as for pgfront): before a PHI read the policy engine allowed runs
 * (COM_QUERY, or the COM_STMT_PREPARE of one), phigate asks the server for its
 * row estimate and Redis for the identity's PHI rows in the current window,
 * then runs the command, holds it for approval (my_hold.c) or refuses it.
 *
 * While the checks run the command stays at the head of the client's input
 * and nothing after it is handled, so the protocol's order is kept.  The
 * EXPLAIN goes to the session's own upstream connection as a COM_QUERY of its
 * own between commands (MySQL answers one command at a time); its answer is
 * consumed here (response state MYR_EXPLAIN) and never reaches the client or
 * the audit digests:
 *
 *   client:   COM_QUERY "SELECT ... patients ..."           (waits at the head)
 *   upstream: COM_QUERY "EXPLAIN FORMAT=JSON <rewritten>"  -> count, def, [EOF], row(s), EOF/OK (ours)
 *   Redis:    budget script (add 0)                        -> used, ttl
 *   both in -> run it | hold it (my_hold) | refuse it
 *
 * MariaDB's EXPLAIN ignores LIMIT, so the estimate is capped by the
 * statement's constant LIMIT (sqlp_statement.row_limit).  A PREPARE with
 * parameters cannot be estimated (min_necessary.no_estimate when the role has
 * an estimate limit), like pgfront's Parse with bind parameters.
 */
#ifndef PHIGATE_MY_MINNEC_H
#define PHIGATE_MY_MINNEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sqlpolicy/sqlpolicy.h"

typedef struct my_session my_session;

/* The decision d (ALLOW/REWRITE) of the command (wire bytes in npackets at the
 * head of the client's input, text sql/len): when the role's checks apply,
 * take it over and return true; the command then runs, is held or refused once
 * the checks are in.  false: nothing to check, d is still the caller's. */
bool my_minnec_start(my_session *s, size_t wire, uint32_t npackets, const char *sql, size_t len, sqlp_decision *d);
bool my_minnec_pending(const my_session *s);

/* A COM_STMT_EXECUTE (wire bytes at the head of the client's input) of a
 * prepared PHI read, for a role with a budget: true when its budget check
 * started; it then runs (the relay reads it again, s->exec_checked set) or is
 * refused.  An EXECUTE never waits for approval (its PREPARE was judged and
 * could have been), as pgfront's Execute. */
struct my_stmt;
bool my_minnec_execute_start(my_session *s, size_t wire, struct my_stmt *st);

/* One packet of the answer to phigate's EXPLAIN (response state MYR_EXPLAIN). */
void my_minnec_explain_packet(my_session *s, const uint8_t *p, size_t len, bool deprecate_eof);

/* Rows of a PHI read's result: counted against the identity's budget in Redis. */
void my_minnec_count_rows(my_session *s, uint64_t rows);

void my_minnec_free(my_session *s);

#endif
