/*
 * Reading audit log files; see audit_read.h.
 */
#include "gate/audit_read.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

uint32_t audit_file_number(const char *name)
{
    unsigned n = 0;
    int end = 0;
    /* Exact shape only: "audit-000001.jsonl.torn" and editor backups are not log files. */
    if (sscanf(name, "audit-%6u.jsonl%n", &n, &end) != 1 || name[end] != '\0' ||
        strlen(name) != strlen("audit-000000.jsonl"))
        return 0;
    return n;
}

/* By number, not by name: audit-1000000.jsonl would sort before
 * audit-999999.jsonl as text if a log ever grew that far. */
static int cmp_by_number(const void *a, const void *b)
{
    const char *x = strrchr(*(char *const *)a, '/') + 1, *y = strrchr(*(char *const *)b, '/') + 1;
    uint32_t nx = audit_file_number(x), ny = audit_file_number(y);
    return nx < ny ? -1 : nx > ny;
}

void audit_paths_free(char **paths, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
}

static bool push_path(char ***v, size_t *n, size_t *cap, const char *dir, const char *name)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        char **nv = realloc(*v, c * sizeof *nv);
        if (!nv)
            return false;
        *v = nv;
        *cap = c;
    }
    char *p;
    if (asprintf(&p, "%s/%s", dir, name) < 0)
        return false;
    (*v)[(*n)++] = p;
    return true;
}

bool audit_dir_list(const char *dir, char ***out, size_t *n, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "cannot open %s: %s", dir, strerror(errno));
        return false;
    }
    char **v = NULL;
    size_t cnt = 0, cap = 0;
    bool ok = true;
    struct dirent *e;
    while (ok && (e = readdir(d)))
        if (audit_file_number(e->d_name))
            ok = push_path(&v, &cnt, &cap, dir, e->d_name);
    closedir(d);
    if (!ok) {
        snprintf(err, errlen, "out of memory listing %s", dir);
        audit_paths_free(v, cnt);
        return false;
    }
    if (cnt)
        qsort(v, cnt, sizeof *v, cmp_by_number);
    *out = v;
    *n = cnt;
    return true;
}

/* ---- line parsing ----------------------------------------------------- */

/* The hash is taken first and over the raw bytes: even a line that fails to
 * parse has a hash, which the diagnosis of the next line may need. */
bool audit_line_parse(aj_arena *a, const audit_line *l, audit_parsed *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!audit_sha256(l->raw, l->len, out->hash)) {
        snprintf(err, errlen, "SHA-256 failed");
        return false;
    }
    if (!aj_parse(a, l->raw, l->len, &out->root, err, errlen))
        return false;
    if (out->root->type != AJ_OBJECT) {
        snprintf(err, errlen, "record is not a JSON object");
        return false;
    }
    out->ts = aj_get_str(out->root, "ts");
    out->type = aj_get_str(out->root, "type");
    if (!aj_get_u64(out->root, "seq", &out->seq) || !out->ts || !out->type ||
        !audit_unhex(aj_get_str(out->root, "prev"), out->prev, sizeof out->prev)) {
        snprintf(err, errlen, "record lacks a valid seq, ts, prev or type");
        return false;
    }
    return true;
}

/* ---- reader ----------------------------------------------------------- */

struct audit_reader {
    char **paths;
    size_t npaths, cur; /* cur: index of the mapped file */
    const char *map;
    size_t map_size; /* bytes mapped */
    size_t map_len, pos; /* map_len: without the trailing zero padding */
    uint64_t lineno;
    uint64_t total, done_before; /* bytes of all files; of files finished */
    char err[512];
    bool has_err;
};

/* A directory stands for all its audit files in number order; a file stands
 * for itself, in the order given (the caller states the chain order). */
static bool add_arg(audit_reader *r, const char *p, size_t *cap)
{
    struct stat st;
    if (stat(p, &st) != 0) {
        snprintf(r->err, sizeof r->err, "%s: %s", p, strerror(errno));
        return false;
    }
    if (!S_ISDIR(st.st_mode)) {
        if (r->npaths == *cap) {
            *cap = *cap ? *cap * 2 : 16;
            char **nv = realloc(r->paths, *cap * sizeof *nv);
            if (!nv)
                return false;
            r->paths = nv;
        }
        return (r->paths[r->npaths] = strdup(p)) && ++r->npaths;
    }
    char **v;
    size_t n;
    if (!audit_dir_list(p, &v, &n, r->err, sizeof r->err))
        return false;
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++)
        ok = add_arg(r, v[i], cap);
    audit_paths_free(v, n);
    return ok;
}

static void sum_sizes(audit_reader *r)
{
    for (size_t i = 0; i < r->npaths; i++) {
        struct stat st;
        if (stat(r->paths[i], &st) == 0)
            r->total += (uint64_t)st.st_size;
    }
}

audit_reader *audit_reader_open(const char *const *paths, size_t n, char *err, size_t errlen)
{
    audit_reader *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    size_t cap = 0;
    for (size_t i = 0; i < n; i++)
        if (!add_arg(r, paths[i], &cap)) {
            snprintf(err, errlen, "%s", r->err[0] ? r->err : "out of memory");
            audit_reader_close(r);
            return NULL;
        }
    if (r->npaths == 0) {
        snprintf(err, errlen, "no audit files (audit-NNNNNN.jsonl) found");
        audit_reader_close(r);
        return NULL;
    }
    sum_sizes(r);
    r->cur = SIZE_MAX; /* nothing mapped yet */
    return r;
}

static void unmap(audit_reader *r)
{
    if (r->map && r->map_size)
        munmap((void *)r->map, r->map_size);
    r->map = NULL;
    r->map_len = r->map_size = 0;
}

/* A log being written grows; the size at mapping time is what we check. */
static bool map_file(audit_reader *r, size_t i)
{
    int fd = open(r->paths[i], O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(r->err, sizeof r->err, "%s: %s", r->paths[i], strerror(errno));
        if (fd >= 0)
            close(fd);
        return false;
    }
    r->map_size = r->map_len = (size_t)st.st_size;
    r->map = r->map_len ? mmap(NULL, r->map_len, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    close(fd);
    if (r->map == MAP_FAILED) {
        r->map = NULL;
        snprintf(r->err, sizeof r->err, "%s: mmap: %s", r->paths[i], strerror(errno));
        return false;
    }
    /* Preallocated space the writer has not reached yet is not part of the file. */
    while (r->map_len && r->map[r->map_len - 1] == '\0')
        r->map_len--;
    r->total -= r->total >= r->map_size - r->map_len ? r->map_size - r->map_len : r->total;
    r->pos = 0;
    r->lineno = 0;
    return true;
}

/* memchr over the mapping: no copy per line, so verify runs at hashing speed. */
static void line_at(const audit_reader *r, size_t pos, uint64_t lineno, audit_line *out)
{
    const char *s = r->map + pos;
    const char *nl = memchr(s, '\n', r->map_len - pos);
    out->path = r->paths[r->cur];
    out->file_index = r->cur;
    out->lineno = lineno;
    out->offset = pos;
    out->raw = s;
    out->len = nl ? (size_t)(nl - s) : r->map_len - pos;
    out->has_nl = nl != NULL;
    out->first_in_file = pos == 0;
}

bool audit_reader_next(audit_reader *r, audit_line *out)
{
    while (r->cur == SIZE_MAX || r->pos >= r->map_len) {
        if (r->cur != SIZE_MAX) {
            r->done_before += r->map_len;
            unmap(r);
        }
        r->cur = r->cur == SIZE_MAX ? 0 : r->cur + 1;
        if (r->cur >= r->npaths) {
            r->cur = r->npaths; /* stay at the end */
            r->pos = r->map_len = 0;
            return false;
        }
        if (!map_file(r, r->cur)) {
            r->has_err = true;
            return false;
        }
    }
    line_at(r, r->pos, ++r->lineno, out);
    r->pos += out->len + out->has_nl;
    return true;
}

bool audit_reader_peek(audit_reader *r, audit_line *out)
{
    if (r->cur >= r->npaths || r->pos >= r->map_len)
        return false;
    line_at(r, r->pos, r->lineno + 1, out);
    return true;
}

const char *audit_reader_error(const audit_reader *r)
{
    return r->has_err ? r->err : NULL;
}

uint64_t audit_reader_total_bytes(const audit_reader *r)
{
    return r->total;
}

uint64_t audit_reader_done_bytes(const audit_reader *r)
{
    return r->done_before + r->pos;
}

size_t audit_reader_file_count(const audit_reader *r)
{
    return r->npaths;
}

uint64_t audit_fd_data_end(int fd, uint64_t size)
{
    char block[4096];
    while (size > 0) {
        size_t n = size < sizeof block ? (size_t)size : sizeof block;
        if (pread(fd, block, n, (off_t)(size - n)) != (ssize_t)n)
            return size; /* unreadable: keep every byte, the caller's checks will say why */
        while (n && block[n - 1] == '\0')
            n--, size--;
        if (n)
            break;
    }
    return size;
}

void audit_reader_close(audit_reader *r)
{
    if (!r)
        return;
    unmap(r);
    audit_paths_free(r->paths, r->npaths);
    free(r);
}
