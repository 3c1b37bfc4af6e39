/*
 * text.c — what the CLI prints of strings it does not control (tensor names,
 * metadata keys, paths, library messages that quote them).
 *
 * Terminal output: control characters never reach the terminal raw. C0
 * controls and DEL are written as \n, \t, \r or \xHH; a backslash as \\;
 * bytes that are not valid UTF-8 as \xHH; C1 controls (U+0080..U+009F) and
 * the bidirectional overrides (U+202A..U+202E, U+2066..U+2069) as \uHHHH.
 * Valid printable UTF-8 is written as is.
 *
 * JSON output: cJSON escapes C0 controls, quotes and backslashes but copies
 * other bytes; every byte that does not start a valid UTF-8 sequence is
 * replaced by the escape \ufffd (U+FFFD REPLACEMENT CHARACTER), which keeps
 * the document valid JSON. Such bytes can only stand inside strings (cJSON
 * writes nothing but ASCII outside them).
 */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>

size_t cli_utf8_seq(const unsigned char *s, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2, v = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3, v = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4, v = c & 0x07, min = 0x10000;
    else
        return 0;
    if (n < len) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[k] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

/* Growing buffer for one escaped string. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (!b->p) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            free(b->p);
            b->p = NULL;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static bool is_hidden_cp(uint32_t cp) {
    return (cp >= 0x80 && cp <= 0x9F) || (cp >= 0x202A && cp <= 0x202E) ||
           (cp >= 0x2066 && cp <= 0x2069);
}

char *cli_escape(const char *s, bool keep_newlines) {
    sbuf b = {malloc(64), 0, 64};
    if (b.p) b.p[0] = 0;
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s);
    char esc[16];
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = cli_utf8_seq(u + i, n - i, &cp);
        if (k == 0) {
            snprintf(esc, sizeof esc, "\\x%02x", u[i]);
            put(&b, esc, 4);
            i++;
            continue;
        }
        if (cp == '\n' && keep_newlines)
            put(&b, "\n", 1);
        else if (cp == '\n')
            put(&b, "\\n", 2);
        else if (cp == '\t')
            put(&b, "\\t", 2);
        else if (cp == '\r')
            put(&b, "\\r", 2);
        else if (cp == '\\')
            put(&b, "\\\\", 2);
        else if (cp < 0x20 || cp == 0x7F) {
            snprintf(esc, sizeof esc, "\\x%02x", (unsigned)cp);
            put(&b, esc, 4);
        } else if (is_hidden_cp(cp)) {
            snprintf(esc, sizeof esc, "\\u%04x", (unsigned)cp);
            put(&b, esc, 6);
        } else {
            put(&b, s + i, k);
        }
        i += k;
    }
    return b.p;
}

const char *cli_safe(const char *s) {
    /* a ring of buffers: several cli_safe() results can share one printf */
    enum { SLOTS = 8 };
    static char *slot[SLOTS];
    static unsigned next;
    if (!s) return "(null)";
    char *e = cli_escape(s, false);
    if (!e) return "(out of memory)";
    unsigned k = next++ % SLOTS;
    free(slot[k]);
    slot[k] = e;
    return e;
}

void cli_fputs_safe(const char *s, FILE *f) {
    char *e = cli_escape(s, true);
    fputs(e ? e : "(out of memory)\n", f);
    free(e);
}

void cli_json_write(const char *text, FILE *f) {
    const unsigned char *u = (const unsigned char *)text;
    size_t n = strlen(text), from = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = cli_utf8_seq(u + i, n - i, &cp);
        if (k) {
            i += k;
            continue;
        }
        fwrite(text + from, 1, i - from, f);
        fputs("\\ufffd", f);
        from = ++i;
    }
    fwrite(text + from, 1, n - from, f);
}
