/*
 * fuzz_gguf.c — libFuzzer target: tl__gguf_parse on arbitrary bytes.
 *
 * A successful parse must describe a file that holds what it promises:
 * every tensor's bytes inside the image, sizes consistent with its type and
 * shape, every metadata array element readable. Everything parsed is freed
 * (leaks are failures under the fuzzer's LeakSanitizer).
 */
#include "format/format.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Copy the input so that reads past its end hit ASan's redzone, not a neighbour. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *img = malloc(size ? size : 1);
    if (!img) return 0;
    if (size) memcpy(img, data, size);
    tl__fmt_file f;
    if (tl__gguf_parse(img, size, "fuzz.gguf", &f) == TL_OK) {
        if (f.data_offset > size && f.n_tensors) abort();
        if (f.alignment == 0 || (f.alignment & (f.alignment - 1))) abort();
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < f.n_tensors; i++) {
            const tl__fmt_tensor *t = &f.tensors[i];
            if (t->offset > size || t->nbytes > size - t->offset) abort();
            if (t->offset < f.data_offset) abort();
            if (t->n_dims > TL_MAX_DIMS || !tl_dtype_name(t->dtype)) abort();
            uint64_t nb;
            if (!tl_dtype_nbytes(t->dtype, t->n_elements, &nb) || nb != t->nbytes) abort();
            if (strlen(t->name) == SIZE_MAX) abort();
            if (t->nbytes) sink ^= img[t->offset] ^ img[t->offset + t->nbytes - 1];
        }
        for (size_t i = 0; i < f.n_meta; i++) {
            const tl__fmt_meta *m = &f.meta[i];
            sink ^= (uint8_t)strlen(m->m.key);
            if (m->m.type == TL_META_STRING && m->m.v.s.len) {
                sink ^= (uint8_t)m->m.v.s.ptr[0] ^ (uint8_t)m->m.v.s.ptr[m->m.v.s.len - 1];
            }
            if (m->m.type == TL_META_ARRAY && m->m.elem_type != TL_META_ARRAY) {
                /* first, last and a few in between */
                for (uint64_t j = 0; j < m->m.count; j += 1 + m->m.count / 8) {
                    tl_meta e;
                    if (tl__fmt_meta_array_get(m, j, &e) != TL_OK) abort();
                    if (e.type == TL_META_STRING && e.v.s.len)
                        sink ^= (uint8_t)e.v.s.ptr[0] ^ (uint8_t)e.v.s.ptr[e.v.s.len - 1];
                }
                if (m->m.count) {
                    tl_meta e;
                    if (tl__fmt_meta_array_get(m, m->m.count - 1, &e) != TL_OK) abort();
                    if (e.type == TL_META_STRING && e.v.s.len)
                        sink ^= (uint8_t)e.v.s.ptr[e.v.s.len - 1];
                }
            }
        }
        (void)sink;
        tl__fmt_file_free(&f);
    } else {
        /* a failed parse leaves nothing behind */
        if (f.tensors || f.meta || f.n_tensors || f.n_meta) abort();
    }
    free(img);
    return 0;
}
