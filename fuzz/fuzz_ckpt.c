/*
 * fuzz_ckpt.c — libFuzzer target for PyTorch checkpoints: an input that
 * starts with "PK" is a whole checkpoint for tl__ckpt_parse (zip directory,
 * pickle, catalog builder); anything else is a bare pickle for the pickle
 * VM alone. A successful parse must keep every tensor inside the image
 * (contiguous ones at [offset, offset + nbytes), strided ones at every
 * element they reach) with nbytes = elements x element size, and bounded by
 * the bytes behind it: what tensors hold beyond the image's size (expanding
 * views: a stride of 0) adds up to at most the 16 MiB a file may expand by.
 * Seeds include transposed, sliced and expanded views (strided_views.ckpt)
 * and a 2 GiB expansion of 16 elements (expand_huge.ckpt).
 */
#include "format/format.h"
#include "format/pickle.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const tl__fmt_file *f, const uint8_t *img, size_t size) {
    volatile uint8_t sink = 0;
    uint64_t beyond = 0;
    for (size_t i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].nbytes > size) beyond += f->tensors[i].nbytes - size;
    if (beyond > (16ull << 20)) abort(); /* amplification: more bytes than the file backs */
    for (size_t i = 0; i < f->n_tensors; i++) {
        const tl__fmt_tensor *t = &f->tensors[i];
        uint64_t nb;
        if (!tl_dtype_nbytes(t->dtype, t->n_elements, &nb) || nb != t->nbytes) abort();
        if (t->n_dims > TL_MAX_DIMS || t->offset > size) abort();
        uint64_t es = t->n_elements ? t->nbytes / t->n_elements : 0;
        uint64_t last = 0; /* last element's index from offset */
        if (t->strides) {
            for (uint32_t d = 0; d < t->n_dims; d++)
                last += (uint64_t)(t->shape[d] - 1) * (uint64_t)t->strides[d];
        } else if (t->n_elements) {
            last = t->n_elements - 1;
        }
        if (t->n_elements) {
            if ((last + 1) * es > size - t->offset) abort();
            sink ^= img[t->offset] ^ img[t->offset + (last + 1) * es - 1];
        }
        sink ^= (uint8_t)strlen(t->name);
    }
    for (size_t i = 0; i < f->n_meta; i++) {
        const tl_meta *m = &f->meta[i].m;
        sink ^= (uint8_t)strlen(m->key);
        if (m->type == TL_META_STRING && m->v.s.len) sink ^= (uint8_t)m->v.s.ptr[m->v.s.len - 1];
    }
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *img = malloc(size ? size : 1);
    if (!img) return 0;
    if (size) memcpy(img, data, size);
    if (size >= 2 && img[0] == 'P' && img[1] == 'K') {
        tl__fmt_file f;
        if (tl__ckpt_parse(img, size, "fuzz.ckpt", &f) == TL_OK) {
            if (f.format != TL_FORMAT_CKPT) abort();
            check(&f, img, size);
            tl__fmt_file_free(&f);
        } else if (f.tensors || f.meta || f.n_tensors || f.n_meta) {
            abort();
        }
    } else {
        tl__pk_value *root;
        tl__pk_arena *arena;
        if (tl__pk_run(img, size, "fuzz.pkl", &root, &arena) == TL_OK) {
            if (!root || !arena) abort();
            tl__pk_free(arena);
        }
    }
    free(img);
    return 0;
}
