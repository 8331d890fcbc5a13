/*
 * Unit tests for gate/approvals against a real Redis (see test_approvals_env.h
 * for how it is found): the async client on a real libevent loop, a second
 * (and third) instance playing the approvers and the other phigate.
 *
 * The outage tests stop the Redis under test (SIGKILL, SIGSTOP) and start it
 * again, so point them at a Redis of your own stack.
 */
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "gate/approvals.h"
#include "gate/log.h"
#include "tests/unit/test_approvals_env.h"

static struct event_base *base;
static test_redis R;
static char prefix[96];

/* ---- recorders ------------------------------------------------------------------------- */

typedef struct {
    volatile int calls;
    approval_outcome o;
    char id[64], approver[128], reason[1024];
    bool had_id;
    uint64_t row_cap;
    long long at_ms;
} outcome_rec;

static void on_outcome(void *arg, approval_outcome o, const approval_result *r)
{
    outcome_rec *rec = arg;
    rec->calls++;
    rec->o = o;
    rec->had_id = r->request_id != NULL;
    snprintf(rec->id, sizeof rec->id, "%s", r->request_id ? r->request_id : "");
    snprintf(rec->approver, sizeof rec->approver, "%s", r->approver ? r->approver : "");
    snprintf(rec->reason, sizeof rec->reason, "%s", r->reason ? r->reason : "(null)");
    rec->row_cap = r->row_cap;
    rec->at_ms = now_ms();
}

typedef struct {
    volatile int calls;
    approval_decision_status st;
    char msg[512];
} decide_rec;

static void on_decided(void *arg, approval_decision_status st, const char *msg)
{
    decide_rec *rec = arg;
    rec->calls++;
    rec->st = st;
    snprintf(rec->msg, sizeof rec->msg, "%s", msg);
}

typedef struct {
    volatile int calls;
    char err[512];
    bool failed;
    size_t n;
    char id[8][32], status[8][16], statement[8][256], identity[8][64], database[8][64], decided_by[8][64],
        reason[8][128];
    bool waiting[8];
    uint64_t row_cap[8], created[8], expires[8], now;
} info_rec;

static void on_info(void *arg, const char *err, const approval_info *items, size_t n, uint64_t now)
{
    info_rec *rec = arg;
    rec->calls++;
    rec->failed = err != NULL;
    snprintf(rec->err, sizeof rec->err, "%s", err ? err : "");
    rec->n = n;
    rec->now = now;
    for (size_t i = 0; i < n && i < 8; i++) {
        snprintf(rec->id[i], sizeof rec->id[i], "%s", items[i].id);
        snprintf(rec->status[i], sizeof rec->status[i], "%s", items[i].status);
        snprintf(rec->statement[i], sizeof rec->statement[i], "%s", items[i].statement);
        snprintf(rec->identity[i], sizeof rec->identity[i], "%s", items[i].identity);
        snprintf(rec->database[i], sizeof rec->database[i], "%s", items[i].database);
        snprintf(rec->decided_by[i], sizeof rec->decided_by[i], "%s", items[i].decided_by);
        snprintf(rec->reason[i], sizeof rec->reason[i], "%s", items[i].reason);
        rec->waiting[i] = items[i].waiting;
        rec->row_cap[i] = items[i].row_cap;
        rec->created[i] = items[i].created_ms;
        rec->expires[i] = items[i].expires_ms;
    }
}

/* ---- helpers --------------------------------------------------------------------------- */

static approvals *make(const char *instance, approvals_grant_mode mode, uint32_t poll_ms, uint32_t timeout_ms,
                       uint32_t request_ttl_s)
{
    approvals_opts o = {
        .host = R.host,
        .port = R.port,
        .password = R.password[0] ? R.password : NULL,
        .key_prefix = prefix,
        .request_ttl_s = request_ttl_s,
        .grant_mode = mode,
        .grant_ttl_s = 60,
        .timeout_ms = timeout_ms,
        .poll_ms = poll_ms,
        .instance = instance,
    };
    char err[256];
    approvals *a = approvals_new(base, &o, err, sizeof err);
    if (!a)
        fprintf(stderr, "approvals_new: %s\n", err);
    return a;
}

static bool wait_available(approvals *a, long long ms)
{
    long long deadline = now_ms() + ms;
    while (!approvals_available(a) && now_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
    return approvals_available(a);
}

static approval_request req_of(const char *identity, const char *fp, const char *stmt, uint32_t wait_ms)
{
    return (approval_request){
        .identity = identity,
        .client_addr = "127.0.0.1:50000",
        .database = "clinic",
        .protocol = "postgres",
        .statement = stmt,
        .fingerprint = fp,
        .reason = "unscoped read of PHI table patients",
        .rule = "unscoped_read",
        .wait_ms = wait_ms,
    };
}

static approval_decision_status decide(approvals *b, const char *id, const char *who, bool approve,
                                       const char *reason, uint32_t ttl, uint64_t cap, char *msg, size_t msglen)
{
    decide_rec rec = {0};
    approval_decision d = {id, who, approve, reason, ttl, cap};
    approvals_op *op = approvals_decide(b, &d, on_decided, &rec);
    if (!op)
        return DECISION_UNAVAILABLE;
    CHECK(rec.calls == 0); /* never inline */
    run_until(base, &rec.calls, 5000);
    if (msg)
        snprintf(msg, msglen, "%s", rec.msg);
    return rec.calls == 1 ? rec.st : DECISION_UNAVAILABLE;
}

static bool get_info(approvals *b, const char *id, info_rec *rec)
{
    memset(rec, 0, sizeof *rec);
    approvals_op *op = approvals_get(b, id, on_info, rec);
    return op && run_until(base, &rec->calls, 5000) && !rec->failed;
}

static char *req_key(const char *id)
{
    static char key[200];
    snprintf(key, sizeof key, "%sreq:%s", prefix, id);
    return key;
}

/* A unique fingerprint per test so grants of one test never serve another. */
static const char *fp(const char *name)
{
    static char buf[8][96];
    static int n;
    char *out = buf[n++ % 8];
    snprintf(out, 96, "fp-%s-%d", name, getpid());
    return out;
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_approve_via_second_instance(approvals *a, approvals *b)
{
    outcome_rec rec = {0};
    approval_request q = req_of("agent1", fp("approve"), "SELECT * FROM patients", 10000);
    approval_wait *w = approvals_request(a, &q, on_outcome, &rec);
    CHECK(w != NULL);
    CHECK(rec.calls == 0); /* never inline */
    char id[64];
    snprintf(id, sizeof id, "%s", approval_wait_id(w));
    CHECK(strlen(id) == APPROVALS_ID_LEN);
    run_for(base, 200);
    CHECK(rec.calls == 0);

    /* The approver lists it and sees the request as it was held. */
    info_rec list = {0};
    approvals_op *op = approvals_list_pending(b, 100, on_info, &list);
    CHECK(op && run_until(base, &list.calls, 5000));
    bool found = false;
    for (size_t i = 0; i < list.n && i < 8; i++)
        if (!strcmp(list.id[i], id)) {
            found = true;
            CHECK(!strcmp(list.statement[i], "SELECT * FROM patients"));
            CHECK(!strcmp(list.identity[i], "agent1"));
            CHECK(!strcmp(list.database[i], "clinic"));
            CHECK(!strcmp(list.status[i], "pending"));
            CHECK(list.waiting[i]);
            CHECK(list.created[i] > 0 && list.expires[i] > list.created[i]);
            CHECK(!strcmp(list.reason[i], "unscoped read of PHI table patients"));
        }
    CHECK(found);

    long long t0 = now_ms();
    char msg[512];
    CHECK(decide(b, id, "dr_house", true, "ok for the audit", 0, 25, msg, sizeof msg) == DECISION_OK);
    CHECK(strstr(msg, "approved by dr_house") != NULL);
    CHECK(run_until(base, &rec.calls, 3000));
    CHECK(rec.calls == 1);
    CHECK(rec.o == APPROVAL_APPROVED);
    CHECK(!strcmp(rec.approver, "dr_house"));
    CHECK(!strcmp(rec.reason, "ok for the audit"));
    CHECK(!strcmp(rec.id, id));
    CHECK(rec.row_cap == 25);
    /* a's poll interval is a minute: only the pub/sub message can have woken it this fast. */
    CHECK(rec.at_ms - t0 < 1000);
    run_for(base, 100);
    CHECK(rec.calls == 1);

    info_rec got;
    CHECK(get_info(b, id, &got));
    CHECK(got.n == 1 && !strcmp(got.status[0], "approved") && !strcmp(got.decided_by[0], "dr_house"));
    CHECK(got.row_cap[0] == 25 && !got.waiting[0]);
    /* The single-use grant went to the waiter: nothing left for a retry. */
    outcome_rec again = {0};
    q.wait_ms = 200;
    approval_wait *w2 = approvals_request(a, &q, on_outcome, &again);
    CHECK(w2 && run_until(base, &again.calls, 3000));
    CHECK(again.o == APPROVAL_TIMEOUT);
}

static void test_deny(approvals *a, approvals *b)
{
    outcome_rec rec = {0};
    approval_request q = req_of("agent1", fp("deny"), "DELETE FROM patients", 10000);
    approval_wait *w = approvals_request(a, &q, on_outcome, &rec);
    run_for(base, 100);
    char msg[512];
    CHECK(decide(b, approval_wait_id(w), "dr_cuddy", false, "", 0, 0, msg, sizeof msg) == DECISION_INVALID);
    CHECK(strstr(msg, "reason") != NULL);
    CHECK(decide(b, approval_wait_id(w), "dr_cuddy", false, "no bulk deletes <b>today</b>", 0, 0, NULL, 0) ==
          DECISION_OK);
    CHECK(run_until(base, &rec.calls, 3000));
    CHECK(rec.o == APPROVAL_DENIED);
    CHECK(!strcmp(rec.approver, "dr_cuddy"));
    CHECK(!strcmp(rec.reason, "no bulk deletes <b>today</b>"));
    /* A second decision loses. */
    CHECK(decide(b, rec.id, "dr_house", true, "", 0, 0, msg, sizeof msg) == DECISION_NOT_PENDING);
    CHECK(strstr(msg, "already denied by dr_cuddy") != NULL);
}

/* Timeout leaves the request pending; a later approval is a grant the retry
 * consumes once (single-use); the retry after that waits again. */
static void test_timeout_then_single_use_grant(approvals *a, approvals *b)
{
    outcome_rec rec = {0};
    const char *f = fp("single");
    approval_request q = req_of("agent2", f, "SELECT ssn FROM patients", 300);
    long long t0 = now_ms();
    approval_wait *w = approvals_request(a, &q, on_outcome, &rec);
    CHECK(w != NULL);
    CHECK(run_until(base, &rec.calls, 3000));
    CHECK(rec.o == APPROVAL_TIMEOUT);
    CHECK(now_ms() - t0 >= 290);
    CHECK(rec.had_id && strlen(rec.id) == APPROVALS_ID_LEN);
    CHECK(strstr(rec.reason, rec.id) != NULL); /* the agent is told which request */
    char id[64];
    snprintf(id, sizeof id, "%s", rec.id);
    run_for(base, 200);
    info_rec got;
    CHECK(get_info(b, id, &got));
    CHECK(got.n == 1 && !strcmp(got.status[0], "pending") && !got.waiting[0]);

    CHECK(decide(b, id, "dr_wilson", true, "one export", 0, 0, NULL, 0) == DECISION_OK);
    outcome_rec retry = {0};
    q.wait_ms = 5000;
    approval_wait *w2 = approvals_request(a, &q, on_outcome, &retry);
    CHECK(w2 != NULL && retry.calls == 0);
    t0 = now_ms();
    CHECK(run_until(base, &retry.calls, 3000));
    CHECK(retry.o == APPROVAL_APPROVED);
    CHECK(!strcmp(retry.id, id)); /* the approval it used */
    CHECK(!strcmp(retry.approver, "dr_wilson"));
    CHECK(now_ms() - t0 < 1000);

    outcome_rec second = {0};
    q.wait_ms = 300;
    CHECK(approvals_request(a, &q, on_outcome, &second) != NULL);
    CHECK(run_until(base, &second.calls, 3000));
    CHECK(second.o == APPROVAL_TIMEOUT);
    CHECK(strcmp(second.id, id) != 0); /* a new request */
}

/* With grant: ttl an approval serves every retry until it expires, for that
 * identity and fingerprint only. */
static void test_ttl_grant(approvals *b)
{
    approvals *t = make("ttl-instance", APPROVAL_GRANT_MODE_TTL, 60000, 2000, 3600);
    CHECK(t && wait_available(t, 5000));
    const char *f = fp("ttl");
    outcome_rec rec = {0};
    approval_request q = req_of("agent3", f, "SELECT * FROM visits", 200);
    CHECK(approvals_request(t, &q, on_outcome, &rec) != NULL);
    CHECK(run_until(base, &rec.calls, 3000) && rec.o == APPROVAL_TIMEOUT);
    CHECK(decide(t, rec.id, "dr_foreman", true, "reporting window", 0, 0, NULL, 0) == DECISION_OK);
    for (int i = 0; i < 2; i++) {
        outcome_rec r2 = {0};
        CHECK(approvals_request(t, &q, on_outcome, &r2) != NULL);
        CHECK(run_until(base, &r2.calls, 3000));
        CHECK(r2.o == APPROVAL_APPROVED && !strcmp(r2.id, rec.id));
    }
    /* Another identity with the same statement, and the same identity with another one, still wait. */
    outcome_rec other = {0}, otherfp = {0};
    approval_request q2 = req_of("agent4", f, "SELECT * FROM visits", 200);
    approval_request q3 = req_of("agent3", fp("ttl-other"), "SELECT * FROM visits v", 200);
    CHECK(approvals_request(t, &q2, on_outcome, &other) != NULL);
    CHECK(approvals_request(t, &q3, on_outcome, &otherfp) != NULL);
    CHECK(run_until(base, &other.calls, 3000) && other.o == APPROVAL_TIMEOUT);
    CHECK(run_until(base, &otherfp.calls, 3000) && otherfp.o == APPROVAL_TIMEOUT);
    /* A short explicit ttl expires. */
    outcome_rec r3 = {0};
    approval_request q4 = req_of("agent3", fp("ttl-short"), "SELECT 1", 200);
    CHECK(approvals_request(t, &q4, on_outcome, &r3) != NULL);
    CHECK(run_until(base, &r3.calls, 3000) && r3.o == APPROVAL_TIMEOUT);
    CHECK(decide(b, r3.id, "dr_foreman", true, "", 1, 0, NULL, 0) == DECISION_OK);
    run_for(base, 1200);
    outcome_rec r4 = {0};
    CHECK(approvals_request(t, &q4, on_outcome, &r4) != NULL);
    CHECK(run_until(base, &r4.calls, 3000) && r4.o == APPROVAL_TIMEOUT);
    approvals_free(t);
}

static void test_self_approval(approvals *a, approvals *b)
{
    outcome_rec rec = {0};
    approval_request q = req_of("mallory", fp("self"), "SELECT * FROM patients", 300);
    CHECK(approvals_request(a, &q, on_outcome, &rec) != NULL);
    CHECK(run_until(base, &rec.calls, 3000) && rec.o == APPROVAL_TIMEOUT);
    char msg[512];
    CHECK(decide(b, rec.id, "mallory", true, "trust me", 0, 0, msg, sizeof msg) == DECISION_SELF);
    CHECK(strstr(msg, "self-approval") != NULL);
    info_rec got;
    CHECK(get_info(b, rec.id, &got) && got.n == 1 && !strcmp(got.status[0], "pending"));
    /* No grant was made either. */
    outcome_rec retry = {0};
    CHECK(approvals_request(a, &q, on_outcome, &retry) != NULL);
    CHECK(run_until(base, &retry.calls, 3000) && retry.o == APPROVAL_TIMEOUT);
}

/* Two approvers decide the same request at the same moment: one wins. */
static void test_race(approvals *a, approvals *b, approvals *c)
{
    int ok = 0, lost = 0;
    for (int i = 0; i < 20; i++) {
        outcome_rec rec = {0};
        char name[32];
        snprintf(name, sizeof name, "race-%d", i);
        approval_request q = req_of("agent5", fp(name), "UPDATE patients SET x = 1", 5000);
        approval_wait *w = approvals_request(a, &q, on_outcome, &rec);
        run_for(base, 30);
        decide_rec d1 = {0}, d2 = {0};
        approval_decision yes = {approval_wait_id(w), "dr_house", true, "go", 0, 0};
        approval_decision no = {approval_wait_id(w), "dr_cuddy", false, "stop", 0, 0};
        approvals_op *o1 = approvals_decide(b, &yes, on_decided, &d1);
        approvals_op *o2 = approvals_decide(c, &no, on_decided, &d2);
        CHECK(o1 && o2);
        while ((d1.calls == 0 || d2.calls == 0) && run_until(base, &d1.calls, 3000) && run_until(base, &d2.calls, 3000))
            ;
        CHECK(d1.calls == 1 && d2.calls == 1);
        int winners = (d1.st == DECISION_OK) + (d2.st == DECISION_OK);
        CHECK(winners == 1);
        CHECK((d1.st == DECISION_OK && d2.st == DECISION_NOT_PENDING) ||
              (d2.st == DECISION_OK && d1.st == DECISION_NOT_PENDING));
        CHECK(run_until(base, &rec.calls, 3000));
        CHECK(rec.o == (d1.st == DECISION_OK ? APPROVAL_APPROVED : APPROVAL_DENIED));
        ok += winners == 1;
        lost += (d1.st == DECISION_NOT_PENDING) + (d2.st == DECISION_NOT_PENDING);
    }
    CHECK(ok == 20 && lost == 20);
}

static void test_not_found_expired_invalid(approvals *b)
{
    char msg[512];
    CHECK(decide(b, "0123456789abcdef", "dr_house", true, "", 0, 0, msg, sizeof msg) == DECISION_NOT_FOUND);
    CHECK(decide(b, "../../etc", "dr_house", true, "", 0, 0, NULL, 0) == DECISION_INVALID);
    CHECK(decide(b, "0123456789abcdef", "", true, "", 0, 0, NULL, 0) == DECISION_INVALID);
    CHECK(decide(b, "0123456789abcdef", "x", true, "", 700000, 0, NULL, 0) == DECISION_INVALID);
    info_rec got;
    CHECK(get_info(b, "0123456789abcdef", &got) && got.n == 0);
    CHECK(get_info(b, "not-an-id", &got) && got.n == 0);

    /* A request whose time in the queue ran out cannot be approved. */
    approvals *s = make("short-ttl", APPROVAL_GRANT_MODE_SINGLE_USE, 60000, 2000, 1);
    CHECK(s && wait_available(s, 5000));
    outcome_rec rec = {0};
    approval_request q = req_of("agent6", fp("expire"), "SELECT * FROM patients", 100);
    CHECK(approvals_request(s, &q, on_outcome, &rec) != NULL);
    CHECK(run_until(base, &rec.calls, 3000) && rec.o == APPROVAL_TIMEOUT);
    run_for(base, 1100);
    CHECK(decide(b, rec.id, "dr_house", true, "", 0, 0, msg, sizeof msg) == DECISION_EXPIRED);
    CHECK(strstr(msg, "expired") != NULL);
    CHECK(get_info(b, rec.id, &got) && got.n == 1 && !strcmp(got.status[0], "expired"));
    /* An agent still waiting when its request expires is told so. */
    outcome_rec rec2 = {0};
    q.wait_ms = 5000;
    q.fingerprint = fp("expire-wait");
    CHECK(approvals_request(s, &q, on_outcome, &rec2) != NULL);
    CHECK(run_until(base, &rec2.calls, 4000));
    CHECK(rec2.o == APPROVAL_DENIED && strstr(rec2.reason, "expired") != NULL);
    approvals_free(s);
}

static void test_cancel(approvals *a, approvals *b)
{
    outcome_rec rec = {0};
    approval_request q = req_of("agent7", fp("cancel"), "SELECT * FROM patients", 5000);
    approval_wait *w = approvals_request(a, &q, on_outcome, &rec);
    char id[64];
    snprintf(id, sizeof id, "%s", approval_wait_id(w));
    run_for(base, 100);
    approval_wait_cancel(w);
    run_for(base, 300);
    CHECK(rec.calls == 0);
    info_rec got;
    CHECK(get_info(b, id, &got) && got.n == 1 && !strcmp(got.status[0], "withdrawn"));
    CHECK(decide(b, id, "dr_house", true, "", 0, 0, NULL, 0) == DECISION_NOT_PENDING);
    /* Cancelled before BEGIN even reached Redis: still withdrawn, still silent. */
    outcome_rec rec2 = {0};
    approval_wait *w2 = approvals_request(a, &q, on_outcome, &rec2);
    snprintf(id, sizeof id, "%s", approval_wait_id(w2));
    approval_wait_cancel(w2);
    run_for(base, 300);
    CHECK(rec2.calls == 0);
    CHECK(get_info(b, id, &got) && got.n == 1 && !strcmp(got.status[0], "withdrawn"));
}

static void test_limits_and_zero_wait(approvals *a)
{
    size_t big = APPROVALS_MAX_STATEMENT + 1;
    char *s = malloc(big + 1);
    memset(s, 'x', big);
    s[big] = '\0';
    outcome_rec rec = {0};
    approval_request q = req_of("agent8", fp("big"), s, 1000);
    CHECK(approvals_request(a, &q, on_outcome, &rec) != NULL);
    CHECK(rec.calls == 0);
    CHECK(run_until(base, &rec.calls, 1000) && rec.o == APPROVAL_DENIED && !rec.had_id);
    CHECK(strstr(rec.reason, "too long") != NULL);
    free(s);

    outcome_rec none = {0};
    approval_request q2 = req_of("", fp("noid"), "SELECT 1", 1000);
    CHECK(approvals_request(a, &q2, on_outcome, &none) != NULL);
    CHECK(run_until(base, &none.calls, 1000) && none.o == APPROVAL_DENIED);

    outcome_rec zero = {0};
    approval_request q3 = req_of("agent8", fp("zero"), "SELECT 'x'", 0);
    CHECK(approvals_request(a, &q3, on_outcome, &zero) != NULL);
    CHECK(run_until(base, &zero.calls, 2000) && zero.o == APPROVAL_TIMEOUT && zero.had_id);
}

/* Statement text is kept byte for byte (quotes, newlines, markup, UTF-8). */
static void test_statement_roundtrip(approvals *a, approvals *b)
{
    const char *stmt = "SELECT '<script>alert(1)</script>', \"Zoë\" -- ünïcode\n\tFROM patients WHERE x = '\\''";
    outcome_rec rec = {0};
    approval_request q = req_of("agent9", fp("bytes"), stmt, 100);
    CHECK(approvals_request(a, &q, on_outcome, &rec) != NULL);
    CHECK(run_until(base, &rec.calls, 2000));
    info_rec got;
    CHECK(get_info(b, rec.id, &got) && got.n == 1 && !strcmp(got.statement[0], stmt));
    char *raw = test_redis_hget(&R, req_key(rec.id), "statement");
    CHECK(raw && !strcmp(raw, stmt));
    free(raw);
}

/* Many statements held at once, all approved from the other instance. */
static void test_many_waiters(approvals *a, approvals *b)
{
    enum { N = 40 };
    static outcome_rec recs[N];
    approval_wait *ws[N];
    char ids[N][64];
    memset(recs, 0, sizeof recs);
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "many-%d", i);
        approval_request q = req_of("agent10", fp(name), "SELECT * FROM patients", 10000);
        ws[i] = approvals_request(a, &q, on_outcome, &recs[i]);
        snprintf(ids[i], sizeof ids[i], "%s", approval_wait_id(ws[i]));
    }
    run_for(base, 200);
    static decide_rec ds[N];
    memset(ds, 0, sizeof ds);
    for (int i = 0; i < N; i++) {
        approval_decision d = {ids[i], "dr_house", i % 2 == 0, "batch", 0, 0};
        approvals_op *op = approvals_decide(b, &d, on_decided, &ds[i]);
        CHECK(op != NULL);
    }
    long long deadline = now_ms() + 5000;
    int done;
    do {
        event_base_loop(base, EVLOOP_ONCE);
        done = 0;
        for (int i = 0; i < N; i++)
            done += recs[i].calls;
    } while (done < N && now_ms() < deadline);
    CHECK(done == N);
    int right = 0;
    for (int i = 0; i < N; i++)
        right += recs[i].calls == 1 && ds[i].st == DECISION_OK &&
                 recs[i].o == (i % 2 == 0 ? APPROVAL_APPROVED : APPROVAL_DENIED);
    CHECK(right == N);
}

/* Redis not there at all: refused quickly with a reason, never inline. */
/* ---- PHI row budgets (script BUDGET) ----------------------------------------------------- */

typedef struct {
    volatile int calls;
    bool failed;
    char err[256];
    uint64_t used;
    int64_t ttl;
} budget_rec;

static void on_budget(void *arg, const char *err, uint64_t used, int64_t ttl_ms)
{
    budget_rec *rec = arg;
    rec->calls++;
    rec->failed = err != NULL;
    snprintf(rec->err, sizeof rec->err, "%s", err ? err : "");
    rec->used = used;
    rec->ttl = ttl_ms;
}

static budget_rec budget(approvals *a, const char *identity, uint64_t add, uint32_t window_ms)
{
    budget_rec rec = {0};
    approvals_op *op = approvals_budget(a, identity, add, window_ms, on_budget, &rec);
    CHECK(op != NULL);
    CHECK(rec.calls == 0); /* never inline */
    CHECK(run_until(base, &rec.calls, 3000));
    return rec;
}

static void test_budget(approvals *a, approvals *b)
{
    budget_rec r = budget(a, "agent_budget", 0, 1200);
    CHECK(!r.failed && r.used == 0 && r.ttl == -1); /* nothing counted: no window open */
    r = budget(a, "agent_budget", 7, 1200);
    CHECK(!r.failed && r.used == 7 && r.ttl > 0 && r.ttl <= 1200);
    r = budget(b, "agent_budget", 5, 1200); /* another instance adds to the same count */
    CHECK(!r.failed && r.used == 12 && r.ttl > 0 && r.ttl <= 1200);
    r = budget(b, "agent_other", 0, 1200);
    CHECK(!r.failed && r.used == 0); /* per identity */
    run_for(base, 1300);
    r = budget(a, "agent_budget", 0, 1200);
    CHECK(!r.failed && r.used == 0 && r.ttl == -1); /* the window closed: counting starts again */
    r = budget(a, "agent_budget", 3, 60000);
    CHECK(!r.failed && r.used == 3 && r.ttl > 1200);
    /* Cancelled: no callback. */
    budget_rec c = {0};
    approvals_op *op = approvals_budget(a, "agent_budget", 1, 60000, on_budget, &c);
    approvals_op_cancel(op);
    run_for(base, 200);
    CHECK(c.calls == 0);
    /* A count without a callback still counts. */
    CHECK(approvals_budget(a, "agent_budget", 10, 60000, NULL, NULL) != NULL);
    r = budget(a, "agent_budget", 0, 60000);
    CHECK(!r.failed && r.used == 14);
}

static void test_unreachable(void)
{
    approvals_opts o = {.host = "127.0.0.1", .port = 1, .key_prefix = prefix, .timeout_ms = 300};
    char err[256];
    approvals *x = approvals_new(base, &o, err, sizeof err);
    CHECK(x != NULL);
    run_for(base, 100);
    CHECK(!approvals_available(x));
    outcome_rec rec = {0};
    approval_request q = req_of("agent11", fp("down"), "SELECT 1", 5000);
    CHECK(approvals_request(x, &q, on_outcome, &rec) != NULL);
    CHECK(rec.calls == 0);
    CHECK(run_until(base, &rec.calls, 1000) && rec.o == APPROVAL_UNAVAILABLE);
    CHECK(strstr(rec.reason, "unavailable") != NULL && strstr(rec.reason, "127.0.0.1:1") != NULL);
    decide_rec d = {0};
    approval_decision dd = {"0123456789abcdef", "dr_house", true, "", 0, 0};
    approvals_op *op = approvals_decide(x, &dd, on_decided, &d);
    CHECK(op && run_until(base, &d.calls, 1000) && d.st == DECISION_UNAVAILABLE);
    info_rec l = {0};
    op = approvals_list_pending(x, 10, on_info, &l);
    CHECK(op && run_until(base, &l.calls, 1000) && l.failed);
    budget_rec br = budget(x, "agent11", 0, 1000);
    CHECK(br.failed && strstr(br.err, "PHI row budget unavailable") && strstr(br.err, "127.0.0.1:1"));
    /* Freeing with work outstanding: callbacks run inside approvals_free, once. */
    outcome_rec pending = {0};
    decide_rec pd = {0};
    CHECK(approvals_request(x, &q, on_outcome, &pending) != NULL);
    approvals_op *op2 = approvals_decide(x, &dd, on_decided, &pd);
    CHECK(op2 != NULL);
    approvals_free(x);
    CHECK(pending.calls == 1 && pending.o == APPROVAL_UNAVAILABLE);
    CHECK(pd.calls == 1 && pd.st == DECISION_UNAVAILABLE);
    run_for(base, 50);
    CHECK(pending.calls == 1 && pd.calls == 1);
}

/* Wrong password: a clear reason, not a hang. */
static void test_bad_password(void)
{
    approvals_opts o = {.host = R.host, .port = R.port, .password = "wrong-password", .key_prefix = prefix,
                        .timeout_ms = 1000};
    char err[256];
    approvals *x = approvals_new(base, &o, err, sizeof err);
    run_for(base, 300);
    CHECK(!approvals_available(x));
    CHECK(strstr(approvals_last_error(x), "AUTH") != NULL || strstr(approvals_last_error(x), "WRONGPASS") != NULL);
    outcome_rec rec = {0};
    approval_request q = req_of("agent12", fp("badpw"), "SELECT 1", 5000);
    CHECK(approvals_request(x, &q, on_outcome, &rec) != NULL);
    CHECK(run_until(base, &rec.calls, 1000) && rec.o == APPROVAL_UNAVAILABLE);
    approvals_free(x);
}

/* Someone flushes Redis's script cache: that command fails closed, the client
 * reconnects (reloading its scripts) and carries on. */
static void test_script_flush(approvals *a)
{
    redisContext *c = test_redis_sync(&R);
    CHECK(c != NULL);
    if (!c)
        return;
    redisReply *rep = redisCommand(c, "SCRIPT FLUSH");
    CHECK(rep && rep->type == REDIS_REPLY_STATUS);
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    outcome_rec rec = {0};
    approval_request q = req_of("agent15", fp("flush"), "SELECT 1", 100);
    CHECK(approvals_request(a, &q, on_outcome, &rec) != NULL);
    CHECK(run_until(base, &rec.calls, 3000) && rec.o == APPROVAL_UNAVAILABLE && strstr(rec.reason, "NOSCRIPT"));
    CHECK(wait_available(a, 5000));
    outcome_rec again = {0};
    CHECK(approvals_request(a, &q, on_outcome, &again) != NULL);
    CHECK(run_until(base, &again.calls, 3000) && again.o == APPROVAL_TIMEOUT);
}

/* ---- outages of the real server ------------------------------------------------------------ */

static long redis_pid(void)
{
    char path[1200];
    long pid = 0;
    if (R.stack_dir[0]) {
        snprintf(path, sizeof path, "%s/redis/redis.pid", R.stack_dir);
        FILE *f = fopen(path, "r");
        if (f) {
            if (fscanf(f, "%ld", &pid) != 1)
                pid = 0;
            fclose(f);
        }
        if (pid > 0)
            return pid;
    }
    redisContext *c = test_redis_sync(&R);
    if (!c)
        return 0;
    redisReply *rep = redisCommand(c, "INFO server");
    const char *p = rep && rep->type == REDIS_REPLY_STRING ? strstr(rep->str, "process_id:") : NULL;
    if (p)
        pid = atol(p + 11);
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    return pid;
}

static char redis_conf[1024];

static void remember_redis_conf(void)
{
    redisContext *c = test_redis_sync(&R);
    if (!c)
        return;
    redisReply *rep = redisCommand(c, "INFO server");
    const char *p = rep && rep->type == REDIS_REPLY_STRING ? strstr(rep->str, "config_file:") : NULL;
    if (p)
        snprintf(redis_conf, sizeof redis_conf, "%.*s", (int)strcspn(p + 12, "\r\n"), p + 12);
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
}

static bool redis_ping(void)
{
    redisContext *c = test_redis_sync(&R);
    if (!c)
        return false;
    redisReply *rep = redisCommand(c, "PING");
    bool ok = rep && rep->type == REDIS_REPLY_STATUS;
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    return ok;
}

/* scripts/stack.sh start when we know the stack, else the server's own config file. */
static bool redis_restart(void)
{
    char cmd[3000], exe[1024], repo[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    snprintf(repo, sizeof repo, "%s", getenv("PHIGATE_REPO") ? getenv("PHIGATE_REPO") : "");
    if (!repo[0] && n > 0) { /* <repo>/<build>/tests/test_approvals */
        for (int up = 0; up < 3; up++) {
            char *slash = strrchr(exe, '/');
            if (slash)
                *slash = '\0';
        }
        snprintf(repo, sizeof repo, "%s", exe);
    }
    char stack_sh[1100];
    snprintf(stack_sh, sizeof stack_sh, "%s/scripts/stack.sh", repo);
    struct stat st;
    if (R.stack_dir[0] && stat(stack_sh, &st) == 0) {
        snprintf(cmd, sizeof cmd, "env -u PHIGATE_PORT_BASE PHIGATE_STACK_DIR='%s' '%s' start >/dev/null 2>&1",
                 R.stack_dir, stack_sh);
    } else if (redis_conf[0] && stat(redis_conf, &st) == 0) {
        snprintf(cmd, sizeof cmd, "runuser -u \"$(stat -c %%U '%s')\" -- redis-server '%s' >/dev/null 2>&1",
                 redis_conf, redis_conf);
    } else {
        fprintf(stderr, "cannot restart Redis: set STACK_DIR (scripts/stack.sh env) or PHIGATE_REPO\n");
        return false;
    }
    if (system(cmd) != 0)
        fprintf(stderr, "restart command failed: %s\n", cmd);
    long long deadline = now_ms() + 20000;
    while (!redis_ping() && now_ms() < deadline)
        usleep(100000);
    return redis_ping();
}

static void test_redis_killed_mid_wait(approvals *a, approvals *b)
{
    remember_redis_conf();
    long pid = redis_pid();
    CHECK(pid > 1);
    if (pid <= 1)
        return;
    outcome_rec rec = {0};
    approval_request q = req_of("agent13", fp("killed"), "SELECT * FROM patients", 30000);
    approval_wait *w = approvals_request(a, &q, on_outcome, &rec);
    char id[64];
    snprintf(id, sizeof id, "%s", approval_wait_id(w));
    run_for(base, 300);
    CHECK(rec.calls == 0);
    long long t0 = now_ms();
    CHECK(kill((pid_t)pid, SIGKILL) == 0);
    CHECK(run_until(base, &rec.calls, 5000));
    CHECK(rec.o == APPROVAL_UNAVAILABLE);
    CHECK(now_ms() - t0 < 3000);
    CHECK(strstr(rec.reason, id) != NULL);
    CHECK(!approvals_available(a));
    /* While it is down new requests are refused at once. */
    outcome_rec down = {0};
    CHECK(approvals_request(a, &q, on_outcome, &down) != NULL);
    CHECK(run_until(base, &down.calls, 3000) && down.o == APPROVAL_UNAVAILABLE);

    CHECK(redis_restart());
    CHECK(wait_available(a, 10000));
    CHECK(wait_available(b, 10000));
    /* The request Redis acknowledged before the crash survived it (appendonly). */
    char *st = test_redis_hget(&R, req_key(id), "status");
    CHECK(st && !strcmp(st, "pending"));
    free(st);
    /* And the queue works again: approve it, and the retry passes. */
    CHECK(decide(b, id, "dr_house", true, "after the outage", 0, 0, NULL, 0) == DECISION_OK);
    outcome_rec retry = {0};
    CHECK(approvals_request(a, &q, on_outcome, &retry) != NULL);
    CHECK(run_until(base, &retry.calls, 3000) && retry.o == APPROVAL_APPROVED && !strcmp(retry.id, id));
}

/* Never leave the shared Redis frozen, whatever happens to this process. */
static volatile pid_t stopped_pid;

static void thaw_redis(void)
{
    if (stopped_pid > 0)
        kill(stopped_pid, SIGCONT);
}

static void thaw_and_die(int sig)
{
    thaw_redis();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* A server that stops answering (SIGSTOP) is as good as down: the per-command
 * timer fails the waiter, and the client recovers once it answers again. */
static void test_redis_hung(void)
{
    approvals *s = make("slow-instance", APPROVAL_GRANT_MODE_SINGLE_USE, 200, 400, 3600);
    CHECK(s && wait_available(s, 5000));
    long pid = redis_pid();
    CHECK(pid > 1);
    if (pid <= 1 || !s)
        return;
    outcome_rec rec = {0};
    approval_request q = req_of("agent14", fp("hung"), "SELECT * FROM patients", 30000);
    CHECK(approvals_request(s, &q, on_outcome, &rec) != NULL);
    run_for(base, 300);
    CHECK(rec.calls == 0);
    long long t0 = now_ms();
    stopped_pid = (pid_t)pid;
    atexit(thaw_redis);
    signal(SIGABRT, thaw_and_die), signal(SIGSEGV, thaw_and_die), signal(SIGTERM, thaw_and_die);
    signal(SIGINT, thaw_and_die);
    CHECK(kill((pid_t)pid, SIGSTOP) == 0);
    CHECK(run_until(base, &rec.calls, 5000));
    long long took = now_ms() - t0;
    CHECK(rec.o == APPROVAL_UNAVAILABLE);
    CHECK(took < 2000);
    CHECK(strstr(rec.reason, "did not answer") != NULL);
    outcome_rec hung = {0};
    run_for(base, 100);
    t0 = now_ms();
    CHECK(approvals_request(s, &q, on_outcome, &hung) != NULL);
    CHECK(run_until(base, &hung.calls, 3000) && hung.o == APPROVAL_UNAVAILABLE);
    CHECK(now_ms() - t0 < 1500);
    CHECK(kill((pid_t)pid, SIGCONT) == 0);
    stopped_pid = 0;
    CHECK(wait_available(s, 10000));
    outcome_rec back = {0};
    q.wait_ms = 100;
    CHECK(approvals_request(s, &q, on_outcome, &back) != NULL);
    CHECK(run_until(base, &back.calls, 3000) && back.o == APPROVAL_TIMEOUT);
    approvals_free(s);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    log_set_level(getenv("PHIGATE_TEST_DEBUG") ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR);
    signal(SIGPIPE, SIG_IGN);
    if (!test_redis_locate(&R)) {
        printf("0 passed, 1 failed\n");
        return 1;
    }
    if (!redis_ping()) {
        fprintf(stderr,
                "FAIL: cannot reach Redis at %s:%d (is it running? PHIGATE_PORT_BASE=58600 scripts/stack.sh start)\n",
                R.host, R.port);
        printf("0 passed, 1 failed\n");
        return 1;
    }
    snprintf(prefix, sizeof prefix, "phigate-test:%d:%lld:", (int)getpid(), now_ms());
    base = event_base_new();
    struct event *ticker = test_ticker(base);

    approvals *a = make("instance-a", APPROVAL_GRANT_MODE_SINGLE_USE, 60000, 2000, 3600);
    approvals *b = make("instance-b", APPROVAL_GRANT_MODE_SINGLE_USE, 1000, 2000, 3600);
    approvals *c = make("instance-c", APPROVAL_GRANT_MODE_SINGLE_USE, 1000, 2000, 3600);
    CHECK(a && b && c);
    CHECK(wait_available(a, 5000) && wait_available(b, 5000) && wait_available(c, 5000));
    if (a && b && c && approvals_available(a)) {
        test_approve_via_second_instance(a, b);
        test_deny(a, b);
        test_timeout_then_single_use_grant(a, b);
        test_ttl_grant(b);
        test_self_approval(a, b);
        test_race(a, b, c);
        test_not_found_expired_invalid(b);
        test_cancel(a, b);
        test_limits_and_zero_wait(a);
        test_statement_roundtrip(a, b);
        test_many_waiters(a, b);
        test_budget(a, b);
        test_unreachable();
        test_bad_password();
        test_script_flush(a);
        test_redis_killed_mid_wait(a, b);
        test_redis_hung();
    }
    approvals_free(a);
    approvals_free(b);
    approvals_free(c);
    event_free(ticker);
    event_base_free(base);
    test_redis_cleanup(&R, prefix);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
