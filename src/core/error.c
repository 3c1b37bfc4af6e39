/*
 * error.c — thread-local last-error message, errno to status, and status names.
 */
#include "core/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TL_ERR_MAX 8192

static _Thread_local char tl__err_buf[TL_ERR_MAX];
/* Bumped whenever this thread's message is written (set, prefixed or cleared). */
static _Thread_local uint64_t tl__err_gen;

/*
 * Keep msg (n bytes) as the message. One longer than the buffer loses its
 * middle, not its end: messages put the reason last ("<path>: <why>"), and a
 * very long path must not cut the reason off.
 */
static void store(const char *msg, size_t n) {
    if (n < TL_ERR_MAX) {
        memmove(tl__err_buf, msg, n);
        tl__err_buf[n] = 0;
        return;
    }
    static const char cut[] = " [...] ";
    size_t keep = TL_ERR_MAX - 1 - (sizeof cut - 1);
    size_t head = keep / 4, tail = keep - head;
    while (head > 0 && ((unsigned char)msg[head] & 0xC0) == 0x80)
        head--; /* do not split a UTF-8 sequence */
    size_t from = n - tail;
    while (from < n && ((unsigned char)msg[from] & 0xC0) == 0x80)
        from++, tail--;
    memmove(tl__err_buf, msg, head);
    memcpy(tl__err_buf + head, cut, sizeof cut - 1);
    memmove(tl__err_buf + head + sizeof cut - 1, msg + from, tail);
    tl__err_buf[head + sizeof cut - 1 + tail] = 0;
}

/* Format into a heap string (NULL when out of memory); *n gets its length. */
static char *vformat(const char *fmt, va_list ap, size_t *n) {
    va_list aq;
    va_copy(aq, ap);
    int len = vsnprintf(NULL, 0, fmt, aq);
    va_end(aq);
    if (len < 0) return NULL;
    char *p = malloc((size_t)len + 1);
    if (!p) return NULL;
    vsnprintf(p, (size_t)len + 1, fmt, ap);
    *n = (size_t)len;
    return p;
}

tl_status tl__err(tl_status s, const char *fmt, ...) {
    va_list ap;
    size_t n = 0;
    va_start(ap, fmt);
    char *msg = vformat(fmt, ap, &n);
    va_end(ap);
    if (msg) {
        store(msg, n);
        free(msg);
    } else {
        va_start(ap, fmt);
        vsnprintf(tl__err_buf, sizeof tl__err_buf, fmt, ap);
        va_end(ap);
    }
    tl__err_gen++;
    return s;
}

tl_status tl_set_error(tl_status s, const char *fmt, ...) {
    if (!fmt) {
        tl__err_buf[0] = 0;
    } else {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(tl__err_buf, sizeof tl__err_buf, fmt, ap);
        va_end(ap);
    }
    tl__err_gen++;
    return s;
}

uint64_t tl__err_generation(void) {
    return tl__err_gen;
}

tl_status tl__err_prefix(tl_status s, const char *fmt, ...) {
    va_list ap;
    size_t n = 0;
    va_start(ap, fmt);
    char *prefix = vformat(fmt, ap, &n);
    va_end(ap);
    size_t old = strlen(tl__err_buf);
    char *msg = prefix ? malloc(n + 2 + old + 1) : NULL;
    if (msg) {
        memcpy(msg, prefix, n);
        memcpy(msg + n, ": ", 2);
        memcpy(msg + n + 2, tl__err_buf, old + 1);
        store(msg, n + 2 + old);
    }
    free(msg);
    free(prefix);
    tl__err_gen++;
    return s;
}

tl_status tl__status_from_errno(int e) {
    switch (e) {
    case 0:
        return TL_OK;
    case ENOENT:
        return TL_ERR_NOT_FOUND;
    case ENOMEM:
        return TL_ERR_NOMEM;
    case ENODATA:
        return TL_ERR_CHANGED;
    default:
        return TL_ERR_IO;
    }
}

const char *tl__errno_text(int e) {
    static _Thread_local char buf[256];
    if (e == ENODATA) return "the file ends early (truncated or rewritten since it was opened)";
    return strerror_r(e, buf, sizeof buf); /* the GNU strerror_r (_GNU_SOURCE): returns the text */
}

tl_status tl__err_errno(int e, const char *fmt, ...) {
    char what[TL_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return tl__err(tl__status_from_errno(e), "%s: %s", what, tl__errno_text(e));
}

void tl__err_clear(void) {
    tl__err_buf[0] = 0;
    tl__err_gen++;
}

const char *tl_last_error(void) {
    return tl__err_buf;
}

const char *tl_status_name(tl_status s) {
    switch (s) {
    case TL_OK:
        return "TL_OK";
    case TL_ERR_INVALID_ARG:
        return "TL_ERR_INVALID_ARG";
    case TL_ERR_IO:
        return "TL_ERR_IO";
    case TL_ERR_FORMAT:
        return "TL_ERR_FORMAT";
    case TL_ERR_NOMEM:
        return "TL_ERR_NOMEM";
    case TL_ERR_NOT_FOUND:
        return "TL_ERR_NOT_FOUND";
    case TL_ERR_UNSUPPORTED:
        return "TL_ERR_UNSUPPORTED";
    case TL_ERR_DEVICE_OOM:
        return "TL_ERR_DEVICE_OOM";
    case TL_ERR_DEVICE:
        return "TL_ERR_DEVICE";
    case TL_ERR_CANCELLED:
        return "TL_ERR_CANCELLED";
    case TL_ERR_INFEASIBLE:
        return "TL_ERR_INFEASIBLE";
    case TL_ERR_CHANGED:
        return "TL_ERR_CHANGED";
    case TL_ERR_INTEGRITY:
        return "TL_ERR_INTEGRITY";
    }
    return "TL_ERR_UNKNOWN";
}

void tl_free(void *p) {
    free(p);
}
