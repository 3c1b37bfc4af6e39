/*
 * explain.c — the report of an infeasible plan: which device overflows in
 * which phase and by how much (found by raising every GPU's budget until the
 * forced placements fit; the plan's decisions become that best effort), and
 * the smallest change that would fit: a max_vram cap, leaving one forced
 * component to auto-fit (or the cpu), or offloading.
 */
#include "plan/search.h"

#include "core/error.h"
#include "os/os.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The device and phase furthest over budget in p, as a sentence in msg. */
static uint64_t worst_short(const tl_plan *p, const tlp_ctx *x, char *msg, size_t n) {
    uint64_t worst = 0;
    msg[0] = 0;
    for (uint32_t d = 0; d < x->n_gpu; d++)
        for (uint32_t ph = 0; ph < x->n_phases; ph++)
            if (p->peak[d][ph] > x->budget[d] && p->peak[d][ph] - x->budget[d] > worst) {
                worst = p->peak[d][ph] - x->budget[d];
                char a[32], b[32], c[32], pn[64];
                snprintf(msg, n, "%s needs %s in phase %s but its budget is %s (short by %s)",
                         p->devices[d].name, tl_fmt_bytes(p->peak[d][ph], a, sizeof a),
                         tlp_phase_name(x->n_phases ? p->phases.mask[ph] : 0, pn, sizeof pn),
                         tl_fmt_bytes(x->budget[d], b, sizeof b), tl_fmt_bytes(worst, c, sizeof c));
            }
    return worst;
}

#define UNLIMITED (1ull << 50) /* "practically unlimited" extra budget: 1 PiB */

/* Search y with every GPU budget raised by extra over base. */
static tl_status search_raised(tlp_ctx *y, const uint64_t *base, uint64_t extra, bool *found) {
    for (uint32_t d = 0; d < y->n_gpu; d++)
        y->budget[d] = base[d] > UINT64_MAX - extra ? UINT64_MAX : base[d] + extra;
    return tlp_search(y, found);
}

/* The best effort: p's decisions and peaks from y's search, p's own budgets kept. */
static void best_effort(const tlp_ctx *y, const tlp_inputs *in, tl_plan *p, uint64_t extra) {
    uint64_t budget[TLP_MAXD];
    memcpy(budget, p->budget, sizeof budget);
    tlp_fill_plan(y, in, p);
    memcpy(p->budget, budget, sizeof budget);
    p->shortfall = extra;
}

/*
 * 1. How much is missing: the least extra budget on every GPU that fits, and
 * who overflows; p's decisions become the placement that fits then.
 */
static tl_status shortfall(const tlp_inputs *in, const tlp_ctx *x, tlp_ctx *y, tl_plan *p,
                           char *what, size_t what_n) {
    uint64_t lo = 0, hi = 64 * TLP_GIB;
    uint64_t base[TLP_MAXD];
    bool found;
    tl_status st;
    memcpy(base, x->budget, sizeof base);
    memcpy(y, x, sizeof *y);
    if ((st = search_raised(y, base, hi, &found))) return st;
    if (!found) {
        snprintf(what, what_n,
                 "the forced placements cannot fit even with 64 GiB more on every GPU");
        if ((st = search_raised(y, base, UNLIMITED, &found))) return st;
        if (found) best_effort(y, in, p, UINT64_MAX);
        return TL_OK;
    }
    while (hi - lo > 16 * TLP_MIB) {
        uint64_t mid = lo + (hi - lo) / 2;
        if ((st = search_raised(y, base, mid, &found))) return st;
        if (found)
            hi = mid;
        else
            lo = mid;
    }
    if ((st = search_raised(y, base, hi, &found))) return st;
    best_effort(y, in, p, hi);
    worst_short(p, x, what, what_n);
    /* placements that overflow, by component */
    char who[160] = "";
    size_t at = 0;
    for (uint32_t c = 0; c < TL_COMP_COUNT; c++) {
        if (!x->comp[c].present || !tlp_place_gpus(&x->comp[c].place)) continue;
        int k = snprintf(who + at, sizeof who - at, "%s%s", at ? ", " : "",
                         tl_component_name((tl_component)c));
        if (k < 0 || (size_t)k >= sizeof who - at) break;
        at += (size_t)k;
    }
    if (at) {
        char t[512];
        snprintf(t, sizeof t, "the placement of %.160s does not fit: %.300s", who, what);
        snprintf(what, what_n, "%s", t);
    }
    return TL_OK;
}

/* 2a. The least uniform max_vram cap (0.1 GiB steps) with budgets min(free - headroom, X). */
static tl_status max_vram_fix(const tlp_inputs *in, tlp_ctx *y, char *fix, size_t fix_n) {
    bool found;
    tl_status st;
    if (tlp_setup(in, NULL, y)) return TL_OK; /* the spec itself was checked before */
    if ((st = tlp_search(y, &found)) || !found) return st;
    uint64_t step = TLP_GIB / 10, top = 0;
    uint64_t full[TLP_MAXD];
    memcpy(full, y->budget, sizeof full);
    for (uint32_t d = 0; d < y->n_gpu; d++)
        if (full[d] > top) top = full[d];
    uint64_t l = 0, h = (top + step - 1) / step;
    while (h - l > 1) {
        uint64_t mid = (l + h) / 2;
        for (uint32_t d = 0; d < y->n_gpu; d++)
            y->budget[d] = full[d] < mid * step ? full[d] : mid * step;
        if ((st = tlp_search(y, &found))) return st;
        if (found)
            h = mid;
        else
            l = mid;
    }
    snprintf(fix, fix_n, "a max_vram cap of %.1fG would fit", (double)(h * step) / (double)TLP_GIB);
    return TL_OK;
}

/* 2b. One forced component at a time, lowest priority first: what auto-fit would do with it. */
static tl_status auto_fit_fix(const tlp_inputs *in, const tlp_ctx *x, tlp_ctx *y, char *fix,
                              size_t fix_n) {
    static const uint32_t by_priority_asc[] = {TL_COMP_OTHER,      TL_COMP_VAE,
                                               TL_COMP_COND,       TL_COMP_CONTROLNET,
                                               TL_COMP_DIFFUSION2, TL_COMP_DIFFUSION};
    for (uint32_t i = 0; i < TL_COMP_COUNT && !fix[0]; i++) {
        uint32_t c = by_priority_asc[i];
        if (!x->comp[c].present || !tlp_place_gpus(&x->comp[c].place)) continue;
        memcpy(y, x, sizeof *y);
        y->comp[c].place.n_devices = 0;
        bool found;
        tl_status st = tlp_search(y, &found);
        if (st) return st;
        if (!found) continue;
        const tlp_choice *b = &y->best[c];
        if (b->k.mode == TL_PLAN_MODE_CPU) {
            snprintf(fix, fix_n, "%s=cpu would fit", tl_component_name((tl_component)c));
            continue;
        }
        char devs[128];
        size_t at = 0;
        devs[0] = 0;
        for (uint32_t j = 0; j < b->k.n && at < sizeof devs; j++) {
            int w = snprintf(devs + at, sizeof devs - at, "%s%s", j ? "&" : "",
                             in->devs[b->s[j].dev].name);
            if (w < 0) break;
            at += (size_t)w;
        }
        snprintf(fix, fix_n, "leaving %s to auto-fit would fit (%s on %s%s)",
                 tl_component_name((tl_component)c), tl_plan_mode_name(b->k.mode), devs,
                 b->k.phase ? ", loaded per phase" : "");
    }
    return TL_OK;
}

tl_status tlp_explain(const tlp_inputs *in, tl_plan *p) {
    tlp_ctx *x = tl__os_malloc(sizeof *x);
    tlp_ctx *y = tl__os_malloc(sizeof *y);
    char what[512] = "", fix[256] = "";
    tl_status st = TL_OK;
    if (!x || !y) {
        st = tl__err(TL_ERR_NOMEM, "plan: out of memory");
        goto out;
    }
    p->shortfall = UINT64_MAX;
    if (tlp_setup(in, in->max_vram, x)) goto report;
    if ((st = shortfall(in, x, y, p, what, sizeof what))) goto out;
    if (in->max_vram && *in->max_vram && (st = max_vram_fix(in, y, fix, sizeof fix))) goto out;
    if ((st = auto_fit_fix(in, x, y, fix, sizeof fix))) goto out;
    if (!fix[0] && !in->offload) {
        memcpy(y, x, sizeof *y);
        for (uint32_t c = 0; c < TL_COMP_COUNT; c++) {
            y->comp[c].offload = true;
            y->comp[c].phase_only = false;
        }
        bool found;
        if ((st = tlp_search(y, &found))) goto out;
        if (found) snprintf(fix, sizeof fix, "offload_to_cpu would fit");
    }
report:
    snprintf(p->error, sizeof p->error, "plan does not fit: %s%s%s",
             what[0] ? what : "budgets too small", fix[0] ? "; " : "", fix);
out:
    free(x);
    free(y);
    return st;
}
