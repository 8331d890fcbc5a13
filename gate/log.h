/*
 * phigate's own log: one line per event, "time level [prefix] message".
 * Untrusted bytes (from the wire) must go through log_escape first.
 */
#ifndef PHIGATE_LOG_H
#define PHIGATE_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum {
    LOG_LEVEL_DEBUG = 0,
    LOG_LEVEL_INFO = 1,
    LOG_LEVEL_WARN = 2,
    LOG_LEVEL_ERROR = 3,
} log_level;

void log_set_level(log_level level);
bool log_level_from_name(const char *name, log_level *out);
/* Log to a file instead of stderr; returns false (errno set) if it cannot be opened. */
bool log_open_file(const char *path);

void log_msg(log_level level, const char *prefix, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The same with a va_list, for wrappers that add their own prefix (sessions). */
void log_msgv(log_level level, const char *prefix, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, NULL, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, NULL, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, NULL, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, NULL, __VA_ARGS__)

bool log_enabled(log_level level);

/* Printable, quoted copy of untrusted bytes (at most max bytes shown) into out. */
const char *log_escape(const void *data, size_t len, size_t max, char *out, size_t outlen);

#endif
