/*
 * convtarget.c — which conversions exist and which tensors a conversion
 * applies to: tl_convert_supported (pairs of types) and tl_convert_target
 * (the type one tensor takes when a load, a plan or a session asks for a
 * type). One rule for all of them, so that a plan counts exactly the bytes
 * a load produces.
 *
 * Float targets (F32, F16, BF16) take every float tensor and dequantize
 * Q8_0 and Q4_0 ones, I32 takes every I64 tensor. Quantized targets (Q8_0, Q4_0) take the tensors
 * that stable-diffusion.cpp's `--type` quantizes: float tensors of 2 or more dimensions whose rows
 * (innermost dimension) are a whole number of 32-element blocks, except biases and scales,
 * embeddings, and the input and output layers it keeps in full precision (Flux's img_in / txt_in /
 * time_in / vector_in / guidance_in / final_layer, MMDiT's x_embedder / t_embedder / y_embedder /
 * pos_embed / context_embedder, the UNet's time_embed / label_emb).
 */
#include "tierload.h"

#include <string.h>

static bool is_float(tl_dtype t) {
    return t == TL_DTYPE_F32 || t == TL_DTYPE_F16 || t == TL_DTYPE_BF16;
}

static bool is_f8(tl_dtype t) {
    return t == TL_DTYPE_F8_E4M3 || t == TL_DTYPE_F8_E5M2 || t == TL_DTYPE_F8_E4M3FNUZ ||
           t == TL_DTYPE_F8_E5M2FNUZ;
}

static bool is_quant_target(tl_dtype t) {
    return t == TL_DTYPE_Q8_0 || t == TL_DTYPE_Q4_0;
}

bool tl_convert_supported(tl_dtype from, tl_dtype to) {
    if (from == to)
        return is_float(from) || is_f8(from) || from == TL_DTYPE_F64 || from == TL_DTYPE_I64 ||
               from == TL_DTYPE_I32;
    if (is_float(from) || is_f8(from)) {
        if (is_float(to)) return true;
        return is_float(from) && is_quant_target(to);
    }
    if (is_quant_target(from)) return is_float(to); /* dequantize */
    if (from == TL_DTYPE_F64) return to == TL_DTYPE_F32;
    if (from == TL_DTYPE_I64) return to == TL_DTYPE_I32;
    return false;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* Tensors stable-diffusion.cpp's --type leaves in their own type. */
static bool kept_by_name(const char *name) {
    static const char *const suffixes[] = {".bias", ".scale", ".weight_scale"};
    static const char *const parts[] = {
        "img_in.",           "txt_in.",     "time_in.",    "vector_in.",  "guidance_in.",
        "final_layer.",      "x_embedder.", "t_embedder.", "y_embedder.", "pos_embed",
        "context_embedder.", "time_embed.", "label_emb.",  "embedding"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++)
        if (ends_with(name, suffixes[i])) return true;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (strstr(name, parts[i])) return true;
    return false;
}

tl_dtype tl_convert_target(const tl_tensor_info *t, tl_dtype to) {
    if (!t) return TL_DTYPE_INVALID;
    if (to == TL_DTYPE_INVALID || to == t->dtype || !tl_convert_supported(t->dtype, to))
        return t->dtype;
    if (is_quant_target(to)) {
        uint32_t be = tl_dtype_block_elems(to);
        if (t->n_dims < 2 || t->shape[t->n_dims - 1] % be != 0 || kept_by_name(t->name))
            return t->dtype;
    }
    return to;
}
