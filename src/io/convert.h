/*
 * convert.h — dtype conversion kernels used on load (public entry:
 * tl_convert in tierload.h). Pure: no I/O, no allocation. Sources may be
 * unaligned; every conversion is bit-exact (round to nearest even, NaN kept
 * as NaN with its sign, Inf kept, subnormals exact where representable).
 */
#ifndef TL_IO_CONVERT_H
#define TL_IO_CONVERT_H

#include "tierload.h"

#include <stdint.h>

/* Element size of the plain types conversion handles (0 for others). */
unsigned tl__convert_elem_size(tl_dtype t);
/*
 * The unit a conversion works in: `in` source bytes become `out` bytes and
 * hold `elems` elements (1 for plain types; a 32-element block for Q8_0 and
 * Q4_0 targets). False when there is no such conversion.
 */
typedef struct tl__conv_unit {
    unsigned in, out, elems;
} tl__conv_unit;
bool tl__convert_unit(tl_dtype from, tl_dtype to, tl__conv_unit *u);
/* F32 / F16 / BF16 -> Q8_0 / Q4_0, n a multiple of 32 (quantize.c); false on a non-finite
 * element, whose index goes to *bad_index. */
bool tl__quantize_run(tl_dtype to, void *dst, tl_dtype from, const void *src, uint64_t n,
                      uint64_t *bad_index);
/* Q8_0 / Q4_0 -> F32 / F16 / BF16, n a multiple of 32 (quantize.c). */
void tl__dequantize_run(tl_dtype to, void *dst, tl_dtype from, const void *src, uint64_t n);
/* Scalar kernels (exported for tests). */
uint16_t tl__f32_to_f16(uint32_t f32bits);
uint32_t tl__f16_to_f32(uint16_t h);
uint16_t tl__f32_to_bf16(uint32_t f32bits);
uint32_t tl__f8e4m3_to_f32(uint8_t b);
uint32_t tl__f8e5m2_to_f32(uint8_t b);
uint32_t tl__f8e4m3fnuz_to_f32(uint8_t b);
uint32_t tl__f8e5m2fnuz_to_f32(uint8_t b);
/* Convert n elements (whole blocks for block targets); on I64 -> I32 overflow, or a non-finite
 * element to quantize, returns false and *bad_index gets the element. */
bool tl__convert_run(tl_dtype to, void *dst, tl_dtype from, const void *src, uint64_t n,
                    uint64_t *bad_index);
/* The same with the portable kernels only, never the CPU-specific ones (for tests comparing the
 * two). */
bool tl__convert_run_portable(tl_dtype to, void *dst, tl_dtype from, const void *src, uint64_t n,
                              uint64_t *bad_index);

#endif
