/*
 * ref_convert.h — an independent reference for the values tl_model_load
 * converts: each source element is decoded to a double from the formats'
 * definitions (IEEE half / bfloat16 / single / double, OCP FP8 E4M3 and
 * E5M2, ggml's Q8_0 and Q4_0 blocks), rounded to nearest even on the target's grid with plain double
 * arithmetic, and compared with the decoded output. Nothing here calls the
 * library's conversion kernels.
 */
#ifndef TL_TEST_REF_CONVERT_H
#define TL_TEST_REF_CONVERT_H

#include <stdint.h>

#include "tierload.h"

/* Value of element k of src (type from) as a double (NaN keeps its sign). */
double ref_decode(tl_dtype from, const void *src, uint64_t k);
/* Assert (cmocka) that got[0..n) of type `to` is the correctly rounded conversion of src. */
void ref_check_converted(tl_dtype to, const void *got, tl_dtype from, const void *src, uint64_t n,
                         const char *what);

#endif
