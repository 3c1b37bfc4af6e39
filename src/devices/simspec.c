/*
 * simspec.c — parser of sim device specs: "gpu0=8G,gpu1=4G:bw=16G:lat=10us"
 * (grammar in tierload.h at tl_parse_sim_spec). Pure: no devices made.
 */
#include "core/bytes.h"
#include "core/error.h"
#include "devices/devices.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Bytes with an optional binary suffix; the whole of [s, s+len) must be used. */
static bool parse_size(const char *s, size_t len, uint64_t *out) {
    return tl__bytes_parse(s, len, out, NULL);
}

/* Seconds with an optional s / ms / us / ns suffix. */
static bool parse_time(const char *s, size_t len, double *out) {
    char buf[64];
    if (len == 0 || len >= sizeof buf) return false;
    memcpy(buf, s, len);
    buf[len] = 0;
    if (!isdigit((unsigned char)buf[0]) && buf[0] != '.') return false;
    char *end;
    double v = strtod(buf, &end);
    if (end == buf || !isfinite(v) || v < 0) return false;
    double mult = 1;
    if (!*end || strcmp(end, "s") == 0)
        mult = 1;
    else if (strcmp(end, "ms") == 0)
        mult = 1e-3;
    else if (strcmp(end, "us") == 0)
        mult = 1e-6;
    else if (strcmp(end, "ns") == 0)
        mult = 1e-9;
    else
        return false;
    *out = v * mult;
    return true;
}

static const char *trim(const char *s, const char *e, const char **end) {
    while (s < e && isspace((unsigned char)*s))
        s++;
    while (e > s && isspace((unsigned char)e[-1]))
        e--;
    *end = e;
    return s;
}

/* One NAME=SIZE[:k=v]... item in [s, e). */
static tl_status parse_item(const char *s, const char *e, tl_sim_spec *sp) {
    int il = (int)(e - s);
    memset(sp, 0, sizeof *sp);
    const char *eq = memchr(s, '=', (size_t)(e - s));
    if (!eq) return tl__err(TL_ERR_INVALID_ARG, "sim spec item '%.*s': expected NAME=SIZE", il, s);
    const char *ne;
    const char *ns = trim(s, eq, &ne);
    if (ns == ne)
        return tl__err(TL_ERR_INVALID_ARG, "sim spec item '%.*s': empty device name", il, s);
    if ((size_t)(ne - ns) >= sizeof sp->name)
        return tl__err(TL_ERR_INVALID_ARG,
                      "sim spec item '%.*s': device name longer than %d characters", il, s,
                      TL_DEVICE_NAME_MAX - 1);
    memcpy(sp->name, ns, (size_t)(ne - ns));
    sp->name[ne - ns] = 0;
    if (!tl__device_name_ok(sp->name))
        return tl__err(TL_ERR_INVALID_ARG,
                      "sim spec item '%.*s': invalid device name '%s' (A-Z a-z 0-9 _ . : - only)",
                      il, s, sp->name);
    const char *p = eq + 1;
    bool first = true;
    while (p <= e) {
        const char *c = memchr(p, ':', (size_t)(e - p));
        if (!c) c = e;
        const char *fe;
        const char *fs = trim(p, c, &fe);
        if (first) {
            if (!parse_size(fs, (size_t)(fe - fs), &sp->capacity))
                return tl__err(TL_ERR_INVALID_ARG,
                              "sim spec item '%.*s': bad size '%.*s' (e.g. 8G, 512M, 1.5G)", il, s,
                              (int)(fe - fs), fs);
            first = false;
        } else if (fe - fs > 3 && strncasecmp(fs, "bw=", 3) == 0) {
            uint64_t bw;
            if (!parse_size(fs + 3, (size_t)(fe - fs - 3), &bw) || bw == 0)
                return tl__err(TL_ERR_INVALID_ARG, "sim spec item '%.*s': bad bandwidth '%.*s'", il,
                              s, (int)(fe - fs), fs);
            sp->bandwidth = (double)bw;
        } else if (fe - fs > 4 && strncasecmp(fs, "lat=", 4) == 0) {
            if (!parse_time(fs + 4, (size_t)(fe - fs - 4), &sp->latency))
                return tl__err(TL_ERR_INVALID_ARG, "sim spec item '%.*s': bad latency '%.*s'", il, s,
                              (int)(fe - fs), fs);
        } else {
            return tl__err(TL_ERR_INVALID_ARG,
                          "sim spec item '%.*s': unknown option '%.*s' (bw=SIZE, lat=TIME)", il, s,
                          (int)(fe - fs), fs);
        }
        p = c + 1;
    }
    return TL_OK;
}

tl_status tl_parse_sim_spec(const char *spec, tl_sim_spec *out, size_t cap, size_t *n) {
    if (!n || (!out && cap))
        return tl__err(TL_ERR_INVALID_ARG, "tl_parse_sim_spec: NULL argument");
    *n = 0;
    const char *te;
    const char *ts = spec ? trim(spec, spec + strlen(spec), &te) : NULL;
    if (!ts || ts == te)
        return tl__err(TL_ERR_INVALID_ARG, "empty sim spec (expected e.g. gpu0=8G,gpu1=4G)");
    const char *p = spec;
    const char *end = spec + strlen(spec);
    size_t k = 0;
    while (p <= end) {
        const char *c = memchr(p, ',', (size_t)(end - p));
        if (!c) c = end;
        const char *ie;
        const char *is = trim(p, c, &ie);
        if (is == ie) return tl__err(TL_ERR_INVALID_ARG, "sim spec '%s': empty item", spec);
        if (k >= cap)
            return tl__err(TL_ERR_INVALID_ARG, "sim spec '%s': more than %zu devices", spec, cap);
        tl_status s = parse_item(is, ie, &out[k]);
        if (s != TL_OK) return s;
        for (size_t j = 0; j < k; j++)
            if (strcasecmp(out[j].name, out[k].name) == 0)
                return tl__err(TL_ERR_INVALID_ARG, "sim spec '%s': duplicate device name '%s'", spec,
                              out[k].name);
        k++;
        p = c + 1;
    }
    *n = k;
    return TL_OK;
}
