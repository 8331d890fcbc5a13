/*
 * libFuzzer harness for everything phigate parses from an unauthenticated
 * peer: PostgreSQL startup packets and message framing, error fields, and the
 * SCRAM client messages.  The first byte picks the parser.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gate/scram.h"
#include "pgfront/pg_wire.h"

static void fuzz_startup(const uint8_t *d, size_t n)
{
    uint32_t len, code;
    if (pg_parse_startup_header(d, n, 10000, &len, &code) == PG_HDR_OK && len <= n) {
        pg_startup s;
        if (pg_parse_startup_params(d + 8, len - 8, &s))
            (void)pg_startup_get(&s, "user");
    }
}

static void fuzz_messages(const uint8_t *d, size_t n)
{
    char type;
    uint32_t total;
    while (pg_parse_header(d, n, 1 << 20, &type, &total) == PG_HDR_OK && total <= n) {
        pg_error_fields f;
        if (type == 'E' && pg_parse_error_fields(d + PG_HEADER_LEN, total - PG_HEADER_LEN, &f))
            (void)pg_error_field_get(&f, 'C', NULL);
        d += total;
        n -= total;
    }
}

static void fuzz_scram(const uint8_t *d, size_t n)
{
    scram_server s;
    char out[SCRAM_MAX_MESSAGE];
    const char *err;
    bool ok;
    static const uint8_t secret[32];
    memset(&s, 0, sizeof s);
    scram_verifier_mock(secret, sizeof secret, "fuzz", &s.verifier);
    const uint8_t *split = memchr(d, '\n', n);
    size_t first = split ? (size_t)(split - d) : n;
    if (scram_server_first(&s, (const char *)d, first, out, sizeof out, &err) && split)
        (void)scram_server_final(&s, (const char *)split + 1, n - first - 1, &ok, out, sizeof out, &err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0:
        fuzz_startup(data + 1, size - 1);
        break;
    case 1:
        fuzz_messages(data + 1, size - 1);
        break;
    default:
        fuzz_scram(data + 1, size - 1);
        break;
    }
    return 0;
}
