/*
 * lora.h — inside the LoRA layer: a LoRA file's modules, the names a model
 * tensor answers to, and the merge kernel.
 */
#ifndef TL_LORA_LORA_H
#define TL_LORA_LORA_H

#include "residency/residency.h"
#include "tierload.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum lora_kind { LORA_PLAIN = 0, LORA_LOHA = 1, LORA_LOKR = 2 } lora_kind;

/* Parts of a module; each is a tensor index of the LoRA's own catalog or TL_NOT_FOUND. */
enum {
    P_DOWN = 0, /* lora_down / lora_A */
    P_UP,       /* lora_up / lora_B */
    P_H1A, P_H1B, P_H2A, P_H2B, /* LoHa */
    P_K1, P_K1A, P_K1B, P_K2, P_K2A, P_K2B, /* LoKr */
    P_COUNT
};

typedef struct lora_module {
    char *key; /* the module name, without the part suffix */
    lora_kind kind;
    size_t part[P_COUNT];
    bool has_alpha;
    float alpha;
} lora_module;

struct tl_lora {
    tl_model *file; /* the LoRA file itself, opened read-only */
    lora_module *mods;
    size_t n_mods;
    char **unknown; /* keys that are no known part */
    size_t n_unknown;
};

/* name -> tensor index of a model, for every name a tensor answers to */
typedef struct lora_alias {
    char *name;
    size_t tensor;
} lora_alias;

typedef struct lora_aliases {
    lora_alias *v;
    size_t n, cap;
} lora_aliases;

/* Every name each ".weight" tensor of m answers to, sorted for lookup. */
tl_status lora_aliases_build(const tl_model *m, lora_aliases *a);
void lora_aliases_free(lora_aliases *a);
/*
 * The tensor a module name targets (TL_NOT_FOUND: none). When the name also
 * fits another tensor that does not hold the same bytes, *other gets it
 * (ambiguous: the caller refuses to choose).
 */
size_t lora_aliases_find(const tl_model *m, const lora_aliases *a, const char *name,
                         size_t *other);

/*
 * The diffusers name of an SD1.x/SDXL UNet module given in ldm naming, the
 * part after "model.diffusion_model." ("input_blocks.1.1.proj_in" ->
 * "down_blocks.0.attentions.0.proj_in"); false when it has none.
 */
bool lora_ldm_to_diffusers(const char *ldm, char *out, size_t n);

/* Check that module k fits tensor t of m (dtype and shapes); error names both. */
tl_status lora_check(const tl_model *m, size_t t, const tl_lora *l, size_t k);
/* The same for tensor t's values held as type dt (its own when merged in place). */
tl_status lora_check_as(const tl_model *m, size_t t, tl_dtype dt, const tl_lora *l, size_t k);
/*
 * What lora_merge does: LORA_DRY computes and checks everything (finite
 * factors and scale, no overflow of the weight's type) and writes nothing;
 * LORA_WRITE writes (after a dry run made earlier); LORA_CHECK_WRITE both, with
 * the module's matrices loaded once.
 */
typedef enum lora_pass { LORA_DRY, LORA_WRITE, LORA_CHECK_WRITE } lora_pass;
/* Add scale x module k's delta to tensor t (whose bytes are at w). */
tl_status lora_merge(const tl_model *m, size_t t, void *w, const tl_lora *l, size_t k,
                     float scale, lora_pass pass);
/*
 * The same for rows [r0, r1) of tensor t only, held at w (row r0 first) as
 * type dt (F32, F16 or BF16: t's own type, or F32 for values dequantized from
 * it): the bytes are those lora_merge writes for these rows when dt is t's
 * type, whatever the split.
 */
tl_status lora_merge_rows(const tl_model *m, size_t t, tl_dtype dt, void *w, uint64_t r0,
                          uint64_t r1, const tl_lora *l, size_t k, float scale, lora_pass pass);
/*
 * Plain module k of l as the low-rank term of rows [r0, r1) of tensor t
 * (checked as lora_merge_rows checks it in t's own type): *up those rows of
 * the up factor ((r1 - r0) x rank), *down_t the down factor transposed
 * (cols x rank), F32, malloc'd (free() them); *s = scale x alpha / rank.
 * TL_ERR_UNSUPPORTED for a LoHa or LoKr module.
 */
tl_status lora_lowrank(const tl_model *m, size_t t, const tl_lora *l, size_t k, float scale,
                       uint64_t r0, uint64_t r1, float **up, float **down_t, uint64_t *rank,
                       float *s);

/* Merge the modules of l whose target tensor t has only[t] set (only NULL: all). */
tl_status lora_apply_some(tl_model *m, const tl_lora *l, float scale, const bool *only,
                          tl_lora_report *r);
/* targets[k]: the tensor module k merges into (TL_NOT_FOUND: none); free() it. */
tl_status lora_targets(const tl_model *m, const tl_lora *l, size_t **targets);

/* One LoRA of a set, and its scale. */
typedef struct lora_item {
    const tl_lora *l;
    float scale;
} lora_item;

/* The producer of an at-load LoRA set (atload.c). */
typedef struct lora_atload lora_atload;
tl_status lora_atload_create(tl_model *m, lora_atload **out);
void lora_atload_destroy(lora_atload *a);
/* Can module k of l be applied as tensor t loads? (its type, the shapes) */
tl_status lora_atload_fits(const tl_model *m, const tl_lora *l, size_t k, size_t t);
/* The LoRAs applied from now on, in this order (waits for rows being made). */
tl_status lora_atload_set(lora_atload *a, const lora_item *items, size_t n);
/*
 * The producer a session calls (residency.h's tlr_producer, user = a); with
 * on_device, it gives the low-rank terms of F32 / F16 / BF16 targets of plain
 * modules to a device that merges them.
 */
tlr_producer lora_atload_producer(lora_atload *a, bool on_device);

#endif
