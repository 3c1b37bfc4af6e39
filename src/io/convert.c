/*
 * convert.c — the dtype conversion kernels: F32 <-> F16 <-> BF16,
 * F8_E4M3 / F8_E5M2 / F8_E4M3FNUZ / F8_E5M2FNUZ -> F16 / BF16 / F32 (by
 * 256-entry tables), F64 -> F32, I64 -> I32, and F32 / F16 / BF16 -> Q8_0 /
 * Q4_0 (quantize.c). Portable vector code, and F16C on x86-64 CPUs that have
 * it (picked at run time). Which pairs exist: format/convtarget.c.
 */
#include "io/convert.h"
#include "core/error.h"
#include "os/thread.h"

#include <string.h>

unsigned tl__convert_elem_size(tl_dtype t) {
    switch (t) {
    case TL_DTYPE_F8_E4M3:
    case TL_DTYPE_F8_E5M2:
    case TL_DTYPE_F8_E4M3FNUZ:
    case TL_DTYPE_F8_E5M2FNUZ:
        return 1;
    case TL_DTYPE_F16:
    case TL_DTYPE_BF16:
        return 2;
    case TL_DTYPE_F32:
    case TL_DTYPE_I32:
        return 4;
    case TL_DTYPE_F64:
    case TL_DTYPE_I64:
        return 8;
    default:
        return 0;
    }
}

static bool is_block(tl_dtype t) {
    return t == TL_DTYPE_Q8_0 || t == TL_DTYPE_Q4_0;
}

bool tl__convert_unit(tl_dtype from, tl_dtype to, tl__conv_unit *u) {
    if (!tl_convert_supported(from, to)) return false;
    if (from == to && is_block(from)) return false; /* no identity "conversion" of blocks */
    u->elems = is_block(to)     ? tl_dtype_block_elems(to)
               : is_block(from) ? tl_dtype_block_elems(from)
                                : 1;
    u->in = is_block(from) ? (unsigned)(tl_dtype_block_bits(from) / 8)
                           : tl__convert_elem_size(from) * u->elems;
    u->out = is_block(to) ? (unsigned)(tl_dtype_block_bits(to) / 8)
                          : tl__convert_elem_size(to) * u->elems;
    return u->in && u->out;
}

static inline uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* After F. Giesen's float_to_half_fast3_rtne, with NaN payloads kept. */
uint16_t tl__f32_to_f16(uint32_t x) {
    const uint32_t f32infty = 255u << 23, f16max = (127u + 16u) << 23;
    const uint32_t denorm_magic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
    uint32_t sign = x & 0x80000000u;
    uint16_t o;
    x ^= sign;
    if (x >= f16max) {
        o = x > f32infty ? (uint16_t)(0x7e00u | ((x >> 13) & 0x3ffu)) : 0x7c00u;
    } else if (x < (113u << 23)) {
        /* subnormal or zero: the FPU's round-to-nearest-even aligns the bits */
        float f = u2f(x) + u2f(denorm_magic);
        o = (uint16_t)(f2u(f) - denorm_magic);
    } else {
        uint32_t mant_odd = (x >> 13) & 1u;
        x += ((uint32_t)(15 - 127) << 23) + 0xfffu;
        x += mant_odd;
        o = (uint16_t)(x >> 13);
    }
    return (uint16_t)(o | (sign >> 16));
}

/*
 * F16 -> F32, exact for every input (NaN payloads kept), with no branch on
 * the value's class, so that loops over it vectorize. Integer arithmetic,
 * and for subnormals an exact int -> float conversion scaled by a power of
 * two into the normal range: a caller's flush-to-zero / denormals-are-zero
 * modes cannot change the result.
 */
static inline uint32_t f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t mag = (uint32_t)(h & 0x7fffu) << 13, e = h & 0x7c00u;
    uint32_t normal = mag + (112u << 23);               /* exponent - 15 + 127 */
    uint32_t infnan = mag + (224u << 23);               /* exponent 31 -> 255 */
    uint32_t sub = f2u((float)(h & 0x3ffu) * 0x1p-24f); /* m x 2^-24 */
    return sign | (e == 0x7c00u ? infnan : e ? normal : sub);
}

uint32_t tl__f16_to_f32(uint16_t h) {
    return f16_to_f32(h);
}

/*
 * f16_to_f32 on 4 elements at once, with the compilers' portable vector
 * types (SSE2 on any x86-64, NEON on arm64; plain code elsewhere): the same
 * arithmetic, the class chosen with masks instead of branches.
 */
typedef uint16_t u16x4 __attribute__((vector_size(8)));
typedef uint16_t u16x8 __attribute__((vector_size(16)));
typedef uint32_t u32x4 __attribute__((vector_size(16)));
typedef int32_t i32x4 __attribute__((vector_size(16)));
typedef float f32x4 __attribute__((vector_size(16)));

static inline u32x4 f16_to_f32_x4(u16x4 h16) {
    u32x4 h = __builtin_convertvector(h16, u32x4);
    u32x4 sign = (h & 0x8000u) << 16, mag = (h & 0x7fffu) << 13, e = h & 0x7c00u;
    u32x4 normal = mag + (112u << 23), infnan = mag + (224u << 23);
    u32x4 sub = (u32x4)(__builtin_convertvector((i32x4)(h & 0x3ffu), f32x4) * 0x1p-24f);
    u32x4 is_infnan = (u32x4)(e == 0x7c00u), is_sub = (u32x4)(e == 0u);
    u32x4 is_normal = ~(is_infnan | is_sub);
    return sign | (infnan & is_infnan) | (sub & is_sub) | (normal & is_normal);
}

static uint64_t f16_to_f32_n(unsigned char *d, const unsigned char *s, uint64_t n) {
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        u16x4 a, b;
        memcpy(&a, s + i * 2, sizeof a);
        memcpy(&b, s + i * 2 + 8, sizeof b);
        u32x4 ua = f16_to_f32_x4(a), ub = f16_to_f32_x4(b);
        memcpy(d + i * 4, &ua, sizeof ua);
        memcpy(d + i * 4 + 16, &ub, sizeof ub);
    }
    return i;
}

uint16_t tl__f32_to_bf16(uint32_t x) {
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    uint32_t lsb = (x >> 16) & 1u;
    return (uint16_t)((x + 0x7fffu + lsb) >> 16);
}

/*
 * tl__f32_to_f16 and tl__f32_to_bf16 on 4 elements at once: the same
 * arithmetic with the case picked by masks (x without its sign stays below
 * 2^31, so signed lane compares order it), with the vector types above.
 */
static inline u32x4 f32_to_f16_x4w(u32x4 x) {
    const uint32_t f32infty = 255u << 23, f16max = (127u + 16u) << 23;
    const uint32_t denorm_magic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
    u32x4 sign = x & 0x80000000u;
    x ^= sign;
    i32x4 xs = (i32x4)x;
    u32x4 big = (u32x4)(xs >= (int32_t)f16max), small = (u32x4)(xs < (int32_t)(113u << 23));
    u32x4 nan = (u32x4)(xs > (int32_t)f32infty);
    u32x4 o_big = (0x7e00u | ((x >> 13) & 0x3ffu)) & nan;
    o_big |= 0x7c00u & ~nan;
    f32x4 fs = (f32x4)x + u2f(denorm_magic);
    u32x4 o_small = (u32x4)fs - denorm_magic;
    u32x4 o_norm = (x + ((uint32_t)(15 - 127) << 23) + 0xfffu + ((x >> 13) & 1u)) >> 13;
    u32x4 o = (o_big & big) | (o_small & small) | (o_norm & ~(big | small));
    return (o | (sign >> 16)) & 0xffffu;
}

static inline u16x4 f32_to_bf16_x4(u32x4 x) {
    u32x4 nan = (u32x4)((i32x4)(x & 0x7fffffffu) > (int32_t)0x7f800000u);
    u32x4 r = (((x + 0x7fffu + ((x >> 16) & 1u)) >> 16) & ~nan) | (((x >> 16) | 0x40u) & nan);
    return __builtin_convertvector(r & 0xffffu, u16x4);
}

/* F32 -> F16 (8 at a time) or BF16 (4 at a time) over the first elements of n; returns how many. */
static uint64_t f32_to_half_n(tl_dtype to, unsigned char *d, const unsigned char *s, uint64_t n) {
    uint64_t i = 0;
    if (to == TL_DTYPE_F16) {
        for (; i + 8 <= n; i += 8) {
            u32x4 x, y;
            memcpy(&x, s + i * 4, sizeof x);
            memcpy(&y, s + i * 4 + 16, sizeof y);
            /* the low halves of eight 32-bit lanes */
            u16x8 a = (u16x8)f32_to_f16_x4w(x), b = (u16x8)f32_to_f16_x4w(y);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
            u16x8 h = __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
#else
            u16x8 h = __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
#endif
            memcpy(d + i * 2, &h, sizeof h);
        }
        return i;
    }
    for (; i + 4 <= n; i += 4) {
        u32x4 x;
        memcpy(&x, s + i * 4, sizeof x);
        u16x4 h = f32_to_bf16_x4(x);
        memcpy(d + i * 2, &h, sizeof h);
    }
    return i;
}

/* F8_E4M3 (the "FN" variant of safetensors / PyTorch): bias 7, no Inf, NaN = S.1111.111. */
uint32_t tl__f8e4m3_to_f32(uint8_t b) {
    uint32_t sign = (uint32_t)(b & 0x80u) << 24;
    uint32_t e = (b >> 3) & 0xfu, m = b & 7u;
    if (e == 15 && m == 7) return sign | 0x7fc00000u;
    if (e == 0) return sign | f2u((float)m * (1.0f / 512.0f)); /* m * 2^-9, exact */
    return sign | ((e + 120u) << 23) | (m << 20);
}

/* F8_E5M2: the top byte of an F16. */
uint32_t tl__f8e5m2_to_f32(uint8_t b) {
    return f16_to_f32((uint16_t)((uint16_t)b << 8));
}

/* F8_E4M3FNUZ: bias 8, no Inf, no negative zero: 0x80 is the only NaN. */
uint32_t tl__f8e4m3fnuz_to_f32(uint8_t b) {
    if (b == 0x80u) return 0x7fc00000u;
    uint32_t sign = (uint32_t)(b & 0x80u) << 24;
    uint32_t e = (b >> 3) & 0xfu, m = b & 7u;
    if (e == 0) return sign | f2u((float)m * (1.0f / 1024.0f)); /* m * 2^-10, exact */
    return sign | ((e + 119u) << 23) | (m << 20);
}

/* F8_E5M2FNUZ: bias 16, no Inf, no negative zero: 0x80 is the only NaN. */
uint32_t tl__f8e5m2fnuz_to_f32(uint8_t b) {
    if (b == 0x80u) return 0x7fc00000u;
    uint32_t sign = (uint32_t)(b & 0x80u) << 24;
    uint32_t e = (b >> 2) & 0x1fu, m = b & 3u;
    if (e == 0) return sign | f2u((float)m * 0x1p-17f); /* m * 2^-17, exact */
    return sign | ((e + 111u) << 23) | (m << 21);
}

/*
 * F8 sources decode through tables: for each of the four formats, the F32
 * bits, F16 and BF16 of all 256 codes, built once from the scalar decoders
 * above (F16 and BF16 hold every F8 value exactly, so the narrowing rounds
 * nothing: the tables are exact by construction; E5M2 -> F16 keeps the bits).
 */
enum { F8_FORMATS = 4 };
typedef struct f8_table {
    uint32_t f32[256];
    uint16_t f16[256], bf16[256];
} f8_table;
static f8_table f8_tables[F8_FORMATS];
static pthread_once_t convert_once = PTHREAD_ONCE_INIT;
static bool have_f16c; /* set once, by convert_init, before any kernel reads it */

static int f8_index(tl_dtype t) {
    switch (t) {
    case TL_DTYPE_F8_E4M3:
        return 0;
    case TL_DTYPE_F8_E5M2:
        return 1;
    case TL_DTYPE_F8_E4M3FNUZ:
        return 2;
    case TL_DTYPE_F8_E5M2FNUZ:
        return 3;
    default:
        return -1;
    }
}

static void f8_build(void) {
    uint32_t (*const dec[F8_FORMATS])(uint8_t) = {tl__f8e4m3_to_f32, tl__f8e5m2_to_f32,
                                                  tl__f8e4m3fnuz_to_f32, tl__f8e5m2fnuz_to_f32};
    for (int k = 0; k < F8_FORMATS; k++)
        for (unsigned b = 0; b < 256; b++) {
            uint32_t u = dec[k]((uint8_t)b);
            f8_tables[k].f32[b] = u;
            /* E5M2 is the top byte of an F16: keep its bits, NaN payloads included */
            f8_tables[k].f16[b] =
                k == f8_index(TL_DTYPE_F8_E5M2) ? (uint16_t)(b << 8) : tl__f32_to_f16(u);
            f8_tables[k].bf16[b] = tl__f32_to_bf16(u);
        }
}

static void f8_to_32(unsigned char *d, const unsigned char *s, uint64_t n, const uint32_t *t) {
    uint64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t v[4] = {t[s[i]], t[s[i + 1]], t[s[i + 2]], t[s[i + 3]]};
        memcpy(d + i * 4, v, sizeof v);
    }
    for (; i < n; i++)
        memcpy(d + i * 4, &t[s[i]], 4);
}

static void f8_to_16(unsigned char *d, const unsigned char *s, uint64_t n, const uint16_t *t) {
    uint64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint16_t v[4] = {t[s[i]], t[s[i + 1]], t[s[i + 2]], t[s[i + 3]]};
        memcpy(d + i * 2, v, sizeof v);
    }
    for (; i < n; i++)
        memcpy(d + i * 2, &t[s[i]], 2);
}

/* The low halves of two vectors of 32-bit lanes, in order. */
static inline u16x8 pack_low16(u32x4 x, u32x4 y) {
    u16x8 a = (u16x8)x, b = (u16x8)y;
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
#else
    return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
#endif
}

/* F16 <-> BF16, 8 at a time through F32 bits, over the first elements of n; returns how many. */
static uint64_t half_to_half_n(unsigned char *d, tl_dtype from, const unsigned char *s,
                               uint64_t n) {
    uint64_t i = 0;
    if (from == TL_DTYPE_F16) { /* to BF16 */
        for (; i + 8 <= n; i += 8) {
            u16x4 a, b;
            memcpy(&a, s + i * 2, sizeof a);
            memcpy(&b, s + i * 2 + 8, sizeof b);
            u32x4 x = f16_to_f32_x4(a), y = f16_to_f32_x4(b);
            u32x4 nx = (u32x4)((i32x4)(x & 0x7fffffffu) > (int32_t)0x7f800000u);
            u32x4 ny = (u32x4)((i32x4)(y & 0x7fffffffu) > (int32_t)0x7f800000u);
            x = (((x + 0x7fffu + ((x >> 16) & 1u)) >> 16) & ~nx) | (((x >> 16) | 0x40u) & nx);
            y = (((y + 0x7fffu + ((y >> 16) & 1u)) >> 16) & ~ny) | (((y >> 16) | 0x40u) & ny);
            u16x8 o = pack_low16(x, y);
            memcpy(d + i * 2, &o, sizeof o);
        }
        return i;
    }
    for (; i + 8 <= n; i += 8) { /* BF16 to F16 */
        u16x8 h;
        memcpy(&h, s + i * 2, sizeof h);
        u32x4 x = __builtin_convertvector(__builtin_shufflevector(h, h, 0, 1, 2, 3), u32x4) << 16;
        u32x4 y = __builtin_convertvector(__builtin_shufflevector(h, h, 4, 5, 6, 7), u32x4) << 16;
        u16x8 o = pack_low16(f32_to_f16_x4w(x), f32_to_f16_x4w(y));
        memcpy(d + i * 2, &o, sizeof o);
    }
    return i;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>

/*
 * x86-64 with AVX2 and F16C, chosen at run time: the hardware's F16 <-> F32
 * conversions, 16 elements a loop. vcvtph2ps is exact; vcvtps2ph with
 * immediate 0 rounds to nearest even whatever MXCSR says, and both quiet a
 * NaN keeping the top of its payload and its sign, as the portable code does:
 * the two agree bit for bit (test_convert compares them on every F16 and
 * BF16 value). Each returns how many of the first elements of n it did.
 */
#define TL__F16C __attribute__((target("avx2,f16c")))

/* tl__f32_to_bf16 on 8 lanes of F32 bits (to the low halves of the lanes). */
TL__F16C static inline __m256i f32_to_bf16_x8(__m256i x) {
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff)),
                                     _mm256_set1_epi32(0x7f800000));
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), lsb), 16);
    __m256i q = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
    return _mm256_blendv_epi8(r, q, nan);
}

TL__F16C static uint64_t f16_to_bf16_f16c(unsigned char *d, const unsigned char *s, uint64_t n) {
    uint64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(const void *)(s + i * 2));
        __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(s + i * 2 + 16));
        __m256i x = f32_to_bf16_x8(_mm256_castps_si256(_mm256_cvtph_ps(a)));
        __m256i y = f32_to_bf16_x8(_mm256_castps_si256(_mm256_cvtph_ps(b)));
        /* packus interleaves the 128-bit halves: x0-3 y0-3 x4-7 y4-7; put them in order */
        __m256i o = _mm256_permute4x64_epi64(_mm256_packus_epi32(x, y), 0xd8);
        _mm256_storeu_si256((__m256i *)(void *)(d + i * 2), o);
    }
    return i;
}

TL__F16C static uint64_t bf16_to_f16_f16c(unsigned char *d, const unsigned char *s, uint64_t n) {
    uint64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(const void *)(s + i * 2));
        __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(s + i * 2 + 16));
        __m256 x = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(a), 16));
        __m256 y = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16));
        _mm_storeu_si128((__m128i *)(void *)(d + i * 2), _mm256_cvtps_ph(x, 0));
        _mm_storeu_si128((__m128i *)(void *)(d + i * 2 + 16), _mm256_cvtps_ph(y, 0));
    }
    return i;
}

TL__F16C static uint64_t f32_to_f16_f16c(unsigned char *d, const unsigned char *s, uint64_t n) {
    uint64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 x = _mm256_loadu_ps((const float *)(const void *)(s + i * 4));
        __m256 y = _mm256_loadu_ps((const float *)(const void *)(s + i * 4 + 32));
        _mm_storeu_si128((__m128i *)(void *)(d + i * 2), _mm256_cvtps_ph(x, 0));
        _mm_storeu_si128((__m128i *)(void *)(d + i * 2 + 16), _mm256_cvtps_ph(y, 0));
    }
    return i;
}

/* AVX2 (which the compilers' check also requires the OS to have enabled) and F16C (CPUID leaf 1,
 * ECX bit 29; clang's __builtin_cpu_supports does not know the name). */
static bool cpu_has_f16c(void) {
    unsigned a, b, c, d;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#else
static bool cpu_has_f16c(void) {
    return false;
}
#define f16_to_bf16_f16c(d, s, n) ((void)(d), (void)(s), (void)(n), (uint64_t)0)
#define bf16_to_f16_f16c(d, s, n) ((void)(d), (void)(s), (void)(n), (uint64_t)0)
#define f32_to_f16_f16c(d, s, n) ((void)(d), (void)(s), (void)(n), (uint64_t)0)
#endif

static void convert_init(void) {
    f8_build();
    have_f16c = cpu_has_f16c();
}

/* Load element i of src as f32 bits (F32, F16 and BF16 sources). */
static inline uint32_t load_f32(tl_dtype from, const unsigned char *s, uint64_t i) {
    uint16_t h;
    uint32_t u;
    switch (from) {
    case TL_DTYPE_F32:
        memcpy(&u, s + i * 4, 4);
        return u;
    case TL_DTYPE_F16:
        memcpy(&h, s + i * 2, 2);
        return f16_to_f32(h);
    case TL_DTYPE_BF16:
        memcpy(&h, s + i * 2, 2);
        return (uint32_t)h << 16;
    default:
        return 0;
    }
}

/* tl__convert_run, with the CPU-specific kernels where simd and the CPU has them. */
static bool convert_run(tl_dtype to, void *dst, tl_dtype from, const void *src, uint64_t n,
                        uint64_t *bad_index, bool simd) {
    const unsigned char *s = src;
    unsigned char *d = dst;
    if (from == to) {
        memcpy(d, s, (size_t)(n * tl__convert_elem_size(from)));
        return true;
    }
    if (is_block(to)) return tl__quantize_run(to, d, from, s, n, bad_index);
    if (is_block(from)) {
        tl__dequantize_run(to, d, from, s, n);
        return true;
    }
    if (from == TL_DTYPE_I64) {
        for (uint64_t i = 0; i < n; i++) {
            int64_t v;
            memcpy(&v, s + i * 8, 8);
            if (v < INT32_MIN || v > INT32_MAX) {
                if (bad_index) *bad_index = i;
                return false;
            }
            int32_t w = (int32_t)v;
            memcpy(d + i * 4, &w, 4);
        }
        return true;
    }
    if (from == TL_DTYPE_F64) {
        for (uint64_t i = 0; i < n; i++) {
            double v;
            memcpy(&v, s + i * 8, 8);
            float f = (float)v; /* IEEE conversion: round to nearest even, NaN stays NaN */
            memcpy(d + i * 4, &f, 4);
        }
        return true;
    }
    int f8 = f8_index(from);
    if (f8 >= 0) {
        const f8_table *t = &f8_tables[f8];
        if (to == TL_DTYPE_F32)
            f8_to_32(d, s, n, t->f32);
        else
            f8_to_16(d, s, n, to == TL_DTYPE_F16 ? t->f16 : t->bf16);
        return true;
    }
    /* fast paths for the common pairs */
    if (from == TL_DTYPE_BF16 && to == TL_DTYPE_F32) {
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + i * 2, 2);
            uint32_t u = (uint32_t)h << 16;
            memcpy(d + i * 4, &u, 4);
        }
        return true;
    }
    /* the common pairs, several elements at a time; what they leave, element by element below */
    uint64_t i = 0;
    bool f16c = simd && have_f16c;
    if (f16c && from == TL_DTYPE_F16 && to == TL_DTYPE_BF16)
        i = f16_to_bf16_f16c(d, s, n);
    else if (f16c && from == TL_DTYPE_BF16 && to == TL_DTYPE_F16)
        i = bf16_to_f16_f16c(d, s, n);
    else if (f16c && from == TL_DTYPE_F32 && to == TL_DTYPE_F16)
        i = f32_to_f16_f16c(d, s, n);
    else if (from == TL_DTYPE_F16 && to == TL_DTYPE_F32)
        i = f16_to_f32_n(d, s, n);
    else if ((from == TL_DTYPE_F16 && to == TL_DTYPE_BF16) ||
             (from == TL_DTYPE_BF16 && to == TL_DTYPE_F16))
        i = half_to_half_n(d, from, s, n);
    else if (from == TL_DTYPE_F32 && (to == TL_DTYPE_F16 || to == TL_DTYPE_BF16))
        i = f32_to_half_n(to, d, s, n);
    for (; i < n; i++) {
        uint32_t u = load_f32(from, s, i);
        if (to == TL_DTYPE_F32) {
            memcpy(d + i * 4, &u, 4);
        } else {
            uint16_t h = to == TL_DTYPE_F16 ? tl__f32_to_f16(u) : tl__f32_to_bf16(u);
            memcpy(d + i * 2, &h, 2);
        }
    }
    return true;
}

bool tl__convert_run(tl_dtype to, void *dst, tl_dtype from, const void *src, uint64_t n,
                     uint64_t *bad_index) {
    pthread_once(&convert_once, convert_init);
    return convert_run(to, dst, from, src, n, bad_index, true);
}

bool tl__convert_run_portable(tl_dtype to, void *dst, tl_dtype from, const void *src, uint64_t n,
                              uint64_t *bad_index) {
    pthread_once(&convert_once, convert_init);
    return convert_run(to, dst, from, src, n, bad_index, false);
}

tl_status tl_convert(tl_dtype to, void *dst, tl_dtype from, const void *src, uint64_t n) {
    if (!tl_convert_supported(from, to))
        return tl__err(TL_ERR_UNSUPPORTED, "no conversion from %s to %s",
                       tl_dtype_name(from) ? tl_dtype_name(from) : "?",
                       tl_dtype_name(to) ? tl_dtype_name(to) : "?");
    if (n && (!dst || !src)) return tl__err(TL_ERR_INVALID_ARG, "tl_convert: NULL buffer");
    tl__conv_unit u;
    tl__convert_unit(from, to, &u);
    if (n % u.elems)
        return tl__err(TL_ERR_INVALID_ARG,
                       "tl_convert: %llu elements is not a whole number of %s blocks (%u)",
                       (unsigned long long)n, tl_dtype_name(to), u.elems);
    uint64_t bad = 0;
    if (!tl__convert_run(to, dst, from, src, n, &bad))
        return tl__err(TL_ERR_UNSUPPORTED, "element %llu does not fit in %s%s",
                       (unsigned long long)bad, tl_dtype_name(to),
                       u.elems > 1 ? " (not finite)" : "");
    return TL_OK;
}
