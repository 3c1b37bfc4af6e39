/*
 * common.c — exit codes, error printing and size parsing for the CLI.
 */
#include "cli/cli.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int cli_exit_code(tl_status s) {
    /* 2 is kept for usage errors; every failure maps into 1..125. */
    switch (s) {
    case TL_OK: return 0;
    case TL_ERR_INVALID_ARG: return 2;
    case TL_ERR_FORMAT: return 3;
    case TL_ERR_IO: return 4;
    case TL_ERR_NOT_FOUND: return 5;
    case TL_ERR_NOMEM: return 6;
    case TL_ERR_UNSUPPORTED: return 7;
    case TL_ERR_DEVICE_OOM: return 8;
    case TL_ERR_DEVICE: return 9;
    case TL_ERR_CANCELLED: return 10;
    case TL_ERR_INFEASIBLE: return 11;
    case TL_ERR_CHANGED: return 12;
    case TL_ERR_INTEGRITY: return 13;
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
    if (!s) return false;
    while (isspace((unsigned char)*s)) s++;
    bool neg = false;
    if (*s == '-') {
        neg = true;
        s++;
    } else if (*s == '+') {
        s++;
    }
    if (!isdigit((unsigned char)*s) && *s != '.') return false;
    char *end;
    double v = strtod(s, &end);
    if (end == s || !isfinite(v) || v < 0) return false;
    double mult = 1;
    const char *u = end;
    if (*u) {
        switch (toupper((unsigned char)*u)) {
        case 'B': mult = 1; break;
        case 'K': mult = 1024.0; break;
        case 'M': mult = 1024.0 * 1024; break;
        case 'G': mult = 1024.0 * 1024 * 1024; break;
        case 'T': mult = 1024.0 * 1024 * 1024 * 1024; break;
        default: return false;
        }
        u++;
        if (mult > 1) {
            if (strcasecmp(u, "iB") == 0 || strcasecmp(u, "B") == 0) u += strlen(u);
        }
        if (*u) return false;
    }
    double b = v * mult;
    if (b >= 18446744073709551615.0) return false;
    *bytes = (uint64_t)llround(b);
    if (negative) *negative = neg;
    else if (neg) return false;
    return true;
}

const char *cli_fmt_size(uint64_t bytes, char *buf, size_t n) {
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0) snprintf(buf, n, "%llu B", (unsigned long long)bytes);
    else snprintf(buf, n, "%.2f %s", v, units[u]);
    return buf;
}
