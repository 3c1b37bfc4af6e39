/*
 * checked.h — the one place where sizes and offsets taken from untrusted
 * headers are combined. Every add, multiply and align of such numbers goes
 * through these helpers, which report overflow instead of wrapping.
 */
#ifndef TL_CORE_CHECKED_H
#define TL_CORE_CHECKED_H

#include <stdbool.h>
#include <stdint.h>

/* *out = a + b; false on overflow. */
static inline bool tl__add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}
/* *out = a * b; false on overflow. */
static inline bool tl__mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
/* *out = a rounded up to a multiple of align (a power of two); false on overflow. */
static inline bool tl__align_up_u64(uint64_t a, uint64_t align, uint64_t *out) {
    uint64_t t;
    if (align == 0 || (align & (align - 1)) != 0) return false;
    if (!tl__add_u64(a, align - 1, &t)) return false;
    *out = t & ~(align - 1);
    return true;
}
/* true when [off, off+len) lies inside [0, size). */
static inline bool tl__range_ok(uint64_t off, uint64_t len, uint64_t size) {
    uint64_t end;
    return tl__add_u64(off, len, &end) && end <= size;
}
static inline bool tl__is_pow2(uint64_t x) {
    return x != 0 && (x & (x - 1)) == 0;
}

#endif
