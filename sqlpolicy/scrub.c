/*
 * Scrubbing upstream error and notice text.
 *
 * The server quotes values in its messages: a failed cast names the input
 * ("invalid input syntax for type date: \"Vraxywen\""), a unique violation
 * shows the key ("Key (ssn)=(918-17-2821) already exists."), a check failure
 * shows the row ("Failing row contains (1, MRN-0948212, ...)").  The shape of
 * the message and the identifiers stay (relation "patients", column "ssn"),
 * so the agent still learns what went wrong; values become ***.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sqlpolicy/sp_internal.h"

/* Words after which a double-quoted token is an identifier, not a value. */
static bool names_identifier(const char *msg, const char *quote)
{
    static const char *const kinds[] = {
        "relation", "column", "table", "constraint", "index", "schema", "function", "type", "operator",
        "sequence", "view", "database", "role", "trigger", "extension", "cursor", "statement", "portal",
        "savepoint", "collation", "domain", "attribute", "tablespace", "publication", "subscription",
        "server", "wrapper", "language", "policy", "rule", "aggregate", "procedure", "routine", "near",
        "prepared statement", "materialized view", "foreign table", "class", "family", "conversion",
        "configuration", "dictionary", "parser", "template", "method", "object", "cast", "transform",
        "event trigger", NULL};
    /* Not here on purpose: "parameter", "setting", "encoding", "variable" -
     * their names come from function arguments (current_setting(x),
     * convert_to(v, x)), which can be values. */
    const char *p = quote;
    while (p > msg && p[-1] == ' ')
        p--;
    const char *end = p;
    for (int i = 0; kinds[i]; i++) {
        size_t n = strlen(kinds[i]);
        if ((size_t)(end - msg) >= n && strncasecmp(end - n, kinds[i], n) == 0 &&
            ((size_t)(end - msg) == n || end[-(long)n - 1] == ' ' || end[-(long)n - 1] == '('))
            return true;
    }
    return false;
}

char *sqlp_scrub_message(const char *msg)
{
    if (!msg)
        return strdup("");
    size_t len = strlen(msg);
    char *out = malloc(len * 2 + 16);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        char c = msg[i];
        if (c == '"') {
            size_t j = i + 1;
            while (j < len && !(msg[j] == '"' && (j + 1 >= len || msg[j + 1] != '"')))
                j += msg[j] == '"' ? 2 : 1;
            /* "X" does not exist: X may be a value read as a name (::regclass,
             * nextval(x)), whatever word precedes it */
            bool missing = j < len && strncmp(msg + j + 1, " does not exist", 15) == 0;
            if (!missing && !names_identifier(msg, msg + i)) {
                /* a value is printed raw, inner quotes and all: it runs to the
                 * last quote of the message ("(1,"182 Zerrick Lane",...)") */
                const char *last = strrchr(msg, '"');
                if (last && (size_t)(last - msg) > j)
                    j = (size_t)(last - msg);
            }
            if (!missing && names_identifier(msg, msg + i)) {
                size_t n = (j < len ? j + 1 : len) - i;
                memcpy(out + o, msg + i, n);
                o += n;
            } else {
                memcpy(out + o, "\"***\"", 5);
                o += 5;
            }
            i = j < len ? j + 1 : len;
            continue;
        }
        if (c == '\'') {
            size_t j = i + 1;
            while (j < len && !(msg[j] == '\'' && (j + 1 >= len || msg[j + 1] != '\'')))
                j += msg[j] == '\'' ? 2 : 1;
            memcpy(out + o, "'***'", 5);
            o += 5;
            i = j < len ? j + 1 : len;
            continue;
        }
        /* "=(value)" after a key list, "contains (row)" of a failing row */
        bool paren_value = c == '(' && ((i > 0 && msg[i - 1] == '=') ||
                                        (i >= 9 && strncmp(msg + i - 9, "contains ", 9) == 0));
        if (paren_value) {
            int depth = 0;
            size_t j = i;
            for (; j < len; j++) {
                if (msg[j] == '(')
                    depth++;
                else if (msg[j] == ')' && --depth == 0)
                    break;
            }
            memcpy(out + o, "(***)", 5);
            o += 5;
            i = j < len ? j + 1 : len;
            continue;
        }
        out[o++] = c;
        i++;
    }
    out[o] = 0;
    return out;
}
