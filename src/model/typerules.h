/*
 * typerules.h — the types tensors are kept in, per tensor name, as
 * stable-diffusion.cpp's --tensor-type-rules gives them
 * ("^vae\.=f16,model\.=q8_0"): the first rule whose pattern is found in a
 * tensor's name gives its type; a tensor no rule names takes the load's,
 * plan's or session's one type (tl_convert_target). One rule for loads,
 * plans and sessions, so that a plan counts the bytes a load makes. Also
 * which tensors a row split cuts, and where (tl__row_splittable).
 */
#ifndef TL_MODEL_TYPERULES_H
#define TL_MODEL_TYPERULES_H

#include "core/rules.h"
#include "tierload.h"

typedef struct tl__type_rules {
    tl__rules r;
    tl_dtype *to; /* per rule */
} tl__type_rules;

/*
 * Parse "PATTERN=TYPE,..." (NULL or "": no rules) into t (free with
 * tl__type_rules_free, also after a failure). TYPE is f32, f16, bf16, q8_0 or
 * q4_0 (any case); another type, another shape of item or a pattern that
 * does not compile is TL_ERR_INVALID_ARG naming the rule.
 */
tl_status tl__type_rules_parse(const char *spec, tl__type_rules *t);
void tl__type_rules_free(tl__type_rules *t);
/* Whether tensor ti can be kept as `to` (tl_convert_supported, quantized rows of whole blocks). */
typedef enum tl__type_fit {
    TL__FITS = 0,
    TL__NO_CONVERSION,       /* tl_convert_supported says no */
    TL__ROWS_NOT_BLOCKS,     /* a quantized type: the innermost dimension is not whole blocks */
    TL__ELEMENTS_NOT_BLOCKS, /* the element count is not whole blocks */
} tl__type_fit;
tl__type_fit tl__type_fits(const tl_tensor_info *ti, tl_dtype to);

/*
 * The type tensor ti is kept in: the first matching rule's where that
 * conversion exists for it (Q8_0 / Q4_0: rows of whole 32-element blocks;
 * the name exceptions of tl_convert_target do not apply, the rule chose the
 * tensor), else its own; with no matching rule, tl_convert_target(ti,
 * convert) (convert TL_DTYPE_INVALID: its own). t may be NULL.
 */
tl_dtype tl__type_target(const tl__type_rules *t, const tl_tensor_info *ti, tl_dtype convert);

/*
 * Whether a row split cuts tensor ti: a 2-D matrix with both sides >= 256.
 * Cuts fall near multiples of TL__ROW_SPLIT_ALIGN rows (as llama.cpp's CUDA
 * row split rounds them), placed so that each part computes its rows on
 * ggml's CPU as the whole matrix does (residency/placement.c).
 */
bool tl__row_splittable(const tl_tensor_info *ti);
#define TL__ROW_SPLIT_ALIGN 64

#endif
