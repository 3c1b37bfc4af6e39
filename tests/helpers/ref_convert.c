/*
 * ref_convert.c — the independent conversion reference (see ref_convert.h).
 */
#include "ref_convert.h"

#include "testutil.h"

#include <float.h>
#include <math.h>
#include <string.h>

static uint64_t le(const void *src, uint64_t k, unsigned size) {
    const unsigned char *p = (const unsigned char *)src + k * size;
    uint64_t v = 0;
    for (unsigned i = 0; i < size; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* sign, exponent field, mantissa field of a binary format with ebits / mbits, bias. */
static double ieee(uint64_t bits, int ebits, int mbits, int bias, int has_inf) {
    int sign = (int)((bits >> (ebits + mbits)) & 1);
    uint64_t e = (bits >> mbits) & ((1u << ebits) - 1), m = bits & ((1ull << mbits) - 1);
    double v;
    if (e == (1u << ebits) - 1 && has_inf)
        v = m ? NAN : INFINITY;
    else if (e == 0)
        v = ldexp((double)m, 1 - bias - mbits);
    else
        v = ldexp(1.0 + ldexp((double)m, -mbits), (int)e - bias);
    return sign ? -v : v;
}

double ref_decode(tl_dtype from, const void *src, uint64_t k) {
    switch (from) {
    case TL_DTYPE_F32: {
        float f;
        memcpy(&f, (const char *)src + 4 * k, 4);
        return f;
    }
    case TL_DTYPE_F64: {
        double d;
        memcpy(&d, (const char *)src + 8 * k, 8);
        return d;
    }
    case TL_DTYPE_F16:
        return ieee(le(src, k, 2), 5, 10, 15, 1);
    case TL_DTYPE_BF16:
        return ieee(le(src, k, 2), 8, 7, 127, 1);
    case TL_DTYPE_F8_E5M2:
        return ieee(le(src, k, 1), 5, 2, 15, 1);
    case TL_DTYPE_F8_E4M3: { /* no infinities; S.1111.111 is NaN */
        uint64_t b = le(src, k, 1);
        if ((b & 0x7f) == 0x7f) return (b & 0x80) ? -NAN : NAN;
        return ieee(b, 4, 3, 7, 0);
    }
    case TL_DTYPE_F8_E4M3FNUZ: /* no infinities, no negative zero: 0x80 is the one NaN */
        return le(src, k, 1) == 0x80 ? NAN : ieee(le(src, k, 1), 4, 3, 8, 0);
    case TL_DTYPE_F8_E5M2FNUZ:
        return le(src, k, 1) == 0x80 ? NAN : ieee(le(src, k, 1), 5, 2, 16, 0);
    case TL_DTYPE_Q8_0:   /* ggml's block: an F16 scale d, then 32 int8 q; x = d * q */
    case TL_DTYPE_Q4_0: { /* F16 d, 16 bytes: element j in byte j's low nibble, j + 16 in its high
                             nibble; x = d * (nibble - 8) */
        const unsigned char *blk =
            (const unsigned char *)src + (k / 32) * (from == TL_DTYPE_Q8_0 ? 34 : 18);
        double d = ieee(le(blk, 0, 2), 5, 10, 15, 1);
        unsigned j = (unsigned)(k % 32);
        if (from == TL_DTYPE_Q8_0) return d * (double)(int8_t)blk[2 + j];
        unsigned nib = j < 16 ? blk[2 + j] & 15u : blk[2 + j - 16] >> 4;
        return d * ((double)nib - 8);
    }
    default:
        fail_msg("ref_decode: no reference for dtype %d", (int)from);
        return 0;
    }
}

/* Nearest value with mbits mantissa bits, minimum exponent emin, largest finite maxv (ties even).
 */
static double round_to(double x, int mbits, int emin, double maxv) {
    if (isnan(x) || isinf(x)) return x;
    double ax = fabs(x);
    int e;
    frexp(ax, &e);
    int ex = e - 1 < emin ? emin : e - 1;
    double spacing = ldexp(1.0, ex - mbits);
    double v = nearbyint(ax / spacing) * spacing;
    double ulp_max = ldexp(1.0, ilogb(maxv) - mbits);
    if (ax >= maxv + ulp_max / 2) v = INFINITY;
    return copysign(v, x);
}

void ref_check_converted(tl_dtype to, const void *got, tl_dtype from, const void *src, uint64_t n,
                         const char *what) {
    if (from == TL_DTYPE_I64 && to == TL_DTYPE_I32) {
        for (uint64_t k = 0; k < n; k++) {
            int64_t a = (int64_t)le(src, k, 8);
            int32_t b = (int32_t)(uint32_t)le(got, k, 4);
            if (a != b)
                fail_msg("%s: element %llu: %d, want %lld", what, (unsigned long long)k, b,
                         (long long)a);
        }
        return;
    }
    for (uint64_t k = 0; k < n; k++) {
        double x = ref_decode(from, src, k), want, g = ref_decode(to, got, k);
        switch (to) {
        case TL_DTYPE_F32:
            want = round_to(x, 23, -126, FLT_MAX);
            break;
        case TL_DTYPE_F16:
            want = round_to(x, 10, -14, 65504.0);
            break;
        case TL_DTYPE_BF16:
            want = round_to(x, 7, -126, ldexp(2.0 - ldexp(1.0, -7), 127));
            break;
        default:
            fail_msg("%s: no reference for target dtype %d", what, (int)to);
            return;
        }
        bool ok = isnan(want) ? isnan(g) && !signbit(g) == !signbit(want)
                              : g == want && !signbit(g) == !signbit(want);
        if (!ok)
            fail_msg("%s: element %llu: %a from %a, want %a", what, (unsigned long long)k, g, x,
                     want);
    }
}
