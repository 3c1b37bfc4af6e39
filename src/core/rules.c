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

/*
 * Why an expression would cost regcomp too much, or NULL. glibc's compiler
 * copies the tree under a repetition once per bound ("x+" is "xx*", "x{3}" is
 * "xxx"), so repetitions of repetitions, adjacent ("a+++") or through groups
 * ("((a+)+)+", "((a{9}){9}){9}"), grow it exponentially: a list from the
 * command line or a caller must not take the process's memory. The tree's
 * size is counted as glibc would build it and held to MAX_NODES; besides,
 * 512 bytes at most, bounds of at most 64, and no back-references (their
 * matching may take exponential time).
 */
static const char *too_complex(const char *ere) {
    if (strlen(ere) > 512) return "longer than 512 bytes";
    /* per open group: the nodes so far and those of its last atom */
    uint64_t size[MAX_DEPTH + 1] = {0}, last[MAX_DEPTH + 1] = {0};
    int depth = 0;
    for (const char *p = ere; *p; p++) {
        uint64_t *sz = &size[depth], *la = &last[depth];
        switch (*p) {
        case '[': {
            const char *e = bracket_end(p);
            if (!e) return NULL; /* unterminated: regcomp refuses it */
            p = e;
            *la = 1;
            *sz += 1;
            break;
        }
        case '(':
            if (depth == MAX_DEPTH) return "groups nested more than 32 deep";
            depth++;
            size[depth] = last[depth] = 0;
            break;
        case ')':
            if (depth == 0) { /* unmatched: glibc takes it literally */
                *la = 1;
                *sz += 1;
                break;
            }
            depth--;
            last[depth] = size[depth + 1] + 1;
            size[depth] += last[depth];
            break;
        case '|':
            *sz += 1;
            *la = 0;
            break;
        case '*':
        case '?':
            *sz += 1;
            *la += 1;
            break;
        case '+': /* x+ is x x* */
            *sz += *la + 1;
            *la = 2 * *la + 1;
            break;
        case '{': {
            if (!isdigit((unsigned char)p[1]) && p[1] != ',') { /* not a bound: a literal */
                *la = 1;
                *sz += 1;
                break;
            }
            char *end;
            long m = p[1] == ',' ? 0 : strtol(p + 1, &end, 10), n = m;
            if (p[1] == ',') end = (char *)p + 1;
            if (*end == ',') n = isdigit((unsigned char)end[1]) ? strtol(end + 1, &end, 10) : m + 1;
            if (m > 64 || n > 64) return "a bound over 64";
            uint64_t copies = (uint64_t)(n > m ? n : m) + 1;
            *sz += *la * (copies - 1) + copies;
            *la = *la * copies + copies;
            const char *close = strchr(p, '}');
            if (close) p = close;
            break;
        }
        case '\\':
            if (p[1] >= '1' && p[1] <= '9') return "a back-reference";
            if (p[1]) p++;
            *la = 1;
            *sz += 1;
            break;
        default:
            *la = 1;
            *sz += 1;
            break;
        }
        if (size[depth] > MAX_NODES || last[depth] > MAX_NODES)
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
