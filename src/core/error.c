/*
 * error.c — thread-local last-error message, errno to status, and status names.
 */
#include "core/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define TL_ERR_MAX 1024

static _Thread_local char tl_err_buf[TL_ERR_MAX];

tl_status tl_err(tl_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_err_buf, sizeof tl_err_buf, fmt, ap);
    va_end(ap);
    return s;
}

tl_status tl_err_prefix(tl_status s, const char *fmt, ...) {
    char prefix[TL_ERR_MAX];
    char old[TL_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, tl_err_buf, sizeof old);
    size_t n = strlen(prefix);
    if (n > TL_ERR_MAX - 3) n = TL_ERR_MAX - 3;
    memcpy(tl_err_buf, prefix, n);
    memcpy(tl_err_buf + n, ": ", 2);
    size_t rest = TL_ERR_MAX - n - 3;
    size_t m = strnlen(old, rest);
    memcpy(tl_err_buf + n + 2, old, m);
    tl_err_buf[n + 2 + m] = 0;
    return s;
}

tl_status tl_status_from_errno(int e) {
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

const char *tl_errno_text(int e) {
    static _Thread_local char buf[256];
    if (e == ENODATA) return "the file ends early (truncated or rewritten since it was opened)";
    return strerror_r(e, buf, sizeof buf); /* the GNU strerror_r (_GNU_SOURCE): returns the text */
}

tl_status tl_err_errno(int e, const char *fmt, ...) {
    char what[TL_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return tl_err(tl_status_from_errno(e), "%s: %s", what, tl_errno_text(e));
}

void tl_err_clear(void) {
    tl_err_buf[0] = 0;
}

const char *tl_last_error(void) {
    return tl_err_buf;
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
