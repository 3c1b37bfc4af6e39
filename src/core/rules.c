/*
 * rules.c — "PATTERN=VALUE,..." lists (rules.h): parsing, the translation of
 * the escapes llama.cpp and sd.cpp users write into POSIX extended regular
 * expressions, and the first match.
 */
#include "core/rules.h"

#include "core/error.h"
#include "os/os.h"

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
 * Why an expression would cost regcomp too much, or NULL. glibc's compiler
 * copies the tree under every repetition, so a quantifier right after another
 * ("a++", undefined in POSIX anyway) or bounds nested deep ("((a{99}){99}){99}")
 * grow it exponentially: a list from the command line or a caller must not
 * take the process's memory. Limits: 512 bytes, no quantifier after a
 * quantifier, bounds of at most 64 and at most 4 of them.
 */
static const char *too_complex(const char *ere) {
    if (strlen(ere) > 512) return "longer than 512 bytes";
    bool in_br = false, after_q = false;
    int bounds = 0;
    for (const char *p = ere; *p; p++) {
        char c = *p;
        if (in_br) {
            if (c == ']' && p[-1] != '[' && !(p[-1] == '^' && p[-2] == '[')) in_br = false;
            continue;
        }
        if (c == '\\' && p[1]) {
            p++;
            after_q = false;
            continue;
        }
        bool q = c == '*' || c == '+' || c == '?' || c == '{';
        if (q && after_q) return "a repetition of a repetition";
        if (c == '{') {
            long m = strtol(p + 1, NULL, 10);
            const char *comma = strchr(p, ','), *end = strchr(p, '}');
            long n = comma && end && comma < end && comma[1] != '}' ? strtol(comma + 1, NULL, 10) : m;
            if (++bounds > 4 || m > 64 || n > 64) return "bounds over {64} or more than 4 of them";
            if (end) p = end;
        }
        if (c == '[') in_br = true;
        after_q = q;
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
