/*
 * error.c — thread-local last-error message, status names and the version.
 */
#include "core/error.h"

#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#define TL_ERR_MAX 1024

static _Thread_local char tl_err_buf[TL_ERR_MAX];
/* Bumped whenever this thread's message is written (set, prefixed or cleared). */
static _Thread_local uint64_t tl_err_gen;

tl_status tl_err(tl_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_err_buf, sizeof tl_err_buf, fmt, ap);
    va_end(ap);
    tl_err_gen++;
    return s;
}

tl_status tl_set_error(tl_status s, const char *fmt, ...) {
    if (!fmt) {
        tl_err_buf[0] = 0;
    } else {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(tl_err_buf, sizeof tl_err_buf, fmt, ap);
        va_end(ap);
    }
    tl_err_gen++;
    return s;
}

uint64_t tl_err_generation(void) {
    return tl_err_gen;
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
    tl_err_gen++;
    return s;
}

void tl_err_clear(void) {
    tl_err_buf[0] = 0;
    tl_err_gen++;
}

const char *tl_last_error(void) {
    return tl_err_buf;
}

const char *tl_version(void) {
    return "0.1.0";
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
