#include "gate/log.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static log_level current_level = LOG_LEVEL_INFO;
static FILE *log_stream;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
_Static_assert(sizeof level_names / sizeof level_names[0] == LOG_LEVEL_ERROR + 1,
               "one name per log level");

void log_set_level(log_level level) { current_level = level; }

bool log_enabled(log_level level) { return level >= current_level; }

bool log_level_from_name(const char *name, log_level *out)
{
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (log_level)i;
            return true;
        }
    }
    return false;
}

bool log_open_file(const char *path)
{
    FILE *f = fopen(path, "a");
    if (!f)
        return false;
    setvbuf(f, NULL, _IOLBF, 0);
    if (log_stream && log_stream != stderr)
        fclose(log_stream);
    log_stream = f;
    return true;
}

void log_msg(log_level level, const char *prefix, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_msgv(level, prefix, fmt, ap);
    va_end(ap);
}

void log_msgv(log_level level, const char *prefix, const char *fmt, va_list ap)
{
    if (!log_enabled(level))
        return;
    FILE *out = log_stream ? log_stream : stderr;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);

    char line[2048];
    vsnprintf(line, sizeof line, fmt, ap);
    /* One fprintf per line so concurrent writers never interleave within a line. */
    fprintf(out, "%s.%03ldZ %s %s%s%s%s\n", when, ts.tv_nsec / 1000000, level_names[level],
            prefix ? "[" : "", prefix ? prefix : "", prefix ? "] " : "", line);
}

const char *log_escape(const void *data, size_t len, size_t max, char *out, size_t outlen)
{
    const unsigned char *p = data;
    size_t o = 0;
    if (outlen < 8) {
        if (outlen)
            out[0] = '\0';
        return out;
    }
    out[o++] = '"';
    for (size_t i = 0; i < len && i < max; i++) {
        char tmp[5];
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\')
            snprintf(tmp, sizeof tmp, "%c", p[i]);
        else
            snprintf(tmp, sizeof tmp, "\\x%02x", p[i]);
        size_t tl = strlen(tmp);
        if (o + tl + 5 >= outlen)
            break;
        memcpy(out + o, tmp, tl);
        o += tl;
    }
    out[o++] = '"';
    if (len > max && o + 4 < outlen) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}
