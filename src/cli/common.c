/*
 * common.c — exit codes, error printing and size parsing for the CLI.
 */
#include "cli/cli.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int cli_exit_code(tl_status s) {
    /* 2 is kept for usage errors; every failure maps into 1..125. */
    switch (s) {
    case TL_OK:
        return 0;
    case TL_ERR_INVALID_ARG:
        return 2;
    case TL_ERR_FORMAT:
        return 3;
    case TL_ERR_IO:
        return 4;
    case TL_ERR_NOT_FOUND:
        return 5;
    case TL_ERR_NOMEM:
        return 6;
    case TL_ERR_UNSUPPORTED:
        return 7;
    case TL_ERR_DEVICE_OOM:
        return 8;
    case TL_ERR_DEVICE:
        return 9;
    case TL_ERR_CANCELLED:
        return 10;
    case TL_ERR_INFEASIBLE:
        return 11;
    case TL_ERR_CHANGED:
        return 12;
    case TL_ERR_INTEGRITY:
        return 13;
    }
    return 1;
}

int cli_fail(tl_status s) {
    const char *msg = tl_last_error();
    fprintf(stderr, "tierload: %s\n", msg && *msg ? msg : tl_status_name(s));
    return cli_exit_code(s);
}

int cli_usage(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "tierload %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'tierload %s --help')\n", cmd);
    return 2;
}

bool cli_parse_size(const char *s, uint64_t *bytes, bool *negative) {
    return s && tl_plan_parse_bytes(s, bytes, negative) == TL_OK;
}

const char *cli_fmt_size(uint64_t bytes, char *buf, size_t n) {
    return tl_fmt_bytes(bytes, buf, n);
}
