#include "gate/hold.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


const char *hold_fingerprint(const sqlp_decision *d)
{
    return d->nstatements ? d->statements[0].fingerprint : NULL;
}

char *hold_text_fingerprint(const char *sql, size_t len)
{
    char *fp = sqlp_fingerprint(sql, len);
    if (fp)
        return fp;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(sql, len, md, &mdlen, EVP_sha256(), NULL))
        return NULL;
    char *out = malloc(sizeof "sha256:" + 2 * (size_t)mdlen);
    if (!out)
        return NULL;
    int n = snprintf(out, sizeof "sha256:", "sha256:");
    for (unsigned int i = 0; i < mdlen; i++)
        n += snprintf(out + n, 3, "%02x", md[i]);
    return out;
}

hold_subject hold_subject_of(const sqlp_decision *d)
{
    return (hold_subject){hold_fingerprint(d), d->rule, d->reason};
}

void hold_binding_init(hold_binding *b, const sqlp_decision *d, const minnec_outcome *mn, const char *sql, size_t len)
{
    memset(b, 0, sizeof *b);
    if (mn) {
        b->has_mn = true;
        b->mn = *mn;
        b->fingerprint = hold_text_fingerprint(sql, len);
        b->subject = (hold_subject){b->fingerprint, b->mn.rule, b->mn.reason};
        return;
    }
    const char *fp = hold_fingerprint(d);
    b->fingerprint = fp ? strdup(fp) : NULL;
    b->subject = (hold_subject){b->fingerprint, d->rule, d->reason};
}

const minnec_outcome *hold_binding_mn(const hold_binding *b) { return b->has_mn ? &b->mn : NULL; }

void hold_binding_clear(hold_binding *b)
{
    free(b->fingerprint);
    b->fingerprint = NULL;
}

approval_request hold_request(const hold_origin *o, const hold_subject *what, const char *statement)
{
    return (approval_request){
        .identity = o->identity,
        .client_addr = o->client_addr,
        .database = o->database,
        .protocol = o->protocol,
        .statement = statement,
        .fingerprint = what->fingerprint,
        .reason = what->reason,
        .rule = what->rule,
        .wait_ms = o->wait_ms,
    };
}

/* Newlines keep a trailing -- comment inside the subquery; both PostgreSQL and
 * MySQL take the derived table with an alias and LIMIT n. */
char *hold_capped_sql(const sqlp_decision *d, uint64_t row_cap)
{
    const char *sql = d->upstream_sql;
    if (row_cap == 0 || d->nstatements != 1 || d->statements[0].stmt_class != SQLP_CLASS_READ)
        return strdup(sql);
    size_t len = strlen(sql);
    while (len > 0 && strchr("; \n\t\r", sql[len - 1]))
        len--;
    char *out = NULL;
    if (asprintf(&out, "SELECT * FROM (\n%.*s\n) AS phigate_row_cap LIMIT %llu", (int)len, sql,
                 (unsigned long long)row_cap) < 0)
        return NULL;
    return out;
}

hold_refusal_kind hold_refusal(approval_outcome outcome, const approval_result *r, const char *rule, char *msg,
                               size_t msglen)
{
    const char *id = r->request_id ? r->request_id : "(none)";
    switch (outcome) {
    case APPROVAL_DENIED:
        snprintf(msg, msglen, "statement denied by approver %s: %s (request %s)", r->approver ? r->approver : "?",
                 r->reason, id);
        return HOLD_REFUSED_DENIED;
    case APPROVAL_TIMEOUT:
        snprintf(msg, msglen,
                 "statement held for approval (rule %s) and not approved in time: request %s is pending; "
                 "a retry after an approver approves it will pass",
                 rule ? rule : "?", id);
        return HOLD_REFUSED_TIMEOUT;
    case APPROVAL_APPROVED: /* not a refusal: callers never ask; fail closed if one does */
    case APPROVAL_UNAVAILABLE:
        break;
    }
    snprintf(msg, msglen, "statement needs approval but the approval queue is unavailable: %s", r->reason);
    return HOLD_REFUSED_UNAVAILABLE;
}
