/*
 * fuzz_safetensors.c — libFuzzer target: tl__safetensors_parse on arbitrary
 * bytes. A successful parse must cover the data section exactly (tensors
 * back to back, ending at the end of the image) with sizes matching dtype
 * and shape; everything parsed is freed.
 */
#include "format/format.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *img = malloc(size ? size : 1);
    if (!img) return 0;
    if (size) memcpy(img, data, size);
    tl__fmt_file f;
    if (tl__safetensors_parse(img, size, "fuzz.safetensors", &f) == TL_OK) {
        if (f.data_offset > size) abort();
        uint64_t at = f.data_offset;
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < f.n_tensors; i++) {
            const tl__fmt_tensor *t = &f.tensors[i];
            /* storage order, no holes */
            if (t->offset != at || t->nbytes > size - t->offset) abort();
            uint64_t nb;
            if (!tl_dtype_nbytes(t->dtype, t->n_elements, &nb) || nb != t->nbytes) abort();
            if (t->n_dims > TL_MAX_DIMS) abort();
            at += t->nbytes;
            if (t->nbytes) sink ^= img[t->offset] ^ img[t->offset + t->nbytes - 1];
            sink ^= (uint8_t)strlen(t->name);
        }
        if (at != size) abort();
        for (size_t i = 0; i < f.n_meta; i++) {
            const tl_meta *m = &f.meta[i].m;
            if (m->type != TL_META_STRING) abort();
            sink ^= (uint8_t)strlen(m->key);
            if (m->v.s.len) sink ^= (uint8_t)m->v.s.ptr[m->v.s.len - 1];
        }
        (void)sink;
        tl__fmt_file_free(&f);
    } else if (f.tensors || f.meta || f.n_tensors || f.n_meta) {
        abort();
    }
    free(img);
    return 0;
}
