/*
 * The checks of one statement under the minimum-necessary rules, as both
 * fronts run them (gate/min_necessary.h judges): a count of checks still
 * running, the Redis budget read, the first refusal, and an event that fires
 * from the loop once every check is in.  The front adds its EXPLAIN (one more
 * pending check) and acts on the outcome when fire runs.
 *
 *   minnec_check_init -> [minnec_check_add ... minnec_check_done] + minnec_check_budget
 *                     -> all in: fire(arg) from the loop -> the front reads out / refuse_*
 */
#ifndef PHIGATE_MINNEC_CHECK_H
#define PHIGATE_MINNEC_CHECK_H

#include <event2/event.h>
#include <stdint.h>

#include "gate/approvals.h"
#include "gate/min_necessary.h"

typedef struct minnec_check {
    minnec_outcome out;
    int pending;              /* checks still running */
    approvals_op *budget_op;  /* Redis budget read in flight */
    struct event *fire_ev;    /* all checks in: decided from the loop, never from a callback */
    char identity[64];        /* for the refusal's words */
    uint16_t budget_code;     /* how a budget that cannot be read is refused */
    char budget_sqlstate[6];
    uint16_t refuse_code;     /* a refusal's MySQL error number (pgfront uses the SQLSTATE only) */
    char refuse_sqlstate[6];
} minnec_check;

void minnec_check_init(minnec_check *c, struct event_base *base, const minnec_limits *l, const char *identity,
                       event_callback_fn fire, void *arg);
/* Cancels a budget read in flight, frees the event. */
void minnec_check_clear(minnec_check *c);

void minnec_check_add(minnec_check *c);
/* One check is in; the last one schedules fire. */
void minnec_check_done(minnec_check *c);
/* No check was started: fire from the loop anyway. */
void minnec_check_fire_if_idle(minnec_check *c);

/* Read the identity's budget (a pending check); with a (or Redis) down the
 * statement is refused with code / sqlstate: a budget nobody can read is not
 * a budget. */
void minnec_check_budget(minnec_check *c, approvals *a, uint32_t window_ms, uint16_t code, const char *sqlstate);

/* Refuse the statement (the first cause is the one the agent hears). */
void minnec_check_refuse(minnec_check *c, uint16_t code, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
