/*
 * spec.c — the planner's option parsers: sizes, hypothetical device lists,
 * backend specs ("cond=cpu,diffusion=cuda0&cuda1"), --max-vram / --headroom
 * budgets, compute reserves, output sizes and phase schedules. Each is a
 * public function so that fuzzers can drive it; errors name the bad item.
 */
#include "plan/plan.h"

#include "core/bytes.h"
#include "core/error.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const uint64_t tlp_priority[TL_COMP_COUNT] = {4, 2, 1, 3, 1, 4};

bool tlp_tok_eq(const char *tok, size_t len, const char *word) {
    return strlen(word) == len && strncasecmp(tok, word, len) == 0;
}

const char *tlp_tok(const char *tok, size_t len, char *buf, size_t n) {
    if (n == 0) return buf;
    if (len >= n) len = n - 1;
    memcpy(buf, tok, len);
    buf[len] = 0;
    return buf;
}

const char *tlp_phase_name(uint32_t mask, char *buf, size_t n) {
    size_t at = 0;
    buf[0] = 0;
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        if (!(mask & (1u << c))) continue;
        int k =
            snprintf(buf + at, n - at, "%s%s", at ? "+" : "", tl_component_name((tl_component)c));
        if (k < 0 || (size_t)k >= n - at) break;
        at += (size_t)k;
    }
    return buf;
}

/* Parse a size token [s, s+len). */
static bool parse_bytes_tok(const char *s, size_t len, uint64_t *bytes, bool *negative) {
    return tl__bytes_parse(s, len, bytes, negative);
}

tl_status tl_parse_bytes(const char *s, uint64_t *bytes, bool *negative) {
    if (!s || !bytes) return tl__err(TL_ERR_INVALID_ARG, "size: missing");
    if (!parse_bytes_tok(s, strlen(s), bytes, negative))
        return tl__err(TL_ERR_INVALID_ARG, "size '%.60s': not a size like 8G, 512M or 9.5G%s", s,
                      negative ? " (or -2G)" : "");
    return TL_OK;
}

/*
 * Split [*cur, end) at sep: the next item, trimmed, in (*tok, *len), and
 * *cur moves past it (NULL after the last one). False when none is left. An
 * empty item (two separators in a row, or one at the end) is returned empty.
 */
static bool split_next(const char **cur, const char *end, char sep, const char **tok, size_t *len) {
    const char *p = *cur;
    if (!p) return false;
    const char *s = memchr(p, sep, (size_t)(end - p));
    *tok = p;
    *len = (size_t)((s ? s : end) - p);
    *cur = s ? s + 1 : NULL;
    while (*len && isspace((unsigned char)**tok)) {
        (*tok)++;
        (*len)--;
    }
    while (*len && isspace((unsigned char)(*tok)[*len - 1]))
        (*len)--;
    return true;
}

/* Iterate over the comma-separated items of a NUL-terminated spec. */
static bool next_item(const char **cur, const char **tok, size_t *len) {
    return *cur && split_next(cur, *cur + strlen(*cur), ',', tok, len);
}

static bool is_host_name(const char *tok, size_t len) {
    return tlp_tok_eq(tok, len, "cpu") || tlp_tok_eq(tok, len, "host");
}

tl_status tl_plan_parse_devices(const char *spec, tl_plan_device *out, size_t cap, size_t *n) {
    if (!spec || !out || !n) return tl__err(TL_ERR_INVALID_ARG, "device spec: missing");
    *n = 0;
    const char *cur = spec, *tok;
    size_t len;
    bool host = false;
    char nb[64];
    if (!*spec) return tl__err(TL_ERR_INVALID_ARG, "device spec: empty list");
    while (next_item(&cur, &tok, &len)) {
        if (len == 0) return tl__err(TL_ERR_INVALID_ARG, "device spec '%.80s': empty item", spec);
        const char *eq = memchr(tok, '=', len);
        if (!eq || eq == tok)
            return tl__err(TL_ERR_INVALID_ARG, "device spec item '%s': expected NAME=SIZE (cuda0=16G)",
                          tlp_tok(tok, len, nb, sizeof nb));
        size_t nl = (size_t)(eq - tok);
        while (nl && isspace((unsigned char)tok[nl - 1]))
            nl--;
        if (nl >= sizeof out[0].name)
            return tl__err(TL_ERR_INVALID_ARG, "device spec item '%s': name too long",
                          tlp_tok(tok, len, nb, sizeof nb));
        for (size_t i = 0; i < nl; i++)
            if (!isalnum((unsigned char)tok[i]) && tok[i] != '_' && tok[i] != '-' &&
                tok[i] != ':' && tok[i] != '.')
                return tl__err(TL_ERR_INVALID_ARG, "device spec item '%s': bad character in name",
                              tlp_tok(tok, len, nb, sizeof nb));
        uint64_t size;
        const char *sz = eq + 1;
        size_t sl = (size_t)(tok + len - sz);
        if (!parse_bytes_tok(sz, sl, &size, NULL))
            return tl__err(TL_ERR_INVALID_ARG, "device spec item '%s': bad size",
                          tlp_tok(tok, len, nb, sizeof nb));
        bool is_host = is_host_name(tok, nl);
        if (is_host && host)
            return tl__err(TL_ERR_INVALID_ARG, "device spec: the host is given twice");
        if (tlp_tok_eq(tok, nl, "auto") || tlp_tok_eq(tok, nl, "gpu") ||
            tlp_tok_eq(tok, nl, "all") || tlp_tok_eq(tok, nl, "default"))
            return tl__err(TL_ERR_INVALID_ARG, "device spec item '%s': reserved name",
                          tlp_tok(tok, len, nb, sizeof nb));
        for (size_t i = 0; i < *n; i++)
            if (tlp_tok_eq(tok, nl, out[i].name))
                return tl__err(TL_ERR_INVALID_ARG, "device spec: device '%s' given twice",
                              out[i].name);
        if (*n + ((host || is_host) ? 1 : 2) > cap)
            return tl__err(TL_ERR_INVALID_ARG,
                          "device spec: more than %zu GPUs (room for %zu devices, the host included)",
                          cap - 1, cap);
        tl_plan_device *d = &out[(*n)++];
        memset(d, 0, sizeof *d);
        tlp_tok(tok, nl, d->name, sizeof d->name);
        if (is_host) {
            host = true;
            snprintf(d->name, sizeof d->name, "cpu");
        }
        d->is_gpu = !is_host;
        d->total = d->free = size;
    }
    if (!host) {
        if (*n >= cap)
            return tl__err(TL_ERR_INVALID_ARG,
                          "device spec: more than %zu GPUs (room for %zu devices, the host included)",
                          cap - 1, cap);
        tl_plan_device *d = &out[(*n)++];
        memset(d, 0, sizeof *d);
        snprintf(d->name, sizeof d->name, "cpu");
    }
    return TL_OK;
}

/* The GPU with the most free memory (lowest index on ties); -1 when none. */
static int best_gpu(const tl_plan_device *devs, size_t n) {
    int best = -1;
    for (size_t i = 0; i < n; i++)
        if (devs[i].is_gpu && (best < 0 || devs[i].free > devs[best].free)) best = (int)i;
    return best;
}

/* Resolve one device name into an index or TL_PLAN_HOST. */
static tl_status resolve_device(const char *what, const char *tok, size_t len,
                                const tl_plan_device *devs, size_t n, uint32_t *out) {
    char nb[64];
    if (len == 0) return tl__err(TL_ERR_INVALID_ARG, "%s: empty device name", what);
    for (size_t i = 0; i < n; i++)
        if (tlp_tok_eq(tok, len, devs[i].name)) {
            *out = devs[i].is_gpu ? (uint32_t)i : TL_PLAN_HOST;
            return TL_OK;
        }
    if (is_host_name(tok, len)) {
        *out = TL_PLAN_HOST;
        return TL_OK;
    }
    bool any = tlp_tok_eq(tok, len, "auto") || tlp_tok_eq(tok, len, "default");
    if (any || tlp_tok_eq(tok, len, "gpu")) {
        int b = best_gpu(devs, n);
        if (b < 0 && any) {
            *out = TL_PLAN_HOST; /* no GPU: the default device is the host */
            return TL_OK;
        }
        if (b < 0)
            return tl__err(TL_ERR_NOT_FOUND, "%s: '%s' asks for the best GPU but there is none",
                          what, tlp_tok(tok, len, nb, sizeof nb));
        *out = (uint32_t)b;
        return TL_OK;
    }
    if (tlp_tok_eq(tok, len, "disk"))
        return tl__err(TL_ERR_INVALID_ARG,
                      "%s: 'disk' is where parameters live between phases (parameter residency), "
                      "not a device that computes",
                      what);
    int found = -1, count = 0;
    for (size_t i = 0; i < n; i++)
        if (strlen(devs[i].name) > len && strncasecmp(devs[i].name, tok, len) == 0) {
            found = (int)i;
            count++;
        }
    if (count == 1) {
        *out = devs[found].is_gpu ? (uint32_t)found : TL_PLAN_HOST;
        return TL_OK;
    }
    char list[256];
    size_t at = 0;
    list[0] = 0;
    for (size_t i = 0; i < n && at < sizeof list; i++) {
        int k = snprintf(list + at, sizeof list - at, "%s%s", i ? ", " : "", devs[i].name);
        if (k < 0) break;
        at += (size_t)k;
    }
    if (count > 1)
        return tl__err(TL_ERR_INVALID_ARG, "%s: device '%s' is ambiguous (devices: %s)", what,
                      tlp_tok(tok, len, nb, sizeof nb), list);
    return tl__err(TL_ERR_NOT_FOUND, "%s: unknown device '%s' (devices: %s)", what,
                  tlp_tok(tok, len, nb, sizeof nb), list);
}

tl_status tlp_resolve_device(const char *what, const char *name, const tl_plan_device *devs,
                             size_t n, uint32_t *out) {
    return resolve_device(what, name, strlen(name), devs, n, out);
}

/* Parse "a&b&c" into place. */
static tl_status parse_place(const char *item, const char *tok, size_t len,
                             const tl_plan_device *devs, size_t n, tl_backend_place *pl) {
    char what[96];
    snprintf(what, sizeof what, "backend spec item '%s'", item);
    if (len == 0) return tl__err(TL_ERR_INVALID_ARG, "%s: empty device list", what);
    pl->n_devices = 0;
    const char *p = tok, *end = tok + len, *a;
    size_t l;
    while (split_next(&p, end, '&', &a, &l)) {
        if (l == 0) return tl__err(TL_ERR_INVALID_ARG, "%s: empty device in the list", what);
        uint32_t d;
        tl_status st = resolve_device(what, a, l, devs, n, &d);
        if (st) return st;
        for (uint32_t i = 0; i < pl->n_devices; i++)
            if (pl->devices[i] == d)
                return tl__err(TL_ERR_INVALID_ARG, "%s: device listed twice", what);
        if (pl->n_devices >= TL_PLAN_MAX_DEVICES)
            return tl__err(TL_ERR_INVALID_ARG, "%s: too many devices", what);
        pl->devices[pl->n_devices++] = d;
    }
    if (pl->n_devices > 1)
        for (uint32_t i = 0; i < pl->n_devices; i++)
            if (pl->devices[i] == TL_PLAN_HOST)
                return tl__err(TL_ERR_INVALID_ARG,
                              "%s: a split lists GPUs only; the cpu cannot be part of a split",
                              what);
    return TL_OK;
}

static bool is_default_key(const char *tok, size_t len) {
    return tlp_tok_eq(tok, len, "*") || tlp_tok_eq(tok, len, "all") ||
           tlp_tok_eq(tok, len, "default");
}

tl_status tl_plan_parse_backend(const char *spec, const tl_plan_device *devs, size_t n_devs,
                                tl_backend_spec *out) {
    if (!spec || !out) return tl__err(TL_ERR_INVALID_ARG, "backend spec: missing");
    memset(out, 0, sizeof *out);
    const char *cur = spec, *tok;
    size_t len;
    char item[64], nb[64];
    bool dflt = false, any = false;
    while (next_item(&cur, &tok, &len)) {
        tlp_tok(tok, len, item, sizeof item);
        if (len == 0)
            return tl__err(TL_ERR_INVALID_ARG, "backend spec '%.80s': empty item (stray comma?)", spec);
        any = true;
        const char *eq = memchr(tok, '=', len);
        tl_backend_place *pl;
        const char *list;
        size_t ll;
        if (!eq) {
            if (dflt)
                return tl__err(TL_ERR_INVALID_ARG, "backend spec item '%s': the default is given twice",
                              item);
            dflt = true;
            pl = &out->dflt;
            list = tok;
            ll = len;
        } else {
            size_t kl = (size_t)(eq - tok);
            while (kl && isspace((unsigned char)tok[kl - 1]))
                kl--;
            list = eq + 1;
            ll = (size_t)(tok + len - list);
            while (ll && isspace((unsigned char)*list)) {
                list++;
                ll--;
            }
            if (kl == 0)
                return tl__err(TL_ERR_INVALID_ARG, "backend spec item '%s': missing component", item);
            if (is_default_key(tok, kl)) {
                if (dflt)
                    return tl__err(TL_ERR_INVALID_ARG,
                                  "backend spec item '%s': the default is given twice", item);
                dflt = true;
                pl = &out->dflt;
            } else {
                int c = tl_component_from_name(tlp_tok(tok, kl, nb, sizeof nb));
                if (c < 0 || c >= TL_COMP_COUNT)
                    return tl__err(
                        TL_ERR_NOT_FOUND,
                        "backend spec item '%s': unknown component '%s' (diffusion, cond, vae, "
                        "controlnet, other, or an alias: unet, dit, clip, te, t5xxl, llm, "
                        "firststage, tae, control_net, ...)",
                        item, nb);
                pl = &out->comp[c];
                if (pl->n_devices)
                    return tl__err(TL_ERR_INVALID_ARG,
                                  "backend spec item '%s': component '%s' is given twice", item,
                                  tl_component_name((tl_component)c));
            }
        }
        tl_status st = parse_place(item, list, ll, devs, n_devs, pl);
        if (st) return st;
    }
    if (!any) return tl__err(TL_ERR_INVALID_ARG, "backend spec: empty spec");
    return TL_OK;
}

/*
 * A max_vram size: with a unit as everywhere ("6G", "-512M"); without one in
 * GiB, as stable-diffusion.cpp writes it ("6", "-1", "6.5"). *none is set
 * for a unitless 0, which stable-diffusion.cpp reads as "no cap".
 */
static bool parse_vram_tok(const char *s, size_t len, uint64_t *bytes, bool *negative, bool *none) {
    *none = false;
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    if (!len || !isdigit((unsigned char)s[len - 1]))
        return parse_bytes_tok(s, len, bytes, negative);
    char buf[40];
    if (len + 2 > sizeof buf) return false;
    memcpy(buf, s, len);
    buf[len] = 'G';
    if (!parse_bytes_tok(buf, len + 1, bytes, negative)) return false;
    *none = *bytes == 0;
    return true;
}

tl_status tl_plan_parse_max_vram(const char *spec, const tl_plan_device *devs, size_t n_devs,
                                 uint64_t headroom, uint64_t *budgets) {
    if (!devs || !budgets) return tl__err(TL_ERR_INVALID_ARG, "max_vram spec: missing devices");
    bool named[TL_PLAN_MAX_DEVICES] = {0};
    uint64_t cap_v[TL_PLAN_MAX_DEVICES] = {0};
    bool cap_neg[TL_PLAN_MAX_DEVICES] = {0}, cap_none[TL_PLAN_MAX_DEVICES] = {0};
    bool has_all = false, all_neg = false, all_none = false;
    uint64_t all_v = 0;
    if (n_devs > TL_PLAN_MAX_DEVICES)
        return tl__err(TL_ERR_INVALID_ARG, "max_vram spec: too many devices");
    if (spec && *spec) {
        const char *cur = spec, *tok;
        size_t len;
        char item[64];
        while (next_item(&cur, &tok, &len)) {
            tlp_tok(tok, len, item, sizeof item);
            if (len == 0) return tl__err(TL_ERR_INVALID_ARG, "max_vram spec '%.80s': empty item", spec);
            const char *eq = memchr(tok, '=', len);
            uint64_t v;
            bool neg = false, none = false;
            if (!eq) {
                if (has_all)
                    return tl__err(TL_ERR_INVALID_ARG,
                                  "max_vram spec item '%s': a size for all GPUs is given twice", item);
                if (!parse_vram_tok(tok, len, &v, &neg, &none))
                    return tl__err(TL_ERR_INVALID_ARG,
                                  "max_vram spec item '%s': not a size (8G, -2G, 6 = 6G, "
                                  "cuda0=6G)",
                                  item);
                has_all = true;
                all_v = v;
                all_neg = neg;
                all_none = none;
                continue;
            }
            size_t kl = (size_t)(eq - tok);
            while (kl && isspace((unsigned char)tok[kl - 1]))
                kl--;
            const char *sz = eq + 1;
            size_t sl = (size_t)(tok + len - sz);
            if (!parse_vram_tok(sz, sl, &v, &neg, &none))
                return tl__err(TL_ERR_INVALID_ARG, "max_vram spec item '%s': not a size", item);
            char what[96];
            snprintf(what, sizeof what, "max_vram spec item '%s'", item);
            uint32_t d;
            if (is_default_key(tok, kl)) {
                if (has_all)
                    return tl__err(TL_ERR_INVALID_ARG, "%s: a size for all GPUs is given twice",
                                  what);
                has_all = true;
                all_v = v;
                all_neg = neg;
                all_none = none;
                continue;
            }
            tl_status st = resolve_device(what, tok, kl, devs, n_devs, &d);
            if (st) return st;
            if (d == TL_PLAN_HOST)
                return tl__err(TL_ERR_INVALID_ARG, "%s: names the cpu, not a GPU", what);
            if (named[d])
                return tl__err(TL_ERR_INVALID_ARG, "%s: device '%s' is given twice", what,
                              devs[d].name);
            named[d] = true;
            cap_v[d] = v;
            cap_neg[d] = neg;
            cap_none[d] = none;
        }
    }
    for (size_t i = 0; i < n_devs; i++) {
        if (!devs[i].is_gpu) {
            budgets[i] = devs[i].free;
            continue;
        }
        uint64_t b = devs[i].free > headroom ? devs[i].free - headroom : 0;
        bool has = named[i] ? !cap_none[i] : has_all && !all_none;
        uint64_t v = named[i] ? cap_v[i] : all_v;
        bool neg = named[i] ? cap_neg[i] : all_neg;
        if (has) {
            if (neg)
                b = b > v ? b - v : 0;
            else if (v < b)
                b = v;
        }
        budgets[i] = b;
    }
    return TL_OK;
}

void tl_plan_default_reserves(uint64_t reserve[TL_COMP_COUNT]) {
    reserve[TL_COMP_DIFFUSION] = 2048 * TLP_MIB;
    reserve[TL_COMP_COND] = 512 * TLP_MIB;
    reserve[TL_COMP_VAE] = 1024 * TLP_MIB;
    reserve[TL_COMP_CONTROLNET] = 512 * TLP_MIB;
    reserve[TL_COMP_OTHER] = 0;
    reserve[TL_COMP_DIFFUSION2] = 2048 * TLP_MIB;
}

tl_status tl_plan_parse_reserve(const char *spec, uint64_t reserve[TL_COMP_COUNT]) {
    if (!spec || !reserve) return tl__err(TL_ERR_INVALID_ARG, "reserve spec: missing");
    const char *cur = spec, *tok;
    size_t len;
    char item[64], nb[64];
    bool seen[TL_COMP_COUNT] = {0};
    if (!*spec) return tl__err(TL_ERR_INVALID_ARG, "reserve spec: empty spec");
    while (next_item(&cur, &tok, &len)) {
        tlp_tok(tok, len, item, sizeof item);
        if (len == 0) return tl__err(TL_ERR_INVALID_ARG, "reserve spec '%.80s': empty item", spec);
        const char *eq = memchr(tok, '=', len);
        if (!eq)
            return tl__err(TL_ERR_INVALID_ARG, "reserve spec item '%s': expected COMPONENT=SIZE", item);
        size_t kl = (size_t)(eq - tok);
        while (kl && isspace((unsigned char)tok[kl - 1]))
            kl--;
        int c = tl_component_from_name(tlp_tok(tok, kl, nb, sizeof nb));
        if (c < 0 || c >= TL_COMP_COUNT)
            return tl__err(TL_ERR_NOT_FOUND, "reserve spec item '%s': unknown component '%s'", item,
                          nb);
        if (seen[c])
            return tl__err(TL_ERR_INVALID_ARG, "reserve spec item '%s': component '%s' is given twice",
                          item, tl_component_name((tl_component)c));
        seen[c] = true;
        uint64_t v;
        const char *sz = eq + 1;
        if (!parse_bytes_tok(sz, (size_t)(tok + len - sz), &v, NULL))
            return tl__err(TL_ERR_INVALID_ARG, "reserve spec item '%s': not a size", item);
        reserve[c] = v;
    }
    return TL_OK;
}

static bool parse_dim(const char **p, uint32_t *out) {
    const char *s = *p;
    if (!isdigit((unsigned char)*s)) return false;
    uint64_t v = 0;
    while (isdigit((unsigned char)*s)) {
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > 1048576) return false;
        s++;
    }
    if (v == 0) return false;
    *out = (uint32_t)v;
    *p = s;
    return true;
}

tl_status tl_plan_parse_size(const char *spec, tl_plan_size *out) {
    if (!spec || !out) return tl__err(TL_ERR_INVALID_ARG, "size spec: missing");
    const char *p = spec;
    tl_plan_size s = {0, 0, 1};
    if (!parse_dim(&p, &s.width) || (*p != 'x' && *p != 'X') || (p++, !parse_dim(&p, &s.height)))
        return tl__err(TL_ERR_INVALID_ARG,
                      "size spec '%.60s': expected WxH or WxHxT (1024x1024, 768x512x97)", spec);
    if (*p == 'x' || *p == 'X') {
        p++;
        if (!parse_dim(&p, &s.frames))
            return tl__err(TL_ERR_INVALID_ARG, "size spec '%.60s': bad frame count", spec);
    }
    if (*p) return tl__err(TL_ERR_INVALID_ARG, "size spec '%.60s': trailing characters", spec);
    *out = s;
    return TL_OK;
}

void tl_plan_default_phases(tl_plan_phases *out) {
    memset(out, 0, sizeof *out);
    out->n = 3;
    out->mask[0] = 1u << TL_COMP_COND;
    out->mask[1] = (1u << TL_COMP_DIFFUSION) | (1u << TL_COMP_CONTROLNET);
    out->mask[2] = 1u << TL_COMP_VAE;
}

tl_status tl_plan_parse_phases(const char *spec, tl_plan_phases *out) {
    if (!spec || !out) return tl__err(TL_ERR_INVALID_ARG, "phase spec: missing");
    memset(out, 0, sizeof *out);
    const char *cur = spec, *tok;
    size_t len;
    char item[64], nb[64];
    uint32_t seen = 0;
    if (!*spec) return tl__err(TL_ERR_INVALID_ARG, "phase spec: empty schedule");
    while (next_item(&cur, &tok, &len)) {
        tlp_tok(tok, len, item, sizeof item);
        if (len == 0) return tl__err(TL_ERR_INVALID_ARG, "phase spec '%.80s': empty phase", spec);
        if (out->n >= TL_PLAN_MAX_PHASES)
            return tl__err(TL_ERR_INVALID_ARG, "phase spec: more than %d phases", TL_PLAN_MAX_PHASES);
        uint32_t mask = 0;
        const char *p = tok, *end = tok + len, *a;
        size_t l;
        while (split_next(&p, end, '+', &a, &l)) {
            if (l == 0)
                return tl__err(TL_ERR_INVALID_ARG, "phase spec item '%s': empty component", item);
            int c = tl_component_from_name(tlp_tok(a, l, nb, sizeof nb));
            if (c < 0 || c >= TL_COMP_COUNT)
                return tl__err(TL_ERR_NOT_FOUND, "phase spec item '%s': unknown component '%s'", item,
                              nb);
            if (seen & (1u << c))
                return tl__err(TL_ERR_INVALID_ARG,
                              "phase spec item '%s': component '%s' is in two phases", item,
                              tl_component_name((tl_component)c));
            seen |= 1u << c;
            mask |= 1u << c;
        }
        out->mask[out->n++] = mask;
    }
    return TL_OK;
}

/* A round-trip time: a number with an optional s, ms, us or ns suffix (seconds). */
static bool parse_time_tok(const char *tok, size_t len, double *out) {
    char b[48];
    if (len == 0 || len >= sizeof b) return false;
    memcpy(b, tok, len);
    b[len] = 0;
    char *end;
    errno = 0;
    double v = strtod(b, &end);
    if (errno || end == b || !(v >= 0) || v > 1e6) return false;
    double mul = 1;
    if (!strcasecmp(end, "ms"))
        mul = 1e-3;
    else if (!strcasecmp(end, "us"))
        mul = 1e-6;
    else if (!strcasecmp(end, "ns"))
        mul = 1e-9;
    else if (*end && strcasecmp(end, "s"))
        return false;
    *out = v * mul;
    return true;
}

tl_status tlp_parse_links(const char *spec, const tl_plan_device *devs, size_t n_devs, double *bw,
                          double *lat) {
    for (size_t i = 0; i < n_devs; i++)
        bw[i] = lat[i] = 0;
    if (!spec || !*spec) return TL_OK;
    const char *cur = spec, *tok;
    size_t len;
    char item[96];
    while (next_item(&cur, &tok, &len)) {
        tlp_tok(tok, len, item, sizeof item);
        const char *eq = memchr(tok, '=', len);
        if (!eq)
            return tl__err(TL_ERR_INVALID_ARG,
                           "links spec item '%s': not NAME=BW[:lat=TIME] (e.g. rpc0:0=1.25G:lat=200us)",
                           item);
        char what[128];
        snprintf(what, sizeof what, "links spec item '%s'", item);
        uint32_t d;
        tl_status st = resolve_device(what, tok, (size_t)(eq - tok), devs, n_devs, &d);
        if (st) return st;
        if (d == TL_PLAN_HOST)
            return tl__err(TL_ERR_INVALID_ARG, "%s: the host has no network link", what);
        if (bw[d] > 0) return tl__err(TL_ERR_INVALID_ARG, "%s: device given twice", what);
        const char *p = eq + 1, *end = tok + len, *f;
        size_t fl;
        bool first = true;
        while (split_next(&p, end, ':', &f, &fl)) {
            uint64_t b;
            if (first) {
                if (!parse_bytes_tok(f, fl, &b, NULL) || b == 0)
                    return tl__err(TL_ERR_INVALID_ARG, "%s: bad bandwidth (bytes/s: 1.25G, 118M)",
                                   what);
                bw[d] = (double)b;
                first = false;
            } else if (fl > 4 && !strncasecmp(f, "lat=", 4)) {
                if (!parse_time_tok(f + 4, fl - 4, &lat[d]))
                    return tl__err(TL_ERR_INVALID_ARG, "%s: bad latency (200us, 1ms)", what);
            } else {
                return tl__err(TL_ERR_INVALID_ARG, "%s: unknown option (lat=TIME)", what);
            }
        }
    }
    return TL_OK;
}
