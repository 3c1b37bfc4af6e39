/*
 * strbuf.c — append formatted text to a growing heap string (see strbuf.h).
 */
#include "core/strbuf.h"

#include "core/assert.h"
#include "os/os.h"

#include <stdio.h>

void tl__strbuf_vprintf(tl__strbuf *b, const char *fmt, va_list ap) {
    if (b->oom) return;
    for (;;) {
        va_list aq;
        va_copy(aq, ap);
        int n =
            b->s ? vsnprintf(b->s + b->len, b->cap - b->len, fmt, aq) : vsnprintf(NULL, 0, fmt, aq);
        va_end(aq);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->s && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            TL_ASSERT(b->len < b->cap && b->s[b->len] == 0);
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        if (cap < 256) cap = 256;
        char *s = tl__os_realloc(b->s, cap);
        if (!s) {
            if (b->s) b->s[b->len] = 0; /* drop the partial append: the text so far stands */
            b->oom = true;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
}

void tl__strbuf_printf(tl__strbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    tl__strbuf_vprintf(b, fmt, ap);
    va_end(ap);
}
