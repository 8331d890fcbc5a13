/* Per-identity limits: connection slots and the statement token bucket. */
#include <stdio.h>

#include "gate/limits.h"

static int passed, failed;
#define CHECK(c, what) ((c) ? (void)passed++ : (void)(failed++, printf("FAIL %s (line %d)\n", what, __LINE__)))

int main(void)
{
    identity_limits *l = limits_new(2);
    CHECK(limits_acquire_connection(l, 0, 2), "first connection");
    CHECK(limits_acquire_connection(l, 0, 2), "second connection");
    CHECK(!limits_acquire_connection(l, 0, 2), "third refused at max 2");
    CHECK(limits_acquire_connection(l, 1, 2), "other identity unaffected");
    limits_release_connection(l, 0);
    CHECK(limits_acquire_connection(l, 0, 2), "slot freed by release");
    CHECK(limits_acquire_connection(l, 1, 0) && limits_acquire_connection(l, 1, 0), "0 = unlimited");
    CHECK(!limits_acquire_connection(l, 7, 0), "unknown identity refused");

    const uint64_t s = 1000000000u;
    int ok = 0;
    for (int i = 0; i < 20; i++)
        ok += limits_take_statement(l, 0, 10, 5 * s);
    CHECK(ok == 10, "burst of one second's worth");
    CHECK(!limits_take_statement(l, 0, 10, 5 * s + s / 20), "nothing refilled after 50 ms at 10/s");
    CHECK(limits_take_statement(l, 0, 10, 5 * s + s / 5), "refilled after 200 ms");
    ok = 0;
    for (int i = 0; i < 100; i++)
        ok += limits_take_statement(l, 0, 10, 100 * s);
    CHECK(ok == 10, "refill is capped at the burst");
    CHECK(limits_take_statement(l, 1, 0, 0), "rate 0 = unlimited");
    limits_free(l);

    /* By name, shared by two owners (a front and its successor after a reload). */
    identity_limits *byname = limits_new(0);
    size_t a = limits_slot(byname, "agent_a"), b = limits_slot(byname, "agent_b");
    CHECK(a != b && limits_slot(byname, "agent_a") == a, "one slot per name, found again");
    identity_limits *shared = limits_ref(byname);
    CHECK(limits_acquire_connection(byname, a, 1), "first connection by the old owner");
    limits_free(byname); /* the old owner goes away */
    CHECK(!limits_acquire_connection(shared, limits_slot(shared, "agent_a"), 1), "the count survives the owner");
    CHECK(limits_acquire_connection(shared, limits_slot(shared, "agent_c"), 1), "a name added later");
    CHECK(limits_acquire_client(shared, 2) && limits_acquire_client(shared, 2), "two clients at max 2");
    CHECK(!limits_acquire_client(shared, 2), "a third refused");
    limits_release_client(shared);
    CHECK(limits_acquire_client(shared, 2) && limits_acquire_client(shared, 0), "freed by release; 0 = unlimited");
    limits_free(shared);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
