#include "gate/reload.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_HASHED_FILE (64 * 1024 * 1024) /* bigger config or rule files are not hashed whole */

/* ---- settings that need a restart ---------------------------------------------- */

typedef enum { K_STR, K_SECRET, K_INT, K_BOOL, K_I64 } kind;

typedef struct {
    const char *key;
    kind type;
    size_t offset;
} restart_field;

#define RF(key, type, member) {key, type, offsetof(config, member)}

static const restart_field restart_fields[] = {
    RF("phigate.log_file", K_STR, log_file),
    RF("phigate.pid_file", K_STR, pid_file),
    RF("listen.postgres.address", K_STR, pg_address),
    RF("listen.postgres.port", K_INT, pg_port),
    RF("listen.mysql", K_BOOL, my_enabled),
    RF("listen.mysql.address", K_STR, my_address),
    RF("listen.mysql.port", K_INT, my_port),
    RF("audit.enabled", K_BOOL, audit_enabled),
    RF("audit.dir", K_STR, audit_dir),
    RF("audit.key_file", K_STR, audit_key_file),
    RF("audit.checkpoint_records", K_INT, audit_checkpoint_records),
    RF("audit.checkpoint_ms", K_INT, audit_checkpoint_ms),
    RF("audit.rotate_bytes", K_I64, audit_rotate_bytes),
    RF("redis", K_BOOL, redis_enabled),
    RF("redis.host", K_STR, redis_host),
    RF("redis.port", K_INT, redis_port),
    RF("redis password", K_SECRET, redis_password),
    RF("redis.key_prefix", K_STR, redis_key_prefix),
    RF("redis.timeout_ms", K_INT, redis_timeout_ms),
    RF("approvals.grant", K_INT, approvals_grant),
    RF("approvals.grant_ttl_s", K_INT, approvals_grant_ttl_s),
    RF("approvals.request_ttl_s", K_INT, approvals_request_ttl_s),
    RF("admin", K_BOOL, admin_enabled),
    RF("admin.address", K_STR, admin_address),
    RF("admin.port", K_INT, admin_port),
    RF("admin.cert_file", K_STR, admin_cert_file),
    RF("admin.key_file", K_STR, admin_key_file),
};

static bool same_str(const char *a, const char *b) { return (!a && !b) || (a && b && strcmp(a, b) == 0); }

static bool field_same(const restart_field *f, const config *a, const config *b)
{
    const char *pa = (const char *)a + f->offset, *pb = (const char *)b + f->offset;
    switch (f->type) {
    case K_STR:
    case K_SECRET:
        return same_str(*(char *const *)pa, *(char *const *)pb);
    case K_INT:
        return *(const int *)pa == *(const int *)pb;
    case K_BOOL:
        return *(const bool *)pa == *(const bool *)pb;
    case K_I64:
        return *(const int64_t *)pa == *(const int64_t *)pb;
    }
    return false;
}

static bool approvers_same(const config *a, const config *b)
{
    if (a->napprovers != b->napprovers)
        return false;
    for (size_t i = 0; i < a->napprovers; i++)
        if (!same_str(a->approvers[i].name, b->approvers[i].name) ||
            !same_str(a->approvers[i].secret, b->approvers[i].secret))
            return false;
    return true;
}

static void append(char *out, size_t len, size_t *used, const char *path, const char *key)
{
    if (*used >= len)
        return;
    int n = snprintf(out + *used, len - *used, "%s: %s changed: this takes a restart (the running value is kept)\n",
                     path, key);
    if (n > 0)
        *used += (size_t)n < len - *used ? (size_t)n : len - *used - 1;
}

size_t reload_restart_changes(const config *old, const config *next, char *out, size_t len)
{
    size_t count = 0, used = strlen(out);
    for (size_t i = 0; i < sizeof restart_fields / sizeof restart_fields[0]; i++) {
        const restart_field *f = &restart_fields[i];
        if (!field_same(f, old, next)) {
            append(out, len, &used, next->path, f->key);
            count++;
        }
    }
    if (!approvers_same(old, next)) {
        append(out, len, &used, next->path, "approvers");
        count++;
    }
    return count;
}

bool reload_check_rules(const config *cfg, char *err, size_t errlen)
{
    sqlp_catalog *cat = sqlp_catalog_new();
    bool ok = cat && sqlp_catalog_load_rules(cat, cfg->masking_rules_dir ? cfg->masking_rules_dir
                                                                          : SQLP_DEFAULT_RULES_DIR, err, errlen);
    sqlp_catalog_free(cat);
    return ok;
}

/* ---- digest ------------------------------------------------------------------------- */

static bool hash_file(EVP_MD_CTX *md, const char *path, const char *label)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    EVP_DigestUpdate(md, label, strlen(label) + 1);
    char buf[16384];
    size_t n, total = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0 && total < MAX_HASHED_FILE) {
        EVP_DigestUpdate(md, buf, n);
        total += n;
    }
    bool ok = !ferror(f);
    fclose(f);
    return ok;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The rule files in name order, so the digest does not depend on readdir. */
static bool hash_rules(EVP_MD_CTX *md, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return false;
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l > 5 && strcmp(e->d_name + l - 5, ".yaml") == 0) {
            char **grown = realloc(names, (n + 1) * sizeof *names);
            if (!grown)
                break;
            names = grown;
            names[n++] = strdup(e->d_name);
        }
    }
    closedir(d);
    qsort(names, n, sizeof *names, by_name);
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        ok = hash_file(md, path, names[i]) && ok;
        free(names[i]);
    }
    free(names);
    return ok;
}

bool reload_config_digest(const config *cfg, char hex[65])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char digest[32];
    unsigned int dlen = 0;
    bool ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 && hash_file(md, cfg->path, "phigate.yaml");
    if (ok && cfg->masking_rules_dir)
        ok = hash_rules(md, cfg->masking_rules_dir);
    ok = ok && EVP_DigestFinal_ex(md, digest, &dlen) == 1 && dlen == sizeof digest;
    EVP_MD_CTX_free(md);
    hex[0] = '\0';
    for (unsigned i = 0; ok && i < sizeof digest; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    return ok;
}

/* ---- status file ------------------------------------------------------------------- */

void reload_status_path(const char *pid_file, char *out, size_t len) { snprintf(out, len, "%s.reload", pid_file); }

bool reload_write_status(const char *pid_file, uint64_t attempt, bool ok, uint64_t generation, const char *sha256,
                         const char *errors)
{
    char path[4096], tmp[4200];
    reload_status_path(pid_file, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return false;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        unlink(tmp);
        return false;
    }
    fprintf(f, "attempt %llu\nresult %s\ngeneration %llu\n", (unsigned long long)attempt, ok ? "ok" : "failed",
            (unsigned long long)generation);
    if (sha256 && *sha256)
        fprintf(f, "config_sha256 %s\n", sha256);
    for (const char *p = errors; p && *p;) {
        size_t n = strcspn(p, "\n");
        fprintf(f, "error %.*s\n", (int)n, p);
        p += n + (p[n] == '\n');
    }
    bool written = fflush(f) == 0 && !ferror(f);
    written = fclose(f) == 0 && written;
    if (!written || rename(tmp, path) != 0) {
        unlink(tmp);
        return false;
    }
    return true;
}

uint64_t reload_status_attempt(const char *status_path)
{
    FILE *f = fopen(status_path, "r");
    unsigned long long n = 0;
    if (!f)
        return 0;
    if (fscanf(f, "attempt %llu", &n) != 1)
        n = 0;
    fclose(f);
    return n;
}
