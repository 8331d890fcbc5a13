/*
 * A PostgreSQL token scanner for the engine's own needs, with
 * standard_conforming_strings = on (the fronts pin it upstream).
 *
 * What depends on it, and why it must agree with the server's scanner
 * (src/backend/parser/scan.l) on where every token starts and ends:
 *   - the decision cache's normalised key replaces the contents of literals,
 *     so two texts that differ only inside literals share one decision; if this
 *     scanner ended a string where the server does not, a different statement
 *     could borrow a decision.  Hence E'' backslash escapes, '' doubling, U&
 *     and dollar quoting, string continuation across newlines, and identifiers
 *     that contain '$' are all handled as scan.l does;
 *   - the rewriter finds where a column reference or an output expression ends
 *     (libpg_query gives start locations only);
 *   - the depth estimate, checked before libpg_query sees the text.
 * Anything it cannot scan (an unterminated quote or comment) sets ok = false;
 * the caller then neither normalises nor rewrites.
 */
#include <string.h>

#include "sqlpolicy/sp_internal.h"

static bool is_ident_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static bool is_ident_cont(unsigned char c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

static bool is_dolq_cont(unsigned char c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

static bool is_op_char(unsigned char c)
{
    return strchr("~!@#^&|`?+-*/%<>=", c) != NULL && c != 0;
}

/* After a closing quote: whitespace holding a newline, then another quote,
 * continues the same literal (SQL standard; scan.l's {quotecontinue}).  Returns
 * the offset of that next quote, or 0. */
static size_t quote_continue(const char *s, size_t len, size_t i)
{
    bool nl = false;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n' || c == '\r') {
            nl = true;
            i++;
        } else if (c == ' ' || c == '\t' || c == '\f') {
            i++;
        } else if (nl && c == '-' && i + 1 < len && s[i + 1] == '-') {
            while (i < len && s[i] != '\n' && s[i] != '\r')
                i++;
        } else {
            break;
        }
    }
    return (nl && i < len && s[i] == '\'') ? i : 0;
}

/* Scan a quoted string body starting just after the opening quote.  backslash:
 * E'' semantics (a backslash escapes the next byte).  Returns the offset after
 * the literal (including continuations), 0 when unterminated. */
static size_t scan_string(const char *s, size_t len, size_t i, bool backslash)
{
    for (;;) {
        while (i < len) {
            char c = s[i];
            if (backslash && c == '\\') {
                i += 2;
                continue;
            }
            if (c == '\'') {
                if (i + 1 < len && s[i + 1] == '\'') {
                    i += 2;
                    continue;
                }
                break;
            }
            i++;
        }
        if (i >= len)
            return 0;
        i++; /* closing quote */
        size_t q = quote_continue(s, len, i);
        if (!q)
            return i;
        i = q + 1;
    }
}

static size_t scan_qident(const char *s, size_t len, size_t i)
{
    while (i < len) {
        if (s[i] == '"') {
            if (i + 1 < len && s[i + 1] == '"') {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i++;
    }
    return 0;
}

/* $tag$ ... $tag$ starting at i (s[i] == '$').  0 when this is not a dollar
 * quote start; sets *bad when it is one but never ends. */
static size_t scan_dollar(const char *s, size_t len, size_t i, bool *bad)
{
    size_t j = i + 1;
    if (j < len && is_ident_start((unsigned char)s[j])) {
        j++;
        while (j < len && is_dolq_cont((unsigned char)s[j]))
            j++;
    }
    if (j >= len || s[j] != '$')
        return 0;
    size_t taglen = j + 1 - i;
    const char *tag = s + i;
    for (size_t k = j + 1; k + taglen <= len; k++) {
        if (s[k] == '$' && memcmp(s + k, tag, taglen) == 0)
            return k + taglen;
    }
    *bad = true;
    return 0;
}

static size_t scan_number(const char *s, size_t len, size_t i)
{
    size_t j = i;
    while (j < len && is_digit((unsigned char)s[j]))
        j++;
    if (j < len && s[j] == '.') {
        /* "1..2" is the integer 1 followed by "..", as in scan.l's decimalfail */
        if (!(j + 1 < len && s[j + 1] == '.')) {
            j++;
            while (j < len && is_digit((unsigned char)s[j]))
                j++;
        }
    }
    if (j < len && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < len && (s[k] == '+' || s[k] == '-'))
            k++;
        if (k < len && is_digit((unsigned char)s[k])) {
            while (k < len && is_digit((unsigned char)s[k]))
                k++;
            j = k;
        }
    }
    return j;
}

/* Keywords that add a level to the parse tree when chained without commas. */
static bool deepening_word(const char *s, const sp_token *t)
{
    static const char *const kws[] = {"not", "is", "like", "ilike", "similar", "between", "in", "at",
                                      "collate", "join", "union", "intersect", "except", "case",
                                      "escape", "overlaps", "isnull", "notnull", "operator", NULL};
    size_t n = t->end - t->start;
    if (n < 2 || n > 9)
        return false;
    for (int i = 0; kws[i]; i++)
        if (sp_strneq_ci(s + t->start, n, kws[i]))
            return true;
    return false;
}

bool sp_tok_is_kw(const char *text, const sp_token *t, const char *kw)
{
    return t->kind == SPT_WORD && sp_strneq_ci(text + t->start, t->end - t->start, kw);
}

#define DEPTH_STACK 256

void sp_lex(sp_arena *a, const char *s, size_t len, sp_lexed *out)
{
    size_t cap = 64 + len / 3;
    sp_token *tok = sp_alloc_raw(a, cap * sizeof *tok);
    uint32_t n = 0;
    bool ok = true;
    /* Depth estimate: per open bracket level, the number of operators chained
     * since the level opened or since its last comma; the estimate is the sum
     * over the open levels (each level counting one more).  AND / OR are not
     * separators: the grammar flattens them, but JOIN ... ON a AND b chains
     * would otherwise hide a left-deep JoinExpr tree. */
    uint32_t cnt[DEPTH_STACK];
    uint32_t level = 0, base = 0, est = 1, maxest = 1;
    cnt[0] = 0;
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (is_space(c)) {
            i++;
            continue;
        }
        if (c == '-' && i + 1 < len && s[i + 1] == '-') {
            while (i < len && s[i] != '\n' && s[i] != '\r')
                i++;
            continue;
        }
        if (c == '/' && i + 1 < len && s[i + 1] == '*') {
            int nest = 1;
            i += 2;
            while (i < len && nest > 0) {
                if (s[i] == '/' && i + 1 < len && s[i + 1] == '*') {
                    nest++;
                    i += 2;
                } else if (s[i] == '*' && i + 1 < len && s[i + 1] == '/') {
                    nest--;
                    i += 2;
                } else {
                    i++;
                }
            }
            if (nest > 0) {
                ok = false;
                break;
            }
            continue;
        }
        if (n + 1 >= cap) {
            size_t ncap = cap * 2;
            sp_token *nt = sp_alloc_raw(a, ncap * sizeof *nt);
            memcpy(nt, tok, n * sizeof *tok);
            tok = nt;
            cap = ncap;
        }
        sp_token *t = &tok[n];
        t->start = (uint32_t)i;
        t->prefix = 0;
        size_t e = 0;
        /* Prefixed strings and identifiers: E'' B'' X'' N'' U&'' U&"" */
        if ((c == 'e' || c == 'E') && i + 1 < len && s[i + 1] == '\'') {
            e = scan_string(s, len, i + 2, true);
            t->kind = SPT_STRING;
            t->prefix = 1;
        } else if ((c == 'b' || c == 'B' || c == 'x' || c == 'X' || c == 'n' || c == 'N') && i + 1 < len &&
                   s[i + 1] == '\'') {
            e = scan_string(s, len, i + 2, false);
            t->kind = SPT_STRING;
            t->prefix = 1;
        } else if ((c == 'u' || c == 'U') && i + 2 < len && s[i + 1] == '&' && (s[i + 2] == '\'' || s[i + 2] == '"')) {
            if (s[i + 2] == '\'') {
                e = scan_string(s, len, i + 3, false);
                t->kind = SPT_STRING;
                t->prefix = 2;
            } else {
                e = scan_qident(s, len, i + 3);
                t->kind = SPT_QIDENT;
            }
        } else if (is_ident_start(c)) {
            e = i + 1;
            while (e < len && is_ident_cont((unsigned char)s[e]))
                e++;
            t->kind = SPT_WORD;
        } else if (c == '\'') {
            e = scan_string(s, len, i + 1, false);
            t->kind = SPT_STRING;
        } else if (c == '"') {
            e = scan_qident(s, len, i + 1);
            t->kind = SPT_QIDENT;
        } else if (is_digit(c) || (c == '.' && i + 1 < len && is_digit((unsigned char)s[i + 1]))) {
            e = scan_number(s, len, i);
            t->kind = SPT_NUMBER;
        } else if (c == '$') {
            if (i + 1 < len && is_digit((unsigned char)s[i + 1])) {
                e = i + 1;
                while (e < len && is_digit((unsigned char)s[e]))
                    e++;
                t->kind = SPT_PARAM;
            } else {
                bool bad = false;
                e = scan_dollar(s, len, i, &bad);
                if (bad) {
                    ok = false;
                    break;
                }
                if (e) {
                    t->kind = SPT_STRING;
                } else {
                    e = i + 1;
                    t->kind = SPT_OTHER;
                }
            }
        } else if (c == '(' || c == ')' || c == '[' || c == ']' || c == ',' || c == ';' || c == '.') {
            e = i + 1;
            t->kind = c == '(' ? SPT_LPAREN : c == ')' ? SPT_RPAREN : c == '[' ? SPT_LBRACK
                    : c == ']' ? SPT_RBRACK : c == ',' ? SPT_COMMA : c == ';' ? SPT_SEMI : SPT_DOT;
        } else if (c == ':') {
            if (i + 1 < len && (s[i + 1] == ':' || s[i + 1] == '=')) {
                e = i + 2;
                t->kind = SPT_OP;
            } else {
                e = i + 1;
                t->kind = SPT_COLON;
            }
        } else if (is_op_char(c)) {
            e = i;
            while (e < len && is_op_char((unsigned char)s[e])) {
                /* a comment start ends the operator (scan.l does the same) */
                if (e > i && ((s[e] == '-' && e + 1 < len && s[e + 1] == '-') ||
                              (s[e] == '/' && e + 1 < len && s[e + 1] == '*')))
                    break;
                e++;
            }
            t->kind = SPT_OP;
        } else {
            e = i + 1;
            t->kind = SPT_OTHER;
        }
        if (e == 0) {
            ok = false;
            break;
        }
        t->end = (uint32_t)e;
        i = e;
        n++;

        switch (t->kind) {
        case SPT_LPAREN:
        case SPT_LBRACK:
            /* 256 nested brackets is never a real query: report it as too deep */
            base++;
            est++;
            if (base < DEPTH_STACK) {
                level = base;
                cnt[level] = 0;
            } else if (maxest <= SQLP_MAX_TREE_DEPTH) {
                maxest = SQLP_MAX_TREE_DEPTH + 1;
            }
            break;
        case SPT_RPAREN:
        case SPT_RBRACK:
            if (base > 0) {
                if (base < DEPTH_STACK) {
                    est -= cnt[level];
                    level--;
                }
                base--;
                est--;
            }
            break;
        case SPT_COMMA:
        case SPT_SEMI:
            est -= cnt[level];
            cnt[level] = 0;
            break;
        case SPT_OP:
            cnt[level]++;
            est++;
            break;
        case SPT_WORD:
            if (deepening_word(s, t)) {
                cnt[level]++;
                est++;
            }
            break;
        default:
            break;
        }
        if (est > maxest)
            maxest = est;
    }
    out->tok = tok;
    out->ntok = n;
    out->ok = ok;
    out->depth_estimate = maxest;
}

int sp_tok_at(const sp_lexed *lx, uint32_t pos)
{
    uint32_t lo = 0, hi = lx->ntok;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (lx->tok[mid].start < pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < lx->ntok && lx->tok[lo].start == pos)
        return (int)lo;
    return -1;
}
