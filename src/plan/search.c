/*
 * search.c — auto-fit: the exact, deterministic search for where every
 * component goes.
 *
 * Per component the candidates are: cpu; whole on one GPU; a layer split over
 * each subset of >= 2 GPUs; a row split over each such subset; streaming from
 * RAM with as many whole layers as fit resident on a subset of GPUs (pure
 * streaming to one GPU included). Each GPU candidate comes with "run"
 * residency (weights stay for the whole run) and, when the component is not
 * active in every phase, "phase" residency (loaded for its phases only, its
 * bytes moved once per run). A depth-first search over the components in
 * priority order places one candidate each, checking every device's load in
 * every phase against its budget, and prunes any branch whose optimistic
 * bound (all remaining components fully resident, nothing more moved, no new
 * device) is not strictly better than the best plan found so far; candidates
 * are tried best-first in a fixed order, so the first of equal plans wins and
 * the result is deterministic. See tierload.h for the model.
 *
 * Each search allocates one workspace (the candidate lists of every level)
 * up front, sized by the number of GPU subsets; nothing is allocated while
 * searching, so no branch can be lost to a failed allocation.
 */
#include "plan/search.h"

#include "core/error.h"
#include "os/os.h"
#include "core/options.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

bool tlp_key_better(const tlp_key *a, const tlp_key *b) {
    if (a->score != b->score) return a->score > b->score;
    if (a->compute != b->compute) return a->compute > b->compute;
    if (a->link_ns != b->link_ns) return a->link_ns < b->link_ns;
    if (a->moved != b->moved) return a->moved < b->moved;
    if (a->ndev != b->ndev) return a->ndev < b->ndev;
    return a->pairs < b->pairs;
}

/*
 * A candidate's own key: most resident, most computed on a GPU, least link
 * time, least moved, fewest GPUs.
 */
static tlp_key cand_key(const tlp_cand *k) {
    tlp_key r = {k->score, k->compute, k->link_ns, k->moved, k->n, k->n};
    return r;
}

double tlp_slot_link(const double *bw, const double *lat, const tlp_comp *ci, const tlp_cand *k,
                     const tlp_slot *s, uint64_t streamed, uint64_t *bytes) {
    *bytes = (k->phase ? s->w : 0) + streamed * ci->passes;
    double b = bw[s->dev];
    if (!(b > 0)) return 0;
    return (double)*bytes / b +
           (double)ci->passes * (lat[s->dev] + 2.0 * (double)TL_PLAN_LINK_PASS_BYTES / b);
}

/* The candidate's link time per run (ns); streamed: per pass, through its last device. */
static void cand_link(const tlp_ctx *x, const tlp_comp *ci, tlp_cand *k, uint64_t streamed) {
    double t = 0;
    for (uint32_t i = 0; i < k->n; i++) {
        uint64_t b;
        t += tlp_slot_link(x->link_bw, x->link_lat, ci, k, &k->s[i],
                           i == k->n - 1 ? streamed : 0, &b);
    }
    k->link_ns = (uint64_t)llround(t * 1e9);
}

static bool cand_before(const void *arg, uint32_t a, uint32_t b) {
    const tlp_cand *list = arg;
    tlp_key ka = cand_key(&list[a]), kb = cand_key(&list[b]);
    return tlp_key_better(&ka, &kb);
}

static uint32_t popcount64(uint64_t x) {
    return (uint32_t)__builtin_popcountll(x);
}

/* Room for weights on device d given extra e in active phases (persistent or phase). */
static bool room(const tlp_ctx *x, uint32_t d, uint32_t active, bool phase, uint64_t e,
                 uint64_t *cap) {
    uint64_t best = UINT64_MAX;
    for (uint32_t p = 0; p < x->n_phases; p++) {
        bool act = active & (1u << p);
        if (phase && !act) continue;
        uint64_t need = x->load[d][p] + (act ? e : 0);
        if (need > x->budget[d]) return false;
        uint64_t r = x->budget[d] - need;
        if (r < best) best = r;
    }
    *cap = best == UINT64_MAX ? x->budget[d] : best;
    return true;
}

/* The next candidate of a level, cleared, with room for n device slots. */
static tlp_cand *cand_next(tlp_level *lv, uint32_t n) {
    tlp_cand *k = &lv->cands[lv->n];
    k->mode = TL_PLAN_MODE_CPU;
    k->phase = false;
    k->n = n;
    k->resident = k->host = k->moved = k->score = k->compute = k->link_ns = 0;
    k->s = lv->slots + lv->n_slots;
    return k;
}

/* Keep the candidate cand_next returned last: its totals, then it joins the list. */
static void cand_keep(const tlp_comp *ci, tlp_level *lv, tlp_cand *k) {
    k->resident = 0;
    for (uint32_t i = 0; i < k->n; i++)
        k->resident += k->s[i].w;
    k->score = k->resident * ci->weight;
    k->compute = k->n ? ci->bytes * ci->weight : 0;
    lv->n++;
    lv->n_slots += k->n;
}

/* Split contiguous layers over n devices with caps; other bytes on the first. */
static bool layer_split(const tlp_comp *ci, uint32_t n, const uint64_t *cap, tlp_slot *s) {
    if (ci->n_layers < n) return false;
    if (cap[0] < ci->other) return false;
    uint64_t c[TLP_MAXD];
    unsigned __int128 sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        c[i] = i == 0 ? cap[0] - ci->other : cap[i];
        sum += c[i];
    }
    uint64_t total = ci->bytes - ci->other;
    if (sum < total || sum == 0) return false;
    /* proportional boundaries, rounded to the nearest layer boundary */
    size_t start = 0;
    unsigned __int128 cum = 0;
    uint64_t prefix = 0;
    bool ok = true;
    for (uint32_t i = 0; i < n; i++) {
        cum += c[i];
        size_t end;
        if (i == n - 1) {
            end = ci->n_layers;
        } else {
            uint64_t target = (uint64_t)((unsigned __int128)total * cum / sum);
            end = start;
            uint64_t acc = prefix;
            while (end < ci->n_layers && acc + ci->layers[end] / 2 < target)
                acc += ci->layers[end++];
            size_t min_end = start + 1, max_end = ci->n_layers - (n - 1 - i);
            if (end < min_end) end = min_end;
            if (end > max_end) end = max_end;
        }
        uint64_t sz = 0;
        for (size_t j = start; j < end; j++)
            sz += ci->layers[j];
        if (sz > c[i] || end <= start) ok = false;
        s[i].w = sz + (i == 0 ? ci->other : 0);
        s[i].lb = (uint32_t)start;
        s[i].le = (uint32_t)end;
        prefix += sz;
        start = end;
    }
    if (ok) return true;
    /* repair: greedy fill in order (optimal for feasibility of contiguous parts) */
    start = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t max_end = ci->n_layers - (n - 1 - i);
        uint64_t sz = 0;
        size_t end = start;
        while (end < max_end && sz + ci->layers[end] <= c[i])
            sz += ci->layers[end++];
        if (i == n - 1 && end != ci->n_layers) return false;
        if (end == start) return false;
        s[i].w = sz + (i == 0 ? ci->other : 0);
        s[i].lb = (uint32_t)start;
        s[i].le = (uint32_t)end;
        start = end;
    }
    return true;
}

static uint32_t subset_devs(uint64_t mask, uint32_t n_gpu, uint32_t *devs) {
    uint32_t n = 0;
    for (uint32_t d = 0; d < n_gpu; d++)
        if (mask & (1ull << d)) devs[n++] = d;
    return n;
}

/* Whole on one GPU, or a layer split over several. */
static void gen_full(const tlp_ctx *x, const tlp_comp *ci, const uint32_t *devs, uint32_t n,
                     bool phase, tlp_level *lv) {
    uint64_t cap[TLP_MAXD] = {0};
    for (uint32_t i = 0; i < n; i++)
        if (!room(x, devs[i], ci->active, phase, ci->reserve, &cap[i])) return;
    tlp_cand *k = cand_next(lv, n);
    k->phase = phase;
    for (uint32_t i = 0; i < n; i++) {
        k->s[i].dev = devs[i];
        k->s[i].extra = ci->reserve;
    }
    if (n == 1) {
        if (cap[0] < ci->bytes) return;
        k->mode = TL_PLAN_MODE_GPU;
        k->s[0].w = ci->bytes;
        k->s[0].lb = 0;
        k->s[0].le = (uint32_t)ci->n_layers;
    } else {
        k->mode = TL_PLAN_MODE_LAYER_SPLIT;
        if (!layer_split(ci, n, cap, k->s)) return;
    }
    k->moved = phase ? ci->bytes : 0;
    cand_link(x, ci, k, 0);
    cand_keep(ci, lv, k);
}

static void gen_row(const tlp_ctx *x, const tlp_comp *ci, const uint32_t *devs, uint32_t n,
                    bool phase, tlp_level *lv) {
    if (n < 2 || ci->matrix == 0) return;
    uint64_t cap[TLP_MAXD] = {0};
    for (uint32_t i = 0; i < n; i++)
        if (!room(x, devs[i], ci->active, phase, ci->reserve, &cap[i])) return;
    uint32_t mi = 0;
    for (uint32_t i = 1; i < n; i++)
        if (cap[i] > cap[mi]) mi = i;
    uint64_t rest = ci->bytes - ci->matrix;
    if (cap[mi] < rest) return;
    uint64_t c[TLP_MAXD];
    unsigned __int128 sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        c[i] = i == mi ? cap[i] - rest : cap[i];
        sum += c[i];
    }
    if (sum < ci->matrix) return;
    /* mi device first, then the others in index order */
    uint32_t order[TLP_MAXD], m = 0;
    order[m++] = mi;
    for (uint32_t i = 0; i < n; i++)
        if (i != mi) order[m++] = i;
    uint64_t given = 0;
    uint64_t part[TLP_MAXD];
    for (uint32_t i = 0; i < n; i++) {
        part[i] = (uint64_t)((unsigned __int128)ci->matrix * c[i] / sum);
        given += part[i];
    }
    uint64_t left = ci->matrix - given;
    for (uint32_t i = 0; i < n && left; i++) {
        uint32_t j = order[i];
        uint64_t slack = c[j] - part[j];
        uint64_t t = slack < left ? slack : left;
        part[j] += t;
        left -= t;
    }
    if (left) return;
    tlp_cand *k = cand_next(lv, n);
    k->mode = TL_PLAN_MODE_ROW_SPLIT;
    k->phase = phase;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t j = order[i];
        k->s[i].dev = devs[j];
        k->s[i].w = part[j] + (j == mi ? rest : 0);
        k->s[i].lb = 0;
        k->s[i].le = (uint32_t)ci->n_layers; /* every layer's matrices, split by rows */
        k->s[i].extra = ci->reserve;
    }
    k->moved = phase ? ci->bytes : 0;
    cand_link(x, ci, k, 0);
    cand_keep(ci, lv, k);
}

/*
 * Streaming: units are [other, layer 0, layer 1, ...]; a prefix stays resident
 * on devs (filled in order), the rest lives in RAM and is streamed to the
 * last device, which holds two buffers of the largest streamed unit. pure:
 * nothing resident (one device).
 */
static void gen_stream(const tlp_ctx *x, const tlp_comp *ci, const uint32_t *devs, uint32_t n,
                       bool phase, bool pure, tlp_level *lv) {
    if (ci->n_layers == 0) return;
    if (pure && n != 1) return;
    tlp_cand *k = cand_next(lv, n);
    k->mode = TL_PLAN_MODE_STREAM;
    k->phase = phase;
    uint64_t streamed;
    if (pure) {
        uint64_t buf = 2 * ci->max_unit, cap = 0;
        if (!room(x, devs[0], ci->active, phase, ci->reserve + buf, &cap)) return;
        k->s[0].dev = devs[0];
        k->s[0].extra = ci->reserve + buf;
        k->s[0].w = 0;
        k->s[0].lb = k->s[0].le = 0;
        streamed = ci->bytes;
    } else {
        uint64_t buf = 2 * ci->max_layer;
        uint64_t cap[TLP_MAXD] = {0};
        for (uint32_t i = 0; i < n; i++) {
            uint64_t e = ci->reserve + (i == n - 1 ? buf : 0);
            if (!room(x, devs[i], ci->active, phase, e, &cap[i])) return;
            k->s[i].dev = devs[i];
            k->s[i].extra = e;
        }
        /* unit u: 0 = other, 1.. = layers */
        size_t n_units = ci->n_layers + 1, u = 0;
        if (ci->other > cap[0]) return;
        for (uint32_t i = 0; i < n; i++) {
            uint64_t sz = 0;
            size_t u0 = u;
            while (u < n_units) {
                uint64_t b = u == 0 ? ci->other : ci->layers[u - 1];
                if (sz + b > cap[i]) break;
                sz += b;
                u++;
            }
            if (sz == 0 || u == u0) return; /* an empty device: a smaller subset covers it */
            k->s[i].w = sz;
            k->s[i].lb = (uint32_t)(u0 ? u0 - 1 : 0);
            k->s[i].le = (uint32_t)(u ? u - 1 : 0);
        }
        if (u >= n_units) return; /* everything fits: a full placement is better */
        streamed = 0;
        for (size_t j = u; j < n_units; j++)
            streamed += ci->layers[j - 1];
    }
    k->host = streamed;
    cand_keep(ci, lv, k);
    k->moved = streamed * ci->passes + (phase ? k->resident : 0);
    cand_link(x, ci, k, streamed);
}

/* Every candidate of component c, in generation order, into lv. */
static void gen(const tlp_ctx *x, uint32_t c, tlp_level *lv) {
    const tlp_comp *ci = &x->comp[c];
    lv->n = lv->n_slots = 0;
    bool phases[2] = {false, true};
    int v0 = ci->phase_only ? 1 : 0, n_var = ci->phase_only ? 2 : ci->all_phases ? 1 : 2;
    const tl_backend_place *pl = &ci->place;
    if (tlp_place_gpus(pl)) {
        uint32_t devs[TLP_MAXD], n = pl->n_devices;
        for (uint32_t i = 0; i < n; i++)
            devs[i] = pl->devices[i];
        for (int v = v0; v < n_var; v++) {
            if (ci->offload) { /* streamed from RAM: a resident prefix where the budget has room */
                gen_stream(x, ci, devs, 1, phases[v], true, lv);
                gen_stream(x, ci, devs, n, phases[v], false, lv);
            } else if (n > 1 && ci->no_layer)
                gen_row(x, ci, devs, n, phases[v], lv);
            else
                gen_full(x, ci, devs, n, phases[v], lv);
        }
        return;
    }
    if (!tlp_place_host(pl)) {
        /* symmetry: a GPU identical to a lower one (same budget, same load in
           every phase) is only used together with it; the mirrored choices
           give the same keys and come later, so they could never win */
        uint64_t needs[TLP_MAXD] = {0};
        for (uint32_t d = 1; d < x->n_gpu; d++)
            for (uint32_t e = d; e-- > 0;)
                if (x->budget[e] == x->budget[d] && x->link_bw[e] == x->link_bw[d] &&
                    x->link_lat[e] == x->link_lat[d] &&
                    !memcmp(x->load[e], x->load[d], sizeof x->load[d][0] * x->n_phases)) {
                    needs[d] = 1ull << e;
                    break;
                }
        for (uint32_t s = 0; s < x->n_subsets; s++) {
            uint64_t mask = x->subsets[s];
            uint32_t devs[TLP_MAXD];
            bool mirrored = false;
            for (uint32_t d = 0; d < x->n_gpu; d++)
                if ((mask & (1ull << d)) && needs[d] && !(mask & needs[d])) mirrored = true;
            if (mirrored && !x->exhaustive) continue;
            uint32_t n = subset_devs(mask, x->n_gpu, devs);
            for (int v = v0; v < n_var; v++) {
                if (ci->offload) {
                    gen_stream(x, ci, devs, n, phases[v], true, lv);
                    gen_stream(x, ci, devs, n, phases[v], false, lv);
                    continue;
                }
                if (n == 1 || !ci->no_layer) gen_full(x, ci, devs, n, phases[v], lv);
                if (!ci->no_row) gen_row(x, ci, devs, n, phases[v], lv);
                if (!ci->phase_only) gen_stream(x, ci, devs, n, phases[v], false, lv);
                if (!ci->phase_only) gen_stream(x, ci, devs, n, phases[v], true, lv);
            }
        }
    }
    tlp_cand *k = cand_next(lv, 0);
    k->host = ci->bytes;
    lv->n++;
}

static void apply(tlp_ctx *x, uint32_t c, const tlp_cand *k, bool add) {
    const tlp_comp *ci = &x->comp[c];
    for (uint32_t i = 0; i < k->n; i++)
        for (uint32_t p = 0; p < x->n_phases; p++) {
            uint64_t b = tlp_phase_load(ci, k, &k->s[i], p);
            if (add)
                x->load[k->s[i].dev][p] += b;
            else
                x->load[k->s[i].dev][p] -= b;
        }
}

static void keep_best(tlp_ctx *x) {
    x->have_best = true;
    x->best_key = x->cur_key;
    for (uint32_t i = 0; i < x->n_order; i++) {
        uint32_t c = x->order[i];
        tlp_choice *b = &x->best[c];
        b->k = *x->cur[c];
        b->k.s = NULL;
        memcpy(b->s, x->cur[c]->s, sizeof b->s[0] * x->cur[c]->n);
    }
}

static void dfs(tlp_ctx *x, uint32_t level) {
    if (++x->nodes > TLP_NODE_LIMIT && x->have_best && !x->exhaustive) return;
    if (level == x->n_order) {
        if (!x->have_best || tlp_key_better(&x->cur_key, &x->best_key)) keep_best(x);
        return;
    }
    if (x->have_best && !x->exhaustive) {
        tlp_key bound = x->cur_key;
        bound.score += x->rem[level];
        bound.compute += x->rem[level];
        if (!tlp_key_better(&bound, &x->best_key)) return;
    }
    uint32_t c = x->order[level];
    tlp_level *lv = &x->lv[level];
    gen(x, c, lv);
    for (uint32_t i = 0; i < lv->n; i++)
        lv->idx[i] = i;
    tlp_sort(lv->idx, lv->tmp, lv->n, cand_before, lv->cands);
    for (uint32_t i = 0; i < lv->n; i++) {
        const tlp_cand *k = &lv->cands[lv->idx[i]];
        tlp_key saved = x->cur_key;
        uint64_t saved_mask = x->used_mask;
        uint64_t m = 0;
        for (uint32_t j = 0; j < k->n; j++)
            m |= 1ull << k->s[j].dev;
        x->cur_key.score += k->score;
        x->cur_key.compute += k->compute;
        x->cur_key.link_ns += k->link_ns;
        x->cur_key.moved += k->moved;
        x->cur_key.pairs += k->n;
        x->used_mask |= m;
        x->cur_key.ndev = popcount64(x->used_mask);
        tlp_key bound = x->cur_key;
        bound.score += x->rem[level + 1];
        bound.compute += x->rem[level + 1];
        if (!x->have_best || x->exhaustive || tlp_key_better(&bound, &x->best_key)) {
            apply(x, c, k, true);
            x->cur[c] = k;
            dfs(x, level + 1);
            apply(x, c, k, false);
        }
        x->cur_key = saved;
        x->used_mask = saved_mask;
    }
}

static bool budget_before(const void *arg, uint32_t a, uint32_t b) {
    const uint64_t *budget = arg;
    return budget[a] > budget[b];
}

/* GPU subsets: all (by size, then mask) up to TLP_MAX_EXACT_GPUS, else singles + the k largest. */
static void make_subsets(tlp_ctx *x) {
    x->n_subsets = 0;
    if (x->n_gpu <= TLP_MAX_EXACT_GPUS) {
        for (uint32_t size = 1; size <= x->n_gpu; size++)
            for (uint64_t m = 1; m < (1ull << x->n_gpu); m++)
                if (popcount64(m) == size) x->subsets[x->n_subsets++] = m;
        return;
    }
    uint32_t idx[TLP_MAXD], tmp[TLP_MAXD];
    for (uint32_t i = 0; i < x->n_gpu; i++)
        idx[i] = i;
    tlp_sort(idx, tmp, x->n_gpu, budget_before, x->budget);
    for (uint32_t i = 0; i < x->n_gpu; i++)
        x->subsets[x->n_subsets++] = 1ull << i;
    uint64_t m = 1ull << idx[0];
    for (uint32_t k = 1; k < x->n_gpu; k++) {
        m |= 1ull << idx[k];
        x->subsets[x->n_subsets++] = m;
    }
}

/*
 * The workspace of one search: per level, room for every candidate gen can
 * make (per subset and residency variant: full, row, stream, pure stream,
 * each with at most the subset's GPUs; a forced placement: one per variant;
 * and the cpu) and for their device slots.
 */
static void *workspace(tlp_ctx *x) {
    uint64_t slots_per_level = 0;
    for (uint32_t s = 0; s < x->n_subsets; s++)
        slots_per_level += 8ull * popcount64(x->subsets[s]);
    slots_per_level += 2ull * TLP_MAXD;
    uint64_t cands_per_level = 8ull * x->n_subsets + 3;
    size_t per_level =
        (size_t)(cands_per_level * sizeof(tlp_cand) + slots_per_level * sizeof(tlp_slot) +
                 2 * cands_per_level * sizeof(uint32_t));
    char *mem = tl__os_malloc(per_level * (x->n_order ? x->n_order : 1));
    if (!mem) return NULL;
    char *at = mem;
    for (uint32_t l = 0; l < x->n_order; l++) {
        tlp_level *lv = &x->lv[l];
        lv->cands = (tlp_cand *)at;
        at += cands_per_level * sizeof(tlp_cand);
        lv->slots = (tlp_slot *)at;
        at += slots_per_level * sizeof(tlp_slot);
        lv->idx = (uint32_t *)at;
        at += cands_per_level * sizeof(uint32_t);
        lv->tmp = (uint32_t *)at;
        at += cands_per_level * sizeof(uint32_t);
        lv->n = lv->n_slots = 0;
    }
    return mem;
}

tl_status tlp_search(tlp_ctx *x, bool *found) {
    *found = false;
    x->have_best = false;
    x->nodes = 0;
    memset(x->load, 0, sizeof x->load);
    memset(&x->cur_key, 0, sizeof x->cur_key);
    x->used_mask = 0;
    make_subsets(x);
    void *mem = workspace(x);
    if (!mem) return tl__err(TL_ERR_NOMEM, "plan: out of memory for the search");
    dfs(x, 0);
    free(mem);
    memset(x->lv, 0, sizeof x->lv);
    memset(x->cur, 0, sizeof x->cur);
    *found = x->have_best;
    return TL_OK;
}

static bool weight_before(const void *arg, uint32_t a, uint32_t b) {
    const tlp_comp *comp = arg;
    return comp[a].weight > comp[b].weight;
}

tl_status tlp_setup(const tlp_inputs *in, const char *max_vram, tlp_ctx *x) {
    memset(x, 0, sizeof *x);
    uint64_t budgets[TLP_MAXD];
    tl_status st = tl_plan_parse_max_vram(max_vram, in->devs, in->n_devs, in->headroom, budgets);
    if (st) return st;
    x->n_gpu = (uint32_t)(in->n_devs - 1);
    for (uint32_t i = 0; i < x->n_gpu; i++) {
        x->full[i] = budgets[i];
        x->budget[i] = budgets[i] > in->fixed[i] ? budgets[i] - in->fixed[i] : 0;
    }
    memcpy(x->link_bw, in->link_bw, sizeof x->link_bw);
    memcpy(x->link_lat, in->link_lat, sizeof x->link_lat);
    x->n_phases = in->phases.n;
    x->exhaustive = in->exhaustive;
    uint32_t named = 0;
    for (uint32_t p = 0; p < in->phases.n; p++)
        named |= in->phases.mask[p];
    for (uint32_t c = 0; c < TL_COMP_COUNT; c++) {
        const tl_plan_part *pp = &in->s->comp[c];
        tlp_comp *ci = &x->comp[c];
        ci->present = pp->bytes > 0;
        if (!ci->present) continue;
        ci->bytes = pp->bytes;
        ci->other = pp->other_bytes;
        ci->matrix = pp->matrix_bytes;
        ci->layers = pp->layers;
        ci->n_layers = pp->n_layers;
        ci->reserve = in->reserve[c];
        ci->max_layer = 0;
        for (size_t i = 0; i < pp->n_layers; i++)
            if (pp->layers[i] > ci->max_layer) ci->max_layer = pp->layers[i];
        ci->max_unit = ci->max_layer > ci->other ? ci->max_layer : ci->other;
        ci->active = 0;
        for (uint32_t p = 0; p < in->phases.n; p++)
            if (in->phases.mask[p] & (1u << c)) ci->active |= 1u << p;
        if (!(named & (1u << c))) ci->active = (1u << in->phases.n) - 1;
        ci->all_phases = ci->active == (1u << in->phases.n) - 1;
        ci->passes = (c == TL_COMP_DIFFUSION || c == TL_COMP_CONTROLNET) ? in->steps
                     : c == TL_COMP_DIFFUSION2                          ? in->steps2
                                                                        : 1;
        ci->weight = tlp_priority[c];
        ci->place = in->spec.comp[c].n_devices ? in->spec.comp[c] : in->spec.dflt;
        ci->offload = in->offload || (in->offload_mask & (1u << c));
        ci->phase_only = in->phase_mask & (1u << c);
        ci->no_layer = in->row_mask & (1u << c);
        ci->no_row = in->layer_mask & (1u << c);
    }
    /* order: priority desc, then component id */
    uint32_t tmp[TL_COMP_COUNT];
    x->n_order = 0;
    for (uint32_t c = 0; c < TL_COMP_COUNT; c++)
        if (x->comp[c].present) x->order[x->n_order++] = c;
    tlp_sort(x->order, tmp, x->n_order, weight_before, x->comp);
    x->rem[x->n_order] = 0;
    for (uint32_t i = x->n_order; i-- > 0;) {
        const tlp_comp *ci = &x->comp[x->order[i]];
        x->rem[i] =
            x->rem[i + 1] + (x->n_gpu && !tlp_place_host(&ci->place) ? ci->bytes * ci->weight : 0);
    }
    return TL_OK;
}

void tlp_fill_plan(const tlp_ctx *x, const tlp_inputs *in, tl_plan *p) {
    p->n_devices = in->n_devs;
    memcpy(p->devices, in->devs, sizeof p->devices);
    for (uint32_t i = 0; i < x->n_gpu; i++) /* the whole budget: the overrides' bytes are in it */
        p->budget[i] = x->full[i];
    p->budget[in->n_devs - 1] = in->devs[in->n_devs - 1].free;
    p->phases = in->phases;
    p->moved_per_run = p->score = 0;
    p->host_bytes = in->fixed[in->n_devs - 1];
    memset(p->peak, 0, sizeof p->peak);
    for (uint32_t i = 0; i < x->n_gpu; i++)
        for (uint32_t ph = 0; ph < x->n_phases; ph++) p->peak[i][ph] = in->fixed[i];
    memset(p->link, 0, sizeof p->link);
    for (size_t i = 0; i < in->n_devs; i++) {
        p->link[i].bandwidth = in->link_bw[i];
        p->link[i].latency = in->link_lat[i];
    }
    for (uint32_t c = 0; c < TL_COMP_COUNT; c++) {
        tl_plan_decision *d = &p->dec[c];
        memset(d, 0, sizeof *d);
        const tlp_comp *ci = &x->comp[c];
        if (!ci->present) continue;
        const tlp_cand *k = &x->best[c].k;
        const tlp_slot *s = x->best[c].s;
        d->present = true;
        d->mode = k->mode;
        d->phase_resident = k->phase;
        d->bytes = ci->bytes;
        d->reserve = ci->reserve;
        d->n_devices = k->n;
        for (uint32_t i = 0; i < k->n; i++) {
            d->devices[i] = s[i].dev;
            d->device_bytes[i] = s[i].w;
            d->layer_begin[i] = s[i].lb;
            d->layer_end[i] = s[i].le;
            d->shares[i] = ci->bytes ? round((double)s[i].w / (double)ci->bytes * 1e6) / 1e6 : 0;
            for (uint32_t ph = 0; ph < x->n_phases; ph++)
                p->peak[s[i].dev][ph] += tlp_phase_load(ci, k, &s[i], ph);
        }
        d->n_requested = ci->place.n_devices;
        memcpy(d->requested, ci->place.devices, sizeof d->requested[0] * ci->place.n_devices);
        for (uint32_t i = 0; i < k->n; i++) { /* what crosses each device's link */
            uint32_t dv = s[i].dev;
            if (!(in->link_bw[dv] > 0)) continue;
            uint64_t streamed = k->mode == TL_PLAN_MODE_STREAM && i == k->n - 1 ? k->host : 0;
            uint64_t b;
            p->link[dv].seconds +=
                tlp_slot_link(in->link_bw, in->link_lat, ci, k, &s[i], streamed, &b);
            p->link[dv].per_run += b;
            if (!k->phase) p->link[dv].push_once += s[i].w;
            p->link[dv].passes += ci->passes;
        }
        d->host_bytes = k->host;
        d->moved_per_run = k->moved;
        p->moved_per_run += k->moved;
        p->host_bytes += k->host;
        p->score += k->score;
    }
}
