/*
 * dtype.c — the element-type table shared by both formats: ggml's types (ids
 * below TL_GGML_TYPE_COUNT, with block size and bytes per block, so nbytes is exact for every
 * quantization) and the safetensors-only types (sizes in bits, so F4 and F6
 * are exact too). Removed ggml ids have no entry and are invalid.
 */
#include "tierload.h"
#include "core/checked.h"

#include <stddef.h>
#include <strings.h>

typedef struct dtype_row {
    tl_dtype id;
    const char *name;
    uint32_t block_elems;
    uint32_t block_bits;
} dtype_row;

static const dtype_row dtype_table[] = {
    {TL_DTYPE_F32, "F32", 1, 32},
    {TL_DTYPE_F16, "F16", 1, 16},
    {TL_DTYPE_Q4_0, "Q4_0", 32, 18 * 8},
    {TL_DTYPE_Q4_1, "Q4_1", 32, 20 * 8},
    {TL_DTYPE_Q5_0, "Q5_0", 32, 22 * 8},
    {TL_DTYPE_Q5_1, "Q5_1", 32, 24 * 8},
    {TL_DTYPE_Q8_0, "Q8_0", 32, 34 * 8},
    {TL_DTYPE_Q8_1, "Q8_1", 32, 36 * 8},
    {TL_DTYPE_Q2_K, "Q2_K", 256, 84 * 8},
    {TL_DTYPE_Q3_K, "Q3_K", 256, 110 * 8},
    {TL_DTYPE_Q4_K, "Q4_K", 256, 144 * 8},
    {TL_DTYPE_Q5_K, "Q5_K", 256, 176 * 8},
    {TL_DTYPE_Q6_K, "Q6_K", 256, 210 * 8},
    {TL_DTYPE_Q8_K, "Q8_K", 256, 292 * 8},
    {TL_DTYPE_IQ2_XXS, "IQ2_XXS", 256, 66 * 8},
    {TL_DTYPE_IQ2_XS, "IQ2_XS", 256, 74 * 8},
    {TL_DTYPE_IQ3_XXS, "IQ3_XXS", 256, 98 * 8},
    {TL_DTYPE_IQ1_S, "IQ1_S", 256, 50 * 8},
    {TL_DTYPE_IQ4_NL, "IQ4_NL", 32, 18 * 8},
    {TL_DTYPE_IQ3_S, "IQ3_S", 256, 110 * 8},
    {TL_DTYPE_IQ2_S, "IQ2_S", 256, 82 * 8},
    {TL_DTYPE_IQ4_XS, "IQ4_XS", 256, 136 * 8},
    {TL_DTYPE_I8, "I8", 1, 8},
    {TL_DTYPE_I16, "I16", 1, 16},
    {TL_DTYPE_I32, "I32", 1, 32},
    {TL_DTYPE_I64, "I64", 1, 64},
    {TL_DTYPE_F64, "F64", 1, 64},
    {TL_DTYPE_IQ1_M, "IQ1_M", 256, 56 * 8},
    {TL_DTYPE_BF16, "BF16", 1, 16},
    {TL_DTYPE_TQ1_0, "TQ1_0", 256, 54 * 8},
    {TL_DTYPE_TQ2_0, "TQ2_0", 256, 66 * 8},
    {TL_DTYPE_MXFP4, "MXFP4", 32, 17 * 8},
    {TL_DTYPE_NVFP4, "NVFP4", 64, 36 * 8},
    {TL_DTYPE_Q1_0, "Q1_0", 128, 18 * 8},
    {TL_DTYPE_Q2_0, "Q2_0", 64, 18 * 8},
    {TL_DTYPE_BOOL, "BOOL", 1, 8},
    {TL_DTYPE_U8, "U8", 1, 8},
    {TL_DTYPE_U16, "U16", 1, 16},
    {TL_DTYPE_U32, "U32", 1, 32},
    {TL_DTYPE_U64, "U64", 1, 64},
    {TL_DTYPE_F8_E5M2, "F8_E5M2", 1, 8},
    {TL_DTYPE_F8_E4M3, "F8_E4M3", 1, 8},
    {TL_DTYPE_F8_E8M0, "F8_E8M0", 1, 8},
    {TL_DTYPE_C64, "C64", 1, 64},
    {TL_DTYPE_F4, "F4", 1, 4},
    {TL_DTYPE_F6_E2M3, "F6_E2M3", 1, 6},
    {TL_DTYPE_F6_E3M2, "F6_E3M2", 1, 6},
};

static const dtype_row *dtype_row_of(tl_dtype t) {
    for (size_t i = 0; i < sizeof dtype_table / sizeof dtype_table[0]; i++)
        if (dtype_table[i].id == t) return &dtype_table[i];
    return NULL;
}

const char *tl_dtype_name(tl_dtype t) {
    const dtype_row *r = dtype_row_of(t);
    return r ? r->name : NULL;
}

tl_dtype tl_dtype_from_name(const char *name) {
    if (!name) return TL_DTYPE_INVALID;
    for (size_t i = 0; i < sizeof dtype_table / sizeof dtype_table[0]; i++)
        if (strcasecmp(dtype_table[i].name, name) == 0) return dtype_table[i].id;
    return TL_DTYPE_INVALID;
}

uint32_t tl_dtype_block_elems(tl_dtype t) {
    const dtype_row *r = dtype_row_of(t);
    return r ? r->block_elems : 0;
}

uint32_t tl_dtype_block_bits(tl_dtype t) {
    const dtype_row *r = dtype_row_of(t);
    return r ? r->block_bits : 0;
}

bool tl_dtype_nbytes(tl_dtype t, uint64_t n, uint64_t *out) {
    const dtype_row *r = dtype_row_of(t);
    uint64_t bits;
    if (!r || n % r->block_elems != 0) return false;
    if (!tl__mul_u64(n / r->block_elems, r->block_bits, &bits)) return false;
    if (bits % 8 != 0) return false;
    *out = bits / 8;
    return true;
}
