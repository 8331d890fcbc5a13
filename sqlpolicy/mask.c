/*
 * Mask kinds: their spec syntax, the SQL that computes them per dialect, and
 * the same computation in C for a front's defence in depth.
 *
 * Spec syntax (masking-rules/README.md):  kind [ '(' arg { ',' arg } ')' ]
 * with integer or single-quoted string arguments, e.g. partial(4,'***-**-').
 *
 * Every SQL form keeps NULL as NULL (so the stream masker, which never sees
 * NULLs, agrees with it) and is wrapped in parentheses because it replaces a
 * column reference inside arbitrary expressions (ssn::text, upper(ssn), ...).
 * Date masks keep the column's type (date_trunc), so expressions the agent
 * wrote around a masked date (age(dob), dob < '1990-01-01') still type-check.
 *
 * Keyed tokens are HMAC-SHA256(role key, text value), first 16 hex digits,
 * computed in SQL with the built-in sha256() of PostgreSQL 11+ rather than
 * pgcrypto's hmac(), which the upstream may not have.  HMAC's two passes are
 * written out: sha256(K^opad || sha256(K^ipad || value)).  The padded key
 * therefore appears in the statement text sent upstream (pg_stat_activity,
 * log_statement): agents cannot read either through phigate (other sessions'
 * query text is scrubbed and pg_stat_statements is denied), and whoever reads
 * the server logs already reads the PHI itself.
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sqlpolicy/sp_internal.h"

#define REDACTED "[REDACTED]"

static const char *const kind_names[] = {
    [SPM_REDACT] = "redact",       [SPM_PARTIAL] = "partial", [SPM_YEAR] = "year",
    [SPM_BIRTH_YEAR] = "birth_year", [SPM_ZIP3] = "zip3",     [SPM_TOKEN] = "token",
    [SPM_EMAIL_TOKEN] = "email_token", [SPM_AGE_CAP] = "age_cap",
};
_Static_assert(SP_ARRAY_LEN(kind_names) == SPM_AGE_CAP + 1, "kind_names covers sp_mask_kind");

/* Three-digit ZIP prefixes with 20,000 or fewer people (HHS Safe Harbor
 * guidance, 2000 census): these become 000. */
static const char *const restricted_zip3[] = {"036", "059", "063", "102", "203", "556", "692", "790", "821",
                                              "823", "830", "831", "878", "879", "884", "890", "893"};

/* ---- spec parsing ------------------------------------------------------- */

typedef struct spec_arg {
    bool is_str;
    long num;
    char str[48];
} spec_arg;

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

bool sp_mask_parse(const char *spec, sp_mask *out)
{
    memset(out, 0, sizeof *out);
    if (!spec)
        return false;
    const char *p = skip_ws(spec);
    char kind[24];
    size_t k = 0;
    while ((*p >= 'a' && *p <= 'z') || *p == '_' || (*p >= '0' && *p <= '9')) {
        if (k + 1 >= sizeof kind)
            return false;
        kind[k++] = *p++;
    }
    kind[k] = 0;
    spec_arg args[2];
    int nargs = 0;
    p = skip_ws(p);
    if (*p == '(') {
        p = skip_ws(p + 1);
        while (*p != ')') {
            if (nargs == 2)
                return false;
            spec_arg *a = &args[nargs++];
            memset(a, 0, sizeof *a);
            if (*p == '\'') {
                size_t n = 0;
                p++;
                for (;;) {
                    if (!*p)
                        return false;
                    if (*p == '\'') {
                        if (p[1] != '\'')
                            break;
                        p++;
                    }
                    if (n + 1 >= sizeof a->str)
                        return false;
                    a->str[n++] = *p++;
                }
                p++;
                a->is_str = true;
            } else if (*p >= '0' && *p <= '9') {
                char *end;
                a->num = strtol(p, &end, 10);
                if (a->num > 1000000)
                    return false;
                p = end;
            } else {
                return false;
            }
            p = skip_ws(p);
            if (*p == ',')
                p = skip_ws(p + 1);
            else if (*p != ')')
                return false;
        }
        p++;
    }
    if (*skip_ws(p))
        return false;
    int kd = -1;
    for (size_t i = 0; i < SP_ARRAY_LEN(kind_names); i++)
        if (strcmp(kind, kind_names[i]) == 0)
            kd = (int)i;
    /* a few spellings people write in rule files */
    if (kd < 0 && (strcmp(kind, "redacted") == 0 || strcmp(kind, "free_text") == 0))
        kd = SPM_REDACT;
    if (kd < 0 && strcmp(kind, "hmac") == 0)
        kd = SPM_TOKEN;
    if (kd < 0)
        return false;
    out->kind = (sp_mask_kind)kd;
    switch (out->kind) {
    case SPM_REDACT:
        if (nargs > 1 || (nargs == 1 && !args[0].is_str))
            return false;
        strcpy(out->text, nargs ? args[0].str : REDACTED);
        return true;
    case SPM_PARTIAL:
        if (nargs < 1 || args[0].is_str || args[0].num < 1 || (nargs == 2 && !args[1].is_str))
            return false;
        out->n = (int)args[0].num;
        strcpy(out->text, nargs == 2 ? args[1].str : "");
        return true;
    case SPM_BIRTH_YEAR:
    case SPM_AGE_CAP:
        if (nargs > 1 || (nargs == 1 && args[0].is_str))
            return false;
        out->n = nargs ? (int)args[0].num : 90;
        return out->n >= 1 && out->n <= 200;
    default:
        return nargs == 0;
    }
}

static void quote_spec_str(char *buf, size_t len, const char *s)
{
    size_t o = 0;
    if (o + 1 < len)
        buf[o++] = '\'';
    for (; *s && o + 3 < len; s++) {
        if (*s == '\'')
            buf[o++] = '\'';
        buf[o++] = *s;
    }
    if (o + 1 < len)
        buf[o++] = '\'';
    buf[o] = 0;
}

void sp_mask_canonical(const sp_mask *m, char *buf, size_t len)
{
    char q[110];
    switch (m->kind) {
    case SPM_REDACT:
        if (strcmp(m->text, REDACTED) == 0) {
            snprintf(buf, len, "redact");
        } else {
            quote_spec_str(q, sizeof q, m->text);
            snprintf(buf, len, "redact(%s)", q);
        }
        break;
    case SPM_PARTIAL:
        quote_spec_str(q, sizeof q, m->text);
        snprintf(buf, len, "partial(%d,%s)", m->n, q);
        break;
    case SPM_BIRTH_YEAR:
    case SPM_AGE_CAP:
        if (m->n == 90)
            snprintf(buf, len, "%s", kind_names[m->kind]);
        else
            snprintf(buf, len, "%s(%d)", kind_names[m->kind], m->n);
        break;
    default:
        snprintf(buf, len, "%s", kind_names[m->kind]);
        break;
    }
}

/* ---- SQL generation ------------------------------------------------------- */

static bool type_is_text(const char *t)
{
    if (!t)
        return false;
    return strcmp(t, "text") == 0 || strncmp(t, "character", 9) == 0 || strcmp(t, "varchar") == 0 ||
           strcmp(t, "char") == 0 || strcmp(t, "bpchar") == 0 || strcmp(t, "name") == 0 ||
           strcmp(t, "citext") == 0;
}

static bool type_is_date(const char *t)
{
    return t && strcmp(t, "date") == 0;
}

static bool type_is_timestamp(const char *t)
{
    /* MySQL's catalog says datetime where PostgreSQL says timestamp */
    return t && (strncmp(t, "timestamp", 9) == 0 || strcmp(t, "datetime") == 0);
}

static bool type_is_number(const char *t)
{
    static const char *const nums[] = {"smallint", "integer", "bigint", "numeric", "real", "double precision",
                                       "int2", "int4", "int8", "float4", "float8", "decimal", NULL};
    if (!t)
        return false;
    for (int i = 0; nums[i]; i++)
        if (strncmp(t, nums[i], strlen(nums[i])) == 0)
            return true;
    return false;
}

/* expr as text: a cast only when the column is not a string type already */
static void text_expr(sp_buf *b, const char *expr, const char *type, sqlp_dialect d)
{
    if (type_is_text(type)) {
        sp_buf_puts(b, expr);
    } else if (d == SQLP_DIALECT_MYSQL) {
        sp_buf_printf(b, "CAST(%s AS CHAR)", expr);
    } else {
        sp_buf_printf(b, "(%s)::text", expr);
    }
}

static void hmac_pads(const sqlp_role *role, char ihex[129], char ohex[129])
{
    static const char hx[] = "0123456789abcdef";
    unsigned char k0[64] = {0};
    if (role)
        memcpy(k0, role->token_key, sizeof role->token_key);
    for (int i = 0; i < 64; i++) {
        unsigned char ib = k0[i] ^ 0x36, ob = k0[i] ^ 0x5c;
        ihex[2 * i] = hx[ib >> 4];
        ihex[2 * i + 1] = hx[ib & 15];
        ohex[2 * i] = hx[ob >> 4];
        ohex[2 * i + 1] = hx[ob & 15];
    }
    ihex[128] = ohex[128] = 0;
}

/* HMAC-SHA256 of the UTF-8 text of `inner` (valid SQL text), first `digits` hex digits */
static void hmac_sql(sp_buf *b, const char *inner, int digits, sqlp_dialect d, const sqlp_role *role)
{
    char ih[129], oh[129];
    hmac_pads(role, ih, oh);
    if (d == SQLP_DIALECT_MYSQL) {
        sp_buf_printf(b,
                      "LEFT(SHA2(CONCAT(UNHEX('%s'), UNHEX(SHA2(CONCAT(UNHEX('%s'), CONVERT(%s USING utf8mb4)), "
                      "256))), 256), %d)",
                      oh, ih, inner, digits);
    } else {
        sp_buf_printf(b,
                      "left(encode(sha256(decode('%s', 'hex') || sha256(decode('%s', 'hex') || "
                      "convert_to(%s, 'UTF8'))), 'hex'), %d)",
                      oh, ih, inner, digits);
    }
}

void sp_mask_sql(sp_buf *b, const sp_mask *m, const char *expr, const char *type, sqlp_dialect d,
                 const sqlp_role *role)
{
    bool my = d == SQLP_DIALECT_MYSQL;
    sp_arena *a = b->a;
    sp_buf t;
    switch (m->kind) {
    case SPM_REDACT:
        sp_buf_printf(b, "(CASE WHEN %s IS NULL THEN NULL ELSE ", expr);
        sp_buf_literal(b, m->text, d);
        sp_buf_puts(b, " END)");
        return;
    case SPM_PARTIAL:
        sp_buf_init(&t, a, 64);
        text_expr(&t, expr, type, d);
        /* at most half of the value is ever shown, so a short value is not
         * revealed whole by a "keep the last 4" rule */
        if (my) {
            sp_buf_puts(b, "CONCAT(");
            sp_buf_literal(b, m->text, d);
            sp_buf_printf(b, ", RIGHT(%s, LEAST(%d, FLOOR(CHAR_LENGTH(%s) / 2))))", t.p, m->n, t.p);
        } else {
            sp_buf_puts(b, "(");
            sp_buf_literal(b, m->text, d);
            sp_buf_printf(b, " || right(%s, least(%d, length(%s) / 2)))", t.p, m->n, t.p);
        }
        return;
    case SPM_YEAR:
        if (type_is_date(type))
            sp_buf_printf(b, my ? "MAKEDATE(YEAR(%s), 1)" : "(date_trunc('year', %s)::date)", expr);
        else if (type_is_timestamp(type))
            sp_buf_printf(b, my ? "CAST(DATE_FORMAT(%s, '%%Y-01-01 00:00:00') AS DATETIME)" : "date_trunc('year', %s)",
                          expr);
        else {
            sp_buf_init(&t, a, 64);
            text_expr(&t, expr, type, d);
            sp_buf_printf(b, my ? "LEFT(%s, 4)" : "left(%s, 4)", t.p);
        }
        return;
    case SPM_BIRTH_YEAR:
        if (type_is_date(type) || type_is_timestamp(type)) {
            /* Safe Harbor: years that imply an age over 89 become one "90 or
             * older" category, shown as the year current_date - n falls in. */
            if (my)
                sp_buf_printf(b,
                              "(CASE WHEN YEAR(%s) <= YEAR(CURRENT_DATE) - %d THEN MAKEDATE(YEAR(CURRENT_DATE) - %d, 1) "
                              "ELSE MAKEDATE(YEAR(%s), 1) END)",
                              expr, m->n, m->n, expr);
            else if (type_is_date(type))
                sp_buf_printf(b,
                              "(CASE WHEN extract(year FROM %s) <= extract(year FROM current_date) - %d THEN "
                              "make_date((extract(year FROM current_date) - %d)::int, 1, 1) ELSE "
                              "date_trunc('year', %s)::date END)",
                              expr, m->n, m->n, expr);
            else
                sp_buf_printf(b,
                              "(CASE WHEN extract(year FROM %s) <= extract(year FROM current_date) - %d THEN "
                              "make_timestamp((extract(year FROM current_date) - %d)::int, 1, 1, 0, 0, 0) ELSE "
                              "date_trunc('year', %s) END)",
                              expr, m->n, m->n, expr);
            return;
        }
        break;
    case SPM_ZIP3:
        sp_buf_init(&t, a, 64);
        text_expr(&t, expr, type, d);
        sp_buf_printf(b, my ? "(CASE WHEN LEFT(%s, 3) IN (" : "(CASE WHEN left(%s, 3) IN (", t.p);
        for (size_t i = 0; i < SP_ARRAY_LEN(restricted_zip3); i++)
            sp_buf_printf(b, "%s'%s'", i ? ", " : "", restricted_zip3[i]);
        if (my)
            sp_buf_printf(b, ") THEN '000**' ELSE CONCAT(LEFT(%s, 3), '**') END)", t.p);
        else
            sp_buf_printf(b, ") THEN '000**' ELSE left(%s, 3) || '**' END)", t.p);
        return;
    case SPM_TOKEN:
        sp_buf_init(&t, a, 64);
        text_expr(&t, expr, type, d);
        sp_buf_puts(b, my ? "CONCAT('tok_', " : "('tok_' || ");
        hmac_sql(b, t.p, 16, d, role);
        sp_buf_puts(b, ")");
        return;
    case SPM_EMAIL_TOKEN: {
        sp_buf_init(&t, a, 64);
        text_expr(&t, expr, type, d);
        sp_buf lp;
        sp_buf_init(&lp, a, 64);
        /* split_part(x, '@', 2) is the text between the first and second '@';
         * SUBSTRING_INDEX twice says the same in MySQL */
        if (my) {
            sp_buf_printf(&lp, "SUBSTRING_INDEX(%s, '@', 1)", t.p);
            sp_buf_puts(b, "CONCAT('tok_', ");
            hmac_sql(b, lp.p, 12, d, role);
            sp_buf_printf(b, ", '@', SUBSTRING_INDEX(SUBSTRING_INDEX(%s, '@', 2), '@', -1))", t.p);
        } else {
            sp_buf_printf(&lp, "split_part(%s, '@', 1)", t.p);
            sp_buf_puts(b, "('tok_' || ");
            hmac_sql(b, lp.p, 12, d, role);
            sp_buf_printf(b, " || '@' || split_part(%s, '@', 2))", t.p);
        }
        return;
    }
    case SPM_AGE_CAP:
        if (type_is_number(type)) {
            sp_buf_printf(b, "(CASE WHEN %s > %d THEN %d ELSE %s END)", expr, m->n - 1, m->n, expr);
            return;
        }
        break;
    }
    /* a mask that does not fit the column's type redacts it */
    sp_mask r = {.kind = SPM_REDACT};
    strcpy(r.text, REDACTED);
    sp_mask_sql(b, &r, expr, type, d, role);
}

/* ---- the same in C -------------------------------------------------------- */

static size_t utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            n++;
    return n;
}

/* bytes of the first `chars` characters */
static size_t utf8_prefix(const char *s, size_t len, size_t chars)
{
    size_t i = 0;
    while (i < len && chars > 0) {
        i++;
        while (i < len && ((unsigned char)s[i] & 0xc0) == 0x80)
            i++;
        chars--;
    }
    return i;
}

/* byte offset where the last `chars` characters start */
static size_t utf8_tail(const char *s, size_t len, size_t chars)
{
    size_t i = len;
    while (i > 0 && chars > 0) {
        i--;
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            chars--;
    }
    return i;
}

static void hmac_hex(const sqlp_role *role, const char *v, size_t len, char *out, int digits)
{
    static const char hx[] = "0123456789abcdef";
    unsigned char key[32] = {0}, md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (role)
        memcpy(key, role->token_key, sizeof key);
    if (!HMAC(EVP_sha256(), key, (int)sizeof key, (const unsigned char *)v, len, md, &mdlen))
        memset(md, 0, sizeof md);
    for (int i = 0; i < digits / 2; i++) {
        out[2 * i] = hx[md[i] >> 4];
        out[2 * i + 1] = hx[md[i] & 15];
    }
    out[digits] = 0;
}

static int current_year(void)
{
    time_t now = time(NULL);
    struct tm tm;
    if (!gmtime_r(&now, &tm))
        return 2000;
    return tm.tm_year + 1900;
}

static bool parse_year(const char *v, size_t len, int *year)
{
    if (len < 4)
        return false;
    int y = 0;
    for (int i = 0; i < 4; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        y = y * 10 + (v[i] - '0');
    }
    *year = y;
    return true;
}

/* "YYYY-01-01" for a date text, with " 00:00:00" and any zone suffix kept for a
 * timestamp text, like date_trunc('year', ...) prints under DateStyle ISO */
static char *year_text(int year, const char *v, size_t len)
{
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%04d-01-01", year);
    if (len > 10 && (v[10] == ' ' || v[10] == 'T')) {
        const char *zone = NULL;
        for (size_t i = 11; i < len; i++)
            if (v[i] == '+' || v[i] == '-') {
                zone = v + i;
                break;
            }
        n += snprintf(buf + n, sizeof buf - (size_t)n, " 00:00:00");
        if (zone && (size_t)(v + len - zone) < 10)
            snprintf(buf + n, sizeof buf - (size_t)n, "%.*s", (int)(v + len - zone), zone);
    }
    return strdup(buf);
}

char *sqlp_mask_value(const char *mask, const char *value, size_t len, const sqlp_role *role)
{
    sp_mask m;
    if (!sp_mask_parse(mask, &m)) {
        m.kind = SPM_REDACT;
        strcpy(m.text, REDACTED);
    }
    if (!value)
        value = "", len = 0;
    char *out = NULL;
    switch (m.kind) {
    case SPM_REDACT:
        return strdup(m.text);
    case SPM_PARTIAL: {
        size_t keep = utf8_chars(value, len) / 2;
        if (keep > (size_t)m.n)
            keep = (size_t)m.n;
        size_t off = utf8_tail(value, len, keep);
        if (asprintf(&out, "%s%.*s", m.text, (int)(len - off), value + off) < 0)
            return NULL;
        return out;
    }
    case SPM_YEAR: {
        int y;
        if (len >= 10 && value[4] == '-' && parse_year(value, len, &y))
            return year_text(y, value, len);
        return strndup(value, utf8_prefix(value, len, 4));
    }
    case SPM_BIRTH_YEAR: {
        int y, cap = current_year() - m.n;
        if (len >= 10 && value[4] == '-' && parse_year(value, len, &y))
            return year_text(y <= cap ? cap : y, value, len);
        return strdup(REDACTED);
    }
    case SPM_ZIP3: {
        /* left(x, 3) counts characters, as the SQL does */
        size_t n = utf8_prefix(value, len, 3);
        for (size_t i = 0; i < SP_ARRAY_LEN(restricted_zip3); i++)
            if (n == 3 && memcmp(value, restricted_zip3[i], 3) == 0)
                return strdup("000**");
        if (asprintf(&out, "%.*s**", (int)n, value) < 0)
            return NULL;
        return out;
    }
    case SPM_TOKEN: {
        char hex[17];
        hmac_hex(role, value, len, hex, 16);
        if (asprintf(&out, "tok_%s", hex) < 0)
            return NULL;
        return out;
    }
    case SPM_EMAIL_TOKEN: {
        const char *at = memchr(value, '@', len);
        size_t local = at ? (size_t)(at - value) : len;
        const char *dom = at ? at + 1 : value + len;
        size_t domlen = (size_t)(value + len - dom);
        const char *at2 = memchr(dom, '@', domlen);
        if (at2)
            domlen = (size_t)(at2 - dom);
        char hex[13];
        hmac_hex(role, value, local, hex, 12);
        if (asprintf(&out, "tok_%s@%.*s", hex, (int)domlen, dom) < 0)
            return NULL;
        return out;
    }
    case SPM_AGE_CAP: {
        char buf[32];
        if (len > 0 && len < sizeof buf) {
            memcpy(buf, value, len);
            buf[len] = 0;
            char *end;
            double v = strtod(buf, &end);
            if (end != buf && *end == 0 && v > m.n - 1) {
                if (asprintf(&out, "%d", m.n) < 0)
                    return NULL;
                return out;
            }
        }
        return strndup(value, len);
    }
    }
    return strdup(REDACTED);
}
