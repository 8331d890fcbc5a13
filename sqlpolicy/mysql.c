/*
 * MySQL / MariaDB statements in front of the PostgreSQL analyser.
 *
 * The engine analyses one grammar, PostgreSQL's (libpg_query).  A MySQL
 * string is lexed here with MySQL's rules (backslash escapes, "strings",
 * `identifiers`, # comments, @variables) and each statement is either
 *   native   translated token by token into PostgreSQL text that parses to
 *            the same tree shape (SELECT, INSERT, UPDATE, DELETE, DO, EXPLAIN),
 *            then analysed, masked and rewritten like any PostgreSQL query;
 *   judged   classified here (SHOW, SET, USE, DDL, GRANT, LOAD DATA ...),
 *            without a parse tree.
 * The translation keeps one map entry per token, so the rewrite's edits land
 * on the client's own bytes and the statement sent upstream stays MySQL:
 *
 *   client:      SELECT `ssn` FROM patients WHERE id = ?
 *   translation: SELECT "ssn" FROM patients WHERE id = $1
 *                       ^^^^^ edit here ...
 *   upstream:    SELECT (CONCAT('***-**-', ...)) AS `ssn` FROM patients WHERE id = ?
 *                       ^^^^^ ... lands here
 *
 * Anything this lexer or the translation cannot read with certainty refuses
 * the string: executable comments (slash-star-bang), ':=' assignments, SQL
 * modes that change quoting, client character sets that hide quotes.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sqlpolicy/sp_internal.h"

typedef enum {
    MT_WORD,
    MT_BQ,      /* `identifier` */
    MT_STRING,  /* '...' or "..." */
    MT_XSTR,    /* X'..' B'..' */
    MT_HEXNUM,  /* 0x1F, 0b101 */
    MT_NUMBER,
    MT_VAR,     /* @name, @@name, @@session.name */
    MT_PARAM,   /* ? */
    MT_OP,
    MT_LP,
    MT_RP,
    MT_COMMA,
    MT_SEMI,
    MT_DOT,
    MT_OTHER,
} my_kind;

typedef struct my_tok {
    uint32_t s, e;
    uint8_t kind;
} my_tok;

typedef struct my_lexed {
    my_tok *t;
    uint32_t n, cap;
} my_lexed;

static bool word_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '$' ||
           c >= 0x80;
}

static void push(sp_arena *a, my_lexed *lx, uint32_t s, uint32_t e, my_kind k)
{
    if (lx->n == lx->cap) {
        uint32_t ncap = lx->cap ? lx->cap * 2 : 64;
        my_tok *nt = sp_alloc_raw(a, ncap * sizeof *nt);
        if (lx->n)
            memcpy(nt, lx->t, lx->n * sizeof *nt);
        lx->t = nt;
        lx->cap = ncap;
    }
    lx->t[lx->n++] = (my_tok){s, e, (uint8_t)k};
}

/* End of a quoted run opened at s[i] (quote q), MySQL rules: a backslash
 * escapes the next byte (not in `identifiers`), a doubled quote is one. */
static size_t quoted_end(const char *s, size_t len, size_t i, char q)
{
    for (size_t j = i + 1; j < len; j++) {
        if (s[j] == '\\' && q != '`') {
            j++;
            continue;
        }
        if (s[j] == q) {
            if (j + 1 < len && s[j + 1] == q) {
                j++;
                continue;
            }
            return j + 1;
        }
    }
    return 0;
}

static bool my_lex(sp_arena *a, const char *s, size_t len, my_lexed *lx, const char **why)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
            i++;
            continue;
        }
        if (c == '#' || (c == '-' && i + 1 < len && s[i + 1] == '-' &&
                         (i + 2 >= len || (unsigned char)s[i + 2] <= ' '))) {
            while (i < len && s[i] != '\n')
                i++;
            continue;
        }
        if (c == '/' && i + 1 < len && s[i + 1] == '*') {
            /* slash-star-bang runs its contents on the server: not a comment */
            if (i + 2 < len && (s[i + 2] == '!' || (s[i + 2] == 'M' && i + 3 < len && s[i + 3] == '!'))) {
                *why = "executable comments are not analysed by phigate";
                return false;
            }
            const char *end = len - i > 3 ? memmem(s + i + 2, len - i - 2, "*/", 2) : NULL;
            if (!end) {
                *why = "unterminated comment";
                return false;
            }
            i = (size_t)(end - s) + 2;
            continue;
        }
        size_t st = i, e;
        my_kind k;
        if (c == '\'' || c == '"' || c == '`') {
            e = quoted_end(s, len, i, (char)c);
            if (!e) {
                *why = "unterminated quoted string or identifier";
                return false;
            }
            k = c == '`' ? MT_BQ : MT_STRING;
        } else if ((c == 'x' || c == 'X' || c == 'b' || c == 'B') && i + 1 < len && s[i + 1] == '\'') {
            e = quoted_end(s, len, i + 1, '\'');
            if (!e) {
                *why = "unterminated quoted string";
                return false;
            }
            k = MT_XSTR;
        } else if ((c == 'n' || c == 'N') && i + 1 < len && s[i + 1] == '\'') {
            e = quoted_end(s, len, i + 1, '\'');
            if (!e) {
                *why = "unterminated quoted string";
                return false;
            }
            st = i + 1; /* N'..' is a string in the connection's national character set */
            k = MT_STRING;
        } else if (c == '0' && i + 2 < len && (s[i + 1] == 'x' || s[i + 1] == 'b') &&
                   word_char((unsigned char)s[i + 2])) {
            e = i + 2;
            while (e < len && word_char((unsigned char)s[e]))
                e++;
            k = MT_HEXNUM;
        } else if ((c >= '0' && c <= '9') || (c == '.' && i + 1 < len && s[i + 1] >= '0' && s[i + 1] <= '9')) {
            e = i;
            while (e < len && s[e] >= '0' && s[e] <= '9')
                e++;
            if (e < len && s[e] == '.') {
                e++;
                while (e < len && s[e] >= '0' && s[e] <= '9')
                    e++;
            }
            if (e < len && (s[e] == 'e' || s[e] == 'E')) {
                size_t f = e + 1;
                if (f < len && (s[f] == '+' || s[f] == '-'))
                    f++;
                if (f < len && s[f] >= '0' && s[f] <= '9') {
                    while (f < len && s[f] >= '0' && s[f] <= '9')
                        f++;
                    e = f;
                }
            }
            k = MT_NUMBER;
            if (e < len && word_char((unsigned char)s[e])) { /* 1abc: MySQL reads an identifier */
                while (e < len && word_char((unsigned char)s[e]))
                    e++;
                k = MT_WORD;
            }
        } else if (word_char(c)) {
            e = i;
            while (e < len && word_char((unsigned char)s[e]))
                e++;
            k = MT_WORD;
            /* _utf8mb4'x': a character set introducer glued to its string */
            if (c == '_' && e < len && s[e] == '\'') {
                size_t q = quoted_end(s, len, e, '\'');
                if (!q) {
                    *why = "unterminated quoted string";
                    return false;
                }
                st = e;
                e = q;
                k = MT_STRING;
            }
        } else if (c == '@') {
            e = i + 1;
            if (e < len && s[e] == '@')
                e++;
            if (e < len && (s[e] == '\'' || s[e] == '"' || s[e] == '`')) {
                e = quoted_end(s, len, e, s[e]);
                if (!e) {
                    *why = "unterminated quoted variable name";
                    return false;
                }
            } else {
                while (e < len && (word_char((unsigned char)s[e]) || s[e] == '.'))
                    e++;
            }
            k = MT_VAR;
        } else if (c == '?') {
            e = i + 1;
            k = MT_PARAM;
        } else if (c == '(' || c == ')' || c == ',' || c == ';' || c == '.') {
            e = i + 1;
            k = c == '(' ? MT_LP : c == ')' ? MT_RP : c == ',' ? MT_COMMA : c == ';' ? MT_SEMI : MT_DOT;
        } else if (strchr("=<>!~^&|+-*/%:", c)) {
            static const char *const ops[] = {"<=>", "->>", ":=", "<=", ">=", "<>", "!=", "<<", ">>", "&&", "||",
                                              "->", NULL};
            e = i + 1;
            for (int o = 0; ops[o]; o++) {
                size_t ol = strlen(ops[o]);
                if (len - i >= ol && memcmp(s + i, ops[o], ol) == 0) {
                    e = i + ol;
                    break;
                }
            }
            k = MT_OP;
        } else if (c == '{' || c == '}') {
            *why = "ODBC escape syntax is not analysed by phigate";
            return false;
        } else {
            e = i + 1;
            k = MT_OTHER;
        }
        push(a, lx, (uint32_t)st, (uint32_t)e, k);
        i = e;
    }
    return true;
}

/* ---- helpers ----------------------------------------------------------------------- */

typedef struct my_ctx {
    sp_arena *a;
    const char *s;
    const my_lexed *lx;
    const sqlp_catalog *cat;
    const char *database;
    sp_buf out;
    sp_srcmap *m;
    uint32_t mcap;
    int nparam, nvar;
} my_ctx;

static bool kw(const my_ctx *c, uint32_t i, uint32_t end, const char *w)
{
    if (i >= end)
        return false;
    const my_tok *t = &c->lx->t[i];
    return t->kind == MT_WORD && sp_strneq_ci(c->s + t->s, t->e - t->s, w);
}

static bool op(const my_ctx *c, uint32_t i, uint32_t end, const char *o)
{
    if (i >= end)
        return false;
    const my_tok *t = &c->lx->t[i];
    return (t->kind == MT_OP || t->kind == MT_OTHER) && t->e - t->s == strlen(o) && memcmp(c->s + t->s, o, t->e - t->s) == 0;
}

/* Append one translated token mapped to client bytes [ms, me). */
static void emit(my_ctx *c, const char *text, size_t n, uint32_t ms, uint32_t me)
{
    if (c->out.len)
        sp_buf_add(&c->out, " ", 1);
    sp_srcmap *m = c->m;
    if (m->n == c->mcap) {
        uint32_t ncap = c->mcap ? c->mcap * 2 : 64;
        uint32_t *arr[4] = {m->pg_s, m->pg_e, m->my_s, m->my_e};
        for (int k = 0; k < 4; k++) {
            uint32_t *na = sp_alloc_raw(c->a, ncap * sizeof *na);
            if (m->n)
                memcpy(na, arr[k], m->n * sizeof *na);
            arr[k] = na;
        }
        m->pg_s = arr[0];
        m->pg_e = arr[1];
        m->my_s = arr[2];
        m->my_e = arr[3];
        c->mcap = ncap;
    }
    m->pg_s[m->n] = (uint32_t)c->out.len;
    sp_buf_add(&c->out, text, n);
    m->pg_e[m->n] = (uint32_t)c->out.len;
    m->my_s[m->n] = ms;
    m->my_e[m->n] = me;
    m->n++;
}

static void emit_s(my_ctx *c, const char *text, uint32_t ms, uint32_t me)
{
    emit(c, text, strlen(text), ms, me);
}

static void emit_tok(my_ctx *c, uint32_t i)
{
    const my_tok *t = &c->lx->t[i];
    emit(c, c->s + t->s, t->e - t->s, t->s, t->e);
}

/* A MySQL string's value as a PostgreSQL literal (standard_conforming_strings on). */
static const char *pg_string(my_ctx *c, const my_tok *t)
{
    const char *p = c->s + t->s;
    char q = *p;
    sp_buf b;
    sp_buf_init(&b, c->a, t->e - t->s + 8);
    sp_buf_add(&b, "'", 1);
    for (const char *x = p + 1; x < c->s + t->e - 1; x++) {
        char ch = *x;
        if (ch == '\\' && x + 1 < c->s + t->e - 1) {
            x++;
            switch (*x) {
            case 'n': ch = '\n'; break;
            case 't': ch = '\t'; break;
            case 'r': ch = '\r'; break;
            case 'b': ch = '\b'; break;
            case 'Z': ch = 26; break;
            case '0': continue; /* a NUL cannot travel in the translation; its value is never consulted */
            case '%':
            case '_': sp_buf_add(&b, "\\", 1); ch = *x; break; /* LIKE escapes keep their backslash */
            default: ch = *x; break;
            }
        } else if (ch == q && x + 1 < c->s + t->e - 1 && x[1] == q) {
            x++;
        }
        if (ch == '\'')
            sp_buf_add(&b, "'", 1);
        sp_buf_add(&b, &ch, 1);
    }
    sp_buf_add(&b, "'", 1);
    return sp_buf_cstr(&b);
}

static const char *lower_ident(my_ctx *c, const char *p, size_t n, bool quote)
{
    sp_buf b;
    sp_buf_init(&b, c->a, n + 3);
    if (quote)
        sp_buf_add(&b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '`' && i + 1 < n && p[i + 1] == '`')
            i++;
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch + 32); /* MySQL column names ignore case; the catalog is lower case */
        if (ch == '"' && quote)
            sp_buf_add(&b, "\"", 1);
        sp_buf_add(&b, &ch, 1);
    }
    if (quote)
        sp_buf_add(&b, "\"", 1);
    return sp_buf_cstr(&b);
}

/* Built-ins whose names the PostgreSQL grammar reserves when called: renamed
 * to mysql_<name> (listed in funcs_mysql.inc). */
static bool reserved_call(const char *w, size_t n)
{
    static const char *const names[] = {"char", "time", "user", "current_user", "session_user", "system_user",
                                        "values", "timestamp", "interval", "current_date", "current_time",
                                        "current_timestamp", "localtime", "localtimestamp", "default", NULL};
    for (int i = 0; names[i]; i++)
        if (sp_strneq_ci(w, n, names[i]))
            return true;
    return false;
}

/* ---- native statements ------------------------------------------------------------------ */

static bool translate(my_ctx *c, uint32_t i0, uint32_t end, const char **why)
{
    const my_tok *T = c->lx->t;
    for (uint32_t i = i0; i < end; i++) {
        const my_tok *t = &T[i];
        uint32_t ms = t->s, me = t->e;
        const char *w = c->s + t->s;
        size_t wn = t->e - t->s;
        switch (t->kind) {
        case MT_WORD:
            if (i + 1 < end && T[i + 1].kind == MT_LP && reserved_call(w, wn) &&
                !(i > i0 && (kw(c, i - 1, end, "as") || kw(c, i - 1, end, "binary"))) &&
                !(sp_strneq_ci(w, wn, "values") && i > i0 && T[i - 1].kind != MT_OP && T[i - 1].kind != MT_COMMA &&
                  T[i - 1].kind != MT_LP)) {
                /* a call of CHAR() / USER() / VALUES(col) ..., not CAST(x AS CHAR(3)) or INSERT ... VALUES (...) */
                emit_s(c, sp_printf(c->a, "mysql_%s", lower_ident(c, w, wn, false)), ms, me);
            } else if (kw(c, i, end, "div") && !(i + 1 < end && T[i + 1].kind == MT_LP)) {
                emit_s(c, "/", ms, me);
            } else if (kw(c, i, end, "regexp") || kw(c, i, end, "rlike")) {
                emit_s(c, "~", ms, me);
            } else if (kw(c, i, end, "not") && (kw(c, i + 1, end, "regexp") || kw(c, i + 1, end, "rlike"))) {
                emit_s(c, "!~", ms, T[i + 1].e);
                i++;
            } else if (kw(c, i, end, "xor")) {
                emit_s(c, "<>", ms, me);
            } else if (kw(c, i, end, "distinctrow")) {
                emit_s(c, "distinct", ms, me);
            } else if (kw(c, i, end, "sql_calc_found_rows") || kw(c, i, end, "sql_no_cache") ||
                       kw(c, i, end, "sql_cache") || kw(c, i, end, "sql_small_result") ||
                       kw(c, i, end, "sql_big_result") || kw(c, i, end, "sql_buffer_result") ||
                       kw(c, i, end, "high_priority") || kw(c, i, end, "low_priority") ||
                       kw(c, i, end, "delayed") || kw(c, i, end, "quick") ||
                       (kw(c, i, end, "ignore") && i > i0 &&
                        (kw(c, i - 1, end, "insert") || kw(c, i - 1, end, "update") || kw(c, i - 1, end, "delete") ||
                         kw(c, i - 1, end, "low_priority")))) {
                /* modifiers that change how, not what: dropped from the analysed text */
            } else if (kw(c, i, end, "straight_join")) {
                if (!(i > i0 && kw(c, i - 1, end, "select")))
                    emit_s(c, "join", ms, me);
            } else if (kw(c, i, end, "lock") && kw(c, i + 1, end, "in") && kw(c, i + 2, end, "share") &&
                       kw(c, i + 3, end, "mode")) {
                emit_s(c, "for", ms, T[i + 3].e);
                emit_s(c, "share", ms, T[i + 3].e);
                i += 3;
            } else if (kw(c, i, end, "interval") && i + 2 < end && T[i + 1].kind == MT_NUMBER &&
                       T[i + 2].kind == MT_WORD) {
                /* INTERVAL 30 DAY: PostgreSQL wants the quantity quoted */
                emit_tok(c, i);
                emit_s(c, sp_printf(c->a, "'%.*s'", (int)(T[i + 1].e - T[i + 1].s), c->s + T[i + 1].s), T[i + 1].s,
                       T[i + 1].e);
                i++;
            } else if (kw(c, i, end, "separator")) {
                emit_s(c, ",", ms, me); /* GROUP_CONCAT(x SEPARATOR ',') */
            } else if (kw(c, i, end, "on") && kw(c, i + 1, end, "duplicate") && kw(c, i + 2, end, "key") &&
                       kw(c, i + 3, end, "update")) {
                static const char *const w4[] = {"on", "conflict", "do", "update", "set"};
                for (int k = 0; k < 5; k++)
                    emit_s(c, w4[k], ms, T[i + 3].e);
                i += 3;
            } else if (i == i0 && kw(c, i, end, "replace")) {
                emit_s(c, "insert", ms, me);
            } else if (i == i0 && kw(c, i, end, "do")) {
                emit_s(c, "select", ms, me); /* DO evaluates a select list and returns nothing */
            } else if (kw(c, i, end, "limit") && i + 3 < end && T[i + 1].kind == MT_NUMBER &&
                       T[i + 2].kind == MT_COMMA && T[i + 3].kind == MT_NUMBER) {
                /* LIMIT offset, count */
                emit_tok(c, i);
                emit_tok(c, i + 3);
                emit_s(c, "offset", T[i + 2].s, T[i + 2].e);
                emit_tok(c, i + 1);
                i += 3;
            } else {
                emit(c, w, wn, ms, me);
            }
            break;
        case MT_BQ:
            emit_s(c, lower_ident(c, w + 1, wn - 2, true), ms, me);
            break;
        case MT_STRING:
            emit_s(c, pg_string(c, t), ms, me);
            break;
        case MT_XSTR:
            emit(c, w, wn, ms, me);
            break;
        case MT_HEXNUM:
            emit_s(c, sp_printf(c->a, "%c'%.*s'", w[1] == 'x' ? 'X' : 'B', (int)wn - 2, w + 2), ms, me);
            break;
        case MT_VAR:
            /* @x / @@version: a value the server supplies; no lineage */
            emit_s(c, sp_printf(c->a, "$%d", 30000 + ++c->nvar), ms, me);
            break;
        case MT_PARAM:
            emit_s(c, sp_printf(c->a, "$%d", ++c->nparam), ms, me);
            break;
        case MT_OP:
            if (op(c, i, end, ":=")) {
                *why = ":=";
                return false;
            }
            if (op(c, i, end, "!"))
                emit_s(c, "not", ms, me);
            else if (op(c, i, end, "&&"))
                emit_s(c, "and", ms, me);
            else if (op(c, i, end, "||"))
                emit_s(c, "or", ms, me); /* OR, unless PIPES_AS_CONCAT (which SET refuses) */
            else
                emit(c, w, wn, ms, me);
            break;
        default:
            emit(c, w, wn, ms, me);
            break;
        }
    }
    return true;
}

/* ---- judged statements -------------------------------------------------------------------- */

static void deny(sp_my_stmt *st, const char *rule, const char *reason)
{
    if (!st->deny_rule) {
        st->deny_rule = rule;
        st->deny_reason = reason;
    }
}

static void escalate(sp_my_stmt *st, sqlp_class k, const char *why)
{
    if (k != st->cls && !(st->escalated & (1u << k))) {
        st->escalated |= 1u << k;
        if (!st->why)
            st->why = why;
    }
}

/* Client character sets whose multibyte characters can end in 0x5c: the
 * server and phigate would disagree on where a string ends. */
static bool unsafe_charset(const char *v, size_t n)
{
    static const char *const bad[] = {"big5", "cp932", "gbk", "sjis", "gb18030", "eucjpms", "ujis", NULL};
    for (int i = 0; bad[i]; i++)
        if (n >= strlen(bad[i]) && strncasecmp(v, bad[i], strlen(bad[i])) == 0)
            return true;
    return false;
}

static const char *tok_text(my_ctx *c, uint32_t i)
{
    const my_tok *t = &c->lx->t[i];
    if (t->kind == MT_STRING || t->kind == MT_BQ)
        return sp_strndup(c->a, c->s + t->s + 1, t->e - t->s - 2);
    return sp_strndup(c->a, c->s + t->s, t->e - t->s);
}

/* Relation names among the statement's words that hold PHI in the session's database. */
static const char *phi_name(my_ctx *c, uint32_t i0, uint32_t end)
{
    for (uint32_t i = i0; i < end; i++) {
        const my_tok *t = &c->lx->t[i];
        if (t->kind != MT_WORD && t->kind != MT_BQ)
            continue;
        const char *name = t->kind == MT_BQ ? lower_ident(c, c->s + t->s + 1, t->e - t->s - 2, false)
                                            : lower_ident(c, c->s + t->s, t->e - t->s, false);
        const cat_rel *r = c->database ? sp_cat_find(c->cat, c->database, name) : NULL;
        if (r && r->has_phi)
            return name;
        for (int k = 0; !r && k < c->cat->nrules; k++)
            if (strcmp(c->cat->rules[k].table, name) == 0)
                return name;
    }
    return NULL;
}

static void judge_set(my_ctx *c, uint32_t i, uint32_t end, sp_my_stmt *st)
{
    st->cls = SQLP_CLASS_SESSION;
    if (kw(c, i, end, "names") || kw(c, i, end, "charset") || (kw(c, i, end, "character") && kw(c, i + 1, end, "set"))) {
        uint32_t v = kw(c, i, end, "character") ? i + 2 : i + 1;
        if (v < end && unsafe_charset(tok_text(c, v), strlen(tok_text(c, v))))
            deny(st, "session.client_encoding", "this character set can hide quote characters inside multibyte characters");
        return;
    }
    if (kw(c, i, end, "password") || kw(c, i, end, "role") || (kw(c, i, end, "default") && kw(c, i + 1, end, "role"))) {
        st->cls = SQLP_CLASS_PRIVILEGE;
        return;
    }
    if (kw(c, i, end, "transaction") || ((kw(c, i, end, "session") || kw(c, i, end, "global")) &&
                                         kw(c, i + 1, end, "transaction"))) {
        if (kw(c, i, end, "global"))
            escalate(st, SQLP_CLASS_ADMIN, "SET GLOBAL changes every session");
        return;
    }
    if (kw(c, i, end, "statement")) {
        deny(st, "analyse.unsupported", "phigate cannot analyse this statement: SET STATEMENT ... FOR");
        return;
    }
    /* assignments: [GLOBAL|SESSION|LOCAL|PERSIST] name = value, @x = value, @@x = value */
    while (i < end) {
        bool global = false;
        if (kw(c, i, end, "global") || kw(c, i, end, "persist") || kw(c, i, end, "persist_only")) {
            global = true;
            i++;
        } else if (kw(c, i, end, "session") || kw(c, i, end, "local")) {
            i++;
        }
        if (i >= end)
            break;
        const char *name = tok_text(c, i);
        bool uservar = c->lx->t[i].kind == MT_VAR && name[1] != '@';
        if (c->lx->t[i].kind == MT_VAR && name[1] == '@') {
            name += 2;
            if (strncasecmp(name, "global.", 7) == 0) {
                global = true;
                name += 7;
            } else if (strncasecmp(name, "session.", 8) == 0 || strncasecmp(name, "local.", 6) == 0) {
                name = strchr(name, '.') + 1;
            }
        }
        i++;
        if (!(op(c, i, end, "=") || op(c, i, end, ":="))) {
            deny(st, "analyse.unsupported", "phigate cannot analyse this SET statement");
            return;
        }
        i++;
        uint32_t v0 = i;
        int depth = 0;
        while (i < end && !(depth == 0 && c->lx->t[i].kind == MT_COMMA)) {
            depth += c->lx->t[i].kind == MT_LP ? 1 : c->lx->t[i].kind == MT_RP ? -1 : 0;
            i++;
        }
        bool simple = i == v0 + 1 && c->lx->t[v0].kind != MT_LP;
        const char *value = simple ? tok_text(c, v0) : NULL;
        if (global)
            escalate(st, SQLP_CLASS_ADMIN, "SET GLOBAL changes every session");
        if (uservar) {
            /* a user variable keeps a value for later statements: only constants */
            if (!simple || c->lx->t[v0].kind == MT_WORD)
                if (!(simple && (kw(c, v0, end, "null") || kw(c, v0, end, "true") || kw(c, v0, end, "false"))))
                    deny(st, "session.user_variable",
                         "SET @variable to a query or expression is not analysed by phigate; use a constant");
        } else if (strcasecmp(name, "sql_mode") == 0) {
            static const char *const bad[] = {"ansi_quotes", "no_backslash_escapes", "pipes_as_concat", "ansi", NULL};
            if (!value && !kw(c, v0, end, "default"))
                deny(st, "session.sql_mode", "sql_mode must be set to a constant behind phigate");
            for (int k = 0; value && bad[k]; k++)
                if (strcasestr(value, bad[k]))
                    deny(st, "session.sql_mode",
                         "sql_modes that change how quotes and || read (ANSI, ANSI_QUOTES, NO_BACKSLASH_ESCAPES, "
                         "PIPES_AS_CONCAT) are refused: phigate parses statements the default way");
        } else if (strncasecmp(name, "character_set_", 14) == 0 || strcasecmp(name, "names") == 0) {
            if (value && unsafe_charset(value, strlen(value)))
                deny(st, "session.client_encoding",
                     "this character set can hide quote characters inside multibyte characters");
        } else if (strcasecmp(name, "sql_log_bin") == 0 || strcasecmp(name, "sql_log_off") == 0 ||
                   strncasecmp(name, "general_log", 11) == 0 || strncasecmp(name, "slow_query_log", 14) == 0) {
            escalate(st, SQLP_CLASS_ADMIN, "logging settings are server administration");
        }
        if (i < end)
            i++; /* the comma */
    }
}

static void judge(my_ctx *c, uint32_t i0, uint32_t end, sp_my_stmt *st)
{
    const char *phi;
    st->cls = SQLP_CLASS_ADMIN;
    if (kw(c, i0, end, "show")) {
        st->cls = SQLP_CLASS_SESSION;
        uint32_t i = i0 + 1;
        if (kw(c, i, end, "full") || kw(c, i, end, "global") || kw(c, i, end, "session"))
            i++;
        if (kw(c, i, end, "processlist"))
            deny(st, "relation.blocked", "SHOW PROCESSLIST shows other sessions' statements");
        else if (kw(c, i, end, "warnings") || kw(c, i, end, "errors") ||
                 (kw(c, i, end, "count") && i + 2 < end && (kw(c, i + 3, end, "warnings") || kw(c, i + 3, end, "errors"))))
            deny(st, "relation.blocked", "warnings can quote the values that caused them; phigate does not relay them");
        else if (kw(c, i, end, "binlog") || kw(c, i, end, "relaylog") || kw(c, i, end, "engine") ||
                 kw(c, i, end, "master") || kw(c, i, end, "slave") || kw(c, i, end, "replica") ||
                 kw(c, i, end, "binary"))
            escalate(st, SQLP_CLASS_ADMIN, "replication and engine state is server administration");
        return;
    }
    if (kw(c, i0, end, "set")) {
        judge_set(c, i0 + 1, end, st);
        return;
    }
    if (kw(c, i0, end, "use")) {
        st->cls = SQLP_CLASS_SESSION;
        const char *db = i0 + 1 < end ? tok_text(c, i0 + 1) : NULL;
        if (!db || !c->database || strcmp(db, c->database) != 0)
            deny(st, "session.database", "phigate serves one database per session; reconnect to use another");
        return;
    }
    if (kw(c, i0, end, "start") || kw(c, i0, end, "begin") || kw(c, i0, end, "commit") ||
        kw(c, i0, end, "rollback") || kw(c, i0, end, "savepoint") || kw(c, i0, end, "release")) {
        st->cls = SQLP_CLASS_SESSION;
        if (kw(c, i0, end, "start") && (kw(c, i0 + 1, end, "slave") || kw(c, i0 + 1, end, "replica")))
            st->cls = SQLP_CLASS_ADMIN;
        return;
    }
    if (kw(c, i0, end, "lock")) {
        st->cls = SQLP_CLASS_WRITE;
        return;
    }
    if (kw(c, i0, end, "unlock")) {
        st->cls = SQLP_CLASS_SESSION;
        return;
    }
    if (kw(c, i0, end, "describe") || kw(c, i0, end, "desc") || kw(c, i0, end, "explain") ||
        kw(c, i0, end, "help")) {
        st->cls = SQLP_CLASS_READ; /* a table's columns, not its rows */
        return;
    }
    if (kw(c, i0, end, "call")) {
        st->cls = SQLP_CLASS_PROCEDURAL;
        return;
    }
    if (kw(c, i0, end, "grant") || kw(c, i0, end, "revoke")) {
        st->cls = SQLP_CLASS_PRIVILEGE;
        return;
    }
    if (kw(c, i0, end, "create") || kw(c, i0, end, "alter") || kw(c, i0, end, "drop") || kw(c, i0, end, "rename")) {
        bool create = kw(c, i0, end, "create");
        st->cls = SQLP_CLASS_DDL;
        bool select = false;
        for (uint32_t i = i0 + 1; i < end; i++) {
            if (kw(c, i, end, "procedure") || kw(c, i, end, "function") || kw(c, i, end, "trigger") ||
                kw(c, i, end, "event") || kw(c, i, end, "aggregate")) {
                st->cls = SQLP_CLASS_PROCEDURAL;
                return;
            }
            if (kw(c, i, end, "user") || kw(c, i, end, "role")) {
                st->cls = SQLP_CLASS_PRIVILEGE;
                return;
            }
            if (kw(c, i, end, "server") || kw(c, i, end, "tablespace") || kw(c, i, end, "logfile")) {
                st->cls = SQLP_CLASS_ADMIN;
                return;
            }
            if (kw(c, i, end, "table") || kw(c, i, end, "view") || kw(c, i, end, "index") ||
                kw(c, i, end, "database") || kw(c, i, end, "schema") || kw(c, i, end, "sequence"))
                break;
        }
        for (uint32_t i = i0; i < end && !select; i++)
            select = kw(c, i, end, "select");
        if ((phi = phi_name(c, i0 + 1, end))) {
            st->touches_phi = true;
            /* CREATE ... SELECT copies rows; CREATE naming a PHI table otherwise
             * (LIKE, REFERENCES, an index) copies none.  ALTER / DROP / RENAME
             * of it would leave the masking catalog describing another table. */
            if (create && select)
                deny(st, "phi.copy", sp_printf(c->a, "the statement would copy PHI of %s into a new object; copying "
                                                     "PHI is not allowed", phi));
            else if (!create)
                deny(st, "phi.ddl", sp_printf(c->a, "DDL on %s, which holds PHI, is not allowed through phigate "
                                                    "(the masking catalog would no longer describe it)", phi));
        }
        return;
    }
    if (kw(c, i0, end, "truncate")) {
        st->cls = SQLP_CLASS_WRITE;
        if ((phi = phi_name(c, i0 + 1, end))) {
            st->touches_phi = true;
            st->hold_rule = "phi.unscoped_write";
            st->hold_reason = sp_printf(c->a, "TRUNCATE of %s, which holds PHI, needs approval", phi);
        }
        return;
    }
    if (kw(c, i0, end, "load")) {
        st->cls = SQLP_CLASS_EXPORT;
        bool local = kw(c, i0 + 2, end, "local") || kw(c, i0 + 3, end, "local");
        if (!local)
            escalate(st, SQLP_CLASS_ADMIN, "LOAD DATA INFILE reads a server file");
        if ((phi = phi_name(c, i0 + 1, end)))
            st->touches_phi = true;
        return;
    }
    if (kw(c, i0, end, "analyze") || kw(c, i0, end, "optimize") || kw(c, i0, end, "check") ||
        kw(c, i0, end, "repair") || kw(c, i0, end, "checksum")) {
        st->cls = SQLP_CLASS_DDL;
        return;
    }
    if (kw(c, i0, end, "kill") || kw(c, i0, end, "flush") || kw(c, i0, end, "reset") || kw(c, i0, end, "purge") ||
        kw(c, i0, end, "change") || kw(c, i0, end, "stop") || kw(c, i0, end, "install") ||
        kw(c, i0, end, "uninstall") || kw(c, i0, end, "shutdown") || kw(c, i0, end, "cache") ||
        kw(c, i0, end, "binlog") || kw(c, i0, end, "xa") || kw(c, i0, end, "restart")) {
        st->cls = SQLP_CLASS_ADMIN;
        return;
    }
    const my_tok *t = &c->lx->t[i0];
    deny(st, "analyse.unsupported",
         sp_printf(c->a, "phigate cannot analyse this statement: %.*s", (int)(t->e - t->s > 40 ? 40 : t->e - t->s),
                   c->s + t->s));
}

/* ---- entry points ------------------------------------------------------------------------ */

static bool native_start(const my_ctx *c, uint32_t i, uint32_t end)
{
    return kw(c, i, end, "select") || kw(c, i, end, "with") || kw(c, i, end, "values") || kw(c, i, end, "table") ||
           kw(c, i, end, "insert") || kw(c, i, end, "replace") || kw(c, i, end, "update") ||
           kw(c, i, end, "delete") || kw(c, i, end, "do") || (i < end && c->lx->t[i].kind == MT_LP);
}

bool sp_mysql_prepare(sp_arena *a, const sqlp_catalog *cat, const char *text, size_t len, const char *database,
                      sp_mysql *out, const char **why)
{
    memset(out, 0, sizeof *out);
    my_lexed lx = {0};
    if (!my_lex(a, text, len, &lx, why))
        return false;
    my_ctx c = {.a = a, .s = text, .lx = &lx, .cat = cat, .database = database, .m = &out->map};
    sp_buf_init(&c.out, a, len + 64);
    out->map.orig = text;
    int cap = 8;
    out->stmts = sp_alloc(a, (size_t)cap * sizeof *out->stmts);
    uint32_t i = 0;
    while (i < lx.n) {
        uint32_t end = i;
        while (end < lx.n && lx.t[end].kind != MT_SEMI)
            end++;
        if (end > i) {
            if (out->nstmts == cap) {
                sp_my_stmt *ns = sp_alloc(a, (size_t)cap * 2 * sizeof *ns);
                memcpy(ns, out->stmts, (size_t)cap * sizeof *ns);
                out->stmts = ns;
                cap *= 2;
            }
            sp_my_stmt *st = &out->stmts[out->nstmts++];
            if (c.out.len)
                sp_buf_add(&c.out, ";", 1);
            uint32_t j = i;
            bool explain = false;
            size_t stmt_out = c.out.len; /* where this statement's translation starts */
            uint32_t stmt_map = c.m->n;
            /* EXPLAIN / DESCRIBE / ANALYZE of a statement: the statement is analysed */
            if ((kw(&c, j, end, "explain") || kw(&c, j, end, "describe") || kw(&c, j, end, "desc") ||
                 kw(&c, j, end, "analyze")) &&
                j + 1 < end) {
                uint32_t k = j + 1;
                while (kw(&c, k, end, "extended") || kw(&c, k, end, "partitions") || kw(&c, k, end, "analyze"))
                    k++;
                if (kw(&c, k, end, "format") && op(&c, k + 1, end, "="))
                    k += 3;
                if (native_start(&c, k, end)) {
                    explain = true;
                    emit_s(&c, kw(&c, j, end, "analyze") || kw(&c, j + 1, end, "analyze") ? "explain analyze" : "explain",
                           lx.t[j].s, lx.t[k - 1].e);
                    j = k;
                }
            }
            bool into_file = false, into_var = false;
            for (uint32_t k = j; native_start(&c, j, end) && k < end; k++)
                if (kw(&c, k, end, "into") && !kw(&c, j, end, "insert") && !kw(&c, j, end, "replace")) {
                    if (kw(&c, k + 1, end, "outfile") || kw(&c, k + 1, end, "dumpfile"))
                        into_file = true;
                    else
                        into_var = true;
                }
            if (native_start(&c, j, end) && !into_file && !into_var) {
                st->native = true;
                st->explain = explain;
                const char *terr = NULL;
                size_t olen = stmt_out;
                uint32_t onmap = stmt_map;
                if (!translate(&c, j, end, &terr)) {
                    /* drop what was emitted: the placeholder below stands in */
                    c.out.len = olen;
                    c.out.p[olen] = 0;
                    c.m->n = onmap;
                    st->native = false;
                    st->cls = SQLP_CLASS_READ;
                    if (terr && strcmp(terr, ":=") == 0)
                        deny(st, "session.user_variable",
                             "assignments to user variables (:=) are not analysed by phigate");
                    else
                        deny(st, "analyse.unsupported", terr ? terr : "phigate cannot analyse this statement");
                }
            } else if (explain && (into_file || into_var)) {
                c.out.len = stmt_out;
                c.out.p[stmt_out] = 0;
                c.m->n = stmt_map;
                st->cls = SQLP_CLASS_READ;
                deny(st, "analyse.unsupported", "phigate cannot analyse EXPLAIN of SELECT ... INTO");
            } else if (into_file) {
                st->cls = SQLP_CLASS_EXPORT;
                escalate(st, SQLP_CLASS_ADMIN, "SELECT ... INTO OUTFILE writes a server file");
            } else if (into_var) {
                st->cls = SQLP_CLASS_READ;
                deny(st, "session.user_variable",
                     "SELECT ... INTO variables is not analysed by phigate (the values would outlive their masking)");
            } else {
                judge(&c, i, end, st);
            }
            if (!st->native) {
                /* a placeholder keeps statement numbers aligned with the parse */
                emit_s(&c, "select", lx.t[i].s, lx.t[i].s);
                emit_s(&c, "null", lx.t[i].s, lx.t[i].s);
            }
        }
        i = end + 1;
    }
    out->pg = sp_buf_cstr(&c.out);
    out->pglen = c.out.len;
    return true;
}

bool sp_srcmap_back(const sp_srcmap *m, uint32_t pos, bool end, uint32_t *outp)
{
    uint32_t lo = 0, hi = m->n;
    const uint32_t *key = end ? m->pg_e : m->pg_s;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (key[mid] < pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < m->n && key[lo] == pos) {
        *outp = end ? m->my_e[lo] : m->my_s[lo];
        return true;
    }
    return false;
}

const char *sp_mysql_blocked(const char *schema, const char *name)
{
    if (!name)
        return NULL;
    if (schema && strcasecmp(schema, "performance_schema") == 0)
        return "performance_schema holds other sessions' statements";
    if (schema && strcasecmp(schema, "sys") == 0)
        return "the sys schema shows other sessions' statements";
    if (schema && strcasecmp(schema, "mysql") == 0 && strncasecmp(name, "help_", 5) != 0 &&
        strncasecmp(name, "time_zone", 9) != 0)
        return "the mysql schema holds credentials, logs and stored code";
    if (strcasecmp(name, "processlist") == 0 && (!schema || strcasecmp(schema, "information_schema") == 0))
        return "the process list shows other sessions' statements";
    return NULL;
}
