/*
 * Unit tests for the pure helpers of myfront/my_policy.h: which sql_mode values
 * and client character sets phigate refuses to follow (they change how the
 * server reads a statement, so the policy engine would judge something else).
 *
 * Prints "N passed, N failed"; exits non-zero if anything failed.
 */
#include <stdio.h>
#include <string.h>

#include "myfront/my_policy.h"

static int tests_passed, tests_failed;

static void expect_mode(const char *mode, const char *want)
{
    const char *got = my_policy_sql_mode_unsafe(mode, strlen(mode));
    bool ok = want ? got && strcmp(got, want) == 0 : got == NULL;
    if (ok) {
        tests_passed++;
        printf("ok   sql_mode \"%s\"\n", mode);
    } else {
        tests_failed++;
        printf("FAIL sql_mode \"%s\": got %s, want %s\n", mode, got ? got : "(safe)", want ? want : "(safe)");
    }
}

static void expect_charset(const char *name, bool unsafe)
{
    if (my_policy_charset_unsafe(name, strlen(name)) == unsafe) {
        tests_passed++;
        printf("ok   charset %s\n", name);
    } else {
        tests_failed++;
        printf("FAIL charset %s: want %s\n", name, unsafe ? "unsafe" : "safe");
    }
}

int main(void)
{
    /* MariaDB 10.11's default and MySQL 8's default are fine. */
    expect_mode("STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION", NULL);
    expect_mode("ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
                "NO_ENGINE_SUBSTITUTION", NULL);
    expect_mode("", NULL);
    expect_mode("ANSI_QUOTES", "ANSI_QUOTES");
    expect_mode("strict_trans_tables,ansi_quotes", "ANSI_QUOTES");
    expect_mode("NO_BACKSLASH_ESCAPES", "NO_BACKSLASH_ESCAPES");
    expect_mode("REAL_AS_FLOAT,PIPES_AS_CONCAT,ANSI_QUOTES,IGNORE_SPACE,ANSI", "PIPES_AS_CONCAT");
    expect_mode("ORACLE", "ORACLE");
    expect_mode("MSSQL", "MSSQL");
    /* Whole words only: a flag merely containing an unsafe name is not it. */
    expect_mode("NO_ANSI_QUOTESX,ANSI_QUOTE", NULL);
    expect_charset("utf8mb4", false);
    expect_charset("latin1", false);
    expect_charset("binary", false);
    expect_charset("gbk", true);
    expect_charset("GBK", true);
    expect_charset("sjis", true);
    expect_charset("cp932", true);
    expect_charset("big5", true);
    expect_charset("gb18030", true);
    expect_charset("gb2312", false);
    printf("%d passed, %d failed\n", tests_passed, tests_failed);
    return tests_failed ? 1 : 0;
}
