/*
 * test_load_st.h — writing safetensors files for the load tests: tensors of
 * any plain dtype with caller-given sizes (elements x element size, as the
 * test states them) and bytes, the header from the library's writer
 * (tl_writer_*), flushed to disk (fsync) so that page-cache eviction can take
 * effect.
 */
#ifndef TL_TEST_LOAD_ST_H
#define TL_TEST_LOAD_ST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tierload.h"

typedef struct st_tensor {
    const char *name;
    const char *dtype; /* safetensors name: F16, BF16, F32, F64, I64, F8_E4M3, F8_E5M2, U8 */
    uint64_t n;        /* elements (1-D) */
    unsigned esize;    /* bytes per element */
    const void *data;  /* n * esize bytes, or NULL for a pattern from fill */
    void (*fill)(void *buf, uint64_t off, uint64_t len, void *ctx); /* streamed filler */
    void *ctx;
} st_tensor;

/* Write the file; tensors are laid out back to back in order (odd sizes give unaligned offsets). */
static inline void st_write(const char *path, const st_tensor *t, size_t n) {
    tl_writer *w = NULL;
    assert_int_equal(tl_writer_create(TL_FORMAT_SAFETENSORS, &w), TL_OK);
    assert_int_equal(tl_writer_meta_string(w, "format", "pt"), TL_OK);
    for (size_t i = 0; i < n; i++) {
        int64_t shape[1] = {(int64_t)t[i].n};
        assert_int_equal(tl_writer_tensor(w, t[i].name, tl_dtype_from_name(t[i].dtype), 1, shape,
                                          t[i].n * t[i].esize, NULL),
                         TL_OK);
    }
    const void *hdr;
    size_t h;
    if (tl_writer_header(w, &hdr, &h) != TL_OK) fail_msg("st_write: %s", tl_last_error());
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(hdr, 1, h, f), h);
    tl_writer_destroy(w);
    enum { CH = 1 << 20 };
    unsigned char *buf = malloc(CH);
    for (size_t i = 0; i < n; i++) {
        uint64_t nb = t[i].n * t[i].esize;
        if (t[i].data) {
            assert_int_equal(fwrite(t[i].data, 1, (size_t)nb, f), nb);
        } else {
            for (uint64_t o = 0; o < nb; o += CH) {
                uint64_t l = nb - o < CH ? nb - o : CH;
                t[i].fill(buf, o, l, t[i].ctx);
                assert_int_equal(fwrite(buf, 1, (size_t)l, f), l);
            }
        }
    }
    free(buf);
    assert_int_equal(fflush(f), 0);
    assert_int_equal(fsync(fileno(f)), 0);
    assert_int_equal(fclose(f), 0);
}

#endif
