/*
 * Configuration files that must load (config/valid/) and files that must be
 * refused (config/invalid/), each naming in its first line the error text
 * (with its line number where it has one) that phigate --check-config must print.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gate/config.h"

static int passed, failed;

static void check(bool ok, const char *what, const char *detail)
{
    if (ok) {
        passed++;
        return;
    }
    failed++;
    printf("FAIL %s\n%s\n", what, detail ? detail : "");
}

/* "# expect: TEXT" on the first line of an invalid file. */
static bool expected_error(const char *path, char *out, size_t len)
{
    FILE *f = fopen(path, "r");
    char line[512];
    bool ok = f && fgets(line, sizeof line, f) && strncmp(line, "# expect: ", 10) == 0;
    if (f)
        fclose(f);
    if (!ok)
        return false;
    line[strcspn(line, "\n")] = '\0';
    snprintf(out, len, "%s", line + 10);
    return true;
}

static void run_dir(const char *dir, bool valid)
{
    DIR *d = opendir(dir);
    if (!d) {
        check(false, dir, "cannot open the folder (run from the repository root)");
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strstr(e->d_name, ".yaml"))
            continue;
        char path[512], errors[8192], expect[600];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        config *cfg = config_load(path, errors, sizeof errors);
        if (valid) {
            check(cfg != NULL, path, errors);
        } else if (!expected_error(path, expect, sizeof expect)) {
            check(false, path, "invalid file without a first line \"# expect: ...\"");
        } else {
            char detail[9000];
            snprintf(detail, sizeof detail, "expected: %s\ngot: %s", expect, cfg ? "(loaded)" : errors);
            check(cfg == NULL && strstr(errors, expect) != NULL, path, detail);
        }
        config_free(cfg);
    }
    closedir(d);
}

static void test_defaults(void)
{
    char errors[4096];
    config *cfg = config_load("tests/unit/config/valid/minimal.yaml", errors, sizeof errors);
    check(cfg != NULL, "minimal loads", errors);
    if (!cfg)
        return;
    check(cfg->pg_port == 6432, "default port 6432", NULL);
    check(cfg->max_message_bytes == 16 * 1024 * 1024, "default max_message_bytes 16MB", NULL);
    check(!cfg->tls_required, "TLS not required by default", NULL);
    const cfg_upstream *u = config_find_upstream(cfg, "clinic");
    check(u && u->port == 5432 && strcmp(u->database, "clinic") == 0, "upstream defaults", NULL);
    config_free(cfg);
}

static void test_role_classes(void)
{
    char errors[4096];
    config *cfg = config_load("tests/unit/config/valid/full.yaml", errors, sizeof errors);
    check(cfg != NULL, "full loads", errors);
    if (!cfg)
        return;
    const cfg_identity *id = config_find_identity(cfg, "agent");
    check(id && id->role && id->role->policy.classes[SQLP_CLASS_WRITE] == SQLP_CLASS_HOLD, "write: hold", NULL);
    check(id && id->role->policy.classes[SQLP_CLASS_READ] == SQLP_CLASS_ALLOW, "read: allow", NULL);
    check(id && id->role->policy.classes[SQLP_CLASS_ADMIN] == SQLP_CLASS_DENY, "admin denied by default", NULL);
    check(id && id->role->policy.unscoped_row_limit == 50, "row limit", NULL);
    check(cfg->client_buffer_bytes == 64 * 1024, "64kB", NULL);
    config_free(cfg);
}

int main(void)
{
    /* git stores no permission bits but the executable one: make it readable by all here. */
    chmod("tests/unit/config/world-readable.secret", 0644);
    run_dir("tests/unit/config/valid", true);
    run_dir("tests/unit/config/invalid", false);
    test_defaults();
    test_role_classes();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
