/*
 * bytes.c — parsing and printing byte counts ("8G", "9.5GiB", "-2G";
 * "1.50 GiB"). Whole numbers are computed in integers, so "8G" is exactly
 * 8 * 2^30; only fractions go through a double.
 */
#include "core/bytes.h"

#include "tierload.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <strings.h>

bool tl__bytes_parse(const char *s, size_t len, uint64_t *bytes, bool *negative) {
    const char *p = s, *end = s + len;
    while (p < end && isspace((unsigned char)*p))
        p++;
    while (end > p && isspace((unsigned char)end[-1]))
        end--;
    bool neg = false;
    if (p < end && (*p == '-' || *p == '+')) neg = *p++ == '-';
    if (neg && !negative) return false;
    const char *digits = p;
    uint64_t whole = 0;
    for (; p < end && isdigit((unsigned char)*p); p++) {
        if (whole > (UINT64_MAX - (uint64_t)(*p - '0')) / 10) return false;
        whole = whole * 10 + (uint64_t)(*p - '0');
    }
    bool has_whole = p > digits;
    const char *frac = NULL, *frac_end = NULL;
    if (p < end && *p == '.') {
        frac = ++p;
        while (p < end && isdigit((unsigned char)*p))
            p++;
        frac_end = p;
        if (frac_end == frac) return false;
    }
    if (!has_whole && !frac) return false;
    uint64_t mult = 1;
    if (p < end) {
        switch (toupper((unsigned char)*p)) {
        case 'B':
            mult = 1;
            break;
        case 'K':
            mult = 1ull << 10;
            break;
        case 'M':
            mult = 1ull << 20;
            break;
        case 'G':
            mult = 1ull << 30;
            break;
        case 'T':
            mult = 1ull << 40;
            break;
        default:
            return false;
        }
        p++;
        size_t rest = (size_t)(end - p);
        if (mult > 1 && ((rest == 1 && toupper((unsigned char)*p) == 'B') ||
                         (rest == 2 && !strncasecmp(p, "iB", 2))))
            p = end;
        if (p != end) return false;
    }
    uint64_t v;
    if (__builtin_mul_overflow(whole, mult, &v)) return false;
    if (frac) {
        double f = 0, scale = 0.1;
        for (const char *d = frac; d < frac_end; d++, scale /= 10)
            f += (*d - '0') * scale;
        double extra = llround(f * (double)mult);
        if (__builtin_add_overflow(v, (uint64_t)extra, &v)) return false;
    }
    *bytes = v;
    if (negative) *negative = neg;
    return true;
}

const char *tl_fmt_bytes(uint64_t bytes, char *buf, size_t n) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, n, "%llu B", (unsigned long long)bytes);
    else
        snprintf(buf, n, "%.2f %s", v, units[u]);
    return buf;
}
