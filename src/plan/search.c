/*
 * search.c — auto-fit: the exact, deterministic search for where every
 * component goes, and the infeasibility report (what does not fit, by how
 * much, and the smallest change that would fit).
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
 */
#include "plan/plan.h"

#include "core/error.h"
#include "core/options.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAXD TL_PLAN_MAX_DEVICES
#define MAXP TL_PLAN_MAX_PHASES
#define MAX_EXACT_GPUS 6      /* beyond this, splits use the k largest GPUs only */
#define NODE_LIMIT 4000000ull /* safety net: the search stops here with the best so far */

typedef struct cand {
    tl_plan_mode mode;
    bool phase; /* phase residency */
    uint32_t n; /* GPUs */
    uint32_t dev[MAXD];
    uint64_t w[MAXD];            /* weights on each */
    uint64_t extra[MAXD];        /* reserve + stream buffers, in the component's phases */
    uint32_t lb[MAXD], le[MAXD]; /* layers [lb, le) resident on each device */
    uint64_t resident, host, moved, score;
    uint64_t compute; /* weight x bytes when computed on a GPU (any mode but cpu) */
} cand;

typedef struct comp_info {
    bool present;
    uint64_t bytes, other, matrix, reserve, max_layer, max_unit;
    const uint64_t *layers;
    size_t n_layers;
    uint32_t active; /* phase mask */
    bool all_phases;
    uint64_t passes, weight;
    tl_backend_place place; /* n_devices 0: auto */
} comp_info;

typedef struct key {
    uint64_t score, compute, moved;
    uint32_t ndev, pairs;
} key;

typedef struct ctx {
    uint32_t n_gpu, n_phases;
    uint64_t budget[MAXD];
    comp_info comp[TL_COMP_COUNT];
    int order[TL_COMP_COUNT];
    int n_order;
    bool offload;
    bool exhaustive; /* tests: no pruning, no symmetry breaking, no node limit */
    uint64_t rem[TL_COMP_COUNT + 1];
    uint32_t subsets[1u << MAX_EXACT_GPUS];
    uint32_t n_subsets;
    /* state */
    uint64_t load[MAXD][MAXP];
    cand cur[TL_COMP_COUNT];
    uint32_t used_mask;
    key cur_key;
    bool have_best;
    key best_key;
    cand best[TL_COMP_COUNT];
    uint64_t nodes;
} ctx;

static bool better(const key *a, const key *b) {
    if (a->score != b->score) return a->score > b->score;
    if (a->compute != b->compute) return a->compute > b->compute;
    if (a->moved != b->moved) return a->moved < b->moved;
    if (a->ndev != b->ndev) return a->ndev < b->ndev;
    return a->pairs < b->pairs;
}

static uint32_t popcount32(uint32_t x) {
    return (uint32_t)__builtin_popcount(x);
}

/* Room for weights on device d given extra e in active phases (persistent or phase). */
static bool room(const ctx *x, uint32_t d, uint32_t active, bool phase, uint64_t e, uint64_t *cap) {
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

static void finish(const comp_info *ci, cand *k) {
    k->resident = 0;
    for (uint32_t i = 0; i < k->n; i++)
        k->resident += k->w[i];
    k->score = k->resident * ci->weight;
    k->compute = k->n ? ci->bytes * ci->weight : 0;
}

/* Split contiguous layers over devs with caps; other bytes on the first. */
static bool layer_split(const comp_info *ci, const uint32_t *devs, uint32_t n, const uint64_t *cap,
                        uint64_t *w, uint32_t *lb, uint32_t *le) {
    if (ci->n_layers < n) return false;
    if (cap[0] < ci->other) return false;
    uint64_t c[MAXD];
    unsigned __int128 sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        c[i] = i == 0 ? cap[0] - ci->other : cap[i];
        sum += c[i];
    }
    uint64_t total = ci->bytes - ci->other;
    if (sum < total || sum == 0) return false;
    (void)devs;
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
        uint64_t s = 0;
        for (size_t j = start; j < end; j++)
            s += ci->layers[j];
        if (s > c[i] || end <= start) ok = false;
        w[i] = s + (i == 0 ? ci->other : 0);
        lb[i] = (uint32_t)start;
        le[i] = (uint32_t)end;
        prefix += s;
        start = end;
    }
    if (ok) return true;
    /* repair: greedy fill in order (optimal for feasibility of contiguous parts) */
    start = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t max_end = ci->n_layers - (n - 1 - i);
        uint64_t s = 0;
        size_t end = start;
        while (end < max_end && s + ci->layers[end] <= c[i])
            s += ci->layers[end++];
        if (i == n - 1 && end != ci->n_layers) return false;
        if (end == start) return false;
        w[i] = s + (i == 0 ? ci->other : 0);
        lb[i] = (uint32_t)start;
        le[i] = (uint32_t)end;
        start = end;
    }
    return true;
}

/* Clear a candidate's scalars (arrays are valid up to n only). */
static void cand_reset(cand *k) {
    k->mode = TL_PLAN_MODE_CPU;
    k->phase = false;
    k->n = 0;
    k->resident = k->host = k->moved = k->score = k->compute = 0;
}

/* Candidate order: most resident, most computed on a GPU, least moved, fewest GPUs. */
static bool cand_before(const cand *a, const cand *b) {
    if (a->score != b->score) return a->score > b->score;
    if (a->compute != b->compute) return a->compute > b->compute;
    if (a->moved != b->moved) return a->moved < b->moved;
    return a->n < b->n;
}

static void subset_devs(uint32_t mask, uint32_t *devs, uint32_t *n) {
    *n = 0;
    for (uint32_t d = 0; d < MAXD; d++)
        if (mask & (1u << d)) devs[(*n)++] = d;
}

static void gen_full(const ctx *x, const comp_info *ci, const uint32_t *devs, uint32_t n,
                     bool phase, cand *list, uint32_t *cnt) {
    cand *k = &list[*cnt];
    cand_reset(k);
    uint64_t cap[MAXD] = {0};
    for (uint32_t i = 0; i < n; i++)
        if (!room(x, devs[i], ci->active, phase, ci->reserve, &cap[i])) return;
    k->n = n;
    k->phase = phase;
    for (uint32_t i = 0; i < n; i++) {
        k->dev[i] = devs[i];
        k->extra[i] = ci->reserve;
    }
    if (n == 1) {
        if (cap[0] < ci->bytes) return;
        k->mode = TL_PLAN_MODE_GPU;
        k->w[0] = ci->bytes;
        k->lb[0] = 0;
        k->le[0] = (uint32_t)ci->n_layers;
    } else {
        k->mode = TL_PLAN_MODE_LAYER_SPLIT;
        if (!layer_split(ci, devs, n, cap, k->w, k->lb, k->le)) return;
    }
    k->moved = phase ? ci->bytes : 0;
    finish(ci, k);
    (*cnt)++;
}

static void gen_row(const ctx *x, const comp_info *ci, const uint32_t *devs, uint32_t n, bool phase,
                    cand *list, uint32_t *cnt) {
    if (n < 2 || ci->matrix == 0) return;
    uint64_t cap[MAXD] = {0};
    for (uint32_t i = 0; i < n; i++)
        if (!room(x, devs[i], ci->active, phase, ci->reserve, &cap[i])) return;
    uint32_t mi = 0;
    for (uint32_t i = 1; i < n; i++)
        if (cap[i] > cap[mi]) mi = i;
    uint64_t rest = ci->bytes - ci->matrix;
    if (cap[mi] < rest) return;
    uint64_t c[MAXD];
    unsigned __int128 sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        c[i] = i == mi ? cap[i] - rest : cap[i];
        sum += c[i];
    }
    if (sum < ci->matrix) return;
    cand *k = &list[*cnt];
    cand_reset(k);
    k->mode = TL_PLAN_MODE_ROW_SPLIT;
    k->phase = phase;
    k->n = n;
    /* mi device first, then the others in index order */
    uint32_t order[MAXD], m = 0;
    order[m++] = mi;
    for (uint32_t i = 0; i < n; i++)
        if (i != mi) order[m++] = i;
    uint64_t given = 0;
    uint64_t part[MAXD];
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
    for (uint32_t i = 0; i < n; i++) {
        uint32_t j = order[i];
        k->dev[i] = devs[j];
        k->w[i] = part[j] + (j == mi ? rest : 0);
        k->lb[i] = 0;
        k->le[i] = (uint32_t)ci->n_layers; /* every layer's matrices, split by rows */
        k->extra[i] = ci->reserve;
    }
    k->moved = phase ? ci->bytes : 0;
    finish(ci, k);
    (*cnt)++;
}

/*
 * Streaming: units are [other, layer 0, layer 1, ...]; a prefix stays resident
 * on devs (filled in order), the rest lives in RAM and is streamed to the
 * last device, which holds two buffers of the largest unit. pure: nothing
 * resident (one device).
 */
static void gen_stream(const ctx *x, const comp_info *ci, const uint32_t *devs, uint32_t n,
                       bool phase, bool pure, cand *list, uint32_t *cnt) {
    if (ci->n_layers == 0) return;
    cand *k = &list[*cnt];
    cand_reset(k);
    k->mode = TL_PLAN_MODE_STREAM;
    k->phase = phase;
    k->n = n;
    uint64_t streamed;
    if (pure) {
        if (n != 1) return;
        uint64_t buf = 2 * ci->max_unit, cap = 0;
        if (!room(x, devs[0], ci->active, phase, ci->reserve + buf, &cap)) return;
        k->dev[0] = devs[0];
        k->extra[0] = ci->reserve + buf;
        k->w[0] = 0;
        k->lb[0] = k->le[0] = 0;
        streamed = ci->bytes;
    } else {
        uint64_t buf = 2 * ci->max_layer;
        uint64_t cap[MAXD] = {0};
        for (uint32_t i = 0; i < n; i++) {
            uint64_t e = ci->reserve + (i == n - 1 ? buf : 0);
            if (!room(x, devs[i], ci->active, phase, e, &cap[i])) return;
            k->dev[i] = devs[i];
            k->extra[i] = e;
        }
        /* unit u: 0 = other, 1.. = layers */
        size_t n_units = ci->n_layers + 1, u = 0;
        if (ci->other > cap[0]) return;
        for (uint32_t i = 0; i < n; i++) {
            uint64_t s = 0;
            size_t u0 = u;
            while (u < n_units) {
                uint64_t b = u == 0 ? ci->other : ci->layers[u - 1];
                if (s + b > cap[i]) break;
                s += b;
                u++;
            }
            if (s == 0 || u == u0) return; /* an empty device: a smaller subset covers it */
            k->w[i] = s;
            k->lb[i] = (uint32_t)(u0 ? u0 - 1 : 0);
            k->le[i] = (uint32_t)(u ? u - 1 : 0);
        }
        if (u >= n_units) return; /* everything fits: a full placement is better */
        streamed = 0;
        for (size_t j = u; j < n_units; j++)
            streamed += ci->layers[j - 1];
    }
    k->host = streamed;
    finish(ci, k);
    k->moved = streamed * ci->passes + (phase ? k->resident : 0);
    (*cnt)++;
}

static uint32_t gen(const ctx *x, int c, cand *list) {
    const comp_info *ci = &x->comp[c];
    uint32_t cnt = 0;
    bool phases[2] = {false, true};
    int n_var = ci->all_phases ? 1 : 2;
    const tl_backend_place *pl = &ci->place;
    bool forced_cpu = pl->n_devices == 1 && pl->devices[0] == TL_PLAN_HOST;
    if (pl->n_devices && !forced_cpu) {
        uint32_t devs[MAXD], n = pl->n_devices;
        for (uint32_t i = 0; i < n; i++)
            devs[i] = pl->devices[i];
        for (int v = 0; v < n_var; v++) {
            if (x->offload)
                gen_stream(x, ci, devs, 1, phases[v], true, list, &cnt);
            else
                gen_full(x, ci, devs, n, phases[v], list, &cnt);
        }
        return cnt;
    }
    if (!forced_cpu) {
        /* symmetry: a GPU identical to a lower one (same budget, same load in
           every phase) is only used together with it; the mirrored choices
           give the same keys and come later, so they could never win */
        uint32_t needs[MAXD] = {0};
        for (uint32_t d = 1; d < x->n_gpu; d++)
            for (uint32_t e = d; e-- > 0;)
                if (x->budget[e] == x->budget[d] &&
                    !memcmp(x->load[e], x->load[d], sizeof x->load[d][0] * x->n_phases)) {
                    needs[d] = 1u << e;
                    break;
                }
        for (uint32_t s = 0; s < x->n_subsets; s++) {
            uint32_t devs[MAXD], n, mask = x->subsets[s];
            bool mirrored = false;
            for (uint32_t d = 0; d < x->n_gpu; d++)
                if ((mask & (1u << d)) && needs[d] && !(mask & needs[d])) mirrored = true;
            if (mirrored && !x->exhaustive) continue;
            subset_devs(mask, devs, &n);
            for (int v = 0; v < n_var; v++) {
                if (x->offload) {
                    gen_stream(x, ci, devs, n, phases[v], true, list, &cnt);
                    continue;
                }
                gen_full(x, ci, devs, n, phases[v], list, &cnt);
                gen_row(x, ci, devs, n, phases[v], list, &cnt);
                gen_stream(x, ci, devs, n, phases[v], false, list, &cnt);
                gen_stream(x, ci, devs, n, phases[v], true, list, &cnt);
            }
        }
    }
    cand *k = &list[cnt++];
    cand_reset(k);
    k->host = ci->bytes;
    return cnt;
}

static void apply(ctx *x, int c, const cand *k, int sign) {
    const comp_info *ci = &x->comp[c];
    for (uint32_t i = 0; i < k->n; i++) {
        uint32_t d = k->dev[i];
        for (uint32_t p = 0; p < x->n_phases; p++) {
            bool act = ci->active & (1u << p);
            uint64_t add = ((!k->phase || act) ? k->w[i] : 0) + (act ? k->extra[i] : 0);
            if (sign > 0)
                x->load[d][p] += add;
            else
                x->load[d][p] -= add;
        }
    }
}

static void dfs(ctx *x, int level) {
    if (++x->nodes > NODE_LIMIT && x->have_best && !x->exhaustive) return;
    if (level == x->n_order) {
        if (!x->have_best || better(&x->cur_key, &x->best_key)) {
            x->have_best = true;
            x->best_key = x->cur_key;
            memcpy(x->best, x->cur, sizeof x->best);
        }
        return;
    }
    if (x->have_best && !x->exhaustive) {
        key bound = x->cur_key;
        bound.score += x->rem[level];
        bound.compute += x->rem[level];
        if (!better(&bound, &x->best_key)) return;
    }
    int c = x->order[level];
    uint32_t cap = x->n_subsets * 8 + 2;
    cand *list = malloc(sizeof(cand) * cap + sizeof(uint16_t) * cap);
    if (!list) return;
    uint16_t *idx = (uint16_t *)(list + cap);
    uint32_t n = gen(x, c, list);
    /* stable insertion sort of indices: ties keep generation order */
    for (uint32_t i = 0; i < n; i++) {
        uint32_t j = i;
        while (j > 0 && cand_before(&list[i], &list[idx[j - 1]])) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = (uint16_t)i;
    }
    for (uint32_t i = 0; i < n; i++) {
        const cand *k = &list[idx[i]];
        key saved = x->cur_key;
        uint32_t saved_mask = x->used_mask;
        uint32_t m = 0;
        for (uint32_t j = 0; j < k->n; j++)
            m |= 1u << k->dev[j];
        x->cur_key.score += k->score;
        x->cur_key.compute += k->compute;
        x->cur_key.moved += k->moved;
        x->cur_key.pairs += k->n;
        x->used_mask |= m;
        x->cur_key.ndev = popcount32(x->used_mask);
        key bound = x->cur_key;
        bound.score += x->rem[level + 1];
        bound.compute += x->rem[level + 1];
        if (!x->have_best || x->exhaustive || better(&bound, &x->best_key)) {
            apply(x, c, k, +1);
            x->cur[c] = *k;
            dfs(x, level + 1);
            apply(x, c, k, -1);
        }
        x->cur_key = saved;
        x->used_mask = saved_mask;
    }
    free(list);
}

static bool run_search(ctx *x) {
    x->have_best = false;
    x->nodes = 0;
    memset(x->load, 0, sizeof x->load);
    memset(&x->cur_key, 0, sizeof x->cur_key);
    x->used_mask = 0;
    /* GPU subsets: all (by size, then mask) up to MAX_EXACT_GPUS, else singles + the k largest */
    x->n_subsets = 0;
    if (x->n_gpu <= MAX_EXACT_GPUS) {
        for (uint32_t size = 1; size <= x->n_gpu; size++)
            for (uint32_t m = 1; m < (1u << x->n_gpu); m++)
                if (popcount32(m) == size) x->subsets[x->n_subsets++] = m;
    } else {
        uint32_t idx[MAXD];
        for (uint32_t i = 0; i < x->n_gpu; i++)
            idx[i] = i;
        for (uint32_t i = 1; i < x->n_gpu; i++)
            for (uint32_t j = i; j > 0 && x->budget[idx[j]] > x->budget[idx[j - 1]]; j--) {
                uint32_t t = idx[j];
                idx[j] = idx[j - 1];
                idx[j - 1] = t;
            }
        for (uint32_t i = 0; i < x->n_gpu; i++)
            x->subsets[x->n_subsets++] = 1u << i;
        uint32_t m = 1u << idx[0];
        for (uint32_t k = 1; k < x->n_gpu; k++) {
            m |= 1u << idx[k];
            x->subsets[x->n_subsets++] = m;
        }
    }
    dfs(x, 0);
    return x->have_best;
}

/* --- building the context from the public inputs --- */

typedef struct inputs {
    const tl_plan_summary *s;
    tl_plan_device devs[MAXD];
    size_t n_devs; /* GPUs first, host last */
    uint64_t headroom;
    const char *max_vram;
    uint64_t reserve[TL_COMP_COUNT];
    tl_plan_phases phases;
    tl_backend_spec spec;
    bool offload;
    bool exhaustive;
    uint32_t steps;
} inputs;

static tl_status setup(const inputs *in, const char *max_vram, ctx *x) {
    memset(x, 0, sizeof *x);
    uint64_t budgets[MAXD];
    tl_status st = tl_plan_parse_max_vram(max_vram, in->devs, in->n_devs, in->headroom, budgets);
    if (st) return st;
    x->n_gpu = (uint32_t)(in->n_devs - 1);
    for (uint32_t i = 0; i < x->n_gpu; i++)
        x->budget[i] = budgets[i];
    x->n_phases = in->phases.n;
    x->offload = in->offload;
    x->exhaustive = in->exhaustive;
    uint32_t named = 0;
    for (uint32_t p = 0; p < in->phases.n; p++)
        named |= in->phases.mask[p];
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        const tl_plan_part *pp = &in->s->comp[c];
        comp_info *ci = &x->comp[c];
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
        ci->passes = (c == TL_COMP_DIFFUSION || c == TL_COMP_CONTROLNET) ? in->steps : 1;
        ci->weight = tlp_priority[c];
        ci->place = in->spec.comp[c].n_devices ? in->spec.comp[c] : in->spec.dflt;
    }
    /* order: priority desc, then component id */
    x->n_order = 0;
    for (int c = 0; c < TL_COMP_COUNT; c++)
        if (x->comp[c].present) x->order[x->n_order++] = c;
    for (int i = 1; i < x->n_order; i++)
        for (int j = i; j > 0 && x->comp[x->order[j]].weight > x->comp[x->order[j - 1]].weight;
             j--) {
            int t = x->order[j];
            x->order[j] = x->order[j - 1];
            x->order[j - 1] = t;
        }
    x->rem[x->n_order] = 0;
    for (int i = x->n_order - 1; i >= 0; i--) {
        const comp_info *ci = &x->comp[x->order[i]];
        x->rem[i] = x->rem[i + 1] +
                    (x->n_gpu && !(ci->place.n_devices == 1 && ci->place.devices[0] == TL_PLAN_HOST)
                         ? ci->bytes * ci->weight
                         : 0);
    }
    return TL_OK;
}

/* Fill the plan from the best candidates of x. */
static void fill_plan(const ctx *x, const inputs *in, tl_plan *p) {
    p->n_devices = in->n_devs;
    memcpy(p->devices, in->devs, sizeof p->devices);
    for (uint32_t i = 0; i < x->n_gpu; i++)
        p->budget[i] = x->budget[i];
    p->budget[in->n_devs - 1] = in->devs[in->n_devs - 1].free;
    p->phases = in->phases;
    p->moved_per_run = p->host_bytes = p->score = 0;
    memset(p->peak, 0, sizeof p->peak);
    for (int c = 0; c < TL_COMP_COUNT; c++) {
        tl_plan_decision *d = &p->dec[c];
        memset(d, 0, sizeof *d);
        const comp_info *ci = &x->comp[c];
        if (!ci->present) continue;
        const cand *k = &x->best[c];
        d->present = true;
        d->mode = k->mode;
        d->phase_resident = k->phase;
        d->bytes = ci->bytes;
        d->reserve = ci->reserve;
        d->n_devices = k->n;
        for (uint32_t i = 0; i < k->n; i++) {
            d->devices[i] = k->dev[i];
            d->device_bytes[i] = k->w[i];
            d->layer_begin[i] = k->lb[i];
            d->layer_end[i] = k->le[i];
            d->shares[i] = ci->bytes ? round((double)k->w[i] / (double)ci->bytes * 1e6) / 1e6 : 0;
            for (uint32_t ph = 0; ph < x->n_phases; ph++) {
                bool act = ci->active & (1u << ph);
                p->peak[k->dev[i]][ph] +=
                    ((!k->phase || act) ? k->w[i] : 0) + (act ? k->extra[i] : 0);
            }
        }
        d->host_bytes = k->host;
        d->moved_per_run = k->moved;
        p->moved_per_run += k->moved;
        p->host_bytes += k->host;
        p->score += k->score;
    }
}

static uint64_t worst_short(const tl_plan *p, const ctx *x, char *msg, size_t n) {
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

/* Explain an infeasible plan: who does not fit, by how much, and the smallest change. */
static void explain(const inputs *in, tl_plan *p) {
    ctx *x = malloc(sizeof *x);
    ctx *y = malloc(sizeof *y);
    char what[512] = "", fix[256] = "";
    if (!x || !y) goto out;
    if (setup(in, in->max_vram, x)) goto out;
    /* 1. how much is missing: the least extra budget on every GPU that fits */
    uint64_t lo = 0, hi = 64 * TLP_GIB;
    uint64_t base[MAXD];
    memcpy(base, x->budget, sizeof base);
    memcpy(y, x, sizeof *y);
    for (uint32_t d = 0; d < y->n_gpu; d++)
        y->budget[d] = base[d] + hi;
    if (run_search(y)) {
        while (hi - lo > 16 * TLP_MIB) {
            uint64_t mid = lo + (hi - lo) / 2;
            for (uint32_t d = 0; d < y->n_gpu; d++)
                y->budget[d] = base[d] + mid;
            if (run_search(y))
                hi = mid;
            else
                lo = mid;
        }
        for (uint32_t d = 0; d < y->n_gpu; d++)
            y->budget[d] = base[d] + hi;
        run_search(y);
        tl_plan tmp;
        memset(&tmp, 0, sizeof tmp);
        fill_plan(y, in, &tmp);
        worst_short(&tmp, x, what, sizeof what);
        /* placements that overflow, by component */
        char who[160] = "";
        size_t at = 0;
        for (int c = 0; c < TL_COMP_COUNT; c++) {
            const tl_backend_place *wp = &x->comp[c].place;
            if (!x->comp[c].present || !wp->n_devices ||
                (wp->n_devices == 1 && wp->devices[0] == TL_PLAN_HOST))
                continue;
            int k = snprintf(who + at, sizeof who - at, "%s%s", at ? ", " : "",
                             tl_component_name((tl_component)c));
            if (k < 0 || (size_t)k >= sizeof who - at) break;
            at += (size_t)k;
        }
        if (at) {
            char t[512];
            snprintf(t, sizeof t, "the placement of %.160s does not fit: %.300s", who, what);
            memcpy(what, t, sizeof what);
        }
    } else {
        snprintf(what, sizeof what,
                 "the forced placements cannot fit even with 64 GiB more on every GPU");
    }
    /* 2. the smallest change: a --max-vram value, one component to cpu, offloading */
    if (in->max_vram && *in->max_vram) {
        if (!setup(in, NULL, y) && run_search(y)) {
            /* least uniform cap X (0.1 GiB steps) with budgets min(free - headroom, X) */
            uint64_t step = TLP_GIB / 10, top = 0;
            uint64_t full[MAXD];
            memcpy(full, y->budget, sizeof full);
            for (uint32_t d = 0; d < y->n_gpu; d++)
                if (full[d] > top) top = full[d];
            uint64_t l = 0, h = (top + step - 1) / step;
            while (h - l > 1) {
                uint64_t mid = (l + h) / 2;
                for (uint32_t d = 0; d < y->n_gpu; d++)
                    y->budget[d] = full[d] < mid * step ? full[d] : mid * step;
                if (run_search(y))
                    h = mid;
                else
                    l = mid;
            }
            snprintf(fix, sizeof fix, "a max_vram cap of %.1fG would fit",
                     (double)(h * step) / (double)TLP_GIB);
        }
    }
    static const int by_priority_asc[] = {TL_COMP_OTHER, TL_COMP_VAE, TL_COMP_COND,
                                          TL_COMP_CONTROLNET, TL_COMP_DIFFUSION};
    /* one forced component at a time, lowest priority first: what auto-fit would do with it */
    for (int i = 0; i < TL_COMP_COUNT && !fix[0]; i++) {
        int c = by_priority_asc[i];
        if (!x->comp[c].present) continue;
        const tl_backend_place *pl = &x->comp[c].place;
        if (!pl->n_devices || (pl->n_devices == 1 && pl->devices[0] == TL_PLAN_HOST)) continue;
        memcpy(y, x, sizeof *y);
        y->comp[c].place.n_devices = 0;
        if (!run_search(y)) continue;
        const cand *k = &y->best[c];
        if (k->mode == TL_PLAN_MODE_CPU) {
            snprintf(fix, sizeof fix, "%s=cpu would fit", tl_component_name((tl_component)c));
            continue;
        }
        char devs[128];
        size_t at = 0;
        devs[0] = 0;
        for (uint32_t j = 0; j < k->n && at < sizeof devs; j++) {
            int w = snprintf(devs + at, sizeof devs - at, "%s%s", j ? "&" : "",
                             in->devs[k->dev[j]].name);
            if (w < 0) break;
            at += (size_t)w;
        }
        snprintf(fix, sizeof fix, "leaving %s to auto-fit would fit (%s on %s%s)",
                 tl_component_name((tl_component)c), tl_plan_mode_name(k->mode), devs,
                 k->phase ? ", loaded per phase" : "");
    }
    if (!fix[0] && !x->offload) {
        memcpy(y, x, sizeof *y);
        y->offload = true;
        if (run_search(y)) snprintf(fix, sizeof fix, "offload_to_cpu would fit");
    }
out:
    snprintf(p->error, sizeof p->error, "plan does not fit: %s%s%s",
             what[0] ? what : "budgets too small", fix[0] ? "; " : "", fix);
    free(x);
    free(y);
}

tl_status tl_plan_create(const tl_plan_summary *s, const tl_plan_device *devs, size_t n_devs,
                         const tl_plan_options *opts, tl_plan **out) {
    return tlp_create(s, devs, n_devs, opts, false, out);
}

tl_status tlp_create(const tl_plan_summary *s, const tl_plan_device *devs, size_t n_devs,
                     const tl_plan_options *opts, bool exhaustive, tl_plan **out) {
    if (!s || !out || (!devs && n_devs)) return tl_err(TL_ERR_INVALID_ARG, "plan: NULL argument");
    *out = NULL;
    tl_plan_options own;
    tl_plan_options_init(&own);
    tl_status take = tl_options_take(&own, sizeof own, opts, "tl_plan_options");
    if (take != TL_OK) return take;
    opts = &own;
    inputs *in = calloc(1, sizeof *in);
    if (!in) return tl_err(TL_ERR_NOMEM, "plan: out of memory");
    tl_status st = TL_OK;
    /* devices: GPUs in input order, then the host */
    int host = -1;
    for (size_t i = 0; i < n_devs; i++) {
        if (!devs[i].is_gpu) {
            if (host >= 0) {
                st = tl_err(TL_ERR_INVALID_ARG, "plan: more than one host device ('%s', '%s')",
                            devs[host].name, devs[i].name);
                goto fail;
            }
            host = (int)i;
            continue;
        }
        if (in->n_devs >= MAXD - 1) {
            st = tl_err(TL_ERR_INVALID_ARG, "plan: more than %d GPUs", MAXD - 1);
            goto fail;
        }
        for (size_t j = 0; j < in->n_devs; j++)
            if (!strcasecmp(in->devs[j].name, devs[i].name)) {
                st = tl_err(TL_ERR_INVALID_ARG, "plan: device '%s' given twice", devs[i].name);
                goto fail;
            }
        in->devs[in->n_devs] = devs[i];
        in->devs[in->n_devs].name[sizeof devs[i].name - 1] = 0;
        in->n_devs++;
    }
    if (host >= 0) {
        in->devs[in->n_devs] = devs[host];
    } else {
        memset(&in->devs[in->n_devs], 0, sizeof in->devs[0]);
        snprintf(in->devs[in->n_devs].name, sizeof in->devs[0].name, "cpu");
    }
    in->devs[in->n_devs].name[sizeof in->devs[0].name - 1] = 0;
    in->n_devs++;
    in->s = s;
    in->headroom = opts->headroom;
    in->max_vram = opts->max_vram;
    in->offload = opts->offload_to_cpu;
    in->exhaustive = exhaustive;
    in->steps = opts->steps ? opts->steps : 20;
    tl_plan_default_reserves(in->reserve);
    if (opts->reserve && (st = tl_plan_parse_reserve(opts->reserve, in->reserve))) goto fail;
    if (opts->phases) {
        if ((st = tl_plan_parse_phases(opts->phases, &in->phases))) goto fail;
    } else {
        tl_plan_default_phases(&in->phases);
    }
    /* backend spec plus the older flags */
    {
        char spec[1024];
        size_t at = 0;
        spec[0] = 0;
        if (opts->backend) {
            if (strlen(opts->backend) >= 900) {
                st = tl_err(TL_ERR_INVALID_ARG, "backend spec: spec too long");
                goto fail;
            }
            at += (size_t)snprintf(spec, sizeof spec, "%s", opts->backend);
            if (!*opts->backend) {
                st = tl_err(TL_ERR_INVALID_ARG, "backend spec: empty spec");
                goto fail;
            }
        }
        const char *flags[3] = {opts->clip_on_cpu ? "cond=cpu" : NULL,
                                opts->vae_on_cpu ? "vae=cpu" : NULL,
                                opts->controlnet_on_cpu ? "controlnet=cpu" : NULL};
        for (int i = 0; i < 3; i++)
            if (flags[i])
                at +=
                    (size_t)snprintf(spec + at, sizeof spec - at, "%s%s", at ? "," : "", flags[i]);
        if (at && (st = tl_plan_parse_backend(spec, in->devs, in->n_devs, &in->spec))) {
            if (opts->clip_on_cpu || opts->vae_on_cpu || opts->controlnet_on_cpu)
                tl_err_prefix(
                    st,
                    "with clip_on_cpu / vae_on_cpu / controlnet_on_cpu as cond=cpu / vae=cpu / "
                    "controlnet=cpu");
            goto fail;
        }
    }
    tl_plan *p = calloc(1, sizeof *p);
    ctx *x = malloc(sizeof *x);
    if (!p || !x) {
        free(p);
        free(x);
        st = tl_err(TL_ERR_NOMEM, "plan: out of memory");
        goto fail;
    }
    if ((st = setup(in, in->max_vram, x))) {
        free(p);
        free(x);
        goto fail;
    }
    p->feasible = run_search(x);
    if (p->feasible) {
        fill_plan(x, in, p);
    } else {
        /* an all-cpu description of the devices, and the explanation */
        memset(x->best, 0, sizeof x->best);
        for (int c = 0; c < TL_COMP_COUNT; c++) {
            x->best[c].mode = TL_PLAN_MODE_CPU;
            x->best[c].host = x->comp[c].bytes;
        }
        fill_plan(x, in, p);
        explain(in, p);
    }
    if (opts->output_size) {
        tl_plan_size sz;
        if ((st = tl_plan_parse_size(opts->output_size, &sz)) ||
            (st = tl_plan_vae_tiling(&sz, in->reserve[TL_COMP_VAE], opts->vae_bytes_per_voxel,
                                     &p->tiling))) {
            free(p);
            free(x);
            goto fail;
        }
    }
    free(x);
    free(in);
    *out = p;
    return TL_OK;
fail:
    free(in);
    return st;
}
