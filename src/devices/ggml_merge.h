/*
 * ggml_merge.h — a low-rank weight update run by a ggml device on a weight
 * in its own memory (an at-load LoRA merged where the unit lives).
 */
#ifndef TL_DEVICES_GGML_MERGE_H
#define TL_DEVICES_GGML_MERGE_H

#include "tierload.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One term scale * (up . down) of an update, its factors F32 host matrices. */
typedef struct tl__ggml_lowrank {
    const float *up;     /* rows x rank: the rows of the weight being updated, row-major */
    const float *down_t; /* cols x rank: the down factor transposed */
    uint64_t rank;
    float scale;
} tl__ggml_lowrank;

/* Can d run the update (a ggml device: its backend computes)? */
bool tl__ggml_merges(tl_device *d);

/*
 * The rows x cols weight of type dtype (F32, F16 or BF16) at w, inside an
 * allocation of ggml device d, updated in place term after term:
 * W = round_dtype(W + scale_i * (up_i . down_i)), each product, scaling and
 * sum computed in F32 on the device, and rounded to dtype after each term (as
 * an eager merge of the terms one after the other rounds). The factors are
 * uploaded; the weight never leaves the device. The rows are done in chunks
 * whose F32 temporaries on the device total at most 8 MiB, beside the
 * factors.
 *
 * TL_ERR_UNSUPPORTED when ggml lacks the type or an operation on d or n > 16,
 * TL_ERR_FORMAT when the result holds a value that is not finite (the
 * weight's own, or one the update made overflow dtype: the caller merges on
 * the host to refuse it precisely), TL_ERR_DEVICE_OOM / TL_ERR_DEVICE as ggml
 * fails. On failure the weight's bytes are undefined.
 */
tl_status tl__ggml_merge_lowrank(tl_device *d, tl_devptr w, tl_dtype dtype, int64_t rows,
                                 int64_t cols, const tl__ggml_lowrank *terms, size_t n);

#endif
