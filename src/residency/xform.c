/*
 * xform.c — the type a session keeps a tensor in (tl_session_options.dtype
 * through tl_convert_target, or tl_session_set_dtype) and what that makes of
 * its units: the bytes each unit holds converted (whole rows of the tensor,
 * so whole quantization blocks), the file bytes it is made from, and the
 * tensor info the session hands out for it.
 */
#include "residency/residency.h"

#include "core/error.h"

static bool is_quant(tl_dtype t) {
    return t == TL_DTYPE_Q8_0 || t == TL_DTYPE_Q4_0;
}

tl_status tlr_xform_check(const tl_model *m, size_t t, tl_dtype to) {
    const tl_tensor_info *ti = tl_model_tensor(m, t);
    const char *path = tl_model_file(m, ti->file)->path;
    if (to == ti->dtype) return TL_OK;
    if (!tl_convert_supported(ti->dtype, to))
        return tl__err(TL_ERR_UNSUPPORTED, "%s: tensor %s: no conversion from %s to %s", path,
                       ti->name, tl_dtype_name(ti->dtype), tl_dtype_name(to));
    if (is_quant(to) &&
        (ti->n_dims < 1 || ti->shape[ti->n_dims - 1] % (int64_t)tl_dtype_block_elems(to) != 0))
        return tl__err(TL_ERR_UNSUPPORTED,
                       "%s: tensor %s: its rows are not a whole number of %u-element %s blocks",
                       path, ti->name, tl_dtype_block_elems(to), tl_dtype_name(to));
    uint64_t n;
    if (!tl_dtype_nbytes(to, ti->n_elements, &n))
        return tl__err(TL_ERR_UNSUPPORTED, "%s: tensor %s: %llu elements are not whole %s blocks",
                       path, ti->name, (unsigned long long)ti->n_elements, tl_dtype_name(to));
    return TL_OK;
}

void tlr_xform_info(const tl_model *m, size_t t, tl_dtype to, tl_tensor_info *out) {
    *out = *tl_model_tensor(m, t);
    if (to == out->dtype) return;
    uint64_t n = 0;
    tl_dtype_nbytes(to, out->n_elements, &n); /* checked by tlr_xform_check */
    out->dtype = to;
    out->nbytes = n;
}

void tlr_xform_unit(const tl_model *m, const tlr_place *pl, tl_dtype to, tlr_xunit *out) {
    const tl_tensor_info *ti = tl_model_tensor(m, pl->tensor);
    out->from = ti->dtype;
    out->to = to;
    out->src_off = pl->off;
    out->src_len = pl->len;
    out->off = pl->off;
    out->len = pl->len;
    if (to == ti->dtype) return;
    tl_tensor_info x;
    tlr_xform_info(m, pl->tensor, to, &x);
    if (pl->off == 0 && pl->len == ti->nbytes) { /* the whole tensor */
        out->len = x.nbytes;
        return;
    }
    /* a row block: rows hold the same number of elements in either type */
    uint64_t rows = (uint64_t)ti->shape[0], row = x.nbytes / rows;
    out->off = pl->row_begin * row;
    out->len = (pl->row_end - pl->row_begin) * row;
}
