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
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
