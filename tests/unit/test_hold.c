/* gate/hold: the request, the row cap and the refusal texts both fronts give for a held statement. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/hold.h"

static int passed, failed;
#define CHECK(c, what) ((c) ? (void)passed++ : (void)(failed++, printf("FAIL %s (line %d)\n", what, __LINE__)))

static sqlp_decision held(const char *sql, sqlp_class cls, sqlp_statement *st)
{
    *st = (sqlp_statement){.verdict = SQLP_HOLD, .stmt_class = cls, .rule = "phi.unscoped_read",
                           .fingerprint = "0123abcd"};
    return (sqlp_decision){.verdict = SQLP_HOLD, .rule = "phi.unscoped_read", .reason = "reads every row of patients",
                           .upstream_sql = (char *)sql, .upstream_len = strlen(sql), .nstatements = 1,
                           .statements = st};
}

static void check_capped(const char *sql, uint64_t cap, sqlp_class cls, const char *want, const char *what)
{
    sqlp_statement st;
    sqlp_decision d = held(sql, cls, &st);
    char *got = hold_capped_sql(&d, cap);
    CHECK(got && strcmp(got, want) == 0, what);
    if (got && strcmp(got, want) != 0)
        printf("  got:  %s\n  want: %s\n", got, want);
    free(got);
}

int main(void)
{
    check_capped("SELECT a FROM t", 0, SQLP_CLASS_READ, "SELECT a FROM t", "no cap: the approved text as is");
    check_capped("SELECT a FROM t;  \n", 10, SQLP_CLASS_READ,
                 "SELECT * FROM (\nSELECT a FROM t\n) AS phigate_row_cap LIMIT 10",
                 "cap: the text as a subquery under LIMIT, trailing ; and blanks cut");
    check_capped("SELECT a FROM t -- all of them", 5, SQLP_CLASS_READ,
                 "SELECT * FROM (\nSELECT a FROM t -- all of them\n) AS phigate_row_cap LIMIT 5",
                 "a trailing -- comment stays inside the subquery");
    check_capped("DELETE FROM t", 5, SQLP_CLASS_WRITE, "DELETE FROM t", "a cap does not wrap a write");

    sqlp_statement st;
    sqlp_decision d = held("SELECT ssn FROM patients", SQLP_CLASS_READ, &st);
    hold_origin who = {"agent1", "127.0.0.1:5000", "clinic", "mysql", 3000};
    hold_subject what = hold_subject_of(&d);
    approval_request req = hold_request(&who, &what, "select ssn from patients");
    CHECK(strcmp(req.protocol, "mysql") == 0 && strcmp(req.database, "clinic") == 0 && req.wait_ms == 3000,
          "request: who and how long");
    CHECK(strcmp(req.statement, "select ssn from patients") == 0, "request: the text as the agent sent it");
    CHECK(strcmp(req.fingerprint, "0123abcd") == 0 && strcmp(req.rule, "phi.unscoped_read") == 0,
          "request: fingerprint and rule of the decision");

    char msg[700];
    approval_result denied = {"00112233aabbccdd", "ana", "use a WHERE clause", 0};
    CHECK(hold_refusal(APPROVAL_DENIED, &denied, d.rule, msg, sizeof msg) == HOLD_REFUSED_DENIED, "denied kind");
    CHECK(strstr(msg, "ana") && strstr(msg, "use a WHERE clause") && strstr(msg, "00112233aabbccdd"),
          "denied: approver, reason and request id");
    approval_result late = {"00112233aabbccdd", NULL, "no decision in time", 0};
    CHECK(hold_refusal(APPROVAL_TIMEOUT, &late, d.rule, msg, sizeof msg) == HOLD_REFUSED_TIMEOUT, "timeout kind");
    CHECK(strstr(msg, "00112233aabbccdd") && strstr(msg, "retry") && strstr(msg, "phi.unscoped_read"),
          "timeout: the pending request and that a retry after approval passes");
    approval_result down = {NULL, NULL, "Redis: connection refused", 0};
    CHECK(hold_refusal(APPROVAL_UNAVAILABLE, &down, d.rule, msg, sizeof msg) == HOLD_REFUSED_UNAVAILABLE &&
              strstr(msg, "unavailable") && strstr(msg, "connection refused"),
          "unavailable: says the queue is down and why");
    CHECK(hold_refusal(APPROVAL_APPROVED, &down, d.rule, msg, sizeof msg) == HOLD_REFUSED_UNAVAILABLE,
          "asked about an approval, it fails closed");
    /* Bindings: the engine's subject, or the minimum-necessary checks' (copied, fingerprinted here). */
    hold_binding b;
    hold_binding_init(&b, &d, NULL, "select ssn from patients", 24);
    CHECK(!hold_binding_mn(&b) && strcmp(b.subject.fingerprint, "0123abcd") == 0 &&
              strcmp(b.subject.rule, "phi.unscoped_read") == 0,
          "binding of an engine hold: the decision's fingerprint and rule");
    hold_binding_clear(&b);
    minnec_outcome mn = {.rule = "min_necessary.estimate", .reason = "planner estimate 90 rows > limit 20"};
    hold_binding_init(&b, &d, &mn, "select ssn from patients limit 90", 33);
    mn.reason[0] = '\0'; /* the front's outcome may go away: the binding has its copy */
    CHECK(hold_binding_mn(&b) && strcmp(b.subject.rule, "min_necessary.estimate") == 0 &&
              strcmp(b.subject.reason, "planner estimate 90 rows > limit 20") == 0 && b.subject.fingerprint &&
              strcmp(b.subject.fingerprint, "0123abcd") != 0,
          "binding of a minimum-necessary hold: its rule, reason and a fingerprint of the text");
    hold_binding_clear(&b);

    /* A front's own hold (minimum necessary) fingerprints the text itself. */
    char *fp = hold_text_fingerprint("select ssn from patients where id = 3", 37);
    char *fp2 = hold_text_fingerprint("SELECT ssn FROM patients WHERE id = 9", 37);
    CHECK(fp && fp2 && strcmp(fp, fp2) == 0 && strncmp(fp, "sha256:", 7) != 0,
          "text fingerprint: pg_query's, the same for another constant");
    free(fp);
    free(fp2);
    fp = hold_text_fingerprint("select ssn from patients limit 100, 5", 37);
    fp2 = hold_text_fingerprint("select ssn from patients limit 100, 6", 37);
    CHECK(fp && fp2 && strncmp(fp, "sha256:", 7) == 0 && strlen(fp) == 7 + 64 && strcmp(fp, fp2) != 0,
          "text fingerprint: SHA-256 of the exact text where PostgreSQL's parser fails");
    free(fp);
    free(fp2);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
