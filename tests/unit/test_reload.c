/*
 * Reload support (gate/reload.c): which changes need a restart (secret values
 * compared, never printed), the configuration digest, the masking-rules check
 * and the status file phigatectl reads.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gate/reload.h"

static int passed, failed;
#define CHECK(c, what) ((c) ? (void)passed++ : (void)(failed++, printf("FAIL %s (line %d)\n", what, __LINE__)))

#define FULL "tests/unit/config/valid/full.yaml"

static config *load(void)
{
    static char errors[8192];
    config *cfg = config_load(FULL, errors, sizeof errors);
    if (!cfg)
        printf("cannot load %s:\n%s", FULL, errors);
    return cfg;
}

static void test_restart_changes(void)
{
    config *a = load(), *b = load();
    if (!a || !b) {
        failed++;
        return;
    }
    char out[2048] = "";
    CHECK(reload_restart_changes(a, b, out, sizeof out) == 0 && out[0] == '\0', "the same file: nothing to restart");
    /* What a reload may change freely. */
    b->max_clients = 99, b->log_level = 0, b->identities[0].max_connections = 1;
    CHECK(reload_restart_changes(a, b, out, sizeof out) == 0, "limits, log level, identities: no restart");
    b->pg_port = a->pg_port + 1;
    free(b->audit_dir);
    b->audit_dir = strdup("/elsewhere");
    b->redis_password = strdup("s3cret-value");
    CHECK(reload_restart_changes(a, b, out, sizeof out) == 3, "three settings need a restart");
    CHECK(strstr(out, FULL ": listen.postgres.port changed: this takes a restart") != NULL, out);
    CHECK(strstr(out, "audit.dir changed") != NULL && strstr(out, "redis password changed") != NULL, out);
    CHECK(strstr(out, "s3cret-value") == NULL, "a secret value is never printed");
    config_free(a);
    config_free(b);
}

static void test_digest_and_rules(void)
{
    config *a = load();
    if (!a) {
        failed++;
        return;
    }
    char h1[65], h2[65], err[512];
    CHECK(reload_config_digest(a, h1) && reload_config_digest(a, h2) && strlen(h1) == 64, "digest is hex SHA-256");
    CHECK(strcmp(h1, h2) == 0, "the same files: the same digest");
    CHECK(reload_check_rules(a, err, sizeof err), err);
    free(a->masking_rules_dir);
    a->masking_rules_dir = strdup("tests/unit/no-such-rules-folder");
    CHECK(!reload_check_rules(a, err, sizeof err) && strstr(err, "no-such-rules-folder"), "missing rules refused");
    CHECK(!reload_config_digest(a, h2), "no digest without the rules");
    config_free(a);
}

static void test_status_file(void)
{
    char dir[] = "/tmp/phigate-reload-test-XXXXXX";
    if (!mkdtemp(dir)) {
        failed++;
        return;
    }
    char pid_file[128], status[256], line[512];
    snprintf(pid_file, sizeof pid_file, "%s/phigate.pid", dir);
    reload_status_path(pid_file, status, sizeof status);
    CHECK(reload_status_attempt(status) == 0, "no status yet: attempt 0");
    CHECK(reload_write_status(pid_file, 7, false, 3, NULL, "f.yaml:2: bad\nf.yaml:9: worse\n"), "written");
    CHECK(reload_status_attempt(status) == 7, "attempt read back");
    struct stat st;
    CHECK(stat(status, &st) == 0 && (st.st_mode & 077) == 0, "status file is private (0600)");
    FILE *f = fopen(status, "r");
    char all[1024] = "";
    while (f && fgets(line, sizeof line, f))
        strncat(all, line, sizeof all - strlen(all) - 1);
    if (f)
        fclose(f);
    CHECK(strcmp(all, "attempt 7\nresult failed\ngeneration 3\nerror f.yaml:2: bad\nerror f.yaml:9: worse\n") == 0,
          all);
    CHECK(reload_write_status(pid_file, 8, true, 4, "ab12", NULL) && reload_status_attempt(status) == 8,
          "replaced atomically");
    unlink(status);
    rmdir(dir);
}

int main(void)
{
    test_restart_changes();
    test_digest_and_rules();
    test_status_file();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
