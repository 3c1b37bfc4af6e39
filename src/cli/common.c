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
    fprintf(stderr, "tierload: %s\n", msg && *msg ? cli_safe(msg) : tl_status_name(s));
    return cli_exit_code(s);
}

int cli_usage(const char *cmd, const char *fmt, ...) {
    va_list ap;
    char msg[1024];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* the message quotes arguments, which may be file names from a glob */
    fprintf(stderr, "tierload %s: %s (see 'tierload %s --help')\n", cmd, cli_safe(msg), cmd);
    return 2;
}

int cli_opt(int argc, char **argv, int *i, const char *cmd, const char *opt, const char **val) {
    const char *a = argv[*i];
    size_t n = strlen(opt);
    if (strncmp(a, opt, n) != 0) return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n] != 0) return 0;
    if (*i + 1 >= argc) {
        cli_usage(cmd, "option %s needs a value", opt);
        return -1;
    }
    *val = argv[++*i];
    return 1;
}

bool cli_parse_count(const char *s, uint64_t max, uint64_t *out) {
    if (!s || !*s) return false;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return false;
        unsigned d = (unsigned)(*p - '0');
        if (d > max || v > (max - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

bool cli_parse_size(const char *s, uint64_t *bytes, bool *negative) {
    return s && tl_parse_bytes(s, bytes, negative) == TL_OK;
}

const char *cli_fmt_size(uint64_t bytes, char *buf, size_t n) {
    return tl_fmt_bytes(bytes, buf, n);
}
