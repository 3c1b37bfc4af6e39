/*
 * search.h — what the planner's three steps share: the normalised inputs
 * (create.c builds them from the public arguments), the search over
 * candidate placements (search.c) and the report of an infeasible plan
 * (explain.c), which reruns the search on changed inputs.
 */
#ifndef TL_PLAN_SEARCH_H
#define TL_PLAN_SEARCH_H

#include "plan/plan.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TLP_MAXD TL_PLAN_MAX_DEVICES
#define TLP_MAXP TL_PLAN_MAX_PHASES
#define TLP_MAX_EXACT_GPUS 6      /* beyond this, splits use the k largest GPUs only */
#define TLP_MAX_SUBSETS 128       /* 2^6 - 1 exact subsets, or n singles + n - 1 prefixes */
#define TLP_NODE_LIMIT 4000000ull /* safety net: the search stops here with the best so far */

/* The public arguments, checked and normalised (create.c). */
typedef struct tlp_inputs {
    const tl_plan_summary *s;
    tl_plan_device devs[TLP_MAXD];
    size_t n_devs; /* GPUs first in input order, the host last */
    uint64_t headroom;
    const char *max_vram;
    uint64_t reserve[TL_COMP_COUNT];
    tl_plan_phases phases;
    tl_backend_spec spec; /* the backend spec with the *_on_cpu options applied */
    bool offload;
    uint32_t offload_mask, phase_mask, layer_mask, row_mask; /* per-component constraints */
    bool exhaustive;
    uint32_t steps, steps2; /* passes of diffusion and controlnet, of diffusion2 */
    double link_bw[TLP_MAXD], link_lat[TLP_MAXD]; /* per device; bw 0: local */
    uint64_t fixed[TLP_MAXD]; /* per device: bytes overrides place there, in every phase */
} tlp_inputs;

/* One device of a candidate: its weights, its extra bytes, its resident layers [lb, le). */
typedef struct tlp_slot {
    uint32_t dev, lb, le;
    uint64_t w;     /* weights on the device */
    uint64_t extra; /* reserve + stream buffers, in the component's phases */
} tlp_slot;

/* One way to place a component; its n devices are s[0..n). */
typedef struct tlp_cand {
    tl_plan_mode mode;
    bool phase; /* phase residency */
    uint32_t n; /* GPUs */
    uint64_t resident, host, moved, score;
    uint64_t compute; /* weight x bytes when computed on a GPU (any mode but cpu) */
    uint64_t link_ns; /* modeled link time per run, nanoseconds */
    tlp_slot *s;
} tlp_cand;

/* A candidate that owns its device slots (the best plan outlives the lists). */
typedef struct tlp_choice {
    tlp_cand k; /* k.s is NULL: the slots are s */
    tlp_slot s[TLP_MAXD];
} tlp_choice;

typedef struct tlp_comp {
    bool present;
    uint64_t bytes, other, matrix, reserve, max_layer, max_unit;
    const uint64_t *layers;
    size_t n_layers;
    uint32_t active; /* phase mask */
    bool all_phases;
    uint64_t passes, weight;
    tl_backend_place place; /* n_devices 0: auto */
    bool offload;           /* streamed from RAM only (offload_to_cpu or its bit) */
    bool phase_only;        /* phase residency only */
    bool no_layer, no_row;  /* split modes ruled out */
} tlp_comp;

/* The objective, compared lexicographically (tlp_key_better). */
typedef struct tlp_key {
    uint64_t score, compute, link_ns, moved;
    uint32_t ndev, pairs;
} tlp_key;

/* The candidates of one search level (one component), in a workspace of the search. */
typedef struct tlp_level {
    tlp_cand *cands;
    tlp_slot *slots;
    uint32_t *idx, *tmp; /* order of trial, and scratch for sorting it */
    uint32_t n, n_slots;
} tlp_level;

typedef struct tlp_ctx {
    uint32_t n_gpu, n_phases;
    uint64_t budget[TLP_MAXD]; /* what the search may use: less the overrides' fixed bytes */
    uint64_t full[TLP_MAXD];   /* the budgets before that */
    double link_bw[TLP_MAXD], link_lat[TLP_MAXD]; /* bw 0: local */
    tlp_comp comp[TL_COMP_COUNT];
    uint32_t order[TL_COMP_COUNT];
    uint32_t n_order;
    bool exhaustive; /* tests: no pruning, no symmetry breaking, no node limit */
    uint64_t rem[TL_COMP_COUNT + 1];
    uint64_t subsets[TLP_MAX_SUBSETS]; /* GPU masks */
    uint32_t n_subsets;
    /* state of a search */
    uint64_t load[TLP_MAXD][TLP_MAXP];
    const tlp_cand *cur[TL_COMP_COUNT];
    uint64_t used_mask;
    tlp_key cur_key;
    bool have_best;
    tlp_key best_key;
    tlp_choice best[TL_COMP_COUNT];
    uint64_t nodes;
    tlp_level lv[TL_COMP_COUNT]; /* valid during tlp_search only */
} tlp_ctx;

/* The user placed the component on the host alone ("cond=cpu"). */
static inline bool tlp_place_host(const tl_backend_place *pl) {
    return pl->n_devices == 1 && pl->devices[0] == TL_PLAN_HOST;
}
/* The user placed the component on GPUs. */
static inline bool tlp_place_gpus(const tl_backend_place *pl) {
    return pl->n_devices && !tlp_place_host(pl);
}

/* Bytes a candidate's slot adds to its device in phase ph. */
static inline uint64_t tlp_phase_load(const tlp_comp *ci, const tlp_cand *k, const tlp_slot *s,
                                      uint32_t ph) {
    bool act = ci->active & (1u << ph);
    return ((!k->phase || act) ? s->w : 0) + (act ? s->extra : 0);
}

/*
 * A slot's link use per run: weight bytes that cross (*bytes) and the modeled
 * time in seconds (0 for a local device). streamed: bytes streamed through
 * the slot's device per pass.
 */
double tlp_slot_link(const double *bw, const double *lat, const tlp_comp *ci, const tlp_cand *k,
                     const tlp_slot *s, uint64_t streamed, uint64_t *bytes);

/* a is strictly better than b. */
bool tlp_key_better(const tlp_key *a, const tlp_key *b);

/* Stable sort of indices: a[i] before a[j] only when before(arg, a[i], a[j]) or i < j and neither
 * is before the other. tmp has room for n. */
typedef bool (*tlp_before_fn)(const void *arg, uint32_t a, uint32_t b);
void tlp_sort(uint32_t *a, uint32_t *tmp, size_t n, tlp_before_fn before, const void *arg);

/* Build the search context from the inputs with the given --max-vram spec. */
tl_status tlp_setup(const tlp_inputs *in, const char *max_vram, tlp_ctx *x);
/*
 * Search x. *found is false when no placement fits; TL_ERR_NOMEM when the
 * workspace cannot be allocated (the search never drops a branch instead).
 */
tl_status tlp_search(tlp_ctx *x, bool *found);
/* Fill the plan's decisions, peaks and totals from x->best. */
void tlp_fill_plan(const tlp_ctx *x, const tlp_inputs *in, tl_plan *p);
/*
 * Explain an infeasible plan in p->error and make its decisions the best
 * effort (see tl_plan_decision); fails only when out of memory.
 */
tl_status tlp_explain(const tlp_inputs *in, tl_plan *p);

#endif
