/*
 * libFuzzer harness for the statement engine: arbitrary text through
 * sqlp_decide in both dialects, against the clinic masking rules, for a role
 * with every class allowed (so the analyser, not the class rule, sees it all).
 * Checks only what must always hold: a decision comes back, and a DENY has a reason.
 */
#include <stdlib.h>
#include <string.h>

#include "sqlpolicy/sqlpolicy.h"

static sqlp_engine *engine;
static sqlp_role role;

static void setup(void)
{
    char err[512];
    sqlp_catalog *cat = sqlp_catalog_new();
    static const char *const cols[][4] = {
        {"patients", "id", "1", "integer"},  {"patients", "ssn", "2", "character varying"},
        {"patients", "dob", "3", "date"},    {"patients", "first_name", "4", "character varying"},
        {"wards", "id", "1", "integer"},     {"wards", "name", "2", "character varying"},
    };
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
        (void)sqlp_catalog_add_column(cat, "public", cols[i][0], cols[i][1], atoi(cols[i][2]),
                                      cols[i][0][0] == 'p' ? 16400 : 16500, cols[i][3]);
    if (!sqlp_catalog_load_rules(cat, "masking-rules", err, sizeof err))
        abort(); /* run from the repository root */
    engine = sqlp_engine_new(cat);
    sqlp_role_init_agent(&role);
    role.name = "fuzz";
    for (int c = 0; c < SQLP_CLASS_COUNT; c++)
        role.classes[c] = SQLP_CLASS_ALLOW;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (!engine)
        setup();
    if (size < 1)
        return 0;
    sqlp_context ctx = {"fuzz", &role, "clinic", NULL, data[0] & 1 ? SQLP_DIALECT_MYSQL : SQLP_DIALECT_POSTGRES, NULL};
    char *sql = malloc(size);
    memcpy(sql, data + 1, size - 1);
    sql[size - 1] = '\0';
    sqlp_decision *d = sqlp_decide(engine, &ctx, sql, size - 1);
    if (!d || (d->verdict == SQLP_DENY && !d->reason))
        abort();
    sqlp_decision_free(d);
    free(sql);
    return 0;
}
