/*
 * audit_internal: what audit_rec.c and audit_log.c share and nobody else needs.
 */
#ifndef PHIGATE_AUDIT_INTERNAL_H
#define PHIGATE_AUDIT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "gate/audit_json.h"
#include "gate/audit_log.h"

#define AUDIT_REC_MAX_DEPTH 8

/*
 * A record is its members as JSON text without the enclosing braces:
 *
 *   "type":"statement","session":"17-3","stmt":4,...
 *
 * The writer thread wraps it as {"seq":N,"ts":"...","prev":"...",<body>}.
 */
struct audit_rec {
    audit_rec *next;        /* queue link (pending, then done) */
    audit_durable_cb cb;
    void *arg;
    struct timespec ts;     /* CLOCK_REALTIME at append: the event's time */
    audit_buf body;
    bool misuse;            /* unbalanced begin/end: never written */
    bool ok;                /* completion status handed to cb */
    uint8_t depth;
    bool need_comma[AUDIT_REC_MAX_DEPTH + 1];
    char closer[AUDIT_REC_MAX_DEPTH + 1];
};

#endif
