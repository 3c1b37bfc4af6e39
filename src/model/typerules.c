/*
 * typerules.c — per-tensor types by name pattern (typerules.h).
 */
#include "model/typerules.h"

#include "core/error.h"
#include "os/os.h"

#include <stdlib.h>
#include <string.h>

void tl__type_rules_free(tl__type_rules *t) {
    tl__rules_free(&t->r);
    free(t->to);
    t->to = NULL;
}

tl_status tl__type_rules_parse(const char *spec, tl__type_rules *t) {
    memset(t, 0, sizeof *t);
    if (!spec || !*spec) return TL_OK;
    tl_status st = tl__rules_parse(spec, "tensor type rule", "PATTERN=TYPE", &t->r);
    if (st) return st;
    t->to = tl__os_calloc(t->r.n ? t->r.n : 1, sizeof *t->to);
    if (!t->to) return tl__err(TL_ERR_NOMEM, "tensor type rules: out of memory");
    for (size_t i = 0; i < t->r.n; i++) {
        tl_dtype d = tl_dtype_from_name(t->r.value[i]);
        if (d != TL_DTYPE_F32 && d != TL_DTYPE_F16 && d != TL_DTYPE_BF16 && d != TL_DTYPE_Q8_0 &&
            d != TL_DTYPE_Q4_0)
            return tl__err(TL_ERR_INVALID_ARG,
                           "tensor type rule '%.120s=%.40s': the type is not f32, f16, bf16, q8_0 "
                           "or q4_0",
                           t->r.pattern[i], t->r.value[i]);
        t->to[i] = d;
    }
    return TL_OK;
}

tl__type_fit tl__type_fits(const tl_tensor_info *ti, tl_dtype to) {
    if (to == ti->dtype) return TL__FITS;
    if (!tl_convert_supported(ti->dtype, to)) return TL__NO_CONVERSION;
    uint32_t be = tl_dtype_block_elems(to);
    if (be > 1 && (ti->n_dims < 1 || ti->shape[ti->n_dims - 1] % be != 0))
        return TL__ROWS_NOT_BLOCKS;
    uint64_t nb;
    return tl_dtype_nbytes(to, ti->n_elements, &nb) ? TL__FITS : TL__ELEMENTS_NOT_BLOCKS;
}

tl_dtype tl__type_target(const tl__type_rules *t, const tl_tensor_info *ti, tl_dtype convert) {
    size_t i = t ? tl__rules_match(&t->r, ti->name) : 0;
    if (!t || i == t->r.n) return tl_convert_target(ti, convert);
    return tl__type_fits(ti, t->to[i]) == TL__FITS ? t->to[i] : ti->dtype;
}

bool tl__row_splittable(const tl_tensor_info *ti) {
    return ti->n_dims == 2 && ti->shape[0] >= 256 && ti->shape[1] >= 256;
}
