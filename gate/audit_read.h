/*
 * audit_read: reading audit log files line by line, for the writer's tail
 * check at open, the verifier and the tools.
 *
 * A log directory holds audit-000001.jsonl, audit-000002.jsonl, ... (the
 * number orders them; the chain runs through them in that order).  Files are
 * mapped read-only; a line is the bytes up to a '\n', or up to the end of the
 * file for a last line without one (has_nl false: a torn or cut record).
 */
#ifndef PHIGATE_AUDIT_READ_H
#define PHIGATE_AUDIT_READ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gate/audit_crypto.h"
#include "gate/audit_json.h"

#define AUDIT_FILE_FMT "audit-%06u.jsonl"
#define AUDIT_ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"

/* Number of an audit file name ("audit-000012.jsonl" -> 12), 0 if not one. */
uint32_t audit_file_number(const char *name);
/* Sorted paths of the audit files in dir; *out is freed with audit_paths_free. */
bool audit_dir_list(const char *dir, char ***out, size_t *n, char *err, size_t errlen) AUDIT_WUR;
void audit_paths_free(char **paths, size_t n);

typedef struct {
    const char *path;
    size_t file_index;
    uint64_t lineno; /* 1-based within the file */
    uint64_t offset; /* of the line's first byte within the file */
    const char *raw; /* line bytes without the '\n' (not NUL-terminated) */
    size_t len;
    bool has_nl;
    bool first_in_file;
} audit_line;

/* The fields every record has, parsed and checked for shape. */
typedef struct {
    aj_value *root;
    uint64_t seq;
    const char *ts;
    const char *type;
    uint8_t prev[AUDIT_SHA256_LEN];
    uint8_t hash[AUDIT_SHA256_LEN]; /* SHA-256 of the line's bytes: what the next prev must be */
} audit_parsed;

bool audit_line_parse(aj_arena *a, const audit_line *l, audit_parsed *out, char *err,
                      size_t errlen) AUDIT_WUR;

typedef struct audit_reader audit_reader;

/* paths: log directories (expanded to their audit files) and/or files, in chain order. */
audit_reader *audit_reader_open(const char *const *paths, size_t n, char *err, size_t errlen);
/* false at the end or on an error (then audit_reader_error() is non-NULL). */
bool audit_reader_next(audit_reader *r, audit_line *out) AUDIT_WUR;
/* The line after the last one returned, if it is in the same file. */
bool audit_reader_peek(audit_reader *r, audit_line *out) AUDIT_WUR;
const char *audit_reader_error(const audit_reader *r);
uint64_t audit_reader_total_bytes(const audit_reader *r);
uint64_t audit_reader_done_bytes(const audit_reader *r);
size_t audit_reader_file_count(const audit_reader *r);
void audit_reader_close(audit_reader *r);

/* Length of an open file without the zero padding at its end (preallocated
 * space the writer has not reached; see AUDIT_FORMAT.md). */
uint64_t audit_fd_data_end(int fd, uint64_t size);

#endif
