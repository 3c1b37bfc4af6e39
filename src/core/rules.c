/*
 * rules.c — "PATTERN=VALUE,..." lists (rules.h): parsing, the translation of
 * the escapes llama.cpp and sd.cpp users write into POSIX extended regular
 * expressions, and the first match.
 */
#include "core/rules.h"

#include "core/error.h"
#include "os/os.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The longest replacement of one escape ("[^_[:alnum:]]"), for sizing the output. */
#define WIDEST 13

/*
 * The pattern in POSIX ERE: \d \w \s \D \W \S as bracket expressions (inside
 * a bracket expression, their class alone), \. as itself outside brackets
 * and a plain dot inside; other escapes as written. malloc'd; NULL when out
 * of memory.
 */
static char *translate(const char *pat) {
    size_t n = strlen(pat);
    char *out = tl__os_malloc(n * WIDEST + 1), *w = out;
    if (!out) return NULL;
    bool in_br = false;
    for (size_t i = 0; i < n; i++) {
        char c = pat[i];
        if (!in_br && c == '[') {
            in_br = true;
            *w++ = c;
            if (pat[i + 1] == '^') *w++ = pat[++i];
            if (pat[i + 1] == ']') *w++ = pat[++i]; /* a leading ']' is literal */
            continue;
        }
        if (in_br && c == ']') {
            in_br = false;
            *w++ = c;
            continue;
        }
        if (c != '\\' || i + 1 == n) {
            *w++ = c;
            continue;
        }
        char e = pat[++i];
        const char *rep = NULL;
        switch (e) {
        case 'd': rep = in_br ? "0-9" : "[0-9]"; break;
        case 'w': rep = in_br ? "_[:alnum:]" : "[_[:alnum:]]"; break;
        case 's': rep = in_br ? "[:space:]" : "[[:space:]]"; break;
        case 'D': rep = in_br ? NULL : "[^0-9]"; break;
        case 'W': rep = in_br ? NULL : "[^_[:alnum:]]"; break;
        case 'S': rep = in_br ? NULL : "[^[:space:]]"; break;
        default: break;
        }
        if (rep) {
            size_t l = strlen(rep);
            memcpy(w, rep, l);
            w += l;
        } else if (in_br) {
            *w++ = e; /* a backslash is literal in a POSIX bracket expression */
        } else {
            *w++ = '\\';
            *w++ = e;
        }
    }
    *w = 0;
    return out;
}

/*
 * Where the bracket expression opening at p ('[') ends: its closing ']', or
 * NULL when it has none. As glibc reads one: a leading '^', then a leading ']'
 * taken literally, then "[:name:]", "[.x.]" and "[=x=]" read whole.
 */
static const char *bracket_end(const char *p) {
    p++;
    if (*p == '^') p++;
    if (*p == ']') p++;
    for (; *p; p++) {
        if (*p == ']') return p;
        if (*p == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '=')) {
            char d = p[1];
            const char *q = p + 2;
            while (*q && !(q[0] == d && q[1] == ']'))
                q++;
            if (!*q) return NULL;
            p = q + 1;
        }
    }
    return NULL;
}

/* The most nodes an expression's tree may reach, and the deepest grouping. */
#define MAX_NODES 4096
#define MAX_DEPTH 32

/* An open group while an expression is weighed. */
typedef struct frame {
    uint64_t size, last; /* nodes so far, and those of the last atom */
    bool last_empty;     /* the last atom may match nothing (or there is none) */
    bool alt_empty;      /* the alternative being read may match nothing */
    bool alt_before;     /* it might before its last atom */
    bool some_empty;     /* an alternative read before may */
} frame;

/* An atom of n nodes that may match nothing or not. */
static void atom(frame *f, uint64_t n, bool empty) {
    f->size += n;
    f->last = n;
    f->last_empty = empty;
    f->alt_before = f->alt_empty;
    f->alt_empty &= empty;
}

/*
 * Why an expression would cost regcomp or regexec too much, or NULL.
 * - glibc's compiler copies the tree under a repetition once per bound ("x+"
 *   is "xx*", "x{3}" is "xxx"), so repetitions of repetitions, adjacent
 *   ("a+++") or through groups ("((a+)+)+", "((a{9}){9}){9}"), grow it
 *   exponentially. Its size is counted as glibc builds it and held to
 *   MAX_NODES; bounds are at most 64.
 * - A repetition of what may match nothing ("(.*)*", "a**", "(x?)+") makes its
 *   matcher's time grow exponentially with their number: refused.
 * - Back-references are refused (matching them may take exponential time),
 *   and an expression is at most 512 bytes.
 * A list from the command line or a caller must not take the process's
 * memory or time. Brackets are read as glibc reads them (bracket_end).
 */
static const char *too_complex(const char *ere) {
    if (strlen(ere) > 512) return "longer than 512 bytes";
    frame st[MAX_DEPTH + 1];
    int depth = 0;
    st[0] = (frame){0, 0, true, true, true, false};
    for (const char *p = ere; *p; p++) {
        frame *f = &st[depth];
        uint64_t copies = 0; /* a repetition: the copies glibc makes of the atom */
        bool may_skip = false;
        switch (*p) {
        case '[': {
            const char *e = bracket_end(p);
            if (!e) return NULL; /* unterminated: regcomp refuses it */
            p = e;
            atom(f, 1, false);
            break;
        }
        case '(':
            if (depth == MAX_DEPTH) return "groups nested more than 32 deep";
            st[++depth] = (frame){0, 0, true, true, true, false};
            break;
        case ')':
            if (depth == 0) { /* unmatched: glibc takes it literally */
                atom(f, 1, false);
                break;
            }
            depth--;
            atom(&st[depth], f->size + 1, f->some_empty || f->alt_empty);
            break;
        case '|':
            f->size += 1;
            f->some_empty |= f->alt_empty;
            f->alt_empty = f->alt_before = f->last_empty = true;
            f->last = 0;
            break;
        case '^':
        case '$':
            atom(f, 1, true);
            break;
        case '*':
        case '?':
            copies = 1;
            may_skip = true;
            break;
        case '+': /* x+ is x x* */
            copies = 2;
            break;
        case '{': {
            if (!isdigit((unsigned char)p[1]) && p[1] != ',') { /* not a bound: a literal */
                atom(f, 1, false);
                break;
            }
            char *end;
            long m = p[1] == ',' ? 0 : strtol(p + 1, &end, 10), n = m;
            if (p[1] == ',') end = (char *)p + 1;
            if (*end == ',') n = isdigit((unsigned char)end[1]) ? strtol(end + 1, &end, 10) : m + 1;
            if (m > 64 || n > 64) return "a bound over 64";
            copies = (uint64_t)(n > m ? n : m) + 1;
            may_skip = m == 0;
            const char *close = strchr(p, '}');
            if (close) p = close;
            break;
        }
        case '\\':
            if (p[1] >= '1' && p[1] <= '9') return "a back-reference";
            if (!p[1]) {
                atom(f, 1, false);
                break;
            }
            p++;
            /* word and buffer anchors match nothing */
            atom(f, 1, strchr("bB<>`'", *p) != NULL);
            break;
        default:
            atom(f, 1, false);
            break;
        }
        if (copies) {
            if (f->last_empty) return "a repetition of what may match nothing";
            f->size += f->last * (copies - 1) + copies;
            f->last = f->last * copies + copies;
            if (may_skip) { /* the atom may now match nothing */
                f->last_empty = true;
                f->alt_empty = f->alt_before;
            }
        }
        if (st[depth].size > MAX_NODES || st[depth].last > MAX_NODES)
            return "its tree would pass 4096 nodes";
    }
    return NULL;
}

void tl__rules_free(tl__rules *r) {
    for (size_t i = 0; i < r->n; i++) {
        if (r->compiled && r->compiled[i]) regfree(&r->re[i]);
        if (r->pattern) free(r->pattern[i]);
        if (r->value) free(r->value[i]);
    }
    free(r->pattern);
    free(r->value);
    free(r->re);
    free(r->compiled);
    memset(r, 0, sizeof *r);
}

static char *dup_n(const char *s, size_t n) {
    char *d = tl__os_malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

tl_status tl__rules_parse(const char *spec, const char *what, const char *form, tl__rules *r) {
    memset(r, 0, sizeof *r);
    size_t n = 1;
    for (const char *p = spec; *p; p++) n += *p == ',';
    r->pattern = tl__os_calloc(n, sizeof *r->pattern);
    r->value = tl__os_calloc(n, sizeof *r->value);
    r->re = tl__os_calloc(n, sizeof *r->re);
    r->compiled = tl__os_calloc(n, sizeof *r->compiled);
    if (!r->pattern || !r->value || !r->re || !r->compiled)
        return tl__err(TL_ERR_NOMEM, "%ss: out of memory", what);
    for (const char *cur = spec;;) {
        const char *end = strchr(cur, ',');
        size_t len = end ? (size_t)(end - cur) : strlen(cur);
        const char *eq = memchr(cur, '=', len);
        if (!eq || eq == cur || eq + 1 == cur + len)
            return tl__err(TL_ERR_INVALID_ARG, "%s '%.*s': not %s", what,
                           (int)(len > 120 ? 120 : len), cur, form);
        size_t i = r->n++;
        r->pattern[i] = dup_n(cur, (size_t)(eq - cur));
        r->value[i] = dup_n(eq + 1, len - (size_t)(eq - cur) - 1);
        if (!r->pattern[i] || !r->value[i]) return tl__err(TL_ERR_NOMEM, "%ss: out of memory", what);
        char *ere = translate(r->pattern[i]);
        if (!ere) return tl__err(TL_ERR_NOMEM, "%ss: out of memory", what);
        const char *cost = too_complex(ere);
        if (cost) {
            free(ere);
            return tl__err(TL_ERR_INVALID_ARG, "%s '%.120s': too complex a regular expression (%s)",
                           what, r->pattern[i], cost);
        }
        int e = regcomp(&r->re[i], ere, REG_EXTENDED | REG_NOSUB);
        free(ere);
        if (e) {
            char why[160];
            regerror(e, NULL, why, sizeof why);
            return tl__err(TL_ERR_INVALID_ARG, "%s '%.120s': bad regular expression: %s", what,
                           r->pattern[i], why);
        }
        r->compiled[i] = true;
        if (!end) break;
        cur = end + 1;
    }
    return TL_OK;
}

size_t tl__rules_match(const tl__rules *r, const char *name) {
    for (size_t i = 0; i < r->n; i++)
        if (!regexec(&r->re[i], name, 0, NULL, 0)) return i;
    return r->n;
}
