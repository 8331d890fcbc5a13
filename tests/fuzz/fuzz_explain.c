/* libFuzzer: EXPLAIN JSON of PostgreSQL and MySQL/MariaDB (gate/min_necessary.c) is
 * the upstream's text; no input may crash the parsers or leak. */
#include <stddef.h>
#include <stdint.h>

#include "gate/min_necessary.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t rows;
    char err[160];
    (void)minnec_pg_plan_rows((const char *)data, size, &rows, err, sizeof err);
    (void)minnec_mysql_plan_rows((const char *)data, size, &rows, err, sizeof err);
    return 0;
}
