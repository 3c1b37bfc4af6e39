/*
 * summary.c — the planner's view of a model: per component, its bytes, its
 * layers in order and the bytes outside layers, and how much of it row split
 * can divide. Built from a catalog, by hand, or from a built-in synthetic
 * profile (sd15, sdxl, flux-f16, flux-q8, ltx2) for "what would fit".
 */
#include "plan/plan.h"

#include "core/checked.h"
#include "core/error.h"
#include "os/os.h"

#include <stdlib.h>
#include <string.h>

void tl_plan_summary_init(tl_plan_summary *s) {
    if (s) memset(s, 0, sizeof *s);
}

void tl_plan_summary_clear(tl_plan_summary *s) {
    if (!s) return;
    for (int c = 0; c < TL_COMP_COUNT; c++)
        free(s->comp[c].layers);
    memset(s, 0, sizeof *s);
}

static tl_status check_comp(const tl_plan_summary *s, tl_component c) {
    if (!s) return tl__err(TL_ERR_INVALID_ARG, "plan summary: NULL");
    if ((unsigned)c >= TL_COMP_COUNT)
        return tl__err(TL_ERR_INVALID_ARG, "plan summary: bad component %d", (int)c);
    return TL_OK;
}

static tl_status add_bytes(tl_plan_part *p, uint64_t bytes, uint64_t matrix_bytes) {
    if (matrix_bytes > bytes)
        return tl__err(TL_ERR_INVALID_ARG, "plan summary: matrix bytes exceed the layer's bytes");
    if (!tl__add_u64(p->bytes, bytes, &p->bytes) ||
        !tl__add_u64(p->matrix_bytes, matrix_bytes, &p->matrix_bytes))
        return tl__err(TL_ERR_INVALID_ARG, "plan summary: byte count overflows");
    return TL_OK;
}

tl_status tl_plan_summary_add_layer(tl_plan_summary *s, tl_component c, uint64_t bytes,
                                    uint64_t matrix_bytes) {
    tl_status st = check_comp(s, c);
    if (st) return st;
    tl_plan_part *p = &s->comp[c];
    if (p->n_layers == p->cap_layers) {
        size_t cap = p->cap_layers ? p->cap_layers * 2 : 16;
        uint64_t *l = tl__os_realloc(p->layers, cap * sizeof *l);
        if (!l) return tl__err(TL_ERR_NOMEM, "plan summary: out of memory for %zu layers", cap);
        p->layers = l;
        p->cap_layers = cap;
    }
    st = add_bytes(p, bytes, matrix_bytes);
    if (st) return st;
    p->layers[p->n_layers++] = bytes;
    return TL_OK;
}

tl_status tl_plan_summary_add_other(tl_plan_summary *s, tl_component c, uint64_t bytes,
                                    uint64_t matrix_bytes) {
    tl_status st = check_comp(s, c);
    if (st) return st;
    st = add_bytes(&s->comp[c], bytes, matrix_bytes);
    if (st) return st;
    s->comp[c].other_bytes += bytes;
    return TL_OK;
}

/* Bytes of tensor t as the load would leave it (tl_convert_target: the load's own rule), and its
 * row-splittable part. */
void tlp_tensor_bytes(const tl_tensor_info *t, const tl__type_rules *rules, tl_dtype convert,
                      uint64_t *bytes, uint64_t *matrix) {
    *bytes = t->nbytes;
    tl_dtype to = tl__type_target(rules, t, convert);
    uint64_t nb;
    if (to != t->dtype && tl_dtype_nbytes(to, t->n_elements, &nb)) *bytes = nb;
    *matrix = tl__row_splittable(t) ? *bytes : 0;
}

/* Sum the bytes of a list of tensors. */
static tl_status sum_tensors(const tl_model *m, const size_t *idx, size_t n,
                             const tl__type_rules *rules, tl_dtype convert, uint64_t *bytes,
                             uint64_t *matrix) {
    *bytes = *matrix = 0;
    for (size_t k = 0; k < n; k++) {
        const tl_tensor_info *t = tl_model_tensor(m, idx[k]);
        uint64_t b, mb;
        tlp_tensor_bytes(t, rules, convert, &b, &mb);
        if (!tl__add_u64(*bytes, b, bytes) || !tl__add_u64(*matrix, mb, matrix))
            return tl__err(TL_ERR_INVALID_ARG, "plan summary: byte count overflows at tensor '%s'",
                           t->name);
    }
    return TL_OK;
}

tl_status tl_plan_summary_from_model(const tl_model *m, tl_dtype convert, tl_plan_summary *s) {
    return tlp_summary_from_model(m, NULL, convert, s);
}

tl_status tlp_summary_from_model(const tl_model *m, const tl__type_rules *rules, tl_dtype convert,
                                 tl_plan_summary *s) {
    if (!m || !s) return tl__err(TL_ERR_INVALID_ARG, "plan summary: NULL model or summary");
    tl_plan_summary_init(s);
    tl_status st = TL_OK;
    for (int c = 0; c < TL_COMP_COUNT && !st; c++) {
        const size_t *idx;
        uint64_t bytes, mb;
        size_t nl = tl_model_layer_count(m, (tl_component)c);
        for (size_t k = 0; k < nl && !st; k++) {
            size_t n = tl_model_layer_tensors(m, (tl_component)c, k, &idx);
            st = sum_tensors(m, idx, n, rules, convert, &bytes, &mb);
            if (!st) st = tl_plan_summary_add_layer(s, (tl_component)c, bytes, mb);
        }
        size_t n = tl_model_other_tensors(m, (tl_component)c, &idx);
        if (!st && n) {
            st = sum_tensors(m, idx, n, rules, convert, &bytes, &mb);
            if (!st) st = tl_plan_summary_add_other(s, (tl_component)c, bytes, mb);
        }
    }
    if (st) tl_plan_summary_clear(s);
    return st;
}

/* --- built-in synthetic profiles --- */

typedef struct prof_block {
    uint32_t comp;
    uint32_t count;
    uint32_t mib;        /* per layer */
    uint32_t matrix_pct; /* row-splittable share */
} prof_block;

typedef struct profile {
    const char *name;
    prof_block blocks[6];
    uint32_t other_mib[TL_COMP_COUNT];
} profile;

/* Rough shapes of real pipelines (MiB): enough to plan, no files needed. */
static const profile profiles[] = {
    /* SD 1.5, F16: UNet 1.6 GiB in 25 blocks, CLIP-L, VAE. */
    {"sd15",
     {{TL_COMP_DIFFUSION, 25, 64, 85}, {TL_COMP_COND, 12, 18, 90}, {TL_COMP_VAE, 8, 18, 40}},
     {40, 19, 16, 0, 0}},
    /* SDXL, F16: UNet 4.8 GiB in 19 blocks, CLIP-L + CLIP-G, VAE. */
    {"sdxl",
     {{TL_COMP_DIFFUSION, 19, 250, 85},
      {TL_COMP_COND, 12, 18, 90},
      {TL_COMP_COND, 32, 40, 90},
      {TL_COMP_VAE, 8, 18, 40}},
     {150, 80, 16, 0, 0}},
    /* Flux.1-dev, F16: 19 double + 38 single blocks; T5-XXL Q8 + CLIP-L; VAE. */
    {"flux-f16",
     {{TL_COMP_DIFFUSION, 19, 648, 95},
      {TL_COMP_DIFFUSION, 38, 270, 95},
      {TL_COMP_COND, 24, 200, 95},
      {TL_COMP_COND, 12, 18, 90},
      {TL_COMP_VAE, 8, 18, 40}},
     {300, 269, 16, 0, 0}},
    /* Flux.1-dev, Q8_0. */
    {"flux-q8",
     {{TL_COMP_DIFFUSION, 19, 344, 95},
      {TL_COMP_DIFFUSION, 38, 144, 95},
      {TL_COMP_COND, 24, 200, 95},
      {TL_COMP_COND, 12, 18, 90},
      {TL_COMP_VAE, 8, 18, 40}},
     {160, 269, 16, 0, 0}},
    /* LTX-2, Q6: 48 transformer blocks; 12B text encoder (Q6, 48 layers); video VAE. */
    {"ltx2",
     {{TL_COMP_DIFFUSION, 48, 290, 95}, {TL_COMP_COND, 48, 190, 95}, {TL_COMP_VAE, 8, 50, 40}},
     {400, 1000, 40, 0, 0}},
};

const char *tl_plan_profile_names(void) {
    return "sd15, sdxl, flux-f16, flux-q8, ltx2";
}

tl_status tl_plan_summary_profile(const char *name, tl_plan_summary *s) {
    if (!name || !s) return tl__err(TL_ERR_INVALID_ARG, "profile: NULL");
    tl_plan_summary_init(s);
    for (size_t i = 0; i < sizeof profiles / sizeof profiles[0]; i++) {
        const profile *p = &profiles[i];
        if (strcmp(p->name, name) != 0) continue;
        for (size_t b = 0; b < sizeof p->blocks / sizeof p->blocks[0]; b++) {
            const prof_block *pb = &p->blocks[b];
            for (uint32_t k = 0; k < pb->count; k++) {
                uint64_t bytes = (uint64_t)pb->mib * TLP_MIB;
                tl_status st = tl_plan_summary_add_layer(s, (tl_component)pb->comp, bytes,
                                                         bytes / 100 * pb->matrix_pct);
                if (st) {
                    tl_plan_summary_clear(s);
                    return st;
                }
            }
        }
        for (int c = 0; c < TL_COMP_COUNT; c++)
            if (p->other_mib[c])
                tl_plan_summary_add_other(s, (tl_component)c, p->other_mib[c] * TLP_MIB, 0);
        return TL_OK;
    }
    return tl__err(TL_ERR_NOT_FOUND, "unknown profile '%s' (profiles: %s)", name,
                   tl_plan_profile_names());
}
