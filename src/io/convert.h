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
/* Target type a tensor of type `from` gets when the load asks for `to`
 * (from itself when there is no conversion). */
tl_dtype tl__convert_target(tl_dtype from, tl_dtype to);
/* Scalar kernels (exported for tests). */
uint16_t tl__f32_to_f16(uint32_t f32bits);
uint32_t tl__f16_to_f32(uint16_t h);
uint16_t tl__f32_to_bf16(uint32_t f32bits);
uint32_t tl__f8e4m3_to_f32(uint8_t b);
uint32_t tl__f8e5m2_to_f32(uint8_t b);
uint32_t tl__f8e4m3fnuz_to_f32(uint8_t b);
uint32_t tl__f8e5m2fnuz_to_f32(uint8_t b);
/* Convert; on I64 -> I32 overflow returns false and *bad_index gets the element. */
bool tl__convert_run(tl_dtype to, void *dst, tl_dtype from, const void *src, uint64_t n,
                    uint64_t *bad_index);
/* The same with the portable kernels only, never the CPU-specific ones (for tests comparing the
 * two). */
bool tl__convert_run_portable(tl_dtype to, void *dst, tl_dtype from, const void *src, uint64_t n,
                              uint64_t *bad_index);

#endif
