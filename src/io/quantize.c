/*
 * quantize.c — F32 / F16 / BF16 rows into ggml's Q8_0 and Q4_0 blocks, and back (32
 * elements each, an F16 scale first), by the rules of ggml's reference
 * quantizers, so the bytes equal what ggml's own quantizer writes (the
 * tests compare with ggml_quantize_chunk of the ggml build):
 *   Q8_0: d = max|x| / 127; q = x * (1/d) rounded half away from zero (int8).
 *   Q4_0: m = the element of largest magnitude (the first on ties), d = m / -8;
 *         q = min(15, (int8)(x * (1/d) + 8.5)); element j in the low nibble of
 *         byte j, element j + 16 in its high nibble.
 * Back to floats (dequantize): x = d * q (Q8_0), x = d * (q - 8) (Q4_0), as
 * ggml's dequantize_row_*, then rounded once to the target type.
 * A block of zeros gets d = 0 and every q = 0 (Q8_0) or 8 (Q4_0). A NaN or
 * infinite element has no quantized value (ggml's rules give it none either):
 * it is refused, with its index.
 */
#include "io/convert.h"

#include <limits.h>
#include <math.h>
#include <string.h>

#define QK 32

static inline void put_scale(unsigned char *d, float scale) {
    uint32_t u;
    memcpy(&u, &scale, 4);
    uint16_t h = tl__f32_to_f16(u);
    memcpy(d, &h, 2);
}

/*
 * roundf, as an int, without the call: |v| <= 127 for every block with a normal scale, where the
 * truncation and v - trunc(v) are exact. A block of subnormals can have a scale whose reciprocal
 * overflows (v infinite): C leaves that conversion undefined, and x86-64's (which ggml's quantizer
 * gets there) is INT_MIN, whose low byte is 0; that is the value given here, on every CPU (and
 * by trunc_int for Q4_0's conversion).
 */
static inline int trunc_int(float v) {
    return fabsf(v) < 2147483648.0f ? (int)v : INT_MIN;
}

static inline int round_away(float v) {
    if (!(fabsf(v) < 2147483648.0f)) return INT_MIN;
    int i = (int)v;
    float frac = v - (float)i;
    return i + (frac >= 0.5f) - (frac <= -0.5f);
}

static void q8_0_block(unsigned char *d, const float *x) {
    float amax = 0.0f;
    for (int j = 0; j < QK; j++) {
        float a = fabsf(x[j]);
        amax = amax > a ? amax : a;
    }
    const float scale = amax / 127;
    const float id = scale != 0.0f ? 1.0f / scale : 0.0f;
    put_scale(d, scale);
    for (int j = 0; j < QK; j++)
        d[2 + j] = (unsigned char)(int8_t)round_away(x[j] * id);
}

static void q4_0_block(unsigned char *d, const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    const float scale = max / -8;
    const float id = scale != 0.0f ? 1.0f / scale : 0.0f;
    put_scale(d, scale);
    for (int j = 0; j < QK / 2; j++) {
        int lo = (int8_t)trunc_int(x[j] * id + 8.5f),
            hi = (int8_t)trunc_int(x[QK / 2 + j] * id + 8.5f);
        lo = lo < 15 ? lo : 15;
        hi = hi < 15 ? hi : 15;
        d[2 + j] = (unsigned char)(lo | hi << 4);
    }
}

#define CHUNK 1024 /* elements turned into floats at a time, by the vector kernels */

bool tl__quantize_run(tl_dtype to, void *dst, tl_dtype from, const void *src, uint64_t n,
                      uint64_t *bad_index) {
    const unsigned char *s = src;
    unsigned char *d = dst;
    unsigned bsz = to == TL_DTYPE_Q8_0 ? 2 + QK : 2 + QK / 2, esz = tl__convert_elem_size(from);
    float x[CHUNK];
    for (uint64_t e0 = 0; e0 < n; e0 += CHUNK) {
        uint64_t m = n - e0 < CHUNK ? n - e0 : CHUNK;
        if (from == TL_DTYPE_F32)
            memcpy(x, s + e0 * 4, (size_t)m * 4);
        else
            tl__convert_run(TL_DTYPE_F32, x, from, s + e0 * esz, m, NULL);
        for (uint64_t i = 0; i < m; i++)
            if (!isfinite(x[i])) {
                if (bad_index) *bad_index = e0 + i;
                return false;
            }
        for (uint64_t b = 0; b < m / QK; b++) {
            unsigned char *out = d + (e0 / QK + b) * bsz;
            if (to == TL_DTYPE_Q8_0)
                q8_0_block(out, x + b * QK);
            else
                q4_0_block(out, x + b * QK);
        }
    }
    return true;
}

static inline void put_elem(tl_dtype to, unsigned char *d, uint64_t i, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if (to == TL_DTYPE_F32) {
        memcpy(d + i * 4, &u, 4);
        return;
    }
    uint16_t h = to == TL_DTYPE_F16 ? tl__f32_to_f16(u) : tl__f32_to_bf16(u);
    memcpy(d + i * 2, &h, 2);
}

void tl__dequantize_run(tl_dtype to, void *dst, tl_dtype from, const void *src, uint64_t n) {
    const unsigned char *s = src;
    unsigned char *d = dst;
    unsigned bsz = from == TL_DTYPE_Q8_0 ? 2 + QK : 2 + QK / 2;
    for (uint64_t b = 0; b < n / QK; b++) {
        const unsigned char *blk = s + b * bsz;
        uint16_t h;
        memcpy(&h, blk, 2);
        uint32_t u = tl__f16_to_f32(h);
        float scale;
        memcpy(&scale, &u, 4);
        uint64_t i0 = b * QK;
        if (from == TL_DTYPE_Q8_0) {
            for (int j = 0; j < QK; j++)
                put_elem(to, d, i0 + (uint64_t)j, (int8_t)blk[2 + j] * scale);
        } else {
            for (int j = 0; j < QK / 2; j++) {
                put_elem(to, d, i0 + (uint64_t)j, ((blk[2 + j] & 0x0F) - 8) * scale);
                put_elem(to, d, i0 + QK / 2 + (uint64_t)j, ((blk[2 + j] >> 4) - 8) * scale);
            }
        }
    }
}
