/*
 * strbuf.h — a growing heap string for text the library builds up (plan
 * reports, load notes). Appends never fail loudly: on out-of-memory the
 * buffer remembers it (oom), keeps the text appended so far, and ignores
 * further appends, so callers check once at the end or treat the text as
 * best effort.
 */
#ifndef TL_CORE_STRBUF_H
#define TL_CORE_STRBUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct tl__strbuf {
    char *s; /* NUL-terminated when len > 0; NULL until the first append */
    size_t len, cap;
    bool oom;
} tl__strbuf;

void tl__strbuf_printf(tl__strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tl__strbuf_vprintf(tl__strbuf *b, const char *fmt, va_list ap);

#endif
