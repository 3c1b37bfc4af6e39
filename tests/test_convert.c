/*
 * test_convert.c — the dtype conversion kernels: exhaustive F16 / F8
 * decoding, F32 -> F16 / BF16 rounding checked against an independent
 * reference (double arithmetic, round to nearest even) over a stride of all
 * floats plus every halfway case, NaN / Inf / subnormal handling, F64 -> F32,
 * I64 -> I32 range errors and the public tl_convert, also over long arrays
 * (every F16 value at every alignment and length tail, a sweep of F32
 * values to F16 and BF16, every F16 value to BF16 and back) against the same reference, where the
 * kernels work on several elements at once; every F8 code of every format to every float target;
 * the CPU-specific kernels bit for bit against the portable ones, also under flush-to-zero and
 * denormals-are-zero.
 */
#include "testutil.h"
#include "io/convert.h"
#include "ref_convert.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Reference: nearest value (ties to even significand) on a grid with mantissa bits mbits,
 * minimum normal exponent emin, maximum finite value maxv; returns +-inf on overflow. */
static double ref_round(double x, int mbits, int emin, double maxv) {
    double ax = fabs(x);
    int e;
    frexp(ax, &e); /* ax = f * 2^e, f in [0.5, 1) -> exponent e-1 */
    int ex = e - 1;
    if (ex < emin) ex = emin;
    double spacing = ldexp(1.0, ex - mbits);
    double q = nearbyint(ax / spacing); /* exact division: power of two */
    double v = q * spacing;
    /* overflow: values at or beyond max + half an ulp round to inf */
    double ulp_max = ldexp(1.0, (int)floor(log2(maxv)) - mbits);
    if (ax >= maxv + ulp_max / 2)
        v = INFINITY;
    else if (v > maxv)
        v = maxv; /* cannot happen with ties-to-even below the threshold */
    return copysign(v, x);
}

static void check_f16(uint32_t u) {
    float x = u2f(u);
    uint16_t h = tl__f32_to_f16(u);
    float back = u2f(tl__f16_to_f32(h));
    if (isnan(x)) {
        assert_true(isnan(back));
        assert_int_equal(signbit(back) != 0, signbit(x) != 0);
        return;
    }
    double want = ref_round(x, 10, -14, 65504.0);
    if ((double)back != want || !signbit(back) != !signbit(want)) {
        print_error("f32 %08x (%a): f16 %04x = %a, want %a\n", u, (double)x, h, (double)back, want);
        fail();
    }
}

static void check_bf16(uint32_t u) {
    float x = u2f(u);
    uint16_t h = tl__f32_to_bf16(u);
    float back = u2f((uint32_t)h << 16);
    if (isnan(x)) {
        assert_true(isnan(back));
        assert_int_equal(signbit(back) != 0, signbit(x) != 0);
        return;
    }
    double want = ref_round(x, 7, -126, ldexp(2.0 - ldexp(1.0, -7), 127));
    if ((double)back != want || !signbit(back) != !signbit(want)) {
        print_error("f32 %08x (%a): bf16 %04x = %a, want %a\n", u, (double)x, h, (double)back,
                    want);
        fail();
    }
}

static void test_f16_decode_exhaustive(void **st) {
    (void)st;
    for (uint32_t h = 0; h < 65536; h++) {
        uint32_t e = (h >> 10) & 31, m = h & 1023;
        float got = u2f(tl__f16_to_f32((uint16_t)h));
        double want;
        if (e == 31)
            want = m ? NAN : INFINITY;
        else if (e == 0)
            want = ldexp((double)m, -24);
        else
            want = ldexp(1.0 + m / 1024.0, (int)e - 15);
        if (h & 0x8000) want = -want;
        if (isnan(want)) {
            assert_true(isnan(got));
            assert_int_equal(signbit(got) != 0, (h & 0x8000) != 0);
        } else {
            assert_true((double)got == want);
            assert_int_equal(signbit(got) != 0, (h & 0x8000) != 0);
        }
        /* round trip F16 -> F32 -> F16 is the identity except that NaNs become quiet */
        uint16_t rt = tl__f32_to_f16(tl__f16_to_f32((uint16_t)h));
        if (e == 31 && m)
            assert_true((rt & 0x7c00) == 0x7c00 && (rt & 0x3ff) && (rt & 0x8000) == (h & 0x8000));
        else
            assert_int_equal(rt, h);
        /* BF16 round trip through F32 */
        uint16_t b = (uint16_t)h;
        uint16_t brt = tl__f32_to_bf16((uint32_t)b << 16);
        if (((b >> 7) & 0xff) == 0xff && (b & 0x7f))
            assert_true((brt & 0x7f80) == 0x7f80 && (brt & 0x7f));
        else
            assert_int_equal(brt, b);
    }
}

static void test_f32_to_f16_bf16_rounding(void **st) {
    (void)st;
    /* a stride over every float, plus the neighbourhood of every f16 / bf16 halfway point */
    for (uint64_t u = 0; u <= 0xffffffffu; u += 211) {
        check_f16((uint32_t)u);
        check_bf16((uint32_t)u);
    }
    for (uint32_t h = 0; h < 0x7c00; h++) {
        /* midpoint between h and h+1 as a double, and the floats around it */
        double a = u2f(tl__f16_to_f32((uint16_t)h)),
               b = h + 1 == 0x7c00 ? 65520.0 : u2f(tl__f16_to_f32((uint16_t)(h + 1)));
        uint32_t mid = f2u((float)((a + b) / 2));
        for (int d = -2; d <= 2; d++) {
            check_f16(mid + (uint32_t)d);
            check_f16((mid + (uint32_t)d) | 0x80000000u);
        }
    }
    for (uint32_t b = 0; b < 0x7f80; b++) {
        uint32_t mid = (b << 16) | 0x8000u;
        for (int d = -1; d <= 1; d++) {
            check_bf16(mid + (uint32_t)d);
            check_bf16((mid + (uint32_t)d) | 0x80000000u);
        }
    }
    /* named cases */
    assert_int_equal(tl__f32_to_f16(f2u(65504.0f)), 0x7bff);
    assert_int_equal(tl__f32_to_f16(f2u(65519.99f)), 0x7bff);
    assert_int_equal(tl__f32_to_f16(f2u(65520.0f)), 0x7c00);
    assert_int_equal(tl__f32_to_f16(f2u(INFINITY)), 0x7c00);
    assert_int_equal(tl__f32_to_f16(f2u(-INFINITY)), 0xfc00);
    assert_int_equal(tl__f32_to_f16(f2u(ldexpf(1, -24))), 0x0001); /* smallest subnormal */
    assert_int_equal(tl__f32_to_f16(f2u(ldexpf(1, -25))), 0x0000); /* tie -> even (0) */
    assert_int_equal(tl__f32_to_f16(f2u(ldexpf(3, -25))), 0x0002); /* 1.5 ulp -> 2 */
    assert_int_equal(tl__f32_to_f16(f2u(-0.0f)), 0x8000);
    assert_true((tl__f32_to_f16(f2u(NAN)) & 0x7fff) > 0x7c00);
    assert_int_equal(tl__f32_to_bf16(f2u(1.0f)), 0x3f80);
    assert_int_equal(tl__f32_to_bf16(0x3f808000u), 0x3f80);  /* tie -> even */
    assert_int_equal(tl__f32_to_bf16(0x3f818000u), 0x3f82);  /* tie -> even (up) */
    assert_int_equal(tl__f32_to_bf16(0x7f7fffffu), 0x7f80);  /* FLT_MAX rounds to inf */
    assert_int_equal(tl__f32_to_bf16(0x00000001u), 0x0000);  /* tiny subnormal */
    assert_int_equal(tl__f32_to_bf16(0x00010000u), 0x0001);  /* subnormal kept exactly */
    assert_true((tl__f32_to_bf16(0x7f800001u) & 0x7f) != 0); /* sNaN with low payload stays NaN */
    assert_true((tl__f32_to_bf16(0xff800001u) & 0x8000) != 0);
}

static void test_f8(void **st) {
    (void)st;
    for (unsigned b = 0; b < 256; b++) {
        /* E4M3 (FN): bias 7, no Inf, NaN = S.1111.111 */
        unsigned e = (b >> 3) & 15, m = b & 7;
        double want = e == 0 ? ldexp(m, -9) : ldexp(1.0 + m / 8.0, (int)e - 7);
        if (e == 15 && m == 7) want = NAN;
        if (b & 0x80) want = -want;
        float got = u2f(tl__f8e4m3_to_f32((uint8_t)b));
        if (isnan(want))
            assert_true(isnan(got));
        else
            assert_true((double)got == want);
        assert_int_equal(signbit(got) != 0, (b & 0x80) != 0);
        /* through the public API to every float target: exact (F8 fits F16 and BF16) */
        uint8_t src = (uint8_t)b;
        uint16_t h, bf;
        float f;
        assert_int_equal(tl_convert(TL_DTYPE_F16, &h, TL_DTYPE_F8_E4M3, &src, 1), TL_OK);
        assert_int_equal(tl_convert(TL_DTYPE_BF16, &bf, TL_DTYPE_F8_E4M3, &src, 1), TL_OK);
        assert_int_equal(tl_convert(TL_DTYPE_F32, &f, TL_DTYPE_F8_E4M3, &src, 1), TL_OK);
        if (isnan(want)) {
            assert_true(isnan(u2f(tl__f16_to_f32(h))) && isnan(u2f((uint32_t)bf << 16)) &&
                        isnan(f));
        } else {
            assert_true((double)u2f(tl__f16_to_f32(h)) == want);
            assert_true((double)u2f((uint32_t)bf << 16) == want);
            assert_true((double)f == want);
        }
        /* E5M2: bias 15, Inf and NaN like IEEE */
        e = (b >> 2) & 31;
        m = b & 3;
        want = e == 31  ? (m ? NAN : INFINITY)
               : e == 0 ? ldexp(m, -16)
                        : ldexp(1.0 + m / 4.0, (int)e - 15);
        if (b & 0x80) want = -want;
        got = u2f(tl__f8e5m2_to_f32((uint8_t)b));
        if (isnan(want))
            assert_true(isnan(got));
        else
            assert_true((double)got == want);
        assert_int_equal(tl_convert(TL_DTYPE_F16, &h, TL_DTYPE_F8_E5M2, &src, 1), TL_OK);
        assert_int_equal(h, (uint16_t)(b << 8));
        assert_int_equal(tl_convert(TL_DTYPE_BF16, &bf, TL_DTYPE_F8_E5M2, &src, 1), TL_OK);
        if (isnan(want))
            assert_true(isnan(u2f((uint32_t)bf << 16)));
        else
            assert_true((double)u2f((uint32_t)bf << 16) == want);
    }
    /* known values */
    assert_true(u2f(tl__f8e4m3_to_f32(0x7e)) == 448.0f);
    assert_true(u2f(tl__f8e4m3_to_f32(0x01)) == ldexpf(1, -9));
    assert_true(isinf(u2f(tl__f8e5m2_to_f32(0x7c))));
    assert_true(u2f(tl__f8e5m2_to_f32(0x7b)) == 57344.0f);
}

/* Every code of every F8 format to every float target, in one array (the kernels' unrolled loops
 * and their tails, from an odd address) and one element at a time, against the reference. */
static void test_f8_every_code(void **st) {
    (void)st;
    const tl_dtype from[] = {TL_DTYPE_F8_E4M3, TL_DTYPE_F8_E5M2, TL_DTYPE_F8_E4M3FNUZ,
                             TL_DTYPE_F8_E5M2FNUZ};
    const tl_dtype to[] = {TL_DTYPE_F16, TL_DTYPE_BF16, TL_DTYPE_F32};
    unsigned char src[257];
    uint32_t out[257];
    for (unsigned b = 0; b < 256; b++)
        src[b + 1] = (unsigned char)b;
    for (size_t f = 0; f < sizeof from / sizeof *from; f++)
        for (size_t t = 0; t < sizeof to / sizeof *to; t++) {
            char what[64];
            snprintf(what, sizeof what, "%s to %s", tl_dtype_name(from[f]), tl_dtype_name(to[t]));
            assert_true(tl_convert_supported(from[f], to[t]));
            for (uint64_t n = 253; n <= 256; n++) {
                memset(out, 0xa5, sizeof out);
                assert_int_equal(tl_convert(to[t], out, from[f], src + 1 + (256 - n), n), TL_OK);
                ref_check_converted(to[t], out, from[f], src + 1 + (256 - n), n, what);
            }
            for (unsigned b = 0; b < 256; b++) {
                assert_int_equal(tl_convert(to[t], out, from[f], src + 1 + b, 1), TL_OK);
                ref_check_converted(to[t], out, from[f], src + 1 + b, 1, what);
            }
        }
    /* known values of the FNUZ forms */
    assert_true(u2f(tl__f8e4m3fnuz_to_f32(0x7f)) == 240.0f);
    assert_true(u2f(tl__f8e4m3fnuz_to_f32(0x01)) == ldexpf(1, -10));
    assert_true(isnan(u2f(tl__f8e4m3fnuz_to_f32(0x80))));
    assert_true(u2f(tl__f8e5m2fnuz_to_f32(0x7f)) == 57344.0f);
    assert_true(u2f(tl__f8e5m2fnuz_to_f32(0x01)) == ldexpf(1, -17));
    assert_true(isnan(u2f(tl__f8e5m2fnuz_to_f32(0x80))));
}

static void test_f64_i64(void **st) {
    (void)st;
    double d[] = {1.0 / 3, -0.0,           INFINITY,       -INFINITY,      NAN,       1e300, -1e300,
                  1e-320,  ldexp(1, -149), ldexp(1, -150), ldexp(3, -150), 16777217.0};
    float f[12];
    assert_int_equal(tl_convert(TL_DTYPE_F32, f, TL_DTYPE_F64, d, 12), TL_OK);
    assert_true(f[0] == (float)(1.0 / 3));
    assert_true(f[1] == 0 && signbit(f[1]));
    assert_true(isinf(f[2]) && f[2] > 0 && isinf(f[3]) && f[3] < 0);
    assert_true(isnan(f[4]));
    assert_true(isinf(f[5]) && isinf(f[6]) && f[6] < 0);
    assert_true(f[7] == 0);
    assert_true(f[8] == ldexpf(1, -149));
    assert_true(f[9] == 0);                /* tie -> even (0) */
    assert_true(f[10] == ldexpf(2, -149)); /* 1.5 ulp -> 2 ulp */
    assert_true(f[11] == 16777216.0f);     /* tie -> even */
    int64_t ok[] = {0, -1, INT32_MAX, INT32_MIN, 42};
    int32_t o[5];
    assert_int_equal(tl_convert(TL_DTYPE_I32, o, TL_DTYPE_I64, ok, 5), TL_OK);
    assert_int_equal(o[2], INT32_MAX);
    assert_int_equal(o[3], INT32_MIN);
    assert_int_equal(o[1], -1);
    int64_t bad[] = {1, (int64_t)INT32_MAX + 1};
    assert_int_equal(tl_convert(TL_DTYPE_I32, o, TL_DTYPE_I64, bad, 2), TL_ERR_UNSUPPORTED);
    assert_non_null(strstr(tl_last_error(), "element 1"));
}

static void test_pairs(void **st) {
    (void)st;
    assert_true(tl_convert_supported(TL_DTYPE_F16, TL_DTYPE_BF16));
    assert_true(tl_convert_supported(TL_DTYPE_F8_E4M3, TL_DTYPE_F32));
    assert_false(tl_convert_supported(TL_DTYPE_F32, TL_DTYPE_F8_E4M3));
    assert_false(tl_convert_supported(TL_DTYPE_F64, TL_DTYPE_F16));
    assert_false(tl_convert_supported(TL_DTYPE_Q4_K, TL_DTYPE_F16));
    assert_false(tl_convert_supported(TL_DTYPE_I64, TL_DTYPE_F32));
    assert_true(tl_convert_supported(TL_DTYPE_BF16, TL_DTYPE_Q4_0));
    assert_false(tl_convert_supported(TL_DTYPE_F8_E4M3, TL_DTYPE_Q8_0));
    assert_false(tl_convert_supported(TL_DTYPE_Q4_0, TL_DTYPE_Q8_0));
    /* which tensors a conversion applies to (stable-diffusion.cpp's --type rule for Q8_0/Q4_0) */
    tl_tensor_info t = {.name = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight",
                        .dtype = TL_DTYPE_F16,
                        .n_dims = 2,
                        .shape = {320, 2880}};
    assert_int_equal(tl_convert_target(&t, TL_DTYPE_Q8_0), TL_DTYPE_Q8_0);
    assert_int_equal(tl_convert_target(&t, TL_DTYPE_Q4_0), TL_DTYPE_Q4_0);
    assert_int_equal(tl_convert_target(&t, TL_DTYPE_BF16), TL_DTYPE_BF16);
    assert_int_equal(tl_convert_target(&t, TL_DTYPE_INVALID), TL_DTYPE_F16);
    t.shape[1] = 2888; /* rows not a whole number of 32-element blocks */
    assert_int_equal(tl_convert_target(&t, TL_DTYPE_Q8_0), TL_DTYPE_F16);
    assert_int_equal(tl_convert_target(&t, TL_DTYPE_F32), TL_DTYPE_F32);
    t.shape[1] = 64;
    t.n_dims = 1; /* 1-D: norms, biases */
    assert_int_equal(tl_convert_target(&t, TL_DTYPE_Q8_0), TL_DTYPE_F16);
    assert_int_equal(tl_convert_target(&t, TL_DTYPE_F32), TL_DTYPE_F32);
    t.n_dims = 2;
    static const char *const kept[] = {"model.diffusion_model.time_embed.0.weight",
                                       "double_blocks.0.img_attn.norm.key_norm.scale",
                                       "model.diffusion_model.label_emb.0.0.weight",
                                       "te.text_model.embeddings.token_embedding.weight",
                                       "model.diffusion_model.final_layer.linear.weight",
                                       "x.weight_scale",
                                       "y.bias"};
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++) {
        t.name = kept[i];
        assert_int_equal(tl_convert_target(&t, TL_DTYPE_Q4_0), TL_DTYPE_F16);
    }
    t.dtype = TL_DTYPE_Q4_K;
    t.name = "blk.0.ffn_up.weight";
    assert_int_equal(tl_convert_target(&t, TL_DTYPE_F16), TL_DTYPE_Q4_K);
    assert_int_equal(tl_convert_target(NULL, TL_DTYPE_F16), TL_DTYPE_INVALID);
    float x = 1;
    uint8_t y;
    assert_int_equal(tl_convert(TL_DTYPE_F8_E5M2, &y, TL_DTYPE_F32, &x, 1), TL_ERR_UNSUPPORTED);
    /* F16 <-> BF16 goes through F32 with a single rounding; unaligned sources are fine */
    unsigned char buf[9];
    uint16_t h = 0x3c01; /* 1 + 2^-10: not representable in BF16, rounds to 1.0 */
    memcpy(buf + 1, &h, 2);
    uint16_t bf;
    assert_int_equal(tl_convert(TL_DTYPE_BF16, &bf, TL_DTYPE_F16, buf + 1, 1), TL_OK);
    assert_int_equal(bf, 0x3f80);
    uint16_t bigbf = 0x4780; /* 65536 in BF16: overflows F16 -> inf */
    assert_int_equal(tl_convert(TL_DTYPE_F16, &h, TL_DTYPE_BF16, &bigbf, 1), TL_OK);
    assert_int_equal(h, 0x7c00);
}

static void test_bulk_arrays(void **st) {
    (void)st;
    /* every F16 value, converted as one array from every byte offset mod 16 and with tails */
    size_t n = 65536;
    unsigned char *src = malloc(n * 2 + 64), *dst = malloc(n * 4 + 64);
    assert_non_null(src);
    assert_non_null(dst);
    for (size_t shift = 0; shift < 16; shift += 2) {
        unsigned char *s = src + shift, *d = dst + (shift * 3) % 16;
        for (size_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(i * 40503u); /* a permutation of 0..65535 */
            memcpy(s + i * 2, &h, 2);
        }
        size_t len = n - shift / 2; /* tails of every length mod 8 */
        assert_int_equal(tl_convert(TL_DTYPE_F32, d, TL_DTYPE_F16, s, len), TL_OK);
        ref_check_converted(TL_DTYPE_F32, d, TL_DTYPE_F16, s, len, "F16 array");
        /* and exactly: NaN payloads kept bit for bit, as the element-wise decoder gives */
        for (size_t i = 0; i < len; i++) {
            uint16_t h;
            uint32_t u;
            memcpy(&h, s + i * 2, 2);
            memcpy(&u, d + i * 4, 4);
            uint32_t e = (h >> 10) & 31, m = h & 1023;
            if (e == 31 && m)
                assert_int_equal(u, ((uint32_t)(h & 0x8000) << 16) | 0x7f800000u | (m << 13));
        }
    }
    /* every F16 value to BF16 and every BF16 value to F16, as arrays with a tail */
    uint16_t *in = (uint16_t *)src, *out = (uint16_t *)dst;
    for (size_t i = 0; i < n; i++)
        in[i] = (uint16_t)(i * 40503u);
    assert_int_equal(tl_convert(TL_DTYPE_BF16, out, TL_DTYPE_F16, in, n - 1), TL_OK);
    ref_check_converted(TL_DTYPE_BF16, out, TL_DTYPE_F16, in, n - 1, "F16 array to BF16");
    for (size_t i = 0; i < n - 1; i++)
        if (out[i] != tl__f32_to_bf16(tl__f16_to_f32(in[i])))
            fail_msg("BF16 element %zu of F16 %04x: %04x", i, in[i], out[i]);
    assert_int_equal(tl_convert(TL_DTYPE_F16, out, TL_DTYPE_BF16, in, n - 3), TL_OK);
    ref_check_converted(TL_DTYPE_F16, out, TL_DTYPE_BF16, in, n - 3, "BF16 array to F16");
    for (size_t i = 0; i < n - 3; i++)
        if (out[i] != tl__f32_to_f16((uint32_t)in[i] << 16))
            fail_msg("F16 element %zu of BF16 %04x: %04x", i, in[i], out[i]);
    free(src);
    free(dst);
    /* F32 -> F16 and BF16 over a sweep of bit patterns (every sign, exponent and rounding case) */
    n = 1u << 20;
    uint32_t *f = malloc(n * 4);
    uint16_t *h = malloc(n * 2);
    assert_non_null(f);
    assert_non_null(h);
    for (size_t i = 0; i < n; i++)
        f[i] = (uint32_t)(i * 4099u) ^ (uint32_t)(i << 20); /* spreads over all 2^32 */
    assert_int_equal(tl_convert(TL_DTYPE_F16, h, TL_DTYPE_F32, f, n - 3), TL_OK);
    ref_check_converted(TL_DTYPE_F16, h, TL_DTYPE_F32, f, n - 3, "F32 array");
    for (size_t i = 0; i < n - 3; i++) /* NaNs too, bit for bit (element-wise: tested above) */
        if (h[i] != tl__f32_to_f16(f[i])) fail_msg("F16 element %zu of %08x: %04x", i, f[i], h[i]);
    assert_int_equal(tl_convert(TL_DTYPE_BF16, h, TL_DTYPE_F32, f + 1, n - 2), TL_OK);
    ref_check_converted(TL_DTYPE_BF16, h, TL_DTYPE_F32, f + 1, n - 2, "F32 array to BF16");
    for (size_t i = 0; i < n - 2; i++)
        if (h[i] != tl__f32_to_bf16(f[i + 1]))
            fail_msg("BF16 element %zu of %08x: %04x", i, f[i + 1], h[i]);
    free(f);
    free(h);
}

/*
 * The CPU-specific kernels (F16C on x86-64, where the CPU has it) against the portable ones, bit
 * for bit: every F16 / BF16 value both ways and a sweep of F32 values, from an odd element offset
 * with a tail, so that each loop and its remainder run.
 */
static void test_cpu_kernels_match_portable(void **st) {
    (void)st;
    size_t n = 1u << 20;
    uint32_t *in = malloc(n * 4);
    uint16_t *a = malloc(n * 2), *b = malloc(n * 2);
    assert_non_null(in);
    assert_non_null(a);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++)
        in[i] = (uint32_t)(i * 4099u) ^ (uint32_t)(i << 20);
    uint64_t bad = 0;
    assert_true(tl__convert_run(TL_DTYPE_F16, a, TL_DTYPE_F32, in + 1, n - 8, &bad));
    assert_true(tl__convert_run_portable(TL_DTYPE_F16, b, TL_DTYPE_F32, in + 1, n - 8, &bad));
    assert_memory_equal(a, b, (n - 8) * 2);
    uint16_t *h = (uint16_t *)(void *)in;
    for (size_t i = 0; i < 65536 + 40; i++)
        h[i] = (uint16_t)(i * 40503u);
    const tl_dtype pair[][2] = {{TL_DTYPE_F16, TL_DTYPE_BF16}, {TL_DTYPE_BF16, TL_DTYPE_F16}};
    for (size_t k = 0; k < 2; k++)
        for (size_t len = 65536 + 17; len < 65536 + 40; len += 7) {
            assert_true(tl__convert_run(pair[k][1], a, pair[k][0], h + 1, len, &bad));
            assert_true(tl__convert_run_portable(pair[k][1], b, pair[k][0], h + 1, len, &bad));
            assert_memory_equal(a, b, len * 2);
        }
#if defined(__x86_64__)
    /* the same under a caller's flush-to-zero and denormals-are-zero modes (MXCSR): F32 values
     * down to the smallest subnormals, and every F16 / BF16 value */
    unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040u);
    for (size_t i = 0; i < n; i++)
        in[i] = (uint32_t)(i * 4099u) ^ (uint32_t)(i << 20);
    for (uint32_t i = 0; i < 65536; i++)
        in[i] = (i << 13) | (i & 1u) | ((i & 2u) << 30); /* both signs, exponents 0 .. 15 */
    bool same = tl__convert_run(TL_DTYPE_F16, a, TL_DTYPE_F32, in, n, &bad) &&
                tl__convert_run_portable(TL_DTYPE_F16, b, TL_DTYPE_F32, in, n, &bad) &&
                !memcmp(a, b, n * 2);
    for (size_t i = 0; i < 65536; i++)
        h[i] = (uint16_t)i;
    for (size_t k = 0; k < 2 && same; k++)
        same = tl__convert_run(pair[k][1], a, pair[k][0], h, 65536, &bad) &&
               tl__convert_run_portable(pair[k][1], b, pair[k][0], h, 65536, &bad) &&
               !memcmp(a, b, 65536 * 2);
    _mm_setcsr(csr);
    assert_true(same);
#endif
    free(in);
    free(a);
    free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_decode_exhaustive),
        cmocka_unit_test(test_f32_to_f16_bf16_rounding),
        cmocka_unit_test(test_f8),
        cmocka_unit_test(test_f8_every_code),
        cmocka_unit_test(test_f64_i64),
        cmocka_unit_test(test_pairs),
        cmocka_unit_test(test_bulk_arrays),
        cmocka_unit_test(test_cpu_kernels_match_portable),
    };
    return tu_exit(cmocka_run_group_tests(tests, NULL, NULL));
}
