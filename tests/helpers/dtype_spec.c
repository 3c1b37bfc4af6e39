/*
 * dtype_spec.c — the table of dtype_spec.h. Each quantized row gives the block
 * struct it comes from (QK_K = 256; ggml_half = 2 bytes); the byte count is
 * the struct's size.
 */
#include "dtype_spec.h"

#include <string.h>
#include <strings.h>

#define B(bytes) ((bytes)*8u)

static const tu_dtype_spec specs[] = {
    {0, "F32", 1, 32},
    {1, "F16", 1, 16},
    {2, "Q4_0", 32, B(2 + 16)},                  /* d; qs[QK4_0/2] */
    {3, "Q4_1", 32, B(2 + 2 + 16)},              /* d, m; qs[QK4_1/2] */
    {6, "Q5_0", 32, B(2 + 4 + 16)},              /* d; qh[4]; qs[QK5_0/2] */
    {7, "Q5_1", 32, B(2 + 2 + 4 + 16)},          /* d, m; qh[4]; qs[QK5_1/2] */
    {8, "Q8_0", 32, B(2 + 32)},                  /* d; qs[QK8_0] int8 */
    {9, "Q8_1", 32, B(2 + 2 + 32)},              /* d, s; qs[QK8_1] */
    {10, "Q2_K", 256, B(16 + 64 + 2 + 2)},       /* scales[QK_K/16]; qs[QK_K/4]; d, dmin */
    {11, "Q3_K", 256, B(32 + 64 + 12 + 2)},      /* hmask[QK_K/8]; qs[QK_K/4]; scales[12]; d */
    {12, "Q4_K", 256, B(2 + 2 + 12 + 128)},      /* d, dmin; scales[K_SCALE_SIZE=12]; qs[QK_K/2] */
    {13, "Q5_K", 256, B(2 + 2 + 12 + 32 + 128)}, /* d, dmin; scales[12]; qh[QK_K/8]; qs[QK_K/2] */
    {14, "Q6_K", 256, B(128 + 64 + 16 + 2)},     /* ql[QK_K/2]; qh[QK_K/4]; scales[QK_K/16]; d */
    {15, "Q8_K", 256, B(4 + 256 + 2 * 16)},      /* float d; qs[QK_K]; int16 bsums[QK_K/16] */
    {16, "IQ2_XXS", 256, B(2 + 2 * 32)},         /* d; uint16 qs[QK_K/8] */
    {17, "IQ2_XS", 256, B(2 + 2 * 32 + 8)},      /* d; uint16 qs[QK_K/8]; scales[QK_K/32] */
    {18, "IQ3_XXS", 256, B(2 + 96)},             /* d; qs[3*QK_K/8] */
    {19, "IQ1_S", 256, B(2 + 32 + 2 * 8)},       /* d; qs[QK_K/8]; uint16 qh[QK_K/32] */
    {20, "IQ4_NL", 32, B(2 + 16)},               /* d; qs[QK4_NL/2] */
    {21, "IQ3_S", 256, B(2 + 64 + 8 + 32 + 4)},  /* d; qs[QK_K/4]; qh[QK_K/32]; signs[QK_K/8];
                                                    scales[IQ3S_N_SCALE = QK_K/64] */
    {22, "IQ2_S", 256, B(2 + 64 + 8 + 8)},       /* d; qs[QK_K/4]; qh[QK_K/32]; scales[QK_K/32] */
    {23, "IQ4_XS", 256, B(2 + 2 + 4 + 128)},     /* d; scales_h; scales_l[QK_K/64]; qs[QK_K/2] */
    {24, "I8", 1, 8},
    {25, "I16", 1, 16},
    {26, "I32", 1, 32},
    {27, "I64", 1, 64},
    {28, "F64", 1, 64},
    {29, "IQ1_M", 256, B(32 + 16 + 8)}, /* qs[QK_K/8]; qh[QK_K/16]; scales[QK_K/32] */
    {30, "BF16", 1, 16},
    {34, "TQ1_0", 256, B(48 + 4 + 2)}, /* qs[(QK_K - 4*QK_K/64)/5]; qh[QK_K/64]; d */
    {35, "TQ2_0", 256, B(64 + 2)},     /* qs[QK_K/4]; d */
    {39, "MXFP4", 32, B(1 + 16)},      /* e (E8M0); qs[QK_MXFP4/2] */
    {40, "NVFP4", 64, B(4 + 32)},      /* d[QK_NVFP4/16] (UE4M3); qs[QK_NVFP4/2] */
    {41, "Q1_0", 128, B(2 + 16)},      /* d; qs[QK1_0/8] */
    {42, "Q2_0", 64, B(2 + 16)},       /* d; qs[QK2_0/4] */
    /* safetensors dtypes (its spec: bit widths; F4 and F6 are packed sub-byte types) */
    {100, "BOOL", 1, 8},
    {101, "U8", 1, 8},
    {102, "U16", 1, 16},
    {103, "U32", 1, 32},
    {104, "U64", 1, 64},
    {105, "F8_E5M2", 1, 8},
    {106, "F8_E4M3", 1, 8},
    {107, "F8_E8M0", 1, 8},
    {108, "C64", 1, 64},
    {109, "F4", 1, 4},
    {110, "F6_E2M3", 1, 6},
    {111, "F6_E3M2", 1, 6},
    {112, "F8_E4M3FNUZ", 1, 8},
    {113, "F8_E5M2FNUZ", 1, 8},
};

const tu_dtype_spec *tu_dtype_specs(size_t *n) {
    *n = sizeof specs / sizeof specs[0];
    return specs;
}

const tu_dtype_spec *tu_dtype_spec_of(int id) {
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
        if (specs[i].id == id) return &specs[i];
    return NULL;
}

const tu_dtype_spec *tu_dtype_spec_named(const char *name) {
    for (size_t i = 0; name && i < sizeof specs / sizeof specs[0]; i++)
        if (!strcasecmp(specs[i].name, name)) return &specs[i];
    return NULL;
}

bool tu_dtype_nbytes(const tu_dtype_spec *s, uint64_t n, uint64_t *out) {
    if (!s || n % s->block_elems) return false;
    uint64_t bits;
    if (__builtin_mul_overflow(n / s->block_elems, (uint64_t)s->block_bits, &bits)) return false;
    if (bits % 8) return false;
    *out = bits / 8;
    return true;
}
