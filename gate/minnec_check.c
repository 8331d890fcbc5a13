#include "gate/minnec_check.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void minnec_check_init(minnec_check *c, struct event_base *base, const minnec_limits *l, const char *identity,
                       event_callback_fn fire, void *arg)
{
    memset(c, 0, sizeof *c);
    c->out.limits = l;
    c->out.facts.window_left_ms = -1;
    snprintf(c->identity, sizeof c->identity, "%s", identity);
    c->fire_ev = event_new(base, -1, 0, fire, arg);
}

void minnec_check_clear(minnec_check *c)
{
    if (c->budget_op)
        approvals_op_cancel(c->budget_op);
    c->budget_op = NULL;
    if (c->fire_ev)
        event_free(c->fire_ev);
    c->fire_ev = NULL;
}

void minnec_check_add(minnec_check *c) { c->pending++; }

void minnec_check_done(minnec_check *c)
{
    if (--c->pending == 0)
        event_active(c->fire_ev, 0, 0);
}

void minnec_check_fire_if_idle(minnec_check *c)
{
    if (c->pending == 0)
        event_active(c->fire_ev, 0, 0);
}

void minnec_check_refuse(minnec_check *c, uint16_t code, const char *sqlstate, const char *fmt, ...)
{
    if (c->out.refused)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->out.reason, sizeof c->out.reason, fmt, ap);
    va_end(ap);
    c->out.refused = true;
    c->out.rule = "min_necessary.error";
    c->refuse_code = code;
    snprintf(c->refuse_sqlstate, sizeof c->refuse_sqlstate, "%s", sqlstate);
}

static void on_budget(void *arg, const char *err, uint64_t used, int64_t ttl_ms)
{
    minnec_check *c = arg;
    c->budget_op = NULL;
    if (err) {
        minnec_check_refuse(c, c->budget_code, c->budget_sqlstate,
                            "PHI row budget of identity \"%s\" cannot be checked, so this PHI read is refused: %s",
                            c->identity, err);
    } else {
        c->out.facts.budget_known = true;
        c->out.facts.used = used;
        c->out.facts.window_left_ms = ttl_ms;
    }
    minnec_check_done(c);
}

void minnec_check_budget(minnec_check *c, approvals *a, uint32_t window_ms, uint16_t code, const char *sqlstate)
{
    c->budget_code = code;
    snprintf(c->budget_sqlstate, sizeof c->budget_sqlstate, "%s", sqlstate);
    c->pending++;
    if (a)
        c->budget_op = approvals_budget(a, c->identity, 0, window_ms, on_budget, c);
    if (!c->budget_op) {
        c->pending--;
        minnec_check_refuse(c, code, sqlstate,
                            "PHI row budget of identity \"%s\" cannot be checked (no Redis connection)", c->identity);
    }
}
